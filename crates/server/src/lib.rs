//! wharf's wiring: the shim (`wharf-shim`), and soon the daemon (`wharfd`) and the CLI
//! (`wharf`). The only crate that knows both gRPC and the executors.
#![warn(missing_docs)]

mod events;
pub mod logging;
pub mod shim;
pub mod spawn;
pub mod status;
