//! Rolling upgrade, one pod at a time, leaders last, every step gated on
//! the data: a restarted member leads again only once it caught up on every
//! partition it holds, and no pod restarts while a partition would lose its
//! majority of healthy, caught-up voters.

use super::*;

/// Rolling upgrade: drain the pod (`draining`), restart it once it leads
/// nothing, and make it `active` again once it is back on the new template,
/// ready and caught up on every partition it holds.
pub(super) fn plan_upgrade(obs: &Observation, view: Option<&ClusterViewReport>, sts_replicas: i32) -> Vec<Action> {
    let target = &obs.spec.version;
    let state_of = |pod: &str| view.and_then(|v| v.member(pod)).map(|m| m.state);
    let id_of = |pod: &PodObservation| view.and_then(|v| v.member(&pod.name)).map(|m| m.id);
    let report = PodObservation::report;
    let upgrading = |status: bool, reason: &str, msg: String| condition(cond::UPGRADING, status, reason, msg);

    // A drained pod that is back: ready, on the target template, caught up.
    // The operator drains only for restarts, so a draining member on the
    // target template is one it drained.
    let mut activate = Vec::new();
    for p in obs.pods.iter().filter(|p| !obs.outdated(p) && state_of(&p.name) == Some(MemberState::Draining)) {
        let id = id_of(p).unwrap_or_default();
        let ready = p.ready && !p.terminating && report(p).is_some_and(|r| r.joined && r.ready);
        let lagging = view.map_or_else(Vec::new, |v| obs.lagging(v, p, id));
        match (ready && lagging.is_empty(), obs.via(&p.name)) {
            (true, Some(via)) => {
                activate.push(Action::ActivateMember { via: via.name.clone(), pod: p.name.clone(), node_id: id })
            }
            _ => {
                let blocker = if !ready {
                    format!("{} is not ready on {target}", p.name)
                } else if lagging.is_empty() {
                    format!("{} has no ready member to reactivate it through", p.name)
                } else {
                    format!("{} has not caught up on partitions {}", p.name, list(&lagging))
                };
                let mut v = vec![upgrading(
                    true,
                    "WaitingForCatchUp",
                    format!("{blocker}: waiting before it leads again (updateStrategy.maxCatchUpLag)"),
                )];
                v.extend(bounded(obs, WaitKind::CatchUp, &p.name, &blocker));
                return v;
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
        activate.push(upgrading(
            true,
            "Reactivating",
            format!("{names} back on {target} and caught up; may lead again"),
        ));
        return activate;
    }

    let in_scope = |p: &&PodObservation| (p.ordinal as i32) < sts_replicas.min(obs.spec.replicas);
    let outdated: Vec<&PodObservation> = obs.pods.iter().filter(in_scope).filter(|p| obs.outdated(p)).collect();
    if outdated.is_empty() {
        return vec![upgrading(false, "UpToDate", format!("every pod runs {target}"))];
    }
    let total = obs.pods.iter().filter(in_scope).count();
    let progress = format!("{}/{total} pods updated", total.saturating_sub(outdated.len()));
    let names = outdated.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
    let names = format!("{progress}; left: {names}");
    if obs.spec.update_strategy.paused {
        return vec![upgrading(false, "Paused", format!("updateStrategy.paused is set; not yet on {target}: {names}"))];
    }
    // One pod at a time: a pod still going down holds everything.
    if let Some(p) = obs.pods.iter().find(|p| p.terminating) {
        let blocker = format!("{} is terminating", p.name);
        let mut v = vec![upgrading(true, "WaitingForReady", format!("{blocker}; {names}"))];
        v.extend(bounded(obs, WaitKind::Ready, &p.name, &blocker));
        return v;
    }
    // An outdated pod that is not serving (e.g. a failed version being
    // rolled back) goes next: waiting for it to be ready would never end.
    // It passes the same checks as any other pod.
    let next = match outdated.iter().find(|p| !p.ready) {
        Some(p) => *p,
        None => {
            if let Some(p) = obs.pods.iter().find(|p| !p.ready) {
                let blocker = format!("{} is not ready on {}", p.name, p.version);
                let mut v = vec![upgrading(
                    true,
                    "WaitingForReady",
                    format!("{blocker}: waiting before restarting the next pod; {names}"),
                )];
                v.extend(bounded(obs, WaitKind::Ready, &p.name, &blocker));
                return v;
            }
            // A pod already draining goes first; then the fewest leaders,
            // leaders last; a pod whose leaderships are unknown goes last.
            outdated
                .iter()
                .find(|p| state_of(&p.name) == Some(MemberState::Draining))
                .or_else(|| {
                    outdated
                        .iter()
                        .min_by_key(|p| (obs.leaderships(p).unwrap_or(u32::MAX), std::cmp::Reverse(p.ordinal)))
                })
                .copied()
                .expect("outdated is not empty")
        }
    };
    // Never take the last healthy majority of a partition down; without any
    // view of the placement that cannot be judged: wait.
    let at_risk = view.map_or_else(Vec::new, |v| partitions_at_risk(obs, v, &next.name));
    if view.is_none() && obs.spec.replication_factor >= 3 {
        let blocker = format!("no node reports the placement, so restarting {} cannot be judged safe", next.name);
        let mut v = vec![upgrading(true, "Halted", format!("{blocker}; {names}"))];
        v.extend(bounded(obs, WaitKind::Ready, &next.name, &blocker));
        return v;
    }
    if !at_risk.is_empty() {
        let halted = format!(
            "upgrade halted before restarting {}: partitions {} would lack a majority of healthy, caught-up voters (or report no leader); resumes when they recover",
            next.name,
            list(&at_risk)
        );
        return vec![
            condition(cond::DEGRADED, true, "QuorumAtRisk", halted.clone()),
            upgrading(true, "Halted", format!("{halted}; {names}")),
        ];
    }
    let restart = |detail: String| {
        vec![
            Action::RestartPod { pod: next.name.clone() },
            upgrading(true, "RollingUpdate", format!("restarting {} on {target}{detail}; {names}", next.name)),
        ]
    };
    // Someone else must be able to take the leaderships over: another
    // voter of the same partitions, so never with replicationFactor 1
    // (its partitions are down while their only replica restarts).
    let other_leader = obs.spec.replication_factor > 1
        && obs.pods.iter().any(|p| {
            p.name != next.name
                && p.ready
                && state_of(&p.name) == Some(MemberState::Active)
                && report(p).is_some_and(|r| r.ready)
        });
    let Some(leads) = obs.leaderships(next) else {
        // Its status call failed and some partition has no known leader:
        // it may still lead, so it is not treated as drained.
        let blocker = format!("{} did not answer its status call; it may still lead partitions", next.name);
        let mut v = vec![upgrading(true, "WaitingForStatus", format!("{blocker}; {names}"))];
        v.extend(bounded(obs, WaitKind::Drain, &next.name, &blocker));
        return v;
    };
    match (state_of(&next.name), id_of(next)) {
        (Some(MemberState::Draining), _) if leads == 0 => restart(" (drained)".into()),
        (Some(MemberState::Draining), _) if !other_leader => restart(String::new()),
        (Some(MemberState::Draining), _) => {
            let blocker = format!("{} still leads {leads} partitions", next.name);
            let mut v = vec![upgrading(
                true,
                "DrainingLeaders",
                format!("waiting for {} to hand over {leads} leaderships before restarting it; {names}", next.name),
            )];
            v.extend(bounded(obs, WaitKind::Drain, &next.name, &blocker));
            v
        }
        (Some(MemberState::Active), Some(node_id)) if other_leader => match obs.via(&next.name) {
            Some(via) => vec![
                Action::DrainLeaders { via: via.name.clone(), pod: next.name.clone(), node_id },
                upgrading(
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
