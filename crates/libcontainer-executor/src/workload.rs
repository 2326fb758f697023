//! What runs in the container's process between its setup and `execve`: libcontainer's
//! default workload, after giving the process a clean signal state.
//!
//! The process is cloned from the caller, so it starts with the caller's signal
//! dispositions: an async runtime's handlers for SIGTERM, SIGINT, SIGCHLD..., and Rust's
//! ignored SIGPIPE. `execve` resets handled signals to their default, but keeps ignored ones
//! ignored, and until `execve` (a created container waiting for `start`) a SIGTERM would run
//! the caller's handler in the container. So every signal is set back to its default and
//! unblocked before the process waits to be started.

use libcontainer::oci_spec::runtime::{LinuxSeccomp, Spec};
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use wharf_executor::signals;

/// libcontainer's default workload (`execvp` of `process.args`), in a clean signal state,
/// and for an exec, confined by the container's seccomp profile.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContainerWorkload {
    /// The container's profile, for an exec: libcontainer 0.7 rebuilds an exec's
    /// `linux` section without the container's `seccomp` (a process that escapes the
    /// profile), so the workload installs it itself, right before `execve`.
    exec_seccomp: Option<LinuxSeccomp>,
}

impl ContainerWorkload {
    /// The workload of a container's init (libcontainer applies its profile).
    pub(crate) fn init() -> Self {
        Self::default()
    }

    /// The workload of an exec in a container confined by `seccomp`.
    pub(crate) fn exec(seccomp: Option<LinuxSeccomp>) -> Self {
        Self {
            exec_seccomp: seccomp,
        }
    }
}

impl Executor for ContainerWorkload {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(seccomp) = &self.exec_seccomp {
            confine(seccomp)?;
        }
        DefaultExecutor {}.exec(spec)
    }

    /// Runs in the container's process after its setup, before it waits to be started.
    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        signals::reset_dispositions(&[])
            .map_err(|err| ExecutorValidationError::ArgValidationError(err.to_string()))?;
        // Best effort: a seccomp profile may forbid it, and the process must still run.
        let _ = reopen_null_stdio();
        DefaultExecutor {}.validate(spec)
    }
}

/// Points every stdio descriptor that discards (the host's `/dev/null`, or the container's,
/// which libcontainer 0.7 reopens read-only for an init, so that writes fail with `EBADF`;
/// or `/dev/zero` as an output) at the container's `/dev/null`, open for reading and
/// writing. A descriptor on a file of the container's own mounts is also one CRIU can dump.
fn reopen_null_stdio() -> rustix::io::Result<()> {
    use rustix::fs::{FileType, Mode, OFlags, fstat, major, minor};
    let null = rustix::fs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    let device = |stat: &rustix::fs::Stat| {
        (FileType::from_raw_mode(stat.st_mode) == FileType::CharacterDevice)
            .then(|| (major(stat.st_rdev), minor(stat.st_rdev)))
    };
    if device(&fstat(&null)?) != Some((1, 3)) {
        return Ok(());
    }
    let stdio = [
        (rustix::stdio::stdin(), false),
        (rustix::stdio::stdout(), true),
        (rustix::stdio::stderr(), true),
    ];
    for (index, (fd, output)) in stdio.into_iter().enumerate() {
        let discards = match fstat(fd).ok().as_ref().and_then(device) {
            Some((1, 3)) => true,
            Some((1, 5)) => output,
            _ => false,
        };
        if discards {
            match index {
                0 => rustix::stdio::dup2_stdin(&null)?,
                1 => rustix::stdio::dup2_stdout(&null)?,
                _ => rustix::stdio::dup2_stderr(&null)?,
            }
        }
    }
    Ok(())
}

/// Installs `seccomp` in this process. Its capabilities are dropped already, so the kernel
/// allows a filter only with `no_new_privs`, which it sets: an exec in a confined container
/// cannot gain privileges through a setuid file (stricter than runc, never looser).
fn confine(seccomp: &LinuxSeccomp) -> Result<(), ExecutorError> {
    rustix::thread::set_no_new_privs(true)
        .map_err(|err| ExecutorError::Other(format!("setting no_new_privs: {err}")))?;
    match libcontainer::seccomp::initialize_seccomp(seccomp) {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(ExecutorError::Other(
            "the container's seccomp profile uses SCMP_ACT_NOTIFY, which execs do not support"
                .to_owned(),
        )),
        Err(err) => Err(ExecutorError::Other(format!(
            "installing the container's seccomp profile: {err}"
        ))),
    }
}
