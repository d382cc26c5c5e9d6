//! hull-agent: the guest's PID 1 and the ttrpc service the shim talks to.
//!
//! In the guest the agent is `/init`: it performs the init duties ([`init`]), reaps every child
//! ([`reaper`]) and serves the agent API on vsock port 1024 ([`server`]). In host mode
//! (`--listen unix:PATH`) the same service runs on a Unix socket so the container engine can be
//! tested without a VM. This crate is never linked into host binaries.

pub mod config;
pub mod debug_shell;
pub mod engine;
pub(crate) mod files;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod guest;
pub(crate) mod hotplug;
pub mod init;
pub mod kmsg;
pub(crate) mod listener;
pub mod logbuf;
pub(crate) mod mountinfo;
pub mod portfwd;
pub mod reaper;
pub mod rpc_stats;
pub mod sandbox;
pub mod server;
pub mod service;
pub mod storage;
pub mod switch_root;
pub mod sys;

/// The agent's version, reported over the health service.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
