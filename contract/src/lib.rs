//! The one home of every contract between hull's processes (DESIGN.md §7: one home for each
//! cross-process contract). Each value or format here is written by one process and read by
//! another; a copy in either would let the two drift apart without a compiler noticing.
//!
//! | module | between | what |
//! |---|---|---|
//! | [`vsock`] | shim, hullctl ↔ hull-vmm ↔ agent | guest CID, ports, the hybrid-vsock handshake |
//! | [`boot_timer`] | agent → hull-vmm | the "/init started" and "agent ready" port writes |
//! | [`guest_env`] | shim, bench → agent | kernel command-line words the agent reads |
//! | [`vmm_args`] | shim, tests → hull-vmm | hull-vmm's command line, as a typed builder |
//! | [`pods`] | shim → hullctl | a pod's directory on the node, its sockets, identity, processes |
//! | [`debug_shell`] | hullctl ↔ agent | the frames of `hullctl debug`'s stream |
//! | this module | shim ↔ hull-vmm ↔ agent | VM limits and the virtio-fs tag |
//!
//! The crate has no dependencies (the static guest agent links it too) and no I/O: callers
//! bring their own sockets and runtimes.

pub mod boot_timer;
pub mod debug_shell;
pub mod guest_env;
pub mod pods;
pub mod vmm_args;
pub mod vsock;

/// Most vCPUs a hull VM has: hull-vmm refuses more, and the shim caps a pod's request here
/// (the MP table and the in-kernel irqchip are sized for it).
pub const MAX_VCPUS: u8 = 32;

/// Granularity of a VM's hot-plug memory (MiB): hull-vmm takes `--hotplug-mib` only in these
/// units and the shim grows a guest by them, as Linux adds memory in 128 MiB blocks on x86_64.
pub const HOTPLUG_BLOCK_MIB: u32 = 128;

/// Most disk slots a VM has (`--disk-slots`): hull-vmm refuses more, the shim's hull.toml
/// too; each takes one of the VM's 19 virtio IRQs.
pub const MAX_DISK_SLOTS: u8 = 8;

/// The virtio-fs tag of the pod share: the shim's hull-vmm serves virtiofsd under it and the
/// agent mounts it.
pub const SHARE_FS_TAG: &str = "hull";
