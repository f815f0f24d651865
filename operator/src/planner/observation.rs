//! What the controller observed, as the planner reads it: pods, node
//! answers and the meta view, with member states and roles as enums.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::builders::Names;
use crate::crd::{KeyraftClusterSpec, ReadConsistency};

pub use keyraft_api::placement::NodeState as MemberState;

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
    /// The StatefulSet's updateRevision: the pod template pods should run.
    pub update_revision: Option<String>,
    /// How long each wait the planner reported on earlier passes has lasted
    /// (the controller's monotonic clock); a wait not listed just began.
    pub waits: BTreeMap<Wait, Duration>,
    /// How many of the lowest ordinals have their certificate in the node
    /// Secret (0 when the Secret could not be read): a node without one
    /// cannot start, so no pod past them is created.
    pub certified: u32,
}

/// Something the planner waits for, by kind and subject (a pod or a
/// partition): every wait has a bound in `spec.timeouts`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Wait {
    pub kind: WaitKind,
    pub subject: String,
}

/// The kinds of bounded waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WaitKind {
    /// A draining member handing its leaderships over (`timeouts.drain`).
    Drain,
    /// A restarted member becoming ready and catching up (`timeouts.catchUp`).
    CatchUp,
    /// A pod becoming ready before the next restart (`timeouts.ready`).
    Ready,
    /// A leaving member's replicas moving off it (`timeouts.scaleIn`).
    ScaleIn,
    /// A new pod joining the cluster (`timeouts.join`).
    Join,
    /// An active member without a pod (`failover.timeout`).
    Orphan,
    /// A new pod's certificate reaching the node Secret (`timeouts.ready`).
    Certificate,
}

impl WaitKind {
    /// The Degraded reason raised once the wait passes its bound.
    pub fn reason(self) -> &'static str {
        match self {
            WaitKind::Drain => "DrainTimedOut",
            WaitKind::CatchUp => "CatchUpTimedOut",
            WaitKind::Ready => "ReadyTimedOut",
            WaitKind::ScaleIn => "ScaleInTimedOut",
            WaitKind::Join => "JoinTimedOut",
            WaitKind::Orphan => "MemberWithoutPod",
            WaitKind::Certificate => "CertificateTimedOut",
        }
    }

    /// The spec field holding the bound.
    pub fn setting(self) -> &'static str {
        match self {
            WaitKind::Drain => "spec.timeouts.drain",
            WaitKind::CatchUp => "spec.timeouts.catchUp",
            WaitKind::Ready | WaitKind::Certificate => "spec.timeouts.ready",
            WaitKind::ScaleIn => "spec.timeouts.scaleIn",
            WaitKind::Join => "spec.timeouts.join",
            WaitKind::Orphan => "spec.failover.timeout",
        }
    }
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
    /// The pod's controller-revision-hash label.
    pub revision: Option<String>,
    /// Kubernetes readiness.
    pub ready: bool,
    /// How long the pod has been unready for any reason: a False or
    /// Unknown Ready condition, or none at all (Pending) since creation.
    /// None when ready.
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
// One per pod per pass: boxing the report would buy nothing.
#[allow(clippy::large_enum_variant)]
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
    /// This node's replica of each partition it holds.
    pub partitions: BTreeMap<u32, GroupReport>,
    /// SHA-256 of the CAs the node trusts and of the certificate it serves.
    pub tls: keyraft_api::tls::Fingerprints,
}

/// A node's role in one Raft group, parsed at the wire boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "leader" => Role::Leader,
            "follower" => Role::Follower,
            "candidate" => Role::Candidate,
            "learner" => Role::Learner,
            _ => return None,
        })
    }
}

/// One node's replica of one partition group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupReport {
    pub role: Role,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
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

#[derive(Clone, Debug)]
pub struct MemberReport {
    pub id: u64,
    /// Pod name the node registered with.
    pub name: String,
    pub state: MemberState,
    pub zone: String,
}

impl ClusterViewReport {
    /// The member registered under a pod name. A node that came back with a
    /// new identity leaves its old record behind (failed, then removed):
    /// the live record wins (active or draining, then failed or
    /// decommissioning, then removed), then the newest id.
    pub fn member(&self, name: &str) -> Option<&MemberReport> {
        let rank = |m: &MemberReport| match m.state {
            MemberState::Active | MemberState::Draining => 2,
            MemberState::Removed => 0,
            _ => 1,
        };
        self.members.iter().filter(|m| m.name == name).max_by_key(|m| (rank(m), m.id))
    }

    /// Partitions whose placement lists `id`.
    pub fn holds(&self, id: u64) -> usize {
        self.placement.iter().filter(|(_, replicas)| replicas.contains(&id)).count()
    }
}

impl Observation {
    pub(crate) fn pod(&self, ordinal: u32) -> Option<&PodObservation> {
        self.pods.iter().find(|p| p.ordinal == ordinal)
    }

