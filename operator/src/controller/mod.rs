//! The controller: observe -> plan -> act for every `KeyraftCluster`.
//!
//! Watches the CR, owns the StatefulSet, Services, PDB and ConfigMap, and
//! watches the cluster's pods. Each pass observes (objects, pods, Node zone
//! labels, every node's Admin.Status), asks the pure planner for the next
//! actions, carries them out, emits Events and patches status.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;

use keyraft_api::placement::NodeState;

use crate::admin::Admin;
use crate::builders::{self, Names, FIELD_MANAGER};
use crate::crd::{KeyraftCluster, KeyraftClusterStatus, MemberStatus, PartitionStatus, Phase};
use crate::metrics::Metrics;
use crate::planner::{self, cond, Action, ConditionUpdate, NodeObservation, Observation, PodObservation, Wait};
use crate::{Error, Result};

mod act;
mod backup;
mod certs;
pub mod cluster_backup;
mod cluster_restore;
mod events;
pub mod jobs;
mod observe;
mod status;
#[cfg(test)]
mod tests;

use act::*;
use events::*;
use observe::*;
pub use status::build_status;
use status::*;

/// Finalizer that lets deletion clean up volumes per the reclaim policy.
pub const FINALIZER: &str = "keyraft.io/cleanup";

/// Shared state of every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub admin: Admin,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per cluster, for error backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Since when (monotonic clock) each wait the planner reported has lasted, per cluster.
    waits: Mutex<HashMap<String, BTreeMap<Wait, Instant>>>,
    /// Whether this replica holds the Lease; None without leader election.
    pub leading: Option<tokio::sync::watch::Receiver<bool>>,
    /// Namespaces to watch; empty: every namespace.
    pub namespaces: Vec<String>,
    /// The operator's own namespace: the nodes' NetworkPolicy admits its pods from there.
    pub operator_namespace: Option<String>,
    /// The admin identity and TLS connector of each cluster.
    tls: Mutex<HashMap<String, (crate::tls::OperatorIdentity, keyraft_api::tls::TlsConnector)>>,
    /// Backups running in this process, by `namespace/name` of the KeyraftBackup.
    backups: jobs::Jobs<keyraft_client::backup::Manifest>,
    /// Restores running in this process, by `namespace/name` of the cluster.
    restores: jobs::Jobs<cluster_restore::Restored>,
}

impl Context {
    pub fn new(client: Client, admin: Admin, metrics: Arc<Metrics>, instance: String) -> Context {
        let recorder =
            Recorder::new(client.clone(), Reporter { controller: FIELD_MANAGER.into(), instance: Some(instance) });
        Context {
            client,
            recorder,
            admin,
            metrics,
            failures: Mutex::default(),
            waits: Mutex::default(),
            leading: None,
            namespaces: Vec::new(),
            operator_namespace: None,
            tls: Mutex::default(),
            backups: jobs::Jobs::default(),
            restores: jobs::Jobs::default(),
        }
    }

    /// Destructive steps run only while this is true.
    fn leading(&self) -> bool {
        self.leading.as_ref().is_none_or(|rx| *rx.borrow())
    }

    /// How long each wait of a cluster has lasted so far.
    fn waits_of(&self, cluster: &str) -> BTreeMap<Wait, Duration> {
        let waits = self.waits.lock().unwrap();
        waits.get(cluster).map_or_else(BTreeMap::new, |w| w.iter().map(|(k, t)| (k.clone(), t.elapsed())).collect())
    }

    /// Keeps the start of the waits still reported, starts new ones, drops the rest.
    fn record_waits(&self, cluster: &str, now_waiting: Vec<Wait>) {
        let mut waits = self.waits.lock().unwrap();
        let old = waits.remove(cluster).unwrap_or_default();
        let now = Instant::now();
        let kept: BTreeMap<Wait, Instant> =
            now_waiting.into_iter().map(|w| (w.clone(), old.get(&w).copied().unwrap_or(now))).collect();
        if !kept.is_empty() {
            waits.insert(cluster.to_string(), kept);
        }
    }
}

/// Runs the controller until the stream ends (shutdown signal).
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    if ctx.namespaces.is_empty() {
        run_in(ctx.clone(), None, shutdown).await;
    } else {
        // A namespace-scoped install: one controller per watched namespace,
        // each needing only a Role there.
        let runs = ctx.namespaces.clone().into_iter().map(|ns| run_in(ctx.clone(), Some(ns), shutdown.clone()));
        futures::future::join_all(runs).await;
    }
}

