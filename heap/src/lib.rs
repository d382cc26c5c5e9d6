//! glibc heap settings for the processes at either end of the agent API (the agent, the
//! shim, hullctl), which move stdout and stderr as ttrpc messages of up to 1 MiB. Its own
//! crate, not part of the wire types: it is process tuning, and only those three link it.
//!
//! With glibc's defaults each such message, and each buffer behind it, costs fresh pages: a
//! buffer above the mmap threshold gets its own mapping, and a freed one below it is trimmed
//! from the top of the heap as soon as the free space there passes the trim threshold; either
//! way every page is faulted in again for the next message. Measured with `bench/agent/run`
//! on a 2-core VM: ~1.8 page faults per 4 KiB page moved, on each side, and 209 MB/s; with the
//! thresholds below, under a thousand faults per GiB on the client and 660 MB/s.
//!
//! The cost is memory kept after a burst: up to [`TRIM_THRESHOLD`] of free heap per glibc
//! arena. [`release_free_memory`] hands it back; call it when a stream ends, so an idle
//! process does not keep what its last burst needed.

/// Buffers below this come from the heap and are reused; above it (ttrpc's 4 MiB message
/// limit), they get their own mapping, which is unmapped when freed. Twice the largest
/// stdio message plus its framing.
pub const MMAP_THRESHOLD: usize = 2 << 20;
/// Free space kept at the top of each heap before glibc returns it: room for a message being
/// built while the previous one is still queued.
pub const TRIM_THRESHOLD: usize = 4 << 20;

/// Applies the thresholds. Fixed values also turn off glibc's dynamic threshold, which would
/// otherwise move with the first large buffer freed. Call early in `main`.
pub fn tune_for_stream_messages() {
    for (param, value) in [
        (libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD),
    ] {
        let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
        // mallopt fails only for an unknown parameter, and a refusal would only cost speed:
        // its result is not checked (the unit test below checks the effect).
        // SAFETY: mallopt only changes allocator tuning; both are valid parameters with
        // in-range values, and glibc serialises it against concurrent allocations.
        unsafe { libc::mallopt(param, value) };
    }
}

/// Makes every thread allocate from the main heap. glibc otherwise gives each new thread that
/// allocates its own arena (a 64 MiB reservation whose touched pages stay), which a process
/// that runs its work on one thread, with a few short-lived helpers, pays for and never uses
/// again. Call first thing in `main`, before any thread starts.
pub fn use_one_arena() {
    // As above: fails only for an unknown parameter, and a refusal only costs memory.
    // SAFETY: mallopt only changes allocator tuning; M_ARENA_MAX with 1 is valid.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
}

/// Returns free heap memory to the kernel, in every arena (`malloc_trim(0)`).
pub fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointers; it only walks glibc's own arenas under their
    // locks.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes glibc holds in separate mappings (all arenas).
    fn mapped_bytes() -> usize {
        // SAFETY: mallinfo2 takes no arguments and returns a plain struct by value.
        unsafe { libc::mallinfo2() }.hblkhd
    }

    #[test]
    fn message_sized_buffers_come_from_the_heap() {
        tune_for_stream_messages();
        let before = mapped_bytes();
        let buf = vec![1u8; 1 << 20];
        let during = mapped_bytes();
        assert!(
            during < before + (1 << 20),
            "a 1 MiB buffer got its own mapping ({before} -> {during} bytes mapped)"
        );
        drop(buf);
        release_free_memory();
    }
}
