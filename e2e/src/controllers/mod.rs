//! Controllers inside the simulator. Each is a synchronous, level-triggered
//! `reconcile(&Objects)` over the whole store, run after every change (with
//! a short debounce) and once a second.

pub mod disruption;
pub mod gc;
pub mod lifecycle;
pub mod nodes;
pub mod replicaset;
pub mod scheduler;
pub mod statefulset;
pub mod volumes;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::ApiResult;
use crate::objects::{Objects, Part, PatchType, WriteOpts};
use crate::registry::{GroupResource, ResourceType};

/// A built-in resource type.
pub fn rt(objects: &Objects, group: &str, plural: &str) -> Arc<ResourceType> {
    objects
        .registry
        .get(&GroupResource::new(group, plural))
        .unwrap_or_else(|| panic!("built-in resource {plural}.{group}"))
}

/// `metadata.name`
pub fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or_default()
}

/// `metadata.namespace` ("" for cluster-scoped objects)
pub fn namespace(o: &Value) -> &str {
    o["metadata"]["namespace"].as_str().unwrap_or_default()
}

/// `metadata.uid`
pub fn uid(o: &Value) -> &str {
    o["metadata"]["uid"].as_str().unwrap_or_default()
}

/// Is the object being deleted?
pub fn terminating(o: &Value) -> bool {
    o["metadata"].get("deletionTimestamp").is_some_and(|t| !t.is_null())
}

/// The controller owner reference pointing at `owner`.
pub fn controller_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Is `o` controlled by the object with `owner_uid`?
pub fn controlled_by(o: &Value, owner_uid: &str) -> bool {
    o["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r["uid"] == owner_uid && r["controller"] == true))
}

/// Is a pod Ready (condition Ready=True)?
pub fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Merges `status` into an object's status (no-op writes are dropped).
pub fn patch_status(objects: &Objects, rt: &ResourceType, ns: &str, name: &str, status: Value) -> ApiResult<Value> {
    objects.patch(rt, ns, name, PatchType::Merge, &json!({"status": status}), Part::Status, &WriteOpts::default())
}

/// Records a core v1 Event about `involved` from `component`, once: an
/// Event with the same object, reason and message is not repeated (a
/// level-triggered controller would otherwise write one per pass).
pub fn record_event(objects: &Objects, involved: &Value, type_: &str, reason: &str, message: &str, component: &str) {
    let ev_rt = rt(objects, "", "events");
    let ns = match namespace(involved) {
        "" => "default",
        n => n,
    };
    let (events, _) = objects.store.list(&ev_rt.key(), Some(ns));
    if events
        .iter()
        .any(|e| e["involvedObject"]["uid"] == uid(involved) && e["reason"] == reason && e["message"] == message)
    {
        return;
    }
    let now = crate::time::now();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let _ = objects.create(
        &ev_rt,
        ns,
        json!({
            "metadata": {"name": format!("{}.{nanos:x}", name(involved))},
            "involvedObject": {
                "apiVersion": involved["apiVersion"], "kind": involved["kind"], "name": name(involved),
                "namespace": namespace(involved), "uid": uid(involved),
                "resourceVersion": involved["metadata"]["resourceVersion"],
            },
            "type": type_,
            "reason": reason,
            "message": message,
            "source": {"component": component},
            "reportingComponent": component,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
        }),
        &WriteOpts::default(),
    );
}

type Reconcile = fn(&Objects);

async fn run(name: &'static str, objects: Objects, mut stop: watch::Receiver<bool>, f: Reconcile) {
    let mut changes = objects.store.changes();
    loop {
        let o = objects.clone();
        // Reconcilers are synchronous and may touch the file system.
        if let Err(e) = tokio::task::spawn_blocking(move || f(&o)).await {
            tracing::error!(controller = name, "reconcile panicked: {e}");
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = changes.recv() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                changes = changes.resubscribe();
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Starts every controller; they stop when `stop` turns true.
pub fn spawn_all(objects: Objects, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let controllers: [(&'static str, Reconcile); 9] = [
        ("disruption", disruption::reconcile),
        ("garbage-collector", gc::reconcile),
        ("namespaces", lifecycle::namespaces),
        ("crds", lifecycle::crds),
        ("statefulsets", statefulset::reconcile),
        ("deployments", replicaset::deployments),
        ("replicasets", replicaset::replicasets),
        ("scheduler", scheduler::reconcile),
        ("volumes", volumes::reconcile),
    ];
    controllers.into_iter().map(|(name, f)| tokio::spawn(run(name, objects.clone(), stop.clone(), f))).collect()
}
