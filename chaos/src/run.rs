//! One nemesis run: a cluster, the workload, the faults, the final reads,
//! the checker's verdict.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::checker::{self, Report};
use crate::cluster::Cluster;
use crate::error::ChaosError;
use crate::history::{write_jsonl, Op, Outcome, Record};
use crate::nemesis::{self, Event, Family, Nemesis};
use crate::net::{self, Net};
use crate::workload::{Recorded, Recording};

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub seconds: u64,
    pub seed: u64,
    pub families: Vec<Family>,
    pub nodes: usize,
    pub partitions: u32,
    pub clients: usize,
    /// Key groups (two keys each, one partition per group).
    pub groups: usize,
    /// Where node data, logs and the history go.
    pub out_dir: PathBuf,
    pub node_bin: PathBuf,
    /// Pause of each client between its operations.
    pub op_pause: Duration,
    /// Timeout of one client operation, retries included.
    pub op_timeout: Duration,
}

impl RunConfig {
    pub fn new(seconds: u64, seed: u64, families: Vec<Family>, out_dir: PathBuf, node_bin: PathBuf) -> Self {
        Self {
            seconds,
            seed,
            families,
            nodes: 3,
            partitions: 4,
            clients: 4,
            groups: 4,
            out_dir,
            node_bin,
            op_pause: Duration::from_millis(5),
            op_timeout: Duration::from_secs(10),
        }
    }

    /// The command that runs the same seed and families again.
    pub fn replay_command(&self) -> String {
        let faults: Vec<&str> = self.families.iter().map(|f| f.name()).collect();
        format!("make chaos SECONDS={} SEED={} FAULTS={}", self.seconds, self.seed, faults.join(","))
    }
}

#[derive(Debug)]
pub struct Summary {
    pub seed: u64,
    pub families: Vec<Family>,
    pub skipped: Vec<(Family, String)>,
    pub events: Vec<Event>,
    /// Operations by kind and outcome.
    pub counts: BTreeMap<(&'static str, Outcome), usize>,
    /// The longest time with no acknowledged write: (from, seconds).
    pub longest_no_write: (f64, f64),
    pub report: Report,
    pub history: PathBuf,
    /// Why the run itself failed (a cluster that did not recover).
    pub error: Option<String>,
}

impl Summary {
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.report.ok()
    }

    pub fn total(&self, outcome: Outcome) -> usize {
        self.counts.iter().filter(|((_, o), _)| *o == outcome).map(|(_, n)| n).sum()
    }

    pub fn print(&self) {
        println!("seed: {}", self.seed);
        println!("fault families: {}", self.families.iter().map(|f| f.name()).collect::<Vec<_>>().join(","));
        for (f, why) in &self.skipped {
            println!("SKIPPED family {}: {why}", f.name());
        }
        println!("fault schedule ({} faults):", self.events.len());
        for e in &self.events {
            println!(
                "  {:7.1}s .. {:7.1}s (ready {:7.1}s)  {:8} {}",
                e.start,
                e.healed,
                e.ready,
                e.family.name(),
                e.fault
            );
        }
        println!("operations by outcome:");
        for ((kind, outcome), n) in &self.counts {
            println!("  {kind:6} {outcome:?}: {n}");
        }
        println!(
            "totals: ok {}, failed {}, unknown {}",
            self.total(Outcome::Ok),
            self.total(Outcome::Failed),
            self.total(Outcome::Unknown)
        );
        println!(
            "longest window with no acknowledged write: {:.1} s (from {:.1} s)",
            self.longest_no_write.1, self.longest_no_write.0
        );
        println!(
            "checker: {} groups, {} operations placed, {} search states",
            self.report.groups, self.report.ops_checked, self.report.states
        );
        if let Some(e) = &self.error {
            println!("RUN FAILED: {e}");
        }
        for v in &self.report.violations {
            println!("VIOLATION: {v}");
        }
        println!("verdict: {}", if self.passed() { "PASS (linearizable, no acknowledged write lost)" } else { "FAIL" });
        println!("history: {}", self.history.display());
    }
}

fn kind(op: &Op) -> &'static str {
    match op {
        Op::Put { .. } => "put",
        Op::Get { level, .. } => match level {
            crate::history::Level::Linearizable => "get-l",
            crate::history::Level::Session => "get-s",
            crate::history::Level::Eventual => "get-e",
        },
        Op::Delete { .. } => "delete",
        Op::Cas { .. } => "cas",
        Op::Batch { .. } => "batch",
    }
}

