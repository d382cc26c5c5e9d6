//! hull-vmm's command line as a typed builder. The shim (and the tests that start hull-vmm)
//! fill a [`VmmArgs`] and pass [`VmmArgs::to_args`] to the process; hull-vmm parses the same
//! flags with clap, and its tests round-trip every field through this builder, so the flag
//! names and value formats live here and nowhere else.
//!
//! ```
//! use hull_contract::vmm_args::{Console, NetArg, VmmArgs};
//!
//! let mut a = VmmArgs::new("/usr/share/hull/vmlinux", 2, 512);
//! a.console = Console::Off;
//! a.net.push(NetArg::fd(3, "02:00:00:00:00:01", 1500));
//! let argv = a.to_args();
//! assert!(argv.windows(2).any(|w| w[0] == "--net" && w[1] == "fd=3,mac=02:00:00:00:00:01,mtu=1500"));
//! ```

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

/// Flag names, shared with hull-vmm's clap definitions (`#[arg(long = flag::KERNEL)]`).
pub mod flag {
    pub const KERNEL: &str = "kernel";
    pub const INITRD: &str = "initrd";
    pub const CMDLINE: &str = "cmdline";
    pub const CMDLINE_APPEND: &str = "cmdline-append";
    pub const VCPUS: &str = "vcpus";
    pub const MEM_MIB: &str = "mem-mib";
    pub const MAX_VCPUS: &str = "max-vcpus";
    pub const HOTPLUG_MIB: &str = "hotplug-mib";
    pub const DISK_SLOTS: &str = "disk-slots";
    pub const VSOCK_UDS: &str = "vsock-uds";
    pub const CID: &str = "cid";
    pub const DISK: &str = "disk";
    pub const FS: &str = "fs";
    pub const NET: &str = "net";
    pub const CONSOLE: &str = "console";
    pub const BOOT_TIMER: &str = "boot-timer";
    pub const NO_RNG: &str = "no-rng";
    pub const NO_FREE_PAGE_REPORTING: &str = "no-free-page-reporting";
    pub const ALLOW_SOFTWARE_KVM: &str = "allow-software-kvm";
    pub const METRICS_ON_EXIT: &str = "metrics-on-exit";
    pub const API_SOCK: &str = "api-sock";
    /// With `--api-sock`: boot at once from the flags; the socket serves the running VM.
    pub const BOOT: &str = "boot";
    pub const NO_SECCOMP: &str = "no-seccomp";
    /// Test payloads only (hull-vmm's own tests and benchmarks): flat code entered at 0x1000
    /// instead of a kernel, and whether it starts in 32-bit protected mode.
    pub const RAW_PAYLOAD: &str = "raw-payload";
    pub const RAW_PAYLOAD_32BIT: &str = "raw-payload-32bit";
}

/// Where the guest's serial console goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Console {
    /// hull-vmm's standard output.
    #[default]
    Stdout,
    /// Discarded.
    Off,
    /// Written to this file (created or truncated by hull-vmm).
    File(PathBuf),
    /// Written to this fd, open in hull-vmm at that number (`fd=N`): a file the caller opened,
    /// which hull-vmm owns from then on. hull-vmm keeps at most its first 1 MiB, as for
    /// `File`; the caller decides where it is and how it opens it (e.g. append).
    Fd(RawFd),
}

impl Console {
    /// The value of `--console`. A relative file named like a keyword (or like `fd=N`) gets
    /// `./` so it stays a file.
    pub fn to_arg(&self) -> OsString {
        match self {
            Console::Stdout => "stdout".into(),
            Console::Off => "off".into(),
            Console::Fd(fd) => format!("fd={fd}").into(),
            Console::File(p)
                if p == Path::new("stdout")
                    || p == Path::new("off")
                    || p.as_os_str().as_encoded_bytes().starts_with(b"fd=") =>
            {
                Path::new(".").join(p).into_os_string()
            }
            Console::File(p) => p.clone().into_os_string(),
        }
    }
}

/// A token bucket on one I/O stream of a device, written `RATE[:BURST[:ONE_TIME]]`: `rate`
/// units (bytes or operations) per second; the bucket holds `burst` (default a tenth of a
/// second's worth, at least 1), and `one_time` more at start, which never refill. hull-vmm's
/// `--net` and `--disk` take it, and the shim's `[limits]` and pod annotations use the same
/// words.
///
/// ```
/// use hull_contract::vmm_args::Bucket;
///
/// let b: Bucket = "1000000:250000".parse().unwrap();
/// assert_eq!((b.rate, b.burst(), b.one_time), (1_000_000, 250_000, 0));
/// assert_eq!("5".parse::<Bucket>().unwrap().burst(), 1);
/// assert!("0".parse::<Bucket>().is_err());
/// assert_eq!(b.to_string(), "1000000:250000:0");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub rate: u64,
    /// `None`: the default, [`Bucket::burst`].
    pub burst: Option<u64>,
    pub one_time: u64,
}

