//! The virtio-net device as the guest sees it (virtio spec 5.1): type 1, one RX and one TX
//! queue, the features of [`offload::OFFERED`], a read-only config space. Activation happens on the vCPU
//! thread that sets DRIVER_OK; it only hands over to the event loop through `activate_evt`, so
//! every tap ioctl after the build runs on the VMM thread (and its seccomp filter).

use std::collections::VecDeque;
use std::sync::Arc;

use virtio_queue::QueueT;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::metrics::NetMetrics;
use super::offload::{self, Negotiated};
use super::rx::RxChain;
use super::tap::Tap;
use super::NetError;
use crate::config::{LimitConfig, NetConfig};
use crate::devices::rate_limiter::{self, RateLimiter};
use crate::devices::virtio::{
    read_config_bytes, ActivateError, DeviceMetrics, DeviceState, IrqTrigger, RateLimits,
    VirtioDevice, TYPE_NET,
};
use crate::vstate::memory::GuestMemoryMmap;

const QUEUE_SIZE: u16 = 256;
/// `mac[6]`, `status: le16`, `max_virtqueue_pairs: le16`, `mtu: le16` (spec 5.1.4). `status`
/// and `max_virtqueue_pairs` only mean something with STATUS and MQ, which are not offered;
/// they read as 0 and 1.
const CONFIG_LEN: usize = 12;

/// What the device has asked the event loop to watch on the tap, and why.
#[derive(Debug)]
pub(super) struct TapWatch {
    /// Input is wanted: the device is started and the guest had RX buffers when last looked.
    pub rx_wanted: bool,
    /// The tap refused a frame with EAGAIN: retry TX when it is writable.
    pub tx_blocked: bool,
    /// What is registered with epoll now.
    pub registered: EventSet,
    /// The tap failed for good (e.g. its interface was deleted): stop serving it.
    pub broken: bool,
    /// RX waits for its rate limiter's timer: input is not wanted until then.
    pub rx_throttled: bool,
}

impl Default for TapWatch {
    fn default() -> Self {
        TapWatch {
            rx_wanted: false,
            tx_blocked: false,
            registered: EventSet::empty(),
            broken: false,
            rx_throttled: false,
        }
    }
}

impl TapWatch {
    /// The events the event loop should watch the tap for.
    pub fn wanted(&self) -> EventSet {
        let mut set = EventSet::empty();
        if self.broken {
            return set;
        }
        if self.rx_wanted && !self.rx_throttled {
            set |= EventSet::IN;
        }
        if self.tx_blocked {
            set |= EventSet::OUT;
        }
        set
    }
}

/// The virtio-net device.
#[derive(Debug)]
pub struct Net {
    pub(super) state: DeviceState,
    pub(super) tap: Tap,
    config: [u8; CONFIG_LEN],
    pub(super) mtu: u16,
    /// Written by `activate` (vCPU thread); the event loop then sets up the tap and starts.
    pub(super) activate_evt: EventFd,
    /// The event loop has finished activation; until then neither queue is served.
    pub(super) started: bool,
    pub(super) watch: TapWatch,
    /// What the driver accepted; set when the device starts.
    pub(super) neg: Negotiated,
    /// RX chains taken from the ring, oldest first, waiting for frames: the device takes
    /// every chain the guest posts, so the ring's avail event (event indices) always points
    /// past the last one, and a frame needing several mergeable buffers can wait for them.
    pub(super) rx_pending: VecDeque<RxChain>,
    /// Host-to-guest and guest-to-host limits (unlimited unless configured).
    pub(super) rx_limit: RateLimiter,
    pub(super) tx_limit: RateLimiter,
    pub(super) metrics: Arc<NetMetrics>,
}

impl Net {
    /// Opens the configured tap (build time, main thread) and makes the device.
    pub fn from_config(cfg: &NetConfig) -> Result<Self, NetError> {
        let mac = cfg
            .mac_bytes()
            .map_err(|e| NetError::Config(e.to_string()))?;
        let tap = match (cfg.fd, &cfg.tap) {
            (Some(fd), None) => Tap::from_fd(fd)?,
            (None, Some(name)) => Tap::open_named(name)?,
            _ => return Err(NetError::Config("give exactly one of fd and tap".into())),
        };
        let mut net = Self::new(tap, mac, cfg.mtu())?;
        net.set_limits(cfg.rx, cfg.tx);
        Ok(net)
    }

