//! The virtio-fs device as the guest sees it (virtio spec 5.11): type 26, a config space with
//! the mount tag, hiprio + one request queue. The queues themselves are served by the back end;
//! activation only checks where the driver put them and asks the event loop to hand them over.

use std::path::Path;
use std::sync::Arc;

use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::frontend::{Backend, FsError, VringPlan, NUM_QUEUES};
use super::metrics::FsMetrics;
use crate::devices::virtio::{
    read_config_bytes, ActivateError, DeviceMetrics, DeviceState, IrqTrigger, VirtioDevice,
    TYPE_FS, VIRTIO_F_VERSION_1,
};
use crate::exit::VmExit;
use crate::vstate::memory::GuestMemoryMmap;

/// Requests in flight per queue; plenty for one guest (virtiofsd allows up to 32768).
pub const QUEUE_SIZE: u16 = 1024;
pub const TAG_LEN: usize = 36;
/// `tag[36]` + `num_request_queues: le32`.
const CONFIG_LEN: usize = TAG_LEN + 4;
/// Ring features the back end may offer the guest. The rings are the back end's business
/// (hull-vmm never reads them), so these pass through as QEMU's vhost-user-fs does; event
/// index in particular saves a guest exit per request on both sides.
const RING_FEATURES: u64 = (1 << VIRTIO_RING_F_INDIRECT_DESC) | (1 << VIRTIO_RING_F_EVENT_IDX);

/// A virtio-fs device whose file server is a vhost-user back end.
#[derive(Debug)]
pub struct VhostUserFs {
    pub(super) state: DeviceState,
    config: [u8; CONFIG_LEN],
    pub(super) backend: Backend,
    /// Written on the vCPU thread that activated the device; the event loop then talks to
    /// the back end, so only the VMM thread ever uses the socket.
    pub(super) activate_evt: EventFd,
    /// Vrings checked at activation, waiting for the event loop.
    pub(super) pending: Option<Vec<VringPlan>>,
    pub(super) exit: Arc<VmExit>,
    pub(super) metrics: Arc<FsMetrics>,
    /// The back end is gone; stop watching its socket.
    pub(super) dead: bool,
}

impl VhostUserFs {
    /// Connects to the back end at `socket` and negotiates with it (build time).
    pub fn connect(socket: &Path, tag: &str, exit: Arc<VmExit>) -> Result<Self, FsError> {
        Self::new(Backend::connect(socket)?, tag, exit)
    }

    pub fn new(backend: Backend, tag: &str, exit: Arc<VmExit>) -> Result<Self, FsError> {
        if tag.is_empty() || tag.len() > TAG_LEN {
            return Err(FsError::BadTag(tag.to_owned()));
        }
        let mut config = [0u8; CONFIG_LEN];
        config[..tag.len()].copy_from_slice(tag.as_bytes());
        config[TAG_LEN..].copy_from_slice(&1u32.to_le_bytes());
        let avail = VIRTIO_F_VERSION_1 | (backend.features() & RING_FEATURES);
        let metrics = Arc::new(FsMetrics {
            socket: backend.path().to_owned(),
            backend_features: format!("{:#x}", backend.features()),
            protocol_features: format!("{:#x}", backend.protocol().map_or(0, |p| p.bits())),
            ..FsMetrics::default()
        });
        Ok(VhostUserFs {
            state: DeviceState::new(NUM_QUEUES, QUEUE_SIZE, avail)?,
            config,
            backend,
            activate_evt: EventFd::new(EFD_NONBLOCK)?,
            pending: None,
            exit,
            metrics,
            dead: false,
        })
    }

    /// Starts the back end on the vrings activation checked (event loop). A back end that
    /// refuses leaves the guest's filesystem dead, so the VM ends with the reason.
    pub(super) fn start_backend(&mut self) {
        let (Some(plan), Some(active)) = (self.pending.take(), &self.state.active) else {
            return;
        };
        let acked = self.state.acked_features;
        match self.backend.start(
            acked,
            &active.mem,
            &plan,
            active.irq.eventfd(),
            &self.state.queue_evts,
        ) {
            Ok(()) => self.metrics.vrings_started.add(plan.len() as u64),
            Err(e) => {
                self.metrics.backend_errors.inc();
                self.exit
                    .signal(crate::exit::ExitReason::Error(format!("virtio-fs: {e}")));
            }
        }
    }
}

/// Checks each queue the driver made ready and finds its rings' host addresses. Each ring must
/// lie inside one guest memory region: the back end maps region by region.
pub(super) fn plan_vrings(
    queues: &[Queue],
    mem: &GuestMemoryMmap,
) -> Result<Vec<VringPlan>, ActivateError> {
    let mut plan = Vec::with_capacity(queues.len());
    for (i, q) in queues.iter().enumerate() {
        if !q.ready() {
            continue;
        }
        if !q.is_valid(mem) {
            return Err(ActivateError::BadQueue(i));
        }
        let n = u64::from(q.size());
        // Split ring sizes (virtio spec 2.7), event words included.
        let host = |addr: u64, len: u64| {
            let len = usize::try_from(len).ok()?;
            mem.get_slice(GuestAddress(addr), len).ok()?;
            mem.get_host_address(GuestAddress(addr))
                .ok()
                .map(|p| p as u64)
        };
        let (Some(desc), Some(avail), Some(used)) = (
            host(q.desc_table(), 16 * n),
            host(q.avail_ring(), 6 + 2 * n),
            host(q.used_ring(), 6 + 8 * n),
        ) else {
            return Err(ActivateError::BadQueue(i));
        };
        plan.push(VringPlan {
            index: i,
            size: q.size(),
            max_size: q.max_size(),
            desc,
            avail,
            used,
        });
    }
    Ok(plan)
}

impl VirtioDevice for VhostUserFs {
    fn device_type(&self) -> u32 {
        TYPE_FS
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
    // The config space is read-only for the driver (spec 5.11.4): writes are ignored.
    fn metrics(&self) -> DeviceMetrics {
        DeviceMetrics::Fs(self.metrics.clone())
    }
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        irq: Arc<IrqTrigger>,
    ) -> Result<(), ActivateError> {
        let plan = plan_vrings(&self.state.queues, &mem)?;
        self.state.activate(mem, irq)?;
        self.pending = Some(plan);
        self.activate_evt
            .write(1)
            .map_err(|e| ActivateError::Backend(e.to_string()))
    }
    /// The back end raises the irqfd itself and cannot set the status register's bits.
    fn interrupt_status_always_vring(&self) -> bool {
        true
    }
}
