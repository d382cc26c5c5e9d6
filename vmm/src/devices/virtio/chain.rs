//! Guest descriptor chains, validated before a device touches them. A chain is rejected when it
//! loops or runs past the queue (the iterator stops with NEXT still set), has a zero-length or
//! out-of-memory buffer, puts a device-readable buffer after a device-writable one, has more
//! descriptors or bytes than the device allows. Rejection fails that request only.

use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, VolatileSlice};

use crate::vstate::memory::GuestMemoryMmap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("descriptor chain is empty or its head is invalid")]
    Empty,
    #[error("descriptor chain loops, is longer than the queue or points outside it")]
    Truncated,
    #[error("descriptor {0} has length zero")]
    ZeroLength(usize),
    #[error("buffer {addr:#x}+{len:#x} is outside guest memory")]
    OutOfRange { addr: u64, len: u32 },
    #[error("device-readable descriptor after a device-writable one")]
    WrongOrder,
    #[error("more than {0} descriptors")]
    TooManyDescriptors(usize),
    #[error("more than {0} bytes in the chain")]
    TooLarge(u64),
    #[error("buffer too short: need {need} bytes, have {have}")]
    TooShort { need: u64, have: u64 },
    #[error("guest memory access failed: {0}")]
    Memory(String),
}

/// Limits a device puts on a chain.
#[derive(Debug, Clone, Copy)]
pub struct ChainLimits {
    pub max_descriptors: usize,
    pub max_bytes: u64,
}

/// A validated chain: its head index and its device-readable then device-writable buffers.
///
/// A device pops a chain from its queue, parses it against its own limits, then reads the
/// request and writes the reply through it; a malformed chain fails that request only.
///
/// ```
/// use hull_vmm::devices::virtio::chain::{ChainError, ChainLimits, DescChain};
/// use hull_vmm::vstate::memory::GuestMemoryMmap;
/// use virtio_queue::desc::{split::Descriptor, RawDescriptor};
/// use virtio_queue::mock::MockSplitQueue;
/// use virtio_queue::{Queue, QueueOwnedT, QueueT};
/// use vm_memory::{Bytes, GuestAddress};
///
/// let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
/// // The guest's driver posts a request (4 bytes to read) and a buffer for the reply (8 bytes).
/// let (next, write) = (1, 2);
/// let vq = MockSplitQueue::new(&mem, 16);
/// let desc = |addr, len, flags, next| RawDescriptor::from(Descriptor::new(addr, len, flags, next));
/// vq.desc_table().store(0, desc(0x1_0000, 4, next, 1)).unwrap();
/// vq.desc_table().store(1, desc(0x2_0000, 8, write, 0)).unwrap();
/// vq.avail().ring().ref_at(0).unwrap().store(0);
/// vq.avail().idx().store(1);
/// mem.write_slice(b"ping", GuestAddress(0x1_0000)).unwrap();
///
/// let mut q: Queue = vq.create_queue().unwrap();
/// let popped = q.iter(&mem).unwrap().next().unwrap();
/// let limits = ChainLimits { max_descriptors: 4, max_bytes: 4096 };
/// let chain = DescChain::parse(popped, &mem, limits).unwrap();
/// assert_eq!((chain.readable_len(), chain.writable_len()), (4, 8));
/// let mut request = [0u8; 4];
/// chain.read_at(&mem, 0, &mut request).unwrap();
/// assert_eq!(&request, b"ping");
/// chain.write_at(&mem, 0, b"pong").unwrap();
/// // Writing past the guest's buffer is an error, never an overrun.
/// assert_eq!(
///     chain.write_at(&mem, 4, b"too long"),
///     Err(ChainError::TooShort { need: 12, have: 8 })
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescChain {
    pub head: u16,
    pub readable: Vec<(GuestAddress, u32)>,
    pub writable: Vec<(GuestAddress, u32)>,
}

impl DescChain {
    /// Walks and checks `chain`.
    pub fn parse<M>(
        mut chain: DescriptorChain<M>,
        mem: &GuestMemoryMmap,
        limits: ChainLimits,
    ) -> Result<Self, ChainError>
    where
        M: std::ops::Deref,
        M::Target: GuestMemory,
    {
        let head = chain.head_index();
        let mut out = DescChain {
            head,
            readable: vec![],
            writable: vec![],
        };
        let mut total: u64 = 0;
        let mut count = 0usize;
        let mut last_has_next = false;
        for (i, d) in chain.by_ref().enumerate() {
            count += 1;
            if count > limits.max_descriptors {
                return Err(ChainError::TooManyDescriptors(limits.max_descriptors));
            }
            let len = d.len();
            if len == 0 {
                return Err(ChainError::ZeroLength(i));
            }
            total += u64::from(len);
            if total > limits.max_bytes {
                return Err(ChainError::TooLarge(limits.max_bytes));
            }
            let usize_len =
                usize::try_from(len).map_err(|_| ChainError::TooLarge(limits.max_bytes))?;
            if !GuestMemoryBackend::check_range(mem, d.addr(), usize_len) {
                return Err(ChainError::OutOfRange {
                    addr: d.addr().0,
                    len,
                });
            }
            if d.is_write_only() {
                out.writable.push((d.addr(), len));
            } else if !out.writable.is_empty() {
                return Err(ChainError::WrongOrder);
            } else {
                out.readable.push((d.addr(), len));
            }
            last_has_next = d.has_next();
        }
        if count == 0 {
            return Err(ChainError::Empty);
        }
        if last_has_next {
            return Err(ChainError::Truncated);
        }
        Ok(out)
    }

