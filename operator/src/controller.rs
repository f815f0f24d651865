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
use crate::planner::{self, cond, Action, ConditionUpdate, NodeObservation, Observation, PodObservation};
use crate::{Error, Result};

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
}

impl Context {
    pub fn new(client: Client, admin: Admin, metrics: Arc<Metrics>, instance: String) -> Context {
        let recorder =
            Recorder::new(client.clone(), Reporter { controller: FIELD_MANAGER.into(), instance: Some(instance) });
        Context { client, recorder, admin, metrics, failures: Mutex::default() }
    }
}

/// Runs the controller until the stream ends (shutdown signal).
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let clusters: Api<KeyraftCluster> = Api::all(client.clone());
    let cfg = watcher::Config::default();
    let managed = watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"));
    Controller::new(clusters, cfg.clone())
        .owns(Api::<StatefulSet>::all(client.clone()), managed.clone())
        .owns(Api::<Service>::all(client.clone()), managed.clone())
        .owns(Api::<PodDisruptionBudget>::all(client.clone()), managed.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), managed.clone())
        // Pods are owned by the StatefulSet, not by us: map them by label.
        .watches(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().labels("app.kubernetes.io/name=keyraft"),
            |pod: Pod| {
                let ns = pod.namespace()?;
                let name = pod.labels().get("app.kubernetes.io/instance")?.clone();
                Some(ObjectRef::<KeyraftCluster>::new(&name).within(&ns))
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(cluster = %obj, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
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

fn ssa() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

async fn apply_object<K>(client: &Client, ns: &str, obj: &K) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let name = obj.meta().name.clone().ok_or_else(|| Error::MissingField("object".into(), "metadata.name"))?;
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.patch(&name, &ssa(), &Patch::Apply(obj)).await?;
    Ok(())
}

/// Image tag of a pod's node container.
fn pod_version(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == "keyraft-node"))
        .and_then(|c| c.image.as_deref())
        .and_then(|i| i.rsplit_once(':').map(|(_, tag)| tag.to_string()))
        .unwrap_or_default()
}

fn pod_ready(pod: &Pod) -> (bool, Option<Duration>) {
    let cond =
        pod.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    match cond {
        Some(c) if c.status == "True" => (true, None),
        Some(c) => {
            let since = c
                .last_transition_time
                .as_ref()
                .map(|t| t.0)
                .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let age = since
                .map(|t| Duration::from_secs(Timestamp::now().as_second().saturating_sub(t.as_second()).max(0) as u64));
            (false, age)
        }
        None => (false, Some(Duration::ZERO)),
    }
}

struct Observed {
    obs: Observation,
    /// volumeClaimTemplates of the existing StatefulSet (immutable).
    claim_templates: Option<Vec<PersistentVolumeClaim>>,
}

