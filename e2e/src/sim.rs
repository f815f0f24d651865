//! Starting and stopping the whole simulator: API server, controllers,
//! kubelet, cluster DNS; and the kubeconfig files it hands out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::Authorizer;
use crate::controllers;
use crate::error::Error;
use crate::http::{self, AppState};
use crate::kubelet::{self, Kubelet};
use crate::network::SubnetLease;
use crate::objects::{Objects, WriteOpts};
use crate::registry::{GroupResource, Registry};
use crate::store::Store;

/// Token of the administrator in the kubeconfig the simulator writes.
pub const ADMIN_TOKEN: &str = "keyraft-sim-admin";

/// Configuration of a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where the API server listens; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Pod directories, PVC data, logs and kubeconfigs live here.
    pub state_dir: PathBuf,
    /// Where `keyraft-node`/`keyraft-operator` binaries are found for image
    /// tags without an entry in `tag_bin_dirs`.
    pub bin_dir: PathBuf,
    /// Image tag -> directory of the binaries that tag runs (upgrades).
    pub tag_bin_dirs: BTreeMap<String, PathBuf>,
    /// Number of simulated Nodes (zones zone-a, zone-b, zone-c, ...).
    pub nodes: usize,
    /// Write pod and Service DNS names into this hosts file
    /// (`/etc/hosts`); `None` disables cluster DNS.
    pub hosts_file: Option<PathBuf>,
    /// Which of a real cluster's rules the simulator enforces (all by default).
    pub strict: crate::strict::Strictness,
}

impl SimConfig {
    /// Defaults: a free port on 127.0.0.1, 3 nodes, binaries from the
    /// directory of the running executable (or its parent, for test
    /// binaries in target/debug/deps), DNS in /etc/hosts when writable.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        SimConfig {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            state_dir: state_dir.into(),
            bin_dir: default_bin_dir(),
            tag_bin_dirs: BTreeMap::new(),
            nodes: 3,
            hosts_file: Some(PathBuf::from("/etc/hosts")),
            strict: crate::strict::Strictness::default(),
        }
    }
}

/// target/debug next to the running executable: the executable's
/// directory, or its parent when that is `deps` (test binaries).
pub fn default_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

/// A running simulator. Dropping it stops everything it started.
pub struct Simulator {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// The administrator's kubeconfig.
    pub kubeconfig: PathBuf,
    pub objects: Objects,
    pub kubelet: Kubelet,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _subnet: Arc<SubnetLease>,
}

/// A kubeconfig for `server` authenticating with `token`.
pub fn kubeconfig_yaml(server: &str, token: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: keyraft-sim\n  cluster:\n    server: {server}\nusers:\n- name: keyraft-sim\n  user:\n    token: {token}\ncontexts:\n- name: keyraft-sim\n  context:\n    cluster: keyraft-sim\n    user: keyraft-sim\n    namespace: {namespace}\ncurrent-context: keyraft-sim\n"
    )
}

impl Simulator {
    /// Starts the API server, controllers and kubelet.
    pub async fn start(cfg: SimConfig) -> Result<Simulator, Error> {
        std::fs::create_dir_all(&cfg.state_dir)
            .map_err(|e| Error::io(format!("creating {}", cfg.state_dir.display()), e))?;
        let state_dir =
            cfg.state_dir.canonicalize().map_err(|e| Error::io(format!("resolving {}", cfg.state_dir.display()), e))?;
        let subnet = Arc::new(SubnetLease::acquire()?);
        let registry = Registry::new();
        let store = Store::new();
        let objects = Objects::new(registry, store, &subnet.service_prefix()).with_strictness(cfg.strict.clone());
        bootstrap(&objects, cfg.nodes)?;

        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| Error::io(format!("binding {}", cfg.listen), e))?;
        let addr = listener.local_addr().map_err(|e| Error::io("local address", e))?;
        let url = format!("http://{addr}");
        let kubeconfig = state_dir.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(&url, ADMIN_TOKEN, "default"))
            .map_err(|e| Error::io(format!("writing {}", kubeconfig.display()), e))?;

        let (stop, stop_rx) = watch::channel(false);
        let pods_dir = state_dir.join("pods");
        let kubelet = Kubelet::new(kubelet::KubeletConfig {
            objects: objects.clone(),
            state_dir: state_dir.clone(),
            bin_dir: cfg.bin_dir.clone(),
            tag_bin_dirs: cfg.tag_bin_dirs.clone(),
            api_url: url.clone(),
            subnet: subnet.clone(),
            hosts_file: cfg.hosts_file.clone(),
        });
        let state = AppState {
            objects: objects.clone(),
            server_address: addr.to_string(),
            pods_dir,
            sim: Some(Arc::new(kubelet.clone())),
            auth: Authorizer::new(objects.clone(), ADMIN_TOKEN.into()),
        };
        let mut tasks = Vec::new();
        let app = http::router(state);
        let mut srv_stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = srv_stop.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!("API server stopped: {e}");
            }
        }));
        tasks.extend(controllers::spawn_all(objects.clone(), stop_rx.clone()));
        tasks.push(kubelet.spawn(stop_rx.clone()));
        Ok(Simulator { url, kubeconfig, objects, kubelet, stop, tasks, _subnet: subnet })
    }

    /// Stops controllers and the server, and terminates every pod process
    /// (SIGTERM, then SIGKILL after their grace period, at most 10 s).
    pub async fn shutdown(mut self) {
        self.kubelet.stop_all(std::time::Duration::from_secs(10)).await;
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.kubelet.remove_dns();
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        self.kubelet.kill_all_now();
        self.kubelet.remove_dns();
    }
}

/// The objects a fresh cluster has: system namespaces and the Nodes.
fn bootstrap(objects: &Objects, nodes: usize) -> Result<(), Error> {
    let reg = &objects.registry;
    let ns_rt = reg.get(&GroupResource::new("", "namespaces")).expect("builtin");
    let opts = WriteOpts::default();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        objects.create(&ns_rt, "", json!({"metadata": {"name": ns}}), &opts)?;
    }
    let node_rt = reg.get(&GroupResource::new("", "nodes")).expect("builtin");
    for i in 0..nodes {
        let name = format!("sim-node-{i}");
        let zone = format!("zone-{}", (b'a' + (i % 26) as u8) as char);
        objects.create(
            &node_rt,
            "",
            json!({"metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "topology.kubernetes.io/zone": zone,
            }}}),
            &opts,
        )?;
        controllers::nodes::set_ready(objects, &name, true)?;
    }
    Ok(())
}
