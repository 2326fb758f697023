//! How a process ended.

use std::fmt;

use crate::Signal;

/// How a process ended: its exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// The process called `exit(code)`.
    Exited(u8),
    /// A signal killed the process.
    Signaled(Signal),
}

impl ExitStatus {
    /// The status clients see, as a shell reports it: the exit code, or 128 + the signal
    /// number for a process killed by a signal (`SIGKILL` → 137, `SIGTERM` → 143).
    pub fn code(self) -> u32 {
        match self {
            ExitStatus::Exited(code) => u32::from(code),
            ExitStatus::Signaled(signal) => 128 + u32::from(signal.get()),
        }
    }

    /// Decodes the status word filled in by `wait4`/`waitpid`, or `None` if it does not
    /// describe a terminated process (stopped or continued).
    pub fn from_wait_status(raw: i32) -> Option<Self> {
        // The layout of glibc's WIFEXITED/WEXITSTATUS/WIFSIGNALED/WTERMSIG macros.
        let low = raw & 0x7f;
        if low == 0 {
            Some(ExitStatus::Exited(((raw >> 8) & 0xff) as u8))
        } else if low != 0x7f {
            Signal::try_from(low).ok().map(ExitStatus::Signaled)
        } else {
            None
        }
    }
}

impl From<std::process::ExitStatus> for ExitStatus {
    fn from(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        ExitStatus::from_wait_status(status.into_raw()).unwrap_or(ExitStatus::Exited(u8::MAX))
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exit code {code}"),
            ExitStatus::Signaled(signal) => {
                write!(f, "killed by signal {signal} (status {})", self.code())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_exit_codes() {
        assert_eq!(ExitStatus::from_wait_status(0), Some(ExitStatus::Exited(0)));
        assert_eq!(
            ExitStatus::from_wait_status(3 << 8),
            Some(ExitStatus::Exited(3))
        );
        assert_eq!(
            ExitStatus::from_wait_status(255 << 8),
            Some(ExitStatus::Exited(255))
        );
    }

    #[test]
    fn decodes_signals_with_and_without_core_dump() {
        assert_eq!(
            ExitStatus::from_wait_status(9),
            Some(ExitStatus::Signaled(Signal::KILL))
        );
        assert_eq!(
            ExitStatus::from_wait_status(15),
            Some(ExitStatus::Signaled(Signal::TERM))
        );
        // SIGSEGV with the core-dump bit (0x80).
        let segv = ExitStatus::from_wait_status(11 | 0x80).unwrap();
        assert_eq!(segv.code(), 139);
    }

    #[test]
    fn stopped_and_continued_are_not_exits() {
        assert_eq!(ExitStatus::from_wait_status((19 << 8) | 0x7f), None);
        assert_eq!(ExitStatus::from_wait_status(0xffff), None);
    }

    #[test]
    fn code_adds_128_to_signals() {
        assert_eq!(ExitStatus::Exited(3).code(), 3);
        assert_eq!(ExitStatus::Signaled(Signal::KILL).code(), 137);
        assert_eq!(ExitStatus::Signaled(Signal::TERM).code(), 143);
    }

    #[test]
    fn agrees_with_std_for_real_processes() {
        use std::os::unix::process::ExitStatusExt;
        for raw in [0, 1 << 8, 42 << 8, 9, 15, 6 | 0x80] {
            let std = std::process::ExitStatus::from_raw(raw);
            let ours = ExitStatus::from_wait_status(raw).unwrap();
            match ours {
                ExitStatus::Exited(code) => assert_eq!(std.code(), Some(i32::from(code))),
                ExitStatus::Signaled(sig) => assert_eq!(std.signal(), Some(sig.as_raw())),
            }
        }
    }
}
