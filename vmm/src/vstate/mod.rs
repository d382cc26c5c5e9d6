//! The VM's KVM state: guest memory, the VM file descriptor (irqchip, PIT, irqfds, ioeventfds)
//! and the vCPUs. The only module that calls `kvm-ioctls`.

pub mod cpuid;
pub mod halt;
pub mod memory;
pub mod vcpu;
pub mod vcpu_exit;
pub mod vm;
