//! `wharfd`'s configuration: defaults, then the TOML file, then flags (flags win).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::logging::LogFormat;

/// Where the configuration file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/wharf/wharfd.toml";

/// Where `cargo xtask setup` installs CRIU 4 (Debian 12's 3.17 fails on recent kernels).
pub const DEFAULT_CRIU_PATH: &str = "/usr/local/sbin/criu";

/// Which executor runs containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// A runc-compatible CLI (`runtime`: runc, crun), run by each container's shim.
    Runc,
    /// youki's libcontainer, in-process in each container's shim: no runtime binary. The
    /// default: it passes every test the runc executor passes and starts containers faster
    /// (no runtime process per operation).
    #[default]
    Libcontainer,
}

impl ExecutorKind {
    /// The name used in flags and the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Runc => "runc",
            Self::Libcontainer => "libcontainer",
        }
    }
}

/// The effective configuration of `wharfd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    /// The unix socket `types.API` is served on.
    pub listen: PathBuf,
    /// Where per-container state lives: `containers/<id>/` (each shim's directory) and
    /// `runc/` or `libcontainer/` (the executor's own state).
    pub state_dir: PathBuf,
    /// The machine id reported in `State` (default: the host name).
    pub id: String,
    /// Log at debug level.
    pub debug: bool,
    /// Log line format.
    pub log_format: LogFormat,
    /// Which executor runs containers.
    pub executor: ExecutorKind,
    /// The runc-compatible binary (`runc`, `crun`, or a path), for the runc executor.
    pub runtime: PathBuf,
    /// The `wharf-shim` binary (default: next to `wharfd`, else from `PATH`).
    pub shim: PathBuf,
    /// How many events the journal keeps for `wharf.v1.Events` replay.
    pub event_retention: usize,
    /// For how long after a start `types.API` Events streams also get the exits that
    /// happened while no daemon ran, in seconds.
    pub replay_window_secs: u64,
    /// On SIGTERM/SIGINT, stop every container (SIGTERM, then SIGKILL after `stop-timeout-secs`)
    /// before exiting, instead of leaving them running under their shims.
    pub stop_containers_on_exit: bool,
    /// How long stopping containers may take before SIGKILL, in seconds.
    pub stop_timeout_secs: u64,
    /// How often `GetStats` samples a container, in milliseconds.
    pub stats_interval_ms: u64,
    /// The CRIU binary for checkpoints and restores.
    pub criu_path: PathBuf,
    /// Where to serve Prometheus metrics over HTTP (`/metrics`), e.g. `127.0.0.1:9323`;
    /// none by default. Anyone who can reach it sees every container's id and usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Users, besides the daemon's own, that may call the API. When this or
    /// `allowed-gids` is set, the socket is made reachable by every local user (0666) and
    /// each request is checked against the caller's credentials (`SO_PEERCRED`); callers
    /// not listed get `PermissionDenied`. Empty by default: the socket is 0600.
    pub allowed_uids: Vec<u32>,
    /// Groups whose members (primary or supplementary group) may call the API; see
    /// `allowed-uids`.
    pub allowed_gids: Vec<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: PathBuf::from("/run/wharf/wharf.sock"),
            state_dir: PathBuf::from("/run/wharf"),
            id: hostname(),
            debug: false,
            log_format: LogFormat::Text,
            executor: ExecutorKind::Libcontainer,
            runtime: PathBuf::from("runc"),
            shim: default_shim(),
            event_retention: 10_000,
            replay_window_secs: 10,
            stop_containers_on_exit: false,
            stop_timeout_secs: 10,
            stats_interval_ms: 1000,
            criu_path: PathBuf::from(DEFAULT_CRIU_PATH),
            metrics_address: None,
            allowed_uids: Vec::new(),
            allowed_gids: Vec::new(),
        }
    }
}

