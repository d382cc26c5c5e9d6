//! What every virtio device shares: the `VirtioDevice` trait the MMIO transport drives, the
//! interrupt a device raises, and validated descriptor chains.

pub mod chain;
pub(crate) mod mmio;
pub(crate) mod slot;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub use self::chain::{ChainError, DescChain};
pub(crate) use self::mmio::MmioTransport;
use crate::devices::balloon::BalloonMetrics;
use crate::devices::blk::BlockMetrics;
use crate::devices::mem::MemMetrics;
use crate::devices::net::NetMetrics;
use crate::devices::rng::RngMetrics;
use crate::devices::vhost_user_fs::FsMetrics;
use crate::devices::vsock::VsockMetrics;
use crate::vstate::memory::GuestMemoryMmap;

/// virtio 1.x feature bit.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Device types (virtio spec 5).
pub const TYPE_NET: u32 = 1;
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_RNG: u32 = 4;
pub const TYPE_BALLOON: u32 = 5;
pub const TYPE_VSOCK: u32 = 19;
pub const TYPE_MEM: u32 = 24;
pub const TYPE_FS: u32 = 26;

/// Interrupt status bits.
pub const INT_VRING: u32 = 0x1;
pub const INT_CONFIG: u32 = 0x2;

/// The interrupt line of one device: the status register the driver reads plus the irqfd.
///
/// ```
/// use hull_vmm::devices::virtio::{IrqTrigger, INT_CONFIG, INT_VRING};
/// use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
///
/// let irq = IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap());
/// irq.trigger(INT_VRING); // a device used a buffer
/// irq.trigger(INT_CONFIG);
/// // KVM reads the irqfd and injects the interrupt (the count is how many raises).
/// assert_eq!(irq.eventfd().read().unwrap(), 2);
/// assert_eq!(irq.status(), INT_VRING | INT_CONFIG);
/// irq.ack(INT_VRING); // the driver's InterruptACK write
/// assert_eq!(irq.status(), INT_CONFIG);
/// ```
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

/// Memory and interrupt, present once the driver set DRIVER_OK.
#[derive(Debug)]
pub struct Active {
    pub mem: GuestMemoryMmap,
    pub irq: Arc<IrqTrigger>,
}

/// What every virtio device keeps alike: its features, its queues with their notification
/// eventfds, and the activation (memory + interrupt) the transport hands over.
#[derive(Debug)]
pub struct DeviceState {
    pub avail_features: u64,
    pub acked_features: u64,
    pub queues: Vec<Queue>,
    /// One per queue, signalled when the driver notifies it.
    pub queue_evts: Vec<EventFd>,
    pub active: Option<Active>,
}

impl DeviceState {
    pub fn new(num_queues: usize, queue_size: u16, avail_features: u64) -> std::io::Result<Self> {
        let mut queues = Vec::with_capacity(num_queues);
        let mut queue_evts = Vec::with_capacity(num_queues);
        for _ in 0..num_queues {
            queues.push(Queue::new(queue_size).map_err(std::io::Error::other)?);
            queue_evts.push(EventFd::new(EFD_NONBLOCK)?);
        }
        Ok(DeviceState {
            avail_features,
            acked_features: 0,
            queues,
            queue_evts,
            active: None,
        })
    }

    /// Takes memory and interrupt once; the queues the driver made ready must fit in memory.
    pub fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        irq: Arc<IrqTrigger>,
    ) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        check_queues(&self.queues, &mem)?;
        self.active = Some(Active { mem, irq });
        Ok(())
    }
}

