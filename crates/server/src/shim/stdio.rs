//! A container process's stdio: the caller's paths opened so the process never blocks on
//! them, and the pumps that copy between them and the process.
//!
//! Per stream, by what the caller's path is:
//! - empty: the process gets `/dev/null` (output discarded, input at EOF);
//! - a regular file (or `/dev/null`): the process gets the file itself, opened for append;
//! - a fifo: the process gets a pipe and a pump copies between the pipe and the fifo.
//!   Output written while the fifo has no reader (not yet opened, or the reader went away)
//!   is kept, up to [`BACKLOG_LIMIT`] bytes (oldest dropped), and delivered when a reader
//!   appears; the process never blocks on a missing reader and never gets `SIGPIPE`.
//!   A stdin pump copies until every writer of the fifo has closed it, then closes the
//!   process's stdin, so the process sees EOF.
//! - with a terminal, the pseudo-terminal master is copied to the stdout path and the stdin
//!   path into the master.
//!
//! Before a process's exit is published, [`ProcessIo::flush`] waits until everything the
//! process wrote has been written out to the caller's paths.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::OFlags;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::Status;
use wharf_executor::{Stdio, StdioFds};

use crate::fdio::{AsyncOwnedFd, set_nonblocking};

/// Output kept for a fifo without a reader, per stream.
pub(crate) const BACKLOG_LIMIT: usize = 1 << 20;
/// How often a fifo that lost its reader is re-opened to see whether one came back.
const RECONNECT_INTERVAL: Duration = Duration::from_millis(100);
/// How long, after its process exited, a pump keeps trying to deliver kept output to a fifo
/// that has no reader.
const LINGER_FOR_READER: Duration = Duration::from_secs(30);
/// A terminal has no EOF while a background process still holds it: after the process
/// exited, its output counts as written once the terminal has been quiet this long.
const TERMINAL_QUIET: Duration = Duration::from_millis(100);

/// The stdio a caller asked for, as paths.
#[derive(Debug, Clone, Default)]
pub(crate) struct StdioPaths {
    pub(crate) stdin: String,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) terminal: bool,
}

/// Stdio opened for a process about to be created: what to hand the executor, and the
/// pumps to start once the process exists.
#[derive(Debug)]
pub(crate) struct PreparedIo {
    stdin: Option<Endpoint>,
    stdout: Option<Endpoint>,
    stderr: Option<Endpoint>,
    terminal: bool,
}

/// The far end of a pump.
#[derive(Debug)]
enum Endpoint {
    /// Non-terminal: our side of the pipe, and the caller's fifo.
    Pipe { ours: OwnedFd, fifo: PathBuf },
    /// Terminal: the caller's stream, copied to or from the master.
    ForTerminal(Target),
}

/// Where a terminal's stream goes.
#[derive(Debug)]
enum Target {
    Fifo(PathBuf),
    File(File),
    /// The caller's pty slave (its `console`), made raw.
    Terminal(OwnedFd),
}

/// The running pumps of one process.
#[derive(Debug, Default)]
pub(crate) struct ProcessIo {
    outputs: Vec<OutputPump>,
    stdin: Option<JoinHandle<()>>,
    console: Option<OwnedFd>,
}

#[derive(Debug)]
struct OutputPump {
    barriers: mpsc::UnboundedSender<oneshot::Sender<()>>,
}

fn not_found(path: &str, err: &io::Error) -> Status {
    Status::not_found(format!("stdio path {path} cannot be opened: {err}"))
}

/// Opens `path` for a stream and tells what it is. Never blocks: fifos are opened
/// non-blocking, and a fifo without a reader is reported as such.
enum Opened {
    Fifo,
    Direct(OwnedFd),
    /// The slave of a pseudo-terminal the caller holds the master of (a `console`).
    Terminal(OwnedFd),
}

/// Whether `rdev` is a Unix98 pseudo-terminal slave (`/dev/pts/N`: majors 136 to 143).
fn is_pty_slave(rdev: u64) -> bool {
    (136..=143).contains(&rustix::fs::major(rdev))
}

