//! The binaries' log subscriber.

use tracing_subscriber::EnvFilter;

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
    // Our debug lines, not the HTTP/2 frames of every request.
    let default = if debug {
        "debug,h2=info,hyper=info,tower=info,tonic=info,loona_hpack=info"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_env("WHARF_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
