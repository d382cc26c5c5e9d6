//! The VM a user asks for, validated before anything is built. The same type comes from the
//! command line and from the API socket's `configure`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Largest VM we build (the MP table must fit in the EBDA).
pub const MAX_VCPUS: u8 = 32;
/// Default guest kernel command line: console on COM1, reset through the i8042 on reboot.
pub const DEFAULT_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.dumbkbd";

/// Where the guest console goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleConfig {
    #[default]
    Stdout,
    Off,
    File(PathBuf),
}

impl std::str::FromStr for ConsoleConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Ok(match s {
            "stdout" => ConsoleConfig::Stdout,
            "off" => ConsoleConfig::Off,
            "" => {
                return Err(ConfigError::Invalid(
                    "--console needs FILE|stdout|off".into(),
                ))
            }
            path => ConsoleConfig::File(PathBuf::from(path)),
        })
    }
}

/// A virtio-blk disk: a raw file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

impl std::str::FromStr for DiskConfig {
    type Err = ConfigError;
    /// `PATH[,ro]`
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (path, read_only) = match s.rsplit_once(',') {
            Some((p, "ro")) => (p, true),
            Some((p, "rw")) => (p, false),
            _ => (s, false),
        };
        if path.is_empty() {
            return Err(ConfigError::Invalid("--disk needs PATH[,ro]".into()));
        }
        Ok(DiskConfig {
            path: PathBuf::from(path),
            read_only,
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

/// The tag hull's guest agent mounts (`agent/src/storage.rs`).
pub const DEFAULT_FS_TAG: &str = "hull";

fn default_fs_tag() -> String {
    DEFAULT_FS_TAG.to_string()
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
    #[serde(default)]
    pub vsock: Option<VsockConfig>,
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    #[serde(default)]
    pub fs: Vec<FsConfig>,
    #[serde(default = "default_true")]
    pub rng: bool,
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

fn default_cmdline() -> String {
    DEFAULT_CMDLINE.to_string()
}
fn default_vcpus() -> u8 {
    1
}
fn default_mem() -> u32 {
    128
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
            vcpus: 1,
            mem_mib: 128,
            vsock: None,
            disks: vec![],
            fs: vec![],
            rng: true,
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
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: &str| Err(ConfigError::Invalid(s.to_string()));
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return bad(&format!("vcpus must be 1..={MAX_VCPUS}"));
        }
        if self.mem_mib < 16 || self.mem_mib > 64 * 1024 {
            return bad("mem_mib must be 16..=65536");
        }
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
        if self.cmdline.len() >= crate::arch::CMDLINE_MAX_SIZE - 256 {
            return bad("command line too long");
        }
        Ok(())
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
                read_only: true
            }
        );
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
}
