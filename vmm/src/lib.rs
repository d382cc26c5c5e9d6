//! hull-vmm: one KVM microVM per process (DESIGN §2 vmm/). The only crate that uses
//! `kvm-ioctls`.

pub mod api;
pub mod arch;
pub mod builder;
pub mod config;
pub mod device_manager;
pub mod devices;
pub mod exit;
pub mod hostcheck;
pub mod metrics;
pub mod seccomp;
pub mod vmm;
pub mod vstate;
