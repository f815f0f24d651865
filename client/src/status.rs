//! `keyraft status`, `keyraft placement` and `keyraft admin rebalance`:
//! views of the cluster assembled from the Admin.Status of every member that
//! answers, printable as a table or serialized (`-o json|yaml`).
//!
//! The cluster metadata comes from the freshest answer (highest meta-group
//! term, then highest applied meta index), never from whichever endpoint
//! happened to answer first, and the view says which node that was.

use std::collections::BTreeMap;
use std::fmt::Write;

use keyraft_api::pb;
use serde::Serialize;

use crate::output::Table;

/// The node whose cluster metadata a view shows.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    pub address: String,
    pub meta_term: u64,
    pub meta_applied_index: u64,
}

/// The answer whose cluster metadata is the most recent, with its source.
pub fn freshest(statuses: &[pb::StatusResponse]) -> Option<(&pb::ClusterView, Source)> {
    statuses
        .iter()
        .filter_map(|s| {
            let c = s.cluster.as_ref()?;
            let term = s.groups.iter().find(|g| g.group == keyraft_api::META_GROUP).map_or(0, |g| g.term);
            Some((c, s.node.as_ref(), term))
        })
        .max_by_key(|(c, _, term)| (*term, c.meta_applied_index))
        .map(|(c, n, term)| {
            let source = Source {
                name: n.map(|n| n.name.clone()).unwrap_or_default(),
                address: n.map(|n| n.advertise.clone()).unwrap_or_default(),
                meta_term: term,
                meta_applied_index: c.meta_applied_index,
            };
            (c, source)
        })
}

fn names(cluster: &pb::ClusterView) -> impl Fn(u64) -> String + '_ {
    move |id| cluster.members.iter().find(|m| m.id == id).map_or_else(|| id.to_string(), |m| m.name.clone())
}

fn sorted_names(ids: &[u64], name: &impl Fn(u64) -> String) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|i| name(*i)).collect();
    v.sort();
    v
}

fn source_line(s: &Source) -> String {
    format!("view of {} ({}), meta term {} applied index {}", s.name, s.address, s.meta_term, s.meta_applied_index)
}

#[derive(Debug, Serialize)]
pub struct StatusView {
    pub answered_by: Source,
    pub cluster_id: String,
    pub partitions: u32,
    pub replication_factor: u32,
    pub default_read: String,
    pub nodes: Vec<NodeRow>,
    pub partition_status: Vec<PartitionRow>,
}

#[derive(Debug, Serialize)]
pub struct NodeRow {
    pub name: String,
    pub id: u64,
    pub address: String,
    pub zone: String,
    pub state: String,
    pub version: String,
    /// Absent when the node did not answer.
    pub ready: Option<bool>,
    pub replicas: u32,
    pub leaders: u32,
}

#[derive(Debug, Serialize)]
pub struct PartitionRow {
    pub partition: u32,
    /// Absent when no answering replica knows a leader.
    pub leader: Option<String>,
    pub term: u64,
    pub replicas: Vec<String>,
    pub applied_index: u64,
    pub keys: u64,
}

/// The cluster view of `statuses` (one per reachable node); `None` when no
/// reachable node has joined a cluster.
pub fn status_view(statuses: &[pb::StatusResponse]) -> Option<StatusView> {
    let (cluster, source) = freshest(statuses)?;
    // Per group: the leader's view wins; any replica's otherwise.
    let mut groups: BTreeMap<u64, pb::GroupStatus> = BTreeMap::new();
    for s in statuses.iter().filter(|s| s.node.is_some()) {
        for g in &s.groups {
            let better = match groups.get(&g.group) {
                None => true,
                Some(cur) => g.role == "leader" || (cur.role != "leader" && g.term > cur.term),
            };
            if better {
                groups.insert(g.group, g.clone());
            }
        }
    }
    let name = names(cluster);
    let mut leaders: BTreeMap<u64, u32> = BTreeMap::new();
    let mut replicas: BTreeMap<u64, u32> = BTreeMap::new();
    for (g, st) in &groups {
        if *g > 0 && st.leader != 0 {
            *leaders.entry(st.leader).or_default() += 1;
        }
    }
    for p in &cluster.placement {
        for r in &p.replicas {
            *replicas.entry(*r).or_default() += 1;
        }
    }
    let ready: BTreeMap<u64, bool> = statuses.iter().filter_map(|s| s.node.as_ref()).map(|n| (n.id, n.ready)).collect();
    let mut members = cluster.members.clone();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let nodes = members
        .iter()
        .map(|m| NodeRow {
            name: m.name.clone(),
            id: m.id,
            address: m.advertise.clone(),
            zone: m.zone.clone(),
            state: m.state.clone(),
            version: m.version.clone(),
            ready: ready.get(&m.id).copied(),
            replicas: replicas.get(&m.id).copied().unwrap_or(0),
            leaders: leaders.get(&m.id).copied().unwrap_or(0),
        })
        .collect();
    let partition_status = cluster
        .placement
        .iter()
        .map(|p| {
            let st = groups.get(&keyraft_api::group_of_partition(p.partition));
            PartitionRow {
                partition: p.partition,
                leader: st.filter(|s| s.leader != 0).map(|s| name(s.leader)),
                term: st.map_or(0, |s| s.term),
                replicas: p.replicas.iter().map(|r| name(*r)).collect(),
                applied_index: st.map_or(0, |s| s.applied_index),
                keys: st.map_or(0, |s| s.keys),
            }
        })
        .collect();
    Some(StatusView {
        answered_by: source,
        cluster_id: cluster.cluster_id.clone(),
        partitions: cluster.partitions,
        replication_factor: cluster.replication_factor,
        default_read: keyraft_api::ConsistencyLevel::from_wire(cluster.default_read)
            .ok()
            .flatten()
            .map_or("linearizable", |l| l.as_str())
            .to_string(),
        nodes,
        partition_status,
    })
}