/// Flags, each overriding the file when given.
#[derive(Debug, Default, clap::Args)]
pub struct ConfigFlags {
    /// Unix socket to serve the API on.
    #[arg(short = 'l', long, value_name = "PATH")]
    pub listen: Option<PathBuf>,
    /// Directory for runtime state (container state dirs, runtime root).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Machine id reported in State (default: host name).
    #[arg(long)]
    pub id: Option<String>,
    /// Log at debug level.
    #[arg(long)]
    pub debug: bool,
    /// Log line format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Which executor runs containers.
    #[arg(long, value_enum)]
    pub executor: Option<ExecutorKind>,
    /// runc-compatible runtime binary.
    #[arg(long, value_name = "BIN")]
    pub runtime: Option<PathBuf>,
    /// The wharf-shim binary.
    #[arg(long, value_name = "BIN")]
    pub shim: Option<PathBuf>,
    /// Events the journal keeps for replay (wharf.v1.Events).
    #[arg(long, value_name = "N")]
    pub event_retention: Option<usize>,
    /// Seconds after start during which new Events streams also get the exits recovered
    /// from the time no daemon ran.
    #[arg(long, value_name = "SECS")]
    pub replay_window: Option<u64>,
    /// On SIGTERM/SIGINT, stop every container before exiting.
    #[arg(long)]
    pub stop_containers_on_exit: bool,
    /// Seconds stopping containers may take before SIGKILL.
    #[arg(long, value_name = "SECS")]
    pub stop_timeout: Option<u64>,
    /// Milliseconds between two samples of a GetStats stream.
    #[arg(long, value_name = "MS")]
    pub stats_interval: Option<u64>,
    /// The CRIU binary for checkpoints and restores.
    #[arg(long, value_name = "BIN")]
    pub criu_path: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9323).
    #[arg(long, value_name = "ADDR")]
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Users that may call the API besides the daemon's own (comma-separated uids).
    #[arg(long, value_name = "UIDS", value_delimiter = ',')]
    pub allowed_uids: Option<Vec<u32>>,
    /// Groups whose members may call the API (comma-separated gids).
    #[arg(long, value_name = "GIDS", value_delimiter = ',')]
    pub allowed_gids: Option<Vec<u32>>,
    /// Configuration file (TOML) [default: /etc/wharf/wharfd.toml if it exists].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl Config {
    /// The defaults, overlaid with the configuration file, overlaid with the flags.
    ///
    /// # Errors
    /// A file named by `--config` that cannot be read, or any file that does not parse.
    pub fn load(flags: &ConfigFlags) -> Result<Self> {
        let mut config = match &flags.config {
            Some(path) => Self::from_file(path)?,
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                Self::from_file(Path::new(DEFAULT_CONFIG_PATH))?
            }
            None => Self::default(),
        };
        if let Some(listen) = &flags.listen {
            config.listen.clone_from(listen);
        }
        if let Some(state_dir) = &flags.state_dir {
            config.state_dir.clone_from(state_dir);
        }
        if let Some(id) = &flags.id {
            config.id.clone_from(id);
        }
        config.debug |= flags.debug;
        if let Some(format) = flags.log_format {
            config.log_format = format;
        }
        if let Some(executor) = flags.executor {
            config.executor = executor;
        }
        if let Some(runtime) = &flags.runtime {
            config.runtime.clone_from(runtime);
        }
        if let Some(shim) = &flags.shim {
            config.shim.clone_from(shim);
        }
        if let Some(retention) = flags.event_retention {
            config.event_retention = retention;
        }
        if let Some(window) = flags.replay_window {
            config.replay_window_secs = window;
        }
        config.stop_containers_on_exit |= flags.stop_containers_on_exit;
        if let Some(timeout) = flags.stop_timeout {
            config.stop_timeout_secs = timeout;
        }
        if let Some(interval) = flags.stats_interval {
            config.stats_interval_ms = interval;
        }
        if let Some(criu) = &flags.criu_path {
            config.criu_path.clone_from(criu);
        }
        if let Some(address) = flags.metrics_address {
            config.metrics_address = Some(address);
        }
        if let Some(uids) = &flags.allowed_uids {
            config.allowed_uids.clone_from(uids);
        }
        if let Some(gids) = &flags.allowed_gids {
            config.allowed_gids.clone_from(gids);
        }
        config.resolve_relative_paths()?;
        Ok(config)
    }

    /// Makes relative paths absolute against the current directory: shims and the runtime
    /// run in other directories. A bare program name (`runc`) stays a `PATH` lookup.
    fn resolve_relative_paths(&mut self) -> Result<()> {
        let absolute = |path: &mut PathBuf| -> Result<()> {
            if path.is_relative() {
                *path = std::path::absolute(&*path)
                    .with_context(|| format!("resolving {}", path.display()))?;
            }
            Ok(())
        };
        absolute(&mut self.listen)?;
        absolute(&mut self.state_dir)?;
        for program in [&mut self.shim, &mut self.runtime] {
            if program.components().count() > 1 {
                absolute(program)?;
            }
        }
        Ok(())
    }

    fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }

    /// The configuration as TOML, as `--print-config` shows it.
    pub fn to_toml(&self) -> String {
        // Every field serializes to TOML; a failure would be a bug in this type.
        toml::to_string_pretty(self)
            .unwrap_or_else(|err| format!("# cannot render config: {err}\n"))
    }

    /// `<state-dir>/containers`: one directory per container, each its shim's home.
    pub fn containers_dir(&self) -> PathBuf {
        self.state_dir.join("containers")
    }

    /// `<state-dir>/<executor>`: the executor's state (runc's `--root`, libcontainer's
    /// root), private to wharf.
    pub fn executor_root(&self) -> PathBuf {
        self.state_dir.join(self.executor.as_str())
    }
}

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

