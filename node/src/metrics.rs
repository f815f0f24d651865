//! Prometheus metrics, all exposed through one `prometheus::Registry` (the
//! crate's encoder escapes label values). Request latency and errors are
//! recorded as requests run; storage and Raft latencies through the
//! process-wide `observe_*` functions, so the storage and network layers
//! need no handle on the node; per-group Raft gauges and membership gauges
//! are refreshed from openraft's metrics at scrape time.
//!
//! Naming: units in the name (`_seconds`, `_bytes`), counters end in
//! `_total`, ids only ever appear as label values, and no label is named
//! `node` or `instance` (Kubernetes relabelling uses those).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tokio::sync::watch;

use crate::node::Node;
use crate::types::NodeId;

type RaftMetrics = openraft::RaftMetrics<NodeId, openraft::BasicNode>;

/// Latency buckets of requests and Raft round trips: 0.5 ms to 5 s.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// fsync and local append latency: 50 µs to 2.5 s.
const DISK_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5];

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())).expect("valid histogram")
}

static FSYNC_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram("keyraft_wal_fsync_duration_seconds", "Duration of one fsync of the write-ahead log", DISK_BUCKETS)
});
static READ_INDEX_BATCH: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "keyraft_read_index_batch_size",
        "Linearizable reads answered by one leadership confirmation round (batched ReadIndex)",
        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
    )
});
static RAFT_APPEND_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "keyraft_raft_append_duration_seconds",
        "Round trip of an AppendEntries carrying entries, leader to follower (includes the follower's fsync)",
        LATENCY_BUCKETS,
    )
});
static RAFT_COMMIT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "keyraft_raft_commit_duration_seconds",
        "Time from a proposal on the leader to its entry being committed and applied",
        LATENCY_BUCKETS,
    )
});
static RAFT_APPLY_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "keyraft_raft_apply_duration_seconds",
        "Time to apply one batch of committed entries to the state machine",
        DISK_BUCKETS,
    )
});
static SNAPSHOT_SENT_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "keyraft_rebalance_sent_bytes_total",
        "Snapshot bytes this node sent to replicas catching up: new replicas (rebalancing, repair; paced by --snapshot-send-bytes-per-sec), and lagging followers",
    )
    .expect("valid counter")
});

static LEADER_CHANGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new("keyraft_group_leader_changes_total", "Times this node saw a group's leader change"),
        &["group"],
    )
    .expect("valid counter")
});

/// Counts leader changes of `group` until its Raft instance goes away.
pub fn watch_leader(group: u64, mut rx: watch::Receiver<RaftMetrics>) {
    let counter = LEADER_CHANGES.with_label_values(&[&group.to_string()]);
    tokio::spawn(async move {
        let mut last = rx.borrow_and_update().current_leader;
        while rx.changed().await.is_ok() {
            let now = rx.borrow_and_update().current_leader;
            if now.is_some() && now != last {
                counter.inc();
            }
            last = now;
        }
    });
}

/// Records one fsync of the write-ahead log.
pub fn observe_fsync(seconds: f64) {
    FSYNC_SECONDS.observe(seconds);
}

/// Records how many linearizable reads one ReadIndex round answered.
pub fn observe_read_index_batch(reads: usize) {
    READ_INDEX_BATCH.observe(reads as f64);
}

/// Records one AppendEntries round trip that carried entries.
pub fn observe_raft_append(seconds: f64) {
    RAFT_APPEND_SECONDS.observe(seconds);
}

/// Records the commit (and apply) latency of one proposal on the leader.
pub fn observe_raft_commit(seconds: f64) {
    RAFT_COMMIT_SECONDS.observe(seconds);
}

/// Records the time to apply one batch of committed entries.
pub fn observe_raft_apply(seconds: f64) {
    RAFT_APPLY_SECONDS.observe(seconds);
}

/// Counts snapshot bytes sent to a peer.
pub fn add_snapshot_bytes_sent(bytes: u64) {
    SNAPSHOT_SENT_BYTES.inc_by(bytes);
}