/// Opens the caller's pty slave for copying to and from, and makes it raw: bytes pass
/// unchanged, with no echo, line editing or newline translation of its own.
fn open_terminal(path: &str) -> Result<OwnedFd, Status> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|err| not_found(path, &err.into()))?;
    let mut termios = rustix::termios::tcgetattr(&fd)
        .map_err(|err| Status::invalid_argument(format!("{path} is not a terminal: {err}")))?;
    termios.make_raw();
    rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &termios)
        .map_err(|err| Status::internal(format!("making terminal {path} raw: {err}")))?;
    Ok(fd)
}

fn open_stream(path: &str, write: bool) -> Result<Opened, Status> {
    let p = Path::new(path);
    if !p.is_absolute() || path.contains('\0') {
        return Err(Status::invalid_argument(format!(
            "stdio path {path:?} is not absolute or contains a NUL byte"
        )));
    }
    let metadata = std::fs::metadata(p).map_err(|err| not_found(path, &err))?;
    let file_type = metadata.file_type();
    if file_type.is_fifo() {
        return Ok(Opened::Fifo);
    }
    if file_type.is_char_device() && is_pty_slave(std::os::unix::fs::MetadataExt::rdev(&metadata)) {
        return open_terminal(path).map(Opened::Terminal);
    }
    let is_dev_null =
        file_type.is_char_device() && p.canonicalize().is_ok_and(|c| c == Path::new("/dev/null"));
    if !(file_type.is_file() || is_dev_null) {
        return Err(Status::invalid_argument(format!(
            "stdio path {path} is neither a fifo, a regular file, a pseudo-terminal nor /dev/null"
        )));
    }
    if file_type.is_file() && on_kernel_filesystem(p) {
        return Err(Status::invalid_argument(format!(
            "stdio path {path} is on a kernel filesystem (proc, sysfs, cgroup)"
        )));
    }
    let file = if write {
        std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(libc_flags(OFlags::NOCTTY))
            .open(p)
    } else {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_flags(OFlags::NOCTTY))
            .open(p)
    };
    file.map(|f| Opened::Direct(f.into()))
        .map_err(|err| not_found(path, &err))
}

fn libc_flags(flags: OFlags) -> i32 {
    flags.bits() as i32
}

fn on_kernel_filesystem(path: &Path) -> bool {
    const PROC: i64 = 0x9fa0;
    const SYSFS: i64 = 0x6265_6572;
    const CGROUP: i64 = 0x0027_e0eb;
    const CGROUP2: i64 = 0x6367_7270;
    const DEBUGFS: i64 = 0x6462_6720;
    const SECURITYFS: i64 = 0x7363_6673;
    rustix::fs::statfs(path).is_ok_and(|fs| {
        // `f_type`'s integer type differs between architectures.
        #[allow(clippy::useless_conversion)]
        let magic = i64::from(fs.f_type);
        matches!(
            magic,
            PROC | SYSFS | CGROUP | CGROUP2 | DEBUGFS | SECURITYFS
        )
    })
}

fn terminal_only(path: &str) -> Status {
    Status::invalid_argument(format!(
        "stdio path {path} is a pseudo-terminal, which only a terminal process can use"
    ))
}

fn dev_null(write: bool) -> Result<OwnedFd, Status> {
    let file = if write {
        std::fs::OpenOptions::new().write(true).open("/dev/null")
    } else {
        File::open("/dev/null")
    };
    file.map(OwnedFd::from)
        .map_err(|err| Status::internal(format!("opening /dev/null: {err}")))
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd), Status> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|err| Status::internal(format!("creating a pipe: {err}")))
}

