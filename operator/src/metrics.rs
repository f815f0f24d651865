//! Prometheus metrics and the HTTP endpoints `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// The controller's watches: failing (list or watch refused, a resource
    /// missing) since when, cleared by the next event that came through.
    pub watches: Arc<Mutex<WatchHealth>>,
}

/// Whether the controller's watches work, and since when they fail.
#[derive(Debug, Default, Clone)]
pub struct WatchHealth {
    failing: Option<(String, Instant)>,
}

impl WatchHealth {
    /// A watch failed: keeps the time of the first failure of a run of them.
    pub fn failed(&mut self, error: String) {
        let since = self.failing.as_ref().map_or_else(Instant::now, |(_, t)| *t);
        self.failing = Some((error, since));
    }

    /// An event came through: the watches work.
    pub fn working(&mut self) {
        self.failing = None;
    }

    /// The last error and for how long the watches have failed.
    pub fn failing(&self) -> Option<(&str, Duration)> {
        self.failing.as_ref().map(|(e, t)| (e.as_str(), t.elapsed()))
    }
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
        Metrics { registry, reconciles, errors, duration, actions, watches: Arc::default() }
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
    unhealthy_after: Duration,
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

/// Whether this replica should be restarted: the leader whose watches have
/// failed for longer than `bound` (a stale connection or credential that a
/// fresh process would not have); a standby or a short failure is not.
pub fn liveness(leading: bool, failing: Option<(&str, Duration)>, bound: Duration) -> Result<&'static str, String> {
    match (leading, failing) {
        (true, Some((e, since))) if since > bound => {
            Err(format!("watches failing for {}s (more than {}s): {e}", since.as_secs(), bound.as_secs()))
        }
        (false, _) => Ok("standby"),
        _ => Ok("leading"),
    }
}

fn answer(verdict: Result<&'static str, String>, ok: &str, not: &str) -> (StatusCode, String) {
    match verdict {
        Ok(why) => (StatusCode::OK, format!("{ok}: {why}\n")),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{not}: {why}\n")),
    }
}

/// The router: `/metrics`; `/healthz` (see [`liveness`]); `/readyz` (see
/// [`readiness`]); `/leader`.
pub fn router(metrics: Arc<Metrics>, leading: watch::Receiver<bool>, unhealthy_after: Duration) -> Router {
    Router::new()
        .route("/metrics", get(|State(s): State<HttpState>| async move { s.metrics.render() }))
        .route(
            "/healthz",
            get(|State(s): State<HttpState>| async move {
                let watches = s.metrics.watches.lock().unwrap().clone();
                answer(liveness(*s.leading.borrow(), watches.failing(), s.unhealthy_after), "ok", "unhealthy")
            }),
        )
        .route(
            "/readyz",
            get(|State(s): State<HttpState>| async move {
                let watches = s.metrics.watches.lock().unwrap().clone();
                answer(readiness(*s.leading.borrow(), watches.failing().map(|(e, _)| e)), "ready", "not ready")
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
        .with_state(HttpState { metrics, leading, unhealthy_after })
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
    fn liveness_fails_only_for_a_leader_whose_watches_fail_past_the_bound() {
        let bound = Duration::from_secs(300);
        assert!(liveness(true, None, bound).is_ok());
        assert!(
            liveness(false, Some(("forbidden", Duration::from_secs(900))), bound).is_ok(),
            "a standby does not watch"
        );
        assert!(liveness(true, Some(("forbidden", Duration::from_secs(10))), bound).is_ok(), "a short failure");
        let e = liveness(true, Some(("forbidden", Duration::from_secs(301))), bound).unwrap_err();
        assert!(e.contains("forbidden") && e.contains("301s"), "{e}");
    }

    #[test]
    fn a_run_of_watch_failures_keeps_its_start() {
        let mut w = WatchHealth::default();
        assert!(w.failing().is_none());
        w.failed("first".into());
        let (_, since) = w.failing().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        w.failed("second".into());
        let (e, later) = w.failing().unwrap();
        assert_eq!(e, "second", "the latest error is shown");
        assert!(later >= since + Duration::from_millis(20), "the run's start is kept: {since:?} then {later:?}");
        w.working();
        assert!(w.failing().is_none());
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
