//! `--attach`: the CLI's own stdio wired to a container process until it exits.
//!
//! Without a terminal, the process gets three fifos in a private temporary directory; the
//! CLI copies its stdin into one and the other two to its stdout and stderr. With a
//! terminal, the CLI opens a pseudo-terminal, passes its slave as `console`, puts its own
//! terminal (if any) in raw mode and copies both ways. Either way it subscribes to events
//! before the process is created and exits with the process's exit status.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use rustix::fs::{CWD, FileType, Mode};
use rustix::pty::OpenptFlags;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;
use tonic::Streaming;
use tonic::transport::Channel;
use wharf_api::{AddProcessRequest, ApiClient, CreateContainerRequest, Event, EventsRequest};

use super::rpc_error;
use crate::fdio::{AsyncOwnedFd, set_nonblocking};

/// How long output may keep flowing after the exit event (a background process may hold
/// the process's stdout open).
const OUTPUT_DRAIN: Duration = Duration::from_secs(5);

/// Whether the bundle's process asks for a terminal.
pub(super) fn bundle_wants_terminal(bundle: &Path) -> Result<bool> {
    let path = bundle.join("config.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let config: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(config["process"]["terminal"].as_bool().unwrap_or(false))
}

/// Events subscribed to, and stdio ready for a process about to be created.
pub(super) struct Session {
    events: Streaming<Event>,
    io: Io,
}

enum Io {
    Fifos {
        _dir: tempfile::TempDir,
        stdin: PathBuf,
        stdout: PathBuf,
        stderr: PathBuf,
        outputs: Vec<JoinHandle<()>>,
    },
    Terminal {
        master: OwnedFd,
        slave: PathBuf,
    },
}

impl Session {
    /// Subscribes to events (before anything is created, so no exit is missed) and prepares
    /// fifos or a pty.
    pub(super) async fn open(client: &mut ApiClient<Channel>, terminal: bool) -> Result<Self> {
        let events = client
            .events(EventsRequest {})
            .await
            .map_err(rpc_error)?
            .into_inner();
        let io = if terminal { open_pty()? } else { open_fifos()? };
        Ok(Self { events, io })
    }

    fn stdio(&self) -> (String, String, String, String) {
        match &self.io {
            Io::Fifos {
                stdin,
                stdout,
                stderr,
                ..
            } => (
                stdin.display().to_string(),
                stdout.display().to_string(),
                stderr.display().to_string(),
                String::new(),
            ),
            Io::Terminal { slave, .. } => (
                String::new(),
                String::new(),
                String::new(),
                slave.display().to_string(),
            ),
        }
    }

    pub(super) fn fill_create(&self, request: &mut CreateContainerRequest) {
        (
            request.stdin,
            request.stdout,
            request.stderr,
            request.console,
        ) = self.stdio();
    }

    pub(super) fn fill_exec(&self, request: &mut AddProcessRequest) {
        (
            request.stdin,
            request.stdout,
            request.stderr,
            request.console,
        ) = self.stdio();
    }

    /// Copies stdio until process `pid` of container `id` exits; returns its exit status.
    pub(super) async fn run(mut self, id: &str, pid: u32) -> Result<ExitCode> {
        let mut raw_terminal = None;
        let outputs = match &mut self.io {
            Io::Fifos { stdin, outputs, .. } => {
                // The shim holds the fifo's reader while the process runs; ENXIO means it
                // has already exited and reads no more input.
                match pipe::OpenOptions::new().open_sender(&*stdin) {
                    Ok(writer) => drop(tokio::spawn(copy_stdin(writer))),
                    Err(err)
                        if err.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {}
                    Err(err) => {
                        return Err(err).with_context(|| format!("opening {}", stdin.display()));
                    }
                }
                std::mem::take(outputs)
            }
            Io::Terminal { master, .. } => {
                raw_terminal = RawTerminal::enter();
                copy_terminal(master)?
            }
        };
        let status = loop {
            let event = self
                .events
                .message()
                .await
                .map_err(rpc_error)?
                .context("wharfd ended the event stream before the process exited")?;
            if event.r#type == "exit" && event.id == id && event.pid == pid {
                break event.status;
            }
        };
        for output in outputs {
            let _ = tokio::time::timeout(OUTPUT_DRAIN, output).await;
        }
        drop(raw_terminal);
        Ok(ExitCode::from(u8::try_from(status).unwrap_or(u8::MAX)))
    }
}