/// A virtio device as the transport sees it. Devices stay inert until `activate`. A device
/// provides its type, config space and metrics; the rest comes from its [`DeviceState`].
///
/// ```
/// use std::sync::Arc;
///
/// use hull_vmm::devices::virtio::{
///     read_config_bytes, DeviceMetrics, DeviceState, IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1,
/// };
/// use hull_vmm::vstate::memory::GuestMemoryMmap;
/// use vm_memory::GuestAddress;
/// use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
///
/// /// One queue of 16 entries and a config space holding the number 42.
/// struct Answer(DeviceState);
///
/// impl VirtioDevice for Answer {
///     fn device_type(&self) -> u32 {
///         4
///     }
///     fn state(&self) -> &DeviceState {
///         &self.0
///     }
///     fn state_mut(&mut self) -> &mut DeviceState {
///         &mut self.0
///     }
///     fn read_config(&self, offset: u64, data: &mut [u8]) {
///         read_config_bytes(&42u32.to_le_bytes(), offset, data);
///     }
///     fn metrics(&self) -> DeviceMetrics {
///         DeviceMetrics::Rng(Default::default())
///     }
/// }
///
/// let mut dev = Answer(DeviceState::new(1, 16, VIRTIO_F_VERSION_1).unwrap());
/// // What the MMIO transport does while the driver sets the device up:
/// dev.set_acked_features(dev.avail_features());
/// let mut b = [0u8; 4];
/// dev.read_config(0, &mut b);
/// assert_eq!(u32::from_le_bytes(b), 42);
/// dev.read_config(2, &mut b); // a read running past the end reads as zeros
/// assert_eq!(b, [0; 4]);
/// assert_eq!(dev.queue_events().len(), 1);
/// // DRIVER_OK: memory and the interrupt arrive, once.
/// let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
/// let irq = Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()));
/// dev.activate(mem.clone(), irq.clone()).unwrap();
/// assert!(dev.is_activated());
/// assert!(dev.activate(mem, irq).is_err());
/// ```
pub trait VirtioDevice: Send {
    fn device_type(&self) -> u32;
    fn state(&self) -> &DeviceState;
    fn state_mut(&mut self) -> &mut DeviceState;
    fn read_config(&self, offset: u64, data: &mut [u8]);
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Moves whenever the device changes its config space on its own (virtio-mem's sizes),
    /// so the driver can tell a torn read of a multi-word field.
    fn config_generation(&self) -> u32 {
        0
    }
    /// The device's counters; they keep counting after the call, a report reads them later.
    fn metrics(&self) -> DeviceMetrics;

    fn avail_features(&self) -> u64 {
        self.state().avail_features
    }
    fn acked_features(&self) -> u64 {
        self.state().acked_features
    }
    fn set_acked_features(&mut self, features: u64) {
        self.state_mut().acked_features = features;
    }
    /// The device's queues; the transport programs size, addresses and readiness.
    fn queues_mut(&mut self) -> &mut [Queue] {
        &mut self.state_mut().queues
    }
    fn queues(&self) -> &[Queue] {
        &self.state().queues
    }
    /// One eventfd per queue, signalled when the driver notifies the queue.
    fn queue_events(&self) -> &[EventFd] {
        &self.state().queue_evts
    }
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        irq: Arc<IrqTrigger>,
    ) -> Result<(), ActivateError> {
        self.state_mut().activate(mem, irq)
    }
    fn is_activated(&self) -> bool {
        self.state().active.is_some()
    }
    /// A vhost-user device's back end raises the irqfd itself and cannot set
    /// [`IrqTrigger`]'s status bits, so the transport reports VRING on every read.
    fn interrupt_status_always_vring(&self) -> bool {
        false
    }
    /// Replaces the device's rate limits (the API's `PUT /net/N/rate_limits`,
    /// `PUT /disks/N/rate_limits`); devices without limits refuse.
    fn set_rate_limits(&mut self, _limits: &RateLimits) -> Result<(), String> {
        Err("this device has no rate limits".into())
    }
}

/// New rate limits for one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimits {
    /// A NIC: host to guest (`rx`) and guest to host (`tx`).
    Net {
        rx: crate::config::LimitConfig,
        tx: crate::config::LimitConfig,
    },
    /// A disk: its requests.
    Disk(crate::config::LimitConfig),
}

/// A device's metrics, as `GET /metrics` shows them under `devices[].metrics` (vmm/API.md).
/// Shared with the device, which keeps counting.
#[derive(Debug, Clone)]
pub enum DeviceMetrics {
    Block(Arc<BlockMetrics>),
    Net(Arc<NetMetrics>),
    Rng(Arc<RngMetrics>),
    Balloon(Arc<BalloonMetrics>),
    Vsock(Arc<VsockMetrics>),
    Fs(Arc<FsMetrics>),
    Mem(Arc<MemMetrics>),
}

impl serde::Serialize for DeviceMetrics {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DeviceMetrics::Block(m) => m.serialize(s),
            DeviceMetrics::Net(m) => m.serialize(s),
            DeviceMetrics::Rng(m) => m.serialize(s),
            DeviceMetrics::Balloon(m) => m.serialize(s),
            DeviceMetrics::Vsock(m) => m.serialize(s),
            DeviceMetrics::Fs(m) => m.serialize(s),
            DeviceMetrics::Mem(m) => m.serialize(s),
        }
    }
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
pub(crate) fn check_queues(queues: &[Queue], mem: &GuestMemoryMmap) -> Result<(), ActivateError> {
    use virtio_queue::QueueT;
    for (i, q) in queues.iter().enumerate() {
        if q.ready() && !q.is_valid(mem) {
            return Err(ActivateError::BadQueue(i));
        }
    }
    Ok(())
}