impl PreparedIo {
    /// Opens the caller's paths. Returns the stdio for the executor and the prepared pumps.
    ///
    /// # Errors
    /// `NotFound` for a missing path, `InvalidArgument` for a relative path or one that is
    /// not a fifo, regular file or `/dev/null`.
    pub(crate) fn open(paths: &StdioPaths) -> Result<(Stdio, PreparedIo), Status> {
        if paths.terminal {
            let target = |path: &str, write| -> Result<Option<Endpoint>, Status> {
                if path.is_empty() {
                    return Ok(None);
                }
                let target = match open_stream(path, write)? {
                    Opened::Fifo => Target::Fifo(path.into()),
                    Opened::Direct(fd) => Target::File(fd.into()),
                    Opened::Terminal(fd) => Target::Terminal(fd),
                };
                Ok(Some(Endpoint::ForTerminal(target)))
            };
            let prepared = PreparedIo {
                stdin: target(&paths.stdin, false)?,
                stdout: target(&paths.stdout, true)?,
                stderr: None,
                terminal: true,
            };
            return Ok((Stdio::Terminal, prepared));
        }

        let (stdin_fd, stdin) = match paths.stdin.as_str() {
            "" => (dev_null(false)?, None),
            path => match open_stream(path, false)? {
                Opened::Direct(fd) => (fd, None),
                Opened::Terminal(_) => return Err(terminal_only(path)),
                Opened::Fifo => {
                    let (theirs, ours) = pipe_pair()?;
                    (
                        theirs,
                        Some(Endpoint::Pipe {
                            ours,
                            fifo: path.into(),
                        }),
                    )
                }
            },
        };
        let output = |path: &str| -> Result<(OwnedFd, Option<Endpoint>), Status> {
            match path {
                "" => Ok((dev_null(true)?, None)),
                path => match open_stream(path, true)? {
                    Opened::Direct(fd) => Ok((fd, None)),
                    Opened::Terminal(_) => Err(terminal_only(path)),
                    Opened::Fifo => {
                        let (ours, theirs) = pipe_pair()?;
                        Ok((
                            theirs,
                            Some(Endpoint::Pipe {
                                ours,
                                fifo: path.into(),
                            }),
                        ))
                    }
                },
            }
        };
        let (stdout_fd, stdout) = output(&paths.stdout)?;
        let (stderr_fd, stderr) = output(&paths.stderr)?;
        let stdio = Stdio::Fds(StdioFds {
            stdin: stdin_fd,
            stdout: stdout_fd,
            stderr: stderr_fd,
        });
        Ok((
            stdio,
            PreparedIo {
                stdin,
                stdout,
                stderr,
                terminal: false,
            },
        ))
    }

    /// Starts the pumps, once the process exists. `console` is its terminal master, if any.
    pub(crate) fn start(self, console: Option<OwnedFd>) -> io::Result<ProcessIo> {
        let mut io = ProcessIo::default();
        if self.terminal {
            let Some(master) = console else {
                return Err(io::Error::other(
                    "the runtime returned no terminal for a terminal process",
                ));
            };
            set_nonblocking(&master)?;
            // Each pump registers its own duplicate: epoll refuses one fd registered twice.
            if let Some(Endpoint::ForTerminal(target)) = self.stdout {
                if let Target::Terminal(console) = &target
                    && let Ok(size) = rustix::termios::tcgetwinsize(console)
                {
                    // The process's terminal starts at the caller's size.
                    let _ = rustix::termios::tcsetwinsize(&master, size);
                }
                let source =
                    Source::Terminal(AsyncOwnedFd::new(master.try_clone()?, Interest::READABLE)?);
                io.outputs
                    .push(OutputPump::spawn(source, Sink::for_target(target)?));
            }
            if let Some(Endpoint::ForTerminal(target)) = self.stdin {
                let sink = InputSink::Terminal(AsyncOwnedFd::new(
                    master.try_clone()?,
                    Interest::WRITABLE,
                )?);
                io.stdin = Some(spawn_input(target, sink)?);
            }
            io.console = Some(master);
            return Ok(io);
        }
        for endpoint in [self.stdout, self.stderr].into_iter().flatten() {
            if let Endpoint::Pipe { ours, fifo } = endpoint {
                let source = Source::Pipe(pipe::Receiver::from_owned_fd(ours)?);
                io.outputs
                    .push(OutputPump::spawn(source, Sink::Fifo(FifoSink::new(fifo))));
            }
        }
        if let Some(Endpoint::Pipe { ours, fifo }) = self.stdin {
            let sink = InputSink::Pipe(pipe::Sender::from_owned_fd(ours)?);
            io.stdin = Some(spawn_input(Target::Fifo(fifo), sink)?);
        }
        Ok(io)
    }
}

