//! Watches: a chunked stream of `{"type": ..., "object": ...}` lines.
//!
//! `resourceVersion` unset or "0" starts with synthetic ADDED events for
//! the current objects; a version replays the kept history after it (410
//! Expired when it is older). `sendInitialEvents=true` ends the initial
//! events with the `k8s.io/initial-events-end` bookmark. Objects that stop
//! matching a selector are sent as DELETED, ones that start matching as
//! ADDED. Bookmarks every few seconds with `allowWatchBookmarks`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::table;
use crate::error::ApiError;
use crate::objects::Objects;
use crate::registry::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Change, EventType};

/// How often bookmarks are sent.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

/// Parameters of a watch request.
pub struct WatchParams {
    pub namespace: Option<String>,
    pub version: String,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub resource_version: Option<String>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub timeout: Option<Duration>,
    pub table: bool,
}

struct Watcher {
    rt: Arc<ResourceType>,
    p: WatchParams,
    tx: mpsc::Sender<Bytes>,
}

impl Watcher {
    fn matches(&self, obj: &Value) -> bool {
        let ns_ok = self.p.namespace.as_deref().is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns));
        ns_ok && self.p.labels.matches_object(obj) && self.p.fields.matches(obj)
    }

    fn encode(&self, kind: &str, obj: &Value) -> Bytes {
        let mut obj = obj.clone();
        obj["apiVersion"] = json!(self.rt.api_version(&self.p.version));
        let obj = if self.p.table {
            let rv = obj["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
            table::table(&self.rt, &[obj], rv, Some("Object"))
        } else {
            obj
        };
        let mut line = json!({"type": kind, "object": obj}).to_string();
        line.push('\n');
        Bytes::from(line)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(&self.p.version), "metadata": meta});
        let mut line = json!({"type": "BOOKMARK", "object": obj}).to_string();
        line.push('\n');
        Bytes::from(line)
    }

    /// The event a change becomes for this watch, if any.
    fn event(&self, c: &Change) -> Option<Bytes> {
        if c.key != self.rt.key() {
            return None;
        }
        let now = self.matches(&c.object);
        let before = c.old.as_deref().is_some_and(|o| self.matches(o));
        let kind = match (c.kind, before, now) {
            (EventType::Added, _, true) => "ADDED",
            (EventType::Modified, true, true) => "MODIFIED",
            (EventType::Modified, false, true) => "ADDED",
            (EventType::Modified, true, false) => "DELETED",
            (EventType::Deleted, _, true) => "DELETED",
            _ => return None,
        };
        Some(self.encode(kind, &c.object))
    }

    async fn send(&self, b: Bytes) -> bool {
        self.tx.send(b).await.is_ok()
    }

    async fn run(self, objects: Objects) {
        let rv_param = self.p.resource_version.clone().filter(|s| !s.is_empty());
        let initial = rv_param.as_deref().is_none_or(|rv| rv == "0") || self.p.send_initial_events;
        let (sub, mut last_rv) = if initial {
            let (items, rv) = objects.store.list(&self.rt.key(), self.p.namespace.as_deref());
            for o in items.iter().filter(|o| self.matches(o)) {
                if !self.send(self.encode("ADDED", o)).await {
                    return;
                }
            }
            if self.p.send_initial_events && !self.send(self.bookmark(rv, true)).await {
                return;
            }
            (objects.store.subscribe(Some(rv)), rv)
        } else {
            let since: u64 = match rv_param.as_deref().unwrap_or_default().parse() {
                Ok(v) => v,
                Err(_) => {
                    let err = ApiError::bad_request("invalid resourceVersion");
                    let _ = self.send(error_line(&err)).await;
                    return;
                }
            };
            (objects.store.subscribe(Some(since)), since)
        };
        let mut sub = match sub {
            Ok(s) => s,
            Err(oldest) => {
                let err = ApiError::gone(format!("too old resource version: {last_rv} ({oldest})"));
                let _ = self.send(error_line(&err)).await;
                return;
            }
        };
        for c in std::mem::take(&mut sub.backlog) {
            last_rv = c.rv;
            if let Some(b) = self.event(&c) {
                if !self.send(b).await {
                    return;
                }
            }
        }
        let deadline = self.p.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        loop {
            let timeout = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = timeout => return,
                _ = self.tx.closed() => return,
                _ = ticker.tick(), if self.p.bookmarks => {
                    if !self.send(self.bookmark(last_rv, false)).await {
                        return;
                    }
                }
                c = sub.live.recv() => match c {
                    Ok(c) => {
                        if c.rv <= last_rv {
                            continue;
                        }
                        last_rv = c.rv;
                        if let Some(b) = self.event(&c) {
                            if !self.send(b).await {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let err = ApiError::gone("watch fell behind; re-list");
                        let _ = self.send(error_line(&err)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }
}

fn error_line(err: &ApiError) -> Bytes {
    let mut line = json!({"type": "ERROR", "object": err.status()}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// Starts a watch and returns the streaming response.
pub fn watch(objects: Objects, rt: Arc<ResourceType>, p: WatchParams) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let watcher = Watcher { rt, p, tx };
    tokio::spawn(watcher.run(objects));
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx)) });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .expect("valid response")
}
