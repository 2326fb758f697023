//! containerd's 2017 per-container shim API, `containerd.shim.v1.Shim`, as tonic/prost code,
//! plus the helpers to reach a shim over its unix socket.
//!
//! The code is generated from `proto/shim.proto` by `cargo xtask codegen` and checked in, so
//! building this crate needs no `protoc`. `google.protobuf.Empty` maps to `()`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut shim = wharf_shim_proto::connect("/run/wharf/web/shim.sock").await?;
//! let state = shim.state(wharf_shim_proto::StateRequest {}).await?.into_inner();
//! println!("init pid {}", state.init_pid);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

#[allow(
    clippy::all,
    missing_docs,
    unreachable_pub,
    missing_debug_implementations
)]
mod generated {
    include!("generated/containerd.shim.v1.rs");
}

#[allow(
    clippy::all,
    missing_docs,
    unreachable_pub,
    missing_debug_implementations
)]
mod generated_control {
    include!("generated/wharf.shim.v1.rs");
}

/// wharf's additions to the shim API (`wharf.shim.v1.Control`), served on the same socket.
pub mod control {
    pub use super::generated_control::control_client::ControlClient;
    pub use super::generated_control::control_server::{Control, ControlServer};
    pub use super::generated_control::{
        CheckpointRequest, CriuOptions, ExitStatusRequest, ExitStatusResponse, KillRequest,
        METHOD_PATHS, RestoreRequest, RestoreResponse,
    };

    /// The gRPC service name.
    pub const SERVICE_NAME: &str = "wharf.shim.v1.Control";
}

mod socket;

pub use generated::shim_client::ShimClient;
pub use generated::shim_server::{Shim, ShimServer};
pub use generated::*;
/// The `prost` crate the generated messages implement `Message` with.
pub use prost;
pub use socket::{SocketAddress, SocketPath, bind};
/// The `tonic` crate the generated client and server are built on.
pub use tonic;

/// The gRPC service name, for health checks and reflection.
pub const SERVICE_NAME: &str = "containerd.shim.v1.Shim";

/// File name of a shim's socket in its container's state directory.
pub const SOCKET_NAME: &str = "shim.sock";

/// Connects a [`ShimClient`] to the shim listening on the unix socket at `path`. Paths longer
/// than a socket address allows (108 bytes) work too.
///
/// # Errors
/// The socket cannot be connected to (missing, refused, not a socket).
pub async fn connect(
    path: impl AsRef<std::path::Path>,
) -> Result<ShimClient<tonic::transport::Channel>, tonic::transport::Error> {
    Ok(ShimClient::new(channel(path).await?))
}

/// A channel to the shim at `path`, for both [`ShimClient`] and
/// [`control::ControlClient`] (they share its connection).
///
/// # Errors
/// The socket cannot be connected to (missing, refused, not a socket).
pub async fn channel(
    path: impl AsRef<std::path::Path>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let address = std::sync::Arc::new(SocketPath::new(path.as_ref()));
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let address = address.clone();
            async move {
                // Keep the address (and the directory it may hold open) until connected.
                let address = address.address()?;
                let stream = tokio::net::UnixStream::connect(address.as_path()).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}

/// A channel to the shim at `path` that connects on first use (and again after a failure).
pub fn channel_lazy(path: impl AsRef<std::path::Path>) -> tonic::transport::Channel {
    let address = std::sync::Arc::new(SocketPath::new(path.as_ref()));
    tonic::transport::Endpoint::from_static("http://localhost").connect_with_connector_lazy(
        tower::service_fn(move |_| {
            let address = address.clone();
            async move {
                let address = address.address()?;
                let stream = tokio::net::UnixStream::connect(address.as_path()).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }),
    )
}
