//! Arming the storage failpoints (see the table in `storage/mod.rs`).
//!
//! Built with the `failpoints` feature only. At start the `FAILPOINTS`
//! environment variable (`name=action;name=action`, the `fail` crate's
//! syntax, e.g. `storage::fsync=panic`) arms points, and the HTTP port takes
//! `PUT /debug/failpoints/<name>` with the action as body and `DELETE
//! /debug/failpoints/<name>` to clear it. A panic anywhere aborts the
//! process, so a `panic` action is a crash at that point, like kill -9.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::put;
use axum::Router;

/// Arms the points named in `FAILPOINTS` and makes every panic abort the
/// process. Call once, at start.
pub fn init() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        prev(info);
        eprintln!("keyraft-node: panic with failpoints enabled; aborting");
        std::process::abort();
    }));
    if let Ok(spec) = std::env::var("FAILPOINTS") {
        for item in spec.split(';').filter(|s| !s.trim().is_empty()) {
            match item.split_once('=') {
                Some((name, action)) => match fail::cfg(name.trim(), action.trim()) {
                    Ok(()) => tracing::warn!(failpoint = name.trim(), action = action.trim(), "failpoint armed"),
                    Err(e) => tracing::error!(failpoint = name.trim(), error = %e, "FAILPOINTS: bad action"),
                },
                None => tracing::error!(item, "FAILPOINTS: expected name=action"),
            }
        }
    }
}

/// `PUT /debug/failpoints/<name>` (body: action) and `DELETE` to clear.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/debug/failpoints/{name}", put(arm).delete(clear))
}

async fn arm(Path(name): Path<String>, body: String) -> (StatusCode, String) {
    match fail::cfg(name.clone(), body.trim()) {
        Ok(()) => {
            tracing::warn!(failpoint = %name, action = body.trim(), "failpoint armed");
            (StatusCode::OK, format!("{name} armed: {}\n", body.trim()))
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("action: {e}\n")),
    }
}

async fn clear(Path(name): Path<String>) -> (StatusCode, String) {
    fail::remove(&name);
    (StatusCode::OK, format!("{name} cleared\n"))
}
