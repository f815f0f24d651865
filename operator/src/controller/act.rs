//! Act: carry out the planner's steps against the API server and the nodes.

use super::*;

pub(super) fn ssa() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

pub(super) async fn apply_object<K>(client: &Client, ns: &str, obj: &K) -> Result<()>
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

/// Carries out one action against the nodes or the pods.
pub(super) async fn act(
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
                &format!("SetDefaultRead-{}", level.as_str()),
                format!("default read consistency set to {}", level.as_str()),
            )
            .await;
        }
        Action::RestartPod { pod } => {
            delete_if_present(&Api::<Pod>::namespaced(ctx.client.clone(), ns), &pod).await?;
            publish(
                ctx,
                kr,
                EventType::Normal,
                "RestartingPod",
                &format!("Restart-{pod}"),
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
                &format!("DeleteClaim-{name}"),
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
                &format!("SetZone-{pod}-{zone}"),
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
                &format!("Reclaim-{pod}"),
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
                    &event_action("Rebalance", &crate::admin::describe_moves(&resp.moves)),
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
        Action::SetCondition(_) | Action::Apply { .. } | Action::Wait(_) => {}
    }
    Ok(())
}

/// Admin.SetMemberState through `via`, with an Event saying why.
pub(super) async fn set_member_state(
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
        &format!("{action}-{pod}-{}", state.as_str()),
        format!("member {pod} (node {}) is now {}: {why}", member.id, member.state.as_str()),
    )
    .await;
    Ok(())
}

/// A StatefulSet's volumeClaimTemplates cannot change: keep the existing
/// ones (so the rest of the template still applies) and say why the new
/// storage settings are not in effect.
pub(super) fn keep_claim_templates(
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

/// Deletes an object; one already gone counts as deleted (steps repeat after a crash).
pub(super) async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
