//! The crash-point matrix: a node crashes at a storage step (a failpoint
//! armed over its HTTP port with `panic`, which aborts the process) or is
//! killed with SIGKILL while writes flow; it restarts from its disk, rejoins,
//! and every acknowledged write is there, on the cluster and on its own
//! replica. Built only with the `failpoints` feature:
//! `cargo test -p keyraft-node --features failpoints --test crash_points`.
#![cfg(feature = "failpoints")]

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use keyraft_client::local::LocalCluster;
use keyraft_client::{Client, ConsistencyLevel};

const VICTIM: usize = 1;

fn kv(i: u64) -> (String, String) {
    (format!("crash-{i:06}"), format!("value-{i}"))
}

fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Writes keys `range`, 8 at a time; returns those acknowledged.
async fn write(client: &Client, range: std::ops::Range<u64>) -> Vec<u64> {
    stream::iter(range)
        .map(|i| {
            let client = client.clone();
            async move {
                let (k, v) = kv(i);
                client.put(k, v).await.ok().map(|_| i)
            }
        })
        .buffer_unordered(8)
        .filter_map(|x| async move { x })
        .collect()
        .await
}

async fn missing(client: &Client, acked: &BTreeSet<u64>, level: ConsistencyLevel) -> Vec<u64> {
    stream::iter(acked.iter().copied())
        .map(|i| {
            let client = client.clone();
            async move {
                let (k, v) = kv(i);
                match client.get(k, Some(level)).await {
                    Ok(Some(got)) if got == v.as_bytes() => None,
                    _ => Some(i),
                }
            }
        })
        .buffer_unordered(32)
        .filter_map(|x| async move { x })
        .collect()
        .await
}

/// Crashes the victim with `failpoint` (or SIGKILL if None) under writes,
/// restarts it and checks that nothing acknowledged is lost.
async fn crash_and_recover(failpoint: Option<&str>) {
    let tag = failpoint.map_or("kill9".to_string(), |f| f.replace("::", "-"));
    let args = ["--snapshot-entries", "40", "--keep-entries", "5"];
    let mut c: LocalCluster = common::cluster(&format!("crash-{tag}"), 3, 2, 3, &args).await;
    let client = c.client().unwrap();
    let mut acked: BTreeSet<u64> = write(&client, 0..100).await.into_iter().collect();
    assert_eq!(acked.len(), 100, "{tag}: writes on a healthy cluster failed");

    if let Some(fp) = failpoint {
        let resp = http(c.nodes[VICTIM].http, "PUT", &format!("/debug/failpoints/{fp}"), "panic");
        assert!(resp.starts_with("HTTP/1.1 200"), "{tag}: arming failed: {resp}");
    }
    // Keep writing until the victim is down (the failpoint fires on its own
    // storage path; SIGKILL comes after a round of writes).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut next = 100;
    loop {
        acked.extend(write(&client, next..next + 50).await);
        next += 50;
        if failpoint.is_none() {
            c.kill(VICTIM);
        }
        if !c.is_running(VICTIM) {
            break;
        }
        assert!(Instant::now() < deadline, "{tag}: the victim never reached the failpoint");
    }
    // The rest of the cluster goes on without it.
    acked.extend(write(&client, next..next + 50).await);
    next += 50;

    c.start(VICTIM).unwrap();
    c.wait_ready(&[0, 1, 2], common::READY).await.unwrap_or_else(|e| panic!("{tag}: victim did not rejoin: {e}"));
    let lost = missing(&c.client().unwrap(), &acked, ConsistencyLevel::Linearizable).await;
    assert!(lost.is_empty(), "{tag}: {} acknowledged writes lost: {:?}", lost.len(), &lost[..lost.len().min(5)]);
    // And the victim's own replica catches up to every one of them.
    let own = c.client_of(VICTIM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let behind = missing(&own, &acked, ConsistencyLevel::Eventual).await;
        if behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{tag}: victim's replica misses {} writes: {:?}",
            behind.len(),
            &behind[..5.min(behind.len())]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // It takes writes again.
    assert_eq!(write(&client, next..next + 20).await.len(), 20, "{tag}: writes after recovery failed");
    common::cleanup(&mut c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_at_log_write() {
    crash_and_recover(Some("storage::log_write")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_at_fsync() {
    crash_and_recover(Some("storage::fsync")).await;
}

/// A crash while an apply batch (keys, exactly-once changes, applied index)
/// is committed to the engine: the state is the last batch that reached the
/// disk, and the log, purged only up to state in the engine, replays the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_at_state_machine_write() {
    crash_and_recover(Some("storage::sm_write")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_at_snapshot_build() {
    crash_and_recover(Some("storage::snapshot_build")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_at_log_purge() {
    crash_and_recover(Some("storage::log_purge")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_writes() {
    crash_and_recover(None).await;
}
