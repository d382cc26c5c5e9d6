//! The VM a user asks for, validated before anything is built. The same type comes from the
//! command line and from the API socket's `configure`.

use std::path::PathBuf;

use hull_contract::vmm_args::IoLimit;
use hull_contract::{HOTPLUG_BLOCK_MIB, MAX_DISK_SLOTS, MAX_VCPUS, SHARE_FS_TAG};
use serde::{Deserialize, Serialize};

pub use crate::devices::rate_limiter::{BucketConfig, LimitConfig};

/// vCPUs and memory when the caller names none.
pub const DEFAULT_VCPUS: u8 = 1;
pub const DEFAULT_MEM_MIB: u32 = 128;
/// Default guest kernel command line: console on COM1, reset through the i8042 on reboot.
/// No `pci=off`: hull's guest kernel has no PCI, so the word would be unknown to it and the
/// kernel would pass it on to /init's environment.
pub const DEFAULT_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.dumbkbd";

/// Where the guest console goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleConfig {
    #[default]
    Stdout,
    Off,
    File(PathBuf),
    /// A file the caller opened and handed over as this fd (the shim's jail has no writable
    /// place for a console file); hull-vmm owns it from then on. Capped like a file.
    Fd(i32),
}

impl std::str::FromStr for ConsoleConfig {
    type Err = ConfigError;
    /// `stdout`, `off`, `fd=N`, or a file path (`./fd=3` is the file named `fd=3`).
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Ok(match s {
            "stdout" => ConsoleConfig::Stdout,
            "off" => ConsoleConfig::Off,
            "" => {
                return Err(ConfigError::Invalid(
                    "--console needs FILE|fd=N|stdout|off".into(),
                ))
            }
            s if s.starts_with("fd=") => {
                let n = s[3..].parse().map_err(|_| {
                    ConfigError::Invalid(format!("--console {s:?}: fd=N needs a number"))
                })?;
                ConsoleConfig::Fd(n)
            }
            path => ConsoleConfig::File(PathBuf::from(path)),
        })
    }
}

/// A virtio-blk disk: a raw file, its requests limited by `limit` (bytes moved, requests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub limit: LimitConfig,
}

impl std::str::FromStr for DiskConfig {
    type Err = ConfigError;
    /// `PATH[,ro|rw][,bytes=BUCKET][,ops=BUCKET]`: taken from the right, so a path may hold
    /// commas (the shim always writes `ro` or `rw` after it).
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let mut limit = IoLimit::default();
        let mut rest = s;
        while let Some((head, tail)) = rest.rsplit_once(',') {
            let taken = match tail.split_once('=') {
                Some((k, v)) => limit
                    .take("", k, v)
                    .map_err(|e| ConfigError::Invalid(format!("--disk {s:?}: {e}")))?,
                None => false,
            };
            if !taken {
                break;
            }
            rest = head;
        }
        let (path, read_only) = match rest.rsplit_once(',') {
            Some((p, "ro")) => (p, true),
            Some((p, "rw")) => (p, false),
            _ => (rest, false),
        };
        if path.is_empty() {
            return Err(ConfigError::Invalid(
                "--disk needs PATH[,ro|rw][,bytes=BUCKET][,ops=BUCKET]".into(),
            ));
        }
        Ok(DiskConfig {
            path: PathBuf::from(path),
            read_only,
            limit: limit.into(),
        })
    }
}

/// virtio-fs served by a vhost-user back end (virtiofsd) listening on `socket`; the guest
/// mounts it by `tag`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsConfig {
    pub socket: PathBuf,
    #[serde(default = "default_fs_tag")]
    pub tag: String,
}

/// The tag hull's guest agent mounts unless a caller names another.
fn default_fs_tag() -> String {
    SHARE_FS_TAG.to_string()
}