async fn observe(kr: &KeyraftCluster, ctx: &Context, names: &Names) -> Result<Observed> {
    let ns = &names.namespace;
    let selector = builders::selector_string(&names.cluster);
    let sts = Api::<StatefulSet>::namespaced(ctx.client.clone(), ns).get_opt(&names.statefulset).await?;
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns).list(&ListParams::default().labels(&selector)).await?;
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await?;

    // Ask every node at once; each call is bounded by the admin timeout.
    let statuses = futures::future::join_all(pods.items.iter().map(|p| {
        let addr = names.pod_address(&p.name_any());
        async move { ctx.admin.status(&addr).await }
    }))
    .await;

    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let mut observed = Vec::new();
    for (pod, status) in pods.items.iter().zip(statuses) {
        let name = pod.name_any();
        let Some(ordinal) = name.strip_prefix(&format!("{}-", names.statefulset)).and_then(|o| o.parse::<u32>().ok())
        else {
            continue;
        };
        let mut zone = None;
        if let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
            // A missing Node or a failed read only loses the zone.
            if let Ok(Some(node)) = nodes.get_opt(&node_name).await {
                zone = node.labels().get(&kr.spec.topology.zone_key).filter(|z| !z.is_empty()).cloned();
            }
        }
        let (ready, unready_for) = pod_ready(pod);
        observed.push(PodObservation {
            name,
            ordinal,
            version: pod_version(pod),
            zone,
            ready,
            unready_for,
            terminating: pod.metadata.deletion_timestamp.is_some(),
            node: match status {
                Ok(r) => NodeObservation::Reachable(r),
                Err(e) => NodeObservation::Unreachable(e.to_string()),
            },
        });
    }
    observed.sort_by_key(|p| p.ordinal);
    // A cluster re-created over kept volumes is already bootstrapped: take
    // its id from the nodes when the status (new object) has none.
    let from_nodes = observed.iter().find_map(|p| match &p.node {
        NodeObservation::Reachable(r) if !r.cluster_id.is_empty() => Some(r.cluster_id.clone()),
        _ => None,
    });
    let claim_templates = sts.as_ref().and_then(|s| s.spec.as_ref()).and_then(|s| s.volume_claim_templates.clone());
    Ok(Observed {
        claim_templates,
        obs: Observation {
            names: names.clone(),
            spec: kr.spec.clone(),
            paused: kr.is_paused(),
            cluster_id: kr.status.as_ref().and_then(|s| s.cluster_id.clone()).or(from_nodes),
            statefulset_replicas: sts.and_then(|s| s.spec).and_then(|s| s.replicas),
            pods: observed,
            pvcs: pvcs.items.iter().map(|p| p.name_any()).collect(),
        },
    })
}

