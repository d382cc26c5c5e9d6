//! Legacy PC devices on the port I/O bus: COM1 (8250), the i8042 (reset line only matters)
//! and the boot-timer pseudo-device the agent writes once when it is ready.

pub mod boot_timer;
pub mod i8042;
pub mod serial;

pub use boot_timer::BootTimer;
pub use i8042::I8042;
pub use serial::SerialConsole;

/// COM1.
pub const SERIAL_PORT: u64 = 0x3f8;
pub const SERIAL_LEN: u64 = 8;
/// The i8042 data (0x60) and command/status (0x64) ports.
pub const I8042_PORT: u64 = 0x60;
pub const I8042_LEN: u64 = 5;
/// Boot timer: a 1-byte write of `hull_contract::boot_timer::AGENT_READY` means "guest agent
/// ready".
pub const BOOT_TIMER_PORT: u64 = hull_contract::boot_timer::PORT as u64;
pub const BOOT_TIMER_LEN: u64 = 1;