/// The node's metrics. Fields are `pub` for the code that records them.
pub struct Metrics {
    registry: Registry,
    /// Labels `method`, `consistency` (the read level; empty for writes and admin calls).
    pub request_seconds: HistogramVec,
    /// Labels `method`, `code`.
    pub request_errors: IntCounterVec,
    /// Proposals that Raft refused or lost on this node (not the
    /// redirections of a follower to its leader).
    pub proposal_errors: IntCounter,
    scrape: ScrapeGauges,
}

/// Values read from openraft, the WAL and the cluster metadata at scrape time.
struct ScrapeGauges {
    group_is_leader: IntGaugeVec,
    group_has_leader: IntGaugeVec,
    group_term: IntGaugeVec,
    group_commit: IntGaugeVec,
    group_applied: IntGaugeVec,
    group_last_log: IntGaugeVec,
    group_snapshot: IntGaugeVec,
    group_replication_lag: IntGaugeVec,
    snapshots_built: IntCounterVec,
    wal_fsyncs: IntCounter,
    wal_entries: IntCounter,
    wal_bytes: IntCounter,
    wal_compactions: IntCounter,
    wal_size: IntGauge,
    snapshot_size: IntGauge,
    tls_cert_expiry: IntGauge,
    member_replicas: IntGaugeVec,
    member_preferred_leaders: IntGaugeVec,
    partitions_moving: IntGauge,
    node_ready: IntGauge,
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge")
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("valid counter")
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("valid gauge")
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| registry.register(c).expect("unique metric names");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "keyraft_request_duration_seconds",
                "gRPC request latency by method and read consistency level",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "consistency"],
        )
        .expect("valid histogram");
        let request_errors = IntCounterVec::new(
            Opts::new("keyraft_request_errors_total", "gRPC requests answered with an error, by method and code"),
            &["method", "code"],
        )
        .expect("valid counter");
        let proposal_errors = counter(
            "keyraft_proposals_dropped_total",
            "Raft proposals that failed on this node (not counting redirections to the leader)",
        );
        let scrape = ScrapeGauges {
            group_is_leader: gauge_vec("keyraft_group_is_leader", "1 when this node leads the group", &["group"]),
            group_has_leader: gauge_vec(
                "keyraft_group_has_leader",
                "1 when this node's replica of the group knows a leader",
                &["group"],
            ),
            group_term: gauge_vec("keyraft_group_term", "Current Raft term of the group", &["group"]),
            group_commit: gauge_vec("keyraft_group_commit_index", "Highest log index known committed", &["group"]),
            group_applied: gauge_vec(
                "keyraft_group_applied_index",
                "Highest log index applied to the state machine",
                &["group"],
            ),
            group_last_log: gauge_vec("keyraft_group_last_log_index", "Highest log index in the local log", &["group"]),
            group_snapshot: gauge_vec("keyraft_group_snapshot_index", "Log index of the latest snapshot", &["group"]),
            group_replication_lag: gauge_vec(
                "keyraft_group_replication_lag_entries",
                "On a leader: entries the follower's replicated log is behind the leader's last log index",
                &["group", "follower"],
            ),
            snapshots_built: IntCounterVec::new(
                Opts::new("keyraft_snapshots_built_total", "Snapshots this node built"),
                &["group"],
            )
            .expect("valid counter"),
            wal_fsyncs: counter("keyraft_wal_fsyncs_total", "fsyncs of the write-ahead log"),
            wal_entries: counter("keyraft_wal_entries_total", "Log entries appended to the write-ahead log"),
            wal_bytes: counter("keyraft_wal_bytes_total", "Bytes written to the write-ahead log"),
            wal_compactions: counter("keyraft_wal_compactions_total", "Write-ahead log segments compacted"),
            wal_size: gauge(
                "keyraft_wal_size_bytes",
                "Bytes the storage engine's journal (its write-ahead log, db/*.jnl) occupies on disk",
            ),
            snapshot_size: gauge(
                "keyraft_snapshot_size_bytes",
                "Bytes of the snapshot files being written, sent or received (temporary files under tmp/)",
            ),
            tls_cert_expiry: gauge(
                "keyraft_tls_certificate_expiry_timestamp_seconds",
                "When the node's own TLS certificate, as last (re)loaded, expires (Unix seconds); 0 without TLS",
            ),
            member_replicas: gauge_vec(
                "keyraft_member_replicas",
                "Partition replicas placed on each member, from the cluster metadata",
                &["member", "state"],
            ),
            member_preferred_leaders: gauge_vec(
                "keyraft_member_preferred_leaders",
                "Partitions that prefer each member as leader",
                &["member"],
            ),
            partitions_moving: gauge(
                "keyraft_partitions_moving",
                "Partitions led here whose voters differ from the desired placement",
            ),
            node_ready: gauge("keyraft_node_ready", "1 when the node is ready to serve"),
        };
        let build_info = gauge_vec("keyraft_build_info", "Version of this keyraft-node binary; always 1", &["version"]);
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

        reg(Box::new(request_seconds.clone()));
        reg(Box::new(request_errors.clone()));
        reg(Box::new(proposal_errors.clone()));
        reg(Box::new(LEADER_CHANGES.clone()));
        reg(Box::new(build_info));
        for h in
            [&*FSYNC_SECONDS, &*RAFT_APPEND_SECONDS, &*RAFT_COMMIT_SECONDS, &*RAFT_APPLY_SECONDS, &*READ_INDEX_BATCH]
        {
            reg(Box::new(h.clone()));
        }
        reg(Box::new(SNAPSHOT_SENT_BYTES.clone()));
        let s = &scrape;
        for g in [
            &s.group_is_leader,
            &s.group_has_leader,
            &s.group_term,
            &s.group_commit,
            &s.group_applied,
            &s.group_last_log,
            &s.group_snapshot,
            &s.group_replication_lag,
            &s.member_replicas,
            &s.member_preferred_leaders,
        ] {
            reg(Box::new(g.clone()));
        }
        reg(Box::new(s.snapshots_built.clone()));
        for c in [&s.wal_fsyncs, &s.wal_entries, &s.wal_bytes, &s.wal_compactions] {
            reg(Box::new(c.clone()));
        }
        for g in [&s.wal_size, &s.snapshot_size, &s.tls_cert_expiry, &s.partitions_moving, &s.node_ready] {
            reg(Box::new(g.clone()));
        }
        Self { registry, request_seconds, request_errors, proposal_errors, scrape }
    }
}

