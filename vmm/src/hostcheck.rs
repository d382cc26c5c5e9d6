//! What kind of KVM this host offers.
//!
//! Some hosts expose `/dev/kvm` through the software `kvm_pvm` module: it runs tiny real- or
//! long-mode payloads, but emulates a Linux guest instruction by instruction and fails on
//! `cmpxchg16b`/`xrstors`. The VMM must refuse such a host for Linux guests with a clear word
//! rather than hang (DESIGN §5), so this is decided before a VM is built.
//!
//! The facts come from `/proc/cpuinfo` and `/sys/module`. In the shim's jail neither exists:
//! then the CPU's own CPUID answers for VMX/SVM, and a `/dev/kvm` without them is taken for
//! the software one (x86 KVM has no other way to run without VMX or SVM), so the jailed
//! hull-vmm refuses the same hosts as an unjailed one.

use std::fs;
use std::path::{Path, PathBuf};

/// The KVM flavour of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKvm {
    /// VMX or SVM in the CPU flags: Linux guests run natively.
    Hardware,
    /// `/dev/kvm` backed by `kvm_pvm` and no VMX/SVM: only test payloads run.
    Software,
    /// No `/dev/kvm` at all.
    Absent,
}

/// Where the facts are read from; tests point it at a fixture tree.
#[derive(Debug, Clone)]
pub struct HostPaths {
    pub dev_kvm: PathBuf,
    pub cpuinfo: PathBuf,
    pub kvm_pvm_module: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            dev_kvm: PathBuf::from("/dev/kvm"),
            cpuinfo: PathBuf::from("/proc/cpuinfo"),
            kvm_pvm_module: PathBuf::from("/sys/module/kvm_pvm"),
        }
    }
}

/// Why a Linux guest cannot boot on this host, as the one line an operator reads.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostKvmError {
    #[error(
        "this host's /dev/kvm is the software kvm_pvm module (no vmx/svm CPU flag): \
         it cannot run a Linux guest; run hull inside the lab (lab/run -- CMD), see DESIGN.md §5"
    )]
    SoftwareKvm,
    #[error(
        "/dev/kvm is missing: load kvm_intel or kvm_amd, or run hull inside the lab (lab/run)"
    )]
    NoKvm,
}

impl HostKvm {
    /// Reads the host's KVM flavour from `paths`.
    pub fn detect(paths: &HostPaths) -> HostKvm {
        if !paths.dev_kvm.exists() {
            return HostKvm::Absent;
        }
        let virt = match fs::read_to_string(&paths.cpuinfo) {
            Ok(cpuinfo) => cpu_has_virt_extensions(&cpuinfo),
            // No /proc (the jail): what the CPU reports. The kernel may hide a flag the CPU
            // has (VMX disabled by the firmware), never show one it lacks, so this errs
            // towards "hardware" exactly where cpuinfo would have said "software" too late.
            Err(_) => cpuid_has_virt_extensions(),
        };
        // Whether kvm_pvm is loaded; unknown without /sys/module (the jail).
        let pvm = paths
            .kvm_pvm_module
            .parent()
            .filter(|m| is_dir(m))
            .map(|_| is_dir(&paths.kvm_pvm_module));
        classify(virt, pvm)
    }

    /// Whether a Linux guest can boot here.
    pub(crate) fn check_linux_guest(self) -> Result<(), HostKvmError> {
        match self {
            HostKvm::Hardware => Ok(()),
            HostKvm::Software => Err(HostKvmError::SoftwareKvm),
            HostKvm::Absent => Err(HostKvmError::NoKvm),
        }
    }
}

/// VMX or SVM as such; otherwise software when kvm_pvm is loaded or cannot be looked up (a
/// `/dev/kvm` without VMX/SVM is the software one), and hardware when /sys/module shows no
/// kvm_pvm (an accelerator we do not know: let KVM decide, as before the jail).
fn classify(virt: bool, kvm_pvm_loaded: Option<bool>) -> HostKvm {
    match (virt, kvm_pvm_loaded) {
        (true, _) | (false, Some(false)) => HostKvm::Hardware,
        (false, Some(true) | None) => HostKvm::Software,
    }
}

