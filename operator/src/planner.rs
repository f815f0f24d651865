//! The planner: a pure function from what the controller observed to the
//! next safe actions (observe -> plan -> act). No I/O, no clock: everything
//! time-dependent arrives in the observation.
//!
//! Some actions need admin RPCs the node does not have yet (AddMember,
//! Rebalance, Decommission, DrainLeaders, ReplaceMember: the placement API of
//! DESIGN §2). They are planned here so the sequencing is fixed and tested;
//! the controller reports them as waiting on the node until the RPCs land.

use std::time::Duration;

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
    /// Kubernetes readiness.
    pub ready: bool,
    /// How long the pod has been unready (None when ready).
    pub unready_for: Option<Duration>,
    /// The pod has a deletionTimestamp.
    pub terminating: bool,
    pub node: NodeObservation,
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
    /// The meta group's view as this node applied it (joined nodes only).
    pub view: Option<ClusterViewReport>,
}

#[derive(Clone, Debug, Default)]
pub struct ClusterViewReport {
    pub meta_applied_index: u64,
    pub members: Vec<MemberReport>,
    /// (partition, replica node ids)
    pub placement: Vec<(u32, Vec<u64>)>,
    pub default_read: Option<ReadConsistency>,
}

#[derive(Clone, Debug, Default)]
pub struct MemberReport {
    pub id: u64,
    /// Pod name the node registered with.
    pub name: String,
    /// active, draining, decommissioning, failed, removed
    pub state: String,
}

/// A status condition the planner wants set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// One step for the controller to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Server-side apply every owned object, the StatefulSet with this many replicas.
    Apply { statefulset_replicas: i32 },
    /// Admin.Bootstrap on `pod` with every initial node as a peer.
    Bootstrap { pod: String, peers: Vec<String>, partitions: u32, replication_factor: u32 },
    /// Admin.SetDefaultRead through `pod`.
    SetDefaultRead { pod: String, level: ReadConsistency },
    /// Register a running, unjoined node with the cluster. Node API pending.
    AddMember { pod: String },
    /// Even out replicas and leaders over members. Node API pending (SetPlacement).
    Rebalance { max_concurrent_moves: u32 },
    /// Move every replica and leader off a member, then remove it from meta.
    /// Node API pending.
    Decommission { pod: String, node_id: u64 },
    /// Move leaderships off a node before its pod restarts. Node API pending
    /// (TransferLeader); Raft re-elects within about a second without it.
    DrainLeaders { pod: String, node_id: u64 },
    /// Delete the pod so the StatefulSet (OnDelete) recreates it on the new template.
    RestartPod { pod: String },
    /// Re-create a lost member's replicas elsewhere. Node API pending.
    ReplaceMember { pod: String, node_id: u64 },
    /// Delete a PVC of a removed member (reclaimPolicy Delete).
    DeletePvc { name: String },
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

    fn report(&self, ordinal: u32) -> Option<&NodeReport> {
        match &self.pod(ordinal)?.node {
            NodeObservation::Reachable(r) => Some(r),
            NodeObservation::Unreachable(_) => None,
        }
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

    /// A reachable, joined pod to send cluster-wide admin calls through.
    fn joined_pod(&self) -> Option<&PodObservation> {
        self.pods.iter().find(|p| matches!(&p.node, NodeObservation::Reachable(r) if r.joined && r.ready))
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

    // Scale-out: nodes that run but have not joined.
    for p in &obs.pods {
        if let NodeObservation::Reachable(r) = &p.node {
            if !r.joined && (p.ordinal as i32) < sts_replicas {
                actions.push(Action::AddMember { pod: p.name.clone() });
            }
        }
    }

    if let (Some(view), Some(via)) = (view, obs.joined_pod()) {
        if view.default_read.is_some_and(|d| d != spec.consistency.default_read) {
            actions.push(Action::SetDefaultRead { pod: via.name.clone(), level: spec.consistency.default_read });
        }
        if spec.rebalance.enabled && needs_rebalance(view) {
            actions.push(Action::Rebalance { max_concurrent_moves: spec.rebalance.max_concurrent_moves });
            actions.push(condition(
                cond::REBALANCING,
                true,
                "MovingReplicas",
                "moving partition replicas onto members that hold none".into(),
            ));
        } else {
            actions.push(condition(
                cond::REBALANCING,
                false,
                "Balanced",
                "replicas are spread over every member".into(),
            ));
        }
    }

    actions.extend(plan_failover(obs));
    actions.extend(plan_upgrade(obs, sts_replicas));
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
    vec![
        Action::Bootstrap {
            pod: obs.names.pod(0),
            peers,
            partitions: obs.spec.partitions,
            replication_factor: obs.spec.replication_factor,
        },
        condition(cond::PROGRESSING, true, "Bootstrapping", format!("bootstrapping {desired} nodes")),
    ]
}

/// Returns the StatefulSet replicas to keep and the actions toward `desired`.
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
    let member = view.and_then(|v| v.members.iter().find(|m| m.name == pod));
    let node_id = member.map(|m| m.id).or_else(|| obs.report(ord).map(|r| r.node_id));
    let holds = |id: u64| view.map_or(0, |v| v.placement.iter().filter(|(_, replicas)| replicas.contains(&id)).count());
    let progress = |msg: String| condition(cond::PROGRESSING, true, "ScalingIn", msg);
    match (member, node_id) {
        // Never joined, or already removed from meta: nothing to move.
        (None, _) if view.is_some() => (current - 1, vec![progress(format!("{pod} holds no data; removing it"))]),
        (Some(m), _) if m.state == "removed" || (m.state == "decommissioning" && holds(m.id) == 0) => {
            (current - 1, vec![progress(format!("{pod} is decommissioned; removing it"))])
        }
        (Some(m), _) if m.state == "decommissioning" => {
            (current, vec![progress(format!("decommissioning {pod}: {} partition replicas left to move", holds(m.id)))])
        }
        (_, Some(id)) => (
            current,
            vec![
                Action::Decommission { pod: pod.clone(), node_id: id },
                progress(format!("decommissioning {pod} before removing it")),
            ],
        ),
        // No view of the cluster at all: wait rather than guess.
        _ => (
            current,
            vec![condition(
                cond::PROGRESSING,
                true,
                "WaitingForNodes",
                format!("scale-in waits for a node to report whether {pod} holds data"),
            )],
        ),
    }
}

