//! Faults under load: kill -9 of the node leading the most partitions, while
//! clients write; a leader that stops answering while writes go through a
//! follower. No acknowledged write may be lost; writes must resume.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyraft_api::partition_for_key;
use keyraft_client::ConsistencyLevel;

struct Ack {
    key: String,
    value: String,
    started: Instant,
    acked: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_leaders_under_load_loses_no_acknowledged_write() {
    let mut c = common::cluster("faults", 3, 8, 3, &[]).await;
    let client = c.client().unwrap();
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, acks, stop) = (client.clone(), acks.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut failed = 0u32;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (key, value) = (format!("w{w}-{n:06}"), format!("v{n}"));
                let started = Instant::now();
                match client.put(key.clone(), value.clone()).await {
                    Ok(_) => acks.lock().unwrap().push(Ack { key, value, started, acked: Instant::now() }),
                    // Not acknowledged: the write may or may not have happened.
                    Err(_) => failed += 1,
                }
                n += 1;
            }
            failed
        }));
    }
    let mut resume_ms = Vec::new();
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (victim, led) = common::busiest_leader(&c).await;
        let killed_at = Instant::now();
        c.kill(victim);
        // Writes to the partitions it led must be acknowledged again.
        let deadline = killed_at + Duration::from_secs(30);
        let resumed = loop {
            let first = acks
                .lock()
                .unwrap()
                .iter()
                .filter(|a| a.started >= killed_at && led.contains(&partition_for_key(a.key.as_bytes(), 8)))
                .map(|a| a.acked)
                .min();
            if let Some(t) = first {
                break t;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: writes to partitions {led:?} did not resume within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let ms = resumed.duration_since(killed_at).as_millis();
        eprintln!(
            "round {round}: killed node {victim} leading partitions {led:?}; writes to them resumed after {ms} ms"
        );
        resume_ms.push(ms);
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.start(victim).unwrap();
        c.wait_ready(&[0, 1, 2], common::READY).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let mut failed = 0;
    for w in writers {
        failed += w.await.unwrap();
    }
    let acks = std::mem::take(&mut *acks.lock().unwrap());
    eprintln!(
        "{} writes acknowledged, {failed} not acknowledged, {} client retries; resume times {resume_ms:?} ms",
        acks.len(),
        client.stats().retries.load(Ordering::Relaxed)
    );
    assert!(acks.len() > 100, "too little load to mean anything: {}", acks.len());
    let reader = c.client().unwrap();
    let mut lost = Vec::new();
    for a in &acks {
        match reader.get(a.key.clone(), Some(ConsistencyLevel::Linearizable)).await {
            Ok(Some(v)) if v == a.value.as_bytes() => {}
            other => lost.push(format!("{}: {other:?}", a.key)),
        }
    }
    assert!(lost.is_empty(), "{} acknowledged writes lost: {:?}", lost.len(), &lost[..lost.len().min(5)]);
    common::cleanup(&mut c);
}

/// A partition leader that stops answering (SIGSTOP: its sockets stay open,
/// nothing is refused) while a client writes through a follower: the
/// follower forwards to the stopped leader once, then waits for the next
/// leader instead of dialling the silent one again, so every write is
/// answered within the client's single attempt (4 s) and blames no node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_a_follower_are_answered_within_one_attempt_while_the_leader_is_stopped() {
    let mut c = common::cluster("stopped-leader", 3, 1, 3, &[]).await;
    let leader = loop {
        if let Some((i, _)) = common::leaders(&c).await.into_iter().next() {
            break i;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let via = (leader + 1) % 3;
    let mut o = c.client_options();
    o.endpoints = vec![c.endpoints()[via].clone()];
    o.follow_leader_hints = false;
    // One attempt: a write the node cannot answer within it fails here.
    o.timeout = o.attempt_timeout;
    let client = keyraft_client::Client::new(o).unwrap();
    client.put("before", "1").await.expect("a write through the follower");

    c.pause(leader);
    let mut slowest = Duration::ZERO;
    let mut acked = Vec::new();
    for n in 0..10 {
        let (key, value) = (format!("k{n:03}"), format!("v{n}"));
        let t = Instant::now();
        let res = client.put(key.clone(), value.clone()).await;
        slowest = slowest.max(t.elapsed());
        res.unwrap_or_else(|e| panic!("write {n} through node {via} with node {leader} stopped: {e}"));
        acked.push((key, value));
    }
    eprintln!("leader node {leader} stopped; 10 writes through node {via}, slowest {slowest:?}");
    c.resume(leader);
    let reader = c.client().unwrap();
    for (key, value) in &acked {
        let got = reader.get(key.clone(), Some(ConsistencyLevel::Linearizable)).await.unwrap();
        assert_eq!(got.as_deref(), Some(value.as_bytes()), "{key}");
    }
    common::cleanup(&mut c);
}

/// The partition's term as its leader reports it.
#[cfg(feature = "failpoints")]
async fn partition_term(c: &keyraft_client::local::LocalCluster, nodes: &[usize]) -> Option<u64> {
    let st = c.statuses().await;
    st.iter()
        .filter(|(i, _)| nodes.contains(i))
        .flat_map(|(_, s)| s.groups.iter())
        .find(|g| g.group == 1 && g.role == "leader")
        .map(|g| g.term)
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_voter_catching_up_by_a_long_snapshot_is_not_pushed_into_elections() {
    // Logs compacted every 20 entries: the restarted voter needs a snapshot.
    let args = ["--snapshot-entries", "20", "--keep-entries", "5"];
    let mut c = common::cluster("slowsnap", 3, 1, 3, &args).await;
    c.kill(2);
    let value = |i: u64| common::incompressible(i, 128 << 10);
    let client = c.client().unwrap();
    common::put_all(&client, (0..96u64).map(|i| (format!("snap-{i:02}"), value(i))), 4, 1).await;
    let term = partition_term(&c, &[0, 1]).await.expect("partition 0 has a leader");
    // Each 1 MiB chunk of the 12 MiB snapshot is held 300 ms: chunks come
    // well within the voter's election timeout (0.7–1.4 s), the whole
    // snapshot takes several times longer.
    for i in 0..2 {
        let resp = common::http(c.nodes[i].http, "PUT", "/debug/failpoints/network::snapshot_delay", "return(300)");
        assert!(resp.starts_with("HTTP/1.1 200"), "arming the failpoint on node {i}: {resp}");
    }
    c.start(2).unwrap();
    let own = c.client_of(2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    for i in 0..96u64 {
        loop {
            let got = own.get(format!("snap-{i:02}"), Some(ConsistencyLevel::Eventual)).await;
            if got.as_ref().is_ok_and(|g| g.as_deref() == Some(&value(i)[..])) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node 2 never caught up on snap-{i:02} (term now {:?}, was {term})",
                partition_term(&c, &[0, 1, 2]).await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Without the chunks counting as heartbeats, node 2 called an election
    // every few seconds and never caught up (term 1 to 26 in 90 s). A loaded
    // machine may still see an election of its own (a heartbeat late).
    let after = partition_term(&c, &[0, 1, 2]).await.expect("partition 0 has a leader");
    assert!(after <= term + 4, "elections while node 2 received its snapshot: term {term} -> {after}");
    common::cleanup(&mut c);
}
