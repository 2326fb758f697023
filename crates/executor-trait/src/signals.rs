//! Giving a process that is about to run a container's program a clean signal state.
//!
//! A container process is made by a chain of forks and execs from the daemon, and `execve`
//! resets handled signals but keeps ignored ones ignored. Two sources of ignored signals
//! leak into containers unless they are reset: the shell that started the daemon (a
//! background job ignores SIGINT and SIGQUIT), and glibc's `posix_spawn` (which Rust's
//! `Command` uses), whose child ignores glibc's own signals 32 and 33 before it execs.
//! glibc's `sigaction` refuses those two numbers, so this module uses the raw syscalls.

use std::io;

/// Sets the disposition of every signal but `keep` to its default (SIGKILL and SIGSTOP
/// cannot change), and unblocks every signal.
///
/// Async-signal-safe (it only makes system calls), so it may run between `fork` and `exec`
/// (`CommandExt::pre_exec`) or in a cloned child.
///
/// # Errors
/// The kernel refused to change the signal mask.
pub fn reset_dispositions(keep: &[i32]) -> io::Result<()> {
    // The kernel's `struct sigaction` with SIG_DFL (0), no flags and an empty mask is all
    // zeros on every architecture; the buffer is larger than any of them.
    let default = [0u64; 8];
    for signal in 1..=libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP || keep.contains(&signal) {
            continue;
        }
        // SAFETY: `default` is a valid, zeroed kernel sigaction for the duration of the
        // call; the old action is not asked for; 8 is the kernel's sigset size.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                default.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            )
        };
    }
    let empty = 0u64;
    // SAFETY: `empty` is a valid kernel sigset for the call; the old mask is not asked for.
    let set = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const empty,
            std::ptr::null_mut::<u64>(),
            8usize,
        )
    };
    if set == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    fn ignored_signals(command: &mut std::process::Command) -> String {
        let output = command
            .args(["-c", "grep SigIgn /proc/self/status"])
            .output()
            .unwrap();
        String::from_utf8(output.stdout).unwrap()
    }

    #[test]
    fn a_spawned_child_ignores_nothing_after_a_reset() {
        // Without the hook, glibc's posix_spawn leaves 32 and 33 ignored; with it, the
        // command forks and resets everything before it execs.
        let mut command = std::process::Command::new("sh");
        // SAFETY: the hook only makes system calls.
        unsafe { command.pre_exec(|| reset_dispositions(&[])) };
        assert_eq!(ignored_signals(&mut command), "SigIgn:\t0000000000000000\n");
    }

    #[test]
    fn kept_signals_stay_as_they_were() {
        let mut command = std::process::Command::new("sh");
        // SAFETY: as above; `signal` is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
                reset_dispositions(&[libc::SIGHUP])
            })
        };
        assert_eq!(ignored_signals(&mut command), "SigIgn:\t0000000000000001\n");
    }
}
