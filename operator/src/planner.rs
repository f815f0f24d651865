//! The planner: a pure function from what the controller observed to the
//! next safe actions (observe -> plan -> act). No I/O, no clock: everything
//! time-dependent arrives in the observation.
//!
//! Placement goes through the node's Admin API: `SetMemberState` for
//! Decommission (decommissioning), DrainLeaders / ActivateMember around an
//! upgrade restart (draining, then active) and ReplaceMember (failed), and
//! `Rebalance` after scale-out. New nodes join by themselves (`KEYRAFT_JOIN`),
//! so scale-out only waits for them to appear among the members.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use keyraft_api::placement::{self as shared, NodeState, NodeView, PartitionTarget, PlanSettings};

use crate::builders::Names;
use crate::crd::{parse_duration, KeyraftClusterSpec, ReadConsistency};

/// Condition types the operator sets.
pub mod cond {
    pub const AVAILABLE: &str = "Available";
    pub const PROGRESSING: &str = "Progressing";
    pub const DEGRADED: &str = "Degraded";
    pub const UPGRADING: &str = "Upgrading";
    pub const REBALANCING: &str = "Rebalancing";
}

/// Everything the planner needs about one cluster.
#[derive(Clone, Debug)]
pub struct Observation {
    pub names: Names,
    pub spec: KeyraftClusterSpec,
    /// The pause annotation is set.
    pub paused: bool,
    /// `status.clusterId`: set once bootstrap succeeded.
    pub cluster_id: Option<String>,
    /// Replicas of the StatefulSet; None when it does not exist yet.
    pub statefulset_replicas: Option<i32>,
    /// Existing pods of the StatefulSet.
    pub pods: Vec<PodObservation>,
    /// Existing PVC names of the cluster.
    pub pvcs: Vec<String>,
}

/// One pod and what its node answered.
#[derive(Clone, Debug)]
pub struct PodObservation {
    pub name: String,
    pub ordinal: u32,
    /// Image tag of the pod's node container.
    pub version: String,
    /// Zone label of the Kubernetes Node the pod runs on.
    pub zone: Option<String>,
    /// Kubernetes readiness.
    pub ready: bool,
    /// How long the pod has been unready (None when ready).
    pub unready_for: Option<Duration>,
    /// The pod has a deletionTimestamp.
    pub terminating: bool,
    pub node: NodeObservation,
}

impl PodObservation {
    /// The node's Admin.Status answer, when it answered.
    pub fn report(&self) -> Option<&NodeReport> {
        match &self.node {
            NodeObservation::Reachable(r) => Some(r),
            NodeObservation::Unreachable(_) => None,
        }
    }
}

/// Answer of a node's Admin.Status: an unreachable node is an observation.
#[derive(Clone, Debug)]
pub enum NodeObservation {
    Unreachable(String),
    Reachable(NodeReport),
}

#[derive(Clone, Debug, Default)]
pub struct NodeReport {
    pub node_id: u64,
    pub joined: bool,
    pub cluster_id: String,
    pub ready: bool,
    pub version: String,
    /// Partition groups this node leads.
    pub leaders: u32,
    /// Partitions this node leads.
    pub led_partitions: Vec<u32>,
    /// Voters of each partition group this node leads (partition, voter ids):
    /// a partition whose voters differ from its placement is still moving.
    pub led_voters: Vec<(u32, Vec<u64>)>,
    /// The meta group's view as this node applied it (joined nodes only).
    pub view: Option<ClusterViewReport>,
}

#[derive(Clone, Debug, Default)]
pub struct ClusterViewReport {
    pub meta_applied_index: u64,
    pub members: Vec<MemberReport>,
    /// (partition, replica node ids): the desired placement in meta.
    pub placement: Vec<(u32, Vec<u64>)>,
    /// Preferred leader of each partition.
    pub preferred_leaders: BTreeMap<u32, u64>,
    pub default_read: Option<ReadConsistency>,
}

#[derive(Clone, Debug, Default)]
pub struct MemberReport {
    pub id: u64,
    /// Pod name the node registered with.
    pub name: String,
    /// active, draining, decommissioning, failed, removed
    pub state: String,
    pub zone: String,
}

impl ClusterViewReport {
    /// The member registered under a pod name. A node that came back with a
    /// new identity leaves its old record behind (failed, then removed):
    /// the live record wins (active or draining, then failed or
    /// decommissioning, then removed), then the newest id.
    pub fn member(&self, name: &str) -> Option<&MemberReport> {
        let rank = |m: &MemberReport| match m.state.as_str() {
            "active" | "draining" => 2,
            "removed" => 0,
            _ => 1,
        };
        self.members.iter().filter(|m| m.name == name).max_by_key(|m| (rank(m), m.id))
    }

    /// Partitions whose placement lists `id`.
    pub fn holds(&self, id: u64) -> usize {
        self.placement.iter().filter(|(_, replicas)| replicas.contains(&id)).count()
    }
}

/// A status condition the planner wants set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// One step for the controller to carry out. Member-state changes and
/// Rebalance are meta-group proposals: the controller sends them to `via`,
/// a joined, ready node, which forwards them to the meta leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Server-side apply every owned object, the StatefulSet with this many replicas.
    Apply { statefulset_replicas: i32 },
    /// Admin.Bootstrap on `pod` with every initial node as a peer and the
    /// zones known for them (advertise address -> zone).
    Bootstrap {
        pod: String,
        peers: Vec<String>,
        partitions: u32,
        replication_factor: u32,
        zones: BTreeMap<String, String>,
    },
    /// Admin.SetMemberZone: record the zone of the pod's Kubernetes Node.
    SetZone { via: String, pod: String, node_id: u64, zone: String },
    /// Admin.SetDefaultRead through `pod`.
    SetDefaultRead { pod: String, level: ReadConsistency },
    /// Admin.Rebalance (not a dry run) moving at most `max_moves` partitions.
    Rebalance { via: String, max_moves: u32 },
    /// Admin.SetMemberState `decommissioning`: the nodes move every replica
    /// off the member, then mark it `removed`.
    Decommission { via: String, pod: String, node_id: u64 },
    /// Admin.SetMemberState `draining` before the pod restarts: the member
    /// keeps its replicas and hands its leaderships over.
    DrainLeaders { via: String, pod: String, node_id: u64 },
    /// Admin.SetMemberState `active` once a drained pod is back and caught up.
    ActivateMember { via: String, pod: String, node_id: u64 },
    /// Delete the pod so the StatefulSet (OnDelete) recreates it on the new template.
    RestartPod { pod: String },
    /// Admin.SetMemberState `failed`: the nodes re-create the member's
    /// replicas elsewhere, then mark it `removed`.
    ReplaceMember { via: String, pod: String, node_id: u64 },
    /// Delete a PVC of a removed member (reclaimPolicy Delete).
    DeletePvc { name: String },
    /// A pod that came back as a member already `removed`: delete its PVC,
    /// then the pod, so it starts empty and joins as a new incarnation.
    ReclaimMember { pod: String, pvc: String },
    /// Set a status condition.
    SetCondition(ConditionUpdate),
}

fn condition(type_: &'static str, status: bool, reason: &str, message: String) -> Action {
    Action::SetCondition(ConditionUpdate { type_, status, reason: reason.to_string(), message })
}

impl Observation {
    fn pod(&self, ordinal: u32) -> Option<&PodObservation> {
        self.pods.iter().find(|p| p.ordinal == ordinal)
    }

    /// The most up-to-date meta view any node reported.
    fn view(&self) -> Option<&ClusterViewReport> {
        self.pods
            .iter()
            .filter_map(|p| match &p.node {
                NodeObservation::Reachable(r) => r.view.as_ref(),
                NodeObservation::Unreachable(_) => None,
            })
            .max_by_key(|v| v.meta_applied_index)
    }

    /// Whether some node (or our own status) says the cluster exists.
    fn bootstrapped(&self) -> bool {
        self.cluster_id.is_some()
            || self.pods.iter().any(|p| match &p.node {
                NodeObservation::Reachable(r) => r.joined || !r.cluster_id.is_empty(),
                NodeObservation::Unreachable(_) => false,
            })
    }

