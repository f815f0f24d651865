//! The placement planner: a pure function from the cluster's nodes and the
//! current placement to a target placement. The node's `keyraft admin
//! rebalance` and the operator both call it.
//!
//! What it guarantees (proved by the property tests below):
//! - every partition has `min(rf, eligible nodes)` replicas on distinct,
//!   eligible nodes (`active` or `draining`; never `decommissioning`,
//!   `failed` or `removed`);
//! - replicas of a partition sit in distinct zones where the eligible nodes
//!   offer enough zones;
//! - replica counts are even (max - min <= 1) when zones do not forbid it,
//!   and preferred leaders are even over `active` nodes;
//! - it moves as little as possible: a placement that already satisfies the
//!   above comes back unchanged, and at most `max_moves` partitions change
//!   in one call, repairs (replicas on ineligible nodes) first.

use std::collections::{BTreeMap, BTreeSet};

pub type NodeId = u64;

/// A node's state in the cluster registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Active,
    /// Keeps its replicas, gives up leaderships.
    Draining,
    /// Its replicas move away.
    Decommissioning,
    /// Treated as lost; its replicas are re-created elsewhere.
    Failed,
    Removed,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Draining => "draining",
            Self::Decommissioning => "decommissioning",
            Self::Failed => "failed",
            Self::Removed => "removed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => Self::Active,
            "draining" => Self::Draining,
            "decommissioning" => Self::Decommissioning,
            "failed" => Self::Failed,
            "removed" => Self::Removed,
            _ => return None,
        })
    }

    /// May hold replicas.
    pub fn holds_replicas(self) -> bool {
        matches!(self, Self::Active | Self::Draining)
    }

    /// May lead.
    pub fn may_lead(self) -> bool {
        self == Self::Active
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub id: NodeId,
    pub zone: String,
    pub state: NodeState,
}

/// One partition's replica set and preferred leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTarget {
    pub replicas: Vec<NodeId>,
    pub preferred_leader: NodeId,
}

#[derive(Debug, Clone, Copy)]
pub struct PlanSettings {
    pub replication_factor: usize,
    /// Most partitions whose replica set may change in one plan.
    pub max_moves: usize,
}

struct Ctx<'a> {
    zone: BTreeMap<NodeId, &'a str>,
    eligible: Vec<NodeId>,
}

impl Ctx<'_> {
    fn zones_of(&self, reps: &[NodeId]) -> BTreeSet<&str> {
        reps.iter().map(|r| self.zone[r]).filter(|z| !z.is_empty()).collect()
    }

    /// A replica sharing a zone with another while a zone is unused.
    fn zone_conflict(&self, reps: &[NodeId]) -> Option<NodeId> {
        let all_zones: BTreeSet<&str> = self.eligible.iter().map(|n| self.zone[n]).filter(|z| !z.is_empty()).collect();
        let used = self.zones_of(reps);
        if used.len() >= all_zones.len().min(reps.len()) {
            return None;
        }
        let mut seen = BTreeSet::new();
        reps.iter()
            .rev()
            .find(|r| {
                let z = self.zone[*r];
                !z.is_empty() && !seen.insert(z)
            })
            .copied()
    }
}

fn load(target: &[PartitionTarget], eligible: &[NodeId]) -> BTreeMap<NodeId, usize> {
    let mut l: BTreeMap<NodeId, usize> = eligible.iter().map(|n| (*n, 0)).collect();
    for t in target {
        for r in &t.replicas {
            if let Some(c) = l.get_mut(r) {
                *c += 1;
            }
        }
    }
    l
}

/// Picks the best node to add to `reps`: an unused zone first, then the
/// least loaded, then the lowest id.
fn pick(ctx: &Ctx, reps: &[NodeId], load: &BTreeMap<NodeId, usize>) -> Option<NodeId> {
    let used = ctx.zones_of(reps);
    ctx.eligible
        .iter()
        .filter(|n| !reps.contains(n))
        .min_by_key(|n| (!ctx.zone[*n].is_empty() && used.contains(ctx.zone[*n]), load[*n], **n))
        .copied()
}

