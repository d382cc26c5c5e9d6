//! hull-shim: `containerd-shim-hull-v2`, the only crate that talks to containerd
//! (DESIGN §2 shim/).

pub mod config;
pub mod config_path;
pub mod sizing;
