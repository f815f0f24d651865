//! Status: built in full from the observation and written by server-side apply.

use super::*;

/// Status from the observation and the planner's conditions, built in full
/// (written by server-side apply, so no list stays stale). Conditions the
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
    merge_conditions(&mut conditions, updates, generation);
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
                    .map(|m| m.state.as_str().to_string()),
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
    } else if ready == obs.spec.replicas && is_true(cond::REBALANCING) {
        // Every pod is ready, but replicas still move (or wait to move)
        // onto new members or off leaving ones: not settled yet.
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
        // The pod template hash (controller revision) when known, not only the tag.
        updated_replicas: obs.pods.iter().filter(|p| !obs.outdated(p)).count() as i32,
        members,
        partitions,
        observed_generation: generation,
        cluster_id,
        selector: Some(builders::selector_string(&obs.names.cluster)),
        restore: old.restore,
    }
}

/// Writes the status subresource in full by server-side apply.
pub(super) async fn write_status(ctx: &Context, kr: &KeyraftCluster, status: &KeyraftClusterStatus) -> Result<()> {
    apply_status(ctx, kr, status).await
}

/// Server-side apply of `status` as the whole status of `obj` (any of our kinds).
pub(super) async fn apply_status<K>(ctx: &Context, obj: &K, status: &impl Serialize) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(&obj.name_any(), &ssa(), &Patch::Apply(body)).await?;
    Ok(())
}

/// Status for a cluster no object can be built for: only its conditions.
pub(super) async fn write_status_conditions(
    ctx: &Context,
    kr: &KeyraftCluster,
    updates: Vec<ConditionUpdate>,
) -> Result<()> {
    let mut status = kr.status.clone().unwrap_or_default();
    status.observed_generation = kr.metadata.generation;
    status.phase = Some(Phase::Degraded);
    merge_conditions(&mut status.conditions, updates, kr.metadata.generation);
    announce_degraded(ctx, kr, &status).await;
    write_status(ctx, kr, &status).await
}

/// A Warning Event each time Degraded becomes true or names another blocker.
pub(super) async fn announce_degraded(ctx: &Context, kr: &KeyraftCluster, status: &KeyraftClusterStatus) {
    let degraded = |s: Option<&KeyraftClusterStatus>| {
        s.and_then(|s| s.conditions.iter().find(|c| c.type_ == cond::DEGRADED && c.status == "True"))
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    let (old, new) = (degraded(kr.status.as_ref()), degraded(Some(status)));
    if let Some((reason, message)) = new.filter(|n| Some(n) != old.as_ref()) {
        let action = format!("Degraded{reason}");
        publish(ctx, kr, EventType::Warning, &reason, &action, message).await;
    }
}

/// Applies condition updates; a condition's lastTransitionTime only moves
/// when its status flips.
pub(super) fn merge_conditions(
    conditions: &mut Vec<Condition>,
    updates: Vec<ConditionUpdate>,
    generation: Option<i64>,
) {
    let now = Time(Timestamp::now());
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
}