/// Computes the target placement. `current` is indexed by partition.
pub fn plan(nodes: &[NodeView], current: &[PartitionTarget], s: PlanSettings) -> Vec<PartitionTarget> {
    let ctx = Ctx {
        zone: nodes.iter().map(|n| (n.id, n.zone.as_str())).collect(),
        eligible: nodes.iter().filter(|n| n.state.holds_replicas()).map(|n| n.id).collect(),
    };
    let rf = s.replication_factor.min(ctx.eligible.len());
    let mut target: Vec<PartitionTarget> = current.to_vec();
    let mut changed: BTreeSet<usize> = BTreeSet::new();
    let mut budget = s.max_moves;

    // 1. Repairs: drop replicas on ineligible (or unknown) nodes, refill.
    for (p, t) in target.iter_mut().enumerate() {
        let mut reps: Vec<NodeId> = Vec::new();
        for r in &t.replicas {
            if ctx.eligible.contains(r) && !reps.contains(r) && reps.len() < rf {
                reps.push(*r);
            }
        }
        if reps.len() == rf && reps == t.replicas {
            continue;
        }
        if budget == 0 {
            continue;
        }
        t.replicas = reps;
        changed.insert(p);
        budget -= 1;
    }
    for p in changed.clone() {
        while target[p].replicas.len() < rf {
            let l = load(&target, &ctx.eligible);
            match pick(&ctx, &target[p].replicas, &l) {
                Some(n) => target[p].replicas.push(n),
                None => break,
            }
        }
    }

    // 2. Zone spread: swap a replica that shares a zone for one in an unused zone.
    for p in 0..target.len() {
        if budget == 0 && !changed.contains(&p) {
            continue;
        }
        while let Some(bad) = ctx.zone_conflict(&target[p].replicas) {
            let l = load(&target, &ctx.eligible);
            let reps: Vec<NodeId> = target[p].replicas.iter().copied().filter(|r| *r != bad).collect();
            let used = ctx.zones_of(&reps);
            let Some(n) = ctx
                .eligible
                .iter()
                .filter(|n| !target[p].replicas.contains(n) && !used.contains(ctx.zone[*n]))
                .min_by_key(|n| (l[*n], **n))
                .copied()
            else {
                break;
            };
            let pos = target[p].replicas.iter().position(|r| *r == bad).expect("bad is a replica");
            target[p].replicas[pos] = n;
            if changed.insert(p) {
                budget -= 1;
            }
        }
    }

    // 3. Balance replica counts: move one replica at a time from a more to
    // a less loaded node, never losing zone spread. The most and least
    // loaded pair first; when zones forbid it (the least loaded node is in
    // a zone every candidate partition already uses), the next pairs.
    'balance: loop {
        let l = load(&target, &ctx.eligible);
        let mut sources: Vec<(NodeId, usize)> = l.iter().map(|(n, c)| (*n, *c)).collect();
        sources.sort_by_key(|(n, c)| (std::cmp::Reverse(*c), *n));
        let mut dests = sources.clone();
        dests.sort_by_key(|(n, c)| (*c, *n));
        for &(max_n, max_c) in &sources {
            for &(min_n, _) in dests.iter().take_while(|(_, c)| max_c > *c + 1) {
                if let Some((p, reps, free)) = balance_move(&ctx, &target, &changed, budget, max_n, min_n) {
                    target[p].replicas = reps;
                    if !free {
                        changed.insert(p);
                        budget -= 1;
                    }
                    continue 'balance;
                }
            }
        }
        break;
    }

    assign_leaders(nodes, &mut target);
    target
}