async fn publish(ctx: &Context, kr: &KeyraftCluster, type_: EventType, reason: &str, action: &str, note: String) {
    let ev = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
    if let Err(e) = ctx.recorder.publish(&ev, &kr.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}

async fn apply(kr: &KeyraftCluster, ctx: &Context) -> Result<Requeue> {
    let names = Names::of(kr)?;
    let ns = names.namespace.clone();
    let Observed { obs, claim_templates } = observe(kr, ctx, &names).await?;
    let actions = planner::plan(&obs);
    tracing::debug!(cluster = %key(kr), ?actions, "planned");

    let mut conditions: Vec<ConditionUpdate> = Vec::new();
    let mut cluster_id = obs.cluster_id.clone();
    let mut busy = false;
    for action in actions {
        let kind = format!("{action:?}").split([' ', '{', '(']).next().unwrap_or("").to_string();
        if !matches!(action, Action::SetCondition(_) | Action::Apply { .. }) {
            ctx.metrics.actions.with_label_values(&[&kind]).inc();
            busy = true;
        }
        match action {
            Action::SetCondition(c) => conditions.push(c),
            Action::Apply { statefulset_replicas } => {
                let client = &ctx.client;
                apply_object(client, &ns, &builders::config_map(kr)?).await?;
                apply_object(client, &ns, &builders::headless_service(kr)?).await?;
                apply_object(client, &ns, &builders::client_service(kr)?).await?;
                apply_object(client, &ns, &builders::pod_disruption_budget(kr)?).await?;
                let mut sts = builders::statefulset(kr, statefulset_replicas)?;
                if let Some(cond) = keep_claim_templates(&mut sts, claim_templates.as_ref()) {
                    conditions.push(cond);
                }
                apply_object(client, &ns, &sts).await?;
                if obs.statefulset_replicas != Some(statefulset_replicas) {
                    busy = true;
                    publish(
                        ctx,
                        kr,
                        EventType::Normal,
                        "Scaled",
                        "ScaleStatefulSet",
                        format!("StatefulSet {} set to {statefulset_replicas} replicas", names.statefulset),
                    )
                    .await;
                }
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

    let status = build_status(kr, &obs, cluster_id, conditions);
    let api: Api<KeyraftCluster> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch_status(&kr.name_any(), &PatchParams::default(), &Patch::Merge(json!({ "status": status }))).await?;

    let settled = status.phase == Some(Phase::Running) && !busy;
    Ok(Requeue::requeue(if settled { Duration::from_secs(30) } else { Duration::from_secs(5) }))
}

/// Carries out one action against the nodes or the pods.
async fn act(
    ctx: &Context,
    kr: &KeyraftCluster,
    names: &Names,
    action: Action,
    cluster_id: &mut Option<String>,
) -> Result<()> {
    let ns = &names.namespace;
    match action {
        Action::Bootstrap { pod, peers, partitions, replication_factor, zones } => {
            let addr = names.pod_address(&pod);
            let zones = zones.into_iter().collect();
            let id = ctx.admin.bootstrap(&addr, peers.clone(), partitions, replication_factor, zones).await?;
            publish(
                ctx,
                kr,
                EventType::Normal,
                "Bootstrapped",
                "Bootstrap",
                format!("cluster {id} bootstrapped through {pod} with {} nodes", peers.len()),
            )
            .await;
            *cluster_id = Some(id);
        }
        Action::SetDefaultRead { pod, level } => {
            ctx.admin.set_default_read(&names.pod_address(&pod), level).await?;
            publish(
                ctx,
                kr,
                EventType::Normal,
                "DefaultReadChanged",
                "SetDefaultRead",
                format!("default read consistency set to {}", level.as_str()),
            )
            .await;
        }
        Action::RestartPod { pod } => {
            Api::<Pod>::namespaced(ctx.client.clone(), ns).delete(&pod, &DeleteParams::default()).await?;
            publish(
                ctx,
                kr,
                EventType::Normal,
                "RestartingPod",
                "Upgrade",
                format!("deleted {pod} to restart it on version {}", kr.spec.version),
            )
            .await;
        }
        Action::DeletePvc { name } => {
            delete_if_present(&Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns), &name).await?;
            publish(
                ctx,
                kr,
                EventType::Normal,
                "VolumeDeleted",
                "ScaleIn",
                format!("deleted PVC {name} of a removed member (reclaimPolicy Delete)"),
            )
            .await;
        }
        Action::SetZone { via, pod, node_id, zone } => {
            ctx.admin.set_member_zone(&names.pod_address(&via), node_id, &zone).await?;
            publish(
                ctx,
                kr,
                EventType::Normal,
                "ZoneRecorded",
                "SetZone",
                format!("member {pod} (node {node_id}) is in zone {zone} (label {})", kr.spec.topology.zone_key),
            )
            .await;
        }
        Action::ReclaimMember { pod, pvc } => {
            // The claim first: it is released once the pod is gone, and
            // the StatefulSet then creates the pod with a fresh one.
            delete_if_present(&Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns), &pvc).await?;
            delete_if_present(&Api::<Pod>::namespaced(ctx.client.clone(), ns), &pod).await?;
            publish(
                ctx,
                kr,
                EventType::Warning,
                "MemberReclaimed",
                "Failover",
                format!(
                    "{pod} came back after its member was removed; deleted PVC {pvc} and the pod so it rejoins empty as a new member"
                ),
            )
            .await;
        }
        Action::Rebalance { via, max_moves } => {
            let resp = ctx.admin.rebalance(&names.pod_address(&via), false, max_moves).await?;
            if !resp.moves.is_empty() {
                publish(
                    ctx,
                    kr,
                    EventType::Normal,
                    "Rebalancing",
                    "Rebalance",
                    format!(
                        "moving {} partitions (at most {max_moves} at a time): {}",
                        resp.moves.len(),
                        crate::admin::describe_moves(&resp.moves)
                    ),
                )
                .await;
            }
        }
        Action::Decommission { via, pod, node_id } => {
            set_member_state(ctx, kr, names, &via, &pod, node_id, NodeState::Decommissioning).await?;
        }
        Action::DrainLeaders { via, pod, node_id } => {
            set_member_state(ctx, kr, names, &via, &pod, node_id, NodeState::Draining).await?;
        }
        Action::ActivateMember { via, pod, node_id } => {
            set_member_state(ctx, kr, names, &via, &pod, node_id, NodeState::Active).await?;
        }
        Action::ReplaceMember { via, pod, node_id } => {
            set_member_state(ctx, kr, names, &via, &pod, node_id, NodeState::Failed).await?;
        }
        Action::SetCondition(_) | Action::Apply { .. } => {}
    }
    Ok(())
}

/// Admin.SetMemberState through `via`, with an Event saying why.
async fn set_member_state(
    ctx: &Context,
    kr: &KeyraftCluster,
    names: &Names,
    via: &str,
    pod: &str,
    node_id: u64,
    state: NodeState,
) -> Result<()> {
    let member = ctx.admin.set_member_state(&names.pod_address(via), node_id, pod, state).await?;
    let (reason, action, why) = match state {
        NodeState::Decommissioning => {
            ("Decommissioning", "ScaleIn", "its replicas move to other members before the pod goes")
        }
        NodeState::Draining => ("DrainingLeaders", "Upgrade", "it hands its leaderships over before the pod restarts"),
        NodeState::Active => ("MemberActive", "Activate", "it is back, ready and caught up, and may lead again"),
        NodeState::Failed => {
            ("MemberFailed", "Failover", "unready past failover.timeout: its replicas are re-created elsewhere")
        }
        NodeState::Removed => ("MemberRemoved", "ScaleIn", "it holds nothing"),
    };
    publish(
        ctx,
        kr,
        if state == NodeState::Failed { EventType::Warning } else { EventType::Normal },
        reason,
        action,
        format!("member {pod} (node {}) is now {}: {why}", member.id, member.state),
    )
    .await;
    Ok(())
}

/// A StatefulSet's volumeClaimTemplates cannot change: keep the existing
/// ones (so the rest of the template still applies) and say why the new
/// storage settings are not in effect.
fn keep_claim_templates(
    sts: &mut StatefulSet,
    existing: Option<&Vec<PersistentVolumeClaim>>,
) -> Option<ConditionUpdate> {
    let existing = existing?;
    let spec = sts.spec.as_mut()?;
    let request = |v: &[PersistentVolumeClaim]| {
        v.first().and_then(|c| c.spec.as_ref()).map(|s| {
            (
                s.storage_class_name.clone(),
                s.resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get("storage"))
                    .map(|q| q.0.clone()),
            )
        })
    };
    let wanted = request(spec.volume_claim_templates.as_deref().unwrap_or_default());
    let have = request(existing);
    // The API server fills in a default storageClassName; compare only what the spec sets.
    let differs = match (&wanted, &have) {
        (Some((wc, ws)), Some((hc, hs))) => ws != hs || (wc.is_some() && wc != hc),
        _ => false,
    };
    spec.volume_claim_templates = Some(existing.clone());
    differs.then(|| ConditionUpdate {
        type_: cond::DEGRADED,
        status: true,
        reason: "StorageChangeNotApplied".into(),
        message: format!(
            "spec.storage asks for {:?} but the StatefulSet's volumeClaimTemplates are immutable and stay at {:?}; resize the PVCs by hand or create a new cluster",
            wanted.unwrap_or_default(),
            have.unwrap_or_default()
        ),
    })
}

/// Deletion: owned objects go by garbage collection; volumes follow the
/// reclaim policy (the StatefulSet's retention policy covers clusters that
/// support it; this covers the rest).
async fn cleanup(kr: &KeyraftCluster, ctx: &Context) -> Result<Requeue> {
    let names = Names::of(kr)?;
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

/// Status from the observation and the planner's conditions. Conditions the
/// planner did not mention keep their value; a condition's
/// lastTransitionTime only moves when its status flips.
pub fn build_status(
    kr: &KeyraftCluster,
    obs: &Observation,
    cluster_id: Option<String>,
    updates: Vec<ConditionUpdate>,
) -> KeyraftClusterStatus {
    let old = kr.status.clone().unwrap_or_default();
    let generation = kr.metadata.generation;
    let now = Time(Timestamp::now());
    let mut conditions = old.conditions.clone();
    let mut updates = updates;
    if obs.paused {
        updates.push(ConditionUpdate {
            type_: cond::PROGRESSING,
            status: false,
            reason: "Paused".into(),
            message: format!("{} is \"true\": no actions are taken", crate::crd::PAUSE_ANNOTATION),
        });
    }
    for (type_, reason) in [(cond::PROGRESSING, "Stable"), (cond::DEGRADED, "AsExpected")] {
        if !updates.iter().any(|u| u.type_ == type_) && !obs.paused {
            updates.push(ConditionUpdate { type_, status: false, reason: reason.into(), message: String::new() });
        }
    }
    for u in updates {
        let status = if u.status { "True" } else { "False" }.to_string();
        match conditions.iter_mut().find(|c| c.type_ == u.type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now.clone();
                }
                c.status = status;
                c.reason = u.reason;
                c.message = u.message;
                c.observed_generation = generation;
            }
            None => conditions.push(Condition {
                type_: u.type_.into(),
                status,
                reason: u.reason,
                message: u.message,
                last_transition_time: now.clone(),
                observed_generation: generation,
            }),
        }
    }
    let is_true = |t: &str| conditions.iter().any(|c| c.type_ == t && c.status == "True");

    let view = obs
        .pods
        .iter()
        .filter_map(|p| match &p.node {
            NodeObservation::Reachable(r) => r.view.as_ref(),
            _ => None,
        })
        .max_by_key(|v| v.meta_applied_index);
    let mut leaders: BTreeMap<u32, u64> = BTreeMap::new();
    let members: Vec<MemberStatus> = obs
        .pods
        .iter()
        .map(|p| {
            let report = match &p.node {
                NodeObservation::Reachable(r) => Some(r),
                _ => None,
            };
            if let Some(r) = report {
                for part in &r.led_partitions {
                    leaders.insert(*part, r.node_id);
                }
            }
            MemberStatus {
                pod: p.name.clone(),
                node_id: report.map(|r| r.node_id).filter(|id| *id != 0),
                zone: p.zone.clone(),
                ready: p.ready,
                version: Some(p.version.clone()).filter(|v| !v.is_empty()),
                leaders: report.map_or(0, |r| r.leaders),
                // The record of the id the pod's node reports, else the live one under its name.
                state: view
                    .and_then(|v| {
                        let own = report.and_then(|r| v.members.iter().find(|m| m.id == r.node_id));
                        own.or_else(|| v.member(&p.name))
                    })
                    .map(|m| m.state.clone()),
            }
        })
        .collect();
    let partitions = view.map_or_else(Vec::new, |v| {
        v.placement
            .iter()
            .map(|(p, replicas)| PartitionStatus {
                partition: *p,
                replicas: replicas.clone(),
                leader: leaders.get(p).copied(),
            })
            .collect()
    });
    let ready = obs.pods.iter().filter(|p| p.ready).count() as i32;
    let versions: std::collections::BTreeSet<&str> = obs.pods.iter().map(|p| p.version.as_str()).collect();
    let current_version =
        (versions.len() == 1).then(|| versions.iter().next().unwrap().to_string()).or(old.current_version.clone());
    let bootstrapped = cluster_id.is_some();
    let phase = if obs.paused {
        Phase::Paused
    } else if obs.pods.is_empty() {
        Phase::Pending
    } else if !bootstrapped {
        Phase::Bootstrapping
    } else if is_true(cond::DEGRADED) {
        Phase::Degraded
    } else if is_true(cond::UPGRADING) {
        Phase::Upgrading
    } else if obs.statefulset_replicas != Some(obs.spec.replicas) || obs.pods.len() as i32 != obs.spec.replicas {
        Phase::Scaling
    } else if ready == obs.spec.replicas {
        Phase::Running
    } else {
        Phase::Pending
    };
    KeyraftClusterStatus {
        phase: Some(phase),
        conditions,
        replicas: obs.pods.len() as i32,
        ready_replicas: ready,
        current_version,
        target_version: Some(kr.spec.version.clone()),
        updated_replicas: obs.pods.iter().filter(|p| p.version == kr.spec.version).count() as i32,
        members,
        partitions,
        observed_generation: generation,
        cluster_id,
        selector: Some(builders::selector_string(&obs.names.cluster)),
    }
}

