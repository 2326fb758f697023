//! Prometheus metrics: `wharfd --metrics-address ADDR` serves `http://ADDR/metrics`.
//!
//! The daemon's own counters and histograms go through the `metrics` facade into
//! `metrics-exporter-prometheus`'s recorder, installed once at start. Gauges of the daemon's
//! state (containers, shims, event streams) and every per-container series are read at
//! scrape time: a container's series exist exactly while it is live, and disappear with it.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use http_body::{Body, Frame};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use wharf_api as api;

use super::DaemonExecutor;
use super::containers::Daemon;

/// Metric names: `wharf_` prefix, base units, `_total` on counters.
pub(crate) mod name {
    pub(crate) const CONTAINERS_RUNNING: &str = "wharf_containers_running";
    pub(crate) const CONTAINERS_PAUSED: &str = "wharf_containers_paused";
    pub(crate) const SHIMS_ALIVE: &str = "wharf_shims_alive";
    pub(crate) const EVENT_SUBSCRIBERS: &str = "wharf_event_subscribers";
    pub(crate) const CONTAINER_STARTS: &str = "wharf_container_starts_total";
    pub(crate) const CONTAINER_EXITS: &str = "wharf_container_exits_total";
    pub(crate) const CONTAINER_OOMS: &str = "wharf_container_ooms_total";
    pub(crate) const CONTAINER_START_DURATION: &str = "wharf_container_start_duration_seconds";
    pub(crate) const GRPC_REQUESTS: &str = "wharf_grpc_requests_total";
    pub(crate) const GRPC_REQUEST_DURATION: &str = "wharf_grpc_request_duration_seconds";
    pub(crate) const CONTAINER_CPU: &str = "wharf_container_cpu_usage_seconds_total";
    pub(crate) const CONTAINER_MEMORY: &str = "wharf_container_memory_usage_bytes";
    pub(crate) const CONTAINER_PIDS: &str = "wharf_container_pids";
}

/// Seconds; a start is a few to a few hundred milliseconds.
const START_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5, 10.0,
];
/// Seconds; unary calls take microseconds to a start's time, streams live for minutes.
const RPC_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 10.0, 60.0, 600.0,
];

/// Installs the process-wide recorder and describes every metric the daemon records.
///
/// # Errors
/// A recorder is already installed.
pub(crate) fn install() -> Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(name::CONTAINER_START_DURATION.into()),
            START_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(name::GRPC_REQUEST_DURATION.into()),
                RPC_BUCKETS,
            )
        })
        .context("configuring histogram buckets")?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("installing the metrics recorder")?;
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        name::CONTAINERS_RUNNING,
        "Live containers that are not paused."
    );
    describe_gauge!(name::CONTAINERS_PAUSED, "Live containers that are paused.");
    describe_gauge!(
        name::SHIMS_ALIVE,
        "wharf-shim processes of live containers that are alive."
    );
    describe_gauge!(
        name::EVENT_SUBSCRIBERS,
        "Open Events streams (types.API and wharf.v1)."
    );
    describe_counter!(name::CONTAINER_STARTS, "Containers started.");
    describe_counter!(
        name::CONTAINER_EXITS,
        "Containers whose init exited (or that were lost with their shim)."
    );
    describe_counter!(name::CONTAINER_OOMS, "Out-of-memory kills in containers.");
    describe_histogram!(
        name::CONTAINER_START_DURATION,
        Unit::Seconds,
        "CreateContainer, from the request to a started init."
    );
    describe_counter!(
        name::GRPC_REQUESTS,
        "gRPC calls answered, by method and status code."
    );
    describe_histogram!(
        name::GRPC_REQUEST_DURATION,
        Unit::Seconds,
        "gRPC calls from request to the end of the response (a stream's whole life), by method and status code."
    );
    // Set once, so the gauges are in every scrape from the first.
    for gauge in [
        name::CONTAINERS_RUNNING,
        name::CONTAINERS_PAUSED,
        name::SHIMS_ALIVE,
        name::EVENT_SUBSCRIBERS,
    ] {
        metrics::gauge!(gauge).set(0.0);
    }
    for counter in [
        name::CONTAINER_STARTS,
        name::CONTAINER_EXITS,
        name::CONTAINER_OOMS,
    ] {
        metrics::counter!(counter).absolute(0);
    }
    Ok(handle)
}

/// Binds the metrics address: first thing at start, so a taken address fails the start
/// before anything else is set up.
///
/// # Errors
/// The address cannot be bound.
pub(crate) async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the metrics address {address}"))
}