fn needs_rebalance(view: &ClusterViewReport) -> bool {
    view.members
        .iter()
        .filter(|m| m.state == "active")
        .any(|m| !view.placement.is_empty() && !view.placement.iter().any(|(_, replicas)| replicas.contains(&m.id)))
}

fn plan_failover(obs: &Observation) -> Vec<Action> {
    let timeout = parse_duration(&obs.spec.failover.timeout).unwrap_or(Duration::from_secs(300));
    obs.pods
        .iter()
        .filter(|p| p.unready_for.is_some_and(|d| d >= timeout))
        .flat_map(|p| {
            let id = obs
                .view()
                .and_then(|v| v.members.iter().find(|m| m.name == p.name && m.state != "removed").map(|m| m.id));
            let mut v = vec![condition(
                cond::DEGRADED,
                true,
                "MemberUnready",
                format!(
                    "{} has been unready for {}s (failover.timeout {})",
                    p.name,
                    p.unready_for.unwrap_or_default().as_secs(),
                    obs.spec.failover.timeout
                ),
            )];
            if let Some(node_id) = id {
                v.insert(0, Action::ReplaceMember { pod: p.name.clone(), node_id });
            }
            v
        })
        .collect()
}

fn plan_upgrade(obs: &Observation, sts_replicas: i32) -> Vec<Action> {
    let target = &obs.spec.version;
    let outdated: Vec<&PodObservation> =
        obs.pods.iter().filter(|p| &p.version != target && (p.ordinal as i32) < sts_replicas).collect();
    if outdated.is_empty() {
        return vec![condition(cond::UPGRADING, false, "UpToDate", format!("every pod runs {target}"))];
    }
    let names = outdated.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
    if obs.spec.update_strategy.paused {
        return vec![condition(
            cond::UPGRADING,
            false,
            "Paused",
            format!("updateStrategy.paused is set; not yet on {target}: {names}"),
        )];
    }
    // One pod at a time: wait until every pod is ready before the next.
    if let Some(p) = obs.pods.iter().find(|p| !p.ready || p.terminating) {
        return vec![condition(
            cond::UPGRADING,
            true,
            "WaitingForReady",
            format!("waiting for {} to be ready before restarting the next pod; left: {names}", p.name),
        )];
    }
    // Leaders last.
    let next = outdated
        .iter()
        .min_by_key(|p| {
            let leaders = match &p.node {
                NodeObservation::Reachable(r) => r.leaders,
                NodeObservation::Unreachable(_) => 0,
            };
            (leaders, std::cmp::Reverse(p.ordinal))
        })
        .unwrap();
    let mut v = Vec::new();
    if let NodeObservation::Reachable(r) = &next.node {
        if r.leaders > 0 {
            v.push(Action::DrainLeaders { pod: next.name.clone(), node_id: r.node_id });
        }
    }
    v.push(Action::RestartPod { pod: next.name.clone() });
    v.push(condition(
        cond::UPGRADING,
        true,
        "RollingUpdate",
        format!("restarting {} on {target}; left: {names}", next.name),
    ));
    v
}

