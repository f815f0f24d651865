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

use keyraft_api::placement::{self as shared, NodeView, PartitionTarget, PlanSettings};

use crate::crd::{parse_duration, ReadConsistency};

mod failover;
mod health;
mod observation;
mod rebalance;
mod scale;
#[cfg(test)]
mod tests;
mod upgrade;

use failover::plan_failover;
use health::{availability, partitions_at_risk};
pub use observation::*;
pub use rebalance::unbalanced_partitions;
use rebalance::{plan_rebalance, plan_zones};
use scale::{plan_orphans, plan_reclaim, plan_scale_in};
use upgrade::plan_upgrade;

/// Condition types the operator sets.
pub mod cond {
    pub const AVAILABLE: &str = "Available";
    pub const PROGRESSING: &str = "Progressing";
    pub const DEGRADED: &str = "Degraded";
    pub const UPGRADING: &str = "Upgrading";
    pub const REBALANCING: &str = "Rebalancing";
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
    /// The planner is waiting on something: the controller times it.
    Wait(Wait),
}

pub(super) fn condition(type_: &'static str, status: bool, reason: &str, message: String) -> Action {
    Action::SetCondition(ConditionUpdate { type_, status, reason: reason.to_string(), message })
}

/// The next actions for a cluster: one plan per pass. Each concern
/// proposes; the steps that change members or pods (member states,
/// restarts, reclaims, rebalances) are taken from the first concern that
/// has one, in a fixed priority: safety holds, failover, upgrade, scale,
/// rebalance. The others keep their conditions and wait for a later pass,
/// so no step is undone by another in the same pass. Every step is
/// idempotent: the controller acts, observes again and calls `plan` again.
pub fn plan(obs: &Observation) -> Vec<Action> {
    if obs.paused {
        // Hands off: the controller still refreshes status.
        return Vec::new();
    }
    let spec = &obs.spec;
    let desired = spec.replicas.max(0);
    let current = obs.statefulset_replicas;

    if !obs.bootstrapped() {
        let (replicas, held) = hold_for_certificates(obs, current.unwrap_or(desired).max(desired));
        let mut actions = vec![Action::Apply { statefulset_replicas: replicas }];
        actions.extend(plan_bootstrap(obs, desired));
        // After bootstrap's, so its more precise condition wins.
        actions.extend(held);
        return actions;
    }

    let current = current.unwrap_or(desired);
    let view = obs.view();

    // Scale: never shrink the StatefulSet past a member still holding data.
    let (mut sts_replicas, scale) =
        if desired < current { plan_scale_in(obs, view, current, desired) } else { (desired, Vec::new()) };

    // Failover and the member/pod reconciliation: unready members, removed
    // members whose pod came back, members left without a pod.
    let mut failover = plan_failover(obs);
    let mut housekeeping = Vec::new();
    let mut rebalance = Vec::new();
    let joining = joining(obs, view, sts_replicas);
    if let Some(view) = view {
        failover.extend(plan_reclaim(obs, view, sts_replicas));
        failover.extend(plan_orphans(obs, view, sts_replicas));
        if let Some(via) = obs.via("") {
            if view.default_read.is_some_and(|d| d != spec.consistency.default_read) {
                housekeeping
                    .push(Action::SetDefaultRead { pod: via.name.clone(), level: spec.consistency.default_read });
            }
            housekeeping.extend(plan_zones(obs, view, &via.name));
        }
        // Also without a member to call through, so the condition is never
        // left at an earlier pass's value.
        rebalance.extend(plan_rebalance(obs, view, obs.via("").map(|p| p.name.as_str()), &joining));
    }
    let upgrade = plan_upgrade(obs, view, sts_replicas);
    let available = availability(obs);

    // Safety hold: while a partition has no live leader or majority, no
    // restart and no rebalance runs; failover and decommission (the node
    // keeps serving until its replicas moved) may.
    let quorum_lost = matches!(&available, Action::SetCondition(c) if !c.status);
    let mut groups = [("failover", failover), ("upgrade", upgrade), ("scale", scale), ("rebalance", rebalance)];
    let mut taken = false;
    for (name, group) in groups.iter_mut() {
        let has_step = group.iter().any(Action::is_step);
        let hold = quorum_lost && matches!(*name, "upgrade" | "rebalance");
        if has_step && !taken && !hold {
            taken = true;
        } else if has_step {
            group.retain(|a| !a.is_step());
        }
    }
    let steps: Vec<&Action> = groups.iter().flat_map(|(_, g)| g).filter(|a| a.is_step()).collect();
    // A pod a step acts on stays in the StatefulSet this pass.
    if steps
        .iter()
        .filter_map(|a| a.pod())
        .any(|pod| obs.pods.iter().any(|p| p.name == pod && p.ordinal as i32 >= sts_replicas))
    {
        sts_replicas = current;
    }

    let (sts_replicas, held) = hold_for_certificates(obs, sts_replicas);
    let mut actions = vec![Action::Apply { statefulset_replicas: sts_replicas }];
    actions.extend(delete_claims(obs, view, sts_replicas));
    if !joining.is_empty() && desired >= current {
        actions.push(condition(
            cond::PROGRESSING,
            true,
            "WaitingForJoin",
            format!("waiting for {} to join the cluster", joining.join(", ")),
        ));
        for pod in &joining {
            actions.extend(bounded(obs, WaitKind::Join, pod, &format!("{pod} has not joined the cluster")));
        }
    }
    actions.extend(housekeeping);
    let [(_, failover), (_, upgrade), (_, scale), (_, rebalance)] = groups;
    // Scale conditions come before failover's, so a failover Degraded wins.
    actions.extend(scale);
    actions.extend(held);
    actions.extend(rebalance);
    actions.extend(failover);
    actions.extend(upgrade);
    actions.push(available);
    actions
}

