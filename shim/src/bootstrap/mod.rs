//! The shim v2 process protocol as containerd 1.6–2.2 speak it (DESIGN §1 Shim bootstrap):
//! `start` forks the server and prints its bare address, the server serves the task API as
//! both `containerd.task.v2.Task` and `containerd.task.v3.Task`, `delete` cleans up after a
//! dead shim. Built from the containerd-shim crate's public pieces, not its `run()`, which
//! writes a JSON reply 1.6 cannot read and registers only v3.

use std::path::PathBuf;

mod delete;
mod pod_log;
mod serve;
mod start;

pub(crate) use pod_log::name_pod;

/// Env var carrying the runtime options' `ConfigPath` from `start` to the server it forks,
/// because containerd hands the options to `start` only.
pub(crate) const CONFIG_OPTION_ENV: &str = "HULL_SHIM_CONFIG_OPTION";
/// Env var carrying the pod's sandbox id to the server (its `-id` is the first container's).
pub(crate) const SANDBOX_ID_ENV: &str = "HULL_SHIM_SANDBOX_ID";
/// Bundle file naming the pod a container belongs to, for `delete`.
pub(crate) const SANDBOX_FILE: &str = "hull-sandbox";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("arguments: {0}")]
    Args(containerd_shim::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Shim {
        context: String,
        source: containerd_shim::Error,
    },
    #[error(transparent)]
    Options(#[from] crate::options::OptionsError),
    #[error(transparent)]
    Events(#[from] crate::events::EventsError),
    #[error("container of sandbox {sid}: its pod shim at {address} does not answer")]
    NoPodShim { sid: String, address: String },
    #[error("unknown action {0:?} (expected start, delete, or none to serve)")]
    Action(String),
    #[error("{0} is not set")]
    Env(&'static str),
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BootstrapError {
    let context = context.into();
    move |source| BootstrapError::Io { context, source }
}

pub(crate) fn shim_err(
    context: impl Into<String>,
) -> impl FnOnce(containerd_shim::Error) -> BootstrapError {
    let context = context.into();
    move |source| BootstrapError::Shim { context, source }
}

/// Runs the action containerd asked for.
pub async fn run(args: &[std::ffi::OsString]) -> Result<(), BootstrapError> {
    let flags = containerd_shim::parse(args).map_err(BootstrapError::Args)?;
    if flags.version {
        println!(
            "containerd-shim-hull-v2 {} (task API v2 and v3)",
            env!("CARGO_PKG_VERSION")
        );
        return Ok(());
    }
    match flags.action.as_str() {
        "start" => start::run(flags).await,
        "delete" => delete::run(flags).await,
        "" => serve::run(flags).await,
        other => Err(BootstrapError::Action(other.to_owned())),
    }
}

/// The bundle: `-bundle` when given (delete), else the working directory containerd set.
pub(crate) fn bundle_dir(flags: &containerd_shim::Flags) -> Result<PathBuf, BootstrapError> {
    if flags.bundle.is_empty() {
        std::env::current_dir().map_err(io_err("working directory"))
    } else {
        Ok(PathBuf::from(&flags.bundle))
    }
}
