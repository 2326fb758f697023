//! wharf's wiring: the daemon (`wharfd`), the shim (`wharf-shim`) and the CLI (`wharf`).
//! The only crate that knows both gRPC and the executors.
#![warn(missing_docs)]

pub mod cli;
pub mod daemon;
mod events;
mod fdio;
pub mod limits;
pub mod logging;
pub mod shim;
pub mod spawn;
pub mod status;
