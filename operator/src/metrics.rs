//! Prometheus metrics and the HTTP endpoints `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::{extract::State, http::StatusCode, routing::get, Router};
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};
use tokio::sync::watch;

/// Reconcile counters and durations.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub errors: IntCounterVec,
    pub duration: HistogramVec,
    pub actions: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let reconciles =
            IntCounterVec::new(Opts::new("keyraft_operator_reconciles_total", "Reconcile passes"), &["namespace"])
                .unwrap();
        let errors = IntCounterVec::new(
            Opts::new("keyraft_operator_reconcile_errors_total", "Reconcile passes that failed"),
            &["namespace"],
        )
        .unwrap();
        let duration = HistogramVec::new(
            HistogramOpts::new("keyraft_operator_reconcile_duration_seconds", "Duration of a reconcile pass")
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["namespace"],
        )
        .unwrap();
        let actions = IntCounterVec::new(
            Opts::new("keyraft_operator_actions_total", "Planned actions carried out, by kind"),
            &["action"],
        )
        .unwrap();
        for c in [&reconciles, &errors, &actions] {
            registry.register(Box::new(c.clone())).unwrap();
        }
        registry.register(Box::new(duration.clone())).unwrap();
        Metrics { registry, reconciles, errors, duration, actions }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    leading: watch::Receiver<bool>,
}

/// The router: `/metrics`; `/healthz` (process alive); `/readyz` (always
/// ready: a standby replica is healthy, `/leader` tells which one leads).
pub fn router(metrics: Arc<Metrics>, leading: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/metrics", get(|State(s): State<HttpState>| async move { s.metrics.render() }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/leader",
            get(|State(s): State<HttpState>| async move {
                if *s.leading.borrow() {
                    (StatusCode::OK, "leader")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "standby")
                }
            }),
        )
        .with_state(HttpState { metrics, leading })
}

pub async fn serve(addr: SocketAddr, router: Router) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_reconcile_metrics() {
        let m = Metrics::new();
        m.reconciles.with_label_values(&["ns"]).inc();
        m.errors.with_label_values(&["ns"]).inc();
        m.duration.with_label_values(&["ns"]).observe(0.2);
        let text = m.render();
        assert!(text.contains("keyraft_operator_reconciles_total{namespace=\"ns\"} 1"), "{text}");
        assert!(text.contains("keyraft_operator_reconcile_errors_total{namespace=\"ns\"} 1"));
        assert!(text.contains("keyraft_operator_reconcile_duration_seconds_count{namespace=\"ns\"} 1"));
    }
}
