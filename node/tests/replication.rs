//! Replication and durability with real node processes: bulk writes through
//! random nodes, restart of the whole cluster, catch-up by snapshot.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use keyraft_client::{Client, ConsistencyLevel};
use rand::Rng;

fn kv(i: u64) -> (String, String) {
    (format!("key-{i:06}"), format!("value-{i}-{}", i * 7919 % 1000))
}

/// Writes keys `range` through randomly chosen nodes (each node forwards to
/// the partition leader), `conc` at a time. Panics on any failed write.
async fn write_through_random_nodes(clients: &[Client], range: std::ops::Range<u64>, conc: usize) {
    let clients = Arc::new(clients.to_vec());
    stream::iter(range)
        .map(|i| {
            let clients = clients.clone();
            async move {
                let c = &clients[rand::rng().random_range(0..clients.len())];
                let (k, v) = kv(i);
                c.put(k.clone(), v).await.unwrap_or_else(|e| panic!("put {k}: {e}"));
            }
        })
        .buffer_unordered(conc)
        .collect::<Vec<_>>()
        .await;
}

/// Reads keys `range` from node client `c` at `level` and returns the
/// mismatches.
async fn mismatches(c: &Client, range: std::ops::Range<u64>, level: ConsistencyLevel) -> Vec<String> {
    stream::iter(range)
        .map(|i| {
            let c = c.clone();
            async move {
                let (k, v) = kv(i);
                match c.get(k.clone(), Some(level)).await {
                    Ok(Some(got)) if got == v.as_bytes() => None,
                    other => Some(format!("{k}: {other:?}")),
                }
            }
        })
        .buffer_unordered(64)
        .filter_map(|x| async move { x })
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_writes_through_random_nodes_read_back_linearizably_from_every_node() {
    let mut c = common::cluster("bulk", 3, 8, 3, &[]).await;
    let per_node: Vec<Client> = (0..3).map(|i| c.client_of(i).unwrap()).collect();
    let t = Instant::now();
    write_through_random_nodes(&per_node, 0..10_000, 64).await;
    eprintln!("10,000 writes through random nodes took {:.1?}", t.elapsed());
    for (i, client) in per_node.iter().enumerate() {
        let bad = mismatches(client, 0..10_000, ConsistencyLevel::Linearizable).await;
        assert!(bad.is_empty(), "node {i}: {} keys wrong, first: {:?}", bad.len(), &bad[..bad.len().min(5)]);
    }
    // Every partition got a share: the hash spreads keys.
    let st = common::status_of(&c, 0).await;
    for g in st.groups.iter().filter(|g| g.group > 0) {
        assert!(g.keys > 800, "partition {} holds only {} keys", g.group - 1, g.keys);
    }
    common::cleanup(&mut c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_a_full_stop_and_restart() {
    let mut c = common::cluster("restart", 3, 8, 3, &[]).await;
    let client = c.client().unwrap();
    write_through_random_nodes(std::slice::from_ref(&client), 0..2_000, 32).await;
    // kill -9 every node: nothing gets a chance to flush on the way out.
    for i in 0..3 {
        c.kill(i);
    }
    c.start_all().unwrap();
    c.wait_ready(&[0, 1, 2], common::READY).await.unwrap();
    let bad = mismatches(&c.client().unwrap(), 0..2_000, ConsistencyLevel::Linearizable).await;
    assert!(bad.is_empty(), "{} acknowledged writes lost after restart: {:?}", bad.len(), &bad[..bad.len().min(5)]);
    // And a clean stop (SIGTERM) then restart keeps them as well.
    c.stop_all();
    c.start_all().unwrap();
    c.wait_ready(&[0, 1, 2], common::READY).await.unwrap();
    let bad = mismatches(&c.client().unwrap(), 0..2_000, ConsistencyLevel::Linearizable).await;
    assert!(bad.is_empty(), "{} writes lost after clean restart", bad.len());
    common::cleanup(&mut c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_missed_compacted_writes_catches_up_by_snapshot() {
    let args = ["--snapshot-entries", "200", "--keep-entries", "20"];
    let mut c = common::cluster("snapshot", 3, 4, 3, &args).await;
    let before: BTreeMap<u64, u64> = common::status_of(&c, 2)
        .await
        .groups
        .iter()
        .filter(|g| g.group > 0)
        .map(|g| (g.group, g.last_log_index))
        .collect();
    c.kill(2);
    let client = c.client().unwrap();
    write_through_random_nodes(std::slice::from_ref(&client), 0..5_000, 32).await;
    // The survivors compacted their logs past where node 2 stopped, so the
    // log alone cannot bring it back.
    let st0 = common::status_of(&c, 0).await;
    for g in st0.groups.iter().filter(|g| g.group > 0) {
        assert!(
            g.purged_index > before[&g.group],
            "group {} not compacted: purged {} <= {}",
            g.group,
            g.purged_index,
            before[&g.group]
        );
    }
    c.start(2).unwrap();
    c.wait_ready(&[2], common::READY).await.unwrap();
    // Wait until node 2 applied what the leaders have.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = c.statuses().await;
        let lead: BTreeMap<u64, u64> = st
            .iter()
            .flat_map(|(_, s)| s.groups.iter())
            .filter(|g| g.role == "leader" && g.group > 0)
            .map(|g| (g.group, g.applied_index))
            .collect();
        let mine = st.iter().find(|(i, _)| *i == 2).map(|(_, s)| s.clone()).unwrap();
        let behind: Vec<_> = mine
            .groups
            .iter()
            .filter(|g| g.group > 0 && g.applied_index < lead.get(&g.group).copied().unwrap_or(u64::MAX))
            .collect();
        if behind.is_empty() {
            for g in mine.groups.iter().filter(|g| g.group > 0) {
                assert!(
                    g.snapshot_index > before[&g.group],
                    "group {}: no snapshot installed (snapshot index {})",
                    g.group,
                    g.snapshot_index
                );
            }
            break;
        }
        assert!(Instant::now() < deadline, "node 2 did not catch up: {behind:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Node 2 serves every key from its own replica.
    let bad = mismatches(&c.client_of(2).unwrap(), 0..5_000, ConsistencyLevel::Eventual).await;
    assert!(bad.is_empty(), "node 2 is missing {} keys after catch-up: {:?}", bad.len(), &bad[..bad.len().min(5)]);
    common::cleanup(&mut c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_moved_to_a_new_node_is_sent_no_faster_than_the_send_rate() {
    // 1 MiB/s: one snapshot chunk a second, each well within its timeout
    // (the wait is paid between chunks).
    const RATE: u64 = 1 << 20;
    const SENT: &str = "keyraft_rebalance_sent_bytes_total";
    let rate = RATE.to_string();
    let args = ["--snapshot-entries", "20", "--keep-entries", "5", "--snapshot-send-bytes-per-sec", &rate];
    let mut c = common::cluster("throttle", 3, 2, 3, &args).await;
    // About 6 MiB per partition, and logs compacted past their start: a new
    // replica catches up by snapshot.
    let value = |i: u64| vec![b'a' + (i % 26) as u8; 128 << 10];
    let client = c.client().unwrap();
    common::put_all(&client, (0..96u64).map(|i| (format!("big-{i:02}"), value(i))), 4, 1).await;
    let n = c.add_node().unwrap();
    c.wait_ready(&[n], common::READY).await.unwrap();
    let sent_before: f64 = (0..3).map(|i| common::metric(&c, i, SENT)).sum();

    let t = Instant::now();
    let plan = common::admin(&c)
        .await
        .rebalance(keyraft_api::pb::RebalanceRequest { dry_run: false, max_moves: 8 })
        .await
        .unwrap()
        .into_inner();
    assert!(plan.applied && !plan.moves.is_empty(), "rebalance planned nothing: {plan:?}");
    common::eventually("placement converged", Duration::from_secs(180), || common::placement_converged(&c)).await;
    let took = t.elapsed();
    let sent = ((0..3).map(|i| common::metric(&c, i, SENT)).sum::<f64>() - sent_before) as u64;
    assert!(sent >= 5 << 20, "the new replica must have caught up by snapshot; {sent} snapshot bytes were sent");
    // Every byte but the last chunk's waited for its turn.
    let floor = Duration::from_secs_f64(sent.saturating_sub(1 << 20) as f64 / RATE as f64);
    eprintln!("{} moves: {sent} snapshot bytes in {took:.1?} at {RATE} bytes/s (floor {floor:.1?})", plan.moves.len());
    assert!(
        took >= floor,
        "{sent} snapshot bytes were sent in {took:?}, faster than {RATE} bytes/s allows ({floor:?})"
    );
    // Nothing was lost on the way.
    let missing: Vec<u64> = stream::iter(0..96u64)
        .filter_map(|i| {
            let client = client.clone();
            async move {
                let got = client.get(format!("big-{i:02}"), Some(ConsistencyLevel::Linearizable)).await;
                (!got.is_ok_and(|g| g.as_deref() == Some(&value(i)[..]))).then_some(i)
            }
        })
        .collect()
        .await;
    assert!(missing.is_empty(), "values lost or wrong after the move: {missing:?}");
    common::cleanup(&mut c);
}
