//! x86_64 guest layout and boot protocol: where things live in guest memory, the e820 map, the
//! Linux zero page, the PVH start_info, and the register state a vCPU starts in.

pub mod boot;
pub mod mptable;
pub mod regs;

use vm_memory::GuestAddress;

/// Initial GDT.
pub const GDT_ADDR: u64 = 0x500;
/// Initial (empty) IDT.
pub const IDT_ADDR: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (the initrd).
pub const MODLIST_START: u64 = 0x6040;
/// PVH memory map.
pub const MEMMAP_START: u64 = 0x7000;
/// Linux zero page (`boot_params`) for bzImage / 64-bit ELF boot.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity page tables for 64-bit entry: PML4, PDPT, PD.
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line we pass (the kernel's COMMAND_LINE_SIZE on x86 is 2048).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Extended BIOS data area: the MP table lives here.
pub const EBDA_START: u64 = 0x9fc00;
/// The guest kernel's crash record (ramoops, `crate::pstore`): the start of the legacy VGA
/// window, which no e820 RAM range covers (the kernel never allocates it) and hull's guests
/// have no VGA to use, but which is backed by guest RAM like the rest of low memory.
pub const PSTORE_START: u64 = 0xa_0000;
/// 16 KiB: the newest ~16 KB of the kernel log at a panic (pstore dumps one part per crash).
pub const PSTORE_SIZE: u64 = 0x4000;
/// Start of high memory (kernels are loaded above it).
pub const HIMEM_START: u64 = 0x10_0000;
/// RAM below 4 GiB stops here; the rest is the MMIO hole.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 1 << 32;
/// Virtio-mmio devices are placed from here, one 4 KiB window each.
pub const MMIO_DEVICES_START: u64 = 0xd000_0000;
pub const MMIO_DEVICE_SIZE: u64 = 0x1000;
/// TSS for KVM on Intel (three pages below the IOAPIC/LAPIC area).
pub const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
/// Legacy IRQs 0..=4 are taken (timer, keyboard, cascade, COM2, COM1); devices start here.
pub const IRQ_BASE: u32 = 5;
pub const IRQ_MAX: u32 = 23;
/// The i8042's keyboard IRQ.
pub const KBD_IRQ: u32 = 1;
/// COM1's IRQ.
pub const SERIAL_IRQ: u32 = 4;

/// Where the virtio-mem device's hot-plug region starts (`devices/mem`): above any RAM hull
/// creates (64 GiB at most, which ends below 65 GiB with the MMIO hole), aligned to every
/// memory block size Linux picks on x86_64 (128 MiB to 2 GiB), and within the 39 physical
/// address bits every x86_64 host offers. The e820 map never lists it.
pub const HOTPLUG_START: u64 = 128 << 30;

/// The guest RAM ranges for `size` bytes of memory: below the MMIO hole, then above 4 GiB.
pub fn ram_regions(size: u64) -> Vec<(GuestAddress, u64)> {
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START),
            (GuestAddress(MMIO_GAP_END), size - MMIO_GAP_START),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_regions_skip_the_mmio_hole() {
        assert_eq!(ram_regions(256 << 20), vec![(GuestAddress(0), 256 << 20)]);
        let r = ram_regions(4 << 30);
        assert_eq!(r[0], (GuestAddress(0), MMIO_GAP_START));
        assert_eq!(r[1], (GuestAddress(1 << 32), (4 << 30) - MMIO_GAP_START));
    }
}
