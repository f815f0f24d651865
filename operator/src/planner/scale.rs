//! Scale-in and scale-out: the StatefulSet never shrinks past a member
//! still holding data; claims of gone ordinals follow the reclaim policy.

use super::*;

/// Returns the StatefulSet replicas to keep and the actions toward
/// `desired`; a step that keeps waiting is bounded by `timeouts.scaleIn`.
pub(super) fn plan_scale_in(
    obs: &Observation,
    view: Option<&ClusterViewReport>,
    current: i32,
    desired: i32,
) -> (i32, Vec<Action>) {
    let (replicas, mut actions) = scale_in_step(obs, view, current, desired);
    let acting = actions.iter().any(|a| !matches!(a, Action::SetCondition(_)));
    if replicas == current && !acting && desired >= obs.spec.replication_factor as i32 {
        let pod = obs.names.pod((current - 1) as u32);
        let blocker = match actions.iter().find_map(|a| match a {
            Action::SetCondition(c) => Some(c.message.clone()),
            _ => None,
        }) {
            Some(m) => m,
            None => format!("scale-in of {pod} is waiting"),
        };
        actions.extend(bounded(obs, WaitKind::ScaleIn, &pod, &blocker));
    }
    (replicas, actions)
}

/// The highest pod may go once it is empty: it is no member (its node says
/// it never joined, so no join is in flight), its member is `removed`, or it
/// is `decommissioning` (or `failed`) and the placement no longer lists it.
fn scale_in_step(
    obs: &Observation,
    view: Option<&ClusterViewReport>,
    current: i32,
    desired: i32,
) -> (i32, Vec<Action>) {
    let rf = obs.spec.replication_factor as i32;
    if desired < rf {
        return (
            current,
            vec![condition(
                cond::DEGRADED,
                true,
                "ScaleInRefused",
                format!(
                    "spec.replicas={desired} is below replicationFactor={rf}: every partition needs {rf} distinct nodes; staying at {current} replicas"
                ),
            )],
        );
    }
    // Highest ordinal first: a StatefulSet can only drop its last pod.
    let ord = (current - 1) as u32;
    let pod = obs.names.pod(ord);
    let progress = |msg: String| condition(cond::PROGRESSING, true, "ScalingIn", msg);
    let Some(view) = view else {
        // No view of the cluster at all: wait rather than guess.
        return (
            current,
            vec![condition(
                cond::PROGRESSING,
                true,
                "WaitingForNodes",
                format!("scale-in waits for a node to report whether {pod} holds data"),
            )],
        );
    };
    // The placement is the goal, not the Raft memberships: a pod may only go
    // once no partition's actual voters include it (a joint configuration
    // still counting it would lose its majority with the pod).
    let ids: Vec<u64> = view.members.iter().filter(|m| m.name == pod).map(|m| m.id).collect();
    let voting = obs.partitions_voting(view, &ids);
    let wait_voting = |why: String| (current, vec![progress(why)]);
    let Some(m) = view.member(&pod).filter(|m| m.state != MemberState::Removed) else {
        // A pod whose node is unreachable or says it joined may be a member
        // the view does not show yet: wait rather than drop a join in flight.
        let removed = view.members.iter().any(|m| m.name == pod && m.state == MemberState::Removed);
        let unjoined = obs.pods.iter().find(|p| p.name == pod).is_none_or(|p| p.report().is_some_and(|r| !r.joined));
        if !removed && !unjoined {
            return wait_voting(format!(
                "{pod} is no member in the view yet; waiting for its node to report whether it joined"
            ));
        }
        // Never joined, or already removed from meta: nothing to move.
        return match voting {
            Some(v) if v.is_empty() => (current - 1, vec![progress(format!("{pod} holds no data; removing it"))]),
            Some(v) => wait_voting(format!("{pod} is removed but still a voter of partitions {}", list(&v))),
            None => wait_voting(format!("waiting for every partition to have a leader before removing {pod}")),
        };
    };
    let held = view.holds(m.id);
    match m.state {
        MemberState::Decommissioning | MemberState::Failed if held == 0 => match voting {
            Some(v) if v.is_empty() => (current - 1, vec![progress(format!("{pod} is decommissioned; removing it"))]),
            Some(v) => wait_voting(format!("decommissioning {pod}: partitions {} still count it as a voter", list(&v))),
            None => wait_voting(format!("decommissioning {pod}: waiting for every partition to have a leader")),
        },
        MemberState::Decommissioning | MemberState::Failed => {
            (current, vec![progress(format!("decommissioning {pod}: {held} partition replicas left to move"))])
        }
        _ => match obs.via(&pod) {
            Some(via) => (
                current,
                vec![
                    Action::Decommission { via: via.name.clone(), pod: pod.clone(), node_id: m.id },
                    progress(format!("decommissioning {pod} before removing it")),
                ],
            ),
            None => (
                current,
                vec![condition(
                    cond::PROGRESSING,
                    true,
                    "WaitingForNodes",
                    format!("scale-in waits for a ready member to decommission {pod} through"),
                )],
            ),
        },
    }
}