impl std::str::FromStr for FsConfig {
    type Err = ConfigError;
    /// `SOCKET[,tag=TAG]`
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (socket, tag) = match s.rsplit_once(",tag=") {
            Some((p, t)) => (p, t.to_string()),
            None => (s, default_fs_tag()),
        };
        if socket.is_empty() {
            return Err(ConfigError::Invalid("--fs needs SOCKET[,tag=TAG]".into()));
        }
        Ok(FsConfig {
            socket: PathBuf::from(socket),
            tag,
        })
    }
}

/// A virtio-net NIC whose host end is a tap with virtio-net headers: `fd`, a tap the caller
/// opened and passed to hull-vmm (which owns and closes it), or `tap`, a name to open (manual
/// runs). Exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    #[serde(default)]
    pub fd: Option<i32>,
    #[serde(default)]
    pub tap: Option<String>,
    /// The guest's MAC, `xx:xx:xx:xx:xx:xx` (unicast, not all zero).
    pub mac: String,
    /// Largest IP packet the guest may send (default 1500).
    #[serde(default)]
    pub mtu: Option<u16>,
    /// Host to guest: frames and their bytes.
    #[serde(default)]
    pub rx: LimitConfig,
    /// Guest to host.
    #[serde(default)]
    pub tx: LimitConfig,
}

impl NetConfig {
    /// The MAC as bytes, if it is a usable unicast address.
    pub(crate) fn mac_bytes(&self) -> Result<[u8; 6], ConfigError> {
        let bad =
            || ConfigError::Invalid(format!("net mac {:?} must be xx:xx:xx:xx:xx:xx", self.mac));
        let mut mac = [0u8; 6];
        let mut parts = self.mac.split(':');
        for b in &mut mac {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return Err(ConfigError::Invalid(format!(
                "net mac {} must be a unicast, non-zero address",
                self.mac
            )));
        }
        Ok(mac)
    }

    pub(crate) fn mtu(&self) -> u16 {
        self.mtu.unwrap_or(crate::devices::net::DEFAULT_MTU)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        use crate::devices::net::{MAX_MTU, MAX_NAME_LEN, MIN_MTU};
        let bad = |s: String| Err(ConfigError::Invalid(s));
        match (self.fd, &self.tap) {
            (Some(fd), None) if fd <= 2 => return bad(format!("net fd {fd} is stdio")),
            (None, Some(t))
                if t.is_empty() || t.len() > MAX_NAME_LEN || t.contains(['\0', '/']) =>
            {
                return bad(format!(
                    "net tap name {t:?} must be 1..={MAX_NAME_LEN} bytes without NUL or '/'"
                ))
            }
            (Some(_), None) | (None, Some(_)) => {}
            _ => return bad("net needs exactly one of fd and tap".into()),
        }
        self.mac_bytes()?;
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu()) {
            return bad(format!(
                "net mtu {} must be {MIN_MTU}..={MAX_MTU}",
                self.mtu()
            ));
        }
        self.rx.validate("net rx").map_err(ConfigError::Invalid)?;
        self.tx.validate("net tx").map_err(ConfigError::Invalid)
    }
}

impl std::str::FromStr for NetConfig {
    type Err = ConfigError;
    /// `fd=N|tap=NAME,mac=MAC[,mtu=N][,rx_bytes=BUCKET][,rx_ops=…][,tx_bytes=…][,tx_ops=…]`
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let usage = || {
            ConfigError::Invalid(format!(
                "--net {s:?}: expected fd=N|tap=NAME,mac=MAC[,mtu=N][,rx_bytes=BUCKET]\
                 [,rx_ops=BUCKET][,tx_bytes=BUCKET][,tx_ops=BUCKET]"
            ))
        };
        let (mut fd, mut tap, mut mac, mut mtu) = (None, None, String::new(), None);
        let (mut rx, mut tx) = (IoLimit::default(), IoLimit::default());
        for kv in s.split(',') {
            let (k, v) = kv.split_once('=').ok_or_else(usage)?;
            match k {
                "fd" => fd = Some(v.parse().map_err(|_| usage())?),
                "tap" => tap = Some(v.to_string()),
                "mac" => mac = v.to_string(),
                "mtu" => mtu = Some(v.parse().map_err(|_| usage())?),
                _ => {
                    let bad = |e: String| ConfigError::Invalid(format!("--net {s:?}: {e}"));
                    if !(rx.take("rx_", k, v).map_err(bad)? || tx.take("tx_", k, v).map_err(bad)?) {
                        return Err(usage());
                    }
                }
            }
        }
        if mac.is_empty() || fd.is_some() == tap.is_some() {
            return Err(usage());
        }
        Ok(NetConfig {
            fd,
            tap,
            mac,
            mtu,
            rx: rx.into(),
            tx: tx.into(),
        })
    }
}

