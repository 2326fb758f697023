//! Runs containers with a runc-compatible CLI (`runc`, `crun`). See [`RuncExecutor`].
//!
//! ```no_run
//! use wharf_runc_executor::{Config, RuncExecutor};
//! use wharf_executor::{ContainerId, CreateRequest, Executor, Stdio};
//!
//! # async fn demo() -> Result<(), wharf_executor::Error> {
//! let executor = RuncExecutor::new(Config::new("/run/my-tool/runc"));
//! let id = ContainerId::new("web")?;
//! let init = executor
//!     .create(CreateRequest { id: id.clone(), bundle: "/srv/bundles/web".into(), stdio: Stdio::Terminal, no_pivot: false })
//!     .await?;
//! executor.start(&id).await?;
//! println!("init is pid {}", init.pid);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod command;
mod executor;
mod output;

pub use executor::{Config, RuncExecutor};
pub use wharf_executor::{Error, ErrorKind, Executor};
