//! Why the VM stopped, reported once by whoever saw it (a vCPU, the i8042, a signal, the API)
//! and read by the event loop, which then tears the VM down.

use std::sync::Mutex;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest reset itself (i8042 `reboot=k`, triple fault `reboot=t`).
    GuestReset,
    /// The guest powered off (KVM system event) or halted with no irqchip.
    GuestPoweroff,
    /// SIGTERM/SIGINT or an API shutdown.
    Stopped,
    /// The VM could not go on.
    Error(String),
}

impl ExitReason {
    /// Process exit status: 0 for an orderly end, 1 for an error.
    pub fn status(&self) -> i32 {
        match self {
            ExitReason::Error(_) => 1,
            _ => 0,
        }
    }
}

/// The first exit reason wins; the eventfd wakes the event loop.
#[derive(Debug)]
pub struct VmExit {
    reason: Mutex<Option<ExitReason>>,
    evt: EventFd,
}

impl VmExit {
    pub fn new() -> std::io::Result<Self> {
        Ok(VmExit {
            reason: Mutex::new(None),
            evt: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    pub fn signal(&self, reason: ExitReason) {
        let mut r = crate::device_manager::bus::lock(&self.reason);
        if r.is_none() {
            *r = Some(reason);
        }
        drop(r);
        let _ = self.evt.write(1);
    }

    pub fn reason(&self) -> Option<ExitReason> {
        crate::device_manager::bus::lock(&self.reason).clone()
    }

    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}
