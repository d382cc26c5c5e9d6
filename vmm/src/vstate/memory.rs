//! Guest RAM: one memfd (shareable with vhost-user back ends later), mapped with `vm-memory`.

use std::fs::File;
use std::os::fd::FromRawFd;

use vm_memory::FileOffset;

use crate::arch;

/// Guest memory as every device sees it.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("memfd_create failed: {0}")]
    Memfd(std::io::Error),
    #[error("cannot size the guest memory file: {0}")]
    Truncate(std::io::Error),
    #[error("cannot map guest memory: {0}")]
    Map(vm_memory::mmap::FromRangesError),
    #[error("guest memory size {0} is invalid")]
    Size(u64),
}

fn memfd(name: &std::ffi::CStr) -> Result<File, MemoryError> {
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call; the flags are
    // valid constants. The kernel returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(MemoryError::Memfd(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by memfd_create, is valid and owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Keeps guest RAM out of core dumps, and asks for transparent huge pages on every region: 2 MiB guest mappings mean 512 times fewer
/// (nested) page faults; measured in the lab, boot to the agent took ~40% less time. For memfd
/// (shmem) memory the node must allow it: `/sys/kernel/mm/transparent_hugepage/shmem_enabled`
/// = `advise` (or `always`/`within_size`); with `never` this is a no-op.
fn advise_guest_ram(mem: &GuestMemoryMmap) {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    for r in mem.iter() {
        let Ok(len) = usize::try_from(r.len()) else {
            continue;
        };
        // SAFETY: [as_ptr, as_ptr + len) is exactly one live mapping owned by `mem`;
        // MADV_HUGEPAGE only changes how the kernel backs it, never its contents.
        unsafe { libc::madvise(r.as_ptr().cast(), len, libc::MADV_HUGEPAGE) };
        // Guest RAM is the guest's, never in a core dump of hull-vmm (a crash or an abort
        // would otherwise write it to wherever the host's core_pattern points).
        // SAFETY: as above; MADV_DONTDUMP only changes what a core dump includes.
        unsafe { libc::madvise(r.as_ptr().cast(), len, libc::MADV_DONTDUMP) };
    }
}

/// Keeps the VMM's own heap small. glibc gives each thread that allocates its own 64 MiB-aligned
/// arena; on hosts with THP `always` the first touch of each one can cost a 2 MiB huge page of
/// RSS, for a few KiB of vCPU-thread allocations: one arena. And glibc raises its mmap
/// threshold (up to 32 MiB) after the first large buffer is freed, and its trim threshold with
/// it, after which freed memory stays in the heap: fixed thresholds keep large buffers in
/// their own mappings and give freed heap back. Call before spawning threads.
pub fn limit_host_heap() {
    const THRESHOLD: libc::c_int = 128 * 1024;
    for (param, value) in [
        (libc::M_ARENA_MAX, 1),
        (libc::M_MMAP_THRESHOLD, THRESHOLD),
        (libc::M_TRIM_THRESHOLD, THRESHOLD),
    ] {
        // SAFETY: mallopt only changes allocator tuning; these are valid parameters and
        // values, and no other thread exists yet that could be allocating concurrently.
        unsafe { libc::mallopt(param, value) };
    }
}

/// Creates `size` bytes of guest RAM laid out by `arch::ram_regions`, backed by one memfd.
#[cfg(test)]
pub(crate) fn create(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    create_with_hotplug(size, 0)
}

/// Like [`create`], plus `hotplug` bytes at [`arch::HOTPLUG_START`] for the virtio-mem device
/// (`devices/mem`): the same memfd, past the RAM, never in the e820 map. Reserving it costs
/// address space only; the host backs what the guest touches after plugging (DESIGN §2
/// vmm/: hot-plug). KVM and the vhost-user back end see it from boot on, so growing the
/// guest later needs no new memory slot or table.
pub(crate) fn create_with_hotplug(size: u64, hotplug: u64) -> Result<GuestMemoryMmap, MemoryError> {
    if size < (1 << 20) || !size.is_multiple_of(4096) || !hotplug.is_multiple_of(4096) {
        return Err(MemoryError::Size(size));
    }
    let file = memfd(c"hull-guest-ram")?;
    let total = size
        .checked_add(hotplug)
        .ok_or(MemoryError::Size(hotplug))?;
    file.set_len(total).map_err(MemoryError::Truncate)?;
    let mut offset = 0u64;
    let mut ranges = Vec::new();
    let mut layout = arch::ram_regions(size);
    if hotplug > 0 {
        layout.push((vm_memory::GuestAddress(arch::HOTPLUG_START), hotplug));
    }
    for (addr, len) in layout {
        let f = file.try_clone().map_err(MemoryError::Memfd)?;
        let len_usize = usize::try_from(len).map_err(|_| MemoryError::Size(size))?;
        ranges.push((addr, len_usize, Some(FileOffset::new(f, offset))));
        offset += len;
    }
    let mem = GuestMemoryMmap::from_ranges_with_files(ranges).map_err(MemoryError::Map)?;
    advise_guest_ram(&mem);
    Ok(mem)
}

/// Why a guest range kept its host memory.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DiscardError {
    #[error("range {addr:#x}+{len:#x} is outside guest memory")]
    OutsideMemory { addr: u64, len: u64 },
    #[error("guest memory has no backing file")]
    NoBackingFile,
    #[error("cannot punch a hole in guest memory: {0}")]
    Punch(nix::errno::Errno),
}

