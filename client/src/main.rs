//! `keyraft`: the command-line client, local cluster runner and benchmark.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use keyraft_client::bench::{self, BenchOptions};
use keyraft_client::local::{find_node_bin, LocalCluster, LocalOptions};
use keyraft_client::{pb, Client, ClientOptions, ConsistencyLevel};

#[derive(Parser)]
#[command(name = "keyraft", version, about = "Keyraft command-line client", propagate_version = true)]
struct Cli {
    /// Node addresses, comma-separated.
    #[arg(
        long,
        env = "KEYRAFT_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002",
        global = true
    )]
    endpoints: Vec<String>,

    /// Give up on an operation after this many seconds (retries included).
    #[arg(long, default_value_t = 15, global = true)]
    timeout: u64,

    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a value.
    Put { key: String, value: String },
    /// Read a value.
    Get {
        key: String,
        /// linearizable, session or eventual (default: the cluster's default).
        #[arg(long)]
        consistency: Option<ConsistencyLevel>,
    },
    /// Delete a key.
    Delete { key: String },
    /// Set KEY to NEW only if it holds EXPECTED (omit --expected: must not exist).
    Cas {
        key: String,
        #[arg(long)]
        expected: Option<String>,
        #[arg(long)]
        new: String,
    },
    /// List keys in order.
    Scan {
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        consistency: Option<ConsistencyLevel>,
    },
    /// Show nodes and partitions.
    Status,
    /// Drive load and report throughput and latency percentiles.
    Bench {
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 256)]
        value_size: usize,
        /// Fraction of reads, 0.0 to 1.0.
        #[arg(long, default_value_t = 0.5)]
        read_ratio: f64,
        #[arg(long, default_value = "linearizable")]
        consistency: ConsistencyLevel,
        /// Distinct keys.
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
    },
    /// Change the cluster's shape: drain, decommission, rebalance.
    Admin {
        #[command(subcommand)]
        cmd: AdminCmd,
    },
    /// Desired versus actual placement of every partition.
    Placement,
    /// Write keys bench-00000000.. once each (data for `bench` to read).
    Load {
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
        #[arg(long, default_value_t = 256)]
        value_size: usize,
        #[arg(long, default_value_t = 32)]
        clients: usize,
    },
    /// Run a cluster of node processes on this machine.
    Local {
        #[command(subcommand)]
        cmd: LocalCmd,
    },
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Give up leaderships on NODE (name or id); it keeps its replicas.
    Drain { node: String },
    /// Return a drained NODE to service.
    Undrain { node: String },
    /// Move every replica off NODE so it can be removed.
    Decommission { node: String },
    /// Declare NODE lost: its replicas are re-created on other nodes.
    Fail { node: String },
    /// Plan a balanced placement, print the moves, and apply them.
    Rebalance {
        /// Only print the plan.
        #[arg(long)]
        dry_run: bool,
        /// Most partitions to move at once.
        #[arg(long, default_value_t = 4)]
        max_moves: u32,
    },
}

