//! `wharfd --metrics-address`: a scrape promtool accepts, daemon metrics that follow what
//! happens, and per-container series that exist exactly while their container lives.

use rstest::rstest;
use rstest_reuse::apply;
use wharf_api::{CreateContainerRequest, SignalRequest, StatsRequest};
use wharf_tests::bundle::Bundle;
use wharf_tests::daemon::DaemonFixture;
use wharf_tests::metrics::{assert_promtool_passes, free_address, http_status, scrape, value};
use wharf_tests::require_containers;
use wharf_tests::{ExecutorKind, executors};

#[apply(executors)]
#[tokio::test]
async fn the_scrape_passes_promtool_and_a_deleted_container_s_series_disappear(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    let address = free_address();
    let mut daemon =
        DaemonFixture::start_with(executor, &["--metrics-address", &address.to_string()]).await;
    let (busy, idle) = ("me-busy", "me-idle");
    let bundles = [
        Bundle::new(busy, &["sh", "-c", "while :; do :; done"]),
        Bundle::new(idle, &["sleep", "1000"]),
    ];
    let mut events = daemon.events().await;
    let mut inits = Vec::new();
    for (id, bundle) in [busy, idle].into_iter().zip(&bundles) {
        daemon.track(id);
        let pid = daemon
            .client()
            .create_container(CreateContainerRequest {
                id: id.into(),
                bundle_path: bundle.path_string(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("CreateContainer {id}: {status}"))
            .into_inner()
            .pid;
        inits.push(pid);
    }
    let missing = daemon
        .client()
        .get_stats(StatsRequest { id: "nope".into() })
        .await
        .expect_err("GetStats of an unknown id");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let live = scrape(address).await;
    assert_promtool_passes(module_path!(), &live);
    let series = |name: &str, id: &str| format!("{name}{{container_id=\"{id}\"}}");
    for id in [busy, idle] {
        for name in [
            "wharf_container_cpu_usage_seconds_total",
            "wharf_container_memory_usage_bytes",
            "wharf_container_pids",
        ] {
            assert!(
                value(&live, &series(name, id)).is_some(),
                "{} in:\n{live}",
                series(name, id)
            );
        }
    }
    assert!(value(&live, &series("wharf_container_memory_usage_bytes", idle)).unwrap() > 0.0);
    assert_eq!(
        value(&live, &series("wharf_container_pids", idle)),
        Some(1.0)
    );
    assert_eq!(
        value(&live, "wharf_containers_running"),
        Some(2.0),
        "{live}"
    );
    assert_eq!(value(&live, "wharf_shims_alive"), Some(2.0), "{live}");
    assert_eq!(value(&live, "wharf_event_subscribers"), Some(1.0), "{live}");
    assert_eq!(
        value(&live, "wharf_container_starts_total"),
        Some(2.0),
        "{live}"
    );
    assert_eq!(
        value(&live, "wharf_container_start_duration_seconds_count"),
        Some(2.0)
    );
    let calls = |method: &str, code: &str| {
        format!("wharf_grpc_requests_total{{method=\"types.API/{method}\",code=\"{code}\"}}")
    };
    assert_eq!(
        value(&live, &calls("CreateContainer", "OK")),
        Some(2.0),
        "{live}"
    );
    assert_eq!(
        value(&live, &calls("GetStats", "NotFound")),
        Some(1.0),
        "{live}"
    );

    daemon
        .client()
        .signal(SignalRequest {
            id: busy.into(),
            pid: 0,
            signal: 9,
        })
        .await
        .expect("Signal");
    events.of_container_until_exit(busy, inits[0]).await;
    let after = scrape(address).await;
    assert_promtool_passes(module_path!(), &after);
    assert!(
        !after.contains(&format!("container_id=\"{busy}\"")),
        "the deleted container's series are gone:\n{after}"
    );
    assert!(
        value(&after, &series("wharf_container_pids", idle)).is_some(),
        "{after}"
    );
    assert_eq!(
        value(&after, "wharf_containers_running"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        value(&after, "wharf_container_exits_total"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(value(&after, &calls("Signal", "OK")), Some(1.0), "{after}");

    assert_eq!(http_status(address, "GET", "/"), "HTTP/1.0 404 Not Found");
    assert_eq!(
        http_status(address, "GET", "/metricsx"),
        "HTTP/1.0 404 Not Found"
    );
    assert_eq!(
        http_status(address, "POST", "/metrics"),
        "HTTP/1.0 405 Method Not Allowed"
    );
    assert_eq!(http_status(address, "GET", "/metrics"), "HTTP/1.0 200 OK");

    daemon
        .client()
        .signal(SignalRequest {
            id: idle.into(),
            pid: 0,
            signal: 9,
        })
        .await
        .expect("Signal");
    events.of_container_until_exit(idle, inits[1]).await;
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[tokio::test]
async fn a_taken_metrics_address_fails_the_start_and_names_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    let address = taken.local_addr().expect("its address").to_string();
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let output = tokio::process::Command::new(wharf_tests::system::wharf_binary("wharfd"))
        .arg("--listen")
        .arg(scratch.path().join("wharf.sock"))
        .arg("--state-dir")
        .arg(scratch.path().join("state"))
        .args(["--metrics-address", &address])
        .output()
        .await
        .expect("running wharfd");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("binding the metrics address {address}")),
        "{stderr}"
    );
    assert!(
        !scratch.path().join("wharf.sock").exists(),
        "a failed start leaves no socket"
    );
}

#[tokio::test]
async fn wharf_metrics_says_where_it_looked_when_no_daemon_serves_metrics() {
    let nowhere = free_address();
    let output = tokio::process::Command::new(wharf_tests::system::wharf_binary("wharf"))
        .args(["metrics", "--metrics-address", &nowhere.to_string()])
        .output()
        .await
        .expect("running wharf");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("--metrics-address {nowhere}")),
        "{stderr}"
    );
}
