//! Argument lists for the runtime's commands. Pure functions, so they are unit-tested.

use std::ffi::OsString;
use std::path::Path;

use wharf_executor::{ContainerId, CriuOptions, DeleteMode, KillScope, Signal};

/// One runtime command: its subcommand name (for messages) and its arguments after the
/// global flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subcommand {
    pub(crate) name: &'static str,
    pub(crate) args: Vec<OsString>,
}

impl Subcommand {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            args: vec![name.into()],
        }
    }

    fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    fn arg_if(self, cond: bool, arg: &str) -> Self {
        if cond { self.arg(arg) } else { self }
    }

    fn opt(self, flag: &str, value: Option<&Path>) -> Self {
        match value {
            Some(value) => self.arg(flag).arg(value),
            None => self,
        }
    }

    /// The container id goes last, after every flag.
    fn id(self, id: &ContainerId) -> Self {
        self.arg(id.as_str())
    }
}

/// Flags every invocation gets: the private state root and a JSON log the error is read from.
pub(crate) fn global_args(root: &Path, log: &Path) -> Vec<OsString> {
    vec![
        "--root".into(),
        root.into(),
        "--log".into(),
        log.into(),
        "--log-format".into(),
        "json".into(),
    ]
}

pub(crate) fn create(
    id: &ContainerId,
    bundle: &Path,
    pid_file: &Path,
    console_socket: Option<&Path>,
    no_pivot: bool,
) -> Subcommand {
    Subcommand::new("create")
        .arg("--bundle")
        .arg(bundle)
        .arg("--pid-file")
        .arg(pid_file)
        .opt("--console-socket", console_socket)
        .arg_if(no_pivot, "--no-pivot")
        .id(id)
}

/// The flags of a CRIU dump or restore.
fn criu_flags(
    sub: Subcommand,
    image_dir: &Path,
    work_dir: &Path,
    options: &CriuOptions,
) -> Subcommand {
    sub.arg("--image-path")
        .arg(image_dir)
        .arg("--work-path")
        .arg(work_dir)
        .arg_if(options.tcp_established, "--tcp-established")
        .arg_if(options.external_unix_sockets, "--ext-unix-sk")
        .arg_if(options.shell_job, "--shell-job")
}

pub(crate) fn checkpoint(
    id: &ContainerId,
    image_dir: &Path,
    work_dir: &Path,
    options: &CriuOptions,
) -> Subcommand {
    criu_flags(Subcommand::new("checkpoint"), image_dir, work_dir, options)
        .arg_if(options.leave_running, "--leave-running")
        .id(id)
}

/// `restore --detach`: the restored init runs once the command returns.
#[allow(clippy::too_many_arguments)]
pub(crate) fn restore(
    id: &ContainerId,
    bundle: &Path,
    pid_file: &Path,
    console_socket: Option<&Path>,
    no_pivot: bool,
    image_dir: &Path,
    work_dir: &Path,
    options: &CriuOptions,
) -> Subcommand {
    let sub = Subcommand::new("restore")
        .arg("--detach")
        .arg("--bundle")
        .arg(bundle)
        .arg("--pid-file")
        .arg(pid_file)
        .opt("--console-socket", console_socket)
        .arg_if(no_pivot, "--no-pivot");
    criu_flags(sub, image_dir, work_dir, options).id(id)
}

pub(crate) fn start(id: &ContainerId) -> Subcommand {
    Subcommand::new("start").id(id)
}

pub(crate) fn exec(
    id: &ContainerId,
    process_file: &Path,
    pid_file: &Path,
    console_socket: Option<&Path>,
) -> Subcommand {
    Subcommand::new("exec")
        .arg("--process")
        .arg(process_file)
        .arg("--detach")
        .arg("--pid-file")
        .arg(pid_file)
        .opt("--console-socket", console_socket)
        .id(id)
}

