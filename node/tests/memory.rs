//! A node holds several times more data than its memory bound (block cache,
//! memtables and log cache set small) and its resident memory stays under
//! that bound: state machines live in the engine, not in RAM. Part of the
//! data is values at the 1 MiB limit. A node killed with SIGKILL restarts
//! under the same bound (no full-state load) and every value reads back
//! byte for byte. RSS is read from /proc.
//!
//! Slow in a debug build on a loaded machine: `make memory-test`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use keyraft_api::limits::DEFAULT_MAX_VALUE_BYTES;
use keyraft_api::partition::partition_for_key;
use keyraft_client::local::LocalCluster;
use keyraft_client::{Client, ConsistencyLevel};

const PARTITIONS: u32 = 2;
const BIG_VALUES: u64 = 64;
const SMALL_VALUES: u64 = 40_000;
const SMALL_VALUE_BYTES: usize = 4096;
/// Small values go in batches (one partition each) of this many.
const BATCH: usize = 32;
/// The node's flags, in MiB.
const CACHE_MIB: u64 = 4;
const MEMTABLE_MIB: u64 = 2;
const LOG_CACHE_MIB: u64 = 4;
/// What the README's storage paragraph bounds the engine to: the block
/// cache, three keyspaces of at most five memtables each, the log cache.
const ENGINE_BOUND_MIB: u64 = CACHE_MIB + 15 * MEMTABLE_MIB + LOG_CACHE_MIB;
/// Work in flight: a few 1 MiB entries being appended, replicated and
/// applied, and a batch of small values, each held in more than one copy
/// (request, log entry, AppendEntries to two peers).
const IN_FLIGHT_MIB: u64 = 16;

fn big(i: u64) -> (String, Vec<u8>) {
    (format!("big-{i:03}"), common::incompressible(i, DEFAULT_MAX_VALUE_BYTES))
}

fn small(i: u64) -> (String, Vec<u8>) {
    (format!("small-{i:06}"), common::incompressible(1_000_000 + i, SMALL_VALUE_BYTES))
}

/// A client that waits for slow answers instead of retrying them: on a
/// loaded machine a 1 MiB put in a debug build can take longer than the
/// default attempt timeout, and each retry proposes the value again, which
/// only adds to the backlog. Memory, not latency, is under test.
fn patient(c: &LocalCluster, endpoints: Vec<String>, follow_leader_hints: bool) -> Client {
    let mut o = c.client_options();
    o.endpoints = endpoints;
    o.timeout = Duration::from_secs(180);
    o.attempt_timeout = Duration::from_secs(60);
    o.follow_leader_hints = follow_leader_hints;
    Client::new(o).unwrap()
}

/// Puts (`Some`) of one batch call.
type Ops = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Writes the small values in batches of keys of one partition, `conc`
/// batches at a time, retried like `write`.
async fn write_batched(client: &Client, conc: usize) {
    let mut by_partition: BTreeMap<u32, Ops> = BTreeMap::new();
    for (k, v) in (0..SMALL_VALUES).map(small) {
        by_partition.entry(partition_for_key(k.as_bytes(), PARTITIONS)).or_default().push((k.into_bytes(), Some(v)));
    }
    let batches: Vec<Ops> =
        by_partition.into_values().flat_map(|ops| ops.chunks(BATCH).map(<[_]>::to_vec).collect::<Vec<_>>()).collect();
    stream::iter(batches)
        .map(|ops| {
            let client = client.clone();
            async move {
                let mut attempt = 0;
                while let Err(e) = client.batch(ops.clone()).await {
                    attempt += 1;
                    assert!(
                        attempt < 3,
                        "batch of {} keys from {:?}: {e}",
                        ops.len(),
                        String::from_utf8_lossy(&ops[0].0)
                    );
                }
            }
        })
        .buffer_unordered(conc)
        .collect::<Vec<_>>()
        .await;
}

/// The pid of the node process whose data directory is `dir`.
fn pid_of(dir: &Path) -> u32 {
    let want = dir.as_os_str().as_encoded_bytes();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args.windows(2).any(|w| w[0] == b"--data-dir" && w[1] == want) {
            return pid;
        }
    }
    panic!("no node process for {}", dir.display())
}