/// VMX (CPUID.1:ECX bit 5) or SVM (CPUID.8000_0001h:ECX bit 2), as the CPU reports them.
fn cpuid_has_virt_extensions() -> bool {
    use std::arch::x86_64::__cpuid;
    let vmx = __cpuid(1).ecx & (1 << 5) != 0;
    let svm = __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 2) != 0;
    vmx || svm
}

fn is_dir(p: &Path) -> bool {
    p.metadata().map(|m| m.is_dir()).unwrap_or(false)
}

/// True when any `flags` line of a cpuinfo text lists `vmx` or `svm` as a whole word.
fn cpu_has_virt_extensions(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter_map(|l| l.split_once(':').filter(|(k, _)| k.trim() == "flags"))
        .any(|(_, flags)| flags.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTEL: &str = "processor\t: 0\nflags\t\t: fpu vme de pse vmx sse2\n";
    const AMD: &str = "processor\t: 0\nflags\t\t: fpu svm lm\n";
    const NONE: &str = "processor\t: 0\nflags\t\t: fpu vme svmx_fake xvmx lm\nvmx flags\t: ept\n";

    fn fixture(cpuinfo: &str, kvm: bool, pvm: bool) -> (tempfile::TempDir, HostPaths) {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = HostPaths {
            dev_kvm: dir.path().join("kvm"),
            cpuinfo: dir.path().join("cpuinfo"),
            kvm_pvm_module: dir.path().join("kvm_pvm"),
        };
        fs::write(&paths.cpuinfo, cpuinfo).expect("write cpuinfo");
        if kvm {
            fs::write(&paths.dev_kvm, "").expect("fake /dev/kvm");
        }
        if pvm {
            fs::create_dir(&paths.kvm_pvm_module).expect("fake module dir");
        }
        (dir, paths)
    }

    #[test]
    fn flags_are_matched_as_whole_words_on_flags_lines_only() {
        assert!(cpu_has_virt_extensions(INTEL));
        assert!(cpu_has_virt_extensions(AMD));
        assert!(!cpu_has_virt_extensions(NONE));
        assert!(!cpu_has_virt_extensions(""));
    }

    #[test]
    fn classifies_hosts() {
        let cases = [
            (INTEL, true, false, HostKvm::Hardware),
            (AMD, true, true, HostKvm::Hardware), // nested: real SVM wins over a loaded kvm_pvm
            (NONE, true, true, HostKvm::Software),
            (NONE, true, false, HostKvm::Hardware), // unknown accelerator: let KVM decide
            (INTEL, false, false, HostKvm::Absent),
        ];
        for (cpuinfo, kvm, pvm, want) in cases {
            let (_dir, paths) = fixture(cpuinfo, kvm, pvm);
            assert_eq!(
                HostKvm::detect(&paths),
                want,
                "{cpuinfo:?} kvm={kvm} pvm={pvm}"
            );
        }
    }

    #[test]
    fn without_proc_and_sys_the_cpu_and_dev_kvm_decide() {
        assert_eq!(classify(true, None), HostKvm::Hardware);
        assert_eq!(classify(false, None), HostKvm::Software);
        // A tree with /dev/kvm only, as in the jail: CPUID stands in for cpuinfo.
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = HostPaths {
            dev_kvm: dir.path().join("kvm"),
            cpuinfo: dir.path().join("proc/cpuinfo"),
            kvm_pvm_module: dir.path().join("sys/module/kvm_pvm"),
        };
        fs::write(&paths.dev_kvm, "").expect("fake /dev/kvm");
        let want = classify(cpuid_has_virt_extensions(), None);
        assert_eq!(HostKvm::detect(&paths), want);
        // This host, read both ways, agrees (here: a software KVM, or real VMX/SVM).
        let host = HostKvm::detect(&HostPaths::default());
        if host != HostKvm::Absent {
            assert_eq!(
                host, want,
                "jailed and unjailed detection differ on this host"
            );
        }
    }

    #[test]
    fn software_kvm_refusal_names_the_lab() {
        let err = HostKvm::Software.check_linux_guest().expect_err("refused");
        let msg = err.to_string();
        assert!(msg.contains("kvm_pvm") && msg.contains("lab/run"), "{msg}");
        assert!(!msg.contains('\n'), "one line");
        assert_eq!(HostKvm::Hardware.check_linux_guest(), Ok(()));
    }
}