    /// Replaces both directions' limits (build time, or the API at runtime).
    pub fn set_limits(&mut self, rx: LimitConfig, tx: LimitConfig) {
        let now = rate_limiter::now();
        self.rx_limit.set(rx, now);
        self.tx_limit.set(tx, now);
    }

    pub fn new(tap: Tap, mac: [u8; 6], mtu: u16) -> Result<Self, NetError> {
        let mut config = [0u8; CONFIG_LEN];
        config[0..6].copy_from_slice(&mac);
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        config[10..12].copy_from_slice(&mtu.to_le_bytes());
        let metrics = Arc::new(NetMetrics {
            tap: tap.name().to_owned(),
            mac: mac.map(|b| format!("{b:02x}")).join(":"),
            mtu,
            ..NetMetrics::default()
        });
        Ok(Net {
            state: DeviceState::new(2, QUEUE_SIZE, offload::OFFERED)?,
            tap,
            config,
            mtu,
            activate_evt: EventFd::new(EFD_NONBLOCK)?,
            started: false,
            watch: TapWatch::default(),
            neg: Negotiated::default(),
            rx_pending: VecDeque::new(),
            rx_limit: RateLimiter::new(LimitConfig::default())?,
            tx_limit: RateLimiter::new(LimitConfig::default())?,
            metrics,
        })
    }

    /// Event-loop half of activation: tell the tap which offloads the guest accepted (a tap
    /// handed over may carry an earlier user's settings), switch the queues to event indices
    /// if accepted, then serve both queues.
    pub(super) fn start(&mut self) {
        if self.started || self.state.active.is_none() {
            return;
        }
        self.neg = Negotiated::from_acked(self.state.acked_features);
        if let Err(e) = self.tap.set_offload(self.neg.tap_offload()) {
            self.fail(&format!("cannot set offloads: {e}"));
            return;
        }
        for q in &mut self.state.queues {
            q.set_event_idx(self.neg.event_idx);
        }
        self.started = true;
        self.watch.rx_wanted = true;
    }

    /// RX chains taken from the ring and not yet used (the fuzz targets' check that every
    /// chain the device took is either used or waiting here).
    #[cfg(fuzzing)]
    pub fn rx_pending_len(&self) -> usize {
        self.rx_pending.len()
    }

    /// Whether the device stopped serving its tap ([`Net::fail`]).
    #[cfg(fuzzing)]
    pub fn broken(&self) -> bool {
        self.watch.broken
    }

    /// Stops serving the tap after an error that will not go away; the VM goes on without
    /// this NIC (the guest sees a link that carries nothing).
    pub(super) fn fail(&mut self, why: &str) {
        // Once per device: it stays broken (a guest reset does not revive it).
        if !self.watch.broken {
            crate::guest_log::line(format_args!(
                "virtio-net on tap {}: {why}; the device stops",
                self.tap.name()
            ));
        }
        self.watch.broken = true;
        self.metrics.tap_errors.inc();
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }
    fn state(&self) -> &DeviceState {
        &self.state
    }
    fn state_mut(&mut self) -> &mut DeviceState {
        &mut self.state
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
    /// Only legacy drivers write the MAC here (spec 5.1.4.2: a 1.x driver must not); the
    /// guest's MAC is the pod's, so writes are counted and ignored.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        self.metrics.config_writes_ignored.inc();
    }
    fn metrics(&self) -> DeviceMetrics {
        DeviceMetrics::Net(self.metrics.clone())
    }
    fn set_rate_limits(&mut self, limits: &RateLimits) -> Result<(), String> {
        let RateLimits::Net { rx, tx } = *limits else {
            return Err("a NIC's limits are rx and tx".into());
        };
        rx.validate("rx")?;
        tx.validate("tx")?;
        self.set_limits(rx, tx);
        Ok(())
    }
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        irq: Arc<IrqTrigger>,
    ) -> Result<(), ActivateError> {
        self.state.activate(mem, irq)?;
        self.activate_evt
            .write(1)
            .map_err(|e| ActivateError::Backend(e.to_string()))
    }
}