#[derive(Subcommand)]
enum LocalCmd {
    /// Start N nodes on loopback, bootstrap them, and keep them running until Ctrl-C.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value_t = 8)]
        partitions: u32,
        #[arg(long, default_value_t = 3)]
        replication_factor: u32,
        #[arg(long, default_value = "keyraft-data")]
        data_dir: PathBuf,
        /// gRPC port of the first node; HTTP ports are 1000 higher.
        #[arg(long, default_value_t = 7000)]
        base_port: u16,
        /// Write and read a few sample keys once the cluster is ready.
        #[arg(long)]
        demo: bool,
    },
    /// Start one more node that joins the running cluster at --endpoints; runs until Ctrl-C.
    AddNode {
        /// Index of the new node (its name is node-INDEX, its ports base + INDEX).
        #[arg(long)]
        index: usize,
        #[arg(long, default_value = "keyraft-data")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 7000)]
        base_port: u16,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut opts = ClientOptions::new(cli.endpoints.clone());
    opts.timeout = Duration::from_secs(cli.timeout);
    let client = || Client::new(opts.clone());
    match cli.cmd {
        Cmd::Put { key, value } => {
            let w = client()?.put(key, value).await?;
            println!("OK (partition {}, index {})", w.partition, w.index);
        }
        Cmd::Get { key, consistency } => match client()?.get(key.clone(), consistency).await? {
            Some(v) => println!("{}", String::from_utf8_lossy(&v)),
            None => bail!("key {key:?} not found"),
        },
        Cmd::Delete { key } => {
            let existed = client()?.delete(key).await?;
            println!("{}", if existed { "deleted" } else { "not found (nothing deleted)" });
        }
        Cmd::Cas { key, expected, new } => {
            let (ok, current) =
                client()?.compare_and_swap(key, expected.map(String::into_bytes), Some(new.into_bytes())).await?;
            if !ok {
                let cur = current.map_or("<absent>".into(), |v| String::from_utf8_lossy(&v).into_owned());
                bail!("compare failed: current value is {cur}");
            }
            println!("OK");
        }
        Cmd::Scan { prefix, limit, consistency } => {
            let c = client()?;
            let items = c.scan_prefix(prefix.as_bytes(), consistency).await?;
            for (k, v) in items.iter().take(limit as usize) {
                println!("{}\t{}", String::from_utf8_lossy(k), String::from_utf8_lossy(v));
            }
        }
        Cmd::Status => {
            let c = client()?;
            let first = c.cluster_status().await?;
            let mut all = vec![first.clone()];
            if let Some(cl) = &first.cluster {
                for m in &cl.members {
                    if first.node.as_ref().is_some_and(|n| n.id == m.id) {
                        continue;
                    }
                    let Ok(mut a) = c.admin(&m.advertise) else {
                        continue;
                    };
                    if let Ok(Ok(s)) =
                        tokio::time::timeout(Duration::from_secs(2), a.status(pb::StatusRequest {})).await
                    {
                        all.push(s.into_inner());
                    }
                }
            }
            print!("{}", keyraft_client::status::render(&all));
        }
        Cmd::Bench { clients, duration, value_size, read_ratio, consistency, keys } => {
            if !(0.0..=1.0).contains(&read_ratio) {
                bail!("--read-ratio {read_ratio} must be between 0.0 and 1.0");
            }
            if clients == 0 {
                bail!("--clients must be at least 1");
            }
            let o = BenchOptions {
                clients,
                duration: Duration::from_secs(duration),
                value_size,
                read_ratio,
                consistency,
                keys: keys.max(1),
            };
            let c = client()?;
            c.partitions().await.context("cannot reach the cluster")?;
            // Ctrl-C ends the run early and still prints the report.
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = stop.clone();
            tokio::spawn(async move {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
                }
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            let report = bench::run_until(&c, &o, stop).await;
            print!("{}", report.render(&o));
        }
        Cmd::Load { keys, value_size, clients } => {
            let c = client()?;
            c.partitions().await.context("cannot reach the cluster")?;
            let t = std::time::Instant::now();
            let failed = bench::load(&c, keys, value_size, clients).await;
            let secs = t.elapsed().as_secs_f64();
            println!(
                "loaded {} keys of {value_size} bytes in {secs:.1}s ({:.0} writes/s), {failed} failed",
                keys - failed,
                keys as f64 / secs
            );
            if failed > 0 {
                bail!("{failed} writes failed");
            }
        }
        Cmd::Local { cmd: LocalCmd::Up { nodes, partitions, replication_factor, data_dir, base_port, demo } } => {
            local_up(nodes, partitions, replication_factor, data_dir, base_port, demo).await?;
        }
        Cmd::Local { cmd: LocalCmd::AddNode { index, data_dir, base_port } } => {
            add_node(index, data_dir, base_port, cli.endpoints.clone()).await?;
        }
        Cmd::Admin { cmd } => admin(&client()?, cmd).await?,
        Cmd::Placement => {
            let c = client()?;
            let all = statuses(&c).await?;
            print!("{}", keyraft_client::status::render_placement(&all));
        }
    }
    Ok(())
}

/// Admin.Status of every member that answers.
async fn statuses(c: &Client) -> anyhow::Result<Vec<pb::StatusResponse>> {
    let first = c.cluster_status().await?;
    let mut all = vec![first.clone()];
    if let Some(cl) = &first.cluster {
        for m in cl.members.iter().filter(|m| m.state != "removed") {
            if first.node.as_ref().is_some_and(|n| n.id == m.id) {
                continue;
            }
            let Ok(mut a) = c.admin(&m.advertise) else { continue };
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), a.status(pb::StatusRequest {})).await {
                all.push(s.into_inner());
            }
        }
    }
    Ok(all)
}

/// Sends an admin request to the first endpoint that answers.
async fn first_answer<T, F, Fut>(c: &Client, f: F) -> anyhow::Result<T>
where
    F: Fn(keyraft_api::pb::admin_client::AdminClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut last = String::from("no endpoints");
    for e in c.endpoints() {
        match f(c.admin(e)?).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) if s.code() == tonic::Code::Unavailable => last = format!("{e}: {}", s.message()),
            Err(s) => bail!("{}", s.message()),
        }
    }
    bail!("no endpoint answered: {last}")
}

fn node_ref(node: &str) -> (u64, String) {
    match node.parse::<u64>() {
        Ok(id) => (id, String::new()),
        Err(_) => (0, node.to_string()),
    }
}

