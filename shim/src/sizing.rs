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

use hull_contract::{HOTPLUG_BLOCK_MIB, MAX_VCPUS};

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

/// The memory limits of a pod's host cgroup, in bytes (`None`: `max`, or no pod cgroup).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PodMemory {
    /// The pod's own: set on the pod's cgroup (or the sandbox's below it) by kubelet when
    /// every container of the pod has a memory limit.
    pub(crate) own: Option<u64>,
    /// What is in force: the smallest limit of the pod's cgroup and all its ancestors (e.g.
    /// the node-level `kubepods`, which is the node's allocatable memory, not the pod's size).
    pub(crate) in_force: Option<u64>,
}

/// Sizes the VM of the pod whose sandbox spec carries `annotations` and whose host cgroup
/// has the limits `pod`: the annotations' size, or without a memory annotation the pod's own
/// limit (kubelet before 1.23 passes none; the pod cgroup is then the pod's only size), or
/// without either the defaults; always within the limit in force. A limit in force that
/// leaves less than the smallest VM (`MIN_MEMORY_MIB` for containers plus the guest's
/// `overhead_memory_mib`) is refused: the VM would be OOM-killed on the host, or not boot.
pub(crate) fn vm_size_within(
    annotations: &HashMap<String, String>,
    vm: &VmSection,
    pod: PodMemory,
) -> Result<VmSize, SizingError> {
    let mut size = vm_size(annotations, vm)?;
    let Some(limit) = pod.in_force else {
        return Ok(size);
    };
    let room_of = |bytes: u64| (bytes / MIB).saturating_sub(HOST_RESERVE_MIB);
    let limit_mib = limit / MIB;
    let room = room_of(limit);
    let min_mib = crate::config::MIN_MEMORY_MIB.saturating_add(vm.overhead_memory_mib);
    if room < u64::from(min_mib) {
        return Err(SizingError::PodCgroupTooSmall { limit_mib, min_mib });
    }
    let annotated = number(annotations, ANNOTATION_MEMORY)? > 0;
    let mib = match pod.own {
        Some(own) if !annotated => room_of(own).min(room),
        _ => u64::from(size.memory_mib).min(room),
    };
    if mib > MAX_MEMORY_MIB {
        return Err(SizingError::TooMuchMemory { mib });
    }
    size.memory_mib = u32::try_from(mib).map_err(|_| SizingError::TooMuchMemory { mib })?;
    Ok(size)
}

