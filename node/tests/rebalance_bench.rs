//! How fast a rebalance moves data, and that `--snapshot-send-bytes-per-sec`
//! bounds it: 3 nodes with 16 partitions, scaled to 5 and rebalanced, once
//! with empty partitions and then with about 1 GiB of data (every replica of
//! 16 partitions), unthrottled and throttled. A benchmark, not part of
//! `make test`: `make bench-rebalance` (release build).
//!
//! Settings (environment): `KEYRAFT_BENCH_REBALANCE_MIB` (data, default
//! 1024), `KEYRAFT_BENCH_REBALANCE_RATE` (the throttled row's bytes per
//! second, default 8388608 = 8 MiB/s).

mod common;

use std::time::{Duration, Instant};

use keyraft_api::pb;
use keyraft_client::local::LocalCluster;

const SENT: &str = "keyraft_rebalance_sent_bytes_total";
const VALUE_BYTES: usize = 64 << 10;
const PARTITIONS: u32 = 16;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn value(i: u64) -> Vec<u8> {
    common::incompressible(i, VALUE_BYTES)
}

struct Row {
    what: String,
    data_mib: u64,
    moves: usize,
    took: Duration,
    sent: u64,
    failed_chunks: usize,
}

/// Starts 3 nodes, loads `mib` MiB, adds 2 nodes, rebalances and times it
/// until every partition's voters are the desired ones.
async fn scale_out(what: &str, mib: u64, rate: u64) -> Row {
    let rate = rate.to_string();
    // Logs compacted as a long-lived cluster's are: a new replica catches up
    // by snapshot, not by replaying the whole log.
    let args = ["--snapshot-send-bytes-per-sec", &rate, "--snapshot-entries", "256", "--keep-entries", "64"];
    let mut c: LocalCluster = common::cluster("rebalance-bench", 3, PARTITIONS, 3, &args).await;
    let client = c.client().unwrap();
    let keys = (mib << 20) / VALUE_BYTES as u64;
    let t = Instant::now();
    common::put_all(&client, (0..keys).map(|i| (format!("bench-{i:08}"), value(i))), 32, 3).await;
    if keys > 0 {
        eprintln!("{what}: loaded {mib} MiB in {:.1?}", t.elapsed());
    }
    let (a, b) = (c.add_node().unwrap(), c.add_node().unwrap());
    c.wait_ready(&[a, b], common::READY).await.unwrap();
    let new_ids = [c.wait_live(a, common::READY).await.unwrap().id, c.wait_live(b, common::READY).await.unwrap().id];
    let sent_before: f64 = (0..5).map(|i| common::metric(&c, i, SENT)).sum();
    let t = Instant::now();
    let plan = common::admin(&c)
        .await
        .rebalance(pb::RebalanceRequest { dry_run: false, max_moves: PARTITIONS })
        .await
        .unwrap()
        .into_inner();
    // Done when the desired placement gives both new nodes replicas and
    // every partition's voters are the desired ones.
    common::eventually("placement converged onto the new nodes", Duration::from_secs(1800), || async {
        let st = c.statuses().await;
        let cluster = st.iter().find_map(|(_, s)| s.cluster.clone()).ok_or("no cluster view")?;
        if let Some(id) = new_ids.iter().find(|id| !cluster.placement.iter().any(|p| p.replicas.contains(id))) {
            return Err(format!("node {id} is not in the desired placement yet"));
        }
        common::placement_converged(&c).await
    })
    .await;
    let took = t.elapsed();
    let sent = ((0..5).map(|i| common::metric(&c, i, SENT)).sum::<f64>() - sent_before) as u64;
    // A chunk whose answer came too late is sent again, and so is the rest
    // of its snapshot: what moved twice.
    let failed_chunks: usize = (0..5)
        .map(|i| {
            let log = std::fs::read_to_string(c.log_path(i)).unwrap_or_default();
            log.lines()
                .filter(|l| l.contains("InstallSnapshot RPC timed out") || l.contains("error sending InstallSnapshot"))
                .count()
        })
        .sum();
    common::cleanup(&mut c);
    Row { what: what.into(), data_mib: mib, moves: plan.moves.len(), took, sent, failed_chunks }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: make bench-rebalance"]
async fn rebalance_speed() {
    let mib = env_u64("KEYRAFT_BENCH_REBALANCE_MIB", 1024);
    let rate = env_u64("KEYRAFT_BENCH_REBALANCE_RATE", 8 << 20);
    let rows = [
        scale_out("empty partitions", 0, 0).await,
        scale_out("unthrottled", mib, 0).await,
        scale_out(&format!("throttled at {} MiB/s per node", rate >> 20), mib, rate).await,
    ];
    println!("\n3 -> 5 nodes, {PARTITIONS} partitions, replication factor 3, release build, loopback, TLS on:\n");
    println!(
        "| rebalance | data | moves | time to converged | snapshot bytes sent | MiB/s moved | chunks sent again |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &rows {
        let rate = (r.sent as f64 / (1 << 20) as f64) / r.took.as_secs_f64();
        println!(
            "| {} | {} MiB | {} | {:.1} s | {:.0} MiB | {rate:.1} | {} |",
            r.what,
            r.data_mib,
            r.moves,
            r.took.as_secs_f64(),
            r.sent as f64 / (1 << 20) as f64,
            r.failed_chunks
        );
    }
}
