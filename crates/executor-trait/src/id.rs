//! Validated identifiers: container ids, exec ids, process ids and signals.

use std::fmt;
use std::str::FromStr;

/// Longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Why a string is not a valid [`ContainerId`] or [`ExecId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {shown:?}: {reason}")]
pub struct InvalidId {
    what: &'static str,
    /// The offending id, cut short so that a 10 kB id does not flood a log line.
    shown: String,
    reason: &'static str,
}

impl InvalidId {
    /// What was wrong with the id, e.g. "must not be empty".
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// Checks the rules shared by every id that names something on disk and on a runtime's
/// command line: 1 to 128 bytes of `[A-Za-z0-9_.-]`, no `..`, not `.`, and no leading `-`
/// (a runtime would parse it as a flag).
fn validate(what: &'static str, id: &str) -> Result<(), InvalidId> {
    let reason = if id.is_empty() {
        Some("must not be empty")
    } else if id.len() > MAX_ID_LEN {
        Some("must be at most 128 bytes")
    } else if let Some(bad) = id
        .bytes()
        .find(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))
    {
        Some(if bad == b'/' {
            "must not contain `/`"
        } else {
            "may only contain A-Z, a-z, 0-9, `_`, `.` and `-`"
        })
    } else if id == "." || id.contains("..") {
        Some("must not be `.` or contain `..`")
    } else if id.starts_with('-') {
        Some("must not start with `-`")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(InvalidId {
            what,
            shown: id.chars().take(64).collect(),
            reason,
        }),
    }
}

