//! Values at the size limit replicate: 1 MiB values, 512 MiB written into
//! one partition of a 3-node cluster (keys overwritten round after round, so
//! snapshots and log purges carry large values too), a full kill -9 restart
//! in the middle and a clean restart at the end; every key reads back the
//! last acknowledged value byte for byte, and no node logs a timeout loop.

mod common;

use std::time::Instant;

use futures::stream::{self, StreamExt};
use keyraft_api::limits::DEFAULT_MAX_VALUE_BYTES;
use keyraft_client::local::LocalCluster;
use keyraft_client::{Client, ConsistencyLevel};

const KEYS: u64 = 64;
const ROUNDS: u64 = 8;

fn key(k: u64) -> String {
    format!("big-{k:02}")
}

/// The value of key `k` in round `r`: exactly the limit, and different for
/// every key and round.
fn value(k: u64, r: u64) -> Vec<u8> {
    common::incompressible(r * KEYS + k, DEFAULT_MAX_VALUE_BYTES)
}

/// Writes every key once with round `r`'s value; panics on a failed write.
async fn write_round(client: &Client, r: u64) {
    stream::iter(0..KEYS)
        .map(|k| {
            let client = client.clone();
            async move {
                client.put(key(k), value(k, r)).await.unwrap_or_else(|e| panic!("round {r}: put {}: {e}", key(k)));
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
}

/// Reads every key from every node and checks it holds round `r`'s value.
async fn check_round(c: &LocalCluster, r: u64, when: &str) {
    for node in 0..3 {
        let client = c.client_of(node).unwrap();
        for k in 0..KEYS {
            let got = client.get(key(k), Some(ConsistencyLevel::Linearizable)).await;
            let got = got.unwrap_or_else(|e| panic!("{when}: node {node}: get {}: {e}", key(k)));
            let got = got.unwrap_or_else(|| panic!("{when}: node {node}: {} is missing", key(k)));
            assert!(got == value(k, r), "{when}: node {node}: {} does not hold round {r}'s value", key(k));
        }
    }
}

/// Lines of a node's log that report an AppendEntries timeout.
fn timeouts_logged(c: &LocalCluster, i: usize) -> usize {
    let log = std::fs::read_to_string(c.log_path(i)).unwrap_or_default();
    log.lines().filter(|l| l.contains("timeout") && l.contains("AppendEntries")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn values_at_the_limit_replicate_and_survive_restarts() {
    // Timings for a shared, loaded test machine (debug build): what is under
    // test is that 1 MiB entries are batched by bytes and replicate, not how
    // fast the disk is.
    let args = [
        "--snapshot-entries",
        "100",
        "--keep-entries",
        "20",
        "--heartbeat-ms",
        "1000",
        "--election-timeout-ms",
        "5000",
    ];
    let mut c = common::cluster("envelope", 3, 1, 3, &args).await;
    let client = c.client().unwrap();
    let t = Instant::now();
    for r in 0..ROUNDS {
        write_round(&client, r).await;
        if r == ROUNDS / 2 - 1 {
            for i in 0..3 {
                c.kill(i);
            }
            c.start_all().unwrap();
            c.wait_ready(&[0, 1, 2], common::READY).await.unwrap();
            check_round(&c, r, "after kill -9 of every node").await;
        }
    }
    let mib = (KEYS * ROUNDS * DEFAULT_MAX_VALUE_BYTES as u64) >> 20;
    eprintln!("{mib} MiB of 1 MiB values written in {:.1?}", t.elapsed());
    check_round(&c, ROUNDS - 1, "before restart").await;
    c.stop_all();
    c.start_all().unwrap();
    c.wait_ready(&[0, 1, 2], common::READY).await.unwrap();
    check_round(&c, ROUNDS - 1, "after a clean restart").await;
    // A batch too large for one heartbeat is split, not resent forever: a
    // few timeouts on a loaded machine are fine, a loop is not.
    for i in 0..3 {
        let n = timeouts_logged(&c, i);
        assert!(n < 50, "node {i} logged {n} AppendEntries timeouts");
    }
    common::cleanup(&mut c);
}
