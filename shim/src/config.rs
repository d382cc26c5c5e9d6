//! `hull.toml`: what a node operator sets for every hull pod on the node (DESIGN §3). The
//! documented reference is `deploy/hull.toml`; a test compares its keys with the ones these
//! structs have, so the two cannot drift.
//!
//! Unknown keys are errors: a misspelt key that is silently ignored leaves a node running with
//! settings its operator believes are different.

use std::path::{Path, PathBuf};

use hull_contract::{MAX_DISK_SLOTS, MAX_VCPUS};
use serde::Deserialize;
/// Below this the guest kernel and agent do not fit with room for a container.
pub(crate) const MIN_MEMORY_MIB: u32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read hull config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("hull config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("hull config {path}: {key}: {reason}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(crate) struct HullConfig {
    pub(crate) vm: VmSection,
    #[serde(default)]
    pub(crate) log: LogSection,
    #[serde(default)]
    pub(crate) virtiofs: VirtiofsSection,
    #[serde(default)]
    pub(crate) jail: JailSection,
    /// Test only: run pods with hull-agent on the host instead of a VM. Honoured only by a
    /// shim built with the `host-agent-backend` feature; see `deploy/hull.toml`.
    #[serde(default)]
    pub(crate) host_agent: Option<HostAgentSection>,
    #[serde(default)]
    pub(crate) annotations: AnnotationsSection,
    /// Every pod's I/O limits, which allowed `io.hull.limits.*` annotations replace.
    #[serde(default)]
    pub(crate) limits: crate::limits::LimitsSection,
}

/// The prefix of every annotation that may configure hull (`pod_annotations` in the
/// containerd drop-in passes these through to the shim).
pub(crate) const HULL_ANNOTATION_PREFIX: &str = "io.hull.";

/// `[annotations]`: which `io.hull.*` pod annotations a pod may set (Kata's
/// `enable_annotations` model). A pod's annotations are written by whoever may create pods,
/// not by the node's operator: none configures a VM unless listed here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(crate) struct AnnotationsSection {
    /// Exact keys (`io.hull.net.rx_rate`) or prefixes ending in `.` (`io.hull.net.`), all
    /// under `io.hull.`.
    #[serde(default)]
    pub(crate) allowed: Vec<String>,
}

/// `[host_agent]`: the test-only backend without a VM (no isolation from the host kernel).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(crate) struct HostAgentSection {
    /// The `hull-agent` binary to run with `--listen unix:PATH` on the host.
    pub(crate) agent: PathBuf,
}

/// `[vm]`: what every pod VM is booted from and how big it is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(crate) struct VmSection {
    /// The `hull-vmm` binary.
    pub(crate) vmm: PathBuf,
    /// Guest kernel (ELF vmlinux for PVH boot, or bzImage).
    pub(crate) kernel: PathBuf,
    /// Guest initrd holding hull-agent as /init.
    pub(crate) initrd: PathBuf,
    /// Appended to hull's own kernel command line (e.g. `"loglevel=7"`).
    #[serde(default)]
    pub(crate) kernel_params: String,
    /// vCPUs of a pod that asks for no CPU limit.
    #[serde(default = "default_vcpus")]
    pub(crate) default_vcpus: u8,
    /// Guest memory of a pod that asks for no memory limit.
    #[serde(default = "default_memory_mib")]
    pub(crate) default_memory_mib: u32,
    /// Added to the pod's memory limit: the guest kernel, the agent and page cache headroom.
    #[serde(default = "default_overhead_memory_mib")]
    pub(crate) overhead_memory_mib: u32,
    /// vCPUs a pod's VM may grow to while it runs (containers added with CPU limits, in-place
    /// resize); never fewer than it boots with. Each one declared costs the guest about
    /// 0.4 MiB of RAM even while unused (bench/vmm/hotplug). 0: the node's CPUs, at most
    /// hull's maximum.
    #[serde(default = "default_max_vcpus")]
    pub(crate) max_vcpus: u8,
    /// Guest memory (MiB) a pod's VM may grow to while it runs; the VM reserves the difference
    /// to its boot size as address space (a virtio-mem region) and the host backs only what
    /// the guest is given and touches. Never more than the pod's host cgroup allows.
    /// 0: no growth.
    #[serde(default = "default_max_memory_mib")]
    pub(crate) max_memory_mib: u32,
    /// Empty slots in each pod's VM for disks attached while it runs (`hullctl disk
    /// attach`); each takes one of the VM's virtio IRQs. Nothing in a pod's spec attaches
    /// disks yet (block volumes will).
    #[serde(default)]
    pub(crate) disk_slots: u8,
    /// Seconds from exec of hull-vmm until the agent must answer its health check.
    #[serde(default = "default_boot_timeout_secs")]
    pub(crate) boot_timeout_secs: u32,
    /// The guest reports free memory and hull-vmm gives its host pages back (a virtio-balloon
    /// that never inflates; vmm/API.md).
    #[serde(default = "default_true")]
    pub(crate) free_page_reporting: bool,
    /// Boot pods with the guest's serial console, logged to `console.log`: for debugging.
    /// Without it (the default) the guest has no UART, and a kernel panic still ends the VM
    /// as a crash, with the end of the kernel's log in `vmm.log` (vmm/src/pstore.rs).
    #[serde(default)]
    pub(crate) guest_console: bool,
    /// Pods serve `hullctl debug`: an operator's root shell in the guest, outside every
    /// container (the agent listens only when the kernel command line says so). Off by
    /// default: it opens the tenant's whole guest to the node's root.
    #[serde(default)]
    pub(crate) debug_shell: bool,
}

