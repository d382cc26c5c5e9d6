//! Loading a kernel (ELF vmlinux with a PVH note, or bzImage) and writing what it expects to find:
//! command line, initrd, e820 map, zero page or PVH start_info.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use super::regs::EntryMode;
use super::{
    CMDLINE_START, EBDA_START, HIMEM_START, HOTPLUG_START, MEMMAP_START, MMIO_GAP_END,
    MMIO_GAP_START, MODLIST_START, PVH_INFO_START, ZERO_PAGE_START,
};
use crate::vstate::memory::GuestMemoryMmap;

const E820_RAM: u32 = 1;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// 64-bit entry of a bzImage's protected-mode kernel.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot read {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot load the kernel: {0}")]
    Kernel(linux_loader::loader::Error),
    #[error("the initrd ({size} bytes) does not fit in guest memory above the kernel")]
    InitrdTooBig { size: u64 },
    #[error("cannot write the initrd: {0}")]
    InitrdWrite(vm_memory::GuestMemoryError),
    #[error("cannot write the command line: {0}")]
    Cmdline(linux_loader::loader::Error),
    #[error("cannot write the boot parameters: {0}")]
    BootParams(linux_loader::configurator::Error),
    #[error("the memory map has too many entries")]
    E820,
}

/// Where the initrd was placed.
#[derive(Debug, Clone, Copy)]
pub struct InitrdPlacement {
    pub addr: GuestAddress,
    pub size: u64,
}

/// What the loader decided: how to enter the kernel and where it ends.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    pub entry: u64,
    pub kernel_end: u64,
    pub pvh: bool,
    pub setup_header: Option<linux_loader::loader::bootparam::setup_header>,
}

/// Loads an ELF (PVH preferred) or bzImage kernel into `mem`.
pub fn load_kernel(mem: &GuestMemoryMmap, kernel: &mut File) -> Result<LoadedKernel, BootError> {
    let io = |source| BootError::Io {
        what: "the kernel",
        source,
    };
    let mut magic = [0u8; 4];
    kernel.read_exact(&mut magic).map_err(io)?;
    kernel.seek(SeekFrom::Start(0)).map_err(io)?;
    if &magic == b"\x7fELF" {
        let r = Elf::load(mem, None, kernel, Some(GuestAddress(HIMEM_START)))
            .map_err(BootError::Kernel)?;
        let (entry, pvh) = match r.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(a) => (a.raw_value(), true),
            _ => (r.kernel_load.raw_value(), false),
        };
        Ok(LoadedKernel {
            entry,
            kernel_end: r.kernel_end,
            pvh,
            setup_header: None,
        })
    } else {
        let r = BzImage::load(mem, None, kernel, Some(GuestAddress(HIMEM_START)))
            .map_err(BootError::Kernel)?;
        Ok(LoadedKernel {
            entry: r.kernel_load.raw_value() + BZIMAGE_64BIT_ENTRY_OFFSET,
            kernel_end: r.kernel_end,
            pvh: false,
            setup_header: r.setup_header,
        })
    }
}

/// End of the guest's RAM: the last region below the hot-plug region (which is not RAM
/// until the guest plugs it, and never in the e820 map).
fn ram_end(mem: &GuestMemoryMmap) -> u64 {
    use vm_memory::GuestMemoryRegion;
    mem.iter()
        .map(|r| r.start_addr().raw_value() + r.len())
        .filter(|end| *end <= HOTPLUG_START)
        .max()
        .unwrap_or(0)
}

/// Highest guest address of RAM below the MMIO hole.
fn low_ram_end(mem: &GuestMemoryMmap) -> u64 {
    ram_end(mem).min(MMIO_GAP_START)
}

/// Places the initrd at the top of low RAM, page aligned, above the kernel.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    initrd: &mut File,
    kernel_end: u64,
) -> Result<InitrdPlacement, BootError> {
    let io = |source| BootError::Io {
        what: "the initrd",
        source,
    };
    // Straight from the file into guest memory: a heap copy of a multi-MiB initrd would also
    // raise glibc's dynamic mmap threshold and leave the VMM's heap larger for good.
    let size = initrd.metadata().map_err(io)?.len();
    let top = low_ram_end(mem);
    let addr = top
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|a| *a >= kernel_end && *a >= HIMEM_START)
        .ok_or(BootError::InitrdTooBig { size })?;
    let len = usize::try_from(size).map_err(|_| BootError::InitrdTooBig { size })?;
    mem.read_exact_volatile_from(GuestAddress(addr), initrd, len)
        .map_err(BootError::InitrdWrite)?;
    Ok(InitrdPlacement {
        addr: GuestAddress(addr),
        size,
    })
}

/// The RAM ranges as the guest's memory map lists them.
pub fn e820_ranges(mem: &GuestMemoryMmap) -> Vec<(u64, u64)> {
    let mut out = vec![(0, EBDA_START)];
    let low_end = low_ram_end(mem);
    if low_end > HIMEM_START {
        out.push((HIMEM_START, low_end - HIMEM_START));
    }
    let end = ram_end(mem);
    if end > MMIO_GAP_END {
        out.push((MMIO_GAP_END, end - MMIO_GAP_END));
    }
    out
}

