//! Who may call `wharfd`: the socket is 0600 by default, so another user cannot even
//! connect; with `--allowed-uids`/`--allowed-gids` the socket opens to every local user and
//! each request is checked against the caller's `SO_PEERCRED` credentials. Callers are real
//! processes of other users (`setpriv` running the `wharf` CLI).

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use rstest::rstest;
use rstest_reuse::apply;
use wharf_tests::bundle::Bundle;
use wharf_tests::daemon::DaemonFixture;
use wharf_tests::require_containers;
use wharf_tests::shim::DEADLINE;
use wharf_tests::system::wharf_binary;
use wharf_tests::{ExecutorKind, executors};

/// Users and groups no process of this machine runs as.
const STRANGER: u32 = 64_001;
const ALLOWED_UID: u32 = 64_002;
const ALLOWED_GID: u32 = 64_003;

/// Runs `wharf --address <socket> args...` as `uid`/`gid` with supplementary `groups`.
async fn wharf_as(
    daemon: &DaemonFixture,
    (uid, gid, groups): (u32, u32, &[u32]),
    args: &[&str],
) -> Output {
    let groups_flag = if groups.is_empty() {
        "--clear-groups".to_owned()
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        format!("--groups={}", list.join(","))
    };
    let child = tokio::process::Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg(groups_flag)
        .arg("--")
        .arg(wharf_binary("wharf"))
        .arg("--address")
        .arg(&daemon.socket)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running setpriv wharf");
    tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("wharf {args:?} as uid {uid} did not finish"))
        .expect("waiting for wharf")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The test root is private (0700): let other users reach the socket in it, as a
/// deployment would with `/run/wharf`.
fn open_socket_dir(daemon: &DaemonFixture) {
    let dir = daemon.socket.parent().expect("the socket has a directory");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .expect("opening the socket's directory");
}

fn socket_mode(daemon: &DaemonFixture) -> u32 {
    std::fs::metadata(&daemon.socket)
        .expect("the socket exists")
        .permissions()
        .mode()
        & 0o777
}

#[apply(executors)]
#[tokio::test]
async fn by_default_only_the_daemons_user_can_connect(#[case] executor: ExecutorKind) {
    require_containers!();
    let daemon = DaemonFixture::start(executor).await;
    open_socket_dir(&daemon);
    assert_eq!(socket_mode(&daemon), 0o600);
    let refused = wharf_as(&daemon, (STRANGER, STRANGER, &[]), &["containers"]).await;
    assert!(!refused.status.success(), "a stranger was served");
    assert!(
        text(&refused.stderr).contains("ermission denied"),
        "the connect is refused by the socket's mode: {}",
        text(&refused.stderr)
    );
    let root = wharf_as(&daemon, (0, 0, &[]), &["containers"]).await;
    assert!(root.status.success(), "{}", text(&root.stderr));
}

#[apply(executors)]
#[tokio::test]
async fn allowed_users_and_groups_are_served_and_everyone_else_is_denied(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    let mut daemon = DaemonFixture::start_with(
        executor,
        &[
            "--allowed-uids",
            &ALLOWED_UID.to_string(),
            "--allowed-gids",
            &ALLOWED_GID.to_string(),
        ],
    )
    .await;
    open_socket_dir(&daemon);
    assert_eq!(
        socket_mode(&daemon),
        0o666,
        "the credentials check is the gate"
    );
    let id = "access-denied";
    daemon.track(id);
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    let bundle_path = bundle.path_string();

    // A stranger reaches the socket but every call, unary or stream, is denied, names its
    // uid, and changes nothing.
    for args in [
        vec!["containers", "list"],
        vec!["containers", "start", id, &bundle_path],
        vec!["events"],
        vec!["state"],
    ] {
        let denied = wharf_as(&daemon, (STRANGER, STRANGER, &[]), &args).await;
        let stderr = text(&denied.stderr);
        assert!(!denied.status.success(), "{args:?} served a stranger");
        assert!(
            stderr.contains("permission denied") && stderr.contains(&format!("uid {STRANGER}")),
            "{args:?}: {stderr}"
        );
    }
    let list = daemon
        .client()
        .state(wharf_api::StateRequest::default())
        .await
        .expect("root is served")
        .into_inner();
    assert!(
        list.containers.is_empty(),
        "a denied start created {list:?}"
    );

    // A listed user, a listed primary group and a listed supplementary group are served.
    let by_uid = wharf_as(&daemon, (ALLOWED_UID, STRANGER, &[]), &["containers"]).await;
    assert!(by_uid.status.success(), "{}", text(&by_uid.stderr));
    let by_gid = wharf_as(&daemon, (STRANGER, ALLOWED_GID, &[]), &["containers"]).await;
    assert!(by_gid.status.success(), "{}", text(&by_gid.stderr));
    let start = wharf_as(
        &daemon,
        (STRANGER, STRANGER, &[ALLOWED_GID]),
        &["containers", "start", id, &bundle_path],
    )
    .await;
    assert!(start.status.success(), "{}", text(&start.stderr));
    let kill = wharf_as(
        &daemon,
        (ALLOWED_UID, ALLOWED_UID, &[]),
        &["containers", "kill", id, "--signal", "KILL"],
    )
    .await;
    assert!(kill.status.success(), "{}", text(&kill.stderr));
    daemon.assert_nothing_left().await;
}