    /// A reachable, joined, ready node to send cluster-wide admin calls
    /// through, other than `avoid` when another one exists.
    fn via(&self, avoid: &str) -> Option<&PodObservation> {
        let usable = |p: &&PodObservation| {
            !p.terminating && matches!(&p.node, NodeObservation::Reachable(r) if r.joined && r.ready)
        };
        self.pods.iter().filter(usable).find(|p| p.name != avoid).or_else(|| self.pods.iter().find(usable))
    }

    /// Partitions whose actual voters (as their leaders report) include any
    /// of `ids`; `None` while some partition has no reporting leader.
    fn partitions_voting(&self, view: &ClusterViewReport, ids: &[u64]) -> Option<Vec<u32>> {
        let led: BTreeMap<u32, &Vec<u64>> = self
            .pods
            .iter()
            .filter_map(PodObservation::report)
            .flat_map(|r| &r.led_voters)
            .map(|(p, v)| (*p, v))
            .collect();
        if view.placement.iter().any(|(p, _)| !led.contains_key(p)) {
            return None;
        }
        Some(led.iter().filter(|(_, v)| v.iter().any(|id| ids.contains(id))).map(|(p, _)| *p).collect())
    }

    /// Partitions whose leader reports voters that differ from the placement:
    /// a move (or repair) the nodes are still carrying out.
    fn moving_partitions(&self, view: &ClusterViewReport) -> BTreeSet<u32> {
        let desired: BTreeMap<u32, BTreeSet<u64>> =
            view.placement.iter().map(|(p, r)| (*p, r.iter().copied().collect())).collect();
        self.pods
            .iter()
            .filter_map(PodObservation::report)
            .flat_map(|r| &r.led_voters)
            .filter(|(p, voters)| desired.get(p).is_some_and(|d| *d != voters.iter().copied().collect()))
            .map(|(p, _)| *p)
            .collect()
    }
}

/// The next actions for a cluster. One safe step per pass: the controller
/// acts, observes again and calls `plan` again.
pub fn plan(obs: &Observation) -> Vec<Action> {
    if obs.paused {
        // Hands off: the controller still refreshes status.
        return Vec::new();
    }
    let spec = &obs.spec;
    let desired = spec.replicas.max(0);
    let current = obs.statefulset_replicas;
    let mut actions = Vec::new();

    if !obs.bootstrapped() {
        actions.push(Action::Apply { statefulset_replicas: current.unwrap_or(desired).max(desired) });
        actions.extend(plan_bootstrap(obs, desired));
        return actions;
    }

    let current = current.unwrap_or(desired);
    let view = obs.view();

    // Scale: never shrink the StatefulSet past a member still holding data.
    let sts_replicas = if desired < current {
        let (replicas, more) = plan_scale_in(obs, view, current, desired);
        actions.extend(more);
        replicas
    } else {
        desired
    };
    actions.insert(0, Action::Apply { statefulset_replicas: sts_replicas });

    // PVCs of ordinals the StatefulSet no longer has, once their pod is gone.
    if spec.storage.reclaim_policy == crate::crd::ReclaimPolicy::Delete {
        let prefix = obs.names.pvc(&obs.names.pod(0));
        let prefix = prefix.trim_end_matches('0');
        for pvc in &obs.pvcs {
            let ordinal = pvc.strip_prefix(prefix).and_then(|o| o.parse::<u32>().ok());
            if let Some(ord) = ordinal {
                if ord >= sts_replicas as u32 && obs.pod(ord).is_none() {
                    actions.push(Action::DeletePvc { name: pvc.clone() });
                }
            }
        }
    }

    // Scale-out: new nodes join by themselves (KEYRAFT_JOIN); wait until
    // every pod of the StatefulSet is a member.
    let joining: Vec<String> = match view {
        Some(v) => (0..sts_replicas.max(0) as u32)
            .map(|o| obs.names.pod(o))
            .filter(|name| v.member(name).is_none_or(|m| m.state == "removed"))
            .collect(),
        None => Vec::new(),
    };
    if !joining.is_empty() && desired >= current {
        actions.push(condition(
            cond::PROGRESSING,
            true,
            "WaitingForJoin",
            format!("waiting for {} to join the cluster", joining.join(", ")),
        ));
    }

    if let (Some(view), Some(via)) = (view, obs.via("")) {
        if view.default_read.is_some_and(|d| d != spec.consistency.default_read) {
            actions.push(Action::SetDefaultRead { pod: via.name.clone(), level: spec.consistency.default_read });
        }
        actions.extend(plan_zones(obs, view, &via.name));
        actions.extend(plan_rebalance(obs, view, &via.name, &joining));
        actions.extend(plan_reclaim(obs, view, sts_replicas));
    }

    actions.extend(plan_failover(obs));
    actions.extend(plan_upgrade(obs, view, sts_replicas));
    actions.push(availability(obs));
    actions
}

fn plan_bootstrap(obs: &Observation, desired: i32) -> Vec<Action> {
    let waiting: Vec<String> = (0..desired as u32)
        .map(|o| obs.names.pod(o))
        .filter(|name| {
            !obs.pods
                .iter()
                .any(|p| &p.name == name && !p.terminating && matches!(p.node, NodeObservation::Reachable(_)))
        })
        .collect();
    if !waiting.is_empty() {
        return vec![condition(
            cond::PROGRESSING,
            true,
            "WaitingForPods",
            format!("bootstrap waits until every initial pod answers; not yet: {}", waiting.join(", ")),
        )];
    }
    let peers = (0..desired as u32).map(|o| obs.names.pod_address(&obs.names.pod(o))).collect();
    let zones = obs
        .pods
        .iter()
        .filter(|p| p.ordinal < desired as u32)
        .filter_map(|p| Some((obs.names.pod_address(&p.name), p.zone.clone()?)))
        .collect();
    vec![
        Action::Bootstrap {
            pod: obs.names.pod(0),
            peers,
            partitions: obs.spec.partitions,
            replication_factor: obs.spec.replication_factor,
            zones,
        },
        condition(cond::PROGRESSING, true, "Bootstrapping", format!("bootstrapping {desired} nodes")),
    ]
}