impl ProcessIo {
    /// The terminal master, for resizing.
    pub(crate) fn console(&self) -> Option<&OwnedFd> {
        self.console.as_ref()
    }

    /// Waits until all output the (exited) process wrote has been written to the caller's
    /// paths, for at most `limit`; then stops copying stdin. Returns false on timeout.
    pub(crate) async fn flush(&mut self, limit: Duration) -> bool {
        let mut acks = Vec::new();
        for pump in &self.outputs {
            let (tx, rx) = oneshot::channel();
            if pump.barriers.send(tx).is_ok() {
                acks.push(rx);
            }
        }
        let all = async {
            for ack in acks {
                // An error means the pump ended, which is as good as flushed.
                let _ = ack.await;
            }
        };
        let flushed = tokio::time::timeout(limit, all).await.is_ok();
        if let Some(stdin) = self.stdin.take() {
            stdin.abort();
        }
        flushed
    }
}

/// What an output pump reads.
enum Source {
    Pipe(pipe::Receiver),
    Terminal(AsyncOwnedFd),
}

/// The outcome of one non-blocking read.
enum ReadOutcome {
    Data(usize),
    Empty,
    End,
}

impl Source {
    async fn readable(&self) -> io::Result<()> {
        match self {
            Source::Pipe(pipe) => pipe.readable().await,
            Source::Terminal(fd) => fd.readable().await,
        }
    }

    /// Reads what is available. For a pipe this trusts tokio's cached readiness (and
    /// clears it), so `Empty` may only mean "no wake-up yet": see [`Source::read_now`].
    fn try_read(&self, buf: &mut [u8]) -> io::Result<ReadOutcome> {
        match self {
            Source::Pipe(pipe) => classify_read(pipe.try_read(buf)),
            Source::Terminal(_) => self.read_now(buf),
        }
    }

    /// Reads with a real `read(2)`, so `Empty` means the kernel holds nothing more.
    fn read_now(&self, buf: &mut [u8]) -> io::Result<ReadOutcome> {
        let fd = match self {
            Source::Pipe(pipe) => pipe.as_fd(),
            Source::Terminal(fd) => fd.as_fd(),
        };
        classify_read(rustix::io::read(fd, buf).map_err(io::Error::from))
    }

    fn is_terminal(&self) -> bool {
        matches!(self, Source::Terminal(_))
    }
}

fn classify_read(result: io::Result<usize>) -> io::Result<ReadOutcome> {
    match result {
        Ok(0) => Ok(ReadOutcome::End),
        Ok(n) => Ok(ReadOutcome::Data(n)),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(ReadOutcome::Empty),
        // A terminal master reads EIO once no process holds the terminal.
        Err(err) if err.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
            Ok(ReadOutcome::End)
        }
        Err(err) => Err(err),
    }
}

/// Where an output pump writes.
enum Sink {
    Fifo(FifoSink),
    File(File),
    /// The caller's pty slave; `None` once the caller closed its master.
    Terminal(Option<AsyncOwnedFd>),
}

impl Sink {
    fn for_target(target: Target) -> io::Result<Self> {
        Ok(match target {
            Target::Fifo(path) => Sink::Fifo(FifoSink::new(path)),
            Target::File(file) => Sink::File(file),
            Target::Terminal(fd) => {
                Sink::Terminal(Some(AsyncOwnedFd::new(fd, Interest::WRITABLE)?))
            }
        })
    }