/// One replica of some partition moved from `from` to `to` without losing
/// zone spread: a partition already changing first (no extra move), else
/// any while the move budget lasts. Returns (partition, replicas, free).
fn balance_move(
    ctx: &Ctx,
    target: &[PartitionTarget],
    changed: &BTreeSet<usize>,
    budget: usize,
    from: NodeId,
    to: NodeId,
) -> Option<(usize, Vec<NodeId>, bool)> {
    let mut chosen: Option<(usize, Vec<NodeId>, bool)> = None;
    for p in (0..target.len()).filter(|p| target[*p].replicas.contains(&from) && !target[*p].replicas.contains(&to)) {
        let mut reps = target[p].replicas.clone();
        let pos = reps.iter().position(|r| *r == from).expect("contains from");
        let before = ctx.zones_of(&reps).len();
        reps[pos] = to;
        if ctx.zones_of(&reps).len() < before {
            continue;
        }
        let free = changed.contains(&p);
        if free {
            return Some((p, reps, true));
        }
        if budget > 0 && chosen.is_none() {
            chosen = Some((p, reps, false));
        }
    }
    chosen
}

/// Keeps each preferred leader where possible; moves preferred leaders off
/// nodes that may not lead and evens out the counts over active nodes.
fn assign_leaders(nodes: &[NodeView], target: &mut [PartitionTarget]) {
    let may_lead: BTreeSet<NodeId> = nodes.iter().filter(|n| n.state.may_lead()).map(|n| n.id).collect();
    let count = |target: &[PartitionTarget]| {
        let mut c: BTreeMap<NodeId, usize> = may_lead.iter().map(|n| (*n, 0)).collect();
        for t in target.iter() {
            if let Some(x) = c.get_mut(&t.preferred_leader) {
                *x += 1;
            }
        }
        c
    };
    for i in 0..target.len() {
        let t = &target[i];
        if t.replicas.contains(&t.preferred_leader) && may_lead.contains(&t.preferred_leader) {
            continue;
        }
        let c = count(target);
        let best = target[i].replicas.iter().filter(|r| may_lead.contains(r)).min_by_key(|r| (c[*r], **r)).copied();
        target[i].preferred_leader = best.or_else(|| target[i].replicas.first().copied()).unwrap_or(0);
    }
    // Even out: move a preferred leadership from the busiest to a replica
    // with fewer, until no such move narrows the spread.
    for _ in 0..target.len() * 4 {
        let c = count(target);
        let mut moved = false;
        let mut order: Vec<usize> = (0..target.len()).collect();
        order.sort_by_key(|i| std::cmp::Reverse(c.get(&target[*i].preferred_leader).copied().unwrap_or(0)));
        for i in order {
            let cur = target[i].preferred_leader;
            let Some(&cur_c) = c.get(&cur) else { continue };
            if let Some(&alt) = target[i].replicas.iter().filter(|r| may_lead.contains(r)).min_by_key(|r| (c[*r], **r))
            {
                if c[&alt] + 1 < cur_c {
                    target[i].preferred_leader = alt;
                    moved = true;
                    break;
                }
            }
        }
        if !moved {
            break;
        }
    }
}

