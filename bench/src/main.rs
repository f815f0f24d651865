//! `keyraft-bench`: `make bench-compare` runs it. Starts 3 etcd members,
//! runs the rows, stops them; then the same for 3 Keyraft nodes; prints one
//! Markdown table on stdout (progress on stderr).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use keyraft_bench::etcd::{self, EtcdCluster};
use keyraft_bench::keyraft::{self, KeyraftCluster};
use keyraft_bench::measure;
use keyraft_bench::report::{self, Figures, TableRow};
use keyraft_bench::workload::{self, Row, Settings, Target};

const MEMBERS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum System {
    Etcd,
    Keyraft,
}

#[derive(Debug, Parser)]
#[command(about = "Keyraft and etcd side by side: 3 members each on loopback, one system at a time")]
struct Args {
    /// Measured seconds per row.
    #[arg(long, env = "BENCH_SECONDS", default_value_t = 10)]
    seconds: u64,
    /// Seconds of load before each row is measured.
    #[arg(long, env = "BENCH_WARMUP", default_value_t = 2)]
    warmup: u64,
    #[arg(long, env = "BENCH_KEYS", default_value_t = 100_000)]
    keys: u64,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Keyraft partitions (replication factor 3).
    #[arg(long, default_value_t = 16)]
    partitions: u32,
    /// Systems to run, in this order.
    #[arg(long, env = "BENCH_SYSTEMS", value_delimiter = ',', default_values = ["etcd", "keyraft"])]
    systems: Vec<System>,
    /// Rows to run (default all): w1, w16, w64, w256, lin64, ses64.
    #[arg(long, env = "BENCH_ROWS", value_delimiter = ',')]
    rows: Vec<String>,
    #[arg(long, env = "ETCD_BIN", default_value = "etcd")]
    etcd_bin: PathBuf,
    /// Default: next to this executable, then $PATH.
    #[arg(long, env = "KEYRAFT_NODE_BIN")]
    node_bin: Option<PathBuf>,
    /// Run the Keyraft nodes with --insecure-plaintext (default: mutual TLS
    /// with a throwaway CA, as `keyraft local up`), to measure what TLS costs.
    #[arg(long, env = "BENCH_KEYRAFT_PLAINTEXT", value_parser = clap::builder::BoolishValueParser::new())]
    keyraft_plaintext: bool,
}

fn selected_rows(ids: &[String]) -> Result<Vec<Row>> {
    let all = workload::rows();
    if ids.is_empty() {
        return Ok(all);
    }
    for id in ids {
        if !all.iter().any(|r| r.id == id) {
            let known: Vec<_> = all.iter().map(|r| r.id).collect();
            bail!("--rows: unknown row {id:?}; rows are {}", known.join(", "));
        }
    }
    Ok(all.into_iter().filter(|r| ids.iter().any(|id| id == r.id)).collect())
}

fn progress(system: System) -> impl Fn(&str) {
    move |m| eprintln!("[{system:?}] {m}")
}

async fn run_system(system: System, a: &Args, node_bin: &Path, rows: &[Row], s: &Settings) -> Result<Vec<Figures>> {
    let say = progress(system);
    let name = format!("{system:?}").to_lowercase();
    // Declared first so it is removed after the member processes are gone.
    let dir = tempfile::Builder::new().prefix(&format!("keyraft-bench-{name}-")).tempdir().context("temp dir")?;
    say(&format!("starting {MEMBERS} members under {}", dir.path().display()));
    match system {
        System::Etcd => {
            let mut cluster = EtcdCluster::start(&a.etcd_bin, dir.path(), MEMBERS)?;
            let members = cluster.wait_ready(Duration::from_secs(60)).await?;
            Ok(measure::rows(&Target::Etcd(members), &cluster.pids(), rows, s, say).await?)
        }
        System::Keyraft => {
            let k = KeyraftCluster::start(node_bin, dir.path(), MEMBERS, a.partitions, !a.keyraft_plaintext).await?;
            Ok(measure::rows(&Target::Keyraft(k.client.clone()), &k.pids, rows, s, say).await?)
        }
    }
}

async fn run(a: Args) -> Result<()> {
    if a.seconds == 0 || a.keys == 0 || a.value_size == 0 || a.partitions == 0 {
        bail!("--seconds, --keys, --value-size and --partitions must be at least 1");
    }
    let rows = selected_rows(&a.rows)?;
    let node_bin = a.node_bin.clone().unwrap_or_else(keyraft_client::local::find_node_bin);
    let s = Settings {
        keys: a.keys,
        value_size: a.value_size,
        warmup: Duration::from_secs(a.warmup),
        duration: Duration::from_secs(a.seconds),
    };
    let load_before = loadavg();
    let mut table: Vec<TableRow> =
        rows.iter().map(|r| TableRow { label: r.label(), etcd: None, keyraft: None }).collect();
    for &system in &a.systems {
        let figures = run_system(system, &a, &node_bin, &rows, &s).await.with_context(|| format!("{system:?}"))?;
        for (t, f) in table.iter_mut().zip(figures) {
            match system {
                System::Etcd => t.etcd = Some(f),
                System::Keyraft => t.keyraft = Some(f),
            }
        }
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "{} and {}; {cpus} CPUs; 3 members each on loopback, one system at a time, fsync on; closed loop, \
         {}-byte values, {} keys (preloaded before the read rows), {} s per row after {} s of warm-up; \
         Keyraft {} partitions, replication factor 3, {}, through keyraft-client; etcd through its gRPC KV \
         API in plaintext, one channel per member. Latency over all operations of a row; CPU = utime + stime of the 3 members. \
         Load average (1 min) {load_before} before, {} after: the machine is shared, compare within one run.\n",
        etcd::version(&a.etcd_bin).unwrap_or_else(|| "etcd (version unknown)".into()),
        keyraft::version(&node_bin).unwrap_or_else(|| "keyraft-node (version unknown)".into()),
        a.value_size,
        report::thousands(a.keys as f64),
        a.seconds,
        a.warmup,
        a.partitions,
        if a.keyraft_plaintext { "plaintext (--insecure-plaintext)" } else { "mutual TLS" },
        loadavg(),
    );
    print!("{}", report::render(&table));
    Ok(())
}

/// The 1-minute load average, for the reader to judge the noise of a run.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        eprintln!("keyraft-bench: cannot install a SIGTERM handler");
        std::process::exit(1);
    };
    // On a signal the run is dropped, which stops every member and removes its directory.
    let r = tokio::select! {
        r = run(args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = term.recv() => Err(anyhow::anyhow!("terminated")),
    };
    if let Err(e) = r {
        eprintln!("keyraft-bench: {e:#}");
        std::process::exit(1);
    }
}
