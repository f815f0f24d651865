//! Each consistency level does what it promises, proven against real
//! processes: linearizable reads across leader changes, session reads that
//! never go back, eventual reads on a cut-off follower; and a retried write
//! is applied once.

mod common;

use std::time::Duration;

use keyraft_api::pb;
use keyraft_api::{partition_for_key, SessionToken};
use keyraft_client::local::LocalCluster;
use keyraft_client::ConsistencyLevel;
use tonic::Code;

/// A key that lands in `partition` of `partitions`.
fn key_in(partition: u32, partitions: u32, tag: &str) -> String {
    (0..).map(|i| format!("{tag}-{i}")).find(|k| partition_for_key(k.as_bytes(), partitions) == partition).unwrap()
}

/// (node index of the leader, indexes of the followers) of `partition`.
async fn roles(c: &LocalCluster, partition: u32) -> (usize, Vec<usize>) {
    let leaders = common::leaders(c).await;
    let l = leaders.iter().find(|(_, ps)| ps.contains(&partition)).map(|(i, _)| *i).expect("partition has a leader");
    (l, (0..c.nodes.len()).filter(|i| *i != l).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linearizable_read_sees_the_last_acknowledged_write_right_after_a_leader_change() {
    let mut c = common::cluster("linearizable", 3, 4, 3, &[]).await;
    let key = key_in(0, 4, "lin");
    for round in 0..3 {
        let (leader, followers) = roles(&c, 0).await;
        let value = format!("round-{round}");
        c.client().unwrap().put(key.clone(), value.clone()).await.unwrap();
        c.kill(leader);
        // Straight away, through a survivor: the new leader must know the write.
        let got =
            c.client_of(followers[0]).unwrap().get(key.clone(), Some(ConsistencyLevel::Linearizable)).await.unwrap();
        assert_eq!(got.as_deref(), Some(value.as_bytes()), "round {round}: stale or missing read after leader change");
        c.start(leader).unwrap();
        c.wait_ready(&[0, 1, 2], common::READY).await.unwrap();
    }
    common::cleanup(&mut c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deposed_leader_does_not_serve_a_stale_linearizable_read() {
    let mut c = common::cluster("deposed", 3, 1, 3, &[]).await;
    let key = "deposed-key".to_string();
    let (old, followers) = roles(&c, 0).await;
    c.client().unwrap().put(key.clone(), "old").await.unwrap();
    // Freeze the leader; the others elect a new one and accept a write.
    c.pause(old);
    let survivors = c.client_of(followers[0]).unwrap();
    survivors.put(key.clone(), "new").await.unwrap();
    // Thaw it: it still believes it leads until it hears otherwise. A
    // linearizable read sent to it must confirm leadership first.
    c.resume(old);
    let resp = c.client_of(old).unwrap().get(key.clone(), Some(ConsistencyLevel::Linearizable)).await.unwrap();
    assert_eq!(resp.as_deref(), Some(&b"new"[..]), "deposed leader served a stale read");
    common::cleanup(&mut c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_reads_on_followers_read_your_writes_and_never_go_back() {
    let mut c = common::cluster("session", 3, 2, 3, &[]).await;
    let key = key_in(1, 2, "sess");
    let (_, followers) = roles(&c, 1).await;
    let writer = c.client().unwrap();
    let reader = c.client().unwrap();
    let mut last_index = 0;
    for i in 0..100u32 {
        let w = writer.put(key.clone(), i.to_string()).await.unwrap();
        let token = SessionToken { partition: 1, index: w.index }.to_string();
        let f = &c.nodes[followers[i as usize % 2]].grpc.to_string();
        let r = reader.get_from(f, key.clone(), ConsistencyLevel::Session, &token).await.unwrap();
        assert!(r.found, "write {i} not visible to its session");
        assert_eq!(String::from_utf8_lossy(&r.value), i.to_string(), "session read returned an older value");
        let t: SessionToken = r.header.unwrap().session_token.parse().unwrap();
        assert!(t.index >= w.index && t.index >= last_index, "session token went backwards");
        last_index = t.index;
    }
    // A token the cluster never issued is refused, not waited on forever.
    let bogus = SessionToken { partition: 1, index: last_index + 1_000_000 }.to_string();
    let err = reader
        .get_from(&c.nodes[0].grpc.to_string(), key.clone(), ConsistencyLevel::Session, &bogus)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("beyond the partition's last log index"), "{}", err.message());
    common::cleanup(&mut c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_eventual_read_is_served_by_a_cut_off_follower_and_a_linearizable_one_is_not() {
    let mut c = common::cluster("eventual", 3, 1, 3, &[]).await;
    let key = "cut-off-key".to_string();
    c.client().unwrap().put(key.clone(), "replicated").await.unwrap();
    let (leader, followers) = roles(&c, 0).await;
    let lonely = followers[0];
    let other = followers[1];
    let addr = c.nodes[lonely].grpc.to_string();
    let probe = c.client_of(lonely).unwrap();
    // Wait until the write reached the follower's own replica.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !probe.get_from(&addr, key.clone(), ConsistencyLevel::Eventual, "").await.is_ok_and(|r| r.found) {
        assert!(std::time::Instant::now() < deadline, "write never reached node {lonely}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Cut the follower off: every other node freezes.
    c.pause(leader);
    c.pause(other);
    let r = probe
        .get_from(&addr, key.clone(), ConsistencyLevel::Eventual, "")
        .await
        .expect("eventual read on a cut-off follower");
    assert_eq!(r.value, b"replicated");
    let lin = tokio::time::timeout(
        Duration::from_secs(20),
        probe.get_from(&addr, key.clone(), ConsistencyLevel::Linearizable, ""),
    )
    .await;
    assert!(!matches!(lin, Ok(Ok(_))), "a cut-off follower must not answer a linearizable read: {lin:?}");
    c.resume(leader);
    c.resume(other);
    common::cleanup(&mut c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_write_with_the_same_request_id_is_applied_once() {
    let mut c = common::cluster("once", 3, 2, 3, &[]).await;
    let client = c.client().unwrap();
    let mut kv = client.kv_client(&c.nodes[1].grpc.to_string()).unwrap();
    let rid = Some(pb::RequestId { client_id: 0xfeed, seq: 1, first_unacked: 0 });
    let cas = pb::CompareAndSwapRequest {
        key: b"once".to_vec(),
        expected: None,
        new_value: Some(b"a".to_vec()),
        request_id: rid,
    };
    let first = kv.compare_and_swap(cas.clone()).await.unwrap().into_inner();
    assert!(first.succeeded);
    // The same request again, as a client retries after a lost answer: it
    // must get the original answer, not a second (failing) execution.
    let again = kv.compare_and_swap(cas.clone()).await.unwrap().into_inner();
    assert!(again.succeeded, "retry was executed again: {again:?}");
    // A new request id is a new operation and fails the comparison.
    let mut fresh = cas;
    fresh.request_id = Some(pb::RequestId { client_id: 0xfeed, seq: 2, first_unacked: 0 });
    let second = kv.compare_and_swap(fresh).await.unwrap().into_inner();
    assert!(!second.succeeded);
    assert_eq!(second.current.as_deref(), Some(&b"a"[..]));
    common::cleanup(&mut c);
}
