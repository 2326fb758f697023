//! A pseudo-terminal held by a test, as a `types.API` client holds one for `console`.

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use rustix::fs::OFlags;
use rustix::pty::OpenptFlags;

use crate::shim::DEADLINE;

/// The master of a new pty; its slave's path goes in `console`.
#[derive(Debug)]
pub struct TestPty {
    master: OwnedFd,
    /// `/dev/pts/N`.
    pub slave: PathBuf,
    received: Vec<u8>,
}

impl TestPty {
    /// Opens a pty (non-blocking master) ready for a client to use.
    pub fn open() -> Self {
        let master =
            rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
                .expect("opening a pty");
        rustix::pty::grantpt(&master).expect("grantpt");
        rustix::pty::unlockpt(&master).expect("unlockpt");
        let name = rustix::pty::ptsname(&master, Vec::new()).expect("ptsname");
        let flags = rustix::fs::fcntl_getfl(&master).expect("fcntl");
        rustix::fs::fcntl_setfl(&master, flags | OFlags::NONBLOCK).expect("non-blocking master");
        Self {
            master,
            slave: PathBuf::from(name.to_string_lossy().into_owned()),
            received: Vec::new(),
        }
    }

    /// The slave's path as the API wants it.
    pub fn slave_string(&self) -> String {
        self.slave.display().to_string()
    }

    /// Types `data` on the terminal.
    pub fn type_in(&self, data: &[u8]) {
        let mut rest = data;
        while !rest.is_empty() {
            let n = rustix::io::write(&self.master, rest).expect("writing to the pty master");
            rest = &rest[n..];
        }
    }

    /// Reads what the terminal shows until it contains `needle`, within the deadline.
    pub async fn read_until(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut buf = [0u8; 4096];
        loop {
            match rustix::io::read(&self.master, &mut buf) {
                Ok(n) if n > 0 => self.received.extend_from_slice(&buf[..n]),
                Ok(_) => {}
                Err(err) if io::Error::from(err).kind() == io::ErrorKind::WouldBlock => {}
                // EIO: no slave is open right now (before the shim opened it, or after).
                Err(_) => {}
            }
            let text = String::from_utf8_lossy(&self.received).into_owned();
            if text.contains(needle) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the terminal did not show {needle:?} within {DEADLINE:?}; it showed {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
