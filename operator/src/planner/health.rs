//! Health: which partitions keep a majority, and the Available condition.

use super::*;

/// Partitions that would keep fewer than a majority of healthy, caught-up
/// voters once `restarting` goes down, counting every voter set a move in
/// flight involves (the placement and the leader's actual voters). A
/// partition without a reporting leader counts as at risk: unknown is
/// "wait". A single replica (replicationFactor 1) has no majority to keep:
/// restarts cost its downtime.
pub(super) fn partitions_at_risk(obs: &Observation, view: &ClusterViewReport, restarting: &str) -> Vec<u32> {
    if obs.spec.replication_factor < 3 {
        return Vec::new();
    }
    let healthy = healthy_ids(obs, Some(restarting));
    let caught_up = |part: u32, id: u64| {
        let commit = obs.leader_commit(part);
        obs.pods.iter().filter_map(PodObservation::report).filter(|r| r.node_id == id).any(|r| {
            match (r.partitions.get(&part), commit) {
                (Some(g), Some(c)) => c.saturating_sub(g.applied_index) <= obs.spec.update_strategy.max_catch_up_lag,
                _ => false,
            }
        })
    };
    let led = led_voters(obs);
    view.placement
        .iter()
        .filter(|(part, placed)| {
            let Some(voters) = led.get(part) else { return true };
            [placed, *voters].iter().any(|set| !has_majority(set, |id| healthy.contains(&id) && caught_up(*part, id)))
        })
        .map(|(p, _)| *p)
        .collect()
}

/// Node ids of ready pods whose node reports ready, but `except`.
fn healthy_ids(obs: &Observation, except: Option<&str>) -> BTreeSet<u64> {
    obs.pods
        .iter()
        .filter(|p| Some(p.name.as_str()) != except && p.ready && !p.terminating)
        .filter_map(|p| p.report().filter(|r| r.ready).map(|r| r.node_id))
        .collect()
}

/// The actual voters of each partition, as a reachable leader reports them.
fn led_voters(obs: &Observation) -> BTreeMap<u32, &Vec<u64>> {
    obs.pods.iter().filter_map(PodObservation::report).flat_map(|r| &r.led_voters).map(|(p, v)| (*p, v)).collect()
}

fn has_majority(set: &[u64], ok: impl Fn(u64) -> bool) -> bool {
    set.iter().filter(|id| ok(**id)).count() > set.len() / 2
}

/// Partitions that are not serving: no reachable node reports leading
/// them, or their actual voters (and placement, while moving) lack a
/// majority on ready pods.
pub(super) fn partitions_without_majority(obs: &Observation, view: &ClusterViewReport) -> Vec<u32> {
    let healthy = healthy_ids(obs, None);
    let led = led_voters(obs);
    view.placement
        .iter()
        .filter(|(part, placed)| match led.get(part) {
            None => true,
            Some(voters) => [placed, *voters].iter().any(|set| !has_majority(set, |id| healthy.contains(&id))),
        })
        .map(|(p, _)| *p)
        .collect()
}

/// Available while every partition has a live leader and keeps a majority
/// of ready voters (losing a whole zone leaves partitions spread over zones
/// available).
/// Without a placement to look at, counts unready pods against what one
/// partition tolerates.
pub(super) fn availability(obs: &Observation) -> Action {
    let unready: Vec<&str> = obs.pods.iter().filter(|p| !p.ready).map(|p| p.name.as_str()).collect();
    let lost = obs.view().filter(|v| !v.placement.is_empty()).map(|v| partitions_without_majority(obs, v));
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
                "partitions {} lack a live leader or a majority of ready replicas",
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