/// Serves `/metrics` on `listener` until `stopping` is cancelled.
pub(crate) fn serve<E: DaemonExecutor>(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    daemon: Arc<Daemon<E>>,
    stopping: CancellationToken,
) -> impl Future<Output = ()> {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "serving Prometheus metrics at /metrics");
    }
    let upkeep = handle.clone();
    async move {
        let mut upkeep_ticks = tokio::time::interval(Duration::from_secs(5));
        loop {
            let stream = tokio::select! {
                () = stopping.cancelled() => return,
                _ = upkeep_ticks.tick() => {
                    upkeep.run_upkeep();
                    continue;
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        tracing::warn!(error = %err, "accepting a metrics connection");
                        continue;
                    }
                },
            };
            let (handle, daemon) = (handle.clone(), daemon.clone());
            tokio::spawn(async move {
                let answer = hyper::service::service_fn(move |request| {
                    let (handle, daemon) = (handle.clone(), daemon.clone());
                    async move { Ok::<_, Infallible>(answer(&request, &handle, &daemon).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), answer);
                if let Err(err) = connection.await {
                    tracing::debug!(error = %err, "metrics connection");
                }
            });
        }
    }
}

async fn answer<E: DaemonExecutor, B>(
    request: &Request<B>,
    handle: &PrometheusHandle,
    daemon: &Arc<Daemon<E>>,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n".to_owned(),
        );
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} /metrics: only GET is served\n", request.method()),
        );
        response.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return response;
    }
    let mut response = reply(StatusCode::OK, scrape(handle, daemon).await);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The scrape: the recorder's metrics with the state gauges brought up to date, then every
/// live container's series.
pub(crate) async fn scrape<E: DaemonExecutor>(
    handle: &PrometheusHandle,
    daemon: &Arc<Daemon<E>>,
) -> String {
    let containers = daemon.containers();
    let paused = containers.iter().filter(|c| c.is_paused()).count();
    let shims_alive = containers.iter().filter(|c| c.shim_alive()).count();
    metrics::gauge!(name::CONTAINERS_RUNNING).set(gauge_value(containers.len() - paused));
    metrics::gauge!(name::CONTAINERS_PAUSED).set(gauge_value(paused));
    metrics::gauge!(name::SHIMS_ALIVE).set(gauge_value(shims_alive));
    metrics::gauge!(name::EVENT_SUBSCRIBERS).set(gauge_value(daemon.journal.open_streams()));
    let mut text = handle.render();
    // Reading cgroups is blocking file I/O: off the async threads.
    let usage = tokio::task::spawn_blocking(move || {
        containers
            .iter()
            .filter_map(|c| c.usage().map(|usage| (c.id.to_string(), usage)))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    render_container_usage(&mut text, &usage);
    text
}

#[allow(clippy::cast_precision_loss)] // counts far below 2^52
fn gauge_value(n: usize) -> f64 {
    n as f64
}

/// What a container uses now, for its per-container series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) cpu_ns: u64,
    pub(crate) memory_bytes: u64,
    pub(crate) pids: u64,
}

/// Appends the per-container families, in the text format, one series per container.
fn render_container_usage(text: &mut String, usage: &[(String, Usage)]) {
    type Family = (
        &'static str,
        &'static str,
        &'static str,
        fn(&Usage) -> String,
    );
    let families: [Family; 3] = [
        (
            name::CONTAINER_CPU,
            "counter",
            "CPU time the container's cgroup used, in seconds.",
            |u| {
                format!(
                    "{}.{:09}",
                    u.cpu_ns / 1_000_000_000,
                    u.cpu_ns % 1_000_000_000
                )
            },
        ),
        (
            name::CONTAINER_MEMORY,
            "gauge",
            "Memory the container's cgroup uses, in bytes.",
            |u| u.memory_bytes.to_string(),
        ),
        (
            name::CONTAINER_PIDS,
            "gauge",
            "Processes and threads in the container's cgroup.",
            |u| u.pids.to_string(),
        ),
    ];
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for (family, kind, help, value) in families {
        let _ = writeln!(text, "# HELP {family} {help}\n# TYPE {family} {kind}");
        for (id, usage) in usage {
            let _ = writeln!(
                text,
                "{family}{{container_id=\"{}\"}} {}",
                escape_label(id),
                value(usage)
            );
        }
    }
}

/// A label value in the text format: `\`, `"` and newlines escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The tower layer that counts and times every gRPC call by method and status code.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics { inner }
    }
}