/// How far a running VM may grow (DESIGN §2 vmm/: hot-plug). Reserved at boot, granted later
/// through the API (`PUT /hotplug/vcpus`, `PUT /hotplug/memory`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotplugConfig {
    /// vCPUs the VM may reach: the MP table declares this many, the guest boots `vcpus` of
    /// them and hull-vmm runs the others' threads only once granted. 0: `vcpus`.
    #[serde(default)]
    pub max_vcpus: u8,
    /// Size of the virtio-mem region (MiB, a multiple of 128, the guest's memory block):
    /// how much memory can be added to the boot RAM. 0: no virtio-mem device.
    #[serde(default)]
    pub memory_mib: u32,
    /// Empty virtio-mmio windows for disks attached while the VM runs (`PUT
    /// /hotplug/disks/N`); each takes one of the guest's virtio IRQs.
    #[serde(default)]
    pub disk_slots: u8,
}

impl HotplugConfig {
    /// The vCPU count the MP table declares for a VM booting `vcpus`.
    pub fn max_vcpus_for(&self, vcpus: u8) -> u8 {
        if self.max_vcpus == 0 {
            vcpus
        } else {
            self.max_vcpus
        }
    }

    fn validate(&self, vcpus: u8) -> Result<(), String> {
        if self.max_vcpus != 0 && (self.max_vcpus < vcpus || self.max_vcpus > MAX_VCPUS) {
            return Err(format!(
                "hotplug max_vcpus must be 0 or vcpus..={MAX_VCPUS}, not {}",
                self.max_vcpus
            ));
        }
        if !self.memory_mib.is_multiple_of(HOTPLUG_BLOCK_MIB) || self.memory_mib > 64 * 1024 {
            return Err(format!(
                "hotplug memory_mib must be a multiple of {HOTPLUG_BLOCK_MIB} up to 65536, not {}",
                self.memory_mib
            ));
        }
        if self.disk_slots > MAX_DISK_SLOTS {
            return Err(format!(
                "hotplug disk_slots must be 0..={MAX_DISK_SLOTS}, not {}",
                self.disk_slots
            ));
        }
        Ok(())
    }
}

/// Hybrid vsock: guest CID and host Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockConfig {
    pub uds: PathBuf,
    pub cid: u32,
}

/// Everything needed to build one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// ELF vmlinux (PVH) or bzImage.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    #[serde(default = "default_vcpus")]
    pub vcpus: u8,
    #[serde(default = "default_mem")]
    pub mem_mib: u32,
    /// What the VM may grow to while it runs.
    #[serde(default)]
    pub hotplug: HotplugConfig,
    #[serde(default)]
    pub vsock: Option<VsockConfig>,
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    #[serde(default)]
    pub fs: Vec<FsConfig>,
    #[serde(default)]
    pub net: Vec<NetConfig>,
    #[serde(default = "default_true")]
    pub rng: bool,
    /// A virtio-balloon through which the guest reports free memory, whose host backing
    /// hull-vmm then releases.
    #[serde(default = "default_true")]
    pub free_page_reporting: bool,
    #[serde(default)]
    pub console: ConsoleConfig,
    #[serde(default)]
    pub boot_timer: bool,
    /// Run on a software-KVM host anyway (test payloads, experiments).
    #[serde(default)]
    pub allow_software_kvm: bool,
    /// Test payload: flat real-mode code loaded at 0x1000 instead of a kernel.
    #[serde(default)]
    pub raw_payload: Option<PathBuf>,
    /// Enter the raw payload in 32-bit flat protected mode instead of real mode.
    #[serde(default)]
    pub raw_payload_32bit: bool,
}

