//! What the runtime prints: `state` and `ps` JSON, and its JSON log, parsed with serde types
//! that ignore fields they do not know (runc and crun differ, and both grow).

use std::path::PathBuf;

use serde::Deserialize;
use wharf_executor::{ContainerId, ContainerState, ContainerStatus, ErrorKind, Pid};

/// `runc state <id>` output (OCI runtime state plus runc's extras).
#[derive(Debug, Deserialize)]
struct RuntimeState {
    id: String,
    #[serde(default)]
    pid: i64,
    status: String,
    #[serde(default)]
    bundle: PathBuf,
}

/// Parses `state` output.
pub(crate) fn parse_state(json: &[u8]) -> Result<ContainerState, String> {
    let state: RuntimeState =
        serde_json::from_slice(json).map_err(|err| format!("unreadable state output: {err}"))?;
    let status = match state.status.as_str() {
        "creating" => ContainerStatus::Creating,
        "created" => ContainerStatus::Created,
        "running" => ContainerStatus::Running,
        "pausing" => ContainerStatus::Pausing,
        "paused" => ContainerStatus::Paused,
        "stopped" => ContainerStatus::Stopped,
        other => return Err(format!("unknown container status {other:?}")),
    };
    Ok(ContainerState {
        id: ContainerId::new(state.id).map_err(|err| err.to_string())?,
        pid: i32::try_from(state.pid).ok().and_then(Pid::from_raw),
        status,
        bundle: state.bundle,
    })
}

/// Parses `ps --format json` output: a JSON array of pids (`null` when empty).
pub(crate) fn parse_ps(json: &[u8]) -> Result<Vec<Pid>, String> {
    let pids: Option<Vec<i64>> =
        serde_json::from_slice(json).map_err(|err| format!("unreadable ps output: {err}"))?;
    Ok(pids
        .unwrap_or_default()
        .into_iter()
        .filter_map(|pid| i32::try_from(pid).ok().and_then(Pid::from_raw))
        .collect())
}

/// One line of the runtime's `--log-format json` log.
#[derive(Debug, Deserialize)]
struct LogLine {
    #[serde(default)]
    level: String,
    #[serde(default)]
    msg: String,
}

/// The runtime's error message from its JSON log: the last `error`/`fatal` line, else the
/// last line with a message. Lines that are not JSON are taken as they are.
pub(crate) fn error_from_log(log: &str) -> Option<String> {
    let mut last_any = None;
    let mut last_error = None;
    for line in log.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match serde_json::from_str::<LogLine>(line) {
            Ok(entry) if entry.msg.is_empty() => {}
            Ok(entry) => {
                if matches!(entry.level.as_str(), "error" | "fatal" | "panic") {
                    last_error = Some(entry.msg.clone());
                }
                last_any = Some(entry.msg);
            }
            Err(_) => last_any = Some(line.to_owned()),
        }
    }
    last_error.or(last_any)
}

/// Drops the `runc create failed: ` prefix runc puts before its own message, which would
/// repeat the command our error already names.
pub(crate) fn strip_command_prefix<'a>(
    message: &'a str,
    runtime: &str,
    subcommand: &str,
) -> &'a str {
    message
        .strip_prefix(runtime)
        .and_then(|rest| rest.strip_prefix(' '))
        .and_then(|rest| rest.strip_prefix(subcommand))
        .and_then(|rest| rest.strip_prefix(" failed: "))
        .unwrap_or(message)
}