/// The memory limits of the pod whose sandbox cgroup is `dir` (a directory of the cgroup v2
/// tree under `root`, below the pod's cgroup): its own is the smallest `memory.max` of `dir`
/// and its parent (the pod's cgroup, with kubelet's cgroupfs and systemd layouts alike), the
/// one in force the smallest of `dir` and every ancestor. A `max` or unreadable file limits
/// nothing.
pub(crate) fn pod_memory_limits(dir: &Path, root: &Path) -> PodMemory {
    let limits: Vec<Option<u64>> = dir
        .ancestors()
        .take_while(|d| d.starts_with(root) && *d != root)
        .map(|d| {
            std::fs::read_to_string(d.join("memory.max"))
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .collect();
    PodMemory {
        own: limits.iter().take(2).flatten().min().copied(),
        in_force: limits.iter().flatten().min().copied(),
    }
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

/// What one container asks of the VM: its memory limit and CPU limit (`linux.resources` of
/// its spec, or of an update). `None`: no limit, which asks for nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Demand {
    pub(crate) memory_bytes: Option<u64>,
    /// CPU limit in millicores (quota / period).
    pub(crate) cpu_millis: Option<u64>,
}

impl Demand {
    /// From an OCI `LinuxResources` object (JSON). Values that are absent, zero or negative
    /// (runc's "no limit") ask for nothing.
    pub(crate) fn of_resources(r: &serde_json::Value) -> Demand {
        let positive = |p: &str| {
            r.pointer(p)
                .and_then(serde_json::Value::as_u64)
                .filter(|v| *v > 0)
        };
        let cpu_millis = match (positive("/cpu/quota"), positive("/cpu/period")) {
            (Some(q), Some(p)) => Some(q.saturating_mul(1000).div_ceil(p)),
            _ => None,
        };
        Demand {
            memory_bytes: positive("/memory/limit"),
            cpu_millis,
        }
    }

    /// From a container's OCI spec (JSON).
    pub(crate) fn of_spec(spec: &serde_json::Value) -> Demand {
        spec.pointer("/linux/resources")
            .map(Demand::of_resources)
            .unwrap_or_default()
    }
}

/// The VM the containers' limits need: the sum of their CPU limits in whole vCPUs, the sum of
/// their memory limits plus `overhead_memory_mib`; what has no limit adds nothing. The VM
/// only grows to this (`backend::grow`), never below its boot size.
pub(crate) fn demanded_size(demands: &[Demand], vm: &VmSection) -> VmSize {
    let sum = |f: fn(&Demand) -> Option<u64>| {
        demands.iter().filter_map(f).fold(0u64, u64::saturating_add)
    };
    let millis = sum(|d| d.cpu_millis);
    let want = millis.div_ceil(1000);
    let max = u64::from(MAX_VCPUS);
    let bytes = sum(|d| d.memory_bytes);
    let mib = bytes
        .div_ceil(MIB)
        .saturating_add(u64::from(vm.overhead_memory_mib))
        .min(MAX_MEMORY_MIB);
    VmSize {
        vcpus: u8::try_from(want.clamp(1, max)).unwrap_or(MAX_VCPUS),
        memory_mib: u32::try_from(mib).unwrap_or(u32::MAX),
        vcpus_clamped: want > max,
    }
}

/// How far a pod's VM booted at `size` may grow: the vCPUs its MP table declares and the
/// MiB of its virtio-mem region (a multiple of 128, the guest's memory block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reserve {
    pub(crate) max_vcpus: u8,
    pub(crate) hotplug_mib: u32,
}

/// The reserve of a VM booted at `size` on a node with `node_cpus`: `[vm] max_vcpus` (0: the
/// node's CPUs) and `max_memory_mib` above the boot size, both bounded by hull's maxima.
pub(crate) fn reserve(size: VmSize, vm: &VmSection, node_cpus: usize) -> Reserve {
    let cpus = if vm.max_vcpus == 0 {
        u8::try_from(node_cpus).unwrap_or(MAX_VCPUS)
    } else {
        vm.max_vcpus
    };
    let room = vm.max_memory_mib.saturating_sub(size.memory_mib);
    Reserve {
        max_vcpus: cpus.clamp(size.vcpus, MAX_VCPUS.max(size.vcpus)),
        hotplug_mib: room.div_ceil(HOTPLUG_BLOCK_MIB) * HOTPLUG_BLOCK_MIB,
    }
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
            max_vcpus: 8,
            max_memory_mib: 4096,
            disk_slots: 0,
            boot_timeout_secs: 30,
            free_page_reporting: true,
            guest_console: false,
            debug_shell: false,
        }
    }

    #[test]
    fn container_limits_add_up_to_the_vm_they_need() {
        let spec = serde_json::json!({"linux": {"resources": {
            "memory": {"limit": 512 * MIB},
            "cpu": {"quota": 200_000, "period": 100_000}
        }}});
        let d = Demand::of_spec(&spec);
        assert_eq!(d.memory_bytes, Some(512 * MIB));
        assert_eq!(d.cpu_millis, Some(2000));
        let none = Demand::of_spec(&serde_json::json!({"linux": {"resources": {
            "memory": {"limit": -1}, "cpu": {"quota": -1, "period": 100_000}
        }}}));
        assert_eq!(none, Demand::default());
        let half =
            Demand::of_resources(&serde_json::json!({"cpu": {"quota": 50_000, "period": 100_000}}));
        let s = demanded_size(&[d, none, half], &vm());
        assert_eq!(
            (s.vcpus, s.memory_mib),
            (3, 512 + 64),
            "2.5 CPUs need 3 vCPUs"
        );
        assert_eq!(demanded_size(&[], &vm()).vcpus, 1);
        let huge = Demand {
            cpu_millis: Some(1_000_000),
            memory_bytes: Some(u64::MAX),
        };
        let s = demanded_size(&[huge, huge], &vm());
        assert!(s.vcpus_clamped && s.vcpus == MAX_VCPUS);
        assert_eq!(u64::from(s.memory_mib), MAX_MEMORY_MIB);
    }

    #[test]
    fn the_reserve_is_what_the_node_allows_above_the_boot_size() {
        let boot = VmSize {
            vcpus: 1,
            memory_mib: 320,
            vcpus_clamped: false,
        };
        let r = reserve(boot, &vm(), 2);
        assert_eq!(r.max_vcpus, 8, "[vm] max_vcpus");
        assert_eq!(
            r.hotplug_mib, 3840,
            "4096 - 320 = 3776, in whole 128 MiB blocks"
        );
        let mut v = vm();
        v.max_vcpus = 0;
        v.max_memory_mib = 0;
        assert_eq!(
            reserve(boot, &v, 2),
            Reserve {
                max_vcpus: 2,
                hotplug_mib: 0
            }
        );
        assert_eq!(reserve(boot, &v, 500).max_vcpus, MAX_VCPUS);
        let big = VmSize { vcpus: 4, ..boot };
        assert_eq!(
            reserve(big, &v, 2).max_vcpus,
            4,
            "never below the boot size"
        );
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
        let pod = |mib: u64| PodMemory {
            own: Some(mib * MIB),
            in_force: Some(mib * MIB),
        };
        // kubelet 1.20: a 64Mi pod in a cgroup of 64 + 80 (RuntimeClass overhead) MiB.
        let s = vm_size_within(&HashMap::new(), &vm(), pod(144)).unwrap();
        assert_eq!(s.memory_mib, 128);
        // A 2 GiB pod gets its 2 GiB, not the 256 MiB default.
        let s = vm_size_within(&HashMap::new(), &vm(), pod(2048 + 80)).unwrap();
        assert_eq!(s.memory_mib, 2048 + 64);
        // No limit anywhere: the defaults.
        let s = vm_size_within(&HashMap::new(), &vm(), PodMemory::default()).unwrap();
        assert_eq!(s.memory_mib, 320);
    }

    /// Seen with kubelet 1.20 in the lab: a pod without a memory limit sits in a cgroup whose
    /// only limit is the node's (`kubepods`, 3.9 GiB there), which sized a 3.9 GiB guest that
    /// took minutes to boot. Without a limit of its own, a pod gets the defaults, within
    /// what is in force.
    #[test]
    fn a_node_level_limit_is_no_pod_size() {
        let node = PodMemory {
            own: None,
            in_force: Some(3992 * MIB),
        };
        let s = vm_size_within(&HashMap::new(), &vm(), node).unwrap();
        assert_eq!(s.memory_mib, 320);
        let small_node = PodMemory {
            own: None,
            in_force: Some(300 * MIB),
        };
        let s = vm_size_within(&HashMap::new(), &vm(), small_node).unwrap();
        assert_eq!(s.memory_mib, 300 - 16);
    }

    #[test]
    fn annotations_never_outgrow_the_pod_cgroup() {
        let a = ann(&[(ANNOTATION_MEMORY, &(512 * MIB).to_string())]);
        let pod = |mib: u64| PodMemory {
            own: Some(mib * MIB),
            in_force: Some(mib * MIB),
        };
        // kubelet >= 1.23 with the RuntimeClass overhead: limit + 80 MiB, the VM as annotated.
        let s = vm_size_within(&a, &vm(), pod(592)).unwrap();
        assert_eq!(s.memory_mib, 512 + 64);
        // A RuntimeClass without overhead: the VM shrinks into the cgroup.
        let s = vm_size_within(&a, &vm(), pod(512)).unwrap();
        assert_eq!(s.memory_mib, 512 - 16);
    }

    /// Seen with kubelet 1.20 in the lab: a 32Mi pod (cgroup 32 + 80 MiB) got a 96 MiB guest,
    /// whose kernel could not unpack the initrd ("Initramfs unpacking failed: write error")
    /// and panicked, and kubelet retried forever. The smallest VM is MIN_MEMORY_MIB for the
    /// containers plus the guest's overhead (64 + 64 MiB, what the lab's pods boot with); a
    /// cgroup with less room is refused with what to change.
    #[test]
    fn a_cgroup_too_small_for_a_bootable_vm_is_refused() {
        let pod = |mib: u64| PodMemory {
            own: Some(mib * MIB),
            in_force: Some(mib * MIB),
        };
        let e = vm_size_within(&HashMap::new(), &vm(), pod(32 + 80)).unwrap_err();
        assert_eq!(
            e,
            SizingError::PodCgroupTooSmall {
                limit_mib: 112,
                min_mib: 128
            }
        );
        assert!(e.to_string().contains("raise the pod's memory limit"));
        let s = vm_size_within(&HashMap::new(), &vm(), pod(64 + 80)).unwrap();
        assert_eq!(s.memory_mib, 128);
    }

    #[test]
    fn the_pods_own_limit_and_the_one_in_force() {
        let root = std::env::temp_dir().join(format!("hull-sizing-{}", std::process::id()));
        // The sandbox's cgroup does not exist yet when the VM is sized.
        let leaf = root.join("kubepods/burstable/pod1/sandbox");
        std::fs::create_dir_all(leaf.parent().unwrap()).unwrap();
        std::fs::write(root.join("kubepods/memory.max"), "8589934592\n").unwrap();
        std::fs::write(root.join("kubepods/burstable/memory.max"), "max\n").unwrap();
        std::fs::write(
            root.join("kubepods/burstable/pod1/memory.max"),
            "150994944\n",
        )
        .unwrap();
        // The root's own file (none on a real host) is never read.
        std::fs::write(root.join("memory.max"), "1\n").unwrap();
        assert_eq!(
            pod_memory_limits(&leaf, &root),
            PodMemory {
                own: Some(150_994_944),
                in_force: Some(150_994_944)
            }
        );
        std::fs::write(root.join("kubepods/burstable/pod1/memory.max"), "max\n").unwrap();
        assert_eq!(
            pod_memory_limits(&leaf, &root),
            PodMemory {
                own: None,
                in_force: Some(8_589_934_592)
            }
        );
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
