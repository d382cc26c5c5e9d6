//! virtio-rng device logic: fill each device-writable chain with random bytes.

use std::fs::File;
use std::io::Read;
use std::sync::Arc;

use virtio_queue::QueueT;

use super::metrics::RngMetrics;
use crate::devices::virtio::chain::ChainLimits;
use crate::devices::virtio::{
    DescChain, DeviceMetrics, DeviceState, VirtioDevice, INT_VRING, TYPE_RNG,
};

const QUEUE_SIZE: u16 = 256;
/// At most this much entropy per request.
const MAX_REQUEST: u64 = 64 * 1024;
const LIMITS: ChainLimits = ChainLimits {
    max_descriptors: 16,
    max_bytes: 1 << 20,
};

/// The virtio-rng device.
#[derive(Debug)]
pub struct Rng {
    pub(super) state: DeviceState,
    source: File,
    pub(super) metrics: Arc<RngMetrics>,
}

impl Rng {
    pub fn new() -> std::io::Result<Self> {
        Ok(Rng {
            state: DeviceState::new(1, QUEUE_SIZE, 0)?,
            source: File::open("/dev/urandom")?,
            metrics: Arc::default(),
        })
    }

    /// Serves every available request; returns whether any was used.
    pub fn process_queue(&mut self) -> bool {
        let Some(active) = &self.state.active else {
            return false;
        };
        let mem = active.mem.clone();
        let mut used = false;
        while let Some(chain) = self.state.queues[0].pop_descriptor_chain(&mem) {
            let head = chain.head_index();
            let len = match DescChain::parse(chain, &mem, LIMITS) {
                Ok(c) if c.readable.is_empty() && !c.writable.is_empty() => {
                    let n = c.writable_len().min(MAX_REQUEST);
                    let mut buf = vec![0u8; usize::try_from(n).unwrap_or(0)];
                    match self
                        .source
                        .read_exact(&mut buf)
                        .ok()
                        .and_then(|_| c.write_at(&mem, 0, &buf).ok())
                    {
                        Some(()) => {
                            self.metrics.bytes.add(n);
                            u32::try_from(n).unwrap_or(0)
                        }
                        None => 0,
                    }
                }
                _ => {
                    self.metrics.invalid_chains.inc();
                    0
                }
            };
            self.metrics.requests.inc();
            if self.state.queues[0].add_used(&mem, head, len).is_err() {
                break;
            }
            used = true;
        }
        if used {
            active.irq.trigger(INT_VRING);
        }
        used
    }
}

impl VirtioDevice for Rng {
    fn state(&self) -> &DeviceState {
        &self.state
    }
    fn state_mut(&mut self) -> &mut DeviceState {
        &mut self.state
    }
    fn device_type(&self) -> u32 {
        TYPE_RNG
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn metrics(&self) -> DeviceMetrics {
        DeviceMetrics::Rng(self.metrics.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use crate::devices::virtio::IrqTrigger;
    use crate::vstate::memory::GuestMemoryMmap;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::devices::virtio::chain::test_util::*;
    use crate::vstate::memory;

    fn setup(mem: &GuestMemoryMmap) -> (Rng, MockSplitQueue<'_, GuestMemoryMmap>) {
        let vq = MockSplitQueue::new(mem, 16);
        let mut rng = Rng::new().unwrap();
        rng.state.queues[0] = vq.create_queue().unwrap();
        let irq = Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        rng.activate(mem.clone(), irq).unwrap();
        (rng, vq)
    }

    #[test]
    fn fills_writable_buffers() {
        let mem = memory::create(16 << 20).unwrap();
        let (mut rng, vq) = setup(&mem);
        vq.add_desc_chains(&[desc(0x10_0000, 64, WRITE, 0)], 0)
            .unwrap();
        assert!(rng.process_queue());
        let used = vq.used().ring().ref_at(0).unwrap().load();
        assert_eq!(used.len(), 64);
        let mut b = [0u8; 64];
        mem.read_slice(&mut b, GuestAddress(0x10_0000)).unwrap();
        assert_ne!(b, [0u8; 64]);
        assert_eq!(rng.metrics.bytes.get(), 64);
    }

    #[test]
    fn malformed_requests_complete_with_zero_length() {
        let mem = memory::create(16 << 20).unwrap();
        let (mut rng, vq) = setup(&mem);
        // Wrong direction (device-readable), out of range, zero length.
        vq.add_desc_chains(&[desc(0x10_0000, 64, 0, 0)], 0).unwrap();
        vq.add_desc_chains(&[desc(0xffff_0000_0000, 64, WRITE, 0)], 1)
            .unwrap();
        vq.add_desc_chains(&[desc(0x10_0000, 0, WRITE, 0)], 2)
            .unwrap();
        assert!(rng.process_queue());
        for i in 0..3 {
            assert_eq!(vq.used().ring().ref_at(i).unwrap().load().len(), 0);
        }
        assert_eq!(rng.metrics.invalid_chains.get(), 3);
    }

    #[test]
    fn garbage_avail_index_stops_processing() {
        let mem = memory::create(16 << 20).unwrap();
        let (mut rng, vq) = setup(&mem);
        // The driver claims 1000 new chains in a 16-entry ring: nothing is processed, no loop.
        vq.avail().idx().store(1000);
        assert!(!rng.process_queue());
        // Head indices beyond the queue size are rejected per chain.
        vq.avail().idx().store(1);
        vq.avail().ring().ref_at(0).unwrap().store(999);
        rng.process_queue();
        assert_eq!(rng.metrics.bytes.get(), 0);
    }

    #[test]
    fn inactive_device_does_nothing() {
        let mut rng = Rng::new().unwrap();
        assert!(!rng.process_queue());
    }
}