pub(crate) fn kill(id: &ContainerId, signal: Signal, scope: KillScope) -> Subcommand {
    Subcommand::new("kill")
        .arg_if(scope == KillScope::All, "--all")
        .id(id)
        .arg(signal.get().to_string())
}

pub(crate) fn pause(id: &ContainerId) -> Subcommand {
    Subcommand::new("pause").id(id)
}

pub(crate) fn resume(id: &ContainerId) -> Subcommand {
    Subcommand::new("resume").id(id)
}

pub(crate) fn delete(id: &ContainerId, mode: DeleteMode) -> Subcommand {
    Subcommand::new("delete")
        .arg_if(mode == DeleteMode::Force, "--force")
        .id(id)
}

pub(crate) fn state(id: &ContainerId) -> Subcommand {
    Subcommand::new("state").id(id)
}

pub(crate) fn ps(id: &ContainerId) -> Subcommand {
    Subcommand::new("ps").arg("--format").arg("json").id(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ContainerId {
        ContainerId::new("web").unwrap()
    }

    fn strings(sub: &Subcommand) -> Vec<&str> {
        sub.args.iter().map(|a| a.to_str().unwrap()).collect()
    }

    #[test]
    fn global_args_set_root_and_json_log() {
        let args = global_args(Path::new("/run/wharf/runc"), Path::new("/tmp/x/log.json"));
        assert_eq!(
            args,
            [
                "--root",
                "/run/wharf/runc",
                "--log",
                "/tmp/x/log.json",
                "--log-format",
                "json"
            ]
        );
    }

    #[test]
    fn create_puts_flags_before_the_id() {
        let sub = create(
            &id(),
            Path::new("/b"),
            Path::new("/s/init.pid"),
            None,
            false,
        );
        assert_eq!(
            strings(&sub),
            [
                "create",
                "--bundle",
                "/b",
                "--pid-file",
                "/s/init.pid",
                "web"
            ]
        );
    }

    #[test]
    fn create_with_terminal_and_no_pivot() {
        let sub = create(
            &id(),
            Path::new("/b"),
            Path::new("/s/init.pid"),
            Some(Path::new("/s/console.sock")),
            true,
        );
        assert_eq!(
            strings(&sub),
            [
                "create",
                "--bundle",
                "/b",
                "--pid-file",
                "/s/init.pid",
                "--console-socket",
                "/s/console.sock",
                "--no-pivot",
                "web"
            ]
        );
    }

    #[test]
    fn exec_is_detached_with_process_file() {
        let sub = exec(&id(), Path::new("/s/p.json"), Path::new("/s/p.pid"), None);
        assert_eq!(
            strings(&sub),
            [
                "exec",
                "--process",
                "/s/p.json",
                "--detach",
                "--pid-file",
                "/s/p.pid",
                "web"
            ]
        );
    }

    #[test]
    fn kill_passes_the_signal_number_after_the_id() {
        assert_eq!(
            strings(&kill(&id(), Signal::TERM, KillScope::Init)),
            ["kill", "web", "15"]
        );
        assert_eq!(
            strings(&kill(&id(), Signal::KILL, KillScope::All)),
            ["kill", "--all", "web", "9"]
        );
    }

    #[test]
    fn delete_force_and_simple_commands() {
        assert_eq!(
            strings(&delete(&id(), DeleteMode::Force)),
            ["delete", "--force", "web"]
        );
        assert_eq!(
            strings(&delete(&id(), DeleteMode::IfStopped)),
            ["delete", "web"]
        );
        assert_eq!(strings(&start(&id())), ["start", "web"]);
        assert_eq!(strings(&pause(&id())), ["pause", "web"]);
        assert_eq!(strings(&resume(&id())), ["resume", "web"]);
        assert_eq!(strings(&state(&id())), ["state", "web"]);
        assert_eq!(strings(&ps(&id())), ["ps", "--format", "json", "web"]);
    }
}