    async fn write(&mut self, data: &[u8]) {
        match self {
            Sink::Fifo(fifo) => fifo.write(data).await,
            Sink::File(file) => {
                if let Err(err) = file.write_all(data) {
                    tracing::warn!(error = %err, "writing container output to a file");
                }
            }
            Sink::Terminal(terminal) => {
                if let Some(fd) = terminal
                    && let Err(err) = fd.write_all(data).await
                {
                    // The caller closed its end: drop output from now on.
                    tracing::debug!(error = %err, "the caller's terminal went away");
                    *terminal = None;
                }
            }
        }
    }

    fn is_waiting_for_reader(&self) -> bool {
        matches!(self, Sink::Fifo(fifo) if fifo.writer.is_none() && !fifo.backlog.is_empty())
    }

    async fn retry(&mut self) {
        if let Sink::Fifo(fifo) = self {
            fifo.write(&[]).await;
        }
    }
}

/// A fifo written without ever blocking on, or dying of, a missing reader.
struct FifoSink {
    path: PathBuf,
    writer: Option<pipe::Sender>,
    backlog: VecDeque<u8>,
    dropped: u64,
}

impl FifoSink {
    fn new(path: PathBuf) -> Self {
        let mut sink = Self {
            path,
            writer: None,
            backlog: VecDeque::new(),
            dropped: 0,
        };
        sink.reconnect();
        sink
    }

    /// Opens the fifo for writing if it has a reader now.
    fn reconnect(&mut self) {
        if self.writer.is_some() {
            return;
        }
        match pipe::OpenOptions::new().open_sender(&self.path) {
            Ok(writer) => {
                if self.dropped > 0 {
                    tracing::warn!(path = %self.path.display(), bytes = self.dropped, "container output dropped while the fifo had no reader");
                    self.dropped = 0;
                }
                self.writer = Some(writer);
            }
            // ENXIO: no reader yet.
            Err(err) if err.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {}
            Err(err) => {
                tracing::debug!(path = %self.path.display(), error = %err, "re-opening output fifo")
            }
        }
    }

    /// Writes `data` after any kept output; keeps what no reader is there to take.
    async fn write(&mut self, data: &[u8]) {
        self.reconnect();
        if let Some(writer) = &mut self.writer {
            let (front, back) = self.backlog.as_slices();
            let mut result = Ok(());
            let mut written = 0;
            for chunk in [front, back, data] {
                if result.is_ok() && !chunk.is_empty() {
                    result = write_counting(writer, chunk, &mut written).await;
                }
            }
            match result {
                Ok(()) => {
                    self.backlog.clear();
                    return;
                }
                Err(err) => {
                    if err.kind() != io::ErrorKind::BrokenPipe {
                        tracing::warn!(path = %self.path.display(), error = %err, "writing container output to its fifo");
                    }
                    // The reader went away: keep what was not written.
                    self.writer = None;
                    let from_backlog = written.min(self.backlog.len());
                    self.backlog.drain(..from_backlog);
                    let from_data = written - from_backlog;
                    self.keep(&data[from_data.min(data.len())..]);
                    return;
                }
            }
        }
        self.keep(data);
    }

    fn keep(&mut self, data: &[u8]) {
        self.backlog.extend(data);
        if self.backlog.len() > BACKLOG_LIMIT {
            let excess = self.backlog.len() - BACKLOG_LIMIT;
            self.backlog.drain(..excess);
            self.dropped += excess as u64;
        }
    }
}

async fn write_counting(
    writer: &mut pipe::Sender,
    chunk: &[u8],
    written: &mut usize,
) -> io::Result<()> {
    let mut rest = chunk;
    while !rest.is_empty() {
        let n = writer.write(rest).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        *written += n;
        rest = &rest[n..];
    }
    Ok(())
}

impl OutputPump {
    fn spawn(source: Source, sink: Sink) -> Self {
        let (barriers, rx) = mpsc::unbounded_channel();
        tokio::spawn(pump_output(source, sink, rx));
        Self { barriers }
    }
}

