//! The crash-point matrix: a node crashes at a storage step (a failpoint
//! armed over its HTTP port with `panic`, which aborts the process) or is
//! killed with SIGKILL while writes flow; it restarts from its disk, rejoins,
//! and every acknowledged write is there, on the cluster and on its own
//! replica. Built only with the `failpoints` feature:
//! `cargo test -p keyraft-node --features failpoints --test crash_points`.
#![cfg(feature = "failpoints")]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use keyraft_client::local::LocalCluster;
use keyraft_client::{Client, ConsistencyLevel};

const VICTIM: usize = 1;

fn kv(i: u64) -> (String, String) {
    (format!("crash-{i:06}"), format!("value-{i}"))
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

/// How the victim is brought to its crash point.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Trigger {
    /// Writes flow until the armed point fires on the victim's own path.
    Writes,
    /// SIGKILL after a round of writes (no failpoint).
    Kill,
    /// The victim campaigns for a partition it follows in: it saves a vote
    /// for itself in a new term.
    Campaign,
    /// The victim is paused while the others write and compact past its
    /// log, then resumed: the leader sends it a snapshot to install.
    Snapshot,
    /// A fourth node joins: the victim applies the membership changes.
    Join,
}

/// Crashes the victim at `failpoint` (armed with `panic`) brought about by
/// `trigger`, under writes; restarts it and checks that nothing
/// acknowledged is lost.
async fn crash_and_recover(failpoint: Option<&str>, trigger: Trigger) {
    let tag = failpoint.map_or("kill9".to_string(), |f| f.replace("::", "-"));
    let args = ["--snapshot-entries", "40", "--keep-entries", "5"];
    let mut c: LocalCluster = common::cluster(&format!("crash-{tag}"), 3, 2, 3, &args).await;
    let client = c.client().unwrap();
    let mut acked: BTreeSet<u64> = write(&client, 0..100).await.into_iter().collect();
    assert_eq!(acked.len(), 100, "{tag}: writes on a healthy cluster failed");

    if let Some(fp) = failpoint {
        let resp = common::http(c.nodes[VICTIM].http, "PUT", &format!("/debug/failpoints/{fp}"), "panic");
        assert!(resp.starts_with("HTTP/1.1 200"), "{tag}: arming failed: {resp}");
    }
    let mut next = 100;
    match trigger {
        Trigger::Writes | Trigger::Kill => {}
        Trigger::Campaign => {
            let st = common::status_of(&c, VICTIM).await;
            let group = st.groups.iter().find(|g| g.group > 0 && g.role != "leader").map(|g| g.group);
            let group = group.unwrap_or_else(|| panic!("{tag}: the victim leads every partition: {st:?}"));
            let mut admin = c.client_of(VICTIM).unwrap().admin(&c.nodes[VICTIM].grpc.to_string()).unwrap();
            // The call dies with the victim; its answer does not matter.
            let _ = admin.campaign(keyraft_api::pb::CampaignRequest { group }).await;
        }
        Trigger::Snapshot => {
            c.pause(VICTIM);
            // 40-entry snapshots, 5 entries kept: the others purge far past
            // where the victim stopped.
            acked.extend(write(&client, next..next + 300).await);
            next += 300;
            c.resume(VICTIM);
        }
        Trigger::Join => {
            c.add_node().unwrap();
        }
    }
    // Keep writing until the victim is down.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        acked.extend(write(&client, next..next + 50).await);
        next += 50;
        if trigger == Trigger::Kill {
            c.kill(VICTIM);
        }
        if !c.is_running(VICTIM) {
            break;
        }
        assert!(Instant::now() < deadline, "{tag}: the victim never reached the failpoint");
    }
    if let Some(fp) = failpoint {
        // It died at that point, not of something else.
        let log = std::fs::read_to_string(c.log_path(VICTIM)).unwrap();
        assert!(log.contains(&format!("failpoint {fp} panic")), "{tag}: the victim died elsewhere:\n{log}");
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
    crash_and_recover(Some("storage::log_write"), Trigger::Writes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_at_fsync() {
    crash_and_recover(Some("storage::fsync"), Trigger::Writes).await;
}

/// A crash while an apply batch (keys, exactly-once changes, applied index)
/// is committed to the engine: the state is the last batch that reached the
/// disk, and the log, purged only up to state in the engine, replays the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_at_state_machine_write() {
    crash_and_recover(Some("storage::sm_write"), Trigger::Writes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_at_snapshot_build() {
    crash_and_recover(Some("storage::snapshot_build"), Trigger::Writes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_at_log_purge() {
    crash_and_recover(Some("storage::log_purge"), Trigger::Writes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_writes() {
    crash_and_recover(None, Trigger::Kill).await;
}

/// A crash while the victim saves its vote for itself in a new term.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_at_vote_save() {
    crash_and_recover(Some("storage::vote_save"), Trigger::Campaign).await;
}

/// A crash while the victim installs a snapshot the leader sent because its
/// log had been purged past the victim's last entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_at_snapshot_install() {
    crash_and_recover(Some("storage::snapshot_install"), Trigger::Snapshot).await;
}

/// A crash while the victim applies a membership change (a node joining).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_at_membership_change() {
    crash_and_recover(Some("storage::membership"), Trigger::Join).await;
}
