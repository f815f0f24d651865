//! Placement upkeep: zones, default read and rebalancing after scale-out.

use super::*;

/// Partitions a balanced placement (the node's own planner) would change.
pub fn unbalanced_partitions(view: &ClusterViewReport, replication_factor: u32) -> Vec<u32> {
    let nodes: Vec<NodeView> =
        view.members.iter().map(|m| NodeView { id: m.id, zone: m.zone.clone(), state: m.state }).collect();
    unbalanced_over(view, &nodes, replication_factor)
}

/// Partitions the node's planner would change if the nodes were `nodes`.
fn unbalanced_over(view: &ClusterViewReport, nodes: &[NodeView], replication_factor: u32) -> Vec<u32> {
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
    let target = shared::plan(nodes, &current, settings);
    placement.iter().zip(current.iter().zip(&target)).filter(|(_, (a, b))| a != b).map(|((p, _), _)| *p).collect()
}

/// The members as they will be once the pending zones are recorded and the
/// joining pods are members: the live record of a pod takes the zone of
/// its Node (what `plan_zones` records), and each joining pod counts as an
/// active member with an id no node has. A member whose zone is not
/// recorded yet looks like a zone of its own to the planner, which then
/// cannot give it replicas without losing zone spread: the placement would
/// look balanced while it holds nothing.
fn settled_nodes(obs: &Observation, view: &ClusterViewReport, joining: &[String]) -> Vec<NodeView> {
    let pod_zone = |name: &str| obs.pods.iter().find(|p| p.name == name).and_then(|p| p.zone.clone());
    let mut nodes: Vec<NodeView> = view
        .members
        .iter()
        .map(|m| {
            let live = view.member(&m.name).is_some_and(|l| l.id == m.id) && m.state != MemberState::Removed;
            let zone = pod_zone(&m.name).filter(|_| live).unwrap_or_else(|| m.zone.clone());
            NodeView { id: m.id, zone, state: m.state }
        })
        .collect();
    nodes.extend(joining.iter().enumerate().map(|(i, name)| NodeView {
        id: u64::MAX - i as u64,
        zone: pod_zone(name).unwrap_or_default(),
        state: MemberState::Active,
    }));
    nodes
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

/// Rebalance after scale-out: only while every member is active, joined and
/// has its zone recorded, and every earlier move is finished, at most
/// `maxConcurrentMoves` partitions a call through `via`. From the moment a
/// new pod is wanted until the placement is balanced over every member,
/// the condition is True: a pod that is ready holds no data yet.
pub(super) fn plan_rebalance(
    obs: &Observation,
    view: &ClusterViewReport,
    via: Option<&str>,
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
    // Judged over the members to be, not only those registered so far.
    let n = unbalanced_over(view, &settled_nodes(obs, view, joining), obs.spec.replication_factor).len();
    if n == 0 && joining.is_empty() {
        return vec![rebalancing(false, "Balanced", "replicas and leaders are spread over every member".into())];
    }
    if !obs.spec.rebalance.enabled {
        let once = if joining.is_empty() { String::new() } else { format!(" once {} join", joining.join(", ")) };
        return vec![rebalancing(
            false,
            "Disabled",
            format!("{n} partitions could be spread better{once}; spec.rebalance.enabled is false"),
        )];
    }
    let unsettled = view
        .members
        .iter()
        .filter(|m| !matches!(m.state, MemberState::Active | MemberState::Removed))
        .map(|m| format!("{} ({})", m.name, m.state.as_str()));
    // A member without a pod would be given replicas nobody serves.
    let podless = view
        .members
        .iter()
        .filter(|m| m.state.holds_replicas() && !obs.pods.iter().any(|p| p.name == m.name))
        .map(|m| format!("{} (no pod)", m.name));
    // The nodes plan over the zones they have recorded: moves made before
    // a zone is recorded would be undone once it is.
    let zoneless = obs.pods.iter().filter_map(|p| {
        let zone = p.zone.as_ref()?;
        let m = view.member(&p.name).filter(|m| m.state != MemberState::Removed && &m.zone != zone)?;
        Some(format!("{} (zone {zone} not recorded yet)", m.name))
    });
    let joining = joining.iter().map(|p| format!("{p} (joining)"));
    let mut waiting: Vec<String> = unsettled.chain(podless).chain(zoneless).chain(joining).collect();
    if via.is_none() {
        waiting.push("a joined, ready member to send the rebalance through".into());
    }
    let (Some(via), true) = (via, waiting.is_empty()) else {
        // Pending, so still True: the cluster is not balanced yet and will
        // move replicas as soon as these members settle.
        let what = match n {
            0 => "the new members get their share of replicas".to_string(),
            n => format!("{n} partitions to rebalance"),
        };
        return vec![rebalancing(
            true,
            "WaitingForMembers",
            format!(
                "{what} once every member has joined, is active and has its zone recorded; not yet: {}",
                waiting.join(", ")
            ),
        )];
    };
    let max_moves = obs.spec.rebalance.max_concurrent_moves.max(1);
    vec![
        Action::Rebalance { via: via.to_string(), max_moves },
        rebalancing(true, "MovingReplicas", format!("rebalancing {n} partitions, at most {max_moves} at a time")),
    ]
}
