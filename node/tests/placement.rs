//! Declarative placement with real node processes, under client load:
//! scale-out and rebalance, decommission, drain, failure of a node and its
//! return as a new incarnation, and a crash of the node driving a change.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{eventually, Load};
use keyraft_api::pb;
use keyraft_client::local::LocalCluster;

const CONVERGE: Duration = Duration::from_secs(120);

/// Node index -> (partition replicas held, partitions led), from the groups
/// each node actually runs.
async fn holdings(c: &LocalCluster) -> BTreeMap<usize, (usize, usize)> {
    c.statuses()
        .await
        .into_iter()
        .map(|(i, s)| {
            let parts = s.groups.iter().filter(|g| g.group > 0);
            let held = parts.clone().count();
            let led = parts.filter(|g| g.role == "leader").count();
            (i, (held, led))
        })
        .collect()
}

async fn id_of(c: &LocalCluster, i: usize) -> u64 {
    c.wait_live(i, Duration::from_secs(10)).await.unwrap().id
}

async fn set_state(c: &LocalCluster, id: u64, state: &str) {
    common::admin(c)
        .await
        .set_member_state(pb::SetMemberStateRequest { id, name: String::new(), state: state.into() })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_out_three_to_five_under_load_spreads_replicas_and_leaders() {
    let mut c = common::cluster("scaleout", 3, 8, 3, &[]).await;
    let load = Load::start(c.client().unwrap(), 4, 2, "so");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a = c.add_node().unwrap();
    let b = c.add_node().unwrap();
    c.wait_ready(&[a, b], common::READY).await.unwrap();
    let t = Instant::now();
    let plan = common::admin(&c)
        .await
        .rebalance(pb::RebalanceRequest { dry_run: false, max_moves: 8 })
        .await
        .unwrap()
        .into_inner();
    assert!(plan.applied && !plan.moves.is_empty(), "rebalance planned nothing: {plan:?}");
    eventually("placement converged", CONVERGE, || common::placement_converged(&c)).await;
    eventually("every node holds replicas and leads", CONVERGE, || async {
        let h = holdings(&c).await;
        let held: Vec<usize> = h.values().map(|v| v.0).collect();
        match h.iter().find(|(_, (held, led))| *held == 0 || *led == 0) {
            Some((i, v)) => Err(format!("node {i} holds/leads {v:?}; all: {h:?}")),
            None if h.len() < 5 => Err(format!("only {} nodes answer", h.len())),
            // Removed replicas are deleted shortly after their move commits.
            None if held.iter().max().unwrap() - held.iter().min().unwrap() > 1 => {
                Err(format!("replicas uneven: {h:?}"))
            }
            None => Ok(()),
        }
    })
    .await;
    let took = t.elapsed();
    let h = holdings(&c).await;
    let (acked, retries) = load.finish(&c).await;
    eprintln!("scale-out 3->5: rebalanced {} partitions in {took:.1?} under load; {acked} writes acknowledged, {retries} client retries; holdings {h:?}", plan.moves.len());
    common::cleanup(&mut c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decommissioning_two_of_five_empties_and_removes_them_without_losing_data() {
    let mut c = common::cluster("decom", 5, 8, 3, &[]).await;
    let load = Load::start(c.client_of(0).unwrap(), 4, 2, "dc");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let gone = [id_of(&c, 3).await, id_of(&c, 4).await];
    for id in gone {
        set_state(&c, id, "decommissioning").await;
    }
    eventually("decommissioned nodes emptied and removed", CONVERGE, || async {
        common::placement_converged(&c).await?;
        let h = holdings(&c).await;
        for i in [3, 4] {
            if h.get(&i).is_some_and(|v| v.0 > 0) {
                return Err(format!("node {i} still holds {:?}", h[&i]));
            }
        }
        let st = common::status_of(&c, 0).await;
        let view = st.cluster.clone().unwrap();
        for id in gone {
            let m = view.members.iter().find(|m| m.id == id).unwrap();
            if m.state != "removed" {
                let meta = st.groups.iter().find(|g| g.group == 0);
                return Err(format!("node {id} is {}; meta group seen by node 0: {meta:?}", m.state));
            }
        }
        Ok(())
    })
    .await;
    let (acked, retries) = load.finish(&c).await;
    eprintln!("decommission 2 of 5: {acked} writes acknowledged, {retries} client retries, reads all linearizable");
    common::cleanup(&mut c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_node_gives_up_every_leadership_and_undrain_restores_balance() {
    let mut c = common::cluster("drain", 3, 8, 3, &[]).await;
    let id = id_of(&c, 0).await;
    set_state(&c, id, "draining").await;
    let t = Instant::now();
    eventually("node 0 leads nothing", Duration::from_secs(60), || async {
        match holdings(&c).await.get(&0) {
            Some((_, 0)) => Ok(()),
            other => Err(format!("node 0 holds/leads {other:?}")),
        }
    })
    .await;
    eprintln!("drain: node 0 handed over its leaderships in {:.1?}", t.elapsed());
    assert_eq!(holdings(&c).await[&0].0, 8, "draining must keep replicas");
    set_state(&c, id, "active").await;
    eventually("leaders balanced again", Duration::from_secs(60), || async {
        let h = holdings(&c).await;
        let led: Vec<usize> = h.values().map(|v| v.1).collect();
        if led.len() == 3 && led.iter().max().unwrap() - led.iter().min().unwrap() <= 1 {
            Ok(())
        } else {
            Err(format!("leaders {h:?}"))
        }
    })
    .await;
    common::cleanup(&mut c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_node_is_replaced_and_returns_as_a_new_incarnation() {
    let mut c = common::cluster("failed", 4, 4, 3, &[]).await;
    let load = Load::start(c.client_of(0).unwrap(), 3, 1, "fl");
    let old = id_of(&c, 3).await;
    c.kill(3);
    set_state(&c, old, "failed").await;
    let in_any_membership = |st: &[(usize, pb::StatusResponse)], id: u64| {
        st.iter().flat_map(|(_, s)| s.groups.iter()).any(|g| g.voters.contains(&id) || g.learners.contains(&id))
    };
    eventually("replicas re-created elsewhere", CONVERGE, || async {
        common::placement_converged(&c).await?;
        let st = c.statuses().await;
        if in_any_membership(&st, old) {
            Err(format!("node {old} still in a membership"))
        } else {
            Ok(())
        }
    })
    .await;
    // The volume is lost: it comes back empty and joins under a new id.
    c.wipe(3).unwrap();
    let seeds: Vec<String> = c.endpoints()[..3].to_vec();
    c.set_join(3, seeds);
    c.start(3).unwrap();
    c.wait_ready(&[3], common::READY).await.unwrap();
    let new = id_of(&c, 3).await;
    assert_ne!(new, old, "a node with lost data must not reuse its id");
    common::admin(&c).await.rebalance(pb::RebalanceRequest { dry_run: false, max_moves: 8 }).await.unwrap();
    eventually("new incarnation takes replicas; old id is gone", CONVERGE, || async {
        common::placement_converged(&c).await?;
        let st = c.statuses().await;
        let view = st.iter().find_map(|(_, s)| s.cluster.clone()).unwrap();
        let state = |id| view.members.iter().find(|m| m.id == id).map(|m| m.state.clone());
        if in_any_membership(&st, old) {
            return Err(format!("old id {old} still in a membership"));
        }
        if state(old).as_deref() != Some("removed") || state(new).as_deref() != Some("active") {
            return Err(format!("old {:?}, new {:?}", state(old), state(new)));
        }
        if !view.placement.iter().any(|p| p.replicas.contains(&new)) {
            return Err("new incarnation holds no replica yet".into());
        }
        Ok(())
    })
    .await;
    load.finish(&c).await;
    common::cleanup(&mut c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_driving_a_membership_change_loses_nothing() {
    let mut c = common::cluster("midmove", 4, 2, 3, &[]).await;
    let load = Load::start(c.client_of(1).unwrap(), 3, 1, "mm");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Partition 0: swap one follower for the node that holds no replica of it.
    let st = c.statuses().await;
    let view = st.iter().find_map(|(_, s)| s.cluster.clone()).unwrap();
    let leader_id =
        st.iter().flat_map(|(_, s)| s.groups.iter()).find(|g| g.group == 1 && g.role == "leader").unwrap().leader;
    let leader_idx = common::index_of(&c, leader_id).await.unwrap();
    let mut all = BTreeSet::new();
    for i in 0..4 {
        all.insert(c.wait_live(i, Duration::from_secs(10)).await.unwrap().id);
    }
    let p0 = &view.placement[0];
    let spare =
        *all.iter().find(|id| !p0.replicas.contains(id)).unwrap_or_else(|| panic!("no spare among {all:?} for {p0:?}"));
    let dropped = *p0.replicas.iter().find(|id| **id != leader_id).unwrap();
    let mut placement = view.placement.clone();
    placement[0].replicas = p0.replicas.iter().map(|r| if *r == dropped { spare } else { *r }).collect();
    placement[0].preferred_leader = leader_id;
    common::admin(&c).await.set_placement(pb::SetPlacementRequest { placement }).await.unwrap();
    // Let the move start, then kill the leader driving it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    c.kill(leader_idx);
    eventually("the move completes under a new leader", CONVERGE, || common::placement_converged(&c)).await;
    c.start(leader_idx).unwrap();
    c.wait_ready(&[0, 1, 2, 3], common::READY).await.unwrap();
    eventually("converged with every node back", CONVERGE, || common::placement_converged(&c)).await;
    load.finish(&c).await;
    common::cleanup(&mut c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_placement_is_refused_with_the_reason() {
    let mut c = common::cluster("badplace", 3, 2, 3, &[]).await;
    let view = common::status_of(&c, 0).await.cluster.unwrap();
    let mut placement = view.placement.clone();
    placement[0].replicas = vec![placement[0].replicas[0], placement[0].replicas[0], placement[0].replicas[1]];
    let err = common::admin(&c).await.set_placement(pb::SetPlacementRequest { placement }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("listed twice"), "{}", err.message());
    let mut short = view.placement.clone();
    short[1].replicas.pop();
    let err = common::admin(&c).await.set_placement(pb::SetPlacementRequest { placement: short }).await.unwrap_err();
    assert!(err.message().contains("replication factor is 3"), "{}", err.message());
    let err = common::admin(&c)
        .await
        .set_member_state(pb::SetMemberStateRequest { id: 0, name: "nobody".into(), state: "draining".into() })
        .await
        .unwrap_err();
    assert!(err.message().contains("nobody"), "{}", err.message());
    common::cleanup(&mut c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_member_refuses_kv_and_admin_calls_and_clients_move_on() {
    let mut c = common::cluster("removed", 4, 2, 3, &[]).await;
    let client = c.client().unwrap();
    client.put("before", "1").await.unwrap();
    let gone = id_of(&c, 3).await;
    set_state(&c, gone, "decommissioning").await;
    eventually("node 3 removed", CONVERGE, || async {
        common::placement_converged(&c).await?;
        let view = common::status_of(&c, 0).await.cluster.unwrap();
        match view.members.iter().find(|m| m.id == gone) {
            Some(m) if m.state == "removed" => Ok(()),
            other => Err(format!("node 3 is {other:?}")),
        }
    })
    .await;
    let addr = c.nodes[3].grpc.to_string();
    // Node 3 may not have heard of its final state (it left the meta group
    // first): it names the state it knows, but never serves its stale view.
    let named = |m: &str| m.contains("node-3") && (m.contains("is removed") || m.contains("is decommissioning"));
    eventually("node 3 refuses Kv and Admin calls", CONVERGE, || async {
        let kv = client.get_from(&addr, "before", keyraft_client::ConsistencyLevel::Eventual, "").await;
        let st = client.admin(&addr).unwrap().status(pb::StatusRequest {}).await;
        match (kv, st) {
            (Err(k), Err(s))
                if k.code() == tonic::Code::FailedPrecondition
                    && s.code() == tonic::Code::FailedPrecondition
                    && named(k.message())
                    && named(s.message()) =>
            {
                Ok(())
            }
            (kv, st) => Err(format!("kv: {kv:?}; status: {:?}", st.map(|s| s.into_inner().cluster))),
        }
    })
    .await;
    // A client that knows only the removed node and one live node works and
    // is never shown the removed node's view.
    let mut opts = c.client_options();
    opts.endpoints = vec![addr.clone(), c.nodes[0].grpc.to_string()];
    opts.follow_leader_hints = false;
    let mixed = keyraft_client::Client::new(opts).unwrap();
    for i in 0..10 {
        mixed.put(format!("after-{i}"), "v").await.unwrap();
        assert_eq!(mixed.get("before", None).await.unwrap().as_deref(), Some(&b"1"[..]));
        let view = mixed.cluster_status().await.unwrap().cluster.unwrap();
        let m = view.members.iter().find(|m| m.id == gone).unwrap();
        assert_eq!(m.state, "removed", "round {i}: a stale view was shown");
    }
    common::cleanup(&mut c);
}

/// `removed` tells the operator that a member's volume may go, so it must
/// not be said while a partition still counts the member in its quorums:
/// at the first view that shows the member removed, every partition's
/// leader has already committed a membership without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_is_removed_only_once_every_partition_committed_its_departure() {
    let mut c = common::cluster("rmgate", 4, 8, 3, &[]).await;
    let load = Load::start(c.client_of(0).unwrap(), 4, 2, "rg");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let gone = id_of(&c, 3).await;
    set_state(&c, gone, "decommissioning").await;
    let deadline = Instant::now() + CONVERGE;
    loop {
        let view = common::status_of(&c, 0).await.cluster.unwrap();
        if view.members.iter().any(|m| m.id == gone && m.state == "removed") {
            break;
        }
        assert!(Instant::now() < deadline, "node 3 not removed within {CONVERGE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Memberships only move forward, so a leader seen after that moment
    // must not list the member either; look until each partition was seen.
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 8 {
        for (i, s) in c.statuses().await {
            for g in s.groups.iter().filter(|g| g.group > 0 && g.role == "leader") {
                assert!(
                    !g.voters.contains(&gone) && !g.learners.contains(&gone),
                    "node 3 was reported removed while group {} (led by node {i}) still has it: voters {:?} learners {:?}",
                    g.group,
                    g.voters,
                    g.learners
                );
                seen.insert(g.group);
            }
        }
        assert!(Instant::now() < deadline, "only groups {seen:?} showed a leader");
    }
    let (acked, _) = load.finish(&c).await;
    eprintln!("removal gated on partition memberships: {acked} writes acknowledged, none lost");
    common::cleanup(&mut c);
}