/// Copies `source` to `sink` until EOF. A barrier is acknowledged once everything written
/// to `source` before the barrier arrived has been passed to `sink`: for a pipe, when the
/// pipe is found empty after the barrier (the exited process cannot write more).
async fn pump_output(
    source: Source,
    mut sink: Sink,
    mut barriers: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut retry = tokio::time::interval(RECONNECT_INTERVAL);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut barriers_open = true;
    loop {
        // While a barrier waits, ask the kernel itself whether the pipe is drained: tokio's
        // cached readiness may not have seen the data yet.
        let outcome = if waiting.is_empty() {
            source.try_read(&mut buf)
        } else {
            source.read_now(&mut buf)
        };
        match outcome {
            Ok(ReadOutcome::Data(n)) => {
                sink.write(&buf[..n]).await;
                continue;
            }
            Ok(ReadOutcome::End) => break,
            Ok(ReadOutcome::Empty) => {
                // Drained: everything written before the pending barriers is out, except on
                // a terminal, whose writer may still be held by a background process.
                if !source.is_terminal() {
                    for ack in waiting.drain(..) {
                        let _ = ack.send(());
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "reading container output");
                break;
            }
        }
        let quiet = tokio::time::sleep(TERMINAL_QUIET);
        tokio::select! {
            ready = source.readable() => {
                if let Err(err) = ready {
                    tracing::warn!(error = %err, "waiting for container output");
                    break;
                }
            }
            barrier = barriers.recv(), if barriers_open => match barrier {
                Some(ack) => waiting.push(ack),
                // The process record is gone; keep copying until EOF.
                None => barriers_open = false,
            },
            _ = retry.tick(), if sink.is_waiting_for_reader() => sink.retry().await,
            _ = quiet, if source.is_terminal() && !waiting.is_empty() => {
                for ack in waiting.drain(..) {
                    let _ = ack.send(());
                }
            }
        }
    }
    for ack in waiting.drain(..) {
        let _ = ack.send(());
    }
    barriers.close();
    // Output kept for a fifo without a reader: give a reader some time to come back.
    let deadline = tokio::time::Instant::now() + LINGER_FOR_READER;
    while sink.is_waiting_for_reader() && tokio::time::Instant::now() < deadline {
        retry.tick().await;
        sink.retry().await;
    }
}

/// Where a stdin pump writes.
enum InputSink {
    Pipe(pipe::Sender),
    Terminal(AsyncOwnedFd),
}

impl InputSink {
    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            InputSink::Pipe(pipe) => pipe.write_all(data).await,
            InputSink::Terminal(fd) => fd.write_all(data).await,
        }
    }
}

/// Starts copying the caller's stdin into the process.
fn spawn_input(target: Target, sink: InputSink) -> io::Result<JoinHandle<()>> {
    match target {
        Target::Fifo(path) => {
            // Non-blocking open for reading succeeds without a writer; reads then wait for
            // one, and see EOF only once a writer came and went.
            let fifo = pipe::OpenOptions::new().open_receiver(&path)?;
            Ok(tokio::spawn(pump_input(fifo, sink)))
        }
        Target::Terminal(fd) => {
            let terminal = AsyncOwnedFd::new(fd, Interest::READABLE)?;
            Ok(tokio::spawn(pump_terminal_input(terminal, sink)))
        }
        Target::File(mut file) => Ok(tokio::spawn(async move {
            let mut sink = sink;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match file.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
        })),
    }
}

/// Copies what the caller types on its terminal into the process's terminal.
async fn pump_terminal_input(terminal: AsyncOwnedFd, mut sink: InputSink) {
    let mut buf = vec![0u8; 64 * 1024];
    // 0 or EIO: the caller closed its master.
    while let Ok(n @ 1..) = terminal.read(&mut buf).await {
        if sink.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

async fn pump_input(fifo: pipe::Receiver, mut sink: InputSink) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if fifo.readable().await.is_err() {
            break;
        }
        match fifo.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if sink.write_all(&buf[..n]).await.is_err() {
                    // The process closed its stdin or exited.
                    break;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            Err(err) => {
                tracing::warn!(error = %err, "reading container stdin fifo");
                break;
            }
        }
    }
    // Dropping the sink closes the process's stdin: it reads EOF. (A terminal stays open.)
}