/// The kernel parameter hull-vmm puts first on the command line of a VM with free page
/// reporting: the guest reports free blocks from order 5 (128 KiB) up (why: `builder.rs`).
pub(crate) const PAGE_REPORTING_ORDER: (&str, &str) = ("page_reporting.page_reporting_order", "5");

/// Bytes `key=value` adds to a command line, with its separating space.
pub(crate) fn cmdline_param_len(key: &str, value: &str) -> usize {
    " ".len() + key.len() + "=".len() + value.len()
}

fn default_cmdline() -> String {
    DEFAULT_CMDLINE.to_string()
}
fn default_vcpus() -> u8 {
    DEFAULT_VCPUS
}
fn default_mem() -> u32 {
    DEFAULT_MEM_MIB
}
fn default_true() -> bool {
    true
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            kernel: None,
            initrd: None,
            cmdline: default_cmdline(),
            vcpus: DEFAULT_VCPUS,
            mem_mib: DEFAULT_MEM_MIB,
            hotplug: HotplugConfig::default(),
            vsock: None,
            disks: vec![],
            fs: vec![],
            net: vec![],
            rng: true,
            free_page_reporting: true,
            console: ConsoleConfig::Stdout,
            boot_timer: false,
            allow_software_kvm: false,
            raw_payload: None,
            raw_payload_32bit: false,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl VmConfig {
    /// Checks what can be checked without touching KVM.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: &str| Err(ConfigError::Invalid(s.to_string()));
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return bad(&format!("vcpus must be 1..={MAX_VCPUS}"));
        }
        if self.mem_mib < 16 || self.mem_mib > 64 * 1024 {
            return bad("mem_mib must be 16..=65536");
        }
        self.hotplug
            .validate(self.vcpus)
            .map_err(ConfigError::Invalid)?;
        match (&self.kernel, &self.raw_payload) {
            (None, None) => return bad("a kernel is required"),
            (Some(_), Some(_)) => return bad("kernel and raw_payload are exclusive"),
            _ => {}
        }
        if let Some(v) = &self.vsock {
            if v.cid < 3 {
                return bad("vsock cid must be >= 3");
            }
            if v.uds.as_os_str().is_empty() {
                return bad("vsock uds path is empty");
            }
        }
        let mut tags = std::collections::HashSet::new();
        for f in &self.fs {
            if f.socket.as_os_str().is_empty() {
                return bad("fs socket path is empty");
            }
            // The guest reads the tag up to the first NUL of a 36-byte field.
            let max = crate::devices::vhost_user_fs::TAG_LEN;
            if f.tag.is_empty() || f.tag.len() > max || f.tag.contains('\0') {
                return bad(&format!(
                    "fs tag {:?} must be 1..={max} bytes without NUL",
                    f.tag
                ));
            }
            if !tags.insert(f.tag.as_str()) {
                return bad(&format!("fs tag {:?} is used twice", f.tag));
            }
        }
        let mut fds = std::collections::HashSet::new();
        if let ConsoleConfig::Fd(fd) = self.console {
            if fd <= 2 {
                return bad(&format!("console fd {fd} is stdio (use stdout)"));
            }
            fds.insert(fd);
        }
        for (i, d) in self.disks.iter().enumerate() {
            d.limit
                .validate(&format!("disk {i}"))
                .map_err(ConfigError::Invalid)?;
        }
        let mut macs = std::collections::HashSet::new();
        let mut taps = std::collections::HashSet::new();
        for n in &self.net {
            n.validate()?;
            // Two devices on one fd would both own (and close) it.
            if n.fd.is_some_and(|fd| !fds.insert(fd)) {
                return bad("net fd is used twice (or is the console's)");
            }
            if n.tap.as_ref().is_some_and(|t| !taps.insert(t.clone())) {
                return bad("net tap is used twice");
            }
            if !macs.insert(n.mac_bytes()?) {
                return bad(&format!("net mac {} is used twice", n.mac));
            }
        }
        if self.cmdline.len() + self.cmdline_added() >= crate::arch::CMDLINE_MAX_SIZE {
            return bad("command line too long");
        }
        Ok(())
    }

    /// The most hull-vmm adds to the command line (`builder.rs`): one
    /// `virtio_mmio.device=4K@0xd0000000:NN` per device, [`PAGE_REPORTING_ORDER`] and the
    /// crash record's `ramoops.*` parameters, each with a separating space.
    fn cmdline_added(&self) -> usize {
        const DEVICE: &str = " virtio_mmio.device=4K@0xd0000000:NN";
        let (key, value) = PAGE_REPORTING_ORDER;
        let reporting = cmdline_param_len(key, value);
        let devices = usize::from(self.vsock.is_some())
            + self.disks.len()
            + self.fs.len()
            + usize::from(self.rng)
            + usize::from(self.free_page_reporting)
            + self.net.len();
        let pstore = usize::from(self.raw_payload.is_none()) * crate::pstore::cmdline_len();
        devices * DEVICE.len() + usize::from(self.free_page_reporting) * reporting + pstore
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_flags() {
        assert_eq!(
            "a.img,ro".parse::<DiskConfig>().unwrap(),
            DiskConfig {
                path: "a.img".into(),
                read_only: true,
                limit: LimitConfig::default(),
            }
        );
        let d: DiskConfig = "a,ro.img,rw,ops=10,bytes=5:6:7".parse().unwrap();
        assert_eq!((d.path.to_str(), d.read_only), (Some("a,ro.img"), false));
        assert_eq!(
            d.limit,
            LimitConfig {
                bytes: Some(BucketConfig {
                    rate: 5,
                    burst: Some(6),
                    one_time_burst: 7
                }),
                ops: Some(BucketConfig {
                    rate: 10,
                    burst: None,
                    one_time_burst: 0
                }),
            }
        );
        for bad in [
            "a.img,ops=0",
            "a.img,bytes=1:0",
            "a.img,bytes=x",
            "a.img,bytes=1:2:3:4",
        ] {
            assert!(bad.parse::<DiskConfig>().is_err(), "{bad}");
        }
        assert!(!"a,b.img".parse::<DiskConfig>().unwrap().read_only);
        assert_eq!(
            "/run/v.sock".parse::<FsConfig>().unwrap(),
            FsConfig {
                socket: "/run/v.sock".into(),
                tag: "hull".into()
            }
        );
        let f = "/a,b.sock,tag=share".parse::<FsConfig>().unwrap();
        assert_eq!(
            (f.socket.to_str(), f.tag.as_str()),
            (Some("/a,b.sock"), "share")
        );
        assert!(",tag=x".parse::<FsConfig>().is_err());
        assert_eq!("off".parse::<ConsoleConfig>().unwrap(), ConsoleConfig::Off);
        assert_eq!(
            "/x".parse::<ConsoleConfig>().unwrap(),
            ConsoleConfig::File("/x".into())
        );
        assert_eq!(
            "fd=7".parse::<ConsoleConfig>().unwrap(),
            ConsoleConfig::Fd(7)
        );
        assert_eq!(
            "./fd=7".parse::<ConsoleConfig>().unwrap(),
            ConsoleConfig::File("./fd=7".into())
        );
        assert!("fd=".parse::<ConsoleConfig>().is_err());
        assert!("fd=x".parse::<ConsoleConfig>().is_err());
    }

    #[test]
    fn console_fd() {
        let mut c = VmConfig {
            kernel: Some("k".into()),
            console: ConsoleConfig::Fd(2),
            ..VmConfig::default()
        };
        assert!(c.validate().is_err(), "stdio");
        c.console = ConsoleConfig::Fd(3);
        c.validate().unwrap();
        c.net = vec!["fd=3,mac=02:00:00:00:00:01".parse().unwrap()];
        assert!(c.validate().is_err(), "the console's fd is not a tap's");
        let j = r#"{"kernel":"/k","console":{"fd":5}}"#;
        let c: VmConfig = serde_json::from_str(j).unwrap();
        assert_eq!(c.console, ConsoleConfig::Fd(5));
    }

    #[test]
    fn net_flags_and_validation() {
        let n: NetConfig = "fd=3,mac=02:42:0a:58:00:05,mtu=1450".parse().unwrap();
        assert_eq!(
            n,
            NetConfig {
                fd: Some(3),
                tap: None,
                mac: "02:42:0a:58:00:05".into(),
                mtu: Some(1450),
                rx: LimitConfig::default(),
                tx: LimitConfig::default(),
            }
        );
        let l: NetConfig = "fd=3,mac=02:42:0a:58:00:05,tx_ops=100,rx_bytes=1000:2000"
            .parse()
            .unwrap();
        assert_eq!(
            l.rx.bytes.map(|b| (b.rate, b.burst)),
            Some((1000, Some(2000)))
        );
        assert_eq!(l.tx.ops.map(|b| b.rate), Some(100));
        assert!(l.rx.ops.is_none() && l.tx.bytes.is_none());
        assert_eq!(n.mac_bytes().unwrap(), [2, 0x42, 0x0a, 0x58, 0, 5]);
        let t: NetConfig = "tap=tap0,mac=02:00:00:00:00:01".parse().unwrap();
        assert_eq!((t.tap.as_deref(), t.mtu()), (Some("tap0"), 1500));
        for bad in [
            "mac=02:00:00:00:00:01",
            "fd=3,tap=x,mac=02:00:00:00:00:01",
            "fd=3",
            "fd=x,mac=02:00:00:00:00:01",
            "fd=3,mac=02:00:00:00:00:01,speed=10",
            "fd=3,mac=02:00:00:00:00:01,mtu=70000",
            "fd=3,mac=02:00:00:00:00:01,rx_ops=0",
            "fd=3,mac=02:00:00:00:00:01,tx_bits=10",
        ] {
            assert!(bad.parse::<NetConfig>().is_err(), "{bad}");
        }
        let mut c = VmConfig {
            kernel: Some("k".into()),
            net: vec![n.clone()],
            ..Default::default()
        };
        c.validate().unwrap();
        for (mac, why) in [
            ("03:00:00:00:00:01", "multicast"),
            ("00:00:00:00:00:00", "zero"),
            ("02:00:00:00:00", "short"),
            ("02:00:00:00:00:01:02", "long"),
            ("02-00-00-00-00-01", "separator"),
            ("02:00:00:00:00:0g", "hex"),
        ] {
            c.net[0].mac = mac.into();
            assert!(c.validate().is_err(), "{why}");
        }
        c.net[0].mac = n.mac.clone();
        for (mtu, ok) in [(67, false), (68, true), (65532, true), (65533, false)] {
            c.net[0].mtu = Some(mtu);
            assert_eq!(c.validate().is_ok(), ok, "mtu {mtu}");
        }
        c.net[0].mtu = None;
        c.net[0].fd = Some(2);
        assert!(c.validate().is_err(), "stdio fd");
        c.net[0].fd = Some(3);
        let mut other = n.clone();
        other.mac = "02:00:00:00:00:09".into();
        c.net.push(other.clone());
        assert!(c.validate().is_err(), "same fd twice");
        c.net[1].fd = Some(4);
        c.validate().unwrap();
        c.net[1].mac = n.mac.clone();
        assert!(c.validate().is_err(), "same mac twice");
        c.net[1] = NetConfig {
            fd: None,
            tap: Some("x".repeat(16)),
            ..other
        };
        assert!(c.validate().is_err(), "tap name too long");
        let j = r#"{"kernel":"/k","net":[{"fd":3,"mac":"02:00:00:00:00:01","mtu":9000}]}"#;
        let c: VmConfig = serde_json::from_str(j).unwrap();
        assert_eq!(c.net[0].mtu(), 9000);
        c.validate().unwrap();
        let j = r#"{"kernel":"/k","net":[{"fd":3,"mac":"02:00:00:00:00:01","rate":1}]}"#;
        assert!(serde_json::from_str::<VmConfig>(j).is_err());
    }

    #[test]
    fn validation() {
        let mut c = VmConfig::default();
        assert!(c.validate().is_err());
        c.kernel = Some("k".into());
        c.validate().unwrap();
        c.vcpus = 0;
        assert!(c.validate().is_err());
        c.vcpus = 2;
        for (max_vcpus, memory_mib, ok) in [
            (0, 0, true),
            (2, 128, true),
            (32, 64 * 1024, true),
            (1, 0, false),  // below vcpus
            (33, 0, false), // above MAX_VCPUS
            (4, 100, false),
            (4, 64 * 1024 + 128, false),
        ] {
            c.hotplug = HotplugConfig {
                max_vcpus,
                memory_mib,
                disk_slots: 0,
            };
            assert_eq!(c.validate().is_ok(), ok, "{:?}", c.hotplug);
        }
        c.hotplug = HotplugConfig {
            disk_slots: MAX_DISK_SLOTS + 1,
            ..HotplugConfig::default()
        };
        assert!(c.validate().is_err());
        c.hotplug = HotplugConfig::default();
        c.vsock = Some(VsockConfig {
            uds: "/tmp/v".into(),
            cid: 2,
        });
        assert!(c.validate().is_err());
        c.vsock = None;
        c.fs = vec!["/s".parse().unwrap()];
        c.validate().unwrap();
        for bad_tag in ["", &"x".repeat(37), "a\0b"] {
            c.fs[0].tag = bad_tag.to_string();
            assert!(c.validate().is_err(), "{bad_tag:?}");
        }
        c.fs[0].tag = "x".repeat(36);
        c.validate().unwrap();
        c.fs.push(c.fs[0].clone());
        assert!(c.validate().is_err(), "duplicate tag");
        c.fs = vec![FsConfig {
            socket: "".into(),
            tag: "hull".into(),
        }];
        assert!(c.validate().is_err());
        let j = r#"{"kernel":"/k","fs":[{"socket":"/s"}]}"#;
        let c: VmConfig = serde_json::from_str(j).unwrap();
        assert_eq!(c.fs[0].tag, "hull");
        let j = r#"{"kernel":"/k","vcpus":2,"bogus":1}"#;
        assert!(serde_json::from_str::<VmConfig>(j).is_err());
    }

    /// A command line that validates leaves room for every device entry, the page reporting
    /// order and the `ramoops.*` parameters hull-vmm adds; one device more and it no longer
    /// validates.
    #[test]
    fn command_line_leaves_room_for_what_hull_vmm_adds() {
        let mut c = VmConfig {
            kernel: Some("k".into()),
            ..VmConfig::default()
        };
        c.cmdline = "x".repeat(crate::arch::CMDLINE_MAX_SIZE - 1 - c.cmdline_added());
        c.validate().unwrap();
        c.net = vec!["fd=3,mac=02:00:00:00:00:01".parse().unwrap()];
        assert!(c.validate().is_err());
        c.net.clear();
        c.free_page_reporting = false;
        c.validate().unwrap();
    }
}