    pub fn readable_len(&self) -> u64 {
        self.readable.iter().map(|(_, l)| u64::from(*l)).sum()
    }

    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|(_, l)| u64::from(*l)).sum()
    }

    /// The guest memory of the readable (`writable == false`) or writable buffers from byte
    /// `skip` on, as slices for vectored I/O straight to or from guest RAM. A buffer that
    /// crosses a memory region boundary becomes two slices. Every buffer was checked to lie in
    /// guest memory by [`DescChain::parse`]; a failure here is still an error, not a panic.
    pub fn slices<'m>(
        &self,
        mem: &'m GuestMemoryMmap,
        writable: bool,
        skip: u64,
    ) -> Result<Vec<VolatileSlice<'m, ()>>, ChainError> {
        let segs = if writable {
            &self.writable
        } else {
            &self.readable
        };
        let mut out = Vec::with_capacity(segs.len());
        let mut skip = skip;
        for &(addr, len) in segs {
            let len = u64::from(len);
            if skip >= len {
                skip -= len;
                continue;
            }
            let start = addr.checked_add(skip).ok_or(ChainError::OutOfRange {
                addr: addr.0,
                len: u32::try_from(len).unwrap_or(u32::MAX),
            })?;
            let count = usize::try_from(len - skip).map_err(|_| ChainError::TooLarge(len))?;
            skip = 0;
            for s in GuestMemoryBackend::get_slices(mem, start, count) {
                out.push(s.map_err(|e| ChainError::Memory(e.to_string()))?);
            }
        }
        Ok(out)
    }

    /// Copies readable bytes starting at `offset` into `buf` (all of it, or an error).
    pub fn read_at(
        &self,
        mem: &GuestMemoryMmap,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), ChainError> {
        copy_segments(&self.readable, offset, buf.len(), |addr, range| {
            mem.read_slice(&mut buf[range], addr)
        })
    }

    /// Copies `buf` into the writable buffers starting at `offset`.
    pub fn write_at(
        &self,
        mem: &GuestMemoryMmap,
        offset: u64,
        buf: &[u8],
    ) -> Result<(), ChainError> {
        copy_segments(&self.writable, offset, buf.len(), |addr, range| {
            mem.write_slice(&buf[range], addr)
        })
    }
}

/// Visits the parts of `segs` covering `[offset, offset + len)`; `f(addr, buf_range)`.
fn copy_segments(
    segs: &[(GuestAddress, u32)],
    offset: u64,
    len: usize,
    mut f: impl FnMut(GuestAddress, std::ops::Range<usize>) -> Result<(), vm_memory::GuestMemoryError>,
) -> Result<(), ChainError> {
    let have: u64 = segs.iter().map(|(_, l)| u64::from(*l)).sum();
    let need = offset.saturating_add(len as u64);
    if need > have {
        return Err(ChainError::TooShort { need, have });
    }
    let mut skip = offset;
    let mut done = 0usize;
    for (addr, seg_len) in segs {
        if done == len {
            break;
        }
        let seg_len = u64::from(*seg_len);
        if skip >= seg_len {
            skip -= seg_len;
            continue;
        }
        let avail = usize::try_from(seg_len - skip).unwrap_or(usize::MAX);
        let n = avail.min(len - done);
        f(GuestAddress(addr.0 + skip), done..done + n)
            .map_err(|e| ChainError::Memory(e.to_string()))?;
        done += n;
        skip = 0;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Building queues and chains in test memory with virtio-queue's mock driver.
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use virtio_queue::desc::RawDescriptor;

    pub const NEXT: u16 = 1;
    const _: () = assert!(VRING_DESC_F_NEXT == 1);
    pub const WRITE: u16 = 2;
    const _: () = assert!(VRING_DESC_F_WRITE == 2);

    pub fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
    }
}

