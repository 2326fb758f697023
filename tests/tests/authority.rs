//! Every gRPC client gets in, whatever HTTP/2 `:authority` it sends over the unix socket:
//! `localhost`, the raw socket path (2015 grpc-go, grpc-java) or the percent-encoded path
//! (grpc Python since 1.57, its default). A real grpcio client calls State, and
//! CreateContainer with an Events stream open, in each mode.

use std::path::PathBuf;
use std::time::Duration;

use prost::Message;
use rstest::rstest;
use wharf_api::{CreateContainerRequest, CreateContainerResponse, Event, StateResponse};
use wharf_tests::ExecutorKind;
use wharf_tests::bundle::Bundle;
use wharf_tests::daemon::DaemonFixture;
use wharf_tests::require_containers;
use wharf_tests::system::{skip_or_fail, target_dir};

/// The venv `cargo xtask setup` installs grpcio into.
fn grpc_python() -> Result<PathBuf, String> {
    let python = target_dir().join("grpc-venv/bin/python");
    let works = std::process::Command::new(&python)
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|out| out.status.success());
    if works {
        Ok(python)
    } else {
        Err(format!(
            "needs grpcio in {} (cargo xtask setup installs it)",
            python.display()
        ))
    }
}

/// Runs the generic client; returns its output lines (hex messages).
async fn grpc_call(python: &PathBuf, args: &[String]) -> Vec<Vec<u8>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/grpc_call.py");
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(python)
            .arg(script)
            .args(args)
            .output(),
    )
    .await
    .expect("the grpc client to finish")
    .expect("running the grpc client");
    assert!(
        output.status.success(),
        "grpc client {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| decode_hex(line.trim()))
        .collect()
}

fn decode_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex from the client"))
        .collect()
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[rstest]
#[case::percent_encoded_path("default")]
#[case::raw_socket_path("raw")]
#[case::localhost("localhost")]
#[tokio::test]
async fn grpc_python_reaches_state_create_and_events(#[case] authority: &str) {
    require_containers!();
    let python = match grpc_python() {
        Ok(python) => python,
        Err(reason) => return skip_or_fail(module_path!(), &reason),
    };
    let mut daemon =
        DaemonFixture::start_with(ExecutorKind::Runc, &["--id", "authority-test"]).await;
    let socket = daemon.socket.display().to_string();

    let state = grpc_call(
        &python,
        &[
            socket.clone(),
            authority.into(),
            "unary".into(),
            "/types.API/State".into(),
            String::new(),
        ],
    )
    .await;
    let state = StateResponse::decode(state[0].as_slice()).expect("a StateResponse");
    assert_eq!(
        state.machine.map(|m| m.id).as_deref(),
        Some("authority-test")
    );

    let id = format!("auth-{authority}");
    daemon.track(&id);
    let bundle = Bundle::new(&id, &["sh", "-c", "exit 5"]);
    let request = CreateContainerRequest {
        id: id.clone(),
        bundle_path: bundle.path_string(),
        ..Default::default()
    };
    let lines = grpc_call(
        &python,
        &[
            socket,
            authority.into(),
            "events".into(),
            encode_hex(&request.encode_to_vec()),
            "2".into(),
        ],
    )
    .await;
    let pid = CreateContainerResponse::decode(lines[0].as_slice())
        .expect("a CreateContainerResponse")
        .pid;
    let events: Vec<Event> = lines[1..]
        .iter()
        .map(|b| Event::decode(b.as_slice()).expect("an Event"))
        .collect();
    let summary: Vec<(&str, &str, u32, u32)> = events
        .iter()
        .map(|e| (e.r#type.as_str(), e.id.as_str(), e.pid, e.status))
        .collect();
    assert_eq!(
        summary,
        [
            ("start-container", id.as_str(), pid, 0),
            ("exit", id.as_str(), pid, 5)
        ]
    );
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}