/// `[virtiofs]`: the per-pod virtiofsd that serves the pod's share (DESIGN §1).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(crate) struct VirtiofsSection {
    /// The `virtiofsd` binary (vhost-user back end).
    #[serde(default = "default_virtiofsd")]
    pub(crate) virtiofsd: PathBuf,
    /// virtiofsd `--cache`: `auto`, `always`, `metadata` or `never`.
    #[serde(default = "default_cache")]
    pub(crate) cache: String,
    /// virtiofsd `--sandbox`: `namespace` (its own pid/mount/net namespaces, pivot_root into
    /// the share) or `chroot` (where namespaces are unavailable). `none` is refused.
    #[serde(default = "default_sandbox")]
    pub(crate) sandbox: String,
    /// virtiofsd `--thread-pool-size`; 0 serves requests on the vring thread, which uses
    /// the least memory per pod.
    #[serde(default)]
    pub(crate) thread_pool_size: u32,
}

impl Default for VirtiofsSection {
    fn default() -> Self {
        VirtiofsSection {
            virtiofsd: default_virtiofsd(),
            cache: default_cache(),
            sandbox: default_sandbox(),
            thread_pool_size: 0,
        }
    }
}

fn default_virtiofsd() -> PathBuf {
    PathBuf::from("/usr/local/libexec/hull/virtiofsd")
}
fn default_cache() -> String {
    "auto".to_owned()
}
fn default_sandbox() -> String {
    "namespace".to_owned()
}

/// `[jail]`: how each hull-vmm is confined (DESIGN §2 shim/, `backend/jail/`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(crate) struct JailSection {
    /// `[first, last]`: the uids (and equal gids) hull-vmm runs as, one per pod. They must
    /// belong to no account and no subordinate-id range (`/etc/subuid`).
    #[serde(default = "default_uid_range")]
    pub(crate) uid_range: [u32; 2],
}

impl Default for JailSection {
    fn default() -> Self {
        JailSection {
            uid_range: default_uid_range(),
        }
    }
}

/// 0x70000000 + 64 Ki: above the subordinate ids `useradd` hands out (login.defs'
/// SUB_UID_MIN..SUB_UID_MAX, 100000..600100000, so the usual 100000–165535 is the first
/// user's) and systemd's container range (524288..1879048191), below its foreign range
/// (0x7FFE0000) and below 2^31, which some tools mishandle as negative.
fn default_uid_range() -> [u32; 2] {
    [0x7000_0000, 0x7000_ffff]
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(crate) struct LogSection {
    /// `error`, `warn`, `info`, `debug` or `trace`.
    #[serde(default = "default_log_level")]
    pub(crate) level: String,
    /// Each pod's console.log, vmm.log and virtiofsd.log go to `<pod_dir>/<sandbox id>/`,
    /// removed with the pod. On disk, not on `/run`: a guest must not fill the tmpfs that
    /// containerd and the kubelet share.
    #[serde(default = "default_pod_log_dir")]
    pub(crate) pod_dir: PathBuf,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: default_log_level(),
            pod_dir: default_pod_log_dir(),
        }
    }
}