pub const NO_CLUSTER: &str = "no reachable node has joined a cluster yet\n";

impl StatusView {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "cluster {}  partitions {}  replication factor {}  default read {}\n{}",
            self.cluster_id,
            self.partitions,
            self.replication_factor,
            self.default_read,
            source_line(&self.answered_by)
        );
        let mut t =
            Table::new(&["NAME", "ID", "ADDRESS", "ZONE", "STATE", "VERSION", "READY", ">REPLICAS", ">LEADERS"]);
        for n in &self.nodes {
            t.row(vec![
                n.name.clone(),
                n.id.to_string(),
                n.address.clone(),
                if n.zone.is_empty() { "-".into() } else { n.zone.clone() },
                n.state.clone(),
                n.version.clone(),
                match n.ready {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "?",
                }
                .into(),
                n.replicas.to_string(),
                n.leaders.to_string(),
            ]);
        }
        let _ = write!(out, "\nNODES\n{}", t.render());
        let mut t = Table::new(&["PARTITION", "LEADER", ">TERM", "REPLICAS", ">APPLIED", ">KEYS"]);
        for p in &self.partition_status {
            t.row(vec![
                p.partition.to_string(),
                p.leader.clone().unwrap_or_else(|| "-".into()),
                p.term.to_string(),
                p.replicas.join(","),
                p.applied_index.to_string(),
                p.keys.to_string(),
            ]);
        }
        let _ = write!(out, "\nPARTITIONS\n{}", t.render());
        out
    }
}

#[derive(Debug, Serialize)]
pub struct MovesView {
    pub moves: Vec<MoveRow>,
}

#[derive(Debug, Serialize)]
pub struct MoveRow {
    pub partition: u32,
    pub replicas_now: Vec<String>,
    pub replicas_planned: Vec<String>,
    pub leader_now: String,
    pub leader_planned: String,
}

/// `keyraft admin rebalance`: the planned moves.
pub fn moves_view(moves: &[pb::Move], cluster: Option<&pb::ClusterView>) -> MovesView {
    let empty = pb::ClusterView::default();
    let name = names(cluster.unwrap_or(&empty));
    MovesView {
        moves: moves
            .iter()
            .map(|m| MoveRow {
                partition: m.partition,
                replicas_now: sorted_names(&m.from, &name),
                replicas_planned: sorted_names(&m.to, &name),
                leader_now: name(m.leader_from),
                leader_planned: name(m.leader_to),
            })
            .collect(),
    }
}

impl MovesView {
    pub fn table(&self) -> String {
        if self.moves.is_empty() {
            return "placement is balanced; nothing to move\n".into();
        }
        let mut t = Table::new(&["PARTITION", "REPLICAS NOW", "REPLICAS PLANNED", "LEADER NOW", "LEADER PLANNED"]);
        for m in &self.moves {
            t.row(vec![
                m.partition.to_string(),
                m.replicas_now.join(","),
                m.replicas_planned.join(","),
                m.leader_now.clone(),
                m.leader_planned.clone(),
            ]);
        }
        t.render()
    }
}

#[derive(Debug, Serialize)]
pub struct PlacementView {
    pub answered_by: Source,
    pub partitions: Vec<PlacementRow>,
    pub moving: usize,
}

/// Where a partition stands against its desired placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementState {
    InPlace,
    LeaderNotPreferred,
    Moving,
}

impl PlacementState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InPlace => "in place",
            Self::LeaderNotPreferred => "leader not preferred",
            Self::Moving => "moving",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PlacementRow {
    pub partition: u32,
    pub desired: Vec<String>,
    pub actual_voters: Vec<String>,
    /// Replicas being added, still catching up.
    pub learners: Vec<String>,
    pub leader: Option<String>,
    pub preferred_leader: String,
    pub state: PlacementState,
}

