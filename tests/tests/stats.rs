//! `GetStats` on real containers, with both executors: what the kernel counts shows up, a
//! stream ends cleanly when its container exits, streams share a sampler.

use std::time::{SystemTime, UNIX_EPOCH};

use rstest::rstest;
use rstest_reuse::apply;
use tonic::Streaming;
use tonic::transport::Channel;
use wharf_api::{AddProcessRequest, ApiClient, StateRequest, Stats, StatsRequest};
use wharf_executor::oci_spec::runtime::Capability;
use wharf_tests::bundle::Bundle;
use wharf_tests::daemon::DaemonFixture;
use wharf_tests::require_containers;
use wharf_tests::shim::DEADLINE;
use wharf_tests::{ExecutorKind, executors};

/// Samples every 100 ms, so that the tests wait little.
async fn daemon(executor: ExecutorKind) -> DaemonFixture {
    DaemonFixture::start_with(executor, &["--stats-interval", "100"]).await
}

async fn stats(client: &mut ApiClient<Channel>, id: &str) -> Streaming<Stats> {
    client
        .get_stats(StatsRequest { id: id.into() })
        .await
        .unwrap_or_else(|status| panic!("GetStats {id}: {status}"))
        .into_inner()
}

/// The next sample; panics if the stream ends or none comes within the deadline.
async fn next(stream: &mut Streaming<Stats>) -> Stats {
    match tokio::time::timeout(DEADLINE, stream.message()).await {
        Ok(Ok(Some(stats))) => stats,
        Ok(Ok(None)) => panic!("the stats stream ended while a sample was awaited"),
        Ok(Err(status)) => panic!("the stats stream failed: {status}"),
        Err(_) => panic!("no sample within {DEADLINE:?}"),
    }
}

/// Samples until one satisfies `done`; panics with `what` after the deadline.
async fn until(stream: &mut Streaming<Stats>, what: &str, done: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let sample = tokio::time::timeout_at(deadline, next(stream))
            .await
            .unwrap_or_else(|_| panic!("no sample showed {what} within {DEADLINE:?}"));
        if done(&sample) {
            return sample;
        }
    }
}

fn cpu_ns(stats: &Stats) -> u64 {
    stats
        .cgroup_stats
        .as_ref()
        .and_then(|c| c.cpu_stats.as_ref())
        .and_then(|c| c.cpu_usage.as_ref())
        .map_or(0, |u| u.total_usage)
}

fn memory_bytes(stats: &Stats) -> u64 {
    stats
        .cgroup_stats
        .as_ref()
        .and_then(|c| c.memory_stats.as_ref())
        .and_then(|m| m.usage.as_ref())
        .map_or(0, |u| u.usage)
}

fn loopback_rx_packets(stats: &Stats) -> u64 {
    stats
        .network_stats
        .iter()
        .find(|n| n.name == "lo")
        .map_or(0, |n| n.rx_packets)
}