macro_rules! validated_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `id`.
            ///
            /// # Errors
            /// [`InvalidId`] if it breaks a rule listed on the type.
            pub fn new(id: impl Into<String>) -> Result<Self, InvalidId> {
                let id = id.into();
                validate($what, &id)?;
                Ok(Self(id))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidId;
            fn try_from(s: &str) -> Result<Self, InvalidId> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<std::path::Path> for $name {
            fn as_ref(&self) -> &std::path::Path {
                self.0.as_ref()
            }
        }

        impl AsRef<std::ffi::OsStr> for $name {
            fn as_ref(&self) -> &std::ffi::OsStr {
                self.0.as_ref()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

validated_id!(
    /// The id of a container: 1 to 128 bytes of `[A-Za-z0-9_.-]`, not `.`, without `..`,
    /// not starting with `-`. Safe to use as a path component and as a runtime argument.
    ContainerId,
    "container id"
);

validated_id!(
    /// The id of an extra process run in a container, unique within the container; same
    /// rules as [`ContainerId`].
    ExecId,
    "exec id"
);

/// A host process id (always positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pid(u32);

impl Pid {
    /// `raw` as a pid, or `None` unless it is in `1..=i32::MAX`.
    pub fn new(raw: u32) -> Option<Self> {
        (1..=i32::MAX as u32).contains(&raw).then_some(Self(raw))
    }

    /// `raw` as a pid, or `None` unless it is positive.
    pub fn from_raw(raw: i32) -> Option<Self> {
        u32::try_from(raw).ok().and_then(Self::new)
    }

    /// The pid as the kernel's `pid_t`.
    pub fn as_raw(self) -> i32 {
        // Cannot truncate: `new` admits only values up to i32::MAX.
        self.0 as i32
    }

    /// The pid as the wire's `uint32`.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Pid> for u32 {
    fn from(pid: Pid) -> u32 {
        pid.0
    }
}

/// A signal number, 1 to 64 (`SIGRTMAX` on Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Signal(u8);

/// A number that is not a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid signal {0}: must be 1 to 64")]
pub struct InvalidSignal(pub i64);

impl Signal {
    /// `SIGHUP`.
    pub const HUP: Signal = Signal(1);
    /// `SIGINT`.
    pub const INT: Signal = Signal(2);
    /// `SIGKILL`.
    pub const KILL: Signal = Signal(9);
    /// `SIGTERM`.
    pub const TERM: Signal = Signal(15);
    /// `SIGSTOP`.
    pub const STOP: Signal = Signal(19);

    /// Highest signal number on Linux (`SIGRTMAX`).
    pub const MAX: u8 = 64;

    /// The signal number.
    pub fn get(self) -> u8 {
        self.0
    }

    /// The signal number as the kernel's `int`.
    pub fn as_raw(self) -> i32 {
        i32::from(self.0)
    }

    /// Sends the signal to `pid` (`kill(2)`).
    ///
    /// # Errors
    /// The kernel's: `ESRCH` if no process has this pid, `EPERM` if we may not signal it.
    pub fn send_to(self, pid: Pid) -> std::io::Result<()> {
        let target = rustix::process::Pid::from_raw(pid.as_raw()).ok_or_else(|| {
            std::io::Error::from_raw_os_error(rustix::io::Errno::SRCH.raw_os_error())
        })?;
        // SAFETY: `from_raw_unchecked` only asks that the number be a valid signal, which
        // `Signal` guarantees (1..=64). Signals libc reserves for itself concern this
        // process, not the target.
        let signal = unsafe { rustix::process::Signal::from_raw_unchecked(self.as_raw()) };
        rustix::process::kill_process(target, signal).map_err(std::io::Error::from)
    }
}

impl TryFrom<i64> for Signal {
    type Error = InvalidSignal;
    fn try_from(n: i64) -> Result<Self, InvalidSignal> {
        match u8::try_from(n) {
            Ok(n @ 1..=Signal::MAX) => Ok(Signal(n)),
            _ => Err(InvalidSignal(n)),
        }
    }
}

impl TryFrom<u32> for Signal {
    type Error = InvalidSignal;
    fn try_from(n: u32) -> Result<Self, InvalidSignal> {
        Signal::try_from(i64::from(n))
    }
}

impl TryFrom<i32> for Signal {
    type Error = InvalidSignal;
    fn try_from(n: i32) -> Result<Self, InvalidSignal> {
        Signal::try_from(i64::from(n))
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn container_id_accepts_usual_ids() {
        for id in [
            "a",
            "redis",
            "my_container-1.2",
            "0123abcdef",
            ".hidden",
            &"x".repeat(128),
        ] {
            assert!(ContainerId::new(id).is_ok(), "{id:?} should be valid");
        }
    }

    #[test]
    fn container_id_rejects_path_traversal() {
        for id in ["..", ".", "a/b", "/", "../etc", "a..b", "x/../y"] {
            assert!(ContainerId::new(id).is_err(), "{id:?} should be rejected");
        }
    }

    #[test]
    fn container_id_rejects_empty_long_and_flag_like_ids() {
        assert_eq!(
            ContainerId::new("").unwrap_err().reason(),
            "must not be empty"
        );
        assert_eq!(
            ContainerId::new("x".repeat(129)).unwrap_err().reason(),
            "must be at most 128 bytes"
        );
        assert_eq!(
            ContainerId::new("--all").unwrap_err().reason(),
            "must not start with `-`"
        );
        assert_eq!(
            ContainerId::new("a/b").unwrap_err().reason(),
            "must not contain `/`"
        );
    }

    #[test]
    fn invalid_id_message_names_the_kind_and_truncates() {
        let err = ExecId::new(format!("{}\0", "y".repeat(10_000))).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("invalid exec id \"yyy"), "{message}");
        assert!(message.len() < 200, "{message}");
    }

    proptest! {
        #[test]
        fn container_id_accepts_exactly_the_documented_language(
            s in prop_oneof!["\\PC{0,140}", "[A-Za-z0-9_./-]{0,135}"]
        ) {
            let allowed = !s.is_empty()
                && s.len() <= 128
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                && s != "."
                && !s.contains("..")
                && !s.starts_with('-');
            prop_assert_eq!(ContainerId::new(s.clone()).is_ok(), allowed);
        }

        #[test]
        fn valid_ids_are_single_safe_path_components(s in "[A-Za-z0-9_.-]{1,128}") {
            if let Ok(id) = ContainerId::new(s) {
                let path = std::path::Path::new(id.as_str());
                let components: Vec<_> = path.components().collect();
                prop_assert_eq!(components.len(), 1);
                prop_assert!(matches!(components[0], std::path::Component::Normal(_)));
            }
        }

        #[test]
        fn signal_accepts_1_to_64_only(n in any::<i64>()) {
            prop_assert_eq!(Signal::try_from(n).is_ok(), (1..=64).contains(&n));
        }
    }

    #[test]
    fn pid_rejects_zero_and_negative() {
        assert!(Pid::new(0).is_none());
        assert!(Pid::from_raw(-1).is_none());
        assert!(Pid::new(u32::MAX).is_none());
        assert_eq!(Pid::new(42).map(Pid::as_raw), Some(42));
    }
}