/// Classifies a runtime error message.
pub(crate) fn classify(message: &str) -> ErrorKind {
    let m = message.to_ascii_lowercase();
    let has = |needle: &str| m.contains(needle);
    if has("does not exist") || has("container not found") {
        ErrorKind::NotFound
    } else if has("already exists") || has("already in use") {
        ErrorKind::AlreadyExists
    } else if has("executable file not found")
        || (has("exec:") && has("no such file or directory"))
        || has("permission denied") && has("exec:")
        || (has("config.json") && (has("not found") || has("no such file")))
        || has("invalid rootfs")
    {
        ErrorKind::InvalidArgument
    } else if has("not running")
        || has("not paused")
        || has("not stopped")
        || has("cannot start")
        || has("cannot delete")
        || has("cannot exec")
        || has("already running")
        || has("has stopped")
        || has("is paused")
    {
        ErrorKind::FailedPrecondition
    } else {
        ErrorKind::Internal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_runc_state_of_a_created_container() {
        let state = parse_state(include_bytes!("testdata/runc-state-created.json")).unwrap();
        assert_eq!(state.id.as_str(), "c1");
        assert_eq!(state.pid, Pid::new(2705));
        assert_eq!(state.status, ContainerStatus::Created);
        assert_eq!(state.bundle, PathBuf::from("/tmp/exp/b"));
    }

    #[test]
    fn stopped_state_has_no_pid() {
        let state = parse_state(include_bytes!("testdata/runc-state-stopped.json")).unwrap();
        assert_eq!(state.status, ContainerStatus::Stopped);
        assert_eq!(state.pid, None);
    }

    #[test]
    fn state_tolerates_unknown_fields_and_rejects_unknown_status() {
        let json = br#"{"id":"a","pid":7,"status":"running","bundle":"/b","annotations":{"x":"y"},"systemd":true}"#;
        assert_eq!(parse_state(json).unwrap().status, ContainerStatus::Running);
        let err = parse_state(br#"{"id":"a","status":"zombie"}"#).unwrap_err();
        assert!(err.contains("zombie"), "{err}");
    }

    #[test]
    fn parses_ps_output() {
        assert_eq!(
            parse_ps(b"[3030,3097]\n").unwrap(),
            [Pid::new(3030).unwrap(), Pid::new(3097).unwrap()]
        );
        assert_eq!(parse_ps(b"null").unwrap(), []);
        assert!(parse_ps(b"garbage").is_err());
    }

    #[test]
    fn finds_runc_error_in_its_json_log() {
        let log = include_str!("testdata/runc-create-enoent.log");
        let message = error_from_log(log).unwrap();
        assert_eq!(
            message,
            r#"runc create failed: unable to start container process: exec: "NoSuchFile": executable file not found in $PATH"#
        );
        assert_eq!(
            strip_command_prefix(&message, "runc", "create"),
            r#"unable to start container process: exec: "NoSuchFile": executable file not found in $PATH"#
        );
        assert_eq!(classify(&message), ErrorKind::InvalidArgument);
    }

    #[test]
    fn finds_crun_error_with_fields_in_another_order() {
        let message = error_from_log(include_str!("testdata/crun-state-missing.log")).unwrap();
        assert!(message.starts_with("error opening file"), "{message}");
    }

    #[test]
    fn prefers_the_last_error_over_later_warnings() {
        let log = concat!(
            r#"{"level":"warning","msg":"early warning"}"#,
            "\n",
            r#"{"level":"error","msg":"the real error"}"#,
            "\n",
            r#"{"level":"warning","msg":"cleanup warning"}"#,
            "\n",
            "not json at all\n",
        );
        assert_eq!(error_from_log(log).as_deref(), Some("the real error"));
        assert_eq!(
            error_from_log("plain text\n").as_deref(),
            Some("plain text")
        );
        assert_eq!(error_from_log("").as_deref(), None);
    }

    #[test]
    fn classifies_runc_messages() {
        let cases = [
            ("container does not exist", ErrorKind::NotFound),
            (
                "invalid rootfs: not an absolute path, or a symlink",
                ErrorKind::InvalidArgument,
            ),
            (
                "runc create failed: container with given ID already exists",
                ErrorKind::AlreadyExists,
            ),
            ("container not running", ErrorKind::FailedPrecondition),
            ("container not paused", ErrorKind::FailedPrecondition),
            (
                "cannot start a container that has stopped",
                ErrorKind::FailedPrecondition,
            ),
            (
                "cannot start an already running container",
                ErrorKind::FailedPrecondition,
            ),
            (
                "cannot delete container c1 that is not stopped: running",
                ErrorKind::FailedPrecondition,
            ),
            (
                r#"exec: "/x": stat /x: no such file or directory"#,
                ErrorKind::InvalidArgument,
            ),
            (
                "JSON specification file config.json not found",
                ErrorKind::InvalidArgument,
            ),
            (
                "unable to signal init: invalid argument",
                ErrorKind::Internal,
            ),
        ];
        for (message, kind) in cases {
            assert_eq!(classify(message), kind, "{message}");
        }
    }
}
