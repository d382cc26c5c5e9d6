//! The boot timer: one byte written by the guest to an I/O port, which hull-vmm records as the
//! moment the guest reached a milestone. hull-agent writes [`AGENT_READY`] once it serves
//! ttrpc; hull-vmm's `--boot-timer` logs the time from exec to that write.

/// The I/O port the guest writes to (the one Firecracker uses, so guest tooling agrees).
pub const PORT: u16 = 0x3f0;

/// The value hull-agent writes when it serves its ttrpc services.
pub const AGENT_READY: u8 = 123;
