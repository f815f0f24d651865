//! Cluster metadata kept by the meta group (group 0): the members, the
//! placement of every partition and cluster-wide settings.

use std::collections::BTreeMap;

use keyraft_api::ConsistencyLevel;
use serde::{Deserialize, Serialize};

use crate::types::NodeId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Active,
    Draining,
    Decommissioning,
    Failed,
    Removed,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Draining => "draining",
            Self::Decommissioning => "decommissioning",
            Self::Failed => "failed",
            Self::Removed => "removed",
        }
    }
}

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
    /// A node announces (or updates) its address, zone and version.
    Register(Member),
    SetDefaultRead(ConsistencyLevel),
}

impl MetaOp {
    /// Applies the change; an `Err` leaves the metadata unchanged.
    pub fn apply(self, meta: &mut Option<ClusterMeta>) -> Result<(), String> {
        match (self, meta.as_mut()) {
            (MetaOp::Bootstrap(m), None) => {
                *meta = Some(m);
                Ok(())
            }
            (MetaOp::Bootstrap(_), Some(m)) => {
                Err(format!("cluster {} is already bootstrapped", m.cluster_id))
            }
            (_, None) => Err("cluster is not bootstrapped".into()),
            (MetaOp::Register(mem), Some(m)) => {
                m.members.insert(mem.id, mem);
                Ok(())
            }
            (MetaOp::SetDefaultRead(level), Some(m)) => {
                m.default_read = level;
                Ok(())
            }
        }
    }
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
            Placement {
                preferred_leader: replicas[0],
                replicas,
            }
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
        let nodes = vec![
            member(1, "a"),
            member(2, "a"),
            member(3, "b"),
            member(4, "b"),
            member(5, "c"),
            member(6, "c"),
        ];
        for p in initial_placement(&nodes, 12, 3) {
            let mut zones: Vec<_> = p
                .replicas
                .iter()
                .map(|id| nodes[*id as usize - 1].zone.clone())
                .collect();
            zones.sort();
            assert_eq!(zones, vec!["a", "b", "c"], "{p:?}");
        }
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
