//! `hullctl node check`: can this node run hull pods? What the installer asks before it labels
//! a node `hull.io/runtime=ready`; each failed check names its reason.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use kvm_ioctls::Kvm;

/// One check's result.
#[derive(Debug)]
pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) ok: bool,
    pub(crate) detail: String,
}

fn check(name: &'static str, r: Result<String, String>) -> Check {
    let (ok, detail) = match r {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    Check { name, ok, detail }
}

/// The KVM API version every kernel since 2.6.22 reports (KVM_GET_API_VERSION).
const KVM_API_VERSION: i32 = 12;

/// `/dev/kvm` can run a hull guest: the same calls hull-vmm makes before it loads a kernel (an
/// in-kernel irqchip and PIT, a vCPU, the CPUID KVM supports). A device that only pretends
/// (a software stand-in without hardware virtualisation, or a nested one without irqchip
/// support) fails one of them.
fn kvm(root: &Path) -> Result<String, String> {
    let path = root.join("dev/kvm");
    let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.file_type().is_char_device() {
        return Err(format!("{} is not a character device", path.display()));
    }
    // The shim gives each pod's unprivileged hull-vmm /dev/kvm's group (DESIGN §2).
    if meta.mode() & 0o060 != 0o060 || meta.gid() == 0 {
        return Err(format!(
            "/dev/kvm is mode {:o}, group {}: hull-vmm runs unprivileged and needs a group with \
             read-write access other than root (udev's root:kvm 0660)",
            meta.mode() & 0o777,
            meta.gid()
        ));
    }
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{} holds a NUL byte", path.display()))?;
    let kvm = Kvm::new_with_path(&cpath).map_err(|e| format!("open /dev/kvm: {e}"))?;
    let api = kvm.get_api_version();
    if api != KVM_API_VERSION {
        return Err(format!("KVM API version {api}, not {KVM_API_VERSION}"));
    }
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    vm.create_irq_chip()
        .map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
    vm.create_pit2(kvm_bindings::kvm_pit_config::default())
        .map_err(|e| format!("KVM_CREATE_PIT2: {e}"))?;
    vm.create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    Ok(format!(
        "API {api}, a VM with irqchip, PIT and a vCPU created, {} CPUID entries",
        cpuid.as_slice().len()
    ))
}

/// The unified cgroup hierarchy: the shim puts each hull-vmm in its pod's cgroup v2.
fn cgroup2(root: &Path) -> Result<String, String> {
    let path = root.join("sys/fs/cgroup");
    let fs = nix::sys::statfs::statfs(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC {
        Ok("cgroup2 at /sys/fs/cgroup".to_owned())
    } else {
        Err(
            "/sys/fs/cgroup is not cgroup2 (hull needs the unified hierarchy, \
             systemd.unified_cgroup_hierarchy=1)"
                .to_owned(),
        )
    }
}

/// TUN/TAP: each pod NIC is a tap device (virtio-net is emulated in hull-vmm; no vhost-net,
/// and virtio-fs and vsock are vhost-user and hybrid vsock: no vhost module is needed).
fn tun(root: &Path) -> Result<String, String> {
    let path = root.join("dev/net/tun");
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map(|_| "/dev/net/tun opens (no vhost module needed)".to_owned())
        .map_err(|e| format!("{}: {e} (modprobe tun)", path.display()))
}

/// Every check, against the node whose `/` is at `root`.
pub(crate) fn run(root: &Path) -> Vec<Check> {
    vec![
        check("kvm", kvm(root)),
        check("cgroup2", cgroup2(root)),
        check("tun", tun(root)),
    ]
}
