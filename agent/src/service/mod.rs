//! The agent's ttrpc services, one module per proto service. Each handler only validates,
//! traces and maps errors; the work happens in `do_*`/engine functions testable without ttrpc.

pub(crate) mod containers;
pub(crate) mod events;
pub(crate) mod files;
pub(crate) mod guest;
pub(crate) mod health;
pub(crate) mod network;
pub(crate) mod processes;
pub(crate) mod sandbox;

use std::path::PathBuf;
use std::sync::Arc;

use crate::engine::{error::chain, Engine, EngineError, ErrorCode};
use crate::logbuf::LogBuffer;
use crate::rpc_stats::RpcStats;
use crate::sandbox::Sandbox;

/// What every service handler reaches: the engine, the sandbox, the log, the copy root.
#[derive(Debug, Clone)]
pub struct AgentState {
    pub engine: Engine,
    pub sandbox: Arc<Sandbox>,
    pub logs: LogBuffer,
    /// CopyFile writes only below this directory.
    pub copy_root: PathBuf,
    /// Every RPC's latency, by method (`Guest.GuestStats`).
    pub rpc: RpcStats,
}

/// An engine error as a ttrpc status, code kept, cause chain in the message.
pub(crate) fn to_ttrpc(e: EngineError) -> ttrpc::Error {
    use ttrpc::Code;
    let code = match e.code() {
        ErrorCode::InvalidArgument => Code::INVALID_ARGUMENT,
        ErrorCode::NotFound => Code::NOT_FOUND,
        ErrorCode::AlreadyExists => Code::ALREADY_EXISTS,
        ErrorCode::FailedPrecondition => Code::FAILED_PRECONDITION,
        ErrorCode::DeadlineExceeded => Code::DEADLINE_EXCEEDED,
        ErrorCode::Unimplemented => Code::UNIMPLEMENTED,
        ErrorCode::Internal => Code::INTERNAL,
    };
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, chain(&e)))
}

/// Runs a handler body, logs failures with the method name, converts the error.
pub(crate) async fn handle<T>(
    method: &'static str,
    fut: impl std::future::Future<Output = crate::engine::Result<T>>,
) -> ttrpc::Result<T> {
    match fut.await {
        Ok(v) => Ok(v),
        Err(e) => {
            tracing::warn!("{method}: {}", chain(&e));
            Err(to_ttrpc(e))
        }
    }
}
