//! Address buses (port I/O and MMIO) a vCPU dispatches its exits to. Built before the vCPUs
//! start and immutable afterwards, so vCPU threads share it without a lock on the map.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device reachable on a bus; `offset` is relative to the device's base.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} overlaps another device or wraps")]
    Overlap { base: u64, len: u64 },
}

struct Entry {
    len: u64,
    dev: Arc<Mutex<dyn BusDevice>>,
}

/// A map from address ranges to devices.
#[derive(Default)]
pub struct Bus {
    devices: BTreeMap<u64, Entry>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.devices.iter().map(|(b, e)| (*b, e.len)))
            .finish()
    }
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `dev` at `[base, base + len)`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        dev: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::Overlap { base, len })?;
        let clash_before = self
            .devices
            .range(..end)
            .next_back()
            .is_some_and(|(b, e)| b + e.len > base);
        if clash_before {
            return Err(BusError::Overlap { base, len });
        }
        self.devices.insert(base, Entry { len, dev });
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, &Entry)> {
        let (base, e) = self.devices.range(..=addr).next_back()?;
        let off = addr - base;
        (off.checked_add(size as u64)? <= e.len).then_some((off, e))
    }

    /// Reads from the device at `addr`; false when nothing is mapped there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((off, e)) => {
                lock(&e.dev).read(off, data);
                true
            }
            None => false,
        }
    }

    /// Writes to the device at `addr`; false when nothing is mapped there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((off, e)) => {
                lock(&e.dev).write(off, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device; a device whose holder panicked is still served (its state is plain data).
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(Vec<u64>);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(u8::try_from(offset).unwrap_or(0xff));
        }
        fn write(&mut self, offset: u64, _data: &[u8]) {
            self.0.push(offset);
        }
    }

    #[test]
    fn dispatch_and_overlap() {
        let mut bus = Bus::new();
        let d = Arc::new(Mutex::new(Echo(vec![])));
        bus.insert(0x3f8, 8, d.clone()).unwrap();
        assert!(bus.insert(0x3f0, 9, d.clone()).is_err());
        assert!(bus.insert(0x3ff, 1, d.clone()).is_err());
        assert!(bus.insert(u64::MAX, 2, d.clone()).is_err());
        bus.insert(0x3f0, 8, d.clone()).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b[0], 2);
        assert!(bus.write(0x3f1, &[1]));
        assert!(!bus.write(0x400, &[1]));
        assert!(!bus.read(0x3ff, &mut [0u8; 2]), "access straddling the end");
        assert_eq!(lock(&d).0, vec![1]);
    }
}
