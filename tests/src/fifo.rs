//! Fifos a test reads a container's output from, or writes its input to.

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::fs::{CWD, FileType, Mode};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
        .expect("creating a fifo");
}

/// A fifo whose every byte is collected by a background reader, opened before the
/// container so nothing written is missed.
#[derive(Debug)]
pub struct OutputFifo {
    /// The fifo's path, to pass as stdout/stderr.
    pub path: PathBuf,
    receiver: Arc<pipe::Receiver>,
    collected: Arc<Mutex<Vec<u8>>>,
    ended: Arc<tokio::sync::Notify>,
    eof: Arc<std::sync::atomic::AtomicBool>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for OutputFifo {
    /// Closes the reader (the fifo stays).
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Reads everything the kernel holds, without waiting; true at EOF. A real `read(2)`:
/// tokio's `try_read` trusts cached readiness and may report nothing while data waits.
fn drain(receiver: &pipe::Receiver, into: &mut Vec<u8>) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match rustix::io::read(receiver.as_fd(), &mut buf).map_err(io::Error::from) {
            Ok(0) => return Ok(true),
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(err) => return Err(err),
        }
    }
}

/// Like [`drain`], for the background reader: goes through tokio so a drained pipe clears
/// its readiness (the next `readable()` then waits).
fn drain_ready(receiver: &pipe::Receiver, into: &mut Vec<u8>) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match receiver
            .try_io(|| rustix::io::read(receiver.as_fd(), &mut buf).map_err(io::Error::from))
        {
            Ok(0) => return Ok(true),
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(err) => return Err(err),
        }
    }
}

impl OutputFifo {
    /// Makes `dir/name` and starts reading it.
    pub fn create(dir: &Path, name: &str) -> Self {
        let path = dir.join(name);
        mkfifo(&path);
        Self::open(path)
    }

    /// Starts reading an existing fifo.
    pub fn open(path: PathBuf) -> Self {
        let receiver = Arc::new(
            pipe::OpenOptions::new()
                .open_receiver(&path)
                .expect("opening the fifo"),
        );
        let collected = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(tokio::sync::Notify::new());
        let eof = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = tokio::spawn({
            let (receiver, collected, ended, eof) = (
                receiver.clone(),
                collected.clone(),
                ended.clone(),
                eof.clone(),
            );
            async move {
                loop {
                    if receiver.readable().await.is_err() {
                        break;
                    }
                    let mut bytes = collected.lock().expect("output lock");
                    match drain_ready(&receiver, &mut bytes) {
                        Ok(false) => {}
                        Ok(true) | Err(_) => break,
                    }
                }
                eof.store(true, std::sync::atomic::Ordering::SeqCst);
                ended.notify_waiters();
            }
        });
        Self {
            path,
            receiver,
            collected,
            ended,
            eof,
            reader,
        }
    }

    /// Everything written to the fifo so far, including what is still in the fifo's buffer.
    pub fn contents_now(&self) -> Vec<u8> {
        let mut bytes = self.collected.lock().expect("output lock");
        let _ = drain(&self.receiver, &mut bytes);
        bytes.clone()
    }

    /// [`OutputFifo::contents_now`] as text.
    pub fn text_now(&self) -> String {
        String::from_utf8_lossy(&self.contents_now()).into_owned()
    }

    /// The path as the API wants it.
    pub fn path_string(&self) -> String {
        self.path.display().to_string()
    }

    /// Whether every writer has closed the fifo.
    pub fn at_eof(&self) -> bool {
        self.eof.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until every writer has closed the fifo.
    pub async fn wait_eof(&self, timeout: std::time::Duration) {
        let waiting = self.ended.notified();
        if self.at_eof() {
            return;
        }
        tokio::time::timeout(timeout, waiting)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out after {timeout:?} waiting for EOF on {}",
                    self.path.display()
                )
            });
    }
}

/// A fifo the test writes a container's stdin into.
#[derive(Debug)]
pub struct InputFifo {
    /// The fifo's path, to pass as stdin.
    pub path: PathBuf,
    writer: Option<pipe::Sender>,
}

impl InputFifo {
    /// Makes `dir/name`.
    pub fn create(dir: &Path, name: &str) -> Self {
        let path = dir.join(name);
        mkfifo(&path);
        Self { path, writer: None }
    }

    /// The path as the API wants it.
    pub fn path_string(&self) -> String {
        self.path.display().to_string()
    }

    /// Writes `data`, opening the fifo first (the shim holds its reader once the process is
    /// created).
    pub async fn write(&mut self, data: &[u8]) {
        if self.writer.is_none() {
            self.writer = Some(
                pipe::OpenOptions::new()
                    .open_sender(&self.path)
                    .expect("opening the stdin fifo for writing"),
            );
        }
        let writer = self.writer.as_mut().expect("writer opened above");
        writer
            .write_all(data)
            .await
            .expect("writing to the stdin fifo");
    }

    /// Closes the writer: the container reads EOF.
    pub fn close(&mut self) {
        self.writer = None;
    }
}