#[cfg(test)]
mod tests {
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueOwnedT, QueueT};

    use super::test_util::*;
    use super::*;
    use crate::vstate::memory;

    const LIMITS: ChainLimits = ChainLimits {
        max_descriptors: 4,
        max_bytes: 1 << 20,
    };

    /// Puts `descs` (raw, with their own NEXT flags and next indices) at table slot 0 and
    /// publishes head 0, then parses the popped chain.
    fn parse_raw(descs: &[virtio_queue::desc::RawDescriptor]) -> Result<DescChain, ChainError> {
        let mem = memory::create(16 << 20).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        for (i, d) in descs.iter().enumerate() {
            vq.desc_table()
                .store(u16::try_from(i).unwrap(), *d)
                .unwrap();
        }
        vq.avail().ring().ref_at(0).unwrap().store(0);
        vq.avail().idx().store(1);
        let mut q: Queue = vq.create_queue().unwrap();
        let chain = q.iter(&mem).unwrap().next().unwrap();
        DescChain::parse(chain, &mem, LIMITS)
    }

    #[test]
    fn good_chain_and_copies() {
        let c = parse_raw(&[
            desc(0x10_0000, 4, NEXT, 1),
            desc(0x20_0000, 8, NEXT | WRITE, 2),
            desc(0x30_0000, 8, WRITE, 0),
        ])
        .unwrap();
        assert_eq!((c.readable_len(), c.writable_len()), (4, 16));
        let mem = memory::create(16 << 20).unwrap();
        c.write_at(&mem, 6, &[1, 2, 3, 4]).unwrap();
        let mut b = [0u8; 2];
        mem.read_slice(&mut b, GuestAddress(0x20_0006)).unwrap();
        assert_eq!(b, [1, 2]);
        mem.read_slice(&mut b, GuestAddress(0x30_0000)).unwrap();
        assert_eq!(b, [3, 4]);
        assert!(matches!(
            c.write_at(&mem, 15, &[0, 0]),
            Err(ChainError::TooShort { .. })
        ));

        // Slices for vectored I/O: skipping 6 of the writable bytes leaves 2 + 8.
        let w = c.slices(&mem, true, 6).unwrap();
        assert_eq!(w.iter().map(VolatileSlice::len).collect::<Vec<_>>(), [2, 8]);
        let r = c.slices(&mem, false, 0).unwrap();
        assert_eq!(r.iter().map(VolatileSlice::len).collect::<Vec<_>>(), [4]);
        assert!(c.slices(&mem, false, 4).unwrap().is_empty());
    }

    #[test]
    fn malformed_chains_are_rejected() {
        // Loop: 0 -> 1 -> 0.
        assert_eq!(
            parse_raw(&[desc(0x10_0000, 4, NEXT, 1), desc(0x10_1000, 4, NEXT, 0)]),
            Err(ChainError::TooManyDescriptors(4))
        );
        // Next index beyond the queue.
        assert_eq!(
            parse_raw(&[desc(0x10_0000, 4, NEXT, 200)]),
            Err(ChainError::Truncated)
        );
        // Zero length.
        assert_eq!(
            parse_raw(&[desc(0x10_0000, 0, 0, 0)]),
            Err(ChainError::ZeroLength(0))
        );
        // Outside guest memory, and wrapping the address space.
        assert!(matches!(
            parse_raw(&[desc(0xff_ffff_0000, 16, 0, 0)]),
            Err(ChainError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse_raw(&[desc(u64::MAX - 4, 16, 0, 0)]),
            Err(ChainError::OutOfRange { .. })
        ));
        // Straddling the end of RAM.
        assert!(matches!(
            parse_raw(&[desc((16 << 20) - 8, 16, 0, 0)]),
            Err(ChainError::OutOfRange { .. })
        ));
        // Huge length.
        assert_eq!(
            parse_raw(&[desc(0x10_0000, u32::MAX, 0, 0)]),
            Err(ChainError::TooLarge(1 << 20))
        );
        // Readable after writable.
        assert_eq!(
            parse_raw(&[
                desc(0x10_0000, 4, NEXT | WRITE, 1),
                desc(0x20_0000, 4, 0, 0)
            ]),
            Err(ChainError::WrongOrder)
        );
        // Too many descriptors.
        let many: Vec<_> = (0..6u16)
            .map(|i| desc(0x10_0000 + u64::from(i) * 0x1000, 4, NEXT, i + 1))
            .collect();
        assert_eq!(parse_raw(&many), Err(ChainError::TooManyDescriptors(4)));
    }

    #[test]
    fn bad_indirect_tables_are_rejected() {
        const INDIRECT: u16 = 4;
        // Indirect table outside guest memory, of zero length, or of a length that is not a
        // multiple of the descriptor size: nothing is yielded.
        for (addr, len) in [(0xff_ffff_0000u64, 32u32), (0x10_0000, 0), (0x10_0000, 17)] {
            assert_eq!(
                parse_raw(&[desc(addr, len, INDIRECT, 0)]),
                Err(ChainError::Empty)
            );
        }
    }

    #[test]
    fn loop_longer_than_limit_is_truncated() {
        let limits = ChainLimits {
            max_descriptors: 64,
            max_bytes: 1 << 20,
        };
        let mem = memory::create(16 << 20).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        vq.desc_table()
            .store(0, desc(0x10_0000, 4, NEXT, 1))
            .unwrap();
        vq.desc_table()
            .store(1, desc(0x10_1000, 4, NEXT, 0))
            .unwrap();
        vq.avail().ring().ref_at(0).unwrap().store(0);
        vq.avail().idx().store(1);
        let mut q: Queue = vq.create_queue().unwrap();
        let chain = q.iter(&mem).unwrap().next().unwrap();
        assert_eq!(
            DescChain::parse(chain, &mem, limits),
            Err(ChainError::Truncated)
        );
        let _ = q.ready();
    }
}