fn default_pod_log_dir() -> PathBuf {
    PathBuf::from("/var/log/hull/pods")
}

fn default_vcpus() -> u8 {
    1
}
fn default_memory_mib() -> u32 {
    256
}
fn default_overhead_memory_mib() -> u32 {
    64
}
fn default_max_vcpus() -> u8 {
    4
}
fn default_max_memory_mib() -> u32 {
    16 * 1024
}
fn default_true() -> bool {
    true
}
fn default_boot_timeout_secs() -> u32 {
    30
}
fn default_log_level() -> String {
    "info".to_owned()
}

const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

impl HullConfig {
    /// Reads and validates `path`.
    pub(crate) fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates `text`; `path` only names the file in errors.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: HullConfig = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            reason,
        };
        self.limits
            .validate()
            .map_err(|e| invalid("limits", e.to_string()))?;
        let vm = &self.vm;
        for (key, p) in [
            ("vm.vmm", &vm.vmm),
            ("vm.kernel", &vm.kernel),
            ("vm.initrd", &vm.initrd),
        ] {
            // The shim runs with containerd's working directory; a relative path would
            // resolve against wherever that happens to be.
            if !p.is_absolute() {
                return Err(invalid(
                    key,
                    format!("{} is not an absolute path", p.display()),
                ));
            }
        }
        if !self.virtiofs.virtiofsd.is_absolute() {
            return Err(invalid(
                "virtiofs.virtiofsd",
                format!(
                    "{} is not an absolute path",
                    self.virtiofs.virtiofsd.display()
                ),
            ));
        }
        if !["auto", "always", "metadata", "never"].contains(&self.virtiofs.cache.as_str()) {
            return Err(invalid(
                "virtiofs.cache",
                format!(
                    "{:?} is not one of auto, always, metadata, never",
                    self.virtiofs.cache
                ),
            ));
        }
        if !["namespace", "chroot"].contains(&self.virtiofs.sandbox.as_str()) {
            return Err(invalid(
                "virtiofs.sandbox",
                format!(
                    "{:?} is not namespace or chroot (virtiofsd must not run unsandboxed)",
                    self.virtiofs.sandbox
                ),
            ));
        }
        if !self.log.pod_dir.is_absolute() {
            return Err(invalid(
                "log.pod_dir",
                format!("{} is not an absolute path", self.log.pod_dir.display()),
            ));
        }
        let [first, last] = self.jail.uid_range;
        // 0 is root; 65534 (nobody) and 65535 (16-bit -1) belong to every system; u32::MAX is
        // "no change" to setresuid(2).
        if first == 0
            || first > last
            || last == u32::MAX
            || (first..=last).contains(&65534)
            || (first..=last).contains(&65535)
        {
            return Err(invalid(
                "jail.uid_range",
                format!("[{first}, {last}] must be first <= last, without 0, 65534, 65535 or 4294967295"),
            ));
        }
        if let Some(h) = &self.host_agent {
            if !h.agent.is_absolute() {
                return Err(invalid(
                    "host_agent.agent",
                    format!("{} is not an absolute path", h.agent.display()),
                ));
            }
        }
        if vm.default_vcpus == 0 || vm.default_vcpus > MAX_VCPUS {
            return Err(invalid(
                "vm.default_vcpus",
                format!("{} is not in 1..={MAX_VCPUS}", vm.default_vcpus),
            ));
        }
        if vm.default_memory_mib < MIN_MEMORY_MIB {
            return Err(invalid(
                "vm.default_memory_mib",
                format!(
                    "{} MiB is below {MIN_MEMORY_MIB} MiB",
                    vm.default_memory_mib
                ),
            ));
        }
        if vm.max_vcpus > MAX_VCPUS {
            return Err(invalid(
                "vm.max_vcpus",
                format!("{} is above {MAX_VCPUS}", vm.max_vcpus),
            ));
        }
        if vm.disk_slots > MAX_DISK_SLOTS {
            return Err(invalid(
                "vm.disk_slots",
                format!("{} is above {MAX_DISK_SLOTS}", vm.disk_slots),
            ));
        }
        if vm.max_memory_mib > 64 * 1024 {
            return Err(invalid(
                "vm.max_memory_mib",
                format!("{} MiB is above 65536 MiB", vm.max_memory_mib),
            ));
        }
        if vm.boot_timeout_secs == 0 {
            return Err(invalid("vm.boot_timeout_secs", "must be > 0".to_owned()));
        }
        // hull builds the base command line (console, virtio-mmio devices, reboot mode); an
        // operator's parameters may add to it but not inject another init or a second console.
        for word in vm.kernel_params.split_whitespace() {
            let key = word.split('=').next().unwrap_or(word);
            if matches!(
                key,
                "init" | "rdinit" | "console" | "virtio_mmio.device" | "maxcpus"
            ) {
                return Err(invalid(
                    "vm.kernel_params",
                    format!("{key}= is set by hull and cannot be overridden"),
                ));
            }
        }
        for a in &self.annotations.allowed {
            // A typo must not silently allow nothing, nor a bare `io.` allow every runtime's.
            let rest = a.strip_prefix(HULL_ANNOTATION_PREFIX);
            let ok = rest.is_some_and(|r| {
                !r.is_empty()
                    && !r.contains("..")
                    && r.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
            });
            if !ok {
                return Err(invalid(
                    "annotations.allowed",
                    format!(
                        "{a:?} is not an io.hull. annotation key or a prefix of them ending in '.'"
                    ),
                ));
            }
        }
        if !LOG_LEVELS.contains(&self.log.level.as_str()) {
            return Err(invalid(
                "log.level",
                format!(
                    "{:?} is not one of {}",
                    self.log.level,
                    LOG_LEVELS.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    const MINIMAL: &str = r#"
[vm]
vmm = "/usr/local/bin/hull-vmm"
kernel = "/usr/local/share/hull/vmlinux"
initrd = "/usr/local/share/hull/initrd.cpio.gz"
"#;

    fn parse(text: &str) -> Result<HullConfig, ConfigError> {
        HullConfig::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.vm.default_vcpus, 1);
        assert_eq!(c.vm.default_memory_mib, 256);
        assert_eq!(c.vm.overhead_memory_mib, 64);
        assert_eq!(c.vm.boot_timeout_secs, 30);
        assert!(c.vm.free_page_reporting);
        assert!(!c.vm.guest_console);
        assert!(!c.vm.debug_shell);
        assert_eq!(c.log.level, "info");
        assert!(c.vm.kernel_params.is_empty());
    }

    /// `section.key` of every field of `v` (a config as JSON), sections that are `None`
    /// left out.
    fn keys_of(v: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
        let Some(fields) = v.as_object() else {
            return;
        };
        for (k, v) in fields {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                serde_json::Value::Null => {}
                serde_json::Value::Object(_) => keys_of(v, &key, out),
                _ => {
                    out.insert(key);
                }
            }
        }
    }

    /// The keys `deploy/hull.toml` lists as `key = value` lines under their `[section]`, and
    /// whether each is commented out (an optional section is documented commented).
    fn documented_keys(text: &str) -> BTreeMap<String, bool> {
        let is_name =
            |s: &str| !s.is_empty() && s.chars().all(|c| c == '_' || c.is_ascii_lowercase());
        let mut section = String::new();
        let mut keys = BTreeMap::new();
        for line in text.lines() {
            let commented = line.trim_start().starts_with('#');
            let bare = line.trim_start_matches(['#', ' ']);
            if let Some(name) = bare.strip_prefix('[').and_then(|b| b.strip_suffix(']')) {
                if is_name(name) {
                    section = name.to_owned();
                }
            } else if let Some((key, _)) = bare.split_once(" = ") {
                if is_name(key) {
                    keys.insert(format!("{section}.{key}"), commented);
                }
            }
        }
        keys
    }

    /// deploy/hull.toml documents exactly the keys the structs have (derived from them, not
    /// listed by hand), each uncommented with its default, optional sections commented out.
    #[test]
    fn documented_reference_has_every_key_of_the_structs_with_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/hull.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        // deny_unknown_fields: an uncommented key the structs lack fails here.
        let c = HullConfig::parse(&text, &path).unwrap();
        assert_eq!(
            c,
            parse(MINIMAL).unwrap(),
            "deploy/hull.toml must set each key to its default"
        );
        let mut every = c.clone();
        every.host_agent = Some(HostAgentSection {
            agent: PathBuf::from("/a"),
        });
        every.limits = crate::limits::LimitsSection::every_key("1");
        let mut want = BTreeSet::new();
        keys_of(&serde_json::to_value(&every).unwrap(), "", &mut want);
        let documented = documented_keys(&text);
        let have: BTreeSet<String> = documented.keys().cloned().collect();
        assert_eq!(
            have, want,
            "deploy/hull.toml (left) and the config structs (right) disagree"
        );
        let mut set = BTreeSet::new();
        keys_of(&serde_json::to_value(&c).unwrap(), "", &mut set);
        for key in set {
            assert!(!documented[&key], "deploy/hull.toml comments {key} out");
        }
        assert!(
            want.contains("host_agent.agent") && want.contains("vm.kernel"),
            "{want:?}"
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let e = parse(&format!("{MINIMAL}default_cpus = 2\n")).unwrap_err();
        assert!(e.to_string().contains("default_cpus"), "{e}");
    }

    #[test]
    fn missing_required_key_is_an_error() {
        let e = parse("[vm]\nvmm = \"/x\"\n").unwrap_err();
        assert!(e.to_string().contains("kernel"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("default_vcpus = 0", "vm.default_vcpus"),
            ("default_vcpus = 33", "vm.default_vcpus"),
            ("default_memory_mib = 16", "vm.default_memory_mib"),
            ("boot_timeout_secs = 0", "vm.boot_timeout_secs"),
            ("kernel_params = \"quiet init=/bin/sh\"", "vm.kernel_params"),
            ("[virtiofs]\nsandbox = \"none\"", "virtiofs.sandbox"),
            ("[virtiofs]\ncache = \"fast\"", "virtiofs.cache"),
            ("[jail]\nuid_range = [0, 10]", "jail.uid_range"),
            ("[jail]\nuid_range = [200000, 100000]", "jail.uid_range"),
            ("[jail]\nuid_range = [60000, 70000]", "jail.uid_range"),
            ("[log]\npod_dir = \"logs\"", "log.pod_dir"),
            (
                "[virtiofs]\nvirtiofsd = \"virtiofsd\"",
                "virtiofs.virtiofsd",
            ),
        ];
        for (line, key) in cases {
            let e = parse(&format!("{MINIMAL}{line}\n")).unwrap_err();
            assert!(
                matches!(&e, ConfigError::Invalid { key: k, .. } if *k == key),
                "{line}: {e}"
            );
        }
        let e = parse(&MINIMAL.replace("\"/usr/local/bin/hull-vmm\"", "\"hull-vmm\"")).unwrap_err();
        assert!(e.to_string().contains("vm.vmm"), "{e}");
        let e = parse(&format!("{MINIMAL}[log]\nlevel = \"loud\"\n")).unwrap_err();
        assert!(e.to_string().contains("log.level"), "{e}");
        for bad in [
            "io.",
            "io.hull.",
            "io.kubernetes.cri.x",
            "io.hull.a..b",
            "io.hull.*",
        ] {
            let e = parse(&format!("{MINIMAL}[annotations]\nallowed = [{bad:?}]\n")).unwrap_err();
            assert!(
                matches!(
                    &e,
                    ConfigError::Invalid {
                        key: "annotations.allowed",
                        ..
                    }
                ),
                "{bad}: {e}"
            );
        }
        let c = parse(&format!(
            "{MINIMAL}[annotations]\nallowed = [\"io.hull.net.\", \"io.hull.x\"]\n"
        ))
        .unwrap();
        assert_eq!(c.annotations.allowed, ["io.hull.net.", "io.hull.x"]);
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let e = HullConfig::load(Path::new("/nonexistent/hull.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/hull.toml"), "{e}");
    }
}
