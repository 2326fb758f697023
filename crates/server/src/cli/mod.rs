//! `wharf`: a command-line client of `wharfd`, modelled on containerd's 2015 `ctr`.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool: printing is its job

mod attach;
mod table;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{CommandFactory, Parser, Subcommand};
use tonic::transport::Channel;
use wharf_api::{
    AddProcessRequest, ApiClient, CreateContainerRequest, EventsRequest, SignalRequest,
    StateRequest, UpdateContainerRequest, User,
};

use table::Table;

/// Drive wharfd: run containers and processes, signal, pause, and watch their events.
#[derive(Debug, Parser)]
#[command(name = "wharf", version)]
pub struct Cli {
    /// wharfd's socket.
    #[arg(
        long,
        global = true,
        env = "WHARF_ADDRESS",
        default_value = "/run/wharf/wharf.sock"
    )]
    address: PathBuf,
    /// Print JSON for scripts (one object per line for event streams) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List and manage containers (`wharf containers` lists them).
    Containers {
        #[command(subcommand)]
        command: Option<Containers>,
    },
    /// List, make and delete checkpoints of a container (CRIU).
    Checkpoints {
        #[command(subcommand)]
        command: Checkpoints,
    },
    /// Print events as they happen, until interrupted.
    Events {
        /// Replay the journaled events after this sequence number first (0: all kept), and
        /// show each one's sequence number and time.
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
    },
    /// Print the daemon's state: the machine and every container with its processes.
    State,
    /// Print the daemon's Prometheus metrics (a scrape of its metrics address).
    Metrics {
        /// Where wharfd serves metrics (its `--metrics-address`).
        #[arg(
            long,
            env = "WHARF_METRICS_ADDRESS",
            default_value = "127.0.0.1:9323",
            value_name = "ADDR"
        )]
        metrics_address: std::net::SocketAddr,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum Checkpoints {
    /// The checkpoints of a container's bundle, with their flags.
    List {
        /// The container's id.
        id: String,
    },
    /// Checkpoint a running container (it keeps running unless --exit).
    Create {
        /// The container's id.
        id: String,
        /// The checkpoint's name (a directory under <bundle>/checkpoints/).
        name: String,
        /// Stop the container after the dump.
        #[arg(long)]
        exit: bool,
        /// Allow established TCP connections.
        #[arg(long)]
        tcp: bool,
        /// Allow external unix sockets.
        #[arg(long)]
        unix_sockets: bool,
        /// Allow shell jobs.
        #[arg(long)]
        shell: bool,
    },
    /// Delete a checkpoint.
    Delete {
        /// The container's id.
        id: String,
        /// The checkpoint's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum Containers {
    /// List running containers.
    List,
    /// Create and start a container from an OCI bundle; print its init's pid.
    Start {
        /// The container's id.
        id: String,
        /// The bundle directory (holding config.json).
        bundle: PathBuf,
        /// Stay attached: copy stdio (a terminal bundle gets a pty, the local terminal goes
        /// raw) and exit with the container's exit status.
        #[arg(short, long)]
        attach: bool,
        /// Restore from this checkpoint of the bundle instead of starting its process.
        #[arg(long, value_name = "NAME")]
        checkpoint: Option<String>,
    },
    /// Run a process in a running container; print its pid.
    Exec {
        /// The container's id.
        #[arg(long)]
        id: String,
        /// Stay attached and exit with the process's exit status.
        #[arg(short, long)]
        attach: bool,
        /// Give the process a terminal.
        #[arg(short, long)]
        tty: bool,
        /// Working directory in the container [default: /].
        #[arg(long)]
        cwd: Option<String>,
        /// Environment variable, K=V (repeatable), added to the container's environment.
        #[arg(short, long = "env", value_name = "K=V")]
        env: Vec<String>,
        /// User id [default: 0].
        #[arg(short, long)]
        uid: Option<u32>,
        /// Group id [default: 0].
        #[arg(short, long)]
        gid: Option<u32>,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// Send a signal to a container's init, or to one of its processes.
    Kill {
        /// The container's id.
        id: String,
        /// The process (host pid) [default: the init].
        #[arg(short, long)]
        pid: Option<u32>,
        /// Number or name (9, KILL, SIGKILL).
        #[arg(short, long, default_value = "TERM", value_parser = parse_signal)]
        signal: u32,
    },
    /// Freeze every process of a container.
    Pause {
        /// The container's id.
        id: String,
    },
    /// Thaw a paused container.
    Resume {
        /// The container's id.
        id: String,
    },
    /// Print a container's resource use as it is sampled, until it exits (a row per
    /// sample; `--json`: one `types.Stats` object per line).
    Stats {
        /// The container's id.
        id: String,
        /// Stop after this many samples.
        #[arg(short = 'n', long)]
        count: Option<u64>,
    },
}

/// A signal by number or name (`9`, `KILL`, `SIGKILL`).
fn parse_signal(text: &str) -> Result<u32, String> {
    if let Ok(number) = text.parse::<u32>() {
        return Ok(number);
    }
    let name = text.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|signal| signal as u32)
        .map_err(|_| format!("unknown signal {text:?}"))
}

/// Runs the CLI; returns the process's exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("wharf: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // A read of our stdin may still block in a helper thread: do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("wharf: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// A gRPC status as the CLI prints it: the code's name, then the daemon's message.
fn rpc_error(status: tonic::Status) -> anyhow::Error {
    anyhow!("{}: {}", code_name(status.code()), status.message())
}

fn code_name(code: tonic::Code) -> String {
    // "NotFound" -> "not found"
    let name = format!("{code:?}");
    let mut spaced = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            spaced.push(' ');
        }
        spaced.push(c.to_ascii_lowercase());
    }
    spaced
}