/// Partitions whose replica set differs between two placements.
pub fn moves(from: &[PartitionTarget], to: &[PartitionTarget]) -> Vec<usize> {
    from.iter()
        .zip(to)
        .enumerate()
        .filter(|(_, (a, b))| a.replicas.iter().collect::<BTreeSet<_>>() != b.replicas.iter().collect::<BTreeSet<_>>())
        .map(|(p, _)| p)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(id: NodeId, zone: &str, state: NodeState) -> NodeView {
        NodeView { id, zone: zone.into(), state }
    }

    fn settings(rf: usize) -> PlanSettings {
        PlanSettings { replication_factor: rf, max_moves: usize::MAX }
    }

    fn replica_load(nodes: &[NodeView], t: &[PartitionTarget]) -> Vec<usize> {
        let eligible: Vec<NodeId> = nodes.iter().filter(|n| n.state.holds_replicas()).map(|n| n.id).collect();
        load(t, &eligible).values().copied().collect()
    }

    fn leader_load(nodes: &[NodeView], t: &[PartitionTarget]) -> Vec<usize> {
        nodes
            .iter()
            .filter(|n| n.state.may_lead())
            .map(|n| t.iter().filter(|p| p.preferred_leader == n.id).count())
            .collect()
    }

    fn spread(v: &[usize]) -> usize {
        v.iter().max().unwrap_or(&0) - v.iter().min().unwrap_or(&0)
    }

    /// 3 nodes, 8 partitions all on nodes 1-3, as at bootstrap.
    fn three_node_start(parts: usize) -> Vec<PartitionTarget> {
        (0..parts)
            .map(|p| {
                let reps: Vec<NodeId> = (0..3).map(|k| ((p + k) % 3) as NodeId + 1).collect();
                PartitionTarget { preferred_leader: reps[0], replicas: reps }
            })
            .collect()
    }

    #[test]
    fn scale_out_moves_replicas_onto_new_nodes_evenly() {
        let mut nodes: Vec<NodeView> = (1..=3).map(|i| node(i, "", NodeState::Active)).collect();
        let start = three_node_start(16);
        nodes.push(node(4, "", NodeState::Active));
        nodes.push(node(5, "", NodeState::Active));
        let t = plan(&nodes, &start, settings(3));
        assert!(spread(&replica_load(&nodes, &t)) <= 1, "{:?}", replica_load(&nodes, &t));
        assert!(spread(&leader_load(&nodes, &t)) <= 1, "{:?}", leader_load(&nodes, &t));
        // 48 replicas over 5 nodes: at least 19 must move onto 4 and 5, and
        // no partition needs more than one move for that.
        assert!(moves(&start, &t).len() <= 19, "moved {} partitions", moves(&start, &t).len());
    }

    #[test]
    fn scale_out_within_zones_spreads_replicas_when_the_least_loaded_node_shares_zones() {
        // Nodes 1 (a), 3 (c), 6 (b) hold everything; 2 (c), 4 (a), 5 (b) are
        // new. The most loaded node by id (1, zone a) cannot give a replica to
        // the least loaded (2, zone c) without doubling zone c: other pairs must.
        let zones = ["a", "c", "c", "a", "b", "b"];
        let nodes: Vec<NodeView> =
            zones.iter().enumerate().map(|(i, z)| node(i as NodeId + 1, z, NodeState::Active)).collect();
        let holders = [1, 3, 6];
        let current: Vec<PartitionTarget> = (0..8)
            .map(|p| PartitionTarget {
                replicas: (0..3).map(|k| holders[(p + k) % 3]).collect(),
                preferred_leader: holders[p % 3],
            })
            .collect();
        let target = plan(&nodes, &current, settings(3));
        assert!(spread(&replica_load(&nodes, &target)) <= 1, "{:?}", replica_load(&nodes, &target));
        for p in &target {
            let used: BTreeSet<&str> = p.replicas.iter().map(|r| zones[*r as usize - 1]).collect();
            assert_eq!(used.len(), 3, "{p:?}");
        }
    }

    #[test]
    fn decommissioned_and_failed_nodes_are_emptied_and_lead_nothing() {
        let mut nodes: Vec<NodeView> = (1..=5).map(|i| node(i, "", NodeState::Active)).collect();
        let start = plan(&nodes, &three_node_start(10), settings(3));
        nodes[3].state = NodeState::Decommissioning;
        nodes[4].state = NodeState::Failed;
        let t = plan(&nodes, &start, settings(3));
        for p in &t {
            assert!(!p.replicas.contains(&4) && !p.replicas.contains(&5), "{p:?}");
            assert!(p.preferred_leader <= 3);
        }
    }

    #[test]
    fn draining_nodes_keep_replicas_but_not_preferred_leadership() {
        let mut nodes: Vec<NodeView> = (1..=3).map(|i| node(i, "", NodeState::Active)).collect();
        let start = three_node_start(6);
        nodes[0].state = NodeState::Draining;
        let t = plan(&nodes, &start, settings(3));
        assert!(moves(&start, &t).is_empty(), "draining must not move replicas");
        assert!(t.iter().all(|p| p.preferred_leader != 1));
    }

    #[test]
    fn move_limit_is_respected_and_repairs_come_first() {
        let mut nodes: Vec<NodeView> = (1..=6).map(|i| node(i, "", NodeState::Active)).collect();
        let start = plan(&nodes, &three_node_start(12), settings(3));
        nodes[0].state = NodeState::Failed;
        let t = plan(&nodes, &start, PlanSettings { replication_factor: 3, max_moves: 2 });
        let m = moves(&start, &t);
        assert_eq!(m.len(), 2);
        for p in m {
            assert!(start[p].replicas.contains(&1), "partition {p} moved before a repair");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn invariants_hold_on_random_clusters(
            n_nodes in 3usize..9,
            parts in 1usize..40,
            rf in prop::sample::select(vec![1usize, 3, 5]),
            zones in 0usize..4,
            states in prop::collection::vec(0u8..10, 9),
            seed in prop::collection::vec(0usize..1000, 120),
            max_moves in 1usize..6,
        ) {
            let nodes: Vec<NodeView> = (0..n_nodes).map(|i| {
                let state = match states[i] { 0 => NodeState::Failed, 1 => NodeState::Decommissioning, 2 => NodeState::Draining, 3 => NodeState::Removed, _ => NodeState::Active };
                let zone = if zones == 0 { String::new() } else { format!("z{}", i % zones) };
                node(i as NodeId + 1, &zone, state)
            }).collect();
            // A random starting placement (possibly on bad nodes, possibly short).
            let start: Vec<PartitionTarget> = (0..parts).map(|p| {
                let mut reps: Vec<NodeId> = Vec::new();
                for k in 0..rf {
                    let n = (seed[(p * 3 + k) % seed.len()] % n_nodes) as NodeId + 1;
                    if !reps.contains(&n) { reps.push(n); }
                }
                PartitionTarget { preferred_leader: reps[0], replicas: reps }
            }).collect();
            let eligible: Vec<&NodeView> = nodes.iter().filter(|n| n.state.holds_replicas()).collect();
            let want = rf.min(eligible.len());
            let all_zones: BTreeSet<&str> = eligible.iter().map(|n| n.zone.as_str()).filter(|z| !z.is_empty()).collect();

            // Unlimited moves: every invariant.
            let t = plan(&nodes, &start, settings(rf));
            for p in &t {
                let set: BTreeSet<_> = p.replicas.iter().collect();
                prop_assert_eq!(set.len(), p.replicas.len(), "duplicate replica {:?}", p);
                prop_assert_eq!(p.replicas.len(), want);
                for r in &p.replicas {
                    prop_assert!(eligible.iter().any(|n| n.id == *r), "replica on ineligible node {}", r);
                }
                if want > 0 { prop_assert!(p.replicas.contains(&p.preferred_leader)); }
                if zones > 0 {
                    let used: BTreeSet<&str> = p.replicas.iter().map(|r| nodes[*r as usize - 1].zone.as_str()).collect();
                    prop_assert_eq!(used.len(), want.min(all_zones.len()), "zones not spread {:?}", p);
                }
            }
            if zones == 0 {
                prop_assert!(spread(&replica_load(&nodes, &t)) <= 1, "replicas uneven {:?}", replica_load(&nodes, &t));
            }
            // Stable: planning again changes nothing.
            prop_assert_eq!(plan(&nodes, &t, settings(rf)), t.clone());

            // Limited moves: never more partitions change than allowed.
            let limited = plan(&nodes, &start, PlanSettings { replication_factor: rf, max_moves });
            prop_assert!(moves(&start, &limited).len() <= max_moves);
        }

        #[test]
        fn leaders_are_even_on_balanced_clusters(n_nodes in 3usize..8, parts in 1usize..48) {
            let nodes: Vec<NodeView> = (1..=n_nodes as NodeId).map(|i| node(i, "", NodeState::Active)).collect();
            let t = plan(&nodes, &three_node_start(parts), settings(3));
            prop_assert!(spread(&leader_load(&nodes, &t)) <= 1, "leaders uneven {:?}", leader_load(&nodes, &t));
        }
    }
}
