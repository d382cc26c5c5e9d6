//! hull-shim: `containerd-shim-hull-v2`, the only crate that talks to containerd
//! (DESIGN §2 shim/). The library exists for the binary (`bootstrap::run`) and its unit tests;
//! everything else is crate-private.

mod address;
mod backend;
pub mod bootstrap;
mod child;
mod config;
mod config_path;
mod errors;
mod events;
mod memvol;
mod mount;
mod net;
mod options;
mod pod;
mod share;
mod sizing;
mod spec;
mod stats;
mod stdio;
mod task;
mod timestamp;
mod typeurl;