    /// The most up-to-date meta view any node reported.
    pub(crate) fn view(&self) -> Option<&ClusterViewReport> {
        self.pods
            .iter()
            .filter_map(|p| match &p.node {
                NodeObservation::Reachable(r) => r.view.as_ref(),
                NodeObservation::Unreachable(_) => None,
            })
            .max_by_key(|v| v.meta_applied_index)
    }

    /// Whether some node (or our own status) says the cluster exists.
    pub(crate) fn bootstrapped(&self) -> bool {
        self.cluster_id.is_some()
            || self.pods.iter().any(|p| match &p.node {
                NodeObservation::Reachable(r) => r.joined || !r.cluster_id.is_empty(),
                NodeObservation::Unreachable(_) => false,
            })
    }

    /// A reachable, joined, ready node to send cluster-wide admin calls
    /// through, other than `avoid` when another one exists.
    pub(crate) fn via(&self, avoid: &str) -> Option<&PodObservation> {
        let usable = |p: &&PodObservation| {
            !p.terminating && matches!(&p.node, NodeObservation::Reachable(r) if r.joined && r.ready)
        };
        self.pods.iter().filter(usable).find(|p| p.name != avoid).or_else(|| self.pods.iter().find(usable))
    }

    /// Partitions whose actual voters (as their leaders report) include any
    /// of `ids`; `None` while some partition has no reporting leader.
    pub(crate) fn partitions_voting(&self, view: &ClusterViewReport, ids: &[u64]) -> Option<Vec<u32>> {
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
    pub(crate) fn moving_partitions(&self, view: &ClusterViewReport) -> BTreeSet<u32> {
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

    /// How long `wait` has lasted (zero when it just began).
    pub(crate) fn waited(&self, kind: WaitKind, subject: &str) -> Duration {
        self.waits.get(&Wait { kind, subject: subject.to_string() }).copied().unwrap_or_default()
    }

    /// The bound of a wait kind, from the spec.
    pub(crate) fn bound(&self, kind: WaitKind) -> Duration {
        let t = &self.spec.timeouts;
        let setting = match kind {
            WaitKind::Drain => &t.drain,
            WaitKind::CatchUp => &t.catch_up,
            WaitKind::Ready | WaitKind::Certificate => &t.ready,
            WaitKind::ScaleIn => &t.scale_in,
            WaitKind::Join => &t.join,
            WaitKind::Orphan => &self.spec.failover.timeout,
        };
        crate::crd::parse_duration(setting).unwrap_or(Duration::from_secs(600))
    }

    /// The pod runs an outdated template: another version, or (when the
    /// StatefulSet and pod report one) another controller revision.
    pub(crate) fn outdated(&self, p: &PodObservation) -> bool {
        p.version != self.spec.version
            || matches!((&self.update_revision, &p.revision), (Some(want), Some(have)) if want != have)
    }

    /// The leader's commit index of a partition, as the pod leading it with
    /// the highest term reports it; None when no reachable pod leads it.
    pub(crate) fn leader_commit(&self, partition: u32) -> Option<u64> {
        self.pods
            .iter()
            .filter_map(PodObservation::report)
            .filter_map(|r| r.partitions.get(&partition).filter(|g| g.role == Role::Leader))
            .max_by_key(|g| g.term)
            .map(|g| g.commit_index)
    }

    /// Partitions on which the member `id` (pod `pod`) is not caught up: no
    /// replica reported, no leader to compare with, or applied more than
    /// `updateStrategy.maxCatchUpLag` entries behind the leader's commit index.
    pub(crate) fn lagging(&self, view: &ClusterViewReport, pod: &PodObservation, id: u64) -> Vec<u32> {
        let max_lag = self.spec.update_strategy.max_catch_up_lag;
        let Some(r) = pod.report() else {
            return view.placement.iter().filter(|(_, reps)| reps.contains(&id)).map(|(p, _)| *p).collect();
        };
        view.placement
            .iter()
            .filter(|(_, reps)| reps.contains(&id))
            .filter(|(p, _)| match (r.partitions.get(p), self.leader_commit(*p)) {
                (Some(g), Some(commit)) => commit.saturating_sub(g.applied_index) > max_lag,
                _ => true,
            })
            .map(|(p, _)| *p)
            .collect()
    }

    /// Leaderships `p` holds: what its node reports, or zero when every
    /// partition's leader is reported by another pod; None when unknown
    /// (its status call failed and some partition has no known leader).
    pub(crate) fn leaderships(&self, p: &PodObservation) -> Option<u32> {
        if let Some(r) = p.report() {
            return Some(r.leaders);
        }
        let view = self.view()?;
        let led: BTreeSet<u32> = self
            .pods
            .iter()
            .filter(|o| o.name != p.name)
            .filter_map(PodObservation::report)
            .flat_map(|r| r.led_partitions.iter().copied())
            .collect();
        view.placement.iter().all(|(part, _)| led.contains(part)).then_some(0)
    }
}