/// Deletes an object; one already gone counts as deleted (steps repeat after a crash).
async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_changes_keep_the_existing_claim_templates() {
        let mut kr = cluster();
        let old = builders::statefulset(&kr, 1).unwrap().spec.unwrap().volume_claim_templates;
        kr.spec.storage.size = "5Gi".into();
        let mut sts = builders::statefulset(&kr, 1).unwrap();
        let cond = keep_claim_templates(&mut sts, old.as_ref()).unwrap();
        assert_eq!(cond.reason, "StorageChangeNotApplied");
        assert!(cond.message.contains("5Gi") && cond.message.contains("1Gi"), "{}", cond.message);
        assert_eq!(sts.spec.unwrap().volume_claim_templates, old);
        // Unchanged storage: no condition.
        let mut same = builders::statefulset(&kr, 1).unwrap();
        let now = same.spec.as_ref().unwrap().volume_claim_templates.clone();
        assert!(keep_claim_templates(&mut same, now.as_ref()).is_none());
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(30), Duration::from_secs(300));
    }

    fn cluster() -> KeyraftCluster {
        let mut kr = KeyraftCluster::new("kv", serde_yaml::from_str("replicas: 1\nreplicationFactor: 1").unwrap());
        kr.metadata.namespace = Some("ns".into());
        kr.metadata.generation = Some(4);
        kr.metadata.uid = Some("u".into());
        kr
    }

    fn obs(kr: &KeyraftCluster, ready: bool) -> Observation {
        Observation {
            names: Names::of(kr).unwrap(),
            spec: kr.spec.clone(),
            paused: false,
            cluster_id: Some("c".into()),
            statefulset_replicas: Some(1),
            pods: vec![PodObservation {
                name: "kv-0".into(),
                ordinal: 0,
                version: "0.1.0".into(),
                zone: None,
                ready,
                unready_for: None,
                terminating: false,
                node: NodeObservation::Unreachable("x".into()),
            }],
            pvcs: vec![],
        }
    }

    #[test]
    fn status_tracks_generation_phase_and_transitions() {
        let mut kr = cluster();
        let s = build_status(&kr, &obs(&kr, true), Some("c".into()), vec![]);
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(s.phase, Some(Phase::Running));
        assert_eq!(s.current_version.as_deref(), Some("0.1.0"));
        let degraded = s.conditions.iter().find(|c| c.type_ == "Degraded").unwrap().clone();
        assert_eq!(degraded.status, "False");
        // Same status again: the transition time does not move.
        kr.status = Some(s);
        std::thread::sleep(Duration::from_millis(1100));
        let s2 = build_status(&kr, &obs(&kr, true), Some("c".into()), vec![]);
        let d2 = s2.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
        assert_eq!(d2.last_transition_time, degraded.last_transition_time);
        // A flip moves it, and the phase follows.
        let s3 = build_status(
            &kr,
            &obs(&kr, true),
            Some("c".into()),
            vec![ConditionUpdate { type_: cond::DEGRADED, status: true, reason: "X".into(), message: "m".into() }],
        );
        let d3 = s3.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
        assert_ne!(d3.last_transition_time, degraded.last_transition_time);
        assert_eq!(s3.phase, Some(Phase::Degraded));
        // Unbootstrapped clusters are Bootstrapping.
        let s4 = build_status(&cluster(), &obs(&kr, false), None, vec![]);
        assert_eq!(s4.phase, Some(Phase::Bootstrapping));
    }
}