impl Bucket {
    /// The bucket's size: what was asked for, else a tenth of a second's worth, at least 1.
    pub fn burst(&self) -> u64 {
        self.burst.unwrap_or((self.rate / 10).max(1))
    }
}

impl std::fmt::Display for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.rate, self.burst(), self.one_time)
    }
}

impl std::str::FromStr for Bucket {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "rate limit {s:?}: expected RATE[:BURST[:ONE_TIME]] (integers, RATE and BURST > 0)"
            )
        };
        let mut parts = s.split(':').map(|p| p.parse::<u64>().map_err(|_| bad()));
        let rate = parts.next().ok_or_else(bad)??;
        let burst = parts.next().transpose()?;
        let one_time = parts.next().transpose()?.unwrap_or(0);
        if parts.next().is_some() || rate == 0 || burst == Some(0) {
            return Err(bad());
        }
        Ok(Bucket {
            rate,
            burst,
            one_time,
        })
    }
}

/// Token buckets on one I/O stream: bytes and operations (frames, requests). A request goes
/// when both have tokens; unset means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoLimit {
    pub bytes: Option<Bucket>,
    pub ops: Option<Bucket>,
}

impl IoLimit {
    /// `,{prefix}bytes=…,{prefix}ops=…` for what is set.
    fn push_to(&self, s: &mut String, prefix: &str) {
        for (name, b) in [("bytes", &self.bytes), ("ops", &self.ops)] {
            if let Some(b) = b {
                s.push_str(&format!(",{prefix}{name}={b}"));
            }
        }
    }

    /// Takes `key=value` if `key` is `{prefix}bytes` or `{prefix}ops`; `Ok(false)` if it is
    /// another key.
    pub fn take(&mut self, prefix: &str, key: &str, value: &str) -> Result<bool, String> {
        let slot = match key.strip_prefix(prefix) {
            Some("bytes") => &mut self.bytes,
            Some("ops") => &mut self.ops,
            _ => return Ok(false),
        };
        *slot = Some(value.parse()?);
        Ok(true)
    }
}

/// A raw disk image (`--disk PATH[,ro|rw][,bytes=BUCKET][,ops=BUCKET]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskArg {
    pub path: PathBuf,
    pub read_only: bool,
    pub limit: IoLimit,
}

impl DiskArg {
    pub fn to_arg(&self) -> OsString {
        let mut s = self.path.clone().into_os_string();
        s.push(if self.read_only { ",ro" } else { ",rw" });
        let mut rest = String::new();
        self.limit.push_to(&mut rest, "");
        s.push(rest);
        s
    }
}

/// virtio-fs served by a vhost-user back end on `socket`, mounted by `tag`
/// (`--fs SOCKET,tag=TAG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsArg {
    pub socket: PathBuf,
    pub tag: String,
}

impl FsArg {
    pub fn to_arg(&self) -> OsString {
        let mut s = self.socket.clone().into_os_string();
        s.push(",tag=");
        s.push(&self.tag);
        s
    }
}

/// The host end of a virtio-net NIC: an open tap passed as an fd, or a tap name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapArg {
    Fd(i32),
    Name(String),
}

/// A virtio-net NIC (`--net fd=N|tap=NAME,mac=MAC[,mtu=N][,rx_bytes=BUCKET][,rx_ops=…]
/// [,tx_bytes=…][,tx_ops=…]`); rx is host to guest, tx guest to host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetArg {
    pub tap: TapArg,
    pub mac: String,
    pub mtu: Option<u16>,
    pub rx: IoLimit,
    pub tx: IoLimit,
}

impl NetArg {
    /// A NIC on tap fd `fd` (open in hull-vmm at that number) with the guest MAC and MTU.
    pub fn fd(fd: i32, mac: &str, mtu: u16) -> Self {
        NetArg {
            tap: TapArg::Fd(fd),
            mac: mac.to_string(),
            mtu: Some(mtu),
            rx: IoLimit::default(),
            tx: IoLimit::default(),
        }
    }

    pub fn to_arg(&self) -> String {
        let mut s = match &self.tap {
            TapArg::Fd(fd) => format!("fd={fd}"),
            TapArg::Name(n) => format!("tap={n}"),
        };
        s.push_str(",mac=");
        s.push_str(&self.mac);
        if let Some(mtu) = self.mtu {
            s.push_str(&format!(",mtu={mtu}"));
        }
        self.rx.push_to(&mut s, "rx_");
        self.tx.push_to(&mut s, "tx_");
        s
    }
}