async fn connect(cli: &Cli) -> Result<ApiClient<Channel>> {
    wharf_api::connect(&cli.address)
        .await
        .with_context(|| format!("cannot connect to wharfd at {}", cli.address.display()))
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "wharf", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::State => state(&cli).await,
        Command::Checkpoints { command } => checkpoints(&cli, command).await,
        Command::Metrics { metrics_address } => metrics(*metrics_address).await,
        Command::Events { since: None } => events(&cli).await,
        Command::Events { since: Some(seq) } => journaled_events(&cli, *seq).await,
        Command::Containers { command } => match command.as_ref().unwrap_or(&Containers::List) {
            Containers::List => list(&cli).await,
            Containers::Start {
                id,
                bundle,
                attach,
                checkpoint,
            } => start(&cli, id, bundle, *attach, checkpoint.as_deref()).await,
            Containers::Exec {
                id,
                attach,
                tty,
                cwd,
                env,
                uid,
                gid,
                args,
            } => {
                let request = AddProcessRequest {
                    id: id.clone(),
                    terminal: *tty,
                    user: Some(User {
                        uid: uid.unwrap_or(0),
                        gid: gid.unwrap_or(0),
                        additional_gids: Vec::new(),
                    }),
                    args: args.clone(),
                    env: env.clone(),
                    cwd: cwd.clone().unwrap_or_default(),
                    ..AddProcessRequest::default()
                };
                exec(&cli, request, *attach).await
            }
            Containers::Kill { id, pid, signal } => {
                let request = SignalRequest {
                    id: id.clone(),
                    pid: pid.unwrap_or(0),
                    signal: *signal,
                };
                connect(&cli)
                    .await?
                    .signal(request)
                    .await
                    .map_err(rpc_error)?;
                Ok(ExitCode::SUCCESS)
            }
            Containers::Pause { id } => update(&cli, id, "paused").await,
            Containers::Resume { id } => update(&cli, id, "running").await,
            Containers::Stats { id, count } => stats(&cli, id, *count).await,
        },
    }
}