/// What one discard did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Discarded {
    /// Bytes of whole pages punched out.
    pub(crate) punched: u64,
    /// Bytes of host memory that held guest data and were freed (the backing file's
    /// allocated size before minus after; much of what a guest gives back was never touched).
    pub(crate) freed: u64,
}

/// The guest's page: ranges are discarded in whole pages only.
const PAGE: u64 = 4096;

/// Frees the host backing of the whole pages in `[addr, addr + len)`: the balloon's free page
/// reports and virtio-mem's unplugged blocks. A page the guest touches again faults in
/// zeroed.
pub(crate) fn discard(
    mem: &GuestMemoryMmap,
    addr: vm_memory::GuestAddress,
    len: u64,
) -> Result<Discarded, DiscardError> {
    use std::os::unix::fs::MetadataExt;

    use nix::fcntl::FallocateFlags;
    use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

    let outside = || DiscardError::OutsideMemory { addr: addr.0, len };
    let end = addr.0.checked_add(len).ok_or_else(outside)? / PAGE * PAGE;
    let mut cur = addr.0.div_ceil(PAGE) * PAGE;
    let mut done = Discarded::default();
    while cur < end {
        let region = mem.find_region(GuestAddress(cur)).ok_or_else(outside)?;
        let in_region = cur - region.start_addr().0;
        let n = (end - cur).min(region.len() - in_region);
        let file = region.file_offset().ok_or(DiscardError::NoBackingFile)?;
        let offset = file.start().checked_add(in_region).ok_or_else(outside)?;
        let off = |v: u64| libc::off_t::try_from(v).map_err(|_| outside());
        // st_blocks of a memfd counts the pages it holds (512-byte units); a failed stat
        // only leaves `freed` uncounted.
        let held = || file.file().metadata().map_or(0, |m| m.blocks() * 512);
        let before = held();
        // Punching the hole (not MADV_DONTNEED, which would only drop hull-vmm's own page
        // table entries of a shared mapping) frees the pages for every mapper of the memfd.
        nix::fcntl::fallocate(
            file.file(),
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            off(offset)?,
            off(n)?,
        )
        .map_err(DiscardError::Punch)?;
        done.punched += n;
        done.freed += before.saturating_sub(held());
        cur += n;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

    use super::*;

    #[test]
    fn memfd_memory_is_usable() {
        let mem = create(16 << 20).unwrap();
        mem.write_obj(0xdead_beefu32, GuestAddress(0x1000)).unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x1000)).unwrap(),
            0xdead_beef
        );
        assert_eq!(mem.last_addr(), GuestAddress((16 << 20) - 1));
        assert!(create(100).is_err());
    }

    #[test]
    fn the_hotplug_region_shares_the_memfd_past_the_ram() {
        use vm_memory::GuestMemoryRegion;
        let mem = create_with_hotplug(16 << 20, 128 << 20).unwrap();
        let regions: Vec<_> = mem.iter().map(|r| (r.start_addr().0, r.len())).collect();
        assert_eq!(
            regions,
            vec![(0, 16 << 20), (crate::arch::HOTPLUG_START, 128 << 20)]
        );
        let hp = mem
            .find_region(GuestAddress(crate::arch::HOTPLUG_START))
            .unwrap();
        assert_eq!(hp.file_offset().unwrap().start(), 16 << 20);
        mem.write_obj(7u8, GuestAddress(crate::arch::HOTPLUG_START + 4096))
            .unwrap();
        let d = discard(&mem, GuestAddress(crate::arch::HOTPLUG_START), 8192).unwrap();
        assert_eq!(d.punched, 8192);
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(crate::arch::HOTPLUG_START + 4096))
                .unwrap(),
            0,
            "a discarded page reads as zeros"
        );
        assert!(discard(&mem, GuestAddress(64 << 20), 4096).is_err());
    }
}
