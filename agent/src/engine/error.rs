//! The engine's error type. Each variant carries the ttrpc code it keeps across the wire; the
//! message is the whole cause chain.

use std::error::Error as StdError;

/// An engine failure, classified by what the caller did wrong (or what went wrong inside).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

/// The ttrpc code of an error, as a plain enum so the engine does not depend on ttrpc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    DeadlineExceeded,
    Unimplemented,
    Internal,
}

impl EngineError {
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            EngineError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            EngineError::NotFound(_) => ErrorCode::NotFound,
            EngineError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            EngineError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            EngineError::DeadlineExceeded(_) => ErrorCode::DeadlineExceeded,
            EngineError::Unimplemented(_) => ErrorCode::Unimplemented,
            EngineError::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => ErrorCode::NotFound,
                _ => ErrorCode::Internal,
            },
            EngineError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// `Io` with a context.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        EngineError::Io {
            context: context.into(),
            source,
        }
    }

    /// Prefixes the message with `context`, keeping the code.
    pub(crate) fn context(self, context: impl std::fmt::Display) -> Self {
        let msg = format!("{context}: {}", chain(&self));
        match self.code() {
            ErrorCode::InvalidArgument => EngineError::InvalidArgument(msg),
            ErrorCode::NotFound => EngineError::NotFound(msg),
            ErrorCode::AlreadyExists => EngineError::AlreadyExists(msg),
            ErrorCode::FailedPrecondition => EngineError::FailedPrecondition(msg),
            ErrorCode::DeadlineExceeded => EngineError::DeadlineExceeded(msg),
            ErrorCode::Unimplemented => EngineError::Unimplemented(msg),
            ErrorCode::Internal => EngineError::Internal(msg),
        }
    }
}

/// The error and all its sources, joined with ": ".
pub fn chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

pub type Result<T> = std::result::Result<T, EngineError>;