fn list(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

/// Returns the StatefulSet replicas to keep and the actions toward `desired`.
///
/// The highest pod may go once it is empty: it is no member (never joined),
/// its member is `removed`, or it is `decommissioning` (or `failed`) and the
/// placement no longer lists it.
fn plan_scale_in(
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
    let Some(m) = view.member(&pod).filter(|m| m.state != "removed") else {
        // Never joined, or already removed from meta: nothing to move.
        return match voting {
            Some(v) if v.is_empty() => (current - 1, vec![progress(format!("{pod} holds no data; removing it"))]),
            Some(v) => wait_voting(format!("{pod} is removed but still a voter of partitions {}", list(&v))),
            None => wait_voting(format!("waiting for every partition to have a leader before removing {pod}")),
        };
    };
    let held = view.holds(m.id);
    match m.state.as_str() {
        "decommissioning" | "failed" if held == 0 => match voting {
            Some(v) if v.is_empty() => (current - 1, vec![progress(format!("{pod} is decommissioned; removing it"))]),
            Some(v) => wait_voting(format!("decommissioning {pod}: partitions {} still count it as a voter", list(&v))),
            None => wait_voting(format!("decommissioning {pod}: waiting for every partition to have a leader")),
        },
        "decommissioning" | "failed" => {
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

/// Partitions a balanced placement (the node's own planner) would change.
pub fn unbalanced_partitions(view: &ClusterViewReport, replication_factor: u32) -> Vec<u32> {
    let nodes: Vec<NodeView> = view
        .members
        .iter()
        .filter_map(|m| Some(NodeView { id: m.id, zone: m.zone.clone(), state: NodeState::parse(&m.state)? }))
        .collect();
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
fn plan_zones(obs: &Observation, view: &ClusterViewReport, via: &str) -> Vec<Action> {
    obs.pods
        .iter()
        .filter_map(|p| {
            let zone = p.zone.as_ref()?;
            let m = view.member(&p.name).filter(|m| m.state != "removed" && &m.zone != zone)?;
            Some(Action::SetZone { via: via.to_string(), pod: p.name.clone(), node_id: m.id, zone: zone.clone() })
        })
        .collect()
}

/// A pod whose own node id is a `removed` member (it came back after its
/// replicas were re-created elsewhere) can never serve again with that
/// data: reclaim it so it rejoins empty as a new incarnation.
fn plan_reclaim(obs: &Observation, view: &ClusterViewReport, sts_replicas: i32) -> Vec<Action> {
    obs.pods
        .iter()
        // Only once it is back (ready): a pod on a lost Node cannot be deleted cleanly.
        .filter(|p| (p.ordinal as i32) < sts_replicas && !p.terminating && p.ready)
        .filter(|p| {
            p.report().is_some_and(|r| {
                r.node_id != 0
                    && view.members.iter().any(|m| m.id == r.node_id && m.state == "removed")
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

/// Rebalance after scale-out: only while every member is active and every
/// earlier move is finished, at most `maxConcurrentMoves` partitions a call.
fn plan_rebalance(obs: &Observation, view: &ClusterViewReport, via: &str, joining: &[String]) -> Vec<Action> {
    let rebalancing =
        |status: bool, reason: &str, message: String| condition(cond::REBALANCING, status, reason, message);
    // Replicas on members that may not hold them (failed, decommissioning,
    // gone): the nodes re-create them elsewhere by themselves.
    let holds = |id: &u64| {
        view.members.iter().any(|m| m.id == *id && NodeState::parse(&m.state).is_some_and(NodeState::holds_replicas))
    };
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
        .filter(|m| m.state != "active" && m.state != "removed")
        .map(|m| format!("{} ({})", m.name, m.state))
        .collect();
    if !unsettled.is_empty() || !joining.is_empty() {
        let mut waiting = unsettled;
        waiting.extend(joining.iter().map(|p| format!("{p} (joining)")));
        return vec![rebalancing(
            false,
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

/// Members unready past failover.timeout are marked `failed`, so the nodes
/// re-create their replicas elsewhere. Only while enough other members can
/// hold a full replica set: with no spare, failing a member would only
/// shrink every partition and keep the member from coming back.
fn plan_failover(obs: &Observation) -> Vec<Action> {
    let timeout = parse_duration(&obs.spec.failover.timeout).unwrap_or(Duration::from_secs(300));
    let view = obs.view();
    let mut eligible = view.map_or(0, |v| {
        v.members.iter().filter(|m| NodeState::parse(&m.state).is_some_and(NodeState::holds_replicas)).count()
    });
    let rf = obs.spec.replication_factor as usize;
    // A failed member whose pod is back with its data before its replicas
    // were all re-created elsewhere: it may hold replicas again.
    let back = obs.pods.iter().filter_map(|p| {
        let r = p.report().filter(|r| r.joined && r.ready && p.ready && !p.terminating)?;
        let m = view?.member(&p.name).filter(|m| m.state == "failed" && m.id == r.node_id)?;
        let via = obs.via(&p.name)?;
        Some(Action::ActivateMember { via: via.name.clone(), pod: p.name.clone(), node_id: m.id })
    });
    let back: Vec<Action> = back.collect();
    let replace = obs.pods.iter().filter(|p| p.unready_for.is_some_and(|d| d >= timeout)).flat_map(|p| {
        let member = view.and_then(|v| v.member(&p.name)).filter(|m| m.state != "removed");
        let unready = format!(
            "{} has been unready for {}s (failover.timeout {})",
            p.name,
            p.unready_for.unwrap_or_default().as_secs(),
            obs.spec.failover.timeout
        );
        let degraded = |msg: String| condition(cond::DEGRADED, true, "MemberUnready", msg);
        let Some(m) = member else { return vec![degraded(unready)] };
        if m.state == "failed" || m.state == "decommissioning" {
            return vec![degraded(format!("{unready}; its replicas are being re-created elsewhere"))];
        }
        if eligible <= rf {
            return vec![degraded(format!(
                "{unready}; not failing it over: no spare member to re-create its replicas on (replicationFactor={rf})"
            ))];
        }
        let Some(via) = obs.via(&p.name) else {
            return vec![degraded(format!("{unready}; no ready member to fail it over through"))];
        };
        eligible -= 1;
        vec![
            Action::ReplaceMember { via: via.name.clone(), pod: p.name.clone(), node_id: m.id },
            degraded(format!("{unready}; marked failed, its replicas are re-created elsewhere")),
        ]
    });
    back.into_iter().chain(replace).collect()
}

/// Rolling upgrade, one pod at a time, leaders last: drain the pod
/// (`draining`), restart it once it leads nothing, and make it `active`
/// again once it is back on the new version, ready and caught up.
fn plan_upgrade(obs: &Observation, view: Option<&ClusterViewReport>, sts_replicas: i32) -> Vec<Action> {
    let target = &obs.spec.version;
    let state_of = |pod: &str| view.and_then(|v| v.member(pod)).map(|m| m.state.as_str());
    let id_of = |pod: &PodObservation| view.and_then(|v| v.member(&pod.name)).map(|m| m.id);
    let report = PodObservation::report;

    // A drained pod that is back: ready, on the target version, caught up.
    // The operator drains only for restarts, so a draining member on the
    // target version is one it drained.
    let mut activate = Vec::new();
    for p in obs.pods.iter().filter(|p| &p.version == target && state_of(&p.name) == Some("draining")) {
        let caught_up = p.ready && !p.terminating && report(p).is_some_and(|r| r.joined && r.ready);
        match (caught_up, id_of(p), obs.via(&p.name)) {
            (true, Some(node_id), Some(via)) => {
                activate.push(Action::ActivateMember { via: via.name.clone(), pod: p.name.clone(), node_id })
            }
            _ => {
                return vec![condition(
                    cond::UPGRADING,
                    true,
                    "WaitingForCatchUp",
                    format!("waiting for {} to be ready on {target} and caught up before it leads again", p.name),
                )]
            }
        }
    }
    if !activate.is_empty() {
        let names = activate
            .iter()
            .filter_map(|a| match a {
                Action::ActivateMember { pod, .. } => Some(pod.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(", ");
        activate.push(condition(
            cond::UPGRADING,
            true,
            "Reactivating",
            format!("{names} back on {target}; may lead again"),
        ));
        return activate;
    }

    let outdated: Vec<&PodObservation> =
        obs.pods.iter().filter(|p| &p.version != target && (p.ordinal as i32) < sts_replicas).collect();
    if outdated.is_empty() {
        return vec![condition(cond::UPGRADING, false, "UpToDate", format!("every pod runs {target}"))];
    }
    let total = obs.pods.iter().filter(|p| (p.ordinal as i32) < sts_replicas).count();
    let progress = format!("{}/{total} pods updated", total.saturating_sub(outdated.len()));
    let names = outdated.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
    let names = format!("{progress}; left: {names}");
    if obs.spec.update_strategy.paused {
        return vec![condition(
            cond::UPGRADING,
            false,
            "Paused",
            format!("updateStrategy.paused is set; not yet on {target}: {names}"),
        )];
    }
    // An outdated pod that is not serving anyway (e.g. a failed version
    // being rolled back) restarts at once: waiting for it would never end.
    if let Some(p) = outdated.iter().find(|p| !p.ready && !p.terminating) {
        return vec![
            Action::RestartPod { pod: p.name.clone() },
            condition(
                cond::UPGRADING,
                true,
                "RollingUpdate",
                format!("restarting {} on {target}: it is not ready on {}; {names}", p.name, p.version),
            ),
        ];
    }
    // One pod at a time: wait until every pod is ready before the next.
    if let Some(p) = obs.pods.iter().find(|p| !p.ready || p.terminating) {
        return vec![condition(
            cond::UPGRADING,
            true,
            "WaitingForReady",
            format!("waiting for {} to be ready on {} before restarting the next pod; {names}", p.name, p.version),
        )];
    }
    let leaders = |p: &PodObservation| report(p).map_or(0, |r| r.leaders);
    // A pod already draining goes first; then the fewest leaders, leaders last.
    let next = outdated
        .iter()
        .find(|p| state_of(&p.name) == Some("draining"))
        .or_else(|| outdated.iter().min_by_key(|p| (leaders(p), std::cmp::Reverse(p.ordinal))))
        .unwrap();
    // Never take the last healthy majority of a partition down.
    let at_risk = view.map_or_else(Vec::new, |v| partitions_at_risk(obs, v, &next.name));
    if !at_risk.is_empty() {
        let list = at_risk.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        let halted = format!(
            "upgrade halted before restarting {}: partitions {list} would lack a majority of healthy replicas; resumes when they recover",
            next.name
        );
        return vec![
            condition(cond::DEGRADED, true, "QuorumAtRisk", halted.clone()),
            condition(cond::UPGRADING, true, "Halted", format!("{halted}; {names}")),
        ];
    }
    let restart = |detail: String| {
        vec![
            Action::RestartPod { pod: next.name.clone() },
            condition(
                cond::UPGRADING,
                true,
                "RollingUpdate",
                format!("restarting {} on {target}{detail}; {names}", next.name),
            ),
        ]
    };
    // Someone else must be able to take the leaderships over.
    let other_leader = obs.pods.iter().any(|p| {
        p.name != next.name && p.ready && state_of(&p.name) == Some("active") && report(p).is_some_and(|r| r.ready)
    });
    match (state_of(&next.name), id_of(next)) {
        (Some("draining"), _) if leaders(next) == 0 => restart(" (drained)".into()),
        (Some("draining"), _) => vec![condition(
            cond::UPGRADING,
            true,
            "DrainingLeaders",
            format!(
                "waiting for {} to hand over {} leaderships before restarting it; {names}",
                next.name,
                leaders(next)
            ),
        )],
        (Some("active"), Some(node_id)) if other_leader => match obs.via(&next.name) {
            Some(via) => vec![
                Action::DrainLeaders { via: via.name.clone(), pod: next.name.clone(), node_id },
                condition(
                    cond::UPGRADING,
                    true,
                    "DrainingLeaders",
                    format!("draining {} before restarting it on {target}; {names}", next.name),
                ),
            ],
            None => restart(String::new()),
        },
        // No member to hand over to (a single node), or not a member: restart as is.
        _ => restart(String::new()),
    }
}

/// Partitions that would keep fewer than a majority of healthy replicas
/// once `restarting` goes down. A single replica (replicationFactor 1) has
/// no majority to keep: restarts cost its downtime.
fn partitions_at_risk(obs: &Observation, view: &ClusterViewReport, restarting: &str) -> Vec<u32> {
    if obs.spec.replication_factor < 3 {
        return Vec::new();
    }
    partitions_without_majority(obs, view, Some(restarting))
}

/// Partitions without a majority of replicas on ready pods whose node is
/// ready, not counting the pod `except`.
fn partitions_without_majority(obs: &Observation, view: &ClusterViewReport, except: Option<&str>) -> Vec<u32> {
    let healthy: BTreeSet<u64> = obs
        .pods
        .iter()
        .filter(|p| Some(p.name.as_str()) != except && p.ready && !p.terminating)
        .filter_map(|p| p.report().filter(|r| r.ready).map(|r| r.node_id))
        .collect();
    view.placement
        .iter()
        .filter(|(_, replicas)| replicas.iter().filter(|id| healthy.contains(id)).count() < replicas.len() / 2 + 1)
        .map(|(p, _)| *p)
        .collect()
}

/// Available while every partition keeps a majority of ready replicas
/// (losing a whole zone leaves partitions spread over zones available).
/// Without a placement to look at, counts unready pods against what one
/// partition tolerates.
fn availability(obs: &Observation) -> Action {
    let unready: Vec<&str> = obs.pods.iter().filter(|p| !p.ready).map(|p| p.name.as_str()).collect();
    let lost = obs.view().filter(|v| !v.placement.is_empty()).map(|v| partitions_without_majority(obs, v, None));
    let tolerated = (obs.spec.replication_factor as usize - 1) / 2;
    let available = lost.as_ref().map_or(unready.len() <= tolerated, Vec::is_empty);
    if available {
        condition(
            cond::AVAILABLE,
            true,
            "QuorumAvailable",
            if unready.is_empty() {
                "every member is ready".into()
            } else {
                format!("every partition has a majority; unready: {}", unready.join(", "))
            },
        )
    } else {
        let what = match lost {
            Some(l) => format!(
                "partitions {} lack a majority of ready replicas",
                l.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            ),
            None => "some partitions may have lost their majority".into(),
        };
        condition(
            cond::AVAILABLE,
            false,
            "QuorumLost",
            format!("{what}; {} members unready ({})", unready.len(), unready.join(", ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::KeyraftCluster;

    fn names() -> Names {
        let mut kr = KeyraftCluster::new("kv", serde_yaml::from_str("replicas: 3").unwrap());
        kr.metadata.namespace = Some("ns".into());
        Names::of(&kr).unwrap()
    }

    fn spec(yaml: &str) -> KeyraftClusterSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn node(id: u64, joined: bool) -> NodeObservation {
        NodeObservation::Reachable(NodeReport {
            node_id: id,
            joined,
            cluster_id: if joined { "c1".into() } else { String::new() },
            ready: joined,
            version: "0.1.0".into(),
            ..NodeReport::default()
        })
    }

    fn pod(ordinal: u32, node: NodeObservation) -> PodObservation {
        PodObservation {
            name: format!("kv-{ordinal}"),
            ordinal,
            version: "0.1.0".into(),
            zone: None,
            ready: matches!(&node, NodeObservation::Reachable(r) if r.ready),
            unready_for: None,
            terminating: false,
            node,
        }
    }

    /// A bootstrapped cluster of `n` joined pods, whose node 1 reports a meta
    /// view with `members` (name, state) and the placement given.
    fn running(n: u32, members: &[(&str, &str)], placement: Vec<(u32, Vec<u64>)>) -> Observation {
        let view = ClusterViewReport {
            meta_applied_index: 10,
            members: members
                .iter()
                .enumerate()
                .map(|(i, (name, state))| MemberReport {
                    id: i as u64 + 1,
                    name: name.to_string(),
                    state: state.to_string(),
                    zone: String::new(),
                })
                .collect(),
            // The first replica leads.
            preferred_leaders: placement.iter().map(|(p, r)| (*p, r[0])).collect(),
            placement,
            default_read: Some(ReadConsistency::Linearizable),
        };
        let mut pods: Vec<PodObservation> = (0..n).map(|o| pod(o, node(o as u64 + 1, true))).collect();
        // Settled: each partition's first replica leads it with the placed voters.
        for (p, replicas) in &view.placement {
            let leader = (replicas[0] as usize).checked_sub(1).filter(|i| *i < n as usize).unwrap_or(0);
            if let NodeObservation::Reachable(r) = &mut pods[leader].node {
                r.led_voters.push((*p, replicas.clone()));
            }
        }
        if let NodeObservation::Reachable(r) = &mut pods[0].node {
            r.view = Some(view);
        }
        Observation {
            names: names(),
            spec: spec(&format!("replicas: {n}")),
            paused: false,
            cluster_id: Some("c1".into()),
            statefulset_replicas: Some(n as i32),
            pods,
            pvcs: (0..n).map(|o| format!("data-kv-{o}")).collect(),
        }
    }

    fn active(n: u32) -> Vec<(String, String)> {
        (0..n).map(|o| (format!("kv-{o}"), "active".to_string())).collect()
    }

    fn members(v: &[(String, String)]) -> Vec<(&str, &str)> {
        v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
    }

    fn fresh(pods: Vec<PodObservation>, replicas: i32) -> Observation {
        Observation {
            names: names(),
            spec: spec(&format!("replicas: {replicas}")),
            paused: false,
            cluster_id: None,
            statefulset_replicas: Some(replicas),
            pods,
            pvcs: vec![],
        }
    }

    fn bootstraps(actions: &[Action]) -> Vec<&Action> {
        actions.iter().filter(|a| matches!(a, Action::Bootstrap { .. })).collect()
    }

    fn sts_replicas(actions: &[Action]) -> i32 {
        match actions.iter().find(|a| matches!(a, Action::Apply { .. })) {
            Some(Action::Apply { statefulset_replicas }) => *statefulset_replicas,
            _ => panic!("no Apply in {actions:?}"),
        }
    }

    fn condition_of<'a>(actions: &'a [Action], type_: &str) -> Option<&'a ConditionUpdate> {
        actions.iter().find_map(|a| match a {
            Action::SetCondition(c) if c.type_ == type_ => Some(c),
            _ => None,
        })
    }

    #[test]
    fn bootstrap_table() {
        let unreachable = || NodeObservation::Unreachable("connection refused".into());
        // (case, pods, bootstrap expected)
        let table: Vec<(&str, Vec<PodObservation>, bool)> = vec![
            ("no pods yet", vec![], false),
            ("one of three pods exists", vec![pod(0, node(1, false))], false),
            (
                "all pods exist, one unreachable",
                vec![pod(0, node(1, false)), pod(1, unreachable()), pod(2, node(3, false))],
                false,
            ),
            (
                "all pods reachable and unjoined",
                vec![pod(0, node(1, false)), pod(1, node(2, false)), pod(2, node(3, false))],
                true,
            ),
            (
                "a node already reports joined",
                vec![pod(0, node(1, true)), pod(1, node(2, false)), pod(2, node(3, false))],
                false,
            ),
        ];
        for (case, pods, want) in table {
            let actions = plan(&fresh(pods, 3));
            assert_eq!(sts_replicas(&actions), 3, "{case}");
            assert_eq!(bootstraps(&actions).len(), usize::from(want), "{case}: {actions:?}");
        }
    }

    #[test]
    fn bootstrap_names_every_initial_peer_once_with_the_zones_known() {
        let mut pods: Vec<PodObservation> = (0..3).map(|o| pod(o, node(o as u64 + 1, false))).collect();
        pods[0].zone = Some("zone-a".into());
        pods[2].zone = Some("zone-c".into());
        let actions = plan(&fresh(pods, 3));
        assert_eq!(
            bootstraps(&actions)[0],
            &Action::Bootstrap {
                pod: "kv-0".into(),
                peers: vec![
                    "kv-0.kv-headless.ns.svc:7000".into(),
                    "kv-1.kv-headless.ns.svc:7000".into(),
                    "kv-2.kv-headless.ns.svc:7000".into(),
                ],
                partitions: 16,
                replication_factor: 3,
                zones: [
                    ("kv-0.kv-headless.ns.svc:7000".to_string(), "zone-a".to_string()),
                    ("kv-2.kv-headless.ns.svc:7000".to_string(), "zone-c".to_string()),
                ]
                .into(),
            }
        );
    }

    #[test]
    fn waiting_for_pods_names_them() {
        let actions = plan(&fresh(vec![pod(0, node(1, false))], 3));
        let c = condition_of(&actions, cond::PROGRESSING).unwrap();
        assert_eq!(c.reason, "WaitingForPods");
        assert!(c.message.contains("kv-1, kv-2"), "{}", c.message);
    }

    #[test]
    fn no_second_bootstrap_once_status_has_a_cluster_id() {
        // Every node unreachable (e.g. all restarting), but status remembers.
        let mut obs = fresh((0..3).map(|o| pod(o, node(o as u64 + 1, false))).collect(), 3);
        obs.cluster_id = Some("c1".into());
        assert!(bootstraps(&plan(&obs)).is_empty());
    }

    #[test]
    fn scale_out_grows_the_statefulset_and_adds_new_nodes() {
        let m = active(3);
        let mut obs = running(3, &members(&m), vec![(0, vec![1, 2, 3])]);
        obs.spec.replicas = 5;
        let actions = plan(&obs);
        assert_eq!(sts_replicas(&actions), 5);
        // The new pods come up unjoined: they are added, never bootstrapped.
        obs.pods.push(pod(3, node(4, false)));
        obs.pods.push(pod(4, node(5, false)));
        obs.statefulset_replicas = Some(5);
        let actions = plan(&obs);
        assert!(bootstraps(&actions).is_empty());
        // They join by themselves (KEYRAFT_JOIN): the operator waits for them.
        let c = condition_of(&actions, cond::PROGRESSING).unwrap();
        assert_eq!(c.reason, "WaitingForJoin");
        assert!(c.message.contains("kv-3, kv-4"), "{}", c.message);
        assert!(!actions.iter().any(|a| matches!(a, Action::Rebalance { .. })), "{actions:?}");
        // Once both are members, the wait ends and the rebalance starts.
        let m = active(5);
        let mut joined = running(5, &members(&m), vec![(0, vec![1, 2, 3]), (1, vec![1, 2, 3]), (2, vec![1, 2, 3])]);
        joined.spec.replicas = 5;
        let actions = plan(&joined);
        assert_ne!(condition_of(&actions, cond::PROGRESSING).map(|c| c.reason.as_str()), Some("WaitingForJoin"));
        assert!(actions.contains(&Action::Rebalance { via: "kv-0".into(), max_moves: 2 }), "{actions:?}");
    }

    #[test]
    fn scale_out_rebalances_onto_empty_members() {
        let m = active(4);
        let obs = running(4, &members(&m), vec![(0, vec![1, 2, 3]), (1, vec![1, 2, 3])]);
        let actions = plan(&obs);
        assert!(actions.contains(&Action::Rebalance { via: "kv-0".into(), max_moves: 2 }));
        assert!(condition_of(&actions, cond::REBALANCING).unwrap().status);
        // Disabled rebalancing plans no move.
        let mut obs = obs;
        obs.spec.rebalance.enabled = false;
        assert!(!plan(&obs).iter().any(|a| matches!(a, Action::Rebalance { .. })));
    }

    #[test]
    fn scale_in_table() {
        // (case, state of kv-4 in meta (None = not a member), placement, sts replicas after, action expected)
        let placement_with_5_again = || vec![(0, vec![1, 2, 5]), (1, vec![2, 3, 4])];
        let placement_with_5 = placement_with_5_again();
        let placement_without_5 = vec![(0, vec![1, 2, 3]), (1, vec![2, 3, 4])];
        type Case<'a> = (&'a str, Option<&'a str>, Vec<(u32, Vec<u64>)>, i32, Option<Action>);
        let table: Vec<Case> = vec![
            (
                "active member holding data is decommissioned first",
                Some("active"),
                placement_with_5.clone(),
                5,
                Some(Action::Decommission { via: "kv-0".into(), pod: "kv-4".into(), node_id: 5 }),
            ),
            ("decommissioning, replicas left: wait", Some("decommissioning"), placement_with_5, 5, None),
            ("decommissioning and empty: shrink", Some("decommissioning"), placement_without_5.clone(), 4, None),
            ("removed from meta: shrink", Some("removed"), placement_without_5.clone(), 4, None),
            ("failed, replicas left: wait", Some("failed"), placement_with_5_again(), 5, None),
            ("failed and empty: shrink", Some("failed"), placement_without_5.clone(), 4, None),
            ("never joined: shrink", None, placement_without_5, 4, None),
        ];
        for (case, state, placement, want_replicas, want_action) in table {
            let mut m = active(4);
            if let Some(s) = state {
                m.push(("kv-4".into(), s.into()));
            }
            let mut obs = running(5, &members(&m), placement);
            obs.spec.replicas = 4;
            let actions = plan(&obs);
            assert_eq!(sts_replicas(&actions), want_replicas, "{case}: {actions:?}");
            let decommissions: Vec<_> = actions.iter().filter(|a| matches!(a, Action::Decommission { .. })).collect();
            assert_eq!(decommissions.first().copied(), want_action.as_ref(), "{case}");
            // The PVC stays while the pod exists.
            assert!(!actions.iter().any(|a| matches!(a, Action::DeletePvc { .. })), "{case}");
        }
    }

    #[test]
    fn scale_in_waits_until_no_partition_still_counts_the_member_as_a_voter() {
        let mut m = active(4);
        m.push(("kv-4".into(), "decommissioning".into()));
        let placement = vec![(0, vec![1, 2, 3]), (1, vec![2, 3, 4])];
        let mut obs = running(5, &members(&m), placement);
        obs.spec.replicas = 4;
        assert_eq!(sts_replicas(&plan(&obs)), 4, "placement and voters agree: shrink");
        // Partition 1's leader still runs a joint configuration with kv-4 (id 5).
        if let NodeObservation::Reachable(r) = &mut obs.pods[1].node {
            r.led_voters = vec![(0, vec![1, 2, 3]), (1, vec![2, 3, 4, 5])];
        }
        let actions = plan(&obs);
        assert_eq!(sts_replicas(&actions), 5, "{actions:?}");
        let c = condition_of(&actions, cond::PROGRESSING).unwrap();
        assert!(c.message.contains("partitions 1 still count it as a voter"), "{c:?}");
        // A partition without a reporting leader: wait too.
        if let NodeObservation::Reachable(r) = &mut obs.pods[1].node {
            r.led_voters = vec![(0, vec![1, 2, 3])];
        }
        assert_eq!(sts_replicas(&plan(&obs)), 5);
    }

    #[test]
    fn scale_in_takes_the_highest_ordinal_first() {
        let m = active(5);
        let mut obs = running(5, &members(&m), vec![(0, vec![1, 4, 5])]);
        obs.spec.replicas = 3;
        let actions = plan(&obs);
        assert_eq!(sts_replicas(&actions), 5);
        let d: Vec<_> = actions.iter().filter(|a| matches!(a, Action::Decommission { .. })).collect();
        assert_eq!(d, [&Action::Decommission { via: "kv-0".into(), pod: "kv-4".into(), node_id: 5 }]);
    }

    #[test]
    fn scale_in_refuses_to_go_below_replication_factor() {
        let m = active(3);
        let mut obs = running(3, &members(&m), vec![(0, vec![1, 2, 3])]);
        obs.spec.replicas = 2;
        let actions = plan(&obs);
        assert_eq!(sts_replicas(&actions), 3);
        assert!(!actions.iter().any(|a| matches!(a, Action::Decommission { .. })));
        let c = condition_of(&actions, cond::DEGRADED).unwrap();
        assert_eq!(c.reason, "ScaleInRefused");
        assert!(c.message.contains("replicationFactor=3") && c.message.contains("replicas=2"), "{}", c.message);
    }

    #[test]
    fn scale_in_deletes_pvcs_of_removed_pods_per_reclaim_policy() {
        let m = active(4);
        let mut obs = running(4, &members(&m), vec![(0, vec![1, 2, 3])]);
        obs.pvcs.push("data-kv-4".into());
        let actions = plan(&obs);
        assert!(actions.contains(&Action::DeletePvc { name: "data-kv-4".into() }));
        // Live members' PVCs are never touched.
        assert_eq!(actions.iter().filter(|a| matches!(a, Action::DeletePvc { .. })).count(), 1);
        obs.spec.storage.reclaim_policy = crate::crd::ReclaimPolicy::Retain;
        assert!(!plan(&obs).iter().any(|a| matches!(a, Action::DeletePvc { .. })));
    }

    #[test]
    fn scale_in_waits_without_any_view() {
        let mut obs = running(4, &[], vec![]);
        for p in &mut obs.pods {
            p.node = NodeObservation::Unreachable("timeout".into());
        }
        obs.spec.replicas = 3;
        let actions = plan(&obs);
        assert_eq!(sts_replicas(&actions), 4);
        assert_eq!(condition_of(&actions, cond::PROGRESSING).unwrap().reason, "WaitingForNodes");
    }

    #[test]
    fn unreachable_nodes_are_observations() {
        let m = active(3);
        let mut obs = running(3, &members(&m), vec![(0, vec![1, 2, 3])]);
        obs.pods[2].node = NodeObservation::Unreachable("deadline exceeded".into());
        obs.pods[2].ready = false;
        obs.pods[2].unready_for = Some(Duration::from_secs(10));
        let actions = plan(&obs);
        assert_eq!(sts_replicas(&actions), 3);
        assert!(bootstraps(&actions).is_empty());
        let a = condition_of(&actions, cond::AVAILABLE).unwrap();
        assert!(a.status, "one of three down keeps quorum");
        assert!(!actions.iter().any(|a| matches!(a, Action::ReplaceMember { .. })));
        // Past failover.timeout, but three members for replicationFactor 3:
        // no spare to re-create its replicas on, so it is not failed.
        obs.pods[2].unready_for = Some(Duration::from_secs(301));
        let actions = plan(&obs);
        assert!(!actions.iter().any(|a| matches!(a, Action::ReplaceMember { .. })));
        let c = condition_of(&actions, cond::DEGRADED).unwrap();
        assert_eq!(c.reason, "MemberUnready");
        assert!(c.message.contains("no spare member"), "{}", c.message);
        // Two of three down: quorum at risk.
        obs.pods[1].ready = false;
        assert!(!condition_of(&plan(&obs), cond::AVAILABLE).unwrap().status);
    }

    #[test]
    fn pause_annotation_yields_no_actions() {
        let mut obs = fresh((0..3).map(|o| pod(o, node(o as u64 + 1, false))).collect(), 3);
        obs.paused = true;
        assert!(plan(&obs).is_empty());
        let m = active(5);
        let mut obs = running(5, &members(&m), vec![]);
        obs.spec.replicas = 3;
        obs.paused = true;
        assert!(plan(&obs).is_empty());
    }

    fn set_leaders(obs: &mut Observation, ordinal: usize, leaders: u32) {
        if let NodeObservation::Reachable(r) = &mut obs.pods[ordinal].node {
            r.leaders = leaders;
        }
    }

    fn set_state(obs: &mut Observation, pod: &str, state: &str) {
        if let NodeObservation::Reachable(r) = &mut obs.pods[0].node {
            r.view.as_mut().unwrap().members.iter_mut().find(|m| m.name == pod).unwrap().state = state.into();
        }
    }

    fn of_kind(actions: &[Action], f: fn(&Action) -> bool) -> Vec<&Action> {
        actions.iter().filter(|a| f(a)).collect()
    }

    fn member_actions(actions: &[Action]) -> Vec<&Action> {
        of_kind(actions, |a| {
            matches!(
                a,
                Action::DrainLeaders { .. }
                    | Action::ActivateMember { .. }
                    | Action::RestartPod { .. }
                    | Action::Decommission { .. }
                    | Action::ReplaceMember { .. }
            )
        })
    }

    #[test]
    fn upgrade_table() {
        // (case, setup, actions expected, Upgrading reason)
        type Setup = fn(&mut Observation);
        let drain = |pod: &str, id| Action::DrainLeaders { via: "kv-0".into(), pod: pod.into(), node_id: id };
        let restart = |pod: &str| Action::RestartPod { pod: pod.into() };
        let activate = |pod: &str, id| Action::ActivateMember { via: "kv-0".into(), pod: pod.into(), node_id: id };
        let table: Vec<(&str, Setup, Vec<Action>, &str)> = vec![
            ("up to date: nothing", |_| {}, vec![], "UpToDate"),
            (
                "outdated, active: drain the highest pod without leaders first",
                |o| {
                    o.spec.version = "0.2.0".into();
                    set_leaders(o, 2, 4);
                },
                vec![drain("kv-1", 2)],
                "DrainingLeaders",
            ),
            (
                "draining and still leading: wait",
                |o| {
                    o.spec.version = "0.2.0".into();
                    set_state(o, "kv-1", "draining");
                    set_leaders(o, 1, 2);
                },
                vec![],
                "DrainingLeaders",
            ),
            (
                "draining and leading nothing: restart it, even if another pod leads less",
                |o| {
                    o.spec.version = "0.2.0".into();
                    set_state(o, "kv-0", "draining");
                    set_leaders(o, 1, 1);
                    set_leaders(o, 2, 1);
                },
                vec![restart("kv-0")],
                "RollingUpdate",
            ),
            (
                "restarted, not ready yet: wait before it leads again",
                |o| {
                    o.spec.version = "0.2.0".into();
                    set_state(o, "kv-2", "draining");
                    o.pods[2].version = "0.2.0".into();
                    o.pods[2].ready = false;
                },
                vec![],
                "WaitingForCatchUp",
            ),
            (
                "restarted, ready but the node not caught up: wait",
                |o| {
                    o.spec.version = "0.2.0".into();
                    set_state(o, "kv-2", "draining");
                    o.pods[2].version = "0.2.0".into();
                    if let NodeObservation::Reachable(r) = &mut o.pods[2].node {
                        r.ready = false;
                    }
                },
                vec![],
                "WaitingForCatchUp",
            ),
            (
                "back, ready and caught up: active again before the next pod",
                |o| {
                    o.spec.version = "0.2.0".into();
                    set_state(o, "kv-2", "draining");
                    o.pods[2].version = "0.2.0".into();
                },
                vec![activate("kv-2", 3)],
                "Reactivating",
            ),
            (
                "the last pod back: active again, rollout done next pass",
                |o| {
                    set_state(o, "kv-1", "draining");
                },
                vec![activate("kv-1", 2)],
                "Reactivating",
            ),
            (
                "an unready pod on the new version holds the rollout",
                |o| {
                    o.spec.version = "0.2.0".into();
                    o.pods[0].version = "0.2.0".into();
                    o.pods[0].ready = false;
                },
                vec![],
                "WaitingForReady",
            ),
            (
                "an outdated pod that is not ready restarts at once",
                |o| {
                    o.spec.version = "0.2.0".into();
                    o.pods[0].ready = false;
                },
                vec![restart("kv-0")],
                "RollingUpdate",
            ),
            (
                "rollback: the pod stuck on the reverted version restarts on the old one",
                |o| {
                    o.pods[2].version = "0.2.0-broken".into();
                    o.pods[2].ready = false;
                    o.pods[2].node = NodeObservation::Unreachable("connection refused".into());
                    set_state(o, "kv-2", "draining");
                },
                vec![restart("kv-2")],
                "RollingUpdate",
            ),
            (
                "a partition would lose its majority: halt",
                |o| {
                    o.spec.version = "0.2.0".into();
                    if let NodeObservation::Reachable(r) = &mut o.pods[0].node {
                        r.ready = false;
                    }
                },
                vec![],
                "Halted",
            ),
            (
                "updateStrategy.paused restarts nothing",
                |o| {
                    o.spec.version = "0.2.0".into();
                    o.spec.update_strategy.paused = true;
                },
                vec![],
                "Paused",
            ),
            (
                "no other member may lead: restart without draining",
                |o| {
                    o.spec.version = "0.2.0".into();
                    o.pods[0].version = "0.2.0".into();
                    o.pods[1].version = "0.2.0".into();
                    set_state(o, "kv-0", "decommissioning");
                    set_state(o, "kv-1", "decommissioning");
                },
                vec![restart("kv-2")],
                "RollingUpdate",
            ),
        ];
        for (case, setup, want, reason) in table {
            let m = active(3);
            let mut obs = running(3, &members(&m), vec![(0, vec![1, 2, 3])]);
            setup(&mut obs);
            let actions = plan(&obs);
            assert_eq!(member_actions(&actions), want.iter().collect::<Vec<_>>(), "{case}");
            let upgrading = condition_of(&actions, cond::UPGRADING).unwrap();
            assert_eq!(upgrading.reason, reason, "{case}: {actions:?}");
            let degraded = condition_of(&actions, cond::DEGRADED).map(|c| c.reason.as_str());
            assert_eq!(degraded == Some("QuorumAtRisk"), reason == "Halted", "{case}: {actions:?}");
        }
    }

    #[test]
    fn upgrade_reports_progress_and_names_partitions_at_risk() {
        let m = active(3);
        let mut obs = running(3, &members(&m), vec![(0, vec![1, 2, 3]), (1, vec![1, 2, 4])]);
        obs.spec.version = "0.2.0".into();
        obs.pods[2].version = "0.2.0".into();
        let actions = plan(&obs);
        let msg = &condition_of(&actions, cond::UPGRADING).unwrap().message;
        assert!(msg.contains("1/3 pods updated"), "{msg}");
        if let NodeObservation::Reachable(r) = &mut obs.pods[1].node {
            r.ready = false;
        }
        let msg = condition_of(&plan(&obs), cond::DEGRADED).unwrap().message.clone();
        assert!(msg.contains("restarting kv-1: partitions 1 would lack a majority"), "{msg}");
        // Replication factor 1 has no majority to keep: restarts go ahead.
        obs.spec.replication_factor = 1;
        assert!(condition_of(&plan(&obs), cond::DEGRADED).is_none_or(|c| c.reason != "QuorumAtRisk"));
    }

    #[test]
    fn availability_is_judged_per_partition() {
        // Six members, every partition on one member of each "zone" (1/4, 2/5, 3/6).
        let placement = vec![(0, vec![1, 2, 3]), (1, vec![4, 5, 6]), (2, vec![1, 5, 3])];
        let mut obs = running(6, &members(&active(6)), placement);
        // A whole zone down (members 1 and 4): every partition keeps two of three.
        for o in [0, 3] {
            obs.pods[o].ready = false;
        }
        let a = condition_of(&plan(&obs), cond::AVAILABLE).unwrap().clone();
        assert!(a.status && a.reason == "QuorumAvailable", "{a:?}");
        assert!(a.message.contains("kv-0, kv-3"), "{a:?}");
        // Member 3 too: partitions 0 and 2 are down to one replica.
        obs.pods[2].ready = false;
        let a = condition_of(&plan(&obs), cond::AVAILABLE).unwrap().clone();
        assert!(!a.status && a.reason == "QuorumLost", "{a:?}");
        assert!(a.message.contains("partitions 0, 2 lack a majority"), "{a:?}");
    }

    #[test]
    fn zones_of_the_pods_nodes_are_recorded_once() {
        let m = active(3);
        let mut obs = running(3, &members(&m), vec![(0, vec![1, 2, 3])]);
        obs.pods[1].zone = Some("zone-b".into());
        let set = |a: &Action| matches!(a, Action::SetZone { .. });
        let actions = plan(&obs);
        let expected = Action::SetZone { via: "kv-0".into(), pod: "kv-1".into(), node_id: 2, zone: "zone-b".into() };
        assert_eq!(of_kind(&actions, set), vec![&expected]);
        // Recorded: nothing more to do.
        if let NodeObservation::Reachable(r) = &mut obs.pods[0].node {
            r.view.as_mut().unwrap().members[1].zone = "zone-b".into();
        }
        assert!(of_kind(&plan(&obs), set).is_empty());
    }

    #[test]
    fn a_member_back_before_removal_is_reactivated_and_one_back_after_is_reclaimed() {
        let mut m = active(4);
        m[2].1 = "failed".into();
        let obs = running(4, &members(&m), vec![(0, vec![1, 2, 4])]);
        let actions = plan(&obs);
        let back = Action::ActivateMember { via: "kv-0".into(), pod: "kv-2".into(), node_id: 3 };
        assert_eq!(member_actions(&actions), vec![&back]);

        m[2].1 = "removed".into();
        let obs = running(4, &members(&m), vec![(0, vec![1, 2, 4])]);
        let actions = plan(&obs);
        let reclaim = Action::ReclaimMember { pod: "kv-2".into(), pvc: "data-kv-2".into() };
        assert_eq!(of_kind(&actions, |a| matches!(a, Action::ReclaimMember { .. })), vec![&reclaim]);
        assert!(member_actions(&actions).is_empty(), "{actions:?}");
        // Not while its pod is still unready (its Node lost): only once it is back.
        let mut away = running(4, &members(&m), vec![(0, vec![1, 2, 4])]);
        away.pods[2].ready = false;
        assert!(of_kind(&plan(&away), |a| matches!(a, Action::ReclaimMember { .. })).is_empty());

        // A new incarnation (new id) under the same name is not reclaimed.
        let mut obs = running(4, &members(&m), vec![(0, vec![1, 2, 4])]);
        if let NodeObservation::Reachable(r) = &mut obs.pods[2].node {
            r.node_id = 9;
        }
        assert!(of_kind(&plan(&obs), |a| matches!(a, Action::ReclaimMember { .. })).is_empty());
    }

    #[test]
    fn upgrade_walks_drain_restart_activate_for_each_pod() {
        // Plays the nodes' part between passes: every pod ends on the new
        // version and active, one pod at a time, leaders last.
        let m = active(3);
        let mut obs = running(3, &members(&m), vec![(0, vec![1, 2, 3])]);
        obs.spec.version = "0.2.0".into();
        set_leaders(&mut obs, 0, 3);
        let mut order = Vec::new();
        for _ in 0..20 {
            let actions = plan(&obs);
            for a in member_actions(&actions) {
                match a {
                    Action::DrainLeaders { pod, .. } => {
                        let o = obs.pods.iter().position(|p| &p.name == pod).unwrap();
                        set_state(&mut obs, pod, "draining");
                        set_leaders(&mut obs, o, 0);
                    }
                    Action::RestartPod { pod } => {
                        let p = obs.pods.iter_mut().find(|p| &p.name == pod).unwrap();
                        p.version = "0.2.0".into();
                        order.push(pod.clone());
                    }
                    Action::ActivateMember { pod, .. } => set_state(&mut obs, pod, "active"),
                    other => panic!("unexpected {other:?}"),
                }
            }
            if condition_of(&actions, cond::UPGRADING).unwrap().reason == "UpToDate" {
                break;
            }
        }
        assert_eq!(order, ["kv-2", "kv-1", "kv-0"]);
        let view = obs.pods[0].report().unwrap().view.as_ref().unwrap();
        assert!(view.members.iter().all(|m| m.state == "active"), "{:?}", view.members);
        assert!(obs.pods.iter().all(|p| p.version == "0.2.0"));
    }

    #[test]
    fn failover_table() {
        // (case, members, pod kv-2 unready for (s), ReplaceMember expected, Degraded message part)
        let spare = |n: u32| active(n);
        type Case = (&'static str, Vec<(String, String)>, u64, bool, &'static str);
        let mut failed = spare(4);
        failed[2].1 = "failed".into();
        let table: Vec<Case> = vec![
            ("unready below the timeout", spare(4), 120, false, ""),
            ("past the timeout with a spare member", spare(4), 301, true, "marked failed"),
            ("past the timeout without a spare", spare(3), 301, false, "no spare member"),
            ("already failed: not again", failed, 301, false, "being re-created"),
        ];
        for (case, m, unready_s, want, msg) in table {
            let n = m.len() as u32;
            let mut obs = running(n, &members(&m), vec![(0, vec![1, 2, 3])]);
            obs.pods[2].node = NodeObservation::Unreachable("connection refused".into());
            obs.pods[2].ready = false;
            obs.pods[2].unready_for = Some(Duration::from_secs(unready_s));
            let actions = plan(&obs);
            let replaced = of_kind(&actions, |a| matches!(a, Action::ReplaceMember { .. }));
            let expected = Action::ReplaceMember { via: "kv-0".into(), pod: "kv-2".into(), node_id: 3 };
            assert_eq!(replaced, if want { vec![&expected] } else { vec![] }, "{case}");
            match condition_of(&actions, cond::DEGRADED) {
                Some(c) if !msg.is_empty() => assert!(c.message.contains(msg), "{case}: {}", c.message),
                Some(c) => panic!("{case}: unexpected {c:?}"),
                None => assert!(msg.is_empty(), "{case}: no Degraded condition"),
            }
        }
        // Two unready members with one spare: only one is failed over.
        let m = active(4);
        let mut obs = running(4, &members(&m), vec![(0, vec![1, 2, 3])]);
        for o in [2, 3] {
            obs.pods[o].node = NodeObservation::Unreachable("timeout".into());
            obs.pods[o].ready = false;
            obs.pods[o].unready_for = Some(Duration::from_secs(400));
        }
        assert_eq!(of_kind(&plan(&obs), |a| matches!(a, Action::ReplaceMember { .. })).len(), 1);
    }

    #[test]
    fn rebalance_table() {
        // (case, members, placement, moving partition (leader kv-0 reports voters), enabled, Rebalance expected, reason)
        type Case =
            (&'static str, Vec<(String, String)>, Vec<(u32, Vec<u64>)>, Option<Vec<u64>>, bool, bool, &'static str);
        let skewed = vec![(0, vec![1, 2, 3]), (1, vec![1, 2, 3]), (2, vec![1, 2, 3])];
        let even = vec![(0, vec![1, 2, 3]), (1, vec![4, 1, 2]), (2, vec![3, 4, 1])];
        let mut draining = active(4);
        draining[1].1 = "draining".into();
        let table: Vec<Case> = vec![
            ("balanced", active(4), even.clone(), None, true, false, "Balanced"),
            ("a new member holds nothing", active(4), skewed.clone(), None, true, true, "MovingReplicas"),
            ("disabled", active(4), skewed.clone(), None, false, false, "Disabled"),
            (
                "a move is in flight: wait for it",
                active(4),
                skewed.clone(),
                Some(vec![1, 2, 4]),
                true,
                false,
                "MovingReplicas",
            ),
            ("a member is draining: wait", draining, skewed.clone(), None, true, false, "WaitingForMembers"),
            (
                "leader voters match the placement: no move in flight",
                active(4),
                skewed,
                Some(vec![3, 2, 1]),
                true,
                true,
                "MovingReplicas",
            ),
        ];
        for (case, m, placement, voters, enabled, want, reason) in table {
            let mut obs = running(4, &members(&m), placement);
            obs.spec.rebalance.enabled = enabled;
            obs.spec.rebalance.max_concurrent_moves = 3;
            if let (Some(v), NodeObservation::Reachable(r)) = (voters, &mut obs.pods[0].node) {
                r.led_voters = vec![(0, v)];
            }
            let actions = plan(&obs);
            let rebalances = of_kind(&actions, |a| matches!(a, Action::Rebalance { .. }));
            let expected = Action::Rebalance { via: "kv-0".into(), max_moves: 3 };
            assert_eq!(rebalances, if want { vec![&expected] } else { vec![] }, "{case}");
            assert_eq!(condition_of(&actions, cond::REBALANCING).unwrap().reason, reason, "{case}");
        }
    }

    #[test]
    fn replicas_on_a_failed_member_show_as_repairing() {
        let mut m = active(4);
        m[3].1 = "failed".into();
        let obs = running(4, &members(&m), vec![(0, vec![1, 2, 3]), (1, vec![4, 1, 2])]);
        let c = condition_of(&plan(&obs), cond::REBALANCING).unwrap().clone();
        assert!(c.status && c.reason == "Repairing" && c.message.contains("partitions 1 "), "{c:?}");
    }

    #[test]
    fn unbalanced_partitions_follow_the_node_planner() {
        let m = active(4);
        let obs = running(4, &members(&m), vec![(0, vec![1, 2, 3]), (1, vec![1, 2, 3])]);
        let view = obs.view().unwrap();
        assert!(!unbalanced_partitions(view, 3).is_empty());
        let obs = running(3, &members(&active(3)), vec![(0, vec![1, 2, 3]), (1, vec![2, 3, 1]), (2, vec![3, 1, 2])]);
        assert_eq!(unbalanced_partitions(obs.view().unwrap(), 3), Vec::<u32>::new());
    }

    #[test]
    fn a_pod_that_rejoined_is_found_by_its_live_record() {
        // kv-4 came back with a new identity: its old record (id 5) is
        // removed, the live one (id 6) holds data. Scale-in must not take
        // the removed record for "empty".
        let mut m = active(4);
        m.push(("kv-4".into(), "removed".into()));
        m.push(("kv-4".into(), "active".into()));
        let mut obs = running(5, &members(&m), vec![(0, vec![1, 2, 6]), (1, vec![2, 3, 4])]);
        obs.spec.replicas = 4;
        let actions = plan(&obs);
        assert_eq!(sts_replicas(&actions), 5);
        assert_eq!(
            member_actions(&actions),
            [&Action::Decommission { via: "kv-0".into(), pod: "kv-4".into(), node_id: 6 }]
        );
    }

    #[test]
    fn the_live_record_of_a_name_wins_over_an_old_failed_one_with_a_higher_id() {
        let view = ClusterViewReport {
            members: vec![
                MemberReport { id: 9, name: "kv-1".into(), state: "failed".into(), zone: String::new() },
                MemberReport { id: 3, name: "kv-1".into(), state: "active".into(), zone: String::new() },
                MemberReport { id: 12, name: "kv-1".into(), state: "removed".into(), zone: String::new() },
            ],
            ..ClusterViewReport::default()
        };
        assert_eq!(view.member("kv-1").map(|m| m.id), Some(3));
    }

    #[test]
    fn default_read_follows_the_spec() {
        let m = active(3);
        let mut obs = running(3, &members(&m), vec![(0, vec![1, 2, 3])]);
        assert!(!plan(&obs).iter().any(|a| matches!(a, Action::SetDefaultRead { .. })));
        obs.spec.consistency.default_read = ReadConsistency::Session;
        assert!(plan(&obs).contains(&Action::SetDefaultRead { pod: "kv-0".into(), level: ReadConsistency::Session }));
    }
}
