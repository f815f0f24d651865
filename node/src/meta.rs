//! Cluster metadata kept by the meta group (group 0): the members, the
//! placement of every partition and cluster-wide settings.

use std::collections::BTreeMap;

use keyraft_api::ConsistencyLevel;
use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// A member's registry state (shared with the placement planner).
pub use keyraft_api::placement::NodeState as MemberState;

/// A node as the cluster knows it. `id` is the Raft id of one incarnation:
/// a node that lost its data comes back under a new id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    pub name: String,
    pub advertise: String,
    pub zone: String,
    pub state: MemberState,
    pub version: String,
    pub incarnation: String,
}

/// Where one partition's replicas live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub replicas: Vec<NodeId>,
    pub preferred_leader: NodeId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterMeta {
    pub cluster_id: String,
    pub cluster_name: String,
    pub partitions: u32,
    pub replication_factor: u32,
    pub members: BTreeMap<NodeId, Member>,
    /// Indexed by partition.
    pub placement: Vec<Placement>,
    pub default_read: ConsistencyLevel,
    /// Partitions whose replica set changed since bootstrap. Only a
    /// partition that never moved may be founded (initialised) by its first
    /// replica; after a move, a fresh replica must be filled by its leader.
    pub moved: std::collections::BTreeSet<u32>,
}

impl ClusterMeta {
    pub fn member_addr(&self, id: NodeId) -> Option<&str> {
        self.members.get(&id).map(|m| m.advertise.as_str())
    }
}

/// Changes to the metadata; applied in log order by every meta replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetaOp {
    /// Creates the cluster. Refused when one already exists.
    Bootstrap(ClusterMeta),
    /// A node announces (or updates) its address, zone and version. The
    /// state is taken only on the first registration; after that it changes
    /// through `SetMemberState` alone, so a node re-registering with the view
    /// it had never reverts a drain or decommission committed meanwhile.
    Register(Member),
    SetDefaultRead(ConsistencyLevel),
    /// Changes a member's state; `removed` is final.
    SetMemberState {
        id: NodeId,
        state: MemberState,
    },
    /// The desired placement of every partition.
    SetPlacement(Vec<Placement>),
    /// Records a member's zone (for nodes started without one).
    SetZone {
        id: NodeId,
        zone: String,
    },
}

impl MetaOp {
    /// Applies the change; an `Err` leaves the metadata unchanged.
    pub fn apply(self, meta: &mut Option<ClusterMeta>) -> Result<(), String> {
        match (self, meta.as_mut()) {
            (MetaOp::Bootstrap(m), None) => {
                *meta = Some(m);
                Ok(())
            }
            (MetaOp::Bootstrap(_), Some(m)) => Err(format!("cluster {} is already bootstrapped", m.cluster_id)),
            (_, None) => Err("cluster is not bootstrapped".into()),
            (MetaOp::Register(mut mem), Some(m)) => {
                if let Some(old) = m.members.get(&mem.id) {
                    mem.state = old.state;
                    // A node started without a zone keeps the one recorded for it.
                    if mem.zone.is_empty() {
                        mem.zone = old.zone.clone();
                    }
                }
                m.members.insert(mem.id, mem);
                Ok(())
            }
            (MetaOp::SetZone { id, zone }, Some(m)) => {
                let mem = m.members.get_mut(&id).ok_or_else(|| format!("node {id} is not a member"))?;
                mem.zone = zone;
                Ok(())
            }
            (MetaOp::SetDefaultRead(level), Some(m)) => {
                m.default_read = level;
                Ok(())
            }
            (MetaOp::SetMemberState { id, state }, Some(m)) => {
                let mem = m.members.get_mut(&id).ok_or_else(|| format!("node {id} is not a member"))?;
                if mem.state == MemberState::Removed && state != MemberState::Removed {
                    return Err(format!(
                        "node {} ({id}) was removed; a removed member cannot come back (it rejoins with a new id)",
                        mem.name
                    ));
                }
                mem.state = state;
                Ok(())
            }
            (MetaOp::SetPlacement(p), Some(m)) => {
                validate_placement(m, &p)?;
                for (i, (old, new)) in m.placement.iter().zip(&p).enumerate() {
                    let a: std::collections::BTreeSet<_> = old.replicas.iter().collect();
                    let b: std::collections::BTreeSet<_> = new.replicas.iter().collect();
                    if a != b {
                        m.moved.insert(i as u32);
                    }
                }
                m.placement = p;
                Ok(())
            }
        }
    }
}

