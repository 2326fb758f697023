//! The one error type of every executor.

use std::time::Duration;

use crate::{ContainerId, InvalidId, InvalidSignal};

/// Coarse class of an [`Error`], so a server can pick a status code without matching every
/// variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The container (or process) does not exist.
    NotFound,
    /// A container with this id already exists.
    AlreadyExists,
    /// The request itself is wrong (bad id, bad signal, missing executable, bad bundle).
    InvalidArgument,
    /// The container is not in a state that allows the operation (e.g. resume when not paused).
    FailedPrecondition,
    /// The runtime did not answer in time.
    DeadlineExceeded,
    /// This executor cannot do the operation (e.g. restore without a restore API).
    Unsupported,
    /// Anything else: a runtime failure, an I/O error.
    Internal,
}

/// An executor's failure. Messages name the container and the command; causes are in
/// [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No container has this id.
    #[error("container {id} not found")]
    NotFound {
        /// The id asked for.
        id: ContainerId,
    },
    /// A container with this id exists already.
    #[error("container {id} already exists")]
    AlreadyExists {
        /// The id asked for.
        id: ContainerId,
    },
    /// The request is invalid.
    #[error("{message}")]
    InvalidArgument {
        /// What is wrong, naming the field.
        message: String,
    },
    /// The runtime refused or failed; `message` is what it said (its log or stderr).
    #[error("`{command}` failed for container {id}: {message}")]
    Runtime {
        /// The container the command was about.
        id: ContainerId,
        /// The runtime command, e.g. `runc create`.
        command: String,
        /// The runtime's own error message.
        message: String,
        /// How the message was classified.
        kind: ErrorKind,
    },
    /// The runtime command did not finish before its deadline and was killed.
    #[error("`{command}` for container {id} did not finish within {timeout:?} and was killed")]
    Timeout {
        /// The container the command was about.
        id: ContainerId,
        /// The runtime command, e.g. `runc create`.
        command: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The executor does not support the operation.
    #[error("{message}")]
    Unsupported {
        /// What is not supported, naming the executor and the container.
        message: String,
    },
    /// An I/O operation of the executor itself failed.
    #[error("{context}")]
    Io {
        /// What was being done, naming the path or command.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Coarse class, so the server can pick a gRPC code without matching every variant.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Error::Runtime { kind, .. } => *kind,
            Error::Timeout { .. } => ErrorKind::DeadlineExceeded,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Io { .. } => ErrorKind::Internal,
        }
    }

    /// An [`Error::Io`] with `context` describing what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// An [`Error::InvalidArgument`].
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            message: message.into(),
        }
    }
}

impl From<InvalidId> for Error {
    fn from(err: InvalidId) -> Self {
        Error::invalid_argument(err.to_string())
    }
}

impl From<InvalidSignal> for Error {
    fn from(err: InvalidSignal) -> Self {
        Error::invalid_argument(err.to_string())
    }
}