/// Writes the command line, then the zero page or PVH start_info; returns how to enter.
pub fn configure_boot(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    cmdline: &Cmdline,
    initrd: Option<InitrdPlacement>,
) -> Result<EntryMode, BootError> {
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline)
        .map_err(BootError::Cmdline)?;
    let cmdline_len = cmdline
        .as_cstring()
        .map(|c| c.as_bytes().len())
        .unwrap_or(0);
    let ranges = e820_ranges(mem);
    if kernel.pvh {
        let memmap: Vec<hvm_memmap_table_entry> = ranges
            .iter()
            .map(|(addr, size)| hvm_memmap_table_entry {
                addr: *addr,
                size: *size,
                type_: E820_RAM,
                reserved: 0,
            })
            .collect();
        let mut info = hvm_start_info {
            magic: XEN_HVM_START_MAGIC,
            version: 1,
            cmdline_paddr: CMDLINE_START,
            memmap_paddr: MEMMAP_START,
            memmap_entries: u32::try_from(memmap.len()).map_err(|_| BootError::E820)?,
            ..Default::default()
        };
        let mut params = BootParams::new(&info, GuestAddress(PVH_INFO_START));
        if let Some(i) = initrd {
            info.nr_modules = 1;
            info.modlist_paddr = MODLIST_START;
            params = BootParams::new(&info, GuestAddress(PVH_INFO_START));
            let m = hvm_modlist_entry {
                paddr: i.addr.raw_value(),
                size: i.size,
                ..Default::default()
            };
            params.set_modules(&[m], GuestAddress(MODLIST_START));
        }
        params.set_sections(&memmap, GuestAddress(MEMMAP_START));
        PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
            .map_err(BootError::BootParams)?;
        Ok(EntryMode::Pvh {
            ip: kernel.entry,
            start_info: PVH_INFO_START,
        })
    } else {
        let mut bp = boot_params::default();
        if let Some(h) = kernel.setup_header {
            bp.hdr = h;
        }
        bp.hdr.type_of_loader = KERNEL_LOADER_OTHER;
        bp.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
        bp.hdr.header = KERNEL_HDR_MAGIC;
        bp.hdr.cmd_line_ptr = u32::try_from(CMDLINE_START).unwrap_or(0);
        bp.hdr.cmdline_size = u32::try_from(cmdline_len).unwrap_or(0);
        bp.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
        if let Some(i) = initrd {
            bp.hdr.ramdisk_image = u32::try_from(i.addr.raw_value()).unwrap_or(0);
            bp.hdr.ramdisk_size = u32::try_from(i.size).unwrap_or(0);
        }
        if ranges.len() > bp.e820_table.len() {
            return Err(BootError::E820);
        }
        for (slot, (addr, size)) in bp.e820_table.iter_mut().zip(ranges.iter()) {
            *slot = boot_e820_entry {
                addr: *addr,
                size: *size,
                r#type: E820_RAM,
            };
        }
        bp.e820_entries = u8::try_from(ranges.len()).map_err(|_| BootError::E820)?;
        let params = BootParams::new(&bp, GuestAddress(ZERO_PAGE_START));
        LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
            .map_err(BootError::BootParams)?;
        Ok(EntryMode::Linux64 {
            ip: kernel.entry,
            zero_page: ZERO_PAGE_START,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory;

    #[test]
    fn e820_lists_low_and_high_ram() {
        let mem = memory::create(256 << 20).unwrap();
        let r = e820_ranges(&mem);
        assert_eq!(
            r,
            vec![(0, EBDA_START), (HIMEM_START, (256 << 20) - HIMEM_START)]
        );
    }

    #[test]
    fn e820_leaves_the_hotplug_region_out() {
        let mem = memory::create_with_hotplug(256 << 20, 1 << 30).unwrap();
        assert_eq!(
            e820_ranges(&mem),
            vec![(0, EBDA_START), (HIMEM_START, (256 << 20) - HIMEM_START)]
        );
    }

    #[test]
    fn zero_page_and_pvh_info_are_written() {
        let mem = memory::create(64 << 20).unwrap();
        let mut cl = Cmdline::new(super::super::CMDLINE_MAX_SIZE).unwrap();
        cl.insert_str("console=ttyS0").unwrap();
        let k = LoadedKernel {
            entry: 0x100_0000,
            kernel_end: 0x200_0000,
            pvh: true,
            setup_header: None,
        };
        let mode = configure_boot(&mem, &k, &cl, None).unwrap();
        assert_eq!(
            mode,
            EntryMode::Pvh {
                ip: 0x100_0000,
                start_info: PVH_INFO_START
            }
        );
        let magic: u32 = vm_memory::Bytes::read_obj(&mem, GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!(magic, XEN_HVM_START_MAGIC);
        let k = LoadedKernel { pvh: false, ..k };
        let mode = configure_boot(&mem, &k, &cl, None).unwrap();
        assert!(matches!(mode, EntryMode::Linux64 { .. }));
    }
}