fn default_shim() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("wharf-shim")))
        .filter(|shim| shim.is_file())
        .unwrap_or_else(|| PathBuf::from("wharf-shim"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wharfd.toml");
        std::fs::write(
            &file,
            "state-dir = \"/var/run/w\"\nruntime = \"crun\"\nid = \"from-file\"\n",
        )
        .unwrap();
        let flags = ConfigFlags {
            config: Some(file),
            id: Some("from-flag".into()),
            ..ConfigFlags::default()
        };
        let config = Config::load(&flags).unwrap();
        assert_eq!(config.state_dir, PathBuf::from("/var/run/w"));
        assert_eq!(config.runtime, PathBuf::from("crun"));
        assert_eq!(config.id, "from-flag");
        assert_eq!(
            config.listen,
            PathBuf::from("/run/wharf/wharf.sock"),
            "default kept"
        );
        assert_eq!(
            config.executor_root(),
            PathBuf::from("/var/run/w/libcontainer"),
            "the default executor's"
        );
    }

    #[test]
    fn unknown_keys_and_values_are_errors_that_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "lisen = \"/x\"\n").unwrap();
        let err = Config::load(&ConfigFlags {
            config: Some(file.clone()),
            ..ConfigFlags::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("bad.toml"), "{err:#}");
        std::fs::write(&file, "executor = \"runc\"\n").unwrap();
        let config = Config::load(&ConfigFlags {
            config: Some(file.clone()),
            ..ConfigFlags::default()
        })
        .unwrap();
        assert_eq!(config.executor, ExecutorKind::Runc);
        assert!(config.executor_root().ends_with("runc"));
        std::fs::write(&file, "executor = \"docker\"\n").unwrap();
        assert!(
            Config::load(&ConfigFlags {
                config: Some(file),
                ..ConfigFlags::default()
            })
            .is_err()
        );
    }

    #[test]
    fn relative_paths_become_absolute_but_program_names_stay() {
        let flags = ConfigFlags {
            shim: Some("target/debug/wharf-shim".into()),
            state_dir: Some("state".into()),
            runtime: Some("crun".into()),
            ..ConfigFlags::default()
        };
        let config = Config::load(&flags).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(config.shim, cwd.join("target/debug/wharf-shim"));
        assert_eq!(config.state_dir, cwd.join("state"));
        assert_eq!(config.runtime, PathBuf::from("crun"));
    }

    #[test]
    fn printed_config_parses_back_to_the_same() {
        let config = Config::default();
        let parsed: Config = toml::from_str(&config.to_toml()).unwrap();
        assert_eq!(parsed, config);
    }
}
