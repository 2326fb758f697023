//! `cargo xtask bench restart`: how fast a restarted `wharfd` takes its containers back.
//!
//! Starts `--containers` (100) sleep containers, SIGKILLs the daemon, starts it again and
//! times until `State` lists all of them (the daemon re-attaches before it serves, so this
//! includes process start, reading every record and dialing every shim). `--rounds` (3)
//! kills and restarts; prints each and the median. Target: at most 0.5 s.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::time::{Duration, Instant};

use wharf_api::{CreateContainerRequest, EventsRequest, SignalRequest, StateRequest};
use wharf_tests::ExecutorKind;
use wharf_tests::bench::numeric_flags;
use wharf_tests::bundle::Bundle;
use wharf_tests::daemon::DaemonFixture;
use wharf_tests::system::missing_prerequisite;

fn parse_args() -> (usize, usize) {
    let [containers, rounds] = numeric_flags("restart", [("--containers", 100), ("--rounds", 3)])
        .map(|n| usize::try_from(n).expect("a count that fits in usize"));
    (containers, rounds)
}

#[tokio::main]
async fn main() {
    let (count, rounds) = parse_args();
    if let Some(reason) = missing_prerequisite() {
        eprintln!("bench restart: {reason}");
        std::process::exit(1);
    }
    let mut daemon = DaemonFixture::start_quiet(ExecutorKind::Runc).await;
    eprintln!("bench restart: starting {count} containers");
    let bundles: Vec<Bundle> = (0..count)
        .map(|n| Bundle::new(&format!("rs-{n}"), &["sleep", "1000"]))
        .collect();
    let mut pids = Vec::new();
    for chunk in bundles.chunks(10) {
        let starts: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, bundle)| {
                let mut client = daemon.client();
                let id = format!("rs-{}", pids.len() + i);
                let request = CreateContainerRequest {
                    id: id.clone(),
                    bundle_path: bundle.path_string(),
                    ..Default::default()
                };
                tokio::spawn(async move {
                    (
                        id,
                        client
                            .create_container(request)
                            .await
                            .expect("CreateContainer")
                            .into_inner()
                            .pid,
                    )
                })
            })
            .collect();
        for start in starts {
            pids.push(start.await.unwrap());
        }
    }
    let mut samples = Vec::new();
    for round in 1..=rounds {
        daemon.kill9().await;
        let started = Instant::now();
        daemon.restart().await;
        let mut client = daemon.client();
        loop {
            let state = client
                .state(StateRequest {})
                .await
                .expect("State")
                .into_inner();
            if state.containers.len() == count {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "only {} of {count} listed",
                state.containers.len()
            );
        }
        let took = started.elapsed();
        println!(
            "round {round}: State lists all {count} containers {:.0} ms after the restart began",
            took.as_secs_f64() * 1000.0
        );
        samples.push(took);
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    println!(
        "\nre-attach of {count} containers: median {:.0} ms over {rounds} restarts (target <= 500 ms)",
        median.as_secs_f64() * 1000.0
    );

    let mut client = daemon.client();
    let mut events = client.events(EventsRequest {}).await.unwrap().into_inner();
    for (id, _) in &pids {
        client
            .signal(SignalRequest {
                id: id.clone(),
                pid: 0,
                signal: 9,
            })
            .await
            .expect("Signal");
    }
    let mut exits = 0;
    while exits < pids.len() {
        let event = events.message().await.unwrap().expect("an event");
        if event.r#type == "exit" {
            exits += 1;
        }
    }
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}
