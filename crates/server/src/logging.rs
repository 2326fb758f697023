//! The binaries' log subscriber.

use std::os::fd::AsFd;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Log line format.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the subscriber: to stderr, filtered by `WHARF_LOG` (e.g. `info,wharf_server=debug`),
/// else `debug` or `info`.
pub fn init(format: LogFormat, debug: bool) {
    init_with_writer(format, debug, std::io::stderr);
}

/// Like [`init`], but writes to a close-on-exec duplicate of stderr rather than to fd 2.
///
/// For a process that clones container processes from itself (the shim with libcontainer):
/// the clone sets its fd 2 to the container's stderr, yet keeps logging until it execs; its
/// lines must reach the shim's log, never the container's output.
pub fn init_on_private_stderr(format: LogFormat, debug: bool) {
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => init_with_writer(format, debug, Mutex::new(std::fs::File::from(fd))),
        Err(_) => init(format, debug),
    }
}

fn init_with_writer<W>(format: LogFormat, debug: bool, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // Our debug lines, not the HTTP/2 frames of every request.
    let default = if debug {
        "debug,h2=info,hyper=info,tower=info,tonic=info,loona_hpack=info"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_env("WHARF_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
