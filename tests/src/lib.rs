//! Harness for wharf's integration tests: real `wharf-shim` processes running real
//! containers with runc on a busybox rootfs. Tests that need root and runc use
//! [`require_containers!`]: they skip with a reason on a developer machine and fail under CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    clippy::missing_panics_doc
)]

pub mod bundle;
pub mod daemon;
pub mod fifo;
pub mod pty;
pub mod shim;
pub mod system;