fn availability(obs: &Observation) -> Action {
    let unready: Vec<&str> = obs.pods.iter().filter(|p| !p.ready).map(|p| p.name.as_str()).collect();
    // A partition keeps a majority when fewer than half its replicas are down.
    let tolerated = (obs.spec.replication_factor as usize - 1) / 2;
    if unready.len() <= tolerated {
        condition(
            cond::AVAILABLE,
            true,
            "QuorumAvailable",
            if unready.is_empty() {
                "every member is ready".into()
            } else {
                format!("serving; unready: {}", unready.join(", "))
            },
        )
    } else {
        condition(
            cond::AVAILABLE,
            false,
            "QuorumAtRisk",
            format!(
                "{} members unready ({}); some partitions may have lost their majority",
                unready.len(),
                unready.join(", ")
            ),
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
            leaders: 0,
            led_partitions: vec![],
            view: None,
        })
    }

    fn pod(ordinal: u32, node: NodeObservation) -> PodObservation {
        PodObservation {
            name: format!("kv-{ordinal}"),
            ordinal,
            version: "0.1.0".into(),
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
                })
                .collect(),
            placement,
            default_read: Some(ReadConsistency::Linearizable),
        };
        let mut pods: Vec<PodObservation> = (0..n).map(|o| pod(o, node(o as u64 + 1, true))).collect();
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
    fn bootstrap_names_every_initial_peer_once() {
        let pods = (0..3).map(|o| pod(o, node(o as u64 + 1, false))).collect();
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
        assert!(actions.contains(&Action::AddMember { pod: "kv-3".into() }));
        assert!(actions.contains(&Action::AddMember { pod: "kv-4".into() }));
    }

    #[test]
    fn scale_out_rebalances_onto_empty_members() {
        let m = active(4);
        let obs = running(4, &members(&m), vec![(0, vec![1, 2, 3]), (1, vec![1, 2, 3])]);
        let actions = plan(&obs);
        assert!(actions.contains(&Action::Rebalance { max_concurrent_moves: 2 }));
        assert!(condition_of(&actions, cond::REBALANCING).unwrap().status);
        // Disabled rebalancing plans no move.
        let mut obs = obs;
        obs.spec.rebalance.enabled = false;
        assert!(!plan(&obs).iter().any(|a| matches!(a, Action::Rebalance { .. })));
    }

    #[test]
    fn scale_in_table() {
        // (case, state of kv-4 in meta (None = not a member), placement, sts replicas after, action expected)
        let placement_with_5 = vec![(0, vec![1, 2, 5]), (1, vec![2, 3, 4])];
        let placement_without_5 = vec![(0, vec![1, 2, 3]), (1, vec![2, 3, 4])];
        type Case<'a> = (&'a str, Option<&'a str>, Vec<(u32, Vec<u64>)>, i32, Option<Action>);
        let table: Vec<Case> = vec![
            (
                "active member holding data is decommissioned first",
                Some("active"),
                placement_with_5.clone(),
                5,
                Some(Action::Decommission { pod: "kv-4".into(), node_id: 5 }),
            ),
            ("decommissioning, replicas left: wait", Some("decommissioning"), placement_with_5, 5, None),
            ("decommissioning and empty: shrink", Some("decommissioning"), placement_without_5.clone(), 4, None),
            ("removed from meta: shrink", Some("removed"), placement_without_5.clone(), 4, None),
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
    fn scale_in_takes_the_highest_ordinal_first() {
        let m = active(5);
        let mut obs = running(5, &members(&m), vec![(0, vec![1, 4, 5])]);
        obs.spec.replicas = 3;
        let actions = plan(&obs);
        assert_eq!(sts_replicas(&actions), 5);
        let d: Vec<_> = actions.iter().filter(|a| matches!(a, Action::Decommission { .. })).collect();
        assert_eq!(d, [&Action::Decommission { pod: "kv-4".into(), node_id: 5 }]);
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
        // Past failover.timeout the member is replaced.
        obs.pods[2].unready_for = Some(Duration::from_secs(301));
        let actions = plan(&obs);
        assert!(actions.contains(&Action::ReplaceMember { pod: "kv-2".into(), node_id: 3 }));
        assert_eq!(condition_of(&actions, cond::DEGRADED).unwrap().reason, "MemberUnready");
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

    #[test]
    fn upgrade_restarts_one_pod_at_a_time_leaders_last() {
        let m = active(3);
        let mut obs = running(3, &members(&m), vec![(0, vec![1, 2, 3])]);
        obs.spec.version = "0.2.0".into();
        if let NodeObservation::Reachable(r) = &mut obs.pods[2].node {
            r.leaders = 4;
        }
        let actions = plan(&obs);
        let restarts: Vec<_> = actions.iter().filter(|a| matches!(a, Action::RestartPod { .. })).collect();
        assert_eq!(restarts, [&Action::RestartPod { pod: "kv-1".into() }]);
        // The leader goes last, after its leaderships are drained.
        obs.pods[0].version = "0.2.0".into();
        obs.pods[1].version = "0.2.0".into();
        let actions = plan(&obs);
        assert!(actions.contains(&Action::DrainLeaders { pod: "kv-2".into(), node_id: 3 }));
        assert!(actions.contains(&Action::RestartPod { pod: "kv-2".into() }));
        // While a pod is unready, nothing restarts.
        obs.pods[0].ready = false;
        let actions = plan(&obs);
        assert!(!actions.iter().any(|a| matches!(a, Action::RestartPod { .. })));
        assert_eq!(condition_of(&actions, cond::UPGRADING).unwrap().reason, "WaitingForReady");
        // Paused rollouts restart nothing.
        obs.pods[0].ready = true;
        obs.spec.update_strategy.paused = true;
        assert!(!plan(&obs).iter().any(|a| matches!(a, Action::RestartPod { .. })));
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