/// Raises a counter mirrored from an atomic to `value` (never lowers it).
fn mirror(c: &IntCounter, value: u64) {
    c.inc_by(value.saturating_sub(c.get()));
}

/// Bytes of the regular files under `dir` whose name passes `keep`.
fn disk_usage(dir: &Path, keep: &dyn Fn(&str) -> bool) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_usage(&e.path(), keep),
            Ok(t) if t.is_file() && keep(&e.file_name().to_string_lossy()) => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Entries each follower is behind `m`'s last log index (on a leader).
fn replication_lag(m: &RaftMetrics) -> Vec<(NodeId, u64)> {
    let last = m.last_log_index.unwrap_or(0);
    m.replication
        .iter()
        .flatten()
        .filter(|(id, _)| **id != m.id)
        .map(|(id, matched)| (*id, last.saturating_sub(matched.map_or(0, |l| l.index))))
        .collect()
}

/// Refreshes the scrape-time gauges and encodes every metric.
pub fn render(node: &Node) -> String {
    let s = &node.metrics.scrape;
    let groups = node.groups.all();
    // Groups closed since the last scrape must disappear, not linger.
    for v in [
        &s.group_is_leader,
        &s.group_has_leader,
        &s.group_term,
        &s.group_commit,
        &s.group_applied,
        &s.group_last_log,
        &s.group_snapshot,
        &s.group_replication_lag,
        &s.member_replicas,
        &s.member_preferred_leaders,
    ] {
        v.reset();
    }
    for g in &groups {
        let m = g.raft.metrics().borrow().clone();
        let id = g.id.to_string();
        let l = [id.as_str()];
        let committed = node.wal.with_group(g.id, |log| log.committed.map_or(0, |c| c.index));
        s.group_is_leader.with_label_values(&l).set(i64::from(m.state == openraft::ServerState::Leader));
        s.group_has_leader.with_label_values(&l).set(i64::from(m.current_leader.is_some()));
        s.group_term.with_label_values(&l).set(m.current_term as i64);
        s.group_commit.with_label_values(&l).set(committed as i64);
        s.group_applied.with_label_values(&l).set(m.last_applied.map_or(0, |x| x.index) as i64);
        s.group_last_log.with_label_values(&l).set(m.last_log_index.unwrap_or(0) as i64);
        s.group_snapshot.with_label_values(&l).set(m.snapshot.map_or(0, |x| x.index) as i64);
        for (follower, lag) in replication_lag(&m) {
            s.group_replication_lag.with_label_values(&[id.as_str(), &follower.to_string()]).set(lag as i64);
        }
        mirror(&s.snapshots_built.with_label_values(&l), g.snapshots_built.load(Ordering::Relaxed));
    }
    let w = node.wal.stats();
    mirror(&s.wal_fsyncs, w.fsyncs.load(Ordering::Relaxed));
    mirror(&s.wal_entries, w.records.load(Ordering::Relaxed));
    mirror(&s.wal_bytes, w.bytes.load(Ordering::Relaxed));
    mirror(&s.wal_compactions, w.segments_compacted.load(Ordering::Relaxed));
    s.wal_size.set(disk_usage(&node.cfg.data_dir.join("db"), &|n| n.ends_with(".jnl")) as i64);
    s.snapshot_size.set(crate::storage::snapshot::files_bytes(&node.cfg.data_dir.join("tmp")) as i64);
    s.tls_cert_expiry.set(node.tls.as_ref().and_then(|t| t.own()).map_or(0, |c| c.not_after));

    let meta = node.meta_rx.borrow().clone();
    let mut moving = 0;
    if let Some(meta) = meta {
        for m in meta.members.values() {
            let replicas = meta.placement.iter().filter(|p| p.replicas.contains(&m.id)).count();
            s.member_replicas.with_label_values(&[&m.name, m.state.as_str()]).set(replicas as i64);
            let leaders = meta.placement.iter().filter(|p| p.preferred_leader == m.id).count();
            s.member_preferred_leaders.with_label_values(&[&m.name]).set(leaders as i64);
        }
        // Moves in flight, as seen by the leaders on this node.
        moving = groups
            .iter()
            .filter_map(|g| {
                let p = keyraft_api::partition_of_group(g.id)?;
                let m = g.raft.metrics().borrow().clone();
                if m.state != openraft::ServerState::Leader {
                    return None;
                }
                let mut want = meta.placement.get(p as usize)?.replicas.clone();
                let mut have: Vec<u64> = m.membership_config.membership().voter_ids().collect();
                have.sort_unstable();
                want.sort_unstable();
                (have != want).then_some(())
            })
            .count();
    }
    s.partitions_moving.set(moving as i64);
    s.node_ready.set(i64::from(node.readiness().is_ok()));

    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&node.metrics.registry.gather(), &mut buf) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_names_follow_conventions() {
        let m = Metrics::new();
        m.scrape.member_replicas.with_label_values(&["we\"ird\\name\n", "active"]).set(2);
        m.request_seconds.with_label_values(&["get", "linearizable"]).observe(0.01);
        let mut buf = Vec::new();
        TextEncoder::new().encode(&m.registry.gather(), &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains(r#"keyraft_member_replicas{member="we\"ird\\name\n",state="active"} 2"#), "{text}");
        assert!(text.contains(&format!("keyraft_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))));
        assert!(text.contains(r#"keyraft_request_duration_seconds_count{consistency="linearizable",method="get"} 1"#));
        assert!(!text.contains("leader_id"), "ids are labels, not values");
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut parts = line.split_whitespace().skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(name.starts_with("keyraft_"), "{name}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}: counters and only counters end in _total");
        }
        assert!(!text.contains("{node="), "no label named node");
    }

    #[test]
    fn mirrored_counters_follow_their_source() {
        let c = IntCounter::new("keyraft_x_total", "x").unwrap();
        mirror(&c, 5);
        mirror(&c, 7);
        assert_eq!(c.get(), 7);
        mirror(&c, 3);
        assert_eq!(c.get(), 7, "a counter never goes down");
    }
}
