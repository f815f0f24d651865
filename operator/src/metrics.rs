//! Prometheus metrics and the HTTP endpoints `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

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
    /// The last error of the controller's watches (list or watch refused,
    /// a resource missing), cleared by the next event that came through.
    pub watch_error: Arc<Mutex<Option<String>>>,
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
        Metrics { registry, reconciles, errors, duration, actions, watch_error: Arc::default() }
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

/// Why this replica is not ready, if it is not: the leader needs working
/// watches; a standby is ready while it waits for the Lease (`/leader` tells
/// which one leads).
pub fn readiness(leading: bool, watch_error: Option<&str>) -> Result<&'static str, String> {
    match (leading, watch_error) {
        (false, _) => Ok("standby: waiting for the Lease"),
        (true, None) => Ok("leading; watches working"),
        (true, Some(e)) => Err(format!("leading, but a watch fails: {e}")),
    }
}

/// The router: `/metrics`; `/healthz` (process alive); `/readyz` (see
/// [`readiness`]).
pub fn router(metrics: Arc<Metrics>, leading: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/metrics", get(|State(s): State<HttpState>| async move { s.metrics.render() }))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<HttpState>| async move {
                let err = s.metrics.watch_error.lock().unwrap().clone();
                match readiness(*s.leading.borrow(), err.as_deref()) {
                    Ok(why) => (StatusCode::OK, format!("ready: {why}\n")),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
                }
            }),
        )
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
    fn readiness_follows_the_lease_and_the_watches() {
        assert!(readiness(false, Some("forbidden")).is_ok(), "a standby does not watch");
        assert!(readiness(true, None).is_ok());
        let e = readiness(true, Some("namespaces is forbidden")).unwrap_err();
        assert!(e.contains("namespaces is forbidden"), "{e}");
    }

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
