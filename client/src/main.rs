//! `keyraft`: the command-line client, local cluster runner and benchmark.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use keyraft_client::backup;
use keyraft_client::bench::{self, BenchOptions};
use keyraft_client::local::{find_node_bin, LocalCluster, LocalOptions, PLAINTEXT_FLAG};
use keyraft_client::output::{self, Encoding, Format};
use keyraft_client::{pb, status, Client, ClientOptions, ConsistencyLevel, TlsOptions};
use serde::Serialize;

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

    /// PEM bundle of the cluster's CA: turns on TLS (endpoints may then be
    /// written https://HOST:PORT).
    #[arg(long, env = "KEYRAFT_CA", global = true)]
    ca: Option<PathBuf>,

    /// PEM client certificate (URI SAN keyraft-role:admin or keyraft-role:client).
    // Ids distinct from the `key` argument of put/get.
    #[arg(id = "tls_cert", long = "cert", env = "KEYRAFT_CERT", global = true, requires = "tls_key")]
    cert: Option<PathBuf>,

    /// PEM private key of --cert.
    #[arg(id = "tls_key", long = "key", env = "KEYRAFT_KEY", global = true, requires = "tls_cert")]
    key: Option<PathBuf>,

    /// File holding a bearer token to authenticate with instead of --cert.
    #[arg(long, env = "KEYRAFT_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,

    /// Give up on an operation after this many seconds (retries included).
    #[arg(long, default_value_t = 15, global = true)]
    timeout: u64,

    /// Output of the commands that print data: table, json or yaml.
    #[arg(short = 'o', long = "output", default_value = "table", global = true)]
    output: Format,

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
        #[command(flatten)]
        encoding: EncodingArgs,
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
        #[command(flatten)]
        encoding: EncodingArgs,
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
    /// Back up the cluster to object storage, list backups, restore one.
    Backup {
        #[command(subcommand)]
        cmd: BackupCmd,
    },
    /// Run a cluster of node processes on this machine.
    Local {
        #[command(subcommand)]
        cmd: LocalCmd,
    },
}

/// How `get` and `scan` print keys and values that may not be text.
#[derive(clap::Args)]
#[group(multiple = false)]
struct EncodingArgs {
    /// Print keys and values as hexadecimal.
    #[arg(long)]
    hex: bool,
    /// Print keys and values as base64 (standard alphabet, padded).
    #[arg(long)]
    base64: bool,
}

impl EncodingArgs {
    fn encoding(&self) -> Encoding {
        match (self.hex, self.base64) {
            (true, _) => Encoding::Hex,
            (_, true) => Encoding::Base64,
            _ => Encoding::Text,
        }
    }
}

/// `keyraft get -o json|yaml`.
#[derive(Serialize)]
struct GetView {
    key: String,
    found: bool,
    value: Option<String>,
    encoding: Encoding,
}

/// `keyraft scan -o json|yaml`.
#[derive(Serialize)]
struct ScanView {
    items: Vec<KeyValueView>,
    encoding: Encoding,
}

#[derive(Serialize)]
struct KeyValueView {
    key: String,
    value: String,
}

/// Prints `v` as JSON/YAML, or as `table()` for `-o table`.
fn emit<T: Serialize>(format: Format, v: &T, table: impl FnOnce(&T) -> String) -> anyhow::Result<()> {
    let text = match format {
        Format::Table => table(v),
        f => output::structured(v, f).map_err(anyhow::Error::msg)?,
    };
    print!("{text}");
    Ok(())
}