/// The longest gap between acknowledged writes in `[0, end_ns]`.
pub fn longest_no_write(history: &[Record], end_ns: u64) -> (f64, f64) {
    let mut acks: Vec<u64> =
        history.iter().filter(|r| r.op.is_write() && r.outcome == Outcome::Ok).map(|r| r.complete_ns).collect();
    acks.push(end_ns);
    acks.sort_unstable();
    let mut best = (0u64, 0u64);
    let mut prev = 0u64;
    for t in acks {
        if t.saturating_sub(prev) > best.1 {
            best = (prev, t - prev);
        }
        prev = t;
    }
    (best.0 as f64 / 1e9, best.1 as f64 / 1e9)
}

pub async fn run(cfg: &RunConfig) -> Result<Summary, ChaosError> {
    println!("chaos: seed {} for {} s, faults {:?}", cfg.seed, cfg.seconds, cfg.families);
    let mut families = cfg.families.clone();
    let mut skipped = Vec::new();
    // Moving replicas off a member needs a node beyond the replication factor.
    let nodes = if families.contains(&Family::Membership) { cfg.nodes.max(4) } else { cfg.nodes };
    let mut net = None;
    if families.contains(&Family::Network) {
        match net::unavailable() {
            Some(why) => {
                eprintln!("!!!!!!!! chaos: NETWORK FAULTS SKIPPED: {why} !!!!!!!!");
                skipped.push((Family::Network, why));
            }
            None => net = Some(Net::create(nodes)?),
        }
    }
    // Declared after `net`, so dropped first: nodes die before their namespaces.
    let mut cluster = Cluster::new(cfg.node_bin.clone(), cfg.out_dir.join("data"), nodes, net.as_ref())?;
    // A full disk needs a file system of its own per node: root only.
    if families.contains(&Family::Disk) {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            cluster.mount_volumes(256)?;
        } else {
            eprintln!("!!!!!!!! chaos: FULL-DISK FAULTS SKIPPED: mounting a tmpfs needs root !!!!!!!!");
        }
    }
    cluster.bootstrap(cfg.partitions, nodes.min(3) as u32, Duration::from_secs(120)).await?;
    let failpoints = nemesis::failpoints_available(cluster.nodes[0].http).await.unwrap_or(false);
    if families.contains(&Family::Disk) && !failpoints {
        let why = "the node has no /debug/failpoints route (build keyraft-node with --features failpoints)".to_string();
        eprintln!("!!!!!!!! chaos: DISK FAULTS SKIPPED: {why} !!!!!!!!");
        skipped.push((Family::Disk, why));
    }
    families.retain(|f| !skipped.iter().any(|(s, _)| s == f));
    if families.is_empty() {
        return Err(ChaosError::Cluster("no fault family can run here".into()));
    }

    let mut opts = cluster.client_options();
    opts.timeout = cfg.op_timeout;
    opts.attempt_timeout = Duration::from_secs(3).min(cfg.op_timeout);
    let recording = Recording::start(opts, cfg.clients, cfg.groups, "", cfg.seed, cfg.op_pause).await?;
    let t0 = recording.recorder().start();
    let until = t0 + Duration::from_secs(cfg.seconds);
    let mut nemesis = Nemesis {
        rng: StdRng::seed_from_u64(cfg.seed),
        families: families.clone(),
        quiet: (1.0, 4.0),
        hold: (2.0, 8.0),
        recovery: Duration::from_secs(120),
        failpoints,
    };
    let mut events = Vec::new();
    let mut error = nemesis.run(&mut cluster, net.as_mut(), t0, until, &mut events).await.err().map(|e| e.to_string());
    if let Some(e) = &error {
        eprintln!("!!!!!!!! chaos: the nemesis stopped: {e}");
    }
    if let Err(e) = nemesis::heal(&mut cluster, net.as_mut(), failpoints).await {
        error.get_or_insert(format!("heal: {e}"));
    }
    // The rest of the time healthy, so writes must flow again (a run whose
    // nemesis failed already has its verdict: only a short tail).
    let tail = if error.is_some() { Duration::ZERO } else { until.saturating_duration_since(Instant::now()) };
    tokio::time::sleep(tail.max(Duration::from_secs(2))).await;
    let Recorded { history, end_ns, final_reads } = recording.finish(Duration::from_secs(60)).await;
    if let Err(e) = final_reads {
        error.get_or_insert(e);
    }
    let path = cfg.out_dir.join("history.jsonl");
    let file = File::create(&path).map_err(ChaosError::io(format!("create {}", path.display())))?;
    write_jsonl(&history, BufWriter::new(file)).map_err(ChaosError::io(format!("write {}", path.display())))?;
    let mut counts = BTreeMap::new();
    for r in &history {
        *counts.entry((kind(&r.op), r.outcome)).or_insert(0) += 1;
    }
    let report = checker::check(&history);
    Ok(Summary {
        seed: cfg.seed,
        families,
        skipped,
        events,
        counts,
        longest_no_write: longest_no_write(&history, end_ns),
        report,
        history: path,
        error,
    })
}
