//! What kind of KVM this host offers.
//!
//! Some hosts expose `/dev/kvm` through the software `kvm_pvm` module: it runs tiny real- or
//! long-mode payloads, but emulates a Linux guest instruction by instruction and fails on
//! `cmpxchg16b`/`xrstors`. The VMM must refuse such a host for Linux guests with a clear word
//! rather than hang (DESIGN §5), so this is decided before a VM is built.

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
        "this host's /dev/kvm is the software kvm_pvm module (no vmx/svm in /proc/cpuinfo): \
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
        let cpuinfo = fs::read_to_string(&paths.cpuinfo).unwrap_or_default();
        if cpu_has_virt_extensions(&cpuinfo) || !is_dir(&paths.kvm_pvm_module) {
            HostKvm::Hardware
        } else {
            HostKvm::Software
        }
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
    fn software_kvm_refusal_names_the_lab() {
        let err = HostKvm::Software.check_linux_guest().expect_err("refused");
        let msg = err.to_string();
        assert!(msg.contains("kvm_pvm") && msg.contains("lab/run"), "{msg}");
        assert!(!msg.contains('\n'), "one line");
        assert_eq!(HostKvm::Hardware.check_linux_guest(), Ok(()));
    }
}
