//! Harness for wharf's integration tests: real `wharf-shim` processes running real
//! containers with runc on a busybox rootfs. Tests that need root and runc use
//! [`require_containers!`]: they skip with a reason on a developer machine and fail under CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    clippy::missing_panics_doc
)]

pub use rstest_reuse;
use rstest_reuse::template;
pub use wharf_server::daemon::config::ExecutorKind;

/// Runs a test once per executor: `#[apply(executors)]` on a test taking
/// `#[case] executor: ExecutorKind`; the cases are named `runc` and `libcontainer`.
#[template]
#[export]
#[hidden]
#[rstest]
#[case::runc(ExecutorKind::Runc)]
#[case::libcontainer(ExecutorKind::Libcontainer)]
pub fn executors(#[case] executor: ExecutorKind) {}

pub mod bench;
pub mod bundle;
pub mod daemon;
pub mod fifo;
pub mod metrics;
pub mod pty;
pub mod shim;
pub mod soak;
pub mod system;
