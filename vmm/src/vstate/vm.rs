//! The KVM VM: memory slots, in-kernel irqchip and PIT, irqfds and ioeventfds.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, CpuId, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VcpuFd, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::memory::GuestMemoryMmap;
use crate::arch;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm: {0}")]
    Kvm(kvm_ioctls::Error),
    #[error("KVM_CREATE_VM failed: {0}")]
    CreateVm(kvm_ioctls::Error),
    #[error("KVM_SET_USER_MEMORY_REGION failed: {0}")]
    MemorySlot(kvm_ioctls::Error),
    #[error("cannot set up the in-kernel irqchip/PIT: {0}")]
    Irqchip(kvm_ioctls::Error),
    #[error("KVM_GET_SUPPORTED_CPUID failed: {0}")]
    Cpuid(kvm_ioctls::Error),
    #[error("KVM_CREATE_VCPU failed: {0}")]
    CreateVcpu(kvm_ioctls::Error),
    #[error("cannot register an irqfd or ioeventfd: {0}")]
    EventFd(kvm_ioctls::Error),
}

/// One KVM VM.
#[derive(Debug)]
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
}

impl Vm {
    /// Opens /dev/kvm and creates a VM.
    pub fn new() -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::Kvm)?;
        let fd = kvm.create_vm().map_err(VmError::CreateVm)?;
        Ok(Vm { kvm, fd })
    }

    /// Registers every region of `mem` as a KVM memory slot.
    pub fn register_memory(&self, mem: &GuestMemoryMmap) -> Result<(), VmError> {
        for (slot, region) in mem.iter().enumerate() {
            let r = kvm_userspace_memory_region {
                slot: u32::try_from(slot).unwrap_or(u32::MAX),
                flags: 0,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the host range [as_ptr, as_ptr + len) is a live mapping owned by `mem`,
            // which the VMM keeps alive (it is held by `Vmm`) for as long as the VM exists;
            // slots do not overlap because the regions of a GuestMemoryMmap do not.
            unsafe { self.fd.set_user_memory_region(r) }.map_err(VmError::MemorySlot)?;
        }
        Ok(())
    }

    /// Creates the in-kernel PIC/IOAPIC/LAPICs and the PIT.
    pub fn setup_irqchip(&self) -> Result<(), VmError> {
        self.fd
            .set_tss_address(arch::KVM_TSS_ADDRESS)
            .map_err(VmError::Irqchip)?;
        self.fd.create_irq_chip().map_err(VmError::Irqchip)?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd.create_pit2(pit).map_err(VmError::Irqchip)
    }

    /// What CPUID the host's KVM can give a guest, with what KVM reports only as a
    /// capability of the in-kernel irqchip (`setup_irqchip` always creates it).
    pub fn supported_cpuid(&self) -> Result<CpuId, VmError> {
        let mut cpuid = self
            .kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(VmError::Cpuid)?;
        if self.kvm.check_extension(Cap::TscDeadlineTimer) {
            super::cpuid::add_tsc_deadline(&mut cpuid);
        }
        Ok(cpuid)
    }

    pub fn create_vcpu(&self, id: u8) -> Result<VcpuFd, VmError> {
        self.fd
            .create_vcpu(u64::from(id))
            .map_err(VmError::CreateVcpu)
    }

    /// Raising `evt` injects `gsi`.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd.register_irqfd(evt, gsi).map_err(VmError::EventFd)
    }

    /// A 4-byte guest write of `value` at MMIO `addr` signals `evt` without a VM exit.
    pub fn register_mmio_ioevent(
        &self,
        evt: &EventFd,
        addr: u64,
        value: u32,
    ) -> Result<(), VmError> {
        self.fd
            .register_ioevent(evt, &IoEventAddress::Mmio(addr), value)
            .map_err(VmError::EventFd)
    }
}
