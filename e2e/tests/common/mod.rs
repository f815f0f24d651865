//! Shared test support: an in-process simulator on a free port and the
//! real kubectl/helm binaries from tools/bin.

#![allow(dead_code)]

pub mod cluster;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keyraft_e2e::{SimConfig, Simulator};

/// The repository root: `KEYRAFT_E2E_REPO` when set (the scenarios built
/// into an image), else the source tree they were compiled from.
pub fn repo() -> PathBuf {
    match std::env::var_os("KEYRAFT_E2E_REPO") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

/// `KEYRAFT_E2E_CLUSTER=external`: the scenarios run against the cluster
/// of the ambient kubeconfig (in-cluster on kind) instead of a simulator.
pub fn external() -> bool {
    std::env::var("KEYRAFT_E2E_CLUSTER").is_ok_and(|v| v == "external")
}

/// A real client binary from tools/bin (from PATH against an external
/// cluster), or `None` (the caller skips with a message).
pub fn tool(name: &str) -> Option<PathBuf> {
    if external() {
        return Some(PathBuf::from(name));
    }
    let p = repo().join("tools/bin").join(name);
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {} not found; run `make tools`", p.display());
        None
    }
}

/// A simulator in a temporary state directory. Cluster DNS is off unless
/// `dns` (tests that need no names leave /etc/hosts alone).
pub async fn start(dns: bool) -> (Simulator, tempfile::TempDir) {
    start_with(dns, |_| {}).await
}

/// [`start`] with changes to the simulator's configuration.
pub async fn start_with(dns: bool, configure: impl FnOnce(&mut SimConfig)) -> (Simulator, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SimConfig::new(dir.path());
    if !dns {
        cfg.hosts_file = None;
    }
    configure(&mut cfg);
    let sim = Simulator::start(cfg).await.expect("simulator starts");
    (sim, dir)
}

/// Output of a client command.
pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `bin args` with the simulator's kubeconfig.
pub async fn run(sim: &Simulator, bin: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Out {
    run_with(Some(&sim.kubeconfig), bin, args, stdin).await
}

/// Runs `bin args` with `kubeconfig` (and HOME beside it), or with the
/// process environment as it is when `None`.
pub async fn run_with(kubeconfig: Option<&Path>, bin: &Path, args: &[&str], stdin: Option<&str>) -> Out {
    let kubeconfig = kubeconfig.map(Path::to_path_buf);
    let bin = bin.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.map(String::from);
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut cmd = Command::new(&bin);
        if let Some(k) = &kubeconfig {
            cmd.env("KUBECONFIG", k).env("HOME", k.parent().unwrap());
        }
        let mut child = cmd
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("client binary runs");
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    })
    .await
    .unwrap()
}

/// Polls `f` until it returns `Some`, failing with `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A kube-rs client for the simulator (administrator).
pub fn client(sim: &Simulator) -> kube::Client {
    kube::Client::try_from(kube::Config::new(sim.url.parse().unwrap())).unwrap()
}

/// A bin dir `root/tag` for an image tag whose `name` runs this build's
/// `name` with `extra` arguments first: another version, or a bad flag.
pub fn tag_bin_dir(root: &Path, tag: &str, name: &str, extra: &str) -> PathBuf {
    tag_bin_dir_with_env(root, tag, name, "", extra)
}

/// [`tag_bin_dir`] with environment assignments `env` (e.g.
/// `FAILPOINTS=...`, for the failpoints build the e2e tests run).
pub fn tag_bin_dir_with_env(root: &Path, tag: &str, name: &str, env: &str, extra: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let real = keyraft_e2e::sim::default_bin_dir().join(name);
    let dir = root.join(tag);
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join(name);
    std::fs::write(&script, format!("#!/bin/sh\nexec env {env} '{}' {extra} \"$@\"\n", real.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}
