//! virtio-mmio transport (version 2). Presents one device's registers on the MMIO bus and
//! activates the device with guest memory and its interrupt when the driver sets DRIVER_OK.

use std::sync::{Arc, Mutex};

use virtio_queue::QueueT;

use super::{IrqTrigger, VirtioDevice, INT_VRING, VIRTIO_F_VERSION_1};
use crate::device_manager::bus::{lock, BusDevice};
use crate::metrics::METRICS;
use crate::vstate::memory::GuestMemoryMmap;

pub(crate) const MAGIC: u32 = 0x7472_6976; // "virt"
pub(crate) const VERSION: u32 = 2;
pub(crate) const VENDOR_ID: u32 = 0x4c4c_5548; // "HULL"
const CONFIG_SPACE: u64 = 0x100;

/// Device status bits. The device never looks at ACKNOWLEDGE; only a test driver sets it.
#[cfg(test)]
pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_NEEDS_RESET: u32 = 0x40;
pub const STATUS_FAILED: u32 = 0x80;

/// The low 32 bits of `v`.
pub(crate) fn lo32(v: u64) -> u32 {
    u32::try_from(v & 0xffff_ffff).unwrap_or(0)
}

/// One device behind a virtio-mmio window.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemoryMmap,
    irq: Arc<IrqTrigger>,
    features_select: u32,
    acked_features_select: u32,
    queue_select: u32,
    status: u32,
    /// A failed activation was logged: a driver can reset and retry without end, so later
    /// failures are only counted (`guest.activate_failures`).
    activate_failure_logged: bool,
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("status", &self.status)
            .finish()
    }
}

