//! Buses and the MMIO/IRQ allocator: where each device lives and which interrupt it raises.

pub mod bus;

use crate::arch;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    #[error("out of legacy IRQs for virtio devices")]
    NoIrq,
}

/// Hands out one 4 KiB MMIO window and one IRQ per virtio device.
#[derive(Debug)]
pub struct MmioAllocator {
    next_addr: u64,
    next_irq: u32,
}

impl Default for MmioAllocator {
    fn default() -> Self {
        MmioAllocator {
            next_addr: arch::MMIO_DEVICES_START,
            next_irq: arch::IRQ_BASE,
        }
    }
}

/// Where one virtio-mmio device sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioSlot {
    pub addr: u64,
    pub len: u64,
    pub irq: u32,
}

impl MmioAllocator {
    pub fn allocate(&mut self) -> Result<MmioSlot, AllocError> {
        if self.next_irq > arch::IRQ_MAX {
            return Err(AllocError::NoIrq);
        }
        let slot = MmioSlot {
            addr: self.next_addr,
            len: arch::MMIO_DEVICE_SIZE,
            irq: self.next_irq,
        };
        self.next_addr += arch::MMIO_DEVICE_SIZE;
        self.next_irq += 1;
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_until_irqs_run_out() {
        let mut a = MmioAllocator::default();
        let s = a.allocate().unwrap();
        assert_eq!((s.addr, s.irq), (arch::MMIO_DEVICES_START, arch::IRQ_BASE));
        let n = arch::IRQ_MAX - arch::IRQ_BASE;
        for _ in 0..n {
            a.allocate().unwrap();
        }
        assert_eq!(a.allocate(), Err(AllocError::NoIrq));
    }
}
