//! The contract between wharf and the software that runs containers.
//!
//! - [`Executor`]: create, start, exec, kill, pause, resume, delete, state of a container.
//!   Implementations: `wharf-runc-executor` (a runc-compatible CLI), `wharf-libcontainer-executor`.
//! - Ids as validated newtypes: [`ContainerId`], [`ExecId`], [`Pid`], [`Signal`].
//! - [`ExitStatus`]: how a process ended, and the 128+signal code clients see.
//! - [`Error`] with one classifier, [`Error::kind`].
//! - [`ProcessMonitor`]: how executors start helper commands in a process that reaps all
//!   its children itself.
//! - [`signals::reset_dispositions`]: a clean signal state for a process about to run a
//!   container's program.
//! - [`support`]: bundle checks and scratch directories, alike in every executor.
//! - [`console::ConsoleSocket`]: receives a pseudo-terminal master the way runc and
//!   libcontainer send it.
//!
//! This crate knows nothing of gRPC and depends on no other wharf crate.
#![warn(missing_docs)]

pub mod console;
mod error;
mod executor;
mod exit;
mod id;
mod monitor;
pub mod signals;
pub mod support;

pub use error::{Error, ErrorKind};
pub use executor::{
    CheckpointRequest, ContainerState, ContainerStatus, CreateRequest, CriuOptions, DeleteMode,
    ExecRequest, Executor, KillScope, NewProcess, RestoreRequest, Stdio, StdioFds,
};
pub use exit::ExitStatus;
pub use id::{ContainerId, ExecId, InvalidId, InvalidSignal, MAX_ID_LEN, Pid, Signal};
pub use monitor::{MonitoredChild, ProcessMonitor, TokioMonitor};

/// The `oci-spec` crate this one uses in its signatures ([`ExecRequest::process`]).
pub use oci_spec;
