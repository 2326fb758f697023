//! `cargo xtask demo`: one container through `wharf-shim`, narrated.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use wharf_server::spawn::{ShimOptions, spawn_shim};
use wharf_shim_proto::{
    CreateRequest, DeleteRequest, EventType, EventsRequest, ExecRequest, StartRequest, StateRequest,
};
use wharf_tests::bundle::Bundle;
use wharf_tests::fifo::OutputFifo;
use wharf_tests::system::{missing_prerequisite, wharf_binary};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Some(reason) = missing_prerequisite() {
        eprintln!("demo: {reason}");
        std::process::exit(1);
    }
    let work = tempfile::Builder::new()
        .prefix("wharf-demo-")
        .tempdir()
        .unwrap();
    let state_dir = work.path().join("state").join("demo");
    std::fs::create_dir_all(&state_dir).unwrap();
    let id = "demo";
    let bundle = Bundle::new(
        id,
        &["sh", "-c", "echo hello from a wharf container; sleep 1000"],
    );
    let stdout = OutputFifo::create(work.path(), "init-stdout");
    let exec_stdout = OutputFifo::create(work.path(), "exec-stdout");

    println!("== wharf demo: one container, owned by its wharf-shim (wharfd comes next)");
    println!("bundle    {}", bundle.path().display());
    let options = ShimOptions {
        binary: wharf_binary("wharf-shim"),
        runtime_root: work.path().join("runc"),
        default_runtime: "runc".into(),
        debug: false,
        json_logs: false,
    };
    let mut shim = spawn_shim(&options, &state_dir).expect("spawning wharf-shim");
    println!(
        "shim      pid {}, serving {}",
        shim.child.id().unwrap_or(0),
        shim.socket.display()
    );
    let mut client = wharf_shim_proto::connect(&shim.socket)
        .await
        .expect("connecting");
    let mut events = client
        .events(EventsRequest {})
        .await
        .expect("Events")
        .into_inner();

    let pid = client
        .create(CreateRequest {
            id: id.into(),
            bundle: bundle.path_string(),
            stdout: stdout.path_string(),
            ..Default::default()
        })
        .await
        .expect("Create")
        .into_inner()
        .pid;
    let state = client
        .state(StateRequest {})
        .await
        .expect("State")
        .into_inner();
    println!(
        "Create    init pid {pid}, state {:?}",
        state.processes[0].state()
    );
    client.start(StartRequest {}).await.expect("Start");
    let state = client
        .state(StateRequest {})
        .await
        .expect("State")
        .into_inner();
    println!("Start     state {:?}", state.processes[0].state());

    let exec = client
        .exec(ExecRequest {
            args: vec![
                "sh".into(),
                "-c".into(),
                "echo exec sees: $(uname -s) $(hostname), uid $(id -u)".into(),
            ],
            stdout: exec_stdout.path_string(),
            ..Default::default()
        })
        .await
        .expect("Exec")
        .into_inner()
        .pid;
    println!("Exec      pid {exec}");
    let deleted = async {
        loop {
            let event = events
                .message()
                .await
                .expect("event stream")
                .expect("an event");
            println!(
                "  event   {:<10} pid {:<7} status {}",
                event.r#type().as_str_name(),
                event.pid,
                event.exit_status
            );
            if event.r#type() == EventType::Exit && event.pid == exec {
                break;
            }
        }
    };
    deleted.await;
    println!("exec out  {}", exec_stdout.text_now().trim_end());
    println!("init out  {}", stdout.text_now().trim_end());
    let status = client
        .delete(DeleteRequest { pid })
        .await
        .expect("Delete")
        .into_inner()
        .exit_status;
    println!("Delete    init exit status {status} (128 + SIGKILL: Delete stops a running init)");
    while let Ok(Some(event)) = events.message().await {
        println!(
            "  event   {:<10} pid {:<7} status {}",
            event.r#type().as_str_name(),
            event.pid,
            event.exit_status
        );
    }
    let shim_status = shim.child.wait().await.expect("waiting for the shim");
    println!(
        "shim      exited ({shim_status}) after its container was deleted; nothing left behind"
    );
}