/// One pass of `apply` against a fake API server on loopback that records
/// every request: checks what the act phase sends, not only what it plans.
#[cfg(test)]
mod act_tests {
    use super::*;
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::IntoResponse;

    #[derive(Clone, Debug)]
    struct Request {
        method: Method,
        path: String,
        query: String,
        content_type: String,
        body: Value,
    }
    use serde_json::Value;

    type Log = Arc<Mutex<Vec<Request>>>;

    /// `gets`: answers to GETs whose path ends with the given suffix; other
    /// GETs see an empty list, the StatefulSet none.
    async fn fake_api(log: Log, kr: Value, gets: Vec<(&'static str, Value)>) -> String {
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let log = log.clone();
            let kr = kr.clone();
            let gets = gets.clone();
            async move {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                log.lock().unwrap().push(Request {
                    method: method.clone(),
                    path: uri.path().to_string(),
                    query: uri.query().unwrap_or_default().to_string(),
                    content_type: headers
                        .get("content-type")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default(),
                    body: body.clone(),
                });
                let path = uri.path();
                let json = |code: StatusCode, v: Value| {
                    (code, [("content-type", "application/json")], v.to_string()).into_response()
                };
                if method == Method::GET {
                    if let Some((_, v)) = gets.iter().find(|(suffix, _)| path.ends_with(suffix)) {
                        return json(StatusCode::OK, v.clone());
                    }
                }
                match method {
                    Method::GET if path.ends_with("/statefulsets/kv") => json(
                        StatusCode::NOT_FOUND,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "reason": "NotFound", "code": 404, "message": "not found"}),
                    ),
                    Method::GET => {
                        json(StatusCode::OK, json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []}))
                    }
                    Method::PATCH if path.ends_with("/status") => {
                        let mut obj = kr.clone();
                        obj["status"] = body["status"].clone();
                        json(StatusCode::OK, obj)
                    }
                    Method::PATCH => json(StatusCode::OK, body),
                    Method::POST => json(StatusCode::CREATED, body),
                    _ => json(StatusCode::METHOD_NOT_ALLOWED, Value::Null),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn fresh_cluster_applies_every_object_and_reports_waiting() {
        let mut kr = KeyraftCluster::new("kv", serde_yaml::from_str("replicas: 3").unwrap());
        kr.metadata.namespace = Some("ns".into());
        kr.metadata.uid = Some("uid-1".into());
        kr.metadata.generation = Some(2);
        let log: Log = Arc::default();
        let url = fake_api(log.clone(), serde_json::to_value(&kr).unwrap(), vec![]).await;
        let client = Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let ctx = Context::new(
            client,
            Admin { timeout: Duration::from_millis(200), redirect: None },
            Arc::new(Metrics::new()),
            "test".into(),
        );

        let requeue = apply(&kr, &ctx).await.unwrap();
        assert_eq!(requeue, Requeue::requeue(Duration::from_secs(5)), "not settled yet");

        let log = log.lock().unwrap().clone();
        let applied: Vec<&str> = log
            .iter()
            .filter(|r| r.method == Method::PATCH && !r.path.ends_with("/status"))
            .map(|r| r.path.as_str())
            .collect();
        assert_eq!(
            applied,
            [
                "/api/v1/namespaces/ns/configmaps/kv-config",
                "/api/v1/namespaces/ns/services/kv-headless",
                "/api/v1/namespaces/ns/services/kv",
                "/apis/policy/v1/namespaces/ns/poddisruptionbudgets/kv",
                "/apis/apps/v1/namespaces/ns/statefulsets/kv",
            ]
        );
        for r in log.iter().filter(|r| r.method == Method::PATCH && !r.path.ends_with("/status")) {
            assert_eq!(r.content_type, "application/apply-patch+yaml", "{}", r.path);
            assert!(r.query.contains("fieldManager=keyraft-operator"), "{}: {}", r.path, r.query);
            assert!(r.query.contains("force=true"), "{}: {}", r.path, r.query);
        }
        let sts = log.iter().find(|r| r.path.ends_with("/statefulsets/kv") && r.method == Method::PATCH).unwrap();
        assert_eq!(sts.body["spec"]["replicas"], 3);

        let status = log.iter().find(|r| r.path.ends_with("/keyraftclusters/kv/status")).unwrap();
        assert_eq!(status.content_type, "application/merge-patch+json");
        let s = &status.body["status"];
        assert_eq!(s["observedGeneration"], 2);
        assert_eq!(s["phase"], "Pending");
        let progressing = s["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Progressing").unwrap();
        assert_eq!(progressing["reason"], "WaitingForPods");
        assert!(progressing["message"].as_str().unwrap().contains("kv-0, kv-1, kv-2"));

        // A person sees the scale-up as an Event on the cluster.
        let event = log
            .iter()
            .find(|r| r.method == Method::POST && r.path == "/apis/events.k8s.io/v1/namespaces/ns/events")
            .expect("an Event");
        assert_eq!(event.body["reason"], "Scaled");
        assert_eq!(event.body["regarding"]["kind"], "KeyraftCluster");
    }