/// Checks a desired placement against the cluster: one entry per partition,
/// each with RF distinct replicas on members that may hold replicas, and a
/// preferred leader among them.
pub fn validate_placement(m: &ClusterMeta, placement: &[Placement]) -> Result<(), String> {
    if placement.len() != m.partitions as usize {
        return Err(format!(
            "placement: {} entries given, the cluster has {} partitions",
            placement.len(),
            m.partitions
        ));
    }
    for (p, pl) in placement.iter().enumerate() {
        if pl.replicas.len() != m.replication_factor as usize {
            return Err(format!(
                "placement[{p}].replicas: {} replicas given, the replication factor is {}",
                pl.replicas.len(),
                m.replication_factor
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for r in &pl.replicas {
            if !seen.insert(r) {
                return Err(format!(
                    "placement[{p}].replicas: node {r} is listed twice; replicas must be on distinct nodes"
                ));
            }
            match m.members.get(r) {
                None => return Err(format!("placement[{p}].replicas: node {r} is not a member")),
                Some(mem) if !mem.state.holds_replicas() => {
                    return Err(format!(
                        "placement[{p}].replicas: node {} ({r}) is {} and may not hold replicas",
                        mem.name,
                        mem.state.as_str()
                    ))
                }
                Some(_) => {}
            }
        }
        if !pl.replicas.contains(&pl.preferred_leader) {
            return Err(format!(
                "placement[{p}].preferred_leader: node {} is not one of its replicas",
                pl.preferred_leader
            ));
        }
    }
    Ok(())
}

/// The initial placement: replicas of partition `p` on `rf` consecutive
/// nodes starting at `p`, preferring distinct zones, so replicas and leaders
/// spread evenly.
pub fn initial_placement(nodes: &[Member], partitions: u32, rf: u32) -> Vec<Placement> {
    let n = nodes.len();
    (0..partitions as usize)
        .map(|p| {
            let mut replicas: Vec<NodeId> = Vec::new();
            let mut zones: Vec<&str> = Vec::new();
            // First pass: distinct zones; second pass: fill up regardless.
            for distinct in [true, false] {
                for k in 0..n {
                    let m = &nodes[(p + k) % n];
                    if replicas.len() == rf as usize || replicas.contains(&m.id) {
                        continue;
                    }
                    if distinct && !m.zone.is_empty() && zones.contains(&m.zone.as_str()) {
                        continue;
                    }
                    replicas.push(m.id);
                    zones.push(&m.zone);
                }
            }
            Placement { preferred_leader: replicas[0], replicas }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: NodeId, zone: &str) -> Member {
        Member {
            id,
            name: format!("n{id}"),
            advertise: format!("127.0.0.1:{}", 7000 + id),
            zone: zone.into(),
            state: MemberState::Active,
            version: "0.1.0".into(),
            incarnation: format!("inc-{id}"),
        }
    }

    #[test]
    fn register_never_changes_a_members_state_after_the_first_registration() {
        let nodes: Vec<_> = (1..=3).map(|i| member(i, "z")).collect();
        let mut meta = Some(ClusterMeta {
            cluster_id: "c".into(),
            cluster_name: "c".into(),
            partitions: 1,
            replication_factor: 3,
            placement: initial_placement(&nodes, 1, 3),
            members: nodes.iter().map(|m| (m.id, m.clone())).collect(),
            default_read: ConsistencyLevel::Linearizable,
            moved: Default::default(),
        });
        MetaOp::SetMemberState { id: 2, state: MemberState::Draining }.apply(&mut meta).unwrap();
        // Node 2 re-registers with the view it had before the drain committed.
        let mut stale = member(2, "");
        stale.advertise = "127.0.0.1:9999".into();
        MetaOp::Register(stale).apply(&mut meta).unwrap();
        let m = &meta.as_ref().unwrap().members[&2];
        assert_eq!(m.state, MemberState::Draining, "the drain stands");
        assert_eq!(m.advertise, "127.0.0.1:9999", "the rest is updated");
        assert_eq!(m.zone, "z", "an empty zone keeps the recorded one");
        // A first registration takes the state it is given.
        let mut new = member(4, "");
        new.state = MemberState::Active;
        MetaOp::Register(new).apply(&mut meta).unwrap();
        assert_eq!(meta.as_ref().unwrap().members[&4].state, MemberState::Active);
    }

    #[test]
    fn initial_placement_spreads_replicas_and_leaders() {
        let nodes: Vec<_> = (1..=5).map(|i| member(i, "")).collect();
        let pl = initial_placement(&nodes, 10, 3);
        let mut replicas = BTreeMap::<NodeId, u32>::new();
        let mut leaders = BTreeMap::<NodeId, u32>::new();
        for p in &pl {
            let mut r = p.replicas.clone();
            r.sort();
            r.dedup();
            assert_eq!(r.len(), 3, "distinct replicas: {p:?}");
            assert!(p.replicas.contains(&p.preferred_leader));
            for id in &p.replicas {
                *replicas.entry(*id).or_default() += 1;
            }
            *leaders.entry(p.preferred_leader).or_default() += 1;
        }
        assert_eq!(replicas.values().copied().collect::<Vec<_>>(), vec![6; 5]);
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2; 5]);
    }

    #[test]
    fn initial_placement_uses_distinct_zones() {
        let nodes =
            vec![member(1, "a"), member(2, "a"), member(3, "b"), member(4, "b"), member(5, "c"), member(6, "c")];
        for p in initial_placement(&nodes, 12, 3) {
            let mut zones: Vec<_> = p.replicas.iter().map(|id| nodes[*id as usize - 1].zone.clone()).collect();
            zones.sort();
            assert_eq!(zones, vec!["a", "b", "c"], "{p:?}");
        }
    }

    fn meta3() -> ClusterMeta {
        let nodes: Vec<Member> = (1..=4).map(|i| member(i, "")).collect();
        ClusterMeta {
            cluster_id: "c".into(),
            cluster_name: "x".into(),
            partitions: 2,
            replication_factor: 3,
            placement: initial_placement(&nodes[..3], 2, 3),
            members: nodes.into_iter().map(|m| (m.id, m)).collect(),
            default_read: ConsistencyLevel::Linearizable,
            moved: Default::default(),
        }
    }

    #[test]
    fn bad_placements_are_refused_with_the_reason() {
        let mut m = Some(meta3());
        let good = m.as_ref().unwrap().placement.clone();
        let cases: Vec<(Vec<Placement>, &str)> = vec![
            (good[..1].to_vec(), "2 partitions"),
            (vec![Placement { replicas: vec![1, 2], preferred_leader: 1 }, good[1].clone()], "replication factor is 3"),
            (vec![Placement { replicas: vec![1, 1, 2], preferred_leader: 1 }, good[1].clone()], "listed twice"),
            (
                vec![Placement { replicas: vec![1, 2, 9], preferred_leader: 1 }, good[1].clone()],
                "node 9 is not a member",
            ),
            (vec![Placement { replicas: vec![1, 2, 3], preferred_leader: 4 }, good[1].clone()], "preferred_leader"),
        ];
        for (p, needle) in cases {
            let err = MetaOp::SetPlacement(p).apply(&mut m).unwrap_err();
            assert!(err.contains(needle), "{err} lacks {needle}");
        }
        MetaOp::SetMemberState { id: 4, state: MemberState::Failed }.apply(&mut m).unwrap();
        let on_failed = vec![Placement { replicas: vec![1, 2, 4], preferred_leader: 1 }, good[1].clone()];
        assert!(MetaOp::SetPlacement(on_failed).apply(&mut m).unwrap_err().contains("is failed"));
        assert_eq!(m.as_ref().unwrap().placement, good, "a refused placement changes nothing");
        MetaOp::SetMemberState { id: 4, state: MemberState::Removed }.apply(&mut m).unwrap();
        assert!(MetaOp::SetMemberState { id: 4, state: MemberState::Active }
            .apply(&mut m)
            .unwrap_err()
            .contains("removed"));
    }

    #[test]
    fn bootstrap_happens_once() {
        let m = ClusterMeta {
            cluster_id: "c1".into(),
            cluster_name: "x".into(),
            partitions: 1,
            replication_factor: 1,
            members: BTreeMap::new(),
            placement: vec![],
            default_read: ConsistencyLevel::Linearizable,
            moved: Default::default(),
        };
        let mut meta = None;
        MetaOp::Bootstrap(m.clone()).apply(&mut meta).unwrap();
        let mut other = m.clone();
        other.cluster_id = "c2".into();
        let err = MetaOp::Bootstrap(other).apply(&mut meta).unwrap_err();
        assert!(err.contains("already bootstrapped"));
        assert_eq!(meta.unwrap().cluster_id, "c1");
    }
}