/// `keyraft placement`: desired replicas versus each group's actual voters.
pub fn placement_view(statuses: &[pb::StatusResponse]) -> Option<PlacementView> {
    let (cluster, source) = freshest(statuses)?;
    let name = names(cluster);
    let mut leaders: BTreeMap<u64, pb::GroupStatus> = BTreeMap::new();
    for s in statuses {
        for g in s.groups.iter().filter(|g| g.role == "leader") {
            // Two answers may both claim a group during an election: the higher term is current.
            if leaders.get(&g.group).is_none_or(|cur| g.term > cur.term) {
                leaders.insert(g.group, g.clone());
            }
        }
    }
    let partitions: Vec<PlacementRow> = cluster
        .placement
        .iter()
        .map(|p| {
            let g = leaders.get(&keyraft_api::group_of_partition(p.partition));
            let (actual, learners) = g.map_or((vec![], vec![]), |g| (g.voters.clone(), g.learners.clone()));
            let leader = g.map(|g| name(g.leader));
            let (mut want, mut have) = (p.replicas.clone(), actual.clone());
            want.sort();
            have.sort();
            let state = if want != have {
                PlacementState::Moving
            } else if leader.as_deref() != Some(name(p.preferred_leader).as_str()) {
                PlacementState::LeaderNotPreferred
            } else {
                PlacementState::InPlace
            };
            PlacementRow {
                partition: p.partition,
                desired: sorted_names(&p.replicas, &name),
                actual_voters: sorted_names(&actual, &name),
                learners: sorted_names(&learners, &name),
                leader,
                preferred_leader: name(p.preferred_leader),
                state,
            }
        })
        .collect();
    let moving = partitions.iter().filter(|p| p.state == PlacementState::Moving).count();
    Some(PlacementView { answered_by: source, partitions, moving })
}

impl PlacementView {
    pub fn table(&self) -> String {
        let mut t = Table::new(&["PARTITION", "DESIRED", "ACTUAL VOTERS", "LEADER", "PREFERRED", "STATE"]);
        for p in &self.partitions {
            let state = if p.state == PlacementState::Moving && !p.learners.is_empty() {
                format!("moving (catching up: {})", p.learners.join(","))
            } else {
                p.state.as_str().to_string()
            };
            t.row(vec![
                p.partition.to_string(),
                p.desired.join(","),
                p.actual_voters.join(","),
                p.leader.clone().unwrap_or_else(|| "-".into()),
                p.preferred_leader.clone(),
                state,
            ]);
        }
        format!(
            "{}\n{}{} of {} partitions moving\n",
            source_line(&self.answered_by),
            t.render(),
            self.moving,
            self.partitions.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(name: &str, meta_term: u64, applied: u64, members: &[&str]) -> pb::StatusResponse {
        pb::StatusResponse {
            node: Some(pb::NodeInfo { name: name.into(), advertise: format!("{name}:7000"), ..Default::default() }),
            groups: vec![pb::GroupStatus { group: 0, term: meta_term, ..Default::default() }],
            cluster: Some(pb::ClusterView {
                cluster_id: "c".into(),
                meta_applied_index: applied,
                members: members
                    .iter()
                    .enumerate()
                    .map(|(i, m)| pb::MemberRecord { id: i as u64 + 1, name: m.to_string(), ..Default::default() })
                    .collect(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_freshest_metadata_wins_whatever_the_order() {
        let stale = answer("a", 3, 90, &["a", "b"]);
        let newer_index = answer("b", 3, 120, &["a", "b", "c"]);
        let newer_term = answer("c", 4, 10, &["a", "b", "c", "d"]);
        for order in [
            vec![stale.clone(), newer_index.clone(), newer_term.clone()],
            vec![newer_term.clone(), stale.clone(), newer_index.clone()],
        ] {
            let v = status_view(&order).unwrap();
            assert_eq!(v.answered_by.name, "c", "a higher meta term beats a higher index");
            assert_eq!(v.nodes.len(), 4);
        }
        let v = status_view(&[stale.clone(), newer_index.clone()]).unwrap();
        assert_eq!((v.answered_by.name.as_str(), v.answered_by.meta_applied_index), ("b", 120));
        assert!(v.table().contains("view of b (b:7000), meta term 3 applied index 120"), "{}", v.table());
        assert!(status_view(&[pb::StatusResponse::default()]).is_none());
    }

    #[test]
    fn status_serializes_with_stable_field_names() {
        let v = status_view(&[answer("a", 1, 5, &["a"])]).unwrap();
        let j: serde_json::Value =
            serde_json::from_str(&crate::output::structured(&v, crate::output::Format::Json).unwrap()).unwrap();
        assert_eq!(j["answered_by"]["name"], "a");
        assert_eq!(j["nodes"][0]["name"], "a");
        assert!(j["nodes"][0]["ready"].is_null(), "a member that did not answer has no readiness");
    }
}
