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
pub(crate) fn create(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    if size < (1 << 20) || !size.is_multiple_of(4096) {
        return Err(MemoryError::Size(size));
    }
    let file = memfd(c"hull-guest-ram")?;
    file.set_len(size).map_err(MemoryError::Truncate)?;
    let mut offset = 0u64;
    let mut ranges = Vec::new();
    for (addr, len) in arch::ram_regions(size) {
        let f = file.try_clone().map_err(MemoryError::Memfd)?;
        let len_usize = usize::try_from(len).map_err(|_| MemoryError::Size(size))?;
        ranges.push((addr, len_usize, Some(FileOffset::new(f, offset))));
        offset += len;
    }
    let mem = GuestMemoryMmap::from_ranges_with_files(ranges).map_err(MemoryError::Map)?;
    advise_guest_ram(&mem);
    Ok(mem)
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
}
