//! Words of the guest kernel command line that hull-agent reads. The kernel hands a
//! `NAME=value` word it does not know itself to /init as an environment variable, so a host
//! (the shim's operator parameters, a bench) can tell the agent something before any RPC.

/// `HULL_KMSG_TO_CONSOLE=1`: once serving, hull-agent copies the kernel's log (/dev/kmsg) to
/// the console, in dmesg's format, then prints [`KMSG_COPIED`]. A `quiet` boot keeps most of
/// its log in the guest's ring buffer; this reads it on the console without a verbose console
/// slowing the boot itself (every console byte is a VM exit).
pub const KMSG_TO_CONSOLE: &str = "HULL_KMSG_TO_CONSOLE";

/// The console line that ends the copy of [`KMSG_TO_CONSOLE`]; what follows it is not the
/// kernel's log.
pub const KMSG_COPIED: &str = "hull-agent: kernel log copied";

/// `HULL_DEBUG_SHELL=1`: hull-agent serves `hullctl debug` (a root process in the guest,
/// outside every container) on [`crate::vsock::DEBUG_PORT`]. The shim adds it only when the
/// node's hull.toml sets `[vm] debug_shell = true`.
pub const DEBUG_SHELL: &str = "HULL_DEBUG_SHELL";
