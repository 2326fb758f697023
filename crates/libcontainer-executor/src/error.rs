//! libcontainer's errors as the executor's [`Error`]: classified, with the whole cause
//! chain in one message that names the container and the operation.

use libcontainer::error::LibcontainerError;
use wharf_executor::{ContainerId, Error, ErrorKind};

/// `err`, from `operation` (e.g. `create`) on container `id`, as an [`Error`].
pub(crate) fn from_libcontainer(
    id: &ContainerId,
    operation: &str,
    err: LibcontainerError,
) -> Error {
    match err {
        LibcontainerError::Exist => Error::AlreadyExists { id: id.clone() },
        LibcontainerError::IncorrectStatus(status) => {
            let status = status.to_string().to_lowercase();
            let message = match required_status(operation) {
                Some(required) => format!("container is {status}, not {required}"),
                None => format!("container is {status}"),
            };
            Error::Runtime {
                id: id.clone(),
                command: format!("libcontainer {operation}"),
                message,
                kind: ErrorKind::FailedPrecondition,
            }
        }
        err => {
            let kind = classify(&err);
            Error::Runtime {
                id: id.clone(),
                command: format!("libcontainer {operation}"),
                message: chain(&err),
                kind,
            }
        }
    }
}

/// The status `operation` needs, as runc words it.
fn required_status(operation: &str) -> Option<&'static str> {
    match operation {
        "start" => Some("created"),
        "pause" | "exec" | "kill" => Some("running"),
        "resume" => Some("paused"),
        "delete" => Some("stopped"),
        _ => None,
    }
}

fn classify(err: &LibcontainerError) -> ErrorKind {
    match err {
        LibcontainerError::Exist => ErrorKind::AlreadyExists,
        LibcontainerError::IncorrectStatus(_) => ErrorKind::FailedPrecondition,
        LibcontainerError::NoDirectory => ErrorKind::NotFound,
        LibcontainerError::InvalidInput(_)
        | LibcontainerError::InvalidID(_)
        | LibcontainerError::MissingSpec(_)
        | LibcontainerError::InvalidSpec(_)
        | LibcontainerError::Spec(_)
        | LibcontainerError::NoUserNamespace => ErrorKind::InvalidArgument,
        // The container's process reports a workload it cannot run (a missing or
        // non-executable file) through its channel, as text.
        other if names_a_missing_executable(&chain(other)) => ErrorKind::InvalidArgument,
        _ => ErrorKind::Internal,
    }
}

/// Whether libcontainer's message says the process's executable is missing or unusable.
fn names_a_missing_executable(message: &str) -> bool {
    message.contains("not found in $PATH")
        || message.contains("does not have correct permissions")
        || message.contains("executable file not found")
}

/// `err` and its sources, `: `-separated, each said once (transparent wrappers repeat
/// their source's text).
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(err) = next {
        let text = err.to_string();
        if !text.is_empty() && parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcontainer::container::ContainerStatus;

    fn id() -> ContainerId {
        ContainerId::new("web").unwrap()
    }

    #[test]
    fn classes_follow_what_went_wrong() {
        let exists = from_libcontainer(&id(), "create", LibcontainerError::Exist);
        assert_eq!(exists.kind(), ErrorKind::AlreadyExists);
        assert_eq!(exists.to_string(), "container web already exists");

        let status = from_libcontainer(
            &id(),
            "pause",
            LibcontainerError::IncorrectStatus(ContainerStatus::Stopped),
        );
        assert_eq!(status.kind(), ErrorKind::FailedPrecondition);
        assert_eq!(
            status.to_string(),
            "`libcontainer pause` failed for container web: container is stopped, not running"
        );

        let missing = from_libcontainer(
            &id(),
            "create",
            LibcontainerError::Other("executable 'nope' not found in $PATH".into()),
        );
        assert_eq!(missing.kind(), ErrorKind::InvalidArgument);

        let other = from_libcontainer(&id(), "create", LibcontainerError::Other("boom".into()));
        assert_eq!(other.kind(), ErrorKind::Internal);
    }

    #[test]
    fn the_message_carries_every_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = LibcontainerError::OtherIO(io);
        assert_eq!(chain(&err), "io error: no such file");
    }
}
