//! hull-shim: `containerd-shim-hull-v2`, the only crate that talks to containerd
//! (DESIGN §2 shim/).

pub mod backend;
pub mod bootstrap;
pub mod config;
pub mod config_path;
pub mod errors;
pub mod events;
pub mod memvol;
pub mod net;
pub mod options;
pub mod pod;
pub mod share;
pub mod sizing;
pub mod spec;
pub mod stats;
pub mod stdio;
pub mod task;
pub mod typeurl;
