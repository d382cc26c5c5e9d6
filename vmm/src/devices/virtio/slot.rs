//! A virtio-mmio window that holds a device only part of the time: a disk attached to a
//! running VM (DESIGN §2 vmm/: hot-plug). Empty, it reads as a virtio-mmio device with ID 0,
//! which Linux's driver takes for a placeholder and leaves unbound; once a device is in it,
//! the guest's agent binds the window again (`Guest.AttachDisk`) and the driver finds it. The
//! window, its IRQ and its queue's notify eventfd are fixed at boot (the kernel command line
//! names the window); only the device behind them changes.

use super::mmio::{MmioTransport, MAGIC, VENDOR_ID, VERSION};
use crate::device_manager::bus::BusDevice;

/// The MMIO window of a hot-plug slot.
#[derive(Debug, Default)]
pub(crate) struct HotSlot {
    transport: Option<MmioTransport>,
}

impl HotSlot {
    /// Puts a device (its transport) in the slot, replacing what was there.
    pub(crate) fn fill(&mut self, t: MmioTransport) {
        self.transport = Some(t);
    }

    /// Empties the slot: the guest reads a placeholder again.
    pub(crate) fn clear(&mut self) {
        self.transport = None;
    }
}

impl BusDevice for HotSlot {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let Some(t) = &mut self.transport {
            return t.read(offset, data);
        }
        let v = match offset {
            0x000 => MAGIC,
            0x004 => VERSION,
            0x00c => VENDOR_ID,
            // Device ID 0 and everything else: nothing here.
            _ => 0,
        };
        if data.len() == 4 {
            data.copy_from_slice(&v.to_le_bytes());
        } else {
            data.fill(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(t) = &mut self.transport {
            t.write(offset, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::*;
    use crate::devices::rng::Rng;
    use crate::devices::virtio::IrqTrigger;
    use crate::vstate::memory;

    fn reg(s: &mut HotSlot, off: u64) -> u32 {
        let mut b = [0u8; 4];
        s.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn an_empty_slot_is_a_placeholder_until_filled() {
        let mut s = HotSlot::default();
        assert_eq!(
            (reg(&mut s, 0), reg(&mut s, 4), reg(&mut s, 8)),
            (MAGIC, VERSION, 0)
        );
        s.write(0x70, &7u32.to_le_bytes()); // a status write to nothing is ignored
        assert_eq!(reg(&mut s, 0x70), 0);
        let dev = Arc::new(Mutex::new(Rng::new().unwrap()));
        let irq = Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        s.fill(MmioTransport::new(
            dev,
            memory::create(1 << 20).unwrap(),
            irq,
        ));
        assert_eq!(reg(&mut s, 8), crate::devices::virtio::TYPE_RNG);
        s.clear();
        assert_eq!(reg(&mut s, 8), 0);
    }
}
