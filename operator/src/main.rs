//! `keyraft-operator`: runs the KeyraftCluster controller, or prints its CRD.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use keyraft_operator::{admin::Admin, controller, crd, lease, metrics};
use tokio::sync::watch;

/// Kubernetes operator for Keyraft clusters.
///
/// Install the CRD (`keyraft-operator crd | kubectl apply -f -`), run the
/// controller (`keyraft-operator run`), then apply a KeyraftCluster such as
/// examples/basic.yaml.
#[derive(Parser)]
#[command(name = "keyraft-operator", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a CustomResourceDefinition as YAML: KeyraftCluster (default)
    /// or KeyraftBackup (`crd backup`).
    Crd {
        #[arg(value_enum, default_value = "cluster")]
        kind: CrdKind,
    },
    /// Run the controller against the cluster of the current kubeconfig or
    /// in-cluster service account.
    Run(RunArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CrdKind {
    Cluster,
    Backup,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Address of the HTTP server for /metrics, /healthz, /readyz.
    #[arg(long, env = "KEYRAFT_OPERATOR_HTTP", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// `/healthz` fails (and the kubelet restarts the leader) once the
    /// controller's watches have failed for this many seconds in a row.
    #[arg(long, env = "KEYRAFT_OPERATOR_UNHEALTHY_AFTER_SECONDS", default_value_t = 300)]
    unhealthy_after_seconds: u64,
    /// Timeout of every node admin call, in milliseconds.
    #[arg(long, env = "KEYRAFT_OPERATOR_ADMIN_TIMEOUT_MS", default_value_t = 3000)]
    admin_timeout_ms: u64,
    /// Elect a leader through a Lease so several replicas can run.
    #[arg(long, env = "KEYRAFT_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "KEYRAFT_OPERATOR_LEASE_NAME", default_value = "keyraft-operator")]
    lease_name: String,
    /// Namespace of the Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Identity in the Lease; the pod name.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Lease duration in seconds; a dead leader is replaced after this.
    #[arg(long, env = "KEYRAFT_OPERATOR_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    /// Namespaces to watch, comma-separated; empty: every namespace.
    #[arg(long, env = "KEYRAFT_OPERATOR_WATCH_NAMESPACES", value_delimiter = ',', default_value = "")]
    watch_namespaces: Vec<String>,
    /// Log records as `text` or `json` (one object per line); the filter is `RUST_LOG`.
    #[arg(long, env = "KEYRAFT_LOG_FORMAT", default_value = "text")]
    log_format: keyraft_api::logging::LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { kind } => {
            match kind {
                CrdKind::Cluster => print!("{}", crd::crd_yaml()?),
                CrdKind::Backup => print!("{}", crd::backup_crd_yaml()?),
            }
            Ok(())
        }
        Command::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    keyraft_api::logging::init(args.log_format, "info,kube=warn");
    let client = kube::Client::try_default().await.context("no Kubernetes configuration (kubeconfig or in-cluster)")?;
    // The pod name (downward API): a pid is 1 in every container.
    let identity = match (args.identity.clone(), args.leader_election) {
        (Some(id), _) => id,
        (None, false) => "keyraft-operator".to_string(),
        (None, true) => anyhow::bail!("leader election needs this replica's pod name: set POD_NAME (downward API)"),
    };
    let metrics = Arc::new(metrics::Metrics::new());

    let (lead_tx, mut lead_rx) = watch::channel(!args.leader_election);
    if args.leader_election {
        tokio::spawn(lease::run(
            client.clone(),
            lease::LeaseConfig::new(
                args.lease_namespace.clone(),
                args.lease_name.clone(),
                identity.clone(),
                Duration::from_secs(args.lease_seconds),
            ),
            lead_tx,
        ));
    }

    let router = metrics::router(metrics.clone(), lead_rx.clone(), Duration::from_secs(args.unhealthy_after_seconds));
    let http = tokio::spawn(metrics::serve(args.http_addr, router));
    tracing::info!(addr = %args.http_addr, %identity, "keyraft-operator starting");

    // Standby until elected.
    while !*lead_rx.borrow() {
        tokio::select! {
            changed = lead_rx.changed() => changed.context("leader election stopped")?,
            _ = shutdown_signal() => return Ok(()),
        }
    }
    tracing::info!("leading: starting the controller");

    let mut ctx =
        controller::Context::new(client, Admin::new(Duration::from_millis(args.admin_timeout_ms)), metrics, identity);
    // Destructive steps check the Lease before each call.
    ctx.leading = args.leader_election.then(|| lead_rx.clone());
    // `--watch-namespaces ""` (the chart's default) parses as one empty name.
    ctx.operator_namespace = Some(args.lease_namespace.clone());
    ctx.namespaces = args.watch_namespaces.iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect();
    let ctx = Arc::new(ctx);
    // Stop on SIGTERM, or as soon as leadership is lost: a replica that
    // lost its lease must not act; the process restarts and waits again.
    let mut lost = lead_rx.clone();
    let lost_leadership = async move {
        while lost.changed().await.is_ok() {
            if !*lost.borrow() {
                break;
            }
        }
    };
    let lost_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = lost_flag.clone();
    controller::run(ctx, async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = lost_leadership => flag.store(true, std::sync::atomic::Ordering::SeqCst),
        }
    })
    .await;
    http.abort();
    if lost_flag.load(std::sync::atomic::Ordering::SeqCst) {
        anyhow::bail!("lost the leader lease; exiting so a fresh process waits for it");
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
