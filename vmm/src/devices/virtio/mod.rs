//! What every virtio device shares: the `VirtioDevice` trait the MMIO transport drives, the
//! interrupt a device raises, and validated descriptor chains.

pub mod chain;
pub mod mmio;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

pub use self::chain::{ChainError, DescChain};
pub use self::mmio::MmioTransport;
use crate::vstate::memory::GuestMemoryMmap;

/// virtio 1.x feature bit.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Device types (virtio spec 5).
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_RNG: u32 = 4;
pub const TYPE_VSOCK: u32 = 19;

/// Interrupt status bits.
pub const INT_VRING: u32 = 0x1;
pub const INT_CONFIG: u32 = 0x2;

/// The interrupt line of one device: the status register the driver reads plus the irqfd.
#[derive(Debug)]
pub struct IrqTrigger {
    status: AtomicU32,
    evt: EventFd,
}

impl IrqTrigger {
    pub fn new(evt: EventFd) -> Self {
        IrqTrigger {
            status: AtomicU32::new(0),
            evt,
        }
    }

    /// Sets `bit` in the interrupt status and raises the line.
    pub fn trigger(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        // An irqfd write fails only when the counter would overflow: the line is up already.
        let _ = self.evt.write(1);
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActivateError {
    #[error("queue {0} is not valid for the guest memory")]
    BadQueue(usize),
    #[error("device already activated")]
    AlreadyActive,
    #[error("device back end failed: {0}")]
    Backend(String),
}

/// A virtio device as the transport sees it. Devices stay inert until `activate`.
pub trait VirtioDevice: Send {
    fn device_type(&self) -> u32;
    fn avail_features(&self) -> u64;
    fn acked_features(&self) -> u64;
    fn set_acked_features(&mut self, features: u64);
    /// The device's queues; the transport programs size, addresses and readiness.
    fn queues_mut(&mut self) -> &mut [Queue];
    fn queues(&self) -> &[Queue];
    /// One eventfd per queue, signalled when the driver notifies the queue.
    fn queue_events(&self) -> &[EventFd];
    fn read_config(&self, offset: u64, data: &mut [u8]);
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    fn activate(&mut self, mem: GuestMemoryMmap, irq: Arc<IrqTrigger>)
        -> Result<(), ActivateError>;
    fn is_activated(&self) -> bool;
    /// Per-device metrics as JSON.
    fn metrics(&self) -> serde_json::Value;
}

/// Reads `data.len()` bytes of a config space `cfg` at `offset`; out of range reads as zeros.
pub fn read_config_bytes(cfg: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(off) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = off
        .checked_add(data.len())
        .and_then(|end| cfg.get(off..end))
    {
        data.copy_from_slice(src);
    }
}

/// Checks that each queue the driver made ready fits in guest memory (queues it left unready
/// stay unused: popping from them yields nothing).
pub fn check_queues(queues: &[Queue], mem: &GuestMemoryMmap) -> Result<(), ActivateError> {
    use virtio_queue::QueueT;
    for (i, q) in queues.iter().enumerate() {
        if q.ready() && !q.is_valid(mem) {
            return Err(ActivateError::BadQueue(i));
        }
    }
    Ok(())
}