/// One controller over `namespace`, or every namespace.
async fn run_in(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = namespace.as_deref();
    let ctx_watch = ctx.metrics.watches.clone();
    let clusters: Api<KeyraftCluster> = api(&client, ns);
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let backups = backup::run(ctx.clone(), api(&client, ns), shutdown.clone());
    let cfg = watcher::Config::default();
    let managed = watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"));
    let clusters = Controller::new(clusters, cfg.clone())
        .owns(api::<StatefulSet>(&client, ns), managed.clone())
        .owns(api::<Service>(&client, ns), managed.clone())
        .owns(api::<PodDisruptionBudget>(&client, ns), managed.clone())
        .owns(api::<ConfigMap>(&client, ns), managed.clone())
        // Pods are owned by the StatefulSet, not by us: map them by label.
        .watches(
            api::<Pod>(&client, ns),
            watcher::Config::default().labels("app.kubernetes.io/name=keyraft"),
            |pod: Pod| {
                let ns = pod.namespace()?;
                let name = pod.labels().get("app.kubernetes.io/instance")?.clone();
                Some(ObjectRef::<KeyraftCluster>::new(&name).within(&ns))
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| {
            let watches = ctx_watch.clone();
            async move {
                match res {
                    Ok((obj, _)) => {
                        watches.lock().unwrap().working();
                        tracing::debug!(cluster = %obj, "reconciled")
                    }
                    // A list or watch that fails (RBAC, a missing CRD) stops
                    // every reconcile: `/readyz` says so, and `/healthz`
                    // once it lasts.
                    Err(kube::runtime::controller::Error::QueueError(e)) => {
                        watches.lock().unwrap().failed(e.to_string());
                        tracing::warn!(error = %e, "watch failed")
                    }
                    Err(e) => {
                        watches.lock().unwrap().working();
                        tracing::warn!(error = %e, "reconcile failed")
                    }
                }
            }
        });
    futures::join!(clusters, backups);
}

fn key(kr: &KeyraftCluster) -> String {
    format!("{}/{}", kr.namespace().unwrap_or_default(), kr.name_any())
}

async fn reconcile(kr: Arc<KeyraftCluster>, ctx: Arc<Context>) -> Result<Requeue> {
    let ns = kr.namespace().unwrap_or_default();
    let start = Instant::now();
    ctx.metrics.reconciles.with_label_values(&[&ns]).inc();
    let api: Api<KeyraftCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let res = finalizer(&api, FINALIZER, kr.clone(), |ev| async {
        match ev {
            FinalizerEvent::Apply(kr) => apply(&kr, &ctx).await,
            FinalizerEvent::Cleanup(kr) => cleanup(&kr, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(e.to_string()));
    ctx.metrics.duration.with_label_values(&[&ns]).observe(start.elapsed().as_secs_f64());
    if res.is_ok() {
        ctx.failures.lock().unwrap().remove(&key(&kr));
    }
    res
}

/// Exponential backoff per cluster: 5s, 10s, 20s ... capped at 5 minutes.
fn error_policy(kr: Arc<KeyraftCluster>, err: &Error, ctx: Arc<Context>) -> Requeue {
    let ns = kr.namespace().unwrap_or_default();
    ctx.metrics.errors.with_label_values(&[&ns]).inc();
    let mut failures = ctx.failures.lock().unwrap();
    let n = failures.entry(key(&kr)).or_insert(0);
    *n = n.saturating_add(1);
    let delay = backoff(*n);
    tracing::warn!(cluster = %key(&kr), error = %err, retry_in = ?delay, "reconcile error");
    Requeue::requeue(delay)
}

pub fn backoff(failures: u32) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << failures.saturating_sub(1).min(16));
    Duration::from_secs(secs.min(300))
}

async fn apply(kr: &KeyraftCluster, ctx: &Context) -> Result<Requeue> {
    let names = match Names::of(kr) {
        Ok(names) => names,
        // A spec the API server let through but no object can be built
        // from: say so in status; nothing else to do until it changes.
        Err(Error::Invalid(msg)) => {
            let degraded =
                ConditionUpdate { type_: cond::DEGRADED, status: true, reason: "InvalidSpec".into(), message: msg };
            write_status_conditions(ctx, kr, vec![degraded]).await?;
            return Ok(Requeue::await_change());
        }
        Err(e) => return Err(e),
    };
    let ns = names.namespace.clone();
    // Certificates first: the Secrets must hold a pod's certificate before
    // the pod starts, and the nodes are reached with the admin certificate.
    let tls = certs::ensure_tls(kr, ctx, &names).await;
    let Observed { mut obs, claim_templates } = observe(kr, ctx, &names).await?;
    obs.certified = tls.as_ref().map_or(0, |current| crate::tls::certified(kr, &names, current));
    let tls = match tls {
        Ok(current) => certs::advance_rotation(kr, ctx, &names, &current, &obs).await,
        Err(e) => Err(e),
    };
    let rotating_ca = matches!(tls, Ok(true));
    let tls_problem = tls.err().map(|e| {
        tracing::warn!(cluster = %key(kr), error = %e, "TLS not ready");
        ConditionUpdate { type_: cond::DEGRADED, status: true, reason: "TlsNotReady".into(), message: e.to_string() }
    });
    let actions = planner::plan(&obs);
    tracing::debug!(cluster = %key(kr), ?actions, "planned");

    let mut conditions: Vec<ConditionUpdate> = Vec::new();
    let mut cluster_id = obs.cluster_id.clone();
    let mut busy = false;
    let mut waits = Vec::new();
    for action in actions {
        let kind = format!("{action:?}").split([' ', '{', '(']).next().unwrap_or("").to_string();
        if !matches!(action, Action::SetCondition(_) | Action::Apply { .. } | Action::Wait(_)) {
            ctx.metrics.actions.with_label_values(&[&kind]).inc();
            busy = true;
        }
        match action {
            Action::SetCondition(c) => conditions.push(c),
            Action::Wait(w) => {
                busy = true;
                waits.push(w);
            }
            Action::Apply { statefulset_replicas } => {
                // One object the API server refuses must not stop the rest,
                // nor failover and status: it sets Degraded with its message.
                let failed =
                    apply_all(ctx, kr, &names, statefulset_replicas, claim_templates.as_ref(), &mut conditions).await;
                if let Some(msg) = failed {
                    conditions.push(ConditionUpdate {
                        type_: cond::DEGRADED,
                        status: true,
                        reason: "ApplyFailed".into(),
                        message: msg,
                    });
                } else if obs.statefulset_replicas != Some(statefulset_replicas) {
                    busy = true;
                    publish(
                        ctx,
                        kr,
                        EventType::Normal,
                        "Scaled",
                        // One action per target: the recorder folds events
                        // of the same action into a series keeping the first note.
                        &format!("ScaleStatefulSetTo{statefulset_replicas}"),
                        format!("StatefulSet {} set to {statefulset_replicas} replicas", names.statefulset),
                    )
                    .await;
                }
            }
            other if other.is_step() && !ctx.leading() => {
                // Destructive steps only while this replica holds the Lease.
                tracing::warn!(cluster = %key(kr), action = %kind, "not holding the lease; step skipped");
            }
            other => {
                // A node call that fails is reported and retried next pass;
                // it must not keep the status from being written.
                if let Err(e) = act(ctx, kr, &names, other, &mut cluster_id).await {
                    ctx.metrics.errors.with_label_values(&[&ns]).inc();
                    tracing::warn!(cluster = %key(kr), action = %kind, error = %e, "action failed; retrying next pass");
                    publish(ctx, kr, EventType::Warning, "ActionFailed", &kind, format!("{kind} failed: {e}")).await;
                }
            }
        }
    }
    ctx.record_waits(&key(kr), waits);
    // Last, so the planner's view of health does not hide it.
    conditions.extend(tls_problem);

    // A restore decides Available until it is done; backups run once it is.
    let bootstrapped = cluster_id.is_some();
    let all_ready = !obs.pods.is_empty() && obs.pods.iter().filter(|p| p.ready).count() as i32 == kr.spec.replicas;
    let restore = cluster_restore::step(ctx, kr, bootstrapped, all_ready).await;
    conditions.retain(|c| !restore.conditions.iter().any(|r| r.type_ == c.type_));
    conditions.extend(restore.conditions.iter().cloned());
    let restoring = restore.status.as_ref().is_some_and(|r| r.phase != crate::crd::RestorePhase::Completed);
    let (next_backup, backup_problem) = cluster_backup::step(ctx, kr, bootstrapped && !restoring).await;
    conditions.extend(backup_problem);

    let mut status = build_status(kr, &obs, cluster_id, conditions);
    status.restore = restore.status;
    if let Some(phase) = restore.phase {
        status.phase = Some(phase);
    }
    announce_degraded(ctx, kr, &status).await;
    write_status(ctx, kr, &status).await?;

    let settled = status.phase == Some(Phase::Running) && !busy && !restore.busy && !rotating_ca;
    let every = if settled { Duration::from_secs(30) } else { Duration::from_secs(5) };
    // Wake for the next scheduled backup (at least a second later).
    let every = next_backup.map_or(every, |n| every.min(n.max(Duration::from_secs(1))));
    Ok(Requeue::requeue(every))
}

/// Server-side applies every owned object; returns the API server's
/// messages for the objects it refused (the others are still applied).
async fn apply_all(
    ctx: &Context,
    kr: &KeyraftCluster,
    names: &Names,
    replicas: i32,
    claim_templates: Option<&Vec<PersistentVolumeClaim>>,
    conditions: &mut Vec<ConditionUpdate>,
) -> Option<String> {
    let client = &ctx.client;
    let ns = &names.namespace;
    let mut failed = Vec::new();
    let mut note = |what: &str, r: Result<()>| {
        if let Err(e) = r {
            tracing::warn!(cluster = %key(kr), object = what, error = %e, "apply failed");
            failed.push(format!("{what}: {e}"));
        }
    };
    match builders::config_map(kr) {
        Ok(o) => note("ConfigMap", apply_object(client, ns, &o).await),
        Err(e) => note("ConfigMap", Err(e)),
    }
    match builders::headless_service(kr) {
        Ok(o) => note("headless Service", apply_object(client, ns, &o).await),
        Err(e) => note("headless Service", Err(e)),
    }
    match builders::client_service(kr) {
        Ok(o) => note("client Service", apply_object(client, ns, &o).await),
        Err(e) => note("client Service", Err(e)),
    }
    match builders::pod_disruption_budget(kr) {
        Ok(o) => note("PodDisruptionBudget", apply_object(client, ns, &o).await),
        Err(e) => note("PodDisruptionBudget", Err(e)),
    }
    match builders::network_policy(kr, ctx.operator_namespace.as_deref()) {
        Ok(Some(o)) => note("NetworkPolicy", apply_object(client, ns, &o).await),
        Ok(None) => {
            // Turned off: remove the one an earlier spec made.
            let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
            let name = format!("{}-nodes", names.cluster);
            note("NetworkPolicy", delete_if_present(&api, &name).await.map_err(Error::from))
        }
        Err(e) => note("NetworkPolicy", Err(e)),
    }
    match builders::statefulset(kr, replicas) {
        Ok(mut sts) => {
            if let Some(cond) = keep_claim_templates(&mut sts, claim_templates) {
                conditions.push(cond);
            }
            note("StatefulSet", apply_object(client, ns, &sts).await)
        }
        Err(e) => note("StatefulSet", Err(e)),
    }
    (!failed.is_empty()).then(|| format!("applying owned objects failed: {}", failed.join("; ")))
}

/// Deletion: owned objects go by garbage collection; volumes follow the
/// reclaim policy (the StatefulSet's retention policy covers clusters that
/// support it; this covers the rest).
async fn cleanup(kr: &KeyraftCluster, ctx: &Context) -> Result<Requeue> {
    let names = Names::of(kr)?;
    ctx.restores.cancel(&key(kr));
    certs::forget(ctx, kr, &names);
    if kr.spec.storage.reclaim_policy == crate::crd::ReclaimPolicy::Delete {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &names.namespace);
        let pvcs = api.list(&ListParams::default().labels(&builders::selector_string(&names.cluster))).await?;
        for pvc in pvcs.items {
            delete_if_present(&api, &pvc.name_any()).await?;
        }
    }
    publish(
        ctx,
        kr,
        EventType::Normal,
        "Deleted",
        "Cleanup",
        format!(
            "cluster deleted; volumes {}",
            match kr.spec.storage.reclaim_policy {
                crate::crd::ReclaimPolicy::Delete => "deleted",
                crate::crd::ReclaimPolicy::Retain => "retained",
            }
        ),
    )
    .await;
    Ok(Requeue::await_change())
}
