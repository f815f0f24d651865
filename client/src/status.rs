//! `keyraft status`: a readable table of nodes and partitions, assembled
//! from the Admin.Status of every member.

use std::collections::BTreeMap;
use std::fmt::Write;

use keyraft_api::pb;

/// Renders the cluster view of `statuses` (one per reachable node).
pub fn render(statuses: &[pb::StatusResponse]) -> String {
    let mut out = String::new();
    let Some(cluster) = statuses.iter().find_map(|s| s.cluster.clone()) else {
        let _ = writeln!(out, "no reachable node has joined a cluster yet");
        return out;
    };
    let _ = writeln!(
        out,
        "cluster {}  partitions {}  replication factor {}  default read {}",
        cluster.cluster_id,
        cluster.partitions,
        cluster.replication_factor,
        keyraft_api::ConsistencyLevel::from_wire(cluster.default_read)
            .ok()
            .flatten()
            .map_or("linearizable", |l| l.as_str())
    );
    // Per group: the leader's view wins; any replica's otherwise.
    let mut groups: BTreeMap<u64, (u64, pb::GroupStatus)> = BTreeMap::new();
    for s in statuses {
        let Some(n) = &s.node else { continue };
        for g in &s.groups {
            let better = match groups.get(&g.group) {
                None => true,
                Some((_, cur)) => g.role == "leader" || (cur.role != "leader" && g.term > cur.term),
            };
            if better {
                groups.insert(g.group, (n.id, g.clone()));
            }
        }
    }
    let name =
        |id: u64| cluster.members.iter().find(|m| m.id == id).map_or_else(|| format!("{id}"), |m| m.name.clone());
    let mut leaders: BTreeMap<u64, u32> = BTreeMap::new();
    let mut replicas: BTreeMap<u64, u32> = BTreeMap::new();
    for (g, (_, st)) in &groups {
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
    let _ = writeln!(out, "\nNODES");
    let _ = writeln!(
        out,
        "{:<14} {:<18} {:<22} {:<8} {:<16} {:<9} {:<6} {:>8} {:>7}",
        "NAME", "ID", "ADDRESS", "ZONE", "STATE", "VERSION", "READY", "REPLICAS", "LEADERS"
    );
    let mut members = cluster.members.clone();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    for m in &members {
        let r = match ready.get(&m.id) {
            Some(true) => "yes",
            Some(false) => "no",
            None => "?",
        };
        let _ = writeln!(
            out,
            "{:<14} {:<18} {:<22} {:<8} {:<16} {:<9} {:<6} {:>8} {:>7}",
            m.name,
            m.id,
            m.advertise,
            if m.zone.is_empty() { "-" } else { &m.zone },
            m.state,
            m.version,
            r,
            replicas.get(&m.id).copied().unwrap_or(0),
            leaders.get(&m.id).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(out, "\nPARTITIONS");
    let _ = writeln!(
        out,
        "{:<10} {:<14} {:>6} {:<44} {:>10} {:>8}",
        "PARTITION", "LEADER", "TERM", "REPLICAS", "APPLIED", "KEYS"
    );
    for p in &cluster.placement {
        let g = u64::from(p.partition) + 1;
        let (leader, term, applied, keys) = match groups.get(&g) {
            Some((_, st)) => {
                (if st.leader == 0 { "-".into() } else { name(st.leader) }, st.term, st.applied_index, st.keys)
            }
            None => ("?".into(), 0, 0, 0),
        };
        let reps: Vec<String> = p.replicas.iter().map(|r| name(*r)).collect();
        let _ = writeln!(
            out,
            "{:<10} {:<14} {:>6} {:<44} {:>10} {:>8}",
            p.partition,
            leader,
            term,
            reps.join(","),
            applied,
            keys
        );
    }
    out
}

fn names(cluster: Option<&pb::ClusterView>) -> impl Fn(u64) -> String + '_ {
    move |id| {
        cluster.and_then(|c| c.members.iter().find(|m| m.id == id)).map_or_else(|| id.to_string(), |m| m.name.clone())
    }
}

fn list(ids: &[u64], name: &impl Fn(u64) -> String) -> String {
    let mut v: Vec<String> = ids.iter().map(|i| name(*i)).collect();
    v.sort();
    v.join(",")
}

/// `keyraft admin rebalance`: the planned moves as a table.
pub fn render_moves(moves: &[pb::Move], cluster: Option<&pb::ClusterView>) -> String {
    let name = names(cluster);
    let mut out = String::new();
    if moves.is_empty() {
        let _ = writeln!(out, "placement is balanced; nothing to move");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<10} {:<32} {:<32} {:<14} {:<14}",
        "PARTITION", "REPLICAS NOW", "REPLICAS PLANNED", "LEADER NOW", "LEADER PLANNED"
    );
    for m in moves {
        let _ = writeln!(
            out,
            "{:<10} {:<32} {:<32} {:<14} {:<14}",
            m.partition,
            list(&m.from, &name),
            list(&m.to, &name),
            name(m.leader_from),
            name(m.leader_to)
        );
    }
    out
}

/// `keyraft placement`: desired replicas versus each group's actual voters.
pub fn render_placement(statuses: &[pb::StatusResponse]) -> String {
    let mut out = String::new();
    let Some(cluster) = statuses.iter().find_map(|s| s.cluster.clone()) else {
        let _ = writeln!(out, "no reachable node has joined a cluster yet");
        return out;
    };
    let name = names(Some(&cluster));
    let mut leaders: BTreeMap<u64, pb::GroupStatus> = BTreeMap::new();
    for s in statuses {
        for g in s.groups.iter().filter(|g| g.role == "leader") {
            leaders.insert(g.group, g.clone());
        }
    }
    let _ = writeln!(
        out,
        "{:<10} {:<32} {:<32} {:<14} {:<14} STATE",
        "PARTITION", "DESIRED", "ACTUAL VOTERS", "LEADER", "PREFERRED"
    );
    let mut moving = 0;
    for p in &cluster.placement {
        let (actual, learners, leader) = match leaders.get(&(u64::from(p.partition) + 1)) {
            Some(g) => (g.voters.clone(), g.learners.clone(), name(g.leader)),
            None => (vec![], vec![], "-".into()),
        };
        let mut want = p.replicas.clone();
        want.sort();
        let mut have = actual.clone();
        have.sort();
        let state = if want != have {
            moving += 1;
            if learners.is_empty() {
                "moving".to_string()
            } else {
                format!("moving (catching up: {})", list(&learners, &name))
            }
        } else if leader != name(p.preferred_leader) {
            "leader not preferred".into()
        } else {
            "in place".into()
        };
        let _ = writeln!(
            out,
            "{:<10} {:<32} {:<32} {:<14} {:<14} {}",
            p.partition,
            list(&p.replicas, &name),
            list(&actual, &name),
            leader,
            name(p.preferred_leader),
            state
        );
    }
    let _ = writeln!(out, "{moving} of {} partitions moving", cluster.placement.len());
    out
}