fn mkfifo(path: &Path) -> Result<()> {
    rustix::fs::mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
        .with_context(|| format!("creating fifo {}", path.display()))
}

/// Three fifos, the output ones already being read (so nothing written is missed).
fn open_fifos() -> Result<Io> {
    let dir = tempfile::Builder::new()
        .prefix("wharf-attach-")
        .tempdir()
        .context("creating a directory for the fifos")?;
    let [stdin, stdout, stderr] = ["stdin", "stdout", "stderr"].map(|name| dir.path().join(name));
    for path in [&stdin, &stdout, &stderr] {
        mkfifo(path)?;
    }
    let mut outputs = Vec::new();
    for (path, to_stderr) in [(&stdout, false), (&stderr, true)] {
        let reader = pipe::OpenOptions::new()
            .open_receiver(path)
            .with_context(|| format!("opening {}", path.display()))?;
        outputs.push(tokio::spawn(copy_output(reader, to_stderr)));
    }
    Ok(Io::Fifos {
        _dir: dir,
        stdin,
        stdout,
        stderr,
        outputs,
    })
}

async fn copy_output(mut reader: pipe::Receiver, to_stderr: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Waits for a writer first: a fifo read before any writer came is not EOF.
        if reader.readable().await.is_err() {
            return;
        }
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let written = if to_stderr {
                    tokio::io::stderr().write_all(&buf[..n]).await
                } else {
                    tokio::io::stdout().write_all(&buf[..n]).await
                };
                if written.is_err() {
                    return;
                }
            }
        }
    }
}

async fn copy_stdin(mut writer: pipe::Sender) {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => return, // dropping the writer: the process reads EOF
            Ok(n) => {
                if writer.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A new pty whose slave the container's process will use, sized like our terminal.
fn open_pty() -> Result<Io> {
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
            .context("opening a pseudo-terminal")?;
    rustix::pty::grantpt(&master).context("grantpt")?;
    rustix::pty::unlockpt(&master).context("unlockpt")?;
    let slave = rustix::pty::ptsname(&master, Vec::new()).context("ptsname")?;
    if let Ok(size) = rustix::termios::tcgetwinsize(std::io::stdout()) {
        let _ = rustix::termios::tcsetwinsize(&master, size);
    }
    set_nonblocking(&master)?;
    Ok(Io::Terminal {
        master,
        slave: PathBuf::from(slave.to_string_lossy().into_owned()),
    })
}

/// Copies our stdin to the pty and the pty to our stdout; returns the output copy.
fn copy_terminal(master: &OwnedFd) -> Result<Vec<JoinHandle<()>>> {
    let reader = AsyncOwnedFd::new(master.try_clone()?, Interest::READABLE)?;
    let writer = AsyncOwnedFd::new(master.try_clone()?, Interest::WRITABLE)?;
    let output = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut stdout = tokio::io::stdout();
        // EIO once the container's side is closed: the end.
        while let Ok(n @ 1..) = reader.read(&mut buf).await {
            if stdout.write_all(&buf[..n]).await.is_err() || stdout.flush().await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 4096];
        while let Ok(n @ 1..) = stdin.read(&mut buf).await {
            if writer.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    Ok(vec![output])
}

/// Our terminal in raw mode while attached; restored when dropped.
struct RawTerminal {
    saved: rustix::termios::Termios,
}

impl RawTerminal {
    /// Raw mode on stdin, if stdin is a terminal.
    fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}