    fn pod_json(ordinal: u32) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("kv-{ordinal}"), "namespace": "ns",
                         "labels": {"app.kubernetes.io/name": "keyraft", "app.kubernetes.io/instance": "kv"}},
            "spec": {"containers": [{"name": "keyraft-node", "image": "keyraft/keyraft-node:0.1.0"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        })
    }

    #[tokio::test]
    async fn scale_in_decommissions_the_highest_member_through_a_ready_node() {
        use crate::admin::fake::{serve, FakeNode};
        use keyraft_api::pb;

        // spec.replicas 4 while the StatefulSet has 5 pods, all members.
        let mut kr = KeyraftCluster::new("kv", serde_yaml::from_str("replicas: 4").unwrap());
        kr.metadata.namespace = Some("ns".into());
        kr.metadata.uid = Some("uid-1".into());
        kr.status = Some(KeyraftClusterStatus { cluster_id: Some("c1".into()), ..Default::default() });
        let node = Arc::new(FakeNode::default());
        *node.status.lock().unwrap() = pb::StatusResponse {
            node: Some(pb::NodeInfo {
                id: 1,
                joined: true,
                ready: true,
                cluster_id: "c1".into(),
                version: "0.1.0".into(),
                ..Default::default()
            }),
            groups: vec![],
            cluster: Some(pb::ClusterView {
                cluster_id: "c1".into(),
                members: (0..5)
                    .map(|o| pb::MemberRecord {
                        id: o + 1,
                        name: format!("kv-{o}"),
                        state: "active".into(),
                        ..Default::default()
                    })
                    .collect(),
                placement: vec![pb::PartitionPlacement { partition: 0, replicas: vec![1, 2, 5], preferred_leader: 1 }],
                meta_applied_index: 10,
                default_read: pb::Consistency::Linearizable as i32,
                ..Default::default()
            }),
        };
        let node_addr = serve(node.clone()).await;
        let log: Log = Arc::default();
        let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                         "metadata": {"name": "kv", "namespace": "ns"},
                         "spec": {"replicas": 5, "selector": {}, "template": {}}});
        let pods = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {},
                          "items": (0..5).map(pod_json).collect::<Vec<_>>()});
        let url =
            fake_api(log.clone(), serde_json::to_value(&kr).unwrap(), vec![("/statefulsets/kv", sts), ("/pods", pods)])
                .await;
        let client = Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let admin = Admin { timeout: Duration::from_secs(2), redirect: Some(node_addr) };
        let ctx = Context::new(client, admin, Arc::new(Metrics::new()), "test".into());

        apply(&kr, &ctx).await.unwrap();

        // The member is set decommissioning by id, its pod name along.
        let calls = node.member_states.lock().unwrap().clone();
        let sent: Vec<(u64, &str, &str)> = calls.iter().map(|r| (r.id, r.name.as_str(), r.state.as_str())).collect();
        assert_eq!(sent, [(5, "kv-4", "decommissioning")]);
        assert!(node.rebalances.lock().unwrap().is_empty(), "balanced: no Rebalance");
        let log = log.lock().unwrap().clone();
        // The StatefulSet keeps its 5 pods until kv-4 is empty.
        let sts = log.iter().find(|r| r.path.ends_with("/statefulsets/kv") && r.method == Method::PATCH).unwrap();
        assert_eq!(sts.body["spec"]["replicas"], 5);
        let event = log
            .iter()
            .find(|r| r.method == Method::POST && r.path.ends_with("/events") && r.body["reason"] == "Decommissioning")
            .expect("a Decommissioning Event");
        assert!(
            event.body["note"].as_str().unwrap().contains("kv-4 (node 5) is now decommissioning"),
            "{}",
            event.body
        );
        let status = log.iter().find(|r| r.path.ends_with("/keyraftclusters/kv/status")).unwrap();
        let members = status.body["status"]["members"].as_array().unwrap();
        assert_eq!(members.len(), 5);
        assert_eq!(members[4]["state"], "active");
    }
}
