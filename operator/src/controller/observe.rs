//! Observe: the cluster's objects, pods, Node zones and every node's
//! Admin.Status, as the planner's Observation.

use super::*;

/// Image tag of a pod's node container.
pub(super) fn pod_version(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == "keyraft-node"))
        .and_then(|c| c.image.as_deref())
        .and_then(|i| i.rsplit_once(':').map(|(_, tag)| tag.to_string()))
        .unwrap_or_default()
}

/// Readiness and, when unready, for how long: a False or Unknown Ready
/// condition counts from its last transition; a pod with no Ready
/// condition at all (Pending, e.g. unschedulable after its Node was lost)
/// counts from its creation.
pub(super) fn pod_ready(pod: &Pod, now: Timestamp) -> (bool, Option<Duration>) {
    let cond =
        pod.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let since = match cond {
        Some(c) if c.status == "True" => return (true, None),
        Some(c) => c.last_transition_time.as_ref().map(|t| t.0).or(created),
        None => created,
    };
    let age = since
        .map_or(Duration::ZERO, |t| Duration::from_secs(now.as_second().saturating_sub(t.as_second()).max(0) as u64));
    (false, Some(age))
}

pub(super) struct Observed {
    pub obs: Observation,
    /// volumeClaimTemplates of the existing StatefulSet (immutable).
    pub claim_templates: Option<Vec<PersistentVolumeClaim>>,
}

pub(super) async fn observe(kr: &KeyraftCluster, ctx: &Context, names: &Names) -> Result<Observed> {
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
        let (ready, unready_for) = pod_ready(pod, Timestamp::now());
        observed.push(PodObservation {
            name,
            ordinal,
            version: pod_version(pod),
            revision: pod.labels().get("controller-revision-hash").cloned(),
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
            update_revision: sts.as_ref().and_then(|s| s.status.as_ref()).and_then(|s| s.update_revision.clone()),
            statefulset_replicas: sts.and_then(|s| s.spec).and_then(|s| s.replicas),
            pods: observed,
            pvcs: pvcs.items.iter().map(|p| p.name_any()).collect(),
            waits: ctx.waits_of(&key(kr)),
            // Set by the caller, from the Secrets it read.
            certified: 0,
        },
    })
}
