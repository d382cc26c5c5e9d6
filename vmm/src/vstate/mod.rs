//! The VM's KVM state: guest memory, the VM file descriptor (irqchip, PIT, irqfds, ioeventfds)
//! and the vCPUs. The only module that calls `kvm-ioctls`.

pub(crate) mod cpuid;
pub(crate) mod halt;
pub mod memory;
pub mod vcpu;
pub(crate) mod vcpu_exit;
pub(crate) mod vm;
