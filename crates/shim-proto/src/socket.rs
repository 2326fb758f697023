//! Unix socket paths of any length.
//!
//! A socket address holds at most 107 bytes of path, but a shim socket lives at
//! `<state-dir>/<container-id>/shim.sock` and container ids may be 128 bytes long. A longer
//! path is reached through its directory: the directory is opened (`O_PATH`) and the socket
//! is named `/proc/self/fd/<dirfd>/<name>`, which the kernel resolves like the full path.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

/// Longest path a `sockaddr_un` holds, without its terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// A unix socket's path, usable with `bind`/`connect` whatever its length.
#[derive(Debug, Clone)]
pub struct SocketPath(PathBuf);

/// A path to hand to `bind` or `connect`, valid while this value lives.
#[derive(Debug)]
pub struct SocketAddress {
    path: PathBuf,
    _dir: Option<OwnedFd>,
}

impl SocketPath {
    /// The socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    /// The path as given.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A short address for this path: the path itself if it fits, else one through
    /// `/proc/self/fd`.
    ///
    /// # Errors
    /// The directory of a long path cannot be opened, or the path has no file name.
    pub fn address(&self) -> io::Result<SocketAddress> {
        if self.0.as_os_str().len() <= MAX_SOCKET_PATH {
            return Ok(SocketAddress {
                path: self.0.clone(),
                _dir: None,
            });
        }
        let (Some(dir), Some(name)) = (self.0.parent(), self.0.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("socket path {} has no file name", self.0.display()),
            ));
        };
        let dir = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let path = Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("socket file name in {} is too long", self.0.display()),
            ));
        }
        Ok(SocketAddress {
            path,
            _dir: Some(dir),
        })
    }
}

impl SocketAddress {
    /// The path to pass to `bind` or `connect`.
    pub fn as_path(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for SocketAddress {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// Binds a listening socket at `path` (any length) with mode 0600, replacing nothing: the
/// caller removes a stale socket first if it wants to.
///
/// # Errors
/// The path exists, its directory is missing, or `bind` fails.
pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
    let address = SocketPath::new(path.as_ref()).address()?;
    let listener = UnixListener::bind(address.as_path())?;
    std::fs::set_permissions(address.as_path(), std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn binds_and_connects_paths_longer_than_sun_path() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c".repeat(128));
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("shim.sock");
        assert!(path.as_os_str().len() > MAX_SOCKET_PATH);

        let listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let address = SocketPath::new(&path).address().unwrap();
        let _client = UnixStream::connect(address.as_path()).unwrap();
        let (_server, _) = listener.accept().unwrap();
    }

    #[test]
    fn short_paths_are_used_as_given() {
        let address = SocketPath::new("/run/wharf/a/shim.sock").address().unwrap();
        assert_eq!(address.as_path(), Path::new("/run/wharf/a/shim.sock"));
    }
}
