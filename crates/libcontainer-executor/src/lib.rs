//! Runs containers in-process with youki's `libcontainer`. See [`LibcontainerExecutor`].
//!
//! No runtime binary is forked: `libcontainer` clones the container's processes from the
//! calling process. That makes one rule for callers: **call [`Executor::create`] and
//! [`Executor::exec`] only from a single-threaded process** (for example a
//! `current_thread` tokio runtime that has started no blocking-pool thread), since the clone
//! runs Rust code in the child, where a lock held by another thread would never be released.
//! The executor checks this and refuses otherwise (and panics in debug builds).
//!
//! The container's init is cloned as a child of the caller, which must reap it (ideally as a
//! child subreaper). The other operations fork nothing and are fine in any process.
//!
//! ```no_run
//! use wharf_libcontainer_executor::{Config, LibcontainerExecutor};
//! use wharf_executor::{ContainerId, CreateRequest, Executor, Stdio};
//!
//! # async fn demo() -> Result<(), wharf_executor::Error> {
//! let executor = LibcontainerExecutor::new(Config::new("/run/my-tool/libcontainer"));
//! let id = ContainerId::new("web")?;
//! let init = executor
//!     .create(CreateRequest { id: id.clone(), bundle: "/srv/bundles/web".into(), stdio: Stdio::Terminal, no_pivot: false })
//!     .await?;
//! executor.start(&id).await?;
//! println!("init is pid {}", init.pid);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod bundle;
mod criu;
mod error;
mod executor;
mod loopback;
mod workload;

pub use executor::{Config, LibcontainerExecutor};
pub use wharf_executor::{Error, ErrorKind, Executor};