/// A pod whose own node id is a `removed` member (it came back after its
/// replicas were re-created elsewhere) can never serve again with that
/// data: reclaim it so it rejoins empty as a new incarnation.
pub(super) fn plan_reclaim(obs: &Observation, view: &ClusterViewReport, sts_replicas: i32) -> Vec<Action> {
    obs.pods
        .iter()
        // Only once its node answers (below) as the removed member: a pod on
        // a lost Node cannot be deleted cleanly. Not only once it is ready:
        // a member removed before it heard of its removal campaigns in the
        // meta group it left and never turns ready again.
        .filter(|p| (p.ordinal as i32) < sts_replicas && !p.terminating)
        .filter(|p| {
            p.report().is_some_and(|r| {
                r.node_id != 0
                    && view.members.iter().any(|m| m.id == r.node_id && m.state == MemberState::Removed)
                    // Its id must count in no partition's voters any more.
                    && obs.partitions_voting(view, &[r.node_id]).is_some_and(|v| v.is_empty())
            })
        })
        .flat_map(|p| {
            vec![
                Action::ReclaimMember { pod: p.name.clone(), pvc: obs.names.pvc(&p.name) },
                condition(
                    cond::PROGRESSING,
                    true,
                    "ReclaimingMember",
                    format!("{} came back as a removed member; restarting it empty as a new incarnation", p.name),
                ),
            ]
        })
        .collect()
}

/// An `active` or `draining` member whose pod the StatefulSet will not
/// re-create (its ordinal is past the StatefulSet's replicas) holds
/// replicas nobody serves: past `failover.timeout` it is marked failed so
/// the nodes re-create them elsewhere (when a spare member exists).
pub(super) fn plan_orphans(obs: &Observation, view: &ClusterViewReport, sts_replicas: i32) -> Vec<Action> {
    let prefix = format!("{}-", obs.names.statefulset);
    let rf = obs.spec.replication_factor as usize;
    let eligible = view.members.iter().filter(|m| m.state.holds_replicas()).count();
    view.members
        .iter()
        .filter(|m| m.state.holds_replicas())
        .filter(|m| view.member(&m.name).is_some_and(|live| live.id == m.id))
        .filter(|m| !obs.pods.iter().any(|p| p.name == m.name))
        .filter(|m| m.name.strip_prefix(&prefix).and_then(|o| o.parse::<i32>().ok()).is_some_and(|o| o >= sts_replicas))
        .take(1)
        .flat_map(|m| {
            let blocker = format!("member {} (node {}) is {} but has no pod", m.name, m.id, m.state.as_str());
            let mut v = bounded(obs, WaitKind::Orphan, &m.name, &blocker);
            let due = obs.waited(WaitKind::Orphan, &m.name) >= obs.bound(WaitKind::Orphan);
            if let (true, true, Some(via)) = (due, eligible > rf, obs.via(&m.name)) {
                v.push(Action::ReplaceMember { via: via.name.clone(), pod: m.name.clone(), node_id: m.id });
            }
            v
        })
        .collect()
}
