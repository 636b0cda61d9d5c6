//! Prometheus metrics: requests by route and status, latency histogram, queue depth.
//!
//! Label values come only from bounded sets (a matched REST route, a gRPC method that
//! exists, a known HTTP method), so no request, authenticated or not, can add a series.
//! Histogram samples are folded into their buckets on an interval, whether or not anything
//! scrapes `/metrics`.

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashSet;
use std::sync::{LazyLock, OnceLock};
use std::time::{Duration, Instant};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often pending histogram samples are folded into buckets (bounds their memory).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the process-wide recorder once (tests start several servers in one process),
/// with its upkeep thread.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("duration_seconds".into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
            )
            .expect("valid buckets")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed");
        }
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                    metrics::counter!("wagate_metrics_upkeep_runs_total").increment(1);
                }
            })
            .expect("spawn the metrics upkeep thread");
        handle
    })
}

pub async fn render() -> Response {
    let body = install().render();
    ([("content-type", "text/plain; version=0.0.4")], body).into_response()
}

/// Every gRPC method served, as `/package.Service/Method`: ours from the descriptor set,
/// plus health and both reflection versions.
static GRPC_METHODS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    use prost::Message;
    let mut out: HashSet<String> = [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let set = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET)
        .expect("the compiled descriptor set decodes");
    for file in set.file {
        let package = file.package();
        for service in &file.service {
            for method in &service.method {
                out.insert(format!("/{package}.{}/{}", service.name(), method.name()));
            }
        }
    }
    out
});

/// A bounded label for a request: the matched REST route, a gRPC method that exists, or
/// "unmatched".
fn route_label(req: &Request) -> String {
    if let Some(p) = req.extensions().get::<MatchedPath>() {
        return p.as_str().to_owned();
    }
    let path = req.uri().path();
    if GRPC_METHODS.contains(path) {
        return path.to_owned();
    }
    "unmatched".to_owned()
}

/// The standard methods by name; anything else (methods are free-form tokens) is "other".
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

pub async fn track(req: Request, next: Next) -> Response {
    let route = route_label(&req);
    let method = method_label(req.method());
    let start = Instant::now();
    let resp = next.run(req).await;
    let code = resp.status().as_u16().to_string();
    metrics::counter!("wagate_http_requests_total", "route" => route.clone(), "method" => method, "code" => code)
        .increment(1);
    metrics::histogram!("wagate_http_request_duration_seconds", "route" => route)
        .record(start.elapsed().as_secs_f64());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_existing_grpc_methods_are_labels() {
        let req = |p: &str| {
            Request::builder()
                .uri(p)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        assert_eq!(
            route_label(&req("/wagate.v1.MessagingService/SendMessage")),
            "/wagate.v1.MessagingService/SendMessage"
        );
        assert_eq!(
            route_label(&req("/grpc.health.v1.Health/Check")),
            "/grpc.health.v1.Health/Check"
        );
        assert_eq!(route_label(&req("/wagate.v1.X123/Y")), "unmatched");
        assert_eq!(route_label(&req("/grpc.anything/Else")), "unmatched");
        assert_eq!(method_label(&Method::from_bytes(b"FOO").unwrap()), "other");
    }
}