/// While alive and stdout is a terminal, redraws "LABEL n/total" on stderr
/// twice a second (a pipe or file gets only the final output).
struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(label: &'static str, done: Arc<AtomicU64>, total: Option<u64>) -> Self {
        if !std::io::stdout().is_terminal() {
            return Self { task: None };
        }
        let task = tokio::spawn(async move {
            let start = std::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let n = done.load(Ordering::Relaxed);
                let rate = n as f64 / start.elapsed().as_secs_f64().max(0.001);
                let of = total.map_or(String::new(), |t| format!("/{t}"));
                eprint!("\r{label} {n}{of} ({rate:.0}/s)\x1b[K");
            }
        });
        Self { task: Some(task) }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            eprint!("\r\x1b[K");
        }
    }
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
enum BackupCmd {
    /// Back up every partition of the cluster at --endpoints to URL/NAME/.
    Create {
        /// Where backups are kept: file:///DIR, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX.
        #[arg(long)]
        to: String,
        /// Name of the backup (default keyraft-YYYYMMDDTHHMMSSZ, UTC).
        #[arg(long)]
        name: Option<String>,
        /// Partitions streamed at once.
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the complete backups at URL (those with a manifest).
    List {
        #[arg(long)]
        at: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Restore backup NAME from URL into the (empty) cluster at --endpoints.
    Restore {
        #[arg(long)]
        from: String,
        #[arg(long)]
        backup: String,
        /// Partitions read or written at once.
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        /// Finish a restore that was interrupted: allow a target that holds keys.
        #[arg(long)]
        resume: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(clap::Args)]
struct StoreArgs {
    /// Give up on an object request after retrying it (with backoff) for this many seconds.
    #[arg(long, default_value_t = 180)]
    retry_timeout: u64,
}

impl StoreArgs {
    fn retry(&self) -> Duration {
        Duration::from_secs(self.retry_timeout)
    }
}

/// A progress bar on stderr (drawn only when stderr is a terminal).
fn progress_bar() -> backup::Progress {
    let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix}: {bytes} ({bytes_per_sec}) {msg} [{elapsed_precise}]")
            .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(500));
    backup::Progress::new(bar)
}

async fn backup_cmd(cmd: BackupCmd, opts: ClientOptions, format: Format) -> anyhow::Result<()> {
    match cmd {
        BackupCmd::Create { to, name, concurrency, store } => {
            let name = name.unwrap_or_else(backup::default_name);
            backup::check_name(&name)?;
            let dest = backup::open(&to, store.retry(), true)?;
            let client = Client::new(opts)?;
            let t = std::time::Instant::now();
            let o = backup::CreateOptions { concurrency, progress: progress_bar() };
            let m = backup::create(&client, &dest, &name, &o).await?;
            let secs = t.elapsed().as_secs_f64();
            emit(format, &m, |m| {
                let mut t = output::Table::new(&["PARTITION", ">APPLIED INDEX", ">KEYS", ">SIZE", "OBJECT"]);
                for p in &m.partition_backups {
                    t.row(vec![
                        p.partition.to_string(),
                        p.applied_index.to_string(),
                        p.records.to_string(),
                        human_bytes(p.size_bytes),
                        p.object.clone(),
                    ]);
                }
                t.render()
            })?;
            eprintln!(
                "backup {name} complete at {to}: {} partitions, {} keys, {} in {secs:.1}s ({:.1} MiB/s)",
                m.partitions,
                m.records,
                human_bytes(m.size_bytes),
                m.size_bytes as f64 / 1048576.0 / secs.max(0.001)
            );
        }
        BackupCmd::List { at, store } => {
            let dest = backup::open(&at, store.retry(), false)?;
            let (list, incomplete) = backup::list(&dest).await?;
            emit(format, &list, |l| {
                let mut t =
                    output::Table::new(&["NAME", "COMPLETED", ">PARTITIONS", ">KEYS", ">SIZE", ">FORMAT", "CLUSTER"]);
                for b in l {
                    t.row(vec![
                        b.name.clone(),
                        b.completed_at.clone(),
                        b.partitions.to_string(),
                        b.records.to_string(),
                        human_bytes(b.size_bytes),
                        b.format_version.to_string(),
                        b.cluster_id.clone(),
                    ]);
                }
                t.render()
            })?;
            if !incomplete.is_empty() {
                eprintln!("not listed (no manifest: failed or still running): {}", incomplete.join(", "));
            }
        }
        BackupCmd::Restore { from, backup: name, concurrency, resume, store } => {
            let dest = backup::open(&from, store.retry(), false)?;
            let client = Client::new(backup::restore_client_options(opts))?;
            let o = backup::RestoreOptions { concurrency, resume, progress: progress_bar() };
            let r = backup::restore(&client, &dest, &name, &o).await?;
            emit(format, &r, |r| {
                format!(
                    "restored backup {}: {} partitions, {} keys, {} of keys and values (checked in {:.1}s, written in {:.1}s)\n",
                    r.backup,
                    r.partitions,
                    r.records,
                    human_bytes(r.bytes),
                    r.verify_seconds,
                    r.write_seconds
                )
            })?;
        }
    }
    Ok(())
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
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
        /// Run the nodes without TLS or authentication (by default a
        /// throwaway CA and certificates are made under DATA_DIR/tls).
        #[arg(long)]
        insecure_plaintext: bool,
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
        /// The cluster runs without TLS (it was started with --insecure-plaintext).
        #[arg(long)]
        insecure_plaintext: bool,
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
    opts.tls = cli.ca.clone().map(|ca| TlsOptions { ca, cert: cli.cert.clone(), key: cli.key.clone() });
    if let Some(f) = &cli.token_file {
        let t = std::fs::read_to_string(f).with_context(|| format!("--token-file {}", f.display()))?;
        if t.trim().is_empty() {
            bail!("--token-file {}: empty", f.display());
        }
        opts.token = Some(t.trim().to_string());
    }
    let client = || Client::new(opts.clone());
    match cli.cmd {
        Cmd::Put { key, value } => {
            let w = client()?.put(key, value).await?;
            println!("OK (partition {}, index {})", w.partition, w.index);
        }
        Cmd::Get { key, consistency, encoding } => {
            let enc = encoding.encoding();
            let v = client()?.get(key.clone(), consistency).await?;
            if cli.output == Format::Table {
                match v {
                    Some(v) => println!("{}", enc.encode(&v)),
                    None => bail!("key {key:?} not found"),
                }
            } else {
                let found = v.is_some();
                let view = GetView { key: key.clone(), found, value: v.map(|v| enc.encode(&v)), encoding: enc };
                emit(cli.output, &view, |_| String::new())?;
                if !found {
                    bail!("key {key:?} not found");
                }
            }
        }
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
        Cmd::Scan { prefix, limit, consistency, encoding } => {
            let enc = encoding.encoding();
            let c = client()?;
            let items = c.scan_prefix(prefix.as_bytes(), consistency).await?;
            let view = ScanView {
                items: items
                    .iter()
                    .take(limit as usize)
                    .map(|(k, v)| KeyValueView { key: enc.encode(k), value: enc.encode(v) })
                    .collect(),
                encoding: enc,
            };
            emit(cli.output, &view, |v| v.items.iter().map(|kv| format!("{}\t{}\n", kv.key, kv.value)).collect())?;
        }
        Cmd::Status => {
            let all = statuses(&client()?).await?;
            match status::status_view(&all) {
                Some(v) => emit(cli.output, &v, status::StatusView::table)?,
                None => bail!("{}", status::NO_CLUSTER.trim_end()),
            }
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
            let done = Arc::new(AtomicU64::new(0));
            let progress = Progress::start("bench: operations", done.clone(), None);
            let report = bench::run_until(&c, &o, stop, done).await;
            drop(progress);
            emit(cli.output, &report.summary(&o), |_| report.render(&o))?;
        }
        Cmd::Load { keys, value_size, clients } => {
            let c = client()?;
            c.partitions().await.context("cannot reach the cluster")?;
            let t = std::time::Instant::now();
            let done = Arc::new(AtomicU64::new(0));
            let progress = Progress::start("load: keys written", done.clone(), Some(keys));
            let failed = bench::load(&c, keys, value_size, clients, &done).await;
            drop(progress);
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
        Cmd::Local {
            cmd: LocalCmd::Up { nodes, partitions, replication_factor, data_dir, base_port, demo, insecure_plaintext },
        } => {
            local_up(nodes, partitions, replication_factor, data_dir, base_port, demo, insecure_plaintext).await?;
        }
        Cmd::Local { cmd: LocalCmd::AddNode { index, data_dir, base_port, insecure_plaintext } } => {
            add_node(index, data_dir, base_port, cli.endpoints.clone(), insecure_plaintext).await?;
        }
        Cmd::Backup { cmd } => backup_cmd(cmd, opts.clone(), cli.output).await?,
        Cmd::Admin { cmd } => admin(&client()?, cmd, cli.output).await?,
        Cmd::Placement => {
            let all = statuses(&client()?).await?;
            match status::placement_view(&all) {
                Some(v) => emit(cli.output, &v, status::PlacementView::table)?,
                None => bail!("{}", status::NO_CLUSTER.trim_end()),
            }
        }
    }
    Ok(())
}

/// Admin.Status of every configured endpoint and every member that answers
/// (the views pick the freshest metadata among them).
async fn statuses(c: &Client) -> anyhow::Result<Vec<pb::StatusResponse>> {
    let first = c.cluster_status().await?;
    let ask = |addr: String| async move {
        let mut a = c.admin(&addr).ok()?;
        tokio::time::timeout(Duration::from_secs(2), a.status(c.request(pb::StatusRequest {})))
            .await
            .ok()?
            .ok()
            .map(|r| r.into_inner())
    };
    let mut addrs: Vec<String> = c.endpoints().to_vec();
    if let Some(cl) = &first.cluster {
        addrs.extend(cl.members.iter().filter(|m| m.state != "removed").map(|m| m.advertise.clone()));
    }
    addrs.sort();
    addrs.dedup();
    let mut all = vec![first.clone()];
    let answered = |s: &pb::StatusResponse| s.node.as_ref().map(|n| n.id);
    for s in futures::future::join_all(addrs.into_iter().map(ask)).await.into_iter().flatten() {
        if all.iter().all(|a| answered(a) != answered(&s)) {
            all.push(s);
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

async fn admin(c: &Client, cmd: AdminCmd, format: Format) -> anyhow::Result<()> {
    let set_state = |node: String, state: &'static str| {
        let (id, name) = node_ref(&node);
        first_answer(c, move |mut a| {
            let req = c.request(pb::SetMemberStateRequest { id, name: name.clone(), state: state.into() });
            async move { a.set_member_state(req).await }
        })
    };
    let member = match cmd {
        AdminCmd::Drain { node } => set_state(node, "draining").await?.member,
        AdminCmd::Undrain { node } => set_state(node, "active").await?.member,
        AdminCmd::Decommission { node } => set_state(node, "decommissioning").await?.member,
        AdminCmd::Fail { node } => set_state(node, "failed").await?.member,
        AdminCmd::Rebalance { dry_run, max_moves } => {
            let current = c.cluster_status().await?;
            let plan = first_answer(c, |mut a| async move {
                a.rebalance(c.request(pb::RebalanceRequest { dry_run: true, max_moves })).await
            })
            .await?;
            emit(format, &status::moves_view(&plan.moves, current.cluster.as_ref()), status::MovesView::table)?;
            if !dry_run && !plan.moves.is_empty() {
                let done = first_answer(c, |mut a| async move {
                    a.rebalance(c.request(pb::RebalanceRequest { dry_run: false, max_moves })).await
                })
                .await?;
                // The plan above is the data; the confirmation goes to stderr so -o json stays parseable.
                eprintln!("applied: {} partitions are moving (watch with `keyraft placement`)", done.moves.len());
            }
            return Ok(());
        }
    };
    if let Some(m) = member {
        println!("node {} ({}) is now {}", m.name, m.id, m.state);
    }
    Ok(())
}

/// Extra node flags of a local cluster: none, or the explicit plaintext opt-out.
fn local_args(insecure_plaintext: bool) -> Vec<String> {
    if insecure_plaintext {
        vec![PLAINTEXT_FLAG.into()]
    } else {
        vec![]
    }
}

async fn add_node(
    index: usize,
    data_dir: PathBuf,
    base_port: u16,
    endpoints: Vec<String>,
    insecure_plaintext: bool,
) -> anyhow::Result<()> {
    let mut cluster = LocalCluster::new(LocalOptions {
        nodes: 0,
        base_port,
        host: "127.0.0.1".into(),
        data_dir,
        node_bin: find_node_bin(),
        cluster: "keyraft".into(),
        extra_args: local_args(insecure_plaintext),
    })?;
    let endpoints: Vec<String> =
        endpoints.iter().map(|e| e.trim_start_matches("https://").trim_start_matches("http://").to_string()).collect();
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
    insecure_plaintext: bool,
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
        extra_args: local_args(insecure_plaintext),
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
        let env = match cluster.tls() {
            Some(t) => format!(
                "export KEYRAFT_ENDPOINTS={eps} KEYRAFT_CA={} KEYRAFT_CERT={} KEYRAFT_KEY={}",
                t.ca.display(),
                t.admin.0.display(),
                t.admin.1.display()
            ),
            None => format!("export KEYRAFT_ENDPOINTS={eps}"),
        };
        match cluster.tls() {
            Some(t) => println!(
                "TLS on: CA and certificates in {} (admin.pem: admin role; client.pem: key-value only)",
                t.dir.display()
            ),
            None => println!("TLS OFF (--insecure-plaintext): anyone who reaches these ports controls the cluster"),
        }
        println!("try:\n  {env}\n  keyraft put hello world && keyraft get hello && keyraft status");
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent_and_tls_flags_reach_every_command() {
        Cli::command().debug_assert();
        let cli =
            Cli::try_parse_from(["keyraft", "--ca", "c", "--cert", "a", "--key", "k", "put", "key", "v"]).unwrap();
        assert!(cli.ca.is_some() && cli.cert.is_some() && cli.key.is_some());
        assert!(Cli::try_parse_from(["keyraft", "--cert", "a", "status"]).is_err(), "--cert needs --key");
    }
}
