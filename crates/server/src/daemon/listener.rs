//! The daemon's unix socket.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use anyhow::{Context, Result, bail};
use tonic::transport::server::{Connected, UdsConnectInfo};

use super::front::AuthorityFront;

/// Who the socket's mode lets connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketMode {
    /// 0600: the daemon's own user only.
    OwnerOnly,
    /// 0666: every local user may connect; each request is then checked against the
    /// caller's credentials (see `access`).
    EveryLocalUser,
}

impl SocketMode {
    fn bits(self) -> u32 {
        match self {
            Self::OwnerOnly => 0o600,
            Self::EveryLocalUser => 0o666,
        }
    }
}

/// Binds `path` with `mode`. A stale socket there (no one answers) is replaced; a live one
/// (another daemon serves it) or anything that is not a socket is refused.
pub(crate) fn bind(path: &Path, mode: SocketMode) -> Result<UnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                bail!("another daemon is already serving {}", path.display());
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("inspecting {}", path.display())),
    }
    // Bound under a temporary name, restricted, then renamed into place: the socket is
    // never reachable with a wider mode.
    let staging = path.with_file_name(format!(
        ".{}.{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("wharf.sock"),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&staging);
    let listener =
        UnixListener::bind(&staging).with_context(|| format!("binding {}", staging.display()))?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(mode.bits()))
        .and_then(|()| std::fs::rename(&staging, path))
        .with_context(|| format!("installing socket {}", path.display()))?;
    Ok(listener)
}

impl Connected for AuthorityFront<tokio::net::UnixStream> {
    type ConnectInfo = UdsConnectInfo;

    /// The peer of the real socket (its credentials included), not of the front.
    fn connect_info(&self) -> UdsConnectInfo {
        self.get_ref().connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_a_stale_socket_and_refuses_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/wharf.sock");
        let first = bind(&path, SocketMode::OwnerOnly).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let err = bind(&path, SocketMode::OwnerOnly).unwrap_err();
        assert!(err.to_string().contains("already serving"), "{err:#}");
        drop(first);
        bind(&path, SocketMode::EveryLocalUser).expect("a stale socket is replaced");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o666);
    }

    #[test]
    fn refuses_to_replace_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wharf.sock");
        std::fs::write(&path, "precious").unwrap();
        assert!(bind(&path, SocketMode::OwnerOnly).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    }
}