/// See [`RpcMetricsLayer`].
#[derive(Debug, Clone)]
pub(crate) struct RpcMetrics<S> {
    inner: S,
}

/// Health checks are served next to the API.
const HEALTH_METHOD_PATHS: &[&str] = &[
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

/// The `method` label of a request path: a method the daemon serves, or `unknown` (so no
/// client can make up label values).
fn method_label(path: &str) -> &'static str {
    api::METHOD_PATHS
        .iter()
        .chain(api::v1::METHOD_PATHS)
        .chain(HEALTH_METHOD_PATHS)
        .find(|known| **known == path)
        .map_or("unknown", |known| &known[1..])
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for RpcMetrics<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let method = method_label(request.uri().path());
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // A failed call answers with its status in the headers (trailers-only); a
            // successful one in the trailers, when its body ends.
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok());
            Ok(response.map(|body| MeteredBody {
                inner: body,
                call: Some(Call {
                    method,
                    started,
                    code,
                }),
            }))
        })
    }
}

/// One call, recorded once when its response ends (or is dropped unfinished).
#[derive(Debug)]
struct Call {
    method: &'static str,
    started: Instant,
    code: Option<i32>,
}

impl Call {
    fn record(self, ended: bool) {
        let code = match (self.code, ended) {
            (Some(code), _) => code_name(code),
            // Ended without a status: the response was cut; dropped early: the client left.
            (None, true) => "Unknown",
            (None, false) => "Cancelled",
        };
        let labels = [("method", self.method), ("code", code)];
        metrics::counter!(name::GRPC_REQUESTS, &labels).increment(1);
        metrics::histogram!(name::GRPC_REQUEST_DURATION, &labels)
            .record(self.started.elapsed().as_secs_f64());
    }
}

fn code_name(code: i32) -> &'static str {
    match tonic::Code::from_i32(code) {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "Cancelled",
        tonic::Code::Unknown => "Unknown",
        tonic::Code::InvalidArgument => "InvalidArgument",
        tonic::Code::DeadlineExceeded => "DeadlineExceeded",
        tonic::Code::NotFound => "NotFound",
        tonic::Code::AlreadyExists => "AlreadyExists",
        tonic::Code::PermissionDenied => "PermissionDenied",
        tonic::Code::ResourceExhausted => "ResourceExhausted",
        tonic::Code::FailedPrecondition => "FailedPrecondition",
        tonic::Code::Aborted => "Aborted",
        tonic::Code::OutOfRange => "OutOfRange",
        tonic::Code::Unimplemented => "Unimplemented",
        tonic::Code::Internal => "Internal",
        tonic::Code::Unavailable => "Unavailable",
        tonic::Code::DataLoss => "DataLoss",
        tonic::Code::Unauthenticated => "Unauthenticated",
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call when it ends.
    pub(crate) struct MeteredBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }

    impl<B> PinnedDrop for MeteredBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.record(false);
            }
        }
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(call) = this.call.as_mut()
                {
                    call.code = trailers
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .or(call.code);
                }
            }
            Some(Err(_)) | None => {
                if let Some(call) = this.call.take() {
                    call.record(true);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_served_methods_become_labels() {
        assert_eq!(method_label("/types.API/State"), "types.API/State");
        assert_eq!(
            method_label("/wharf.v1.Events/Subscribe"),
            "wharf.v1.Events/Subscribe"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        assert_eq!(method_label("/types.API/Nope"), "unknown");
        assert_eq!(method_label("/../../etc/passwd"), "unknown");
    }

    #[test]
    fn container_series_are_valid_text_format() {
        let mut text = String::new();
        let usage = Usage {
            cpu_ns: 2_013_433_021,
            memory_bytes: 67_108_864,
            pids: 2,
        };
        render_container_usage(&mut text, &[("web\"1".to_owned(), usage)]);
        assert!(text.contains(
            "wharf_container_cpu_usage_seconds_total{container_id=\"web\\\"1\"} 2.013433021\n"
        ));
        assert!(
            text.contains(
                "wharf_container_memory_usage_bytes{container_id=\"web\\\"1\"} 67108864\n"
            )
        );
        assert!(text.contains("# TYPE wharf_container_pids gauge\n"));
    }

    #[test]
    fn every_code_has_its_name() {
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(5), "NotFound");
        assert_eq!(code_name(16), "Unauthenticated");
        assert_eq!(code_name(99), "Unknown");
    }
}
