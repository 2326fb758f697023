//! The console socket: the runtime allocates a pseudo-terminal for a process and sends its
//! master back over a unix socket (runc's `--console-socket`, libcontainer's
//! `with_console_socket`) as an `SCM_RIGHTS` message.

use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use tokio::io::Interest;
use tokio::net::UnixListener;

/// Longest path a `sockaddr_un` holds, without its terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// A listening console socket in a scratch directory.
#[derive(Debug)]
pub struct ConsoleSocket {
    listener: UnixListener,
    /// The path the runtime (a child process) connects to.
    path_for_runtime: PathBuf,
    /// Keeps a long directory reachable through `/proc/<pid>/fd`.
    _dir: Option<OwnedFd>,
}

impl ConsoleSocket {
    /// Listens on `console.sock` in `dir`. A path too long for a socket address is bound
    /// through `/proc/self/fd/<dirfd>`, and the runtime is given `/proc/<our pid>/fd/<dirfd>`.
    pub fn bind(dir: &Path) -> io::Result<Self> {
        let path = dir.join("console.sock");
        let (bind_path, path_for_runtime, dir_fd) = if path.as_os_str().len() <= MAX_SOCKET_PATH {
            (path.clone(), path, None)
        } else {
            let fd = rustix::fs::open(
                dir,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let raw = fd.as_raw_fd();
            (
                PathBuf::from(format!("/proc/self/fd/{raw}/console.sock")),
                PathBuf::from(format!(
                    "/proc/{}/fd/{raw}/console.sock",
                    std::process::id()
                )),
                Some(fd),
            )
        };
        Ok(Self {
            listener: UnixListener::bind(bind_path)?,
            path_for_runtime,
            _dir: dir_fd,
        })
    }

    /// The path to pass as `--console-socket`.
    pub fn path(&self) -> &Path {
        &self.path_for_runtime
    }

    /// Accepts the runtime's connection and receives the pseudo-terminal master.
    ///
    /// # Cancel safety
    /// Cancel safe until a connection is accepted; a master received after that is lost.
    pub async fn receive_master(&self) -> io::Result<OwnedFd> {
        let (stream, _) = self.listener.accept().await?;
        loop {
            stream.readable().await?;
            match stream.try_io(Interest::READABLE, || receive_fd(&stream)) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                result => return result,
            }
        }
    }
}

/// Receives one message carrying a file descriptor.
fn receive_fd(socket: &impl AsFd) -> io::Result<OwnedFd> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    // runc sends the terminal's name as the payload; we only need the descriptor.
    let mut name = [0u8; 4096];
    let received = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut name)],
        &mut ancillary,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    for message in ancillary.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message
            && let Some(fd) = fds.next()
        {
            return Ok(fd);
        }
    }
    Err(if received.bytes == 0 {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "runtime closed the console socket without sending a terminal",
        )
    } else {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "console socket message carried no file descriptor",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::io::IoSlice;
    use std::os::unix::net::UnixStream;

    fn send_fd(path: &Path, fd: &impl AsFd) {
        let stream = UnixStream::connect(path).unwrap();
        let fds = [fd.as_fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut ancillary = SendAncillaryBuffer::new(&mut space);
        assert!(ancillary.push(SendAncillaryMessage::ScmRights(&fds)));
        rustix::net::sendmsg(
            &stream,
            &[IoSlice::new(b"/dev/pts/9")],
            &mut ancillary,
            SendFlags::empty(),
        )
        .unwrap();
    }

    #[tokio::test]
    async fn receives_a_descriptor_sent_like_runc_does() {
        let dir = tempfile::tempdir().unwrap();
        let console = ConsoleSocket::bind(dir.path()).unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        let path = console.path().to_path_buf();
        let sender = std::thread::spawn(move || send_fd(&path, &file));
        let master = console.receive_master().await.unwrap();
        sender.join().unwrap();
        assert!(master.as_raw_fd() >= 0);
    }

    #[tokio::test]
    async fn works_in_a_directory_with_a_long_path() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("d".repeat(120));
        std::fs::create_dir(&dir).unwrap();
        let console = ConsoleSocket::bind(&dir).unwrap();
        assert!(console.path().as_os_str().len() <= MAX_SOCKET_PATH);
        let file = std::fs::File::open("/dev/null").unwrap();
        let path = console.path().to_path_buf();
        let sender = std::thread::spawn(move || send_fd(&path, &file));
        console.receive_master().await.unwrap();
        sender.join().unwrap();
    }
}
