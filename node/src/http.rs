//! The HTTP port: `/healthz` (process alive), `/readyz` (joined and
//! serving), `/metrics` (Prometheus text format).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::node::Node;

pub fn router(node: Arc<Node>) -> Router {
    let r = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    #[cfg(feature = "failpoints")]
    let r = r.merge(crate::storage::failpoints::router());
    r.with_state(node)
}

async fn readyz(State(node): State<Arc<Node>>) -> impl IntoResponse {
    match node.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render(&node))
}
