//! Placement upkeep: zones, default read and rebalancing after scale-out.

use super::*;

/// Partitions a balanced placement (the node's own planner) would change.
pub fn unbalanced_partitions(view: &ClusterViewReport, replication_factor: u32) -> Vec<u32> {
    let nodes: Vec<NodeView> =
        view.members.iter().map(|m| NodeView { id: m.id, zone: m.zone.clone(), state: m.state }).collect();
    let mut placement = view.placement.clone();
    placement.sort_by_key(|(p, _)| *p);
    let current: Vec<PartitionTarget> = placement
        .iter()
        .map(|(p, replicas)| PartitionTarget {
            replicas: replicas.clone(),
            preferred_leader: view.preferred_leaders.get(p).copied().unwrap_or_default(),
        })
        .collect();
    let settings = PlanSettings { replication_factor: replication_factor as usize, max_moves: usize::MAX };
    let target = shared::plan(&nodes, &current, settings);
    placement.iter().zip(current.iter().zip(&target)).filter(|(_, (a, b))| a != b).map(|((p, _), _)| *p).collect()
}

/// Records each member's zone from its pod's Node, so placement can spread
/// replicas over zones.
pub(super) fn plan_zones(obs: &Observation, view: &ClusterViewReport, via: &str) -> Vec<Action> {
    obs.pods
        .iter()
        .filter_map(|p| {
            let zone = p.zone.as_ref()?;
            let m = view.member(&p.name).filter(|m| m.state != MemberState::Removed && &m.zone != zone)?;
            Some(Action::SetZone { via: via.to_string(), pod: p.name.clone(), node_id: m.id, zone: zone.clone() })
        })
        .collect()
}

/// Rebalance after scale-out: only while every member is active and every
/// earlier move is finished, at most `maxConcurrentMoves` partitions a call.
pub(super) fn plan_rebalance(
    obs: &Observation,
    view: &ClusterViewReport,
    via: &str,
    joining: &[String],
) -> Vec<Action> {
    let rebalancing =
        |status: bool, reason: &str, message: String| condition(cond::REBALANCING, status, reason, message);
    // Replicas on members that may not hold them (failed, decommissioning,
    // gone): the nodes re-create them elsewhere by themselves.
    let holds = |id: &u64| view.members.iter().any(|m| m.id == *id && m.state.holds_replicas());
    let repairing: Vec<String> =
        view.placement.iter().filter(|(_, replicas)| !replicas.iter().all(holds)).map(|(p, _)| p.to_string()).collect();
    if !repairing.is_empty() {
        return vec![rebalancing(
            true,
            "Repairing",
            format!("moving replicas of partitions {} off failed or leaving members", repairing.join(", ")),
        )];
    }
    let moving = obs.moving_partitions(view);
    if !moving.is_empty() {
        let list = moving.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        return vec![rebalancing(true, "MovingReplicas", format!("partitions moving: {list}"))];
    }
    let unbalanced = unbalanced_partitions(view, obs.spec.replication_factor);
    if unbalanced.is_empty() {
        return vec![rebalancing(false, "Balanced", "replicas and leaders are spread over every member".into())];
    }
    let n = unbalanced.len();
    if !obs.spec.rebalance.enabled {
        return vec![rebalancing(
            false,
            "Disabled",
            format!("{n} partitions could be spread better; spec.rebalance.enabled is false"),
        )];
    }
    let unsettled: Vec<String> = view
        .members
        .iter()
        .filter(|m| !matches!(m.state, MemberState::Active | MemberState::Removed))
        .map(|m| format!("{} ({})", m.name, m.state.as_str()))
        .collect();
    // A member without a pod would be given replicas nobody serves.
    let podless = view
        .members
        .iter()
        .filter(|m| m.state.holds_replicas() && !obs.pods.iter().any(|p| p.name == m.name))
        .map(|m| format!("{} (no pod)", m.name));
    let unsettled: Vec<String> = unsettled.into_iter().chain(podless).collect();
    if !unsettled.is_empty() || !joining.is_empty() {
        let mut waiting = unsettled;
        waiting.extend(joining.iter().map(|p| format!("{p} (joining)")));
        // Pending, so still True: the cluster is not balanced yet and will
        // move replicas as soon as these members settle.
        return vec![rebalancing(
            true,
            "WaitingForMembers",
            format!("{n} partitions to rebalance once every member is active; not yet: {}", waiting.join(", ")),
        )];
    }
    let max_moves = obs.spec.rebalance.max_concurrent_moves.max(1);
    vec![
        Action::Rebalance { via: via.to_string(), max_moves },
        rebalancing(true, "MovingReplicas", format!("rebalancing {n} partitions, at most {max_moves} at a time")),
    ]
}
