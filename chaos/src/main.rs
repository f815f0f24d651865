//! `keyraft-chaos run`: a nemesis run against real node processes;
//! `keyraft-chaos check FILE`: the checker over a recorded history.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use keyraft_chaos::checker;
use keyraft_chaos::history::read_jsonl;
use keyraft_chaos::nemesis::Family;
use keyraft_chaos::run::{run, RunConfig};

#[derive(Parser)]
#[command(about = "Keyraft nemesis: faults under load and a linearizability checker")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a cluster, run the workload and the faults, check the history.
    Run {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Seed of the fault schedule and the workload's choices (random when absent).
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, value_delimiter = ',', default_value = "process,network,membership,disk")]
        faults: Vec<Family>,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value_t = 4)]
        partitions: u32,
        #[arg(long, default_value_t = 4)]
        clients: usize,
        #[arg(long, default_value_t = 4)]
        groups: usize,
        /// Timeout of one client operation, retries included; shorter gives
        /// more operations with an unknown outcome.
        #[arg(long, default_value_t = 10_000)]
        op_timeout_ms: u64,
        /// Node data, logs and the history (default: a fresh temp directory).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Keep the directory when the run passes too.
        #[arg(long)]
        keep: bool,
    },
    /// Check a history file (JSON lines) written by a run.
    Check { history: PathBuf },
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().cmd {
        Cmd::Run { seconds, seed, faults, nodes, partitions, clients, groups, op_timeout_ms, out, keep } => {
            let seed = seed.unwrap_or_else(rand::random);
            let out = out
                .unwrap_or_else(|| std::env::temp_dir().join(format!("keyraft-chaos-{seed}-{}", std::process::id())));
            let mut cfg = RunConfig::new(seconds, seed, faults, out.clone(), keyraft_client::local::find_node_bin());
            cfg.nodes = nodes;
            cfg.partitions = partitions;
            cfg.clients = clients;
            cfg.groups = groups;
            cfg.op_timeout = std::time::Duration::from_millis(op_timeout_ms);
            let summary =
                run(&cfg).await.with_context(|| format!("run with seed {seed} (files in {})", out.display()))?;
            summary.print();
            if summary.passed() {
                if !keep {
                    let _ = std::fs::remove_dir_all(&out);
                }
                Ok(ExitCode::SUCCESS)
            } else {
                println!("files kept in {}", out.display());
                println!("replay: {}", cfg.replay_command());
                println!("re-check: target/debug/keyraft-chaos check {}", summary.history.display());
                Ok(ExitCode::FAILURE)
            }
        }
        Cmd::Check { history } => {
            let f = File::open(&history).with_context(|| format!("open {}", history.display()))?;
            let records = read_jsonl(BufReader::new(f))?;
            let report = checker::check(&records);
            println!("{} operations, {} groups, {} search states", records.len(), report.groups, report.states);
            for v in &report.violations {
                println!("VIOLATION: {v}");
            }
            println!("verdict: {}", if report.ok() { "PASS" } else { "FAIL" });
            Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}