async fn admin(c: &Client, cmd: AdminCmd) -> anyhow::Result<()> {
    let set_state = |node: String, state: &'static str| {
        let (id, name) = node_ref(&node);
        first_answer(c, move |mut a| {
            let req = pb::SetMemberStateRequest { id, name: name.clone(), state: state.into() };
            async move { a.set_member_state(req).await }
        })
    };
    let member =
        match cmd {
            AdminCmd::Drain { node } => set_state(node, "draining").await?.member,
            AdminCmd::Undrain { node } => set_state(node, "active").await?.member,
            AdminCmd::Decommission { node } => set_state(node, "decommissioning").await?.member,
            AdminCmd::Fail { node } => set_state(node, "failed").await?.member,
            AdminCmd::Rebalance { dry_run, max_moves } => {
                let status = c.cluster_status().await?;
                let plan = first_answer(c, |mut a| async move {
                    a.rebalance(pb::RebalanceRequest { dry_run: true, max_moves }).await
                })
                .await?;
                print!("{}", keyraft_client::status::render_moves(&plan.moves, status.cluster.as_ref()));
                if !dry_run && !plan.moves.is_empty() {
                    let done = first_answer(c, |mut a| async move {
                        a.rebalance(pb::RebalanceRequest { dry_run: false, max_moves }).await
                    })
                    .await?;
                    println!("applied: {} partitions are moving (watch with `keyraft placement`)", done.moves.len());
                }
                return Ok(());
            }
        };
    if let Some(m) = member {
        println!("node {} ({}) is now {}", m.name, m.id, m.state);
    }
    Ok(())
}

async fn add_node(index: usize, data_dir: PathBuf, base_port: u16, endpoints: Vec<String>) -> anyhow::Result<()> {
    let mut cluster = LocalCluster::new(LocalOptions {
        nodes: 0,
        base_port,
        host: "127.0.0.1".into(),
        data_dir,
        node_bin: find_node_bin(),
        cluster: "keyraft".into(),
        extra_args: vec![],
    })?;
    let i = cluster.add_node_at(index, &endpoints)?;
    let n = cluster.nodes[i].clone();
    let info = cluster.wait_live(i, Duration::from_secs(30)).await.map_err(anyhow::Error::msg)?;
    println!(
        "started {} (id {}) at {}, joining via {}; log {}",
        n.name,
        info.id,
        n.grpc,
        endpoints.join(","),
        cluster.log_path(i).display()
    );
    println!("then: keyraft admin rebalance   (moves replicas onto it)");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    cluster.stop_all();
    Ok(())
}

async fn local_up(
    nodes: usize,
    partitions: u32,
    rf: u32,
    data_dir: PathBuf,
    base_port: u16,
    demo: bool,
) -> anyhow::Result<()> {
    if nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if rf as usize > nodes {
        bail!("--replication-factor {rf} exceeds --nodes {nodes}: replicas must be on distinct nodes");
    }
    let mut cluster = LocalCluster::new(LocalOptions {
        nodes,
        base_port,
        host: "127.0.0.1".into(),
        data_dir: data_dir.clone(),
        node_bin: find_node_bin(),
        cluster: "keyraft".into(),
        extra_args: vec![],
    })
    .with_context(|| format!("--data-dir {}", data_dir.display()))?;
    cluster.start_all()?;
    let all: Vec<usize> = (0..nodes).collect();
    let result = async {
        let b = cluster.bootstrap(partitions, rf).await.map_err(anyhow::Error::msg)?;
        cluster.wait_ready(&all, Duration::from_secs(60)).await.map_err(anyhow::Error::msg)?;
        let eps = cluster.endpoints().join(",");
        println!(
            "keyraft local cluster {}: {nodes} nodes, {partitions} partitions, replication factor {rf}",
            if b.already_bootstrapped { "restarted" } else { "created" }
        );
        for (i, n) in cluster.nodes.iter().enumerate() {
            println!("  {:<7} grpc {}  http http://{}  log {}", n.name, n.grpc, n.http, cluster.log_path(i).display());
        }
        if demo {
            let c = cluster.client()?;
            for (k, v) in [("greeting", "hello from keyraft"), ("color", "teal"), ("answer", "42")] {
                let w = c.put(k, v).await?;
                let back = c.get(k, Some(ConsistencyLevel::Linearizable)).await?.unwrap_or_default();
                println!(
                    "  put {k}={v} (partition {}, index {}) -> get {k} = {}",
                    w.partition,
                    w.index,
                    String::from_utf8_lossy(&back)
                );
            }
        }
        println!(
            "try:\n  export KEYRAFT_ENDPOINTS={eps}\n  keyraft put hello world && keyraft get hello && keyraft status"
        );
        println!("keyraft local cluster ready at {eps} (Ctrl-C stops it)");
        anyhow::Ok(())
    }
    .await;
    if result.is_ok() {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        println!("stopping {nodes} nodes");
    }
    cluster.stop_all();
    result
}
