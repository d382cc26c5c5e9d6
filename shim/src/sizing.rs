//! How big a pod's VM is (DESIGN §2 shim/: static sizing). The VM is sized once, when the
//! pod sandbox is created, from the pod-level resource annotations containerd's CRI plugin
//! (≥ 1.6.7) puts on the sandbox spec: the sum of the containers' limits as the kubelet
//! computed them. A pod without limits gets the configured defaults.
//!
//! The VM's memory is the pod's limit plus `overhead_memory_mib` (guest kernel, agent, page
//! cache headroom): without it a pod using exactly its limit would be OOM-killed by the guest
//! kernel before the container's own cgroup limit is reached.
//!
//! Whatever the annotations say, the VM must fit the host cgroup the kubelet made for the pod
//! (its limits plus the RuntimeClass overhead): guest RAM plus [`HOST_RESERVE_MIB`] for what
//! the host runs per pod outside the guest. Kubelets before 1.23 pass no pod-level
//! annotations, so there the pod cgroup's own `memory.max` is the only size the pod has:
//! without this, every such pod got the default 256 + 64 MiB guest in a cgroup of, say, 144 MiB,
//! and hull-vmm was OOM-killed on the host as soon as the guest touched its memory.

use std::path::Path;

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
    #[error(
        "the pod's cgroup allows {limit_mib} MiB, too little for a VM: {min_mib} MiB of guest \
         memory and {HOST_RESERVE_MIB} MiB for hull-vmm, virtiofsd and the shim (raise the \
         pod's memory limit or the RuntimeClass overhead)"
    )]
    PodCgroupTooSmall { limit_mib: u64, min_mib: u32 },
}

/// Host memory one pod costs outside its guest RAM: hull-vmm, virtiofsd and the shim (7.8 MiB
/// PSS for an idle pod, bench/README.md), KVM's page tables and bursts. It is the RuntimeClass
/// overhead (deploy/kubernetes/runtimeclass.yaml, 80 MiB) minus `overhead_memory_mib`'s
/// default (64 MiB): keep the three in step.
pub(crate) const HOST_RESERVE_MIB: u64 = 16;

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

/// Sizes the VM of the pod whose sandbox spec carries `annotations` and whose host cgroup
/// allows `pod_limit` bytes of memory (`None`: unlimited, or no pod cgroup): the annotations'
/// size, or without a memory annotation the pod cgroup's limit, always within that limit.
pub(crate) fn vm_size_within(
    annotations: &HashMap<String, String>,
    vm: &VmSection,
    pod_limit: Option<u64>,
) -> Result<VmSize, SizingError> {
    let mut size = vm_size(annotations, vm)?;
    let Some(limit) = pod_limit else {
        return Ok(size);
    };
    let limit_mib = limit / MIB;
    let room = limit_mib.saturating_sub(HOST_RESERVE_MIB);
    if room < u64::from(crate::config::MIN_MEMORY_MIB) {
        return Err(SizingError::PodCgroupTooSmall {
            limit_mib,
            min_mib: crate::config::MIN_MEMORY_MIB,
        });
    }
    let annotated = number(annotations, ANNOTATION_MEMORY)? > 0;
    let mib = if annotated {
        u64::from(size.memory_mib).min(room)
    } else {
        room
    };
    if mib > MAX_MEMORY_MIB {
        return Err(SizingError::TooMuchMemory { mib });
    }
    size.memory_mib = u32::try_from(mib).map_err(|_| SizingError::TooMuchMemory { mib })?;
    Ok(size)
}

/// The memory limit in force for a process in cgroup `dir` (a directory of the cgroup v2
/// tree under `root`): the smallest `memory.max` of `dir` and its ancestors, `None` when all
/// say `max` or cannot be read.
pub(crate) fn effective_memory_limit(dir: &Path, root: &Path) -> Option<u64> {
    dir.ancestors()
        .take_while(|d| d.starts_with(root) && *d != root)
        .filter_map(|d| std::fs::read_to_string(d.join("memory.max")).ok())
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .min()
}

/// Sizes the VM of the pod whose sandbox spec carries `annotations`, from them alone.
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
    fn without_annotations_the_pod_cgroup_sizes_the_vm() {
        // kubelet 1.20: a 64Mi pod in a cgroup of 64 + 80 (RuntimeClass overhead) MiB.
        let s = vm_size_within(&HashMap::new(), &vm(), Some(144 * MIB)).unwrap();
        assert_eq!(s.memory_mib, 128);
        // A 2 GiB pod gets its 2 GiB, not the 256 MiB default.
        let s = vm_size_within(&HashMap::new(), &vm(), Some(2048 * MIB + 80 * MIB)).unwrap();
        assert_eq!(s.memory_mib, 2048 + 64);
        // No limit anywhere: the defaults.
        let s = vm_size_within(&HashMap::new(), &vm(), None).unwrap();
        assert_eq!(s.memory_mib, 320);
    }

    #[test]
    fn annotations_never_outgrow_the_pod_cgroup() {
        let a = ann(&[(ANNOTATION_MEMORY, &(512 * MIB).to_string())]);
        // kubelet >= 1.23 with the RuntimeClass overhead: limit + 80 MiB, the VM as annotated.
        let s = vm_size_within(&a, &vm(), Some(592 * MIB)).unwrap();
        assert_eq!(s.memory_mib, 512 + 64);
        // A RuntimeClass without overhead: the VM shrinks into the cgroup.
        let s = vm_size_within(&a, &vm(), Some(512 * MIB)).unwrap();
        assert_eq!(s.memory_mib, 512 - 16);
        let e = vm_size_within(&a, &vm(), Some(70 * MIB)).unwrap_err();
        assert_eq!(
            e,
            SizingError::PodCgroupTooSmall {
                limit_mib: 70,
                min_mib: 64
            }
        );
        assert!(e.to_string().contains("raise the pod's memory limit"));
    }

    #[test]
    fn the_smallest_ancestor_limit_is_in_force() {
        let root = std::env::temp_dir().join(format!("hull-sizing-{}", std::process::id()));
        let leaf = root.join("kubepods/burstable/pod1/sandbox");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(root.join("kubepods/memory.max"), "8589934592\n").unwrap();
        std::fs::write(root.join("kubepods/burstable/memory.max"), "max\n").unwrap();
        std::fs::write(
            root.join("kubepods/burstable/pod1/memory.max"),
            "150994944\n",
        )
        .unwrap();
        // The root's own file (none on a real host) is never read.
        std::fs::write(root.join("memory.max"), "1\n").unwrap();
        assert_eq!(effective_memory_limit(&leaf, &root), Some(150_994_944));
        std::fs::write(root.join("kubepods/burstable/pod1/memory.max"), "max\n").unwrap();
        assert_eq!(effective_memory_limit(&leaf, &root), Some(8_589_934_592));
        std::fs::remove_dir_all(&root).unwrap();
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
