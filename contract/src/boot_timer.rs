//! The boot timer: one byte written by the guest to an I/O port, which hull-vmm records as the
//! moment the guest reached a milestone. hull-agent writes [`INIT_STARTED`] first thing as PID 1
//! and [`AGENT_READY`] once it serves ttrpc; hull-vmm keeps the time from its exec to the first
//! write of each (boot metrics `guest_init_us`, `guest_boot_timer_us`), and its `--boot-timer`
//! logs the second. Together with the first `KVM_RUN` (the kernel's entry: hull boots PVH or a
//! bzImage directly, no firmware) they split a boot into kernel and agent parts.

/// The I/O port the guest writes to (the one Firecracker uses, so guest tooling agrees).
pub const PORT: u16 = 0x3f0;

/// The value hull-agent writes when it serves its ttrpc services.
pub const AGENT_READY: u8 = 123;

/// The value hull-agent writes when the kernel has started it as /init, before anything else.
pub const INIT_STARTED: u8 = 1;