impl MmioTransport {
    pub fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: GuestMemoryMmap,
        irq: Arc<IrqTrigger>,
    ) -> Self {
        MmioTransport {
            device,
            mem,
            irq,
            features_select: 0,
            acked_features_select: 0,
            queue_select: 0,
            status: 0,
            activate_failure_logged: false,
        }
    }

    #[cfg(test)]
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Queue setup is allowed between FEATURES_OK and DRIVER_OK only.
    fn queue_setup_allowed(&self) -> bool {
        self.status & (STATUS_FEATURES_OK | STATUS_DRIVER_OK | STATUS_FAILED) == STATUS_FEATURES_OK
    }

    fn with_queue(&mut self, f: impl FnOnce(&mut virtio_queue::Queue)) {
        if !self.queue_setup_allowed() {
            return;
        }
        let idx = self.queue_select as usize;
        let mut dev = lock(&self.device);
        if let Some(q) = dev.queues_mut().get_mut(idx) {
            f(q);
        }
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let dev = lock(&self.device);
        match offset {
            0x000 => MAGIC,
            0x004 => VERSION,
            0x008 => dev.device_type(),
            0x00c => VENDOR_ID,
            0x010 => {
                let f = dev.avail_features() | VIRTIO_F_VERSION_1;
                match self.features_select {
                    0 => lo32(f),
                    1 => lo32(f >> 32),
                    _ => 0,
                }
            }
            0x034 => dev
                .queues()
                .get(self.queue_select as usize)
                .map_or(0, |q| u32::from(q.max_size())),
            0x044 => dev
                .queues()
                .get(self.queue_select as usize)
                .map_or(0, |q| u32::from(q.ready())),
            0x060 if dev.interrupt_status_always_vring() => self.irq.status() | INT_VRING,
            0x060 => self.irq.status(),
            0x070 => self.status,
            0x0fc => dev.config_generation(),
            _ => 0,
        }
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            // Reset: we do not re-initialise an activated device; tell the driver it needs a
            // fresh VM instead of pretending.
            if lock(&self.device).is_activated() {
                self.status |= STATUS_NEEDS_RESET;
            } else {
                self.status = 0;
                self.irq.ack(u32::MAX);
            }
            return;
        }
        // Status bits only accumulate (spec 2.1.1); a driver clearing one is ignored.
        if v & self.status != self.status {
            return;
        }
        let newly = v & !self.status;
        self.status = v;
        if newly & STATUS_FEATURES_OK != 0 {
            let dev = lock(&self.device);
            // FEATURES_OK stays only if the driver accepted VERSION_1 and nothing unoffered.
            let ok = dev.acked_features() & VIRTIO_F_VERSION_1 != 0
                && dev.acked_features() & !(dev.avail_features() | VIRTIO_F_VERSION_1) == 0;
            if !ok {
                self.status &= !STATUS_FEATURES_OK;
            }
        }
        if newly & STATUS_DRIVER_OK != 0 {
            let mut dev = lock(&self.device);
            if self.status & STATUS_FEATURES_OK == 0 {
                self.status |= STATUS_NEEDS_RESET;
                return;
            }
            if let Err(e) = dev.activate(self.mem.clone(), self.irq.clone()) {
                METRICS.guest.activate_failures.inc();
                crate::guest_log::once(
                    &mut self.activate_failure_logged,
                    format_args!(
                        "virtio device type {} failed to activate: {e} \
                         (further failures are only counted)",
                        dev.device_type()
                    ),
                );
                self.status |= STATUS_NEEDS_RESET;
            }
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        let set_lo = |cur: u64| (cur & !0xffff_ffff) | u64::from(v);
        let set_hi = |cur: u64| (cur & 0xffff_ffff) | (u64::from(v) << 32);
        match offset {
            0x014 => self.features_select = v,
            // Features may be written after DRIVER and before FEATURES_OK only.
            0x020 if self.status & (STATUS_FEATURES_OK | STATUS_DRIVER) == STATUS_DRIVER => {
                let mut dev = lock(&self.device);
                let cur = dev.acked_features();
                let new = match self.acked_features_select {
                    0 => set_lo(cur),
                    1 => set_hi(cur),
                    _ => cur,
                };
                dev.set_acked_features(new);
            }
            0x024 => self.acked_features_select = v,
            0x030 => self.queue_select = v,
            0x038 => self.with_queue(|q| q.set_size(u16::try_from(v).unwrap_or(0))),
            0x044 => self.with_queue(|q| q.set_ready(v == 1)),
            0x050 => {
                let dev = lock(&self.device);
                if let Some(evt) = dev.queue_events().get(v as usize) {
                    let _ = evt.write(1);
                }
            }
            0x064 => self.irq.ack(v),
            0x070 => self.set_status(v),
            0x080 => self.with_queue(|q| q.set_desc_table_address(Some(v), None)),
            0x084 => self.with_queue(|q| q.set_desc_table_address(None, Some(v))),
            0x090 => self.with_queue(|q| q.set_avail_ring_address(Some(v), None)),
            0x094 => self.with_queue(|q| q.set_avail_ring_address(None, Some(v))),
            0x0a0 => self.with_queue(|q| q.set_used_ring_address(Some(v), None)),
            0x0a4 => self.with_queue(|q| q.set_used_ring_address(None, Some(v))),
            _ => {}
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            lock(&self.device).read_config(offset - CONFIG_SPACE, data);
        } else if data.len() == 4 {
            data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
        } else {
            data.fill(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            if self.status & STATUS_DRIVER_OK == 0 || lock(&self.device).is_activated() {
                lock(&self.device).write_config(offset - CONFIG_SPACE, data);
            }
        } else if let Ok(b) = <[u8; 4]>::try_from(data) {
            self.write_reg(offset, u32::from_le_bytes(b));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use vmm_sys_util::eventfd::EventFd;

    use super::*;
    use crate::devices::rng::Rng;
    use crate::vstate::memory;

    fn w(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }
    fn r(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    /// Drives the transport like a Linux driver: features, one queue per `queue_addrs` entry
    /// (desc, avail, used, size), DRIVER_OK.
    pub fn drive_to_ok(t: &mut MmioTransport, queues: &[(u64, u64, u64, u16)]) {
        w(t, 0x70, STATUS_ACKNOWLEDGE);
        w(t, 0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(t, 0x14, 0);
        let lo = r(t, 0x10);
        w(t, 0x14, 1);
        let hi = r(t, 0x10);
        w(t, 0x24, 0);
        w(t, 0x20, lo);
        w(t, 0x24, 1);
        w(t, 0x20, hi);
        let s = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
        w(t, 0x70, s);
        assert_eq!(r(t, 0x70) & STATUS_FEATURES_OK, STATUS_FEATURES_OK);
        for (i, (d, a, u, size)) in queues.iter().enumerate() {
            w(t, 0x30, u32::try_from(i).unwrap());
            w(t, 0x38, u32::from(*size));
            w(t, 0x80, lo32(*d));
            w(t, 0x84, lo32(*d >> 32));
            w(t, 0x90, lo32(*a));
            w(t, 0x94, lo32(*a >> 32));
            w(t, 0xa0, lo32(*u));
            w(t, 0xa4, lo32(*u >> 32));
            w(t, 0x44, 1);
        }
        w(t, 0x70, s | STATUS_DRIVER_OK);
    }

    #[test]
    fn registers_and_activation() {
        let mem = memory::create(16 << 20).unwrap();
        let dev = Arc::new(Mutex::new(Rng::new().unwrap()));
        let irq = Arc::new(IrqTrigger::new(EventFd::new(0).unwrap()));
        let mut t = MmioTransport::new(dev.clone(), mem, irq);
        assert_eq!(r(&mut t, 0), MAGIC);
        assert_eq!(r(&mut t, 4), 2);
        assert_eq!(r(&mut t, 8), super::super::TYPE_RNG);
        assert_eq!(r(&mut t, 0x34), 256);
        // Queue setup before FEATURES_OK is ignored.
        w(&mut t, 0x38, 16);
        assert!(!lock(&dev).is_activated());
        drive_to_ok(&mut t, &[(0x1000, 0x2000, 0x3000, 16)]);
        assert!(lock(&dev).is_activated());
        assert_eq!(r(&mut t, 0x70) & STATUS_NEEDS_RESET, 0);
        // Odd-sized register access reads zero, writes are ignored.
        let mut b = [0xffu8; 2];
        t.read(0, &mut b);
        assert_eq!(b, [0, 0]);
    }

    #[test]
    fn invalid_queue_fails_activation_not_the_vmm() {
        let mem = memory::create(16 << 20).unwrap();
        let dev = Arc::new(Mutex::new(Rng::new().unwrap()));
        let irq = Arc::new(IrqTrigger::new(EventFd::new(0).unwrap()));
        let mut t = MmioTransport::new(dev.clone(), mem, irq);
        // Rings outside guest memory.
        let before = METRICS.guest.activate_failures.get();
        let suppressed = METRICS.guest.log_lines_suppressed.get();
        let lines = crate::guest_log::capture::lines(|| {
            drive_to_ok(&mut t, &[(0xffff_0000_0000, 0x2000, 0x3000, 16)]);
            assert!(!lock(&dev).is_activated());
            assert_ne!(r(&mut t, 0x70) & STATUS_NEEDS_RESET, 0);
            // A driver that resets and retries without end is counted, not logged each time.
            for _ in 0..10_000 {
                w(&mut t, 0x70, 0);
                assert_eq!(r(&mut t, 0x70), 0, "an inactive device resets");
                drive_to_ok(&mut t, &[(0xffff_0000_0000, 0x2000, 0x3000, 16)]);
            }
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("failed to activate"), "{lines:?}");
        // Other tests count into the same process-wide counters: at least ours are there.
        assert!(METRICS.guest.activate_failures.get() >= before + 10_001);
        assert!(METRICS.guest.log_lines_suppressed.get() >= suppressed + 10_000);
    }

    /// A device whose back end raises the irqfd without touching the status bits.
    struct VhostUserLike(crate::devices::virtio::DeviceState);
    impl VirtioDevice for VhostUserLike {
        fn device_type(&self) -> u32 {
            26
        }
        fn state(&self) -> &crate::devices::virtio::DeviceState {
            &self.0
        }
        fn state_mut(&mut self) -> &mut crate::devices::virtio::DeviceState {
            &mut self.0
        }
        fn read_config(&self, _: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn metrics(&self) -> crate::devices::virtio::DeviceMetrics {
            crate::devices::virtio::DeviceMetrics::Rng(Default::default())
        }
        fn interrupt_status_always_vring(&self) -> bool {
            true
        }
    }

    #[test]
    fn interrupt_status_for_vhost_user_devices_always_has_vring() {
        use crate::devices::virtio::{DeviceState, INT_CONFIG};
        let mem = memory::create(16 << 20).unwrap();
        let irq = Arc::new(IrqTrigger::new(EventFd::new(0).unwrap()));
        let dev = Arc::new(Mutex::new(VhostUserLike(
            DeviceState::new(2, 16, 0).unwrap(),
        )));
        let mut t = MmioTransport::new(dev, mem.clone(), irq.clone());
        assert_eq!(r(&mut t, 0x60), INT_VRING);
        // Acking changes nothing: the next interrupt still has to be looked at.
        w(&mut t, 0x64, INT_VRING);
        assert_eq!(r(&mut t, 0x60), INT_VRING);
        irq.trigger(INT_CONFIG);
        assert_eq!(r(&mut t, 0x60), INT_VRING | INT_CONFIG);
        w(&mut t, 0x64, INT_CONFIG);
        assert_eq!(r(&mut t, 0x60), INT_VRING);
        // Other devices report exactly what they raised.
        let rng = Arc::new(Mutex::new(Rng::new().unwrap()));
        let irq = Arc::new(IrqTrigger::new(EventFd::new(0).unwrap()));
        let mut t = MmioTransport::new(rng, mem, irq.clone());
        assert_eq!(r(&mut t, 0x60), 0);
        irq.trigger(INT_CONFIG);
        assert_eq!(r(&mut t, 0x60), INT_CONFIG);
    }

    #[test]
    fn driver_without_version_1_is_refused() {
        let mem = memory::create(16 << 20).unwrap();
        let dev = Arc::new(Mutex::new(Rng::new().unwrap()));
        let irq = Arc::new(IrqTrigger::new(EventFd::new(0).unwrap()));
        let mut t = MmioTransport::new(dev, mem, irq);
        w(&mut t, 0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(
            &mut t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_eq!(r(&mut t, 0x70) & STATUS_FEATURES_OK, 0);
    }
}
