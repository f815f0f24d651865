//! `keyraft-k8s-sim`: the local Kubernetes simulator as a process.
//!
//! `keyraft-k8s-sim serve --listen 127.0.0.1:6443 --kubeconfig-out kubeconfig`
//! prints the kubeconfig path and a ready line, serves until SIGINT or
//! SIGTERM, then stops every process it started.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use keyraft_e2e::{SimConfig, Simulator};

#[derive(Parser)]
#[command(name = "keyraft-k8s-sim", version, about = "Local Kubernetes simulator for Keyraft end-to-end tests")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API, run controllers and pods until interrupted.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address of the API server (plain HTTP).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Also write the administrator kubeconfig here.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Directory for pod directories, volumes and logs.
    #[arg(long, default_value = "k8s-sim-state")]
    state_dir: PathBuf,
    /// Directory of keyraft-node / keyraft-operator binaries (default: next to this executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Image tag -> binary directory, e.g. `--tag-bin-dir v2=/path/to/build` (repeatable).
    #[arg(long, value_parser = parse_tag_dir)]
    tag_bin_dir: Vec<(String, PathBuf)>,
    /// Number of simulated Nodes (zones zone-a, zone-b, ...).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Hosts file for cluster DNS names; `none` disables cluster DNS.
    #[arg(long, default_value = "/etc/hosts")]
    hosts_file: String,
}

fn parse_tag_dir(s: &str) -> Result<(String, PathBuf), String> {
    let (tag, dir) = s.split_once('=').ok_or("expected TAG=DIR")?;
    Ok((tag.to_string(), PathBuf::from(dir)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let Command::Serve(args) = Cli::parse().command;
    let mut cfg = SimConfig::new(&args.state_dir);
    cfg.listen = args.listen;
    cfg.nodes = args.nodes;
    if let Some(dir) = args.bin_dir {
        cfg.bin_dir = dir;
    }
    cfg.tag_bin_dirs = args.tag_bin_dir.into_iter().collect::<BTreeMap<_, _>>();
    cfg.hosts_file = (args.hosts_file != "none").then(|| PathBuf::from(&args.hosts_file));
    let sim = Simulator::start(cfg).await.context("starting the simulator")?;
    let kubeconfig = match args.kubeconfig_out {
        Some(out) => {
            std::fs::copy(&sim.kubeconfig, &out).with_context(|| format!("writing {}", out.display()))?;
            out
        }
        None => sim.kubeconfig.clone(),
    };
    println!("kubeconfig: {}", kubeconfig.display());
    println!("keyraft-k8s-sim ready: API server {} (export KUBECONFIG={})", sim.url, kubeconfig.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("stopping: terminating pods");
    sim.shutdown().await;
    Ok(())
}
