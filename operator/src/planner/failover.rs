//! Failover: members unready past `failover.timeout` are marked failed.

use super::*;

/// Members unready past failover.timeout, for any reason (a False or
/// Unknown Ready condition, or none at all while Pending), are marked `failed`, so the nodes
/// re-create their replicas elsewhere. Only while enough other members can
/// hold a full replica set: with no spare, failing a member would only
/// shrink every partition and keep the member from coming back.
pub(super) fn plan_failover(obs: &Observation) -> Vec<Action> {
    let timeout = parse_duration(&obs.spec.failover.timeout).unwrap_or(Duration::from_secs(300));
    let view = obs.view();
    let mut eligible = view.map_or(0, |v| v.members.iter().filter(|m| m.state.holds_replicas()).count());
    let rf = obs.spec.replication_factor as usize;
    // A failed member whose pod is back with its data before its replicas
    // were all re-created elsewhere: it may hold replicas again.
    let back = obs.pods.iter().filter_map(|p| {
        // A pod past spec.replicas is on its way out: scale-in removes it.
        if p.ordinal as i32 >= obs.spec.replicas {
            return None;
        }
        let r = p.report().filter(|r| r.joined && r.ready && p.ready && !p.terminating)?;
        let m = view?.member(&p.name).filter(|m| m.state == MemberState::Failed && m.id == r.node_id)?;
        let via = obs.via(&p.name)?;
        Some(Action::ActivateMember { via: via.name.clone(), pod: p.name.clone(), node_id: m.id })
    });
    let back: Vec<Action> = back.collect();
    let replace = obs.pods.iter().filter(|p| p.unready_for.is_some_and(|d| d >= timeout)).flat_map(|p| {
        let member = view.and_then(|v| v.member(&p.name)).filter(|m| m.state != MemberState::Removed);
        // No elapsed time in the message: it would change status every pass.
        let unready = format!("{} has been unready longer than failover.timeout {}", p.name, obs.spec.failover.timeout);
        let degraded = |msg: String| condition(cond::DEGRADED, true, "MemberUnready", msg);
        let Some(m) = member else { return vec![degraded(unready)] };
        if matches!(m.state, MemberState::Failed | MemberState::Decommissioning) {
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
