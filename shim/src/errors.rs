//! `ShimError`: what a task RPC can fail with, and the ttrpc code containerd expects for it
//! (NOT_FOUND for unknown ids, FAILED_PRECONDITION for a wrong state, ...).

use ttrpc::Code;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0} is not implemented by hull")]
    Unimplemented(&'static str),
    #[error("pod backend: {0}")]
    Backend(#[from] crate::backend::BackendError),
    #[error("agent: {context}: {source}")]
    Agent {
        context: String,
        source: ttrpc::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: protobuf::Error,
    },
    #[error("{context}: {source}")]
    Shim {
        context: String,
        source: containerd_shim::Error,
    },
}

impl ShimError {
    /// The agent's status code survives (DESIGN §2 agent/): an unknown process stays NOT_FOUND.
    pub fn code(&self) -> Code {
        match self {
            ShimError::NotFound(_) => Code::NOT_FOUND,
            ShimError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            ShimError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            ShimError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            ShimError::Unimplemented(_) => Code::UNIMPLEMENTED,
            ShimError::Agent {
                source: ttrpc::Error::RpcStatus(s),
                ..
            } => s.code(),
            // Not a failure of the node: the pod asks for what hull cannot give.
            ShimError::Backend(crate::backend::BackendError::Network(
                crate::net::NetError::HostNetwork,
            )) => Code::INVALID_ARGUMENT,
            ShimError::Backend(_) | ShimError::Agent { .. } => Code::UNAVAILABLE,
            ShimError::Io { .. } | ShimError::Encode { .. } | ShimError::Shim { .. } => {
                Code::INTERNAL
            }
        }
    }

    pub fn agent(context: impl Into<String>) -> impl FnOnce(ttrpc::Error) -> ShimError {
        let context = context.into();
        move |source| ShimError::Agent { context, source }
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> Self {
        let msg = match &e {
            // The agent's message already carries its cause chain; do not wrap the status.
            ShimError::Agent {
                context,
                source: ttrpc::Error::RpcStatus(s),
            } => format!("{context}: {}", s.message),
            other => other.to_string(),
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), msg))
    }
}