#[apply(executors)]
#[tokio::test]
async fn a_busy_container_s_cpu_time_rises_between_samples(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = daemon(executor).await;
    let id = "st-busy";
    let bundle = Bundle::new(id, &["sh", "-c", "while :; do :; done"]);
    daemon.run(id, &bundle).await;
    let mut client = daemon.client();
    let mut stream = stats(&mut client, id).await;
    let first = next(&mut stream).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        first.timestamp.abs_diff(now) <= 5,
        "timestamp {} is Unix seconds, now {now}",
        first.timestamp
    );
    until(&mut stream, "the busy loop's CPU time rise", |s| {
        cpu_ns(s) > cpu_ns(&first)
    })
    .await;
    daemon.signal(id, 0, 9).await;
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn a_container_that_writes_64_mib_to_its_tmpfs_uses_that_much_memory(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    let mut daemon = daemon(executor).await;
    let id = "st-memory";
    let bundle = Bundle::new(
        id,
        &[
            "sh",
            "-c",
            "head -c 67108864 /dev/zero > /tmp/fill; exec sleep 1000",
        ],
    );
    daemon.run(id, &bundle).await;
    let mut client = daemon.client();
    let mut stream = stats(&mut client, id).await;
    until(&mut stream, "64 MiB of memory in use", |s| {
        memory_bytes(s) >= 64 << 20
    })
    .await;
    daemon.signal(id, 0, 9).await;
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn a_stream_ends_cleanly_when_its_container_exits_and_the_daemon_lives_on(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    let mut daemon = daemon(executor).await;
    let id = "st-exit";
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    daemon.run(id, &bundle).await;
    let mut client = daemon.client();
    let mut stream = stats(&mut client, id).await;
    next(&mut stream).await;
    daemon.signal(id, 0, 9).await;
    let end = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                other => return other,
            }
        }
    })
    .await
    .expect("the stream to end after the container's exit");
    assert!(matches!(end, Ok(None)), "ended with OK: {end:?}");
    client
        .state(StateRequest {})
        .await
        .expect("the daemon still answers");
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn two_streams_share_a_sampler_and_one_leaving_stops_nothing(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = daemon(executor).await;
    let id = "st-two";
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    daemon.run(id, &bundle).await;
    let mut client = daemon.client();
    let mut staying = stats(&mut client, id).await;
    let mut leaving = stats(&mut client, id).await;
    let (a, b) = (next(&mut staying).await, next(&mut leaving).await);
    assert!(a.timestamp > 0 && b.timestamp > 0);
    drop(leaving);
    for _ in 0..3 {
        next(&mut staying).await;
    }
    // A stream opened later gets the current sample at once, from the same sampler.
    let mut late = stats(&mut client, id).await;
    next(&mut late).await;
    daemon.signal(id, 0, 9).await;
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn network_counters_rise_when_a_container_pings_its_loopback(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = daemon(executor).await;
    let id = "st-ping";
    let bundle = Bundle::with(id, &["sleep", "1000"], |spec| {
        let mut process = spec.process().clone().unwrap();
        let mut caps = process.capabilities().clone().unwrap();
        let add = |set: &Option<std::collections::HashSet<Capability>>| {
            let mut set = set.clone().unwrap_or_default();
            set.insert(Capability::NetRaw);
            Some(set)
        };
        caps.set_bounding(add(caps.bounding()));
        caps.set_effective(add(caps.effective()));
        caps.set_permitted(add(caps.permitted()));
        process.set_capabilities(Some(caps));
        spec.set_process(Some(process));
    });
    daemon.run(id, &bundle).await;
    let mut client = daemon.client();
    let mut stream = stats(&mut client, id).await;
    let before = loopback_rx_packets(&next(&mut stream).await);
    let ping = client
        .add_process(AddProcessRequest {
            id: id.into(),
            args: ["ping", "-c", "3", "-i", "0.2", "127.0.0.1"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        })
        .await
        .expect("AddProcess ping")
        .into_inner()
        .pid;
    assert!(ping > 0);
    until(&mut stream, "6 more packets received on lo", |s| {
        loopback_rx_packets(s) >= before + 6
    })
    .await;
    daemon.signal(id, 0, 9).await;
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn the_cli_prints_a_row_or_a_json_line_per_sample(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = daemon(executor).await;
    let id = "st-cli";
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    daemon.run(id, &bundle).await;
    let cli = |args: &[&str]| {
        std::process::Command::new(wharf_tests::system::wharf_binary("wharf"))
            .arg("--address")
            .arg(&daemon.socket)
            .args(args)
            .output()
            .expect("running wharf")
    };
    let json = cli(&["--json", "containers", "stats", id, "--count", "2"]);
    assert!(json.status.success(), "{json:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(json.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].get("cgroupStats").is_some() || lines[0].get("cgroup_stats").is_some());
    let table = cli(&["containers", "stats", id, "-n", "2"]);
    let table = String::from_utf8(table.stdout).unwrap();
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "a header and two rows: {table}");
    assert!(
        rows[0].starts_with("TIME") && rows[0].contains("MEMORY"),
        "{table}"
    );
    let unknown = cli(&["containers", "stats", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    daemon.signal(id, 0, 9).await;
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn an_oom_kill_is_an_oom_event_before_the_exit_137(#[case] executor: ExecutorKind) {
    use wharf_executor::oci_spec::runtime::{LinuxMemoryBuilder, LinuxResourcesBuilder};
    require_containers!();
    let metrics = wharf_tests::metrics::free_address();
    let mut daemon = DaemonFixture::start_with(
        executor,
        &[
            "--stats-interval",
            "100",
            "--metrics-address",
            &metrics.to_string(),
        ],
    )
    .await;
    let id = "st-oom";
    // `tail` keeps the last 100 MB of an endless input: it grows until the kernel kills it.
    let bundle = Bundle::with(id, &["tail", "-c", "100000000", "/dev/zero"], |spec| {
        let mut linux = spec.linux().clone().unwrap();
        let resources = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(8i64 << 20)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        linux.set_resources(Some(resources));
        spec.set_linux(Some(linux));
    });
    let mut events = daemon.events().await;
    let init = daemon.run(id, &bundle).await;
    let seen: Vec<(String, u32)> = events
        .of_container_until_exit(id, init)
        .await
        .into_iter()
        .map(|(kind, _, status)| (kind, status))
        .collect();
    let oom = seen.iter().position(|(kind, _)| kind == "oom");
    assert!(oom.is_some(), "an oom event: {seen:?}");
    assert_eq!(
        seen.last(),
        Some(&("exit".to_owned(), 137)),
        "the exit comes last, 137: {seen:?}"
    );
    let scrape = wharf_tests::metrics::scrape(metrics).await;
    let ooms = wharf_tests::metrics::value(&scrape, "wharf_container_ooms_total");
    assert!(ooms >= Some(1.0), "OOM kills counted: {scrape}");
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}
