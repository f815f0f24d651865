//! Prometheus metrics: request latency and errors, recorded as requests
//! run, plus per-group Raft gauges and storage counters read at scrape time.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

use crate::node::Node;

pub struct Metrics {
    registry: Registry,
    pub request_seconds: HistogramVec,
    pub request_errors: IntCounterVec,
    pub proposal_errors: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let request_seconds = HistogramVec::new(
            HistogramOpts::new("keyraft_request_duration_seconds", "gRPC request latency by method")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["method"],
        )
        .expect("valid histogram");
        let request_errors = IntCounterVec::new(
            Opts::new("keyraft_request_errors_total", "gRPC requests answered with an error, by method and code"),
            &["method", "code"],
        )
        .expect("valid counter");
        let proposal_errors =
            IntCounter::new("keyraft_proposal_errors_total", "Raft proposals that failed on this node")
                .expect("valid counter");
        registry.register(Box::new(request_seconds.clone())).expect("register");
        registry.register(Box::new(request_errors.clone())).expect("register");
        registry.register(Box::new(proposal_errors.clone())).expect("register");
        Self { registry, request_seconds, request_errors, proposal_errors }
    }
}

/// The whole `/metrics` page.
pub fn render(node: &Node) -> String {
    let mut out = String::new();
    let gauges: [(&str, &str); 7] = [
        ("keyraft_group_is_leader", "1 when this node leads the group"),
        ("keyraft_group_term", "current Raft term of the group"),
        ("keyraft_group_leader_id", "Raft id of the group's leader (0 when unknown)"),
        ("keyraft_group_commit_index", "highest log index known committed"),
        ("keyraft_group_applied_index", "highest log index applied to the state machine"),
        ("keyraft_group_last_log_index", "highest log index in the local log"),
        ("keyraft_group_snapshot_index", "log index of the latest snapshot"),
    ];
    let groups = node.groups.all();
    let rows: Vec<(u64, [u64; 7], u64)> = groups
        .iter()
        .map(|g| {
            let m = g.raft.metrics().borrow().clone();
            let committed = node.wal.with_group(g.id, |l| l.committed.map_or(0, |c| c.index));
            (
                g.id,
                [
                    u64::from(m.state == openraft::ServerState::Leader),
                    m.current_term,
                    m.current_leader.unwrap_or(0),
                    committed,
                    m.last_applied.map_or(0, |l| l.index),
                    m.last_log_index.unwrap_or(0),
                    m.snapshot.map_or(0, |l| l.index),
                ],
                g.snapshots_built.load(Ordering::Relaxed),
            )
        })
        .collect();
    for (i, (name, help)) in gauges.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (g, vals, _) in &rows {
            let _ = writeln!(out, "{name}{{group=\"{g}\"}} {}", vals[i]);
        }
    }
    let _ = writeln!(
        out,
        "# HELP keyraft_snapshots_built_total snapshots this node built\n# TYPE keyraft_snapshots_built_total counter"
    );
    for (g, _, built) in &rows {
        let _ = writeln!(out, "keyraft_snapshots_built_total{{group=\"{g}\"}} {built}");
    }
    let s = node.wal.stats();
    for (name, help, v) in [
        ("keyraft_wal_fsyncs_total", "fsyncs of the write-ahead log", s.fsyncs.load(Ordering::Relaxed)),
        ("keyraft_wal_entries_total", "log entries appended to the write-ahead log", s.records.load(Ordering::Relaxed)),
        ("keyraft_wal_bytes_total", "bytes written to the write-ahead log", s.bytes.load(Ordering::Relaxed)),
        (
            "keyraft_wal_compactions_total",
            "write-ahead log segments compacted",
            s.segments_compacted.load(Ordering::Relaxed),
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
    if let Some(meta) = node.meta_rx.borrow().clone() {
        let _ = writeln!(out, "# HELP keyraft_member_replicas partition replicas placed on each member\n# TYPE keyraft_member_replicas gauge");
        for m in meta.members.values() {
            let replicas = meta.placement.iter().filter(|p| p.replicas.contains(&m.id)).count();
            let _ = writeln!(
                out,
                "keyraft_member_replicas{{node=\"{}\",state=\"{}\"}} {replicas}",
                m.name,
                m.state.as_str()
            );
        }
        let _ = writeln!(out, "# HELP keyraft_member_preferred_leaders partitions that prefer each member as leader\n# TYPE keyraft_member_preferred_leaders gauge");
        for m in meta.members.values() {
            let leaders = meta.placement.iter().filter(|p| p.preferred_leader == m.id).count();
            let _ = writeln!(out, "keyraft_member_preferred_leaders{{node=\"{}\"}} {leaders}", m.name);
        }
        // Moves in flight, as seen by the leaders on this node.
        let moving = groups
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
        let _ = writeln!(out, "# HELP keyraft_partitions_moving partitions led here whose voters differ from the desired placement\n# TYPE keyraft_partitions_moving gauge\nkeyraft_partitions_moving {moving}");
    }
    let _ =
        writeln!(out, "# HELP keyraft_node_ready 1 when the node is ready to serve\n# TYPE keyraft_node_ready gauge");
    let _ = writeln!(out, "keyraft_node_ready {}", u8::from(node.readiness().is_ok()));
    let mut buf = Vec::new();
    if TextEncoder::new().encode(&node.metrics.registry.gather(), &mut buf).is_ok() {
        out.push_str(&String::from_utf8_lossy(&buf));
    }
    out
}
