//! hull-shim: `containerd-shim-hull-v2`, the only crate that talks to containerd
//! (DESIGN §2 shim/). The library exists for the binary (`bootstrap::run`) and its unit tests;
//! everything else is crate-private.

mod address;
mod annotations;
mod backend;
pub mod bootstrap;
mod bounds;
mod child;
mod config;
mod config_path;
mod errors;
mod events;
#[cfg(test)]
mod fake_peers;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod limits;
mod memvol;
mod mount;
mod net;
mod options;
mod pod;
mod share;
mod shim_cgroup;
mod sizing;
mod spec;
mod stats;
mod stdio;
mod task;
mod timestamp;
mod typeurl;