/// Pods of the StatefulSet that are no member yet (or only a removed one).
fn joining(obs: &Observation, view: Option<&ClusterViewReport>, sts_replicas: i32) -> Vec<String> {
    match view {
        Some(v) => (0..sts_replicas.max(0) as u32)
            .map(|o| obs.names.pod(o))
            .filter(|name| v.member(name).is_none_or(|m| m.state == MemberState::Removed))
            .collect(),
        None => Vec::new(),
    }
}

/// PVCs of ordinals the StatefulSet no longer has (reclaimPolicy Delete),
/// once their pod is gone and their member holds nothing: the
/// StatefulSet's own retention policy is Retain, so claims go only here.
fn delete_claims(obs: &Observation, view: Option<&ClusterViewReport>, sts_replicas: i32) -> Vec<Action> {
    if obs.spec.storage.reclaim_policy != crate::crd::ReclaimPolicy::Delete {
        return Vec::new();
    }
    let Some(view) = view else { return Vec::new() };
    let prefix = obs.names.pvc(&obs.names.pod(0));
    let prefix = prefix.trim_end_matches('0');
    obs.pvcs
        .iter()
        .filter(|pvc| {
            let Some(ord) = pvc.strip_prefix(prefix).and_then(|o| o.parse::<u32>().ok()) else { return false };
            let pod = obs.names.pod(ord);
            ord >= sts_replicas as u32
                && obs.pod(ord).is_none()
                && view.member(&pod).is_none_or(|m| m.state == MemberState::Removed)
        })
        .map(|pvc| Action::DeletePvc { name: pvc.clone() })
        .collect()
}

/// A bounded wait on `subject`: reported to the controller's clock, and
/// past its bound a Degraded condition naming the blocker and the setting.
/// The message carries the bound, never the elapsed time, so it only
/// changes when the state does.
/// The StatefulSet grows only over pods whose certificate is in the node
/// Secret (a node without one cannot start); it never shrinks for that.
/// Returns the replicas to apply and, when held, a bounded wait naming the
/// first pod without a certificate.
fn hold_for_certificates(obs: &Observation, planned: i32) -> (i32, Vec<Action>) {
    let allowed = obs.statefulset_replicas.unwrap_or(0).max(obs.certified.min(i32::MAX as u32) as i32);
    if planned <= allowed {
        return (planned, Vec::new());
    }
    let pod = obs.names.pod(allowed as u32);
    let blocker = format!("the node Secret has no certificate for {pod} yet, so it is not created");
    let mut held = bounded(obs, WaitKind::Certificate, &pod, &blocker);
    held.push(condition(cond::PROGRESSING, true, "WaitingForCertificates", blocker));
    (allowed, held)
}

pub(super) fn bounded(obs: &Observation, kind: WaitKind, subject: &str, blocker: &str) -> Vec<Action> {
    let mut v = vec![Action::Wait(Wait { kind, subject: subject.to_string() })];
    let bound = obs.bound(kind);
    if obs.waited(kind, subject) >= bound {
        v.push(condition(
            cond::DEGRADED,
            true,
            kind.reason(),
            format!("{blocker}; still waiting after {}s ({}); retrying", bound.as_secs(), kind.setting()),
        ));
    }
    v
}

impl Action {
    /// A step that changes members or pods: at most one concern's per pass.
    pub fn is_step(&self) -> bool {
        matches!(
            self,
            Action::Rebalance { .. }
                | Action::Decommission { .. }
                | Action::DrainLeaders { .. }
                | Action::ActivateMember { .. }
                | Action::RestartPod { .. }
                | Action::ReplaceMember { .. }
                | Action::ReclaimMember { .. }
        )
    }

    /// The pod a step acts on.
    pub fn pod(&self) -> Option<&str> {
        match self {
            Action::Decommission { pod, .. }
            | Action::DrainLeaders { pod, .. }
            | Action::ActivateMember { pod, .. }
            | Action::RestartPod { pod }
            | Action::ReplaceMember { pod, .. }
            | Action::ReclaimMember { pod, .. } => Some(pod),
            _ => None,
        }
    }
}

pub(super) fn plan_bootstrap(obs: &Observation, desired: i32) -> Vec<Action> {
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

pub(super) fn list(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}
