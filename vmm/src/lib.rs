//! hull-vmm: one KVM microVM per process (DESIGN §2 vmm/). The only crate that uses
//! `kvm-ioctls`.

pub mod api;
pub(crate) mod arch;
pub mod builder;
pub mod cli;
pub mod config;
pub(crate) mod device_manager;
pub mod devices;
pub mod exit;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod guest_log;
pub mod hostcheck;
pub mod hotplug;
pub mod metrics;
pub(crate) mod pstore;
pub mod seccomp;
pub mod vmm;
pub mod vstate;

/// The virtio-net device model's benchmark driver (`bench/net/model`).
#[cfg(feature = "bench")]
pub use devices::net::bench as net_bench;