async fn metrics(address: std::net::SocketAddr) -> Result<ExitCode> {
    use http_body_util::BodyExt;
    let unreachable = || {
        format!(
            "cannot reach wharfd's metrics at {address} (is wharfd started with --metrics-address {address}?)"
        )
    };
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .with_context(unreachable)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .with_context(unreachable)?;
    tokio::spawn(connection);
    let request = hyper::Request::get("/metrics")
        .header(hyper::header::HOST, address.to_string())
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .context("building the request")?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("GET http://{address}/metrics"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("reading http://{address}/metrics"))?
        .to_bytes();
    if !status.is_success() {
        return Err(anyhow!(
            "GET http://{address}/metrics answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    std::io::stdout()
        .write_all(&body)
        .context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

async fn stats(cli: &Cli, id: &str, count: Option<u64>) -> Result<ExitCode> {
    let mut stream = connect(cli)
        .await?
        .get_stats(wharf_api::StatsRequest { id: id.to_owned() })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let mut previous: Option<(std::time::Instant, u64)> = None;
    let mut printed = 0;
    if !cli.json {
        println!(
            "{:<10} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "TIME", "CPU%", "MEMORY", "NET RX", "NET TX", "BLOCK IN", "BLOCK OUT"
        );
    }
    while count.is_none_or(|count| printed < count) {
        let Some(sample) = stream.message().await.map_err(rpc_error)? else {
            break;
        };
        printed += 1;
        if cli.json {
            print_json(&sample)?;
            continue;
        }
        let cgroup = sample.cgroup_stats.clone().unwrap_or_default();
        let cpu_ns = cgroup
            .cpu_stats
            .and_then(|c| c.cpu_usage)
            .map_or(0, |u| u.total_usage);
        let now = std::time::Instant::now();
        let cpu_percent = previous.map_or(0.0, |(at, ns)| {
            let elapsed = now.duration_since(at).as_nanos().max(1) as f64;
            cpu_ns.saturating_sub(ns) as f64 * 100.0 / elapsed
        });
        previous = Some((now, cpu_ns));
        let memory = cgroup
            .memory_stats
            .and_then(|m| m.usage)
            .map_or(0, |u| u.usage);
        let (rx, tx) = sample
            .network_stats
            .iter()
            .fold((0, 0), |(rx, tx), n| (rx + n.rx_bytes, tx + n.tx_bytes));
        let blkio = cgroup.blkio_stats.unwrap_or_default();
        let bytes = |op: &str| -> u64 {
            blkio
                .io_service_bytes_recursive
                .iter()
                .filter(|e| e.op.eq_ignore_ascii_case(op))
                .map(|e| e.value)
                .sum()
        };
        println!(
            "{:<10} {:>6.1} {:>10} {:>10} {:>10} {:>10} {:>10}",
            sample.timestamp,
            cpu_percent,
            human_bytes(memory),
            human_bytes(rx),
            human_bytes(tx),
            human_bytes(bytes("read")),
            human_bytes(bytes("write")),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `1.5MiB`-style sizes.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

async fn list(cli: &Cli) -> Result<ExitCode> {
    let state = connect(cli)
        .await?
        .state(StateRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if cli.json {
        print_json(&state.containers)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(["ID", "STATUS", "PID", "PROCESSES", "BUNDLE"]);
    for container in &state.containers {
        table.row([
            container.id.clone(),
            container.status.clone(),
            container
                .processes
                .first()
                .map(|p| p.pid.to_string())
                .unwrap_or_default(),
            container.processes.len().to_string(),
            container.bundle_path.clone(),
        ]);
    }
    print!("{table}");
    Ok(ExitCode::SUCCESS)
}

async fn state(cli: &Cli) -> Result<ExitCode> {
    let state = connect(cli)
        .await?
        .state(StateRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if cli.json {
        print_json(&state)?;
        return Ok(ExitCode::SUCCESS);
    }
    let machine = state.machine.unwrap_or_default();
    println!(
        "machine {}: {} cpus, {:.1} GiB memory",
        machine.id,
        machine.cpus,
        machine.memory as f64 / f64::from(1u32 << 30)
    );
    let mut table = Table::new(["ID", "STATUS", "PID", "ARGS"]);
    for container in &state.containers {
        for (i, process) in container.processes.iter().enumerate() {
            let (id, status) = if i == 0 {
                (container.id.clone(), container.status.clone())
            } else {
                (String::new(), String::new())
            };
            table.row([id, status, process.pid.to_string(), process.args.join(" ")]);
        }
    }
    print!("{table}");
    Ok(ExitCode::SUCCESS)
}

async fn events(cli: &Cli) -> Result<ExitCode> {
    let mut stream = connect(cli)
        .await?
        .events(EventsRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    let columns = ["TYPE", "ID", "PID", "STATUS"];
    if !cli.json {
        print!("{}", Table::new(columns).header_only());
    }
    while let Some(event) = stream.message().await.map_err(rpc_error)? {
        if cli.json {
            print_json(&event)?;
        } else {
            let mut row = Table::new(columns);
            row.row([
                event.r#type,
                event.id,
                event.pid.to_string(),
                event.status.to_string(),
            ]);
            print!("{}", row.rows_only());
        }
        std::io::stdout().flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `events --since SEQ`: `wharf.v1.Events`, replay then live, with sequence numbers.
async fn journaled_events(cli: &Cli, after_seq: u64) -> Result<ExitCode> {
    let channel = wharf_api::channel(&cli.address)
        .await
        .with_context(|| format!("cannot connect to wharfd at {}", cli.address.display()))?;
    let mut stream = wharf_api::v1::EventsClient::new(channel)
        .subscribe(wharf_api::v1::SubscribeRequest { after_seq })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let columns = ["SEQ", "TIME", "TYPE", "ID", "PID", "STATUS"];
    if !cli.json {
        print!("{}", Table::new(columns).header_only());
    }
    while let Some(journaled) = stream.message().await.map_err(rpc_error)? {
        if cli.json {
            print_json(&journaled)?;
        } else {
            let event = journaled.event.unwrap_or_default();
            let mut row = Table::new(columns);
            row.row([
                journaled.seq.to_string(),
                format_time(journaled.unix_nanos),
                event.r#type,
                event.id,
                event.pid.to_string(),
                event.status.to_string(),
            ]);
            print!("{}", row.rows_only());
        }
        std::io::stdout().flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `unix_nanos` as UTC `HH:MM:SS.mmm` (the date is rarely what a person scans for).
fn format_time(unix_nanos: i64) -> String {
    let millis = unix_nanos.div_euclid(1_000_000);
    let day_millis = millis.rem_euclid(86_400_000);
    let (h, m, s, ms) = (
        day_millis / 3_600_000,
        day_millis / 60_000 % 60,
        day_millis / 1000 % 60,
        day_millis % 1000,
    );
    format!("{h:02}:{m:02}:{s:02}.{ms:03}")
}

async fn checkpoints(cli: &Cli, command: &Checkpoints) -> Result<ExitCode> {
    let mut client = connect(cli).await?;
    match command {
        Checkpoints::List { id } => {
            let checkpoints = client
                .list_checkpoint(wharf_api::ListCheckpointRequest { id: id.clone() })
                .await
                .map_err(rpc_error)?
                .into_inner()
                .checkpoints;
            if cli.json {
                for checkpoint in &checkpoints {
                    print_json(checkpoint)?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(["NAME", "EXIT", "TCP", "UNIX-SOCKETS", "SHELL"]);
            for c in &checkpoints {
                table.row([
                    c.name.clone(),
                    c.exit.to_string(),
                    c.tcp.to_string(),
                    c.unix_sockets.to_string(),
                    c.shell.to_string(),
                ]);
            }
            print!("{table}");
        }
        Checkpoints::Create {
            id,
            name,
            exit,
            tcp,
            unix_sockets,
            shell,
        } => {
            client
                .create_checkpoint(wharf_api::CreateCheckpointRequest {
                    id: id.clone(),
                    checkpoint: Some(wharf_api::Checkpoint {
                        name: name.clone(),
                        exit: *exit,
                        tcp: *tcp,
                        unix_sockets: *unix_sockets,
                        shell: *shell,
                    }),
                })
                .await
                .map_err(rpc_error)?;
        }
        Checkpoints::Delete { id, name } => {
            client
                .delete_checkpoint(wharf_api::DeleteCheckpointRequest {
                    id: id.clone(),
                    name: name.clone(),
                })
                .await
                .map_err(rpc_error)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn update(cli: &Cli, id: &str, status: &str) -> Result<ExitCode> {
    let request = UpdateContainerRequest {
        id: id.to_owned(),
        signal: 0,
        status: status.to_owned(),
    };
    connect(cli)
        .await?
        .update_container(request)
        .await
        .map_err(rpc_error)?;
    Ok(ExitCode::SUCCESS)
}

fn print_pid(cli: &Cli, pid: u32) -> Result<()> {
    if cli.json {
        print_json(&serde_json::json!({ "pid": pid }))
    } else {
        println!("{pid}");
        Ok(())
    }
}

async fn start(
    cli: &Cli,
    id: &str,
    bundle: &std::path::Path,
    attach: bool,
    checkpoint: Option<&str>,
) -> Result<ExitCode> {
    let bundle =
        std::path::absolute(bundle).with_context(|| format!("resolving {}", bundle.display()))?;
    let mut client = connect(cli).await?;
    let mut request = CreateContainerRequest {
        id: id.to_owned(),
        bundle_path: bundle.display().to_string(),
        checkpoint: checkpoint.unwrap_or_default().to_owned(),
        ..CreateContainerRequest::default()
    };
    let session = if attach {
        let terminal = attach::bundle_wants_terminal(&bundle)?;
        let session = attach::Session::open(&mut client, terminal).await?;
        session.fill_create(&mut request);
        Some(session)
    } else {
        None
    };
    let pid = client
        .create_container(request)
        .await
        .map_err(rpc_error)?
        .into_inner()
        .pid;
    finish(cli, session, id, pid).await
}

/// Attached: follow the process to its exit. Detached: print its pid.
async fn finish(
    cli: &Cli,
    session: Option<attach::Session>,
    id: &str,
    pid: u32,
) -> Result<ExitCode> {
    match session {
        Some(session) => session.run(id, pid).await,
        None => {
            print_pid(cli, pid)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn exec(cli: &Cli, mut request: AddProcessRequest, attach: bool) -> Result<ExitCode> {
    let mut client = connect(cli).await?;
    if !request.env.is_empty() {
        // The API replaces the environment; `--env` adds to the container's.
        let state = client
            .state(StateRequest {})
            .await
            .map_err(rpc_error)?
            .into_inner();
        let init_env = state
            .containers
            .iter()
            .find(|c| c.id == request.id)
            .and_then(|c| c.processes.first())
            .map(|p| p.env.clone())
            .unwrap_or_default();
        request.env = merge_env(&init_env, &request.env);
    }
    let id = request.id.clone();
    let session = if attach {
        let session = attach::Session::open(&mut client, request.terminal).await?;
        session.fill_exec(&mut request);
        Some(session)
    } else {
        None
    };
    let pid = client
        .add_process(request)
        .await
        .map_err(rpc_error)?
        .into_inner()
        .pid;
    finish(cli, session, &id, pid).await
}

/// `base` with each `K=V` of `overrides` replacing or adding `K`, order kept.
fn merge_env(base: &[String], overrides: &[String]) -> Vec<String> {
    let key = |entry: &str| entry.split_once('=').map_or(entry, |(k, _)| k).to_owned();
    let mut merged: Vec<String> = base
        .iter()
        .filter(|entry| !overrides.iter().any(|o| key(o) == key(entry)))
        .cloned()
        .collect();
    merged.extend(overrides.iter().cloned());
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_flags_add_to_and_override_the_containers_env() {
        let base = ["PATH=/bin".to_string(), "HOME=/root".to_string()];
        let merged = merge_env(&base, &["FOO=bar".into(), "HOME=/tmp".into()]);
        assert_eq!(merged, ["PATH=/bin", "FOO=bar", "HOME=/tmp"]);
    }

    #[test]
    fn signals_parse_by_number_and_name() {
        assert_eq!(parse_signal("9"), Ok(9));
        assert_eq!(parse_signal("KILL"), Ok(9));
        assert_eq!(parse_signal("sigterm"), Ok(15));
        assert_eq!(parse_signal("SIGUSR1"), Ok(10));
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn times_print_as_utc_clock_times() {
        assert_eq!(format_time(0), "00:00:00.000");
        assert_eq!(
            format_time((3_600_000 + 61_500) * 1_000_000),
            "01:01:01.500"
        );
    }

    #[test]
    fn codes_print_as_words() {
        assert_eq!(code_name(tonic::Code::NotFound), "not found");
        assert_eq!(code_name(tonic::Code::InvalidArgument), "invalid argument");
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