/// (current, peak) resident memory of `pid`, in MiB.
fn rss_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in /proc"));
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() >> 10
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Each node's resident memory before any data: what the process takes
/// without the engine's caches filled.
fn base_rss(c: &LocalCluster) -> Vec<u64> {
    c.nodes.iter().map(|n| rss_mib(pid_of(&n.data_dir)).0).collect()
}

fn check_rss(c: &LocalCluster, base: &[u64], when: &str) {
    for (i, n) in c.nodes.iter().enumerate() {
        let (rss, peak) = rss_mib(pid_of(&n.data_dir));
        let bound = base[i] + ENGINE_BOUND_MIB + IN_FLIGHT_MIB;
        eprintln!("{when}: node {i}: RSS {rss} MiB, peak {peak} MiB, bound {bound} MiB");
        assert!(peak < bound, "{when}: node {i} peaked at {peak} MiB RSS, bound {bound} MiB");
    }
}

/// Every 1 MiB value and a sample of the others read back byte for byte
/// through every node: linearizable (from the leaders), then from each
/// node's own replica (eventual reads, retried while a replica catches up),
/// so every node's engine serves them.
async fn check_values(c: &LocalCluster, when: &str) {
    for node in 0..3 {
        let client = patient(c, vec![c.endpoints()[node].clone()], false);
        let items = (0..BIG_VALUES).map(big).chain((0..SMALL_VALUES).step_by(97).map(small));
        for (k, v) in items {
            let got = client.get(k.clone(), Some(ConsistencyLevel::Linearizable)).await;
            let got = got.unwrap_or_else(|e| panic!("{when}: node {node}: get {k}: {e}"));
            assert!(got.as_deref() == Some(&v[..]), "{when}: node {node}: {k} does not read back");
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let got = client.get(k.clone(), Some(ConsistencyLevel::Eventual)).await;
                if got.as_ref().is_ok_and(|g| g.as_deref() == Some(&v[..])) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{when}: node {node}: its replica of {k} never matched (length or error: {:?})",
                    got.map(|g| g.map(|v| v.len()))
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "about 7 minutes in a debug build on a loaded 2-core machine; run by `make memory-test`"]
async fn resident_memory_stays_bounded_with_several_times_more_data() {
    let (cache, memtable, log_cache) = (CACHE_MIB.to_string(), MEMTABLE_MIB.to_string(), LOG_CACHE_MIB.to_string());
    let args = [
        "--storage-cache-mb",
        &cache,
        "--storage-memtable-mb",
        &memtable,
        "--storage-log-cache-mb",
        &log_cache,
        "--snapshot-entries",
        "2000",
        "--keep-entries",
        "100",
        // Room for 1 MiB entries on a loaded machine (see envelope.rs):
        // what is under test is memory, not speed.
        "--heartbeat-ms",
        "3000",
        "--election-timeout-ms",
        "10000",
    ];
    let mut c = common::cluster("memory", 3, PARTITIONS, 3, &args).await;
    let base = base_rss(&c);
    let client = patient(&c, c.endpoints(), true);
    let t = Instant::now();
    // A put that times out on a loaded machine is retried: what is under
    // test is memory, not latency.
    common::put_all(&client, (0..BIG_VALUES).map(big), 2, 3).await;
    write_batched(&client, 4).await;
    let mib = (BIG_VALUES * DEFAULT_MAX_VALUE_BYTES as u64 + SMALL_VALUES * SMALL_VALUE_BYTES as u64) >> 20;
    eprintln!("{mib} MiB written in {:.1?}; RSS before any data {base:?} MiB", t.elapsed());
    let bound = base.iter().max().unwrap() + ENGINE_BOUND_MIB + IN_FLIGHT_MIB;
    assert!(mib >= 2 * bound, "the data ({mib} MiB) must be well above the bound ({bound} MiB)");
    check_rss(&c, &base, "after loading");

    // A restart reads no state into memory and replays only the log tail.
    c.kill(1);
    c.start(1).unwrap();
    c.wait_ready(&[0, 1, 2], common::READY).await.unwrap();
    check_values(&c, "after kill -9 and restart").await;
    check_rss(&c, &base, "after reading everything back");
    common::cleanup(&mut c);
}
