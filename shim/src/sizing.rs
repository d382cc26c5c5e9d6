//! How big a pod's VM is (DESIGN §2 shim/: static sizing). The VM is sized once, when the
//! pod sandbox is created, from the pod-level resource annotations containerd's CRI plugin
//! (≥ 1.6.7) puts on the sandbox spec: the sum of the containers' limits as the kubelet
//! computed them. A pod without limits gets the configured defaults.
//!
//! The VM's memory is the pod's limit plus `overhead_memory_mib` (guest kernel, agent, page
//! cache headroom): without it a pod using exactly its limit would be OOM-killed by the guest
//! kernel before the container's own cgroup limit is reached.

use std::collections::HashMap;

use hull_contract::MAX_VCPUS;

use crate::config::VmSection;

pub(crate) const ANNOTATION_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
pub(crate) const ANNOTATION_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
pub(crate) const ANNOTATION_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";

const MIB: u64 = 1024 * 1024;
/// The largest guest hull-vmm will create (its `--mem-mib` is a u32 MiB count, and one pod
/// asking for more than this is a typo or an attack on the node).
const MAX_MEMORY_MIB: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SizingError {
    #[error("annotation {key}={value:?} is not a non-negative integer")]
    NotANumber { key: &'static str, value: String },
    #[error("pod memory limit of {mib} MiB (with overhead) exceeds hull's maximum of {MAX_MEMORY_MIB} MiB")]
    TooMuchMemory { mib: u64 },
}

/// The VM a pod gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VmSize {
    pub(crate) vcpus: u8,
    pub(crate) memory_mib: u32,
    /// The pod asked for more vCPUs than hull supports and got [`MAX_VCPUS`].
    pub(crate) vcpus_clamped: bool,
}

fn number(annotations: &HashMap<String, String>, key: &'static str) -> Result<u64, SizingError> {
    match annotations.get(key) {
        None => Ok(0),
        Some(v) if v.trim().is_empty() => Ok(0),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| SizingError::NotANumber {
                key,
                value: v.clone(),
            }),
    }
}

/// Sizes the VM of the pod whose sandbox spec carries `annotations`.
pub(crate) fn vm_size(
    annotations: &HashMap<String, String>,
    vm: &VmSection,
) -> Result<VmSize, SizingError> {
    let period = number(annotations, ANNOTATION_CPU_PERIOD)?;
    let quota = number(annotations, ANNOTATION_CPU_QUOTA)?;
    let (vcpus, vcpus_clamped) = if period > 0 && quota > 0 {
        // A limit of 1.5 CPUs needs 2 vCPUs to be reachable; CFS inside the guest enforces
        // the fraction per container.
        let want = quota.div_ceil(period);
        let max = u64::from(MAX_VCPUS);
        (u8::try_from(want.min(max)).unwrap_or(MAX_VCPUS), want > max)
    } else {
        (vm.default_vcpus, false)
    };
    let limit = number(annotations, ANNOTATION_MEMORY)?;
    let base_mib = if limit > 0 {
        limit.div_ceil(MIB)
    } else {
        u64::from(vm.default_memory_mib)
    };
    let mib = base_mib + u64::from(vm.overhead_memory_mib);
    if mib > MAX_MEMORY_MIB {
        return Err(SizingError::TooMuchMemory { mib });
    }
    Ok(VmSize {
        vcpus,
        memory_mib: u32::try_from(mib).map_err(|_| SizingError::TooMuchMemory { mib })?,
        vcpus_clamped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn vm() -> VmSection {
        VmSection {
            vmm: PathBuf::from("/v"),
            kernel: PathBuf::from("/k"),
            initrd: PathBuf::from("/i"),
            kernel_params: String::new(),
            default_vcpus: 1,
            default_memory_mib: 256,
            overhead_memory_mib: 64,
            boot_timeout_secs: 30,
        }
    }

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn no_limits_get_defaults_plus_overhead() {
        let s = vm_size(&HashMap::new(), &vm()).unwrap();
        assert_eq!(
            s,
            VmSize {
                vcpus: 1,
                memory_mib: 320,
                vcpus_clamped: false
            }
        );
    }

    #[test]
    fn limits_round_up() {
        let a = ann(&[
            (ANNOTATION_CPU_PERIOD, "100000"),
            (ANNOTATION_CPU_QUOTA, "150000"),
            (ANNOTATION_MEMORY, &(512 * MIB + 1).to_string()),
        ]);
        let s = vm_size(&a, &vm()).unwrap();
        assert_eq!((s.vcpus, s.memory_mib), (2, 513 + 64));
    }

    #[test]
    fn zero_quota_means_unlimited() {
        let a = ann(&[
            (ANNOTATION_CPU_PERIOD, "100000"),
            (ANNOTATION_CPU_QUOTA, "0"),
            (ANNOTATION_MEMORY, "0"),
        ]);
        let s = vm_size(&a, &vm()).unwrap();
        assert_eq!((s.vcpus, s.memory_mib), (1, 320));
    }

    #[test]
    fn too_many_cpus_are_clamped_and_reported() {
        let a = ann(&[
            (ANNOTATION_CPU_PERIOD, "100000"),
            (ANNOTATION_CPU_QUOTA, "9900000"),
        ]);
        let s = vm_size(&a, &vm()).unwrap();
        assert_eq!(s.vcpus, MAX_VCPUS);
        assert!(s.vcpus_clamped);
    }

    #[test]
    fn garbage_and_absurd_values_are_errors() {
        let e = vm_size(&ann(&[(ANNOTATION_MEMORY, "-5")]), &vm()).unwrap_err();
        assert!(matches!(e, SizingError::NotANumber { key, .. } if key == ANNOTATION_MEMORY));
        let e = vm_size(&ann(&[(ANNOTATION_CPU_QUOTA, "1.5")]), &vm()).unwrap_err();
        assert!(matches!(e, SizingError::NotANumber { .. }));
        let huge = (u64::MAX / 2).to_string();
        let e = vm_size(&ann(&[(ANNOTATION_MEMORY, &huge)]), &vm()).unwrap_err();
        assert!(matches!(e, SizingError::TooMuchMemory { .. }));
    }
}
