//! The one place where errors become gRPC statuses.

use tonic::{Code, Status};
use wharf_executor::ErrorKind;

/// The gRPC status for an executor error, with the whole cause chain in its message.
pub fn from_executor(err: &wharf_executor::Error) -> Status {
    let code = match err.kind() {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::Unsupported => Code::Unimplemented,
        ErrorKind::Internal => Code::Internal,
    };
    Status::new(code, error_chain(err))
}

/// The gRPC status for a checkpoint store error.
pub fn from_checkpoint(err: &wharf_criu_checkpoint::Error) -> Status {
    use wharf_criu_checkpoint::ErrorKind;
    let code = match err.kind() {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::Internal => Code::Internal,
    };
    Status::new(code, error_chain(err))
}

/// A status from a shim, with `context` (naming the container) in front of its message and
/// its code kept.
pub fn from_shim(context: impl std::fmt::Display, status: Status) -> Status {
    Status::new(status.code(), format!("{context}: {}", status.message()))
}

/// The gRPC status for a system call of ours that failed: `ResourceExhausted` when the
/// machine ran out of something (open files, processes, memory, disk), `Internal` otherwise.
pub fn from_io(context: impl std::fmt::Display, err: &std::io::Error) -> Status {
    let exhausted = [
        libc::EMFILE,
        libc::ENFILE,
        libc::EAGAIN,
        libc::ENOMEM,
        libc::ENOSPC,
    ];
    let code = if err
        .raw_os_error()
        .is_some_and(|errno| exhausted.contains(&errno))
    {
        Code::ResourceExhausted
    } else {
        Code::Internal
    };
    Status::new(code, format!("{context}: {err}"))
}

/// `err` and its sources, joined with ": ".
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_executor::{ContainerId, Error};

    #[test]
    fn maps_kinds_to_codes_and_keeps_the_cause() {
        let id = ContainerId::new("web").unwrap();
        let cases = [
            (Error::NotFound { id: id.clone() }, Code::NotFound),
            (Error::AlreadyExists { id: id.clone() }, Code::AlreadyExists),
            (Error::invalid_argument("bad"), Code::InvalidArgument),
            (
                Error::Runtime {
                    id: id.clone(),
                    command: "runc resume".into(),
                    message: "container not paused".into(),
                    kind: ErrorKind::FailedPrecondition,
                },
                Code::FailedPrecondition,
            ),
            (
                Error::Timeout {
                    id: id.clone(),
                    command: "runc create".into(),
                    timeout: std::time::Duration::from_secs(1),
                },
                Code::DeadlineExceeded,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(from_executor(&err).code(), code, "{err}");
        }
        let io = Error::io(
            "reading /b/config.json",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        let status = from_executor(&io);
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "reading /b/config.json: entity not found");
    }

    #[test]
    fn running_out_of_something_is_resource_exhausted() {
        let emfile = from_io(
            "starting x",
            &std::io::Error::from_raw_os_error(libc::EMFILE),
        );
        assert_eq!(emfile.code(), Code::ResourceExhausted);
        assert!(emfile.message().starts_with("starting x: "), "{emfile:?}");
        let other = from_io(
            "starting x",
            &std::io::Error::from_raw_os_error(libc::EACCES),
        );
        assert_eq!(other.code(), Code::Internal);
    }
}