/// Everything a caller sets on hull-vmm's command line. Fields left at their defaults are not
/// passed, so hull-vmm's own defaults apply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmmArgs {
    /// ELF vmlinux (PVH entry preferred) or bzImage.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    /// Replaces hull-vmm's default kernel command line.
    pub cmdline: Option<String>,
    /// Appended to the command line (an operator's `kernel_params`).
    pub cmdline_append: Option<String>,
    pub vcpus: Option<u8>,
    pub mem_mib: Option<u32>,
    /// vCPUs the VM may grow to while it runs (hull-vmm's `PUT /hotplug/vcpus`).
    pub max_vcpus: Option<u8>,
    /// MiB of memory the VM may grow by while it runs, a multiple of 128 (a virtio-mem
    /// region; `PUT /hotplug/memory`).
    pub hotplug_mib: Option<u32>,
    /// Empty slots for disks attached while the VM runs (`PUT /hotplug/disks/N`).
    pub disk_slots: Option<u8>,
    /// The hybrid-vsock host socket; the guest gets [`crate::vsock::GUEST_CID`] unless `cid`
    /// says otherwise.
    pub vsock_uds: Option<PathBuf>,
    pub cid: Option<u32>,
    pub disks: Vec<DiskArg>,
    pub fs: Vec<FsArg>,
    pub net: Vec<NetArg>,
    pub console: Console,
    pub boot_timer: bool,
    pub no_rng: bool,
    pub no_free_page_reporting: bool,
    pub allow_software_kvm: bool,
    pub metrics_on_exit: bool,
    pub api_sock: Option<PathBuf>,
    /// With `api_sock`: boot from the flags at once instead of waiting for the API's `boot`.
    pub boot: bool,
    pub no_seccomp: bool,
}

impl VmmArgs {
    /// A VM of `vcpus` and `mem_mib` booting `kernel`; everything else at its default.
    pub fn new(kernel: impl Into<PathBuf>, vcpus: u8, mem_mib: u32) -> Self {
        VmmArgs {
            kernel: Some(kernel.into()),
            vcpus: Some(vcpus),
            mem_mib: Some(mem_mib),
            ..VmmArgs::default()
        }
    }

    /// The arguments to pass after the program name.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut v = Vec::new();
        let mut opt = |name: &str, value: Option<OsString>| {
            if let Some(value) = value {
                v.push(OsString::from(format!("--{name}")));
                v.push(value);
            }
        };
        let path = |p: &Option<PathBuf>| p.clone().map(PathBuf::into_os_string);
        opt(flag::KERNEL, path(&self.kernel));
        opt(flag::INITRD, path(&self.initrd));
        opt(flag::CMDLINE, self.cmdline.clone().map(OsString::from));
        opt(
            flag::CMDLINE_APPEND,
            self.cmdline_append
                .as_deref()
                .filter(|s| !s.trim().is_empty())
                .map(OsString::from),
        );
        opt(flag::VCPUS, self.vcpus.map(|n| n.to_string().into()));
        opt(flag::MEM_MIB, self.mem_mib.map(|n| n.to_string().into()));
        opt(
            flag::MAX_VCPUS,
            self.max_vcpus.map(|n| n.to_string().into()),
        );
        opt(
            flag::HOTPLUG_MIB,
            self.hotplug_mib.map(|n| n.to_string().into()),
        );
        opt(
            flag::DISK_SLOTS,
            self.disk_slots.map(|n| n.to_string().into()),
        );
        opt(flag::VSOCK_UDS, path(&self.vsock_uds));
        opt(flag::CID, self.cid.map(|n| n.to_string().into()));
        for d in &self.disks {
            opt(flag::DISK, Some(d.to_arg()));
        }
        for f in &self.fs {
            opt(flag::FS, Some(f.to_arg()));
        }
        for n in &self.net {
            opt(flag::NET, Some(n.to_arg().into()));
        }
        if self.console != Console::Stdout {
            opt(flag::CONSOLE, Some(self.console.to_arg()));
        }
        opt(flag::API_SOCK, path(&self.api_sock));
        for (on, name) in [
            (self.boot_timer, flag::BOOT_TIMER),
            (self.no_rng, flag::NO_RNG),
            (self.no_free_page_reporting, flag::NO_FREE_PAGE_REPORTING),
            (self.allow_software_kvm, flag::ALLOW_SOFTWARE_KVM),
            (self.metrics_on_exit, flag::METRICS_ON_EXIT),
            (self.boot, flag::BOOT),
            (self.no_seccomp, flag::NO_SECCOMP),
        ] {
            if on {
                v.push(OsString::from(format!("--{name}")));
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_nothing() {
        assert!(VmmArgs::default().to_args().is_empty());
    }

    #[test]
    fn console_file_named_like_a_keyword_stays_a_file() {
        assert_eq!(
            Console::File("off".into()).to_arg(),
            OsString::from("./off")
        );
        assert_eq!(
            Console::File("fd=3".into()).to_arg(),
            OsString::from("./fd=3")
        );
        assert_eq!(
            Console::File("/run/x/console.log".into()).to_arg(),
            OsString::from("/run/x/console.log")
        );
        assert_eq!(Console::Fd(4).to_arg(), OsString::from("fd=4"));
    }

    #[test]
    fn blank_cmdline_append_is_not_passed() {
        let a = VmmArgs {
            cmdline_append: Some("  ".into()),
            ..VmmArgs::default()
        };
        assert!(a.to_args().is_empty());
    }
}
