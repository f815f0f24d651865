//! The kubelet: runs every scheduled pod as local processes (one per
//! container), publishes cluster DNS names and ClusterIP forwarding, and
//! serves the `/sim` fault hooks.

pub mod container;
pub mod dns;
pub mod env;
pub mod pod;
pub mod probe;
pub mod proxy;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use futures::future::BoxFuture;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::controllers::{self, name, namespace, terminating, uid};
use crate::error::{ApiError, ApiResult};
use crate::http::SimHooks;
use crate::network::SubnetLease;
use crate::objects::{DeleteOpts, Objects};
use crate::registry::GroupResource;
use container::{signal_group, ContainerState};
use pod::PodHandle;

/// What the kubelet needs.
pub struct KubeletConfig {
    pub objects: Objects,
    pub state_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub tag_bin_dirs: BTreeMap<String, PathBuf>,
    /// The API server URL written into pods' kubeconfigs.
    pub api_url: String,
    pub subnet: Arc<SubnetLease>,
    pub hosts_file: Option<PathBuf>,
}

pub(crate) struct Inner {
    pub(crate) cfg: KubeletConfig,
    /// Pod workers by pod uid.
    pub(crate) pods: Mutex<HashMap<String, PodHandle>>,
    dns: Mutex<Option<dns::HostsBlock>>,
    proxy: Mutex<proxy::Proxy>,
}

/// The kubelet. Cheap to clone.
#[derive(Clone)]
pub struct Kubelet {
    pub(crate) inner: Arc<Inner>,
}

fn key(resource: &str) -> GroupResource {
    GroupResource::new("", resource)
}

impl Kubelet {
    /// A kubelet; [`Kubelet::spawn`] starts it.
    pub fn new(cfg: KubeletConfig) -> Self {
        let dns = cfg
            .hosts_file
            .clone()
            .map(|p| dns::HostsBlock::new(p, format!("127.{}.0.0/16 pid {}", cfg.subnet.octet(), std::process::id())));
        Kubelet {
            inner: Arc::new(Inner {
                cfg,
                pods: Mutex::new(HashMap::new()),
                dns: Mutex::new(dns),
                proxy: Mutex::new(proxy::Proxy::default()),
            }),
        }
    }

    /// The address of a Node by name (`sim-node-<i>`).
    pub fn node_ip(&self, node: &str) -> String {
        let i = node.rsplit('-').next().and_then(|i| i.parse().ok()).unwrap_or(0);
        self.inner.cfg.subnet.node_ip(i).to_string()
    }

    /// Starts the sync loop.
    pub fn spawn(&self, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let k = self.clone();
        tokio::spawn(async move {
            let mut changes = k.inner.cfg.objects.store.changes();
            loop {
                k.sync();
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = changes.recv() => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        changes = changes.resubscribe();
                    }
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        })
    }

    /// One pass: start workers for new pods, stop deleted ones, update DNS,
    /// forwarding and volume directories.
    fn sync(&self) {
        let objects = &self.inner.cfg.objects;
        let (pods, _) = objects.store.list(&key("pods"), None);
        let live: HashSet<String> = pods.iter().map(|p| uid(p).to_string()).collect();
        {
            let mut workers = self.inner.pods.lock().unwrap();
            // Pods removed without graceful termination: kill at once.
            workers.retain(|u, h| {
                if live.contains(u) {
                    return true;
                }
                let _ = h.stop.send(Some(Duration::ZERO));
                false
            });
            for p in pods.iter() {
                let scheduled = p["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
                if !scheduled {
                    continue;
                }
                let u = uid(p).to_string();
                if let Some(h) = workers.get(&u) {
                    if terminating(p) && h.stop.borrow().is_none() {
                        let grace = p["metadata"]["deletionGracePeriodSeconds"].as_u64().unwrap_or(30);
                        let _ = h.stop.send(Some(Duration::from_secs(grace)));
                    }
                    pod::refresh_projected(self, p, &h.volumes.lock().unwrap());
                    continue;
                }
                let terminal = matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
                if terminal {
                    if terminating(p) {
                        let pods_rt = controllers::rt(objects, "", "pods");
                        let _ = objects.delete(
                            &pods_rt,
                            namespace(p),
                            name(p),
                            &DeleteOpts { grace_period_seconds: Some(0), ..Default::default() },
                        );
                    }
                    continue;
                }
                let states: Vec<ContainerState> = p["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| ContainerState {
                        name: c["name"].as_str().unwrap_or_default().into(),
                        image: c["image"].as_str().unwrap_or_default().into(),
                        ..Default::default()
                    })
                    .collect();
                let states = Arc::new(Mutex::new(states));
                let initial = terminating(p)
                    .then(|| Duration::from_secs(p["metadata"]["deletionGracePeriodSeconds"].as_u64().unwrap_or(0)));
                let (stop_tx, stop_rx) = watch::channel(initial);
                let vols = Arc::new(Mutex::new(BTreeMap::new()));
                workers.insert(
                    u,
                    PodHandle {
                        namespace: namespace(p).into(),
                        name: name(p).into(),
                        states: states.clone(),
                        stop: stop_tx,
                        volumes: vols.clone(),
                    },
                );
                tokio::spawn(self.clone().run_pod((**p).clone(), states, stop_rx, vols));
            }
        }
        self.sync_network(&pods);
        self.sync_volume_dirs();
    }

    fn sync_network(&self, pods: &[Arc<Value>]) {
        let objects = &self.inner.cfg.objects;
        let (services, _) = objects.store.list(&key("services"), None);
        self.inner.proxy.lock().unwrap().sync(&services, pods);
        let mut entries = Vec::new();
        for svc in &services {
            let (ns, sn) = (namespace(svc), name(svc));
            let names = |base: String| vec![base.clone(), format!("{base}.cluster.local")];
            let headless = svc["spec"]["clusterIP"] == "None";
            if !headless {
                if let Some(ip) = svc["spec"]["clusterIP"].as_str() {
                    for n in names(format!("{sn}.{ns}.svc")).into_iter().chain([format!("{sn}.{ns}")]) {
                        entries.push((ip.to_string(), n));
                    }
                }
                continue;
            }
            let Some(sel) = svc["spec"]["selector"].as_object().filter(|s| !s.is_empty()) else { continue };
            let selector =
                crate::selector::LabelSelector::from_object(&json!({"matchLabels": sel})).unwrap_or_default();
            let publish_not_ready = svc["spec"]["publishNotReadyAddresses"] == true;
            for p in pods.iter().filter(|p| namespace(p) == ns && selector.matches_object(p) && !terminating(p)) {
                // The address the kubelet reported for this incarnation.
                let Some(ip) = p["status"]["podIP"].as_str() else { continue };
                if !(publish_not_ready || controllers::pod_ready(p)) {
                    continue;
                }
                let ip = ip.to_string();
                if p["spec"]["subdomain"] == sn {
                    let host = p["spec"]["hostname"].as_str().unwrap_or(name(p));
                    for n in names(format!("{host}.{sn}.{ns}.svc")) {
                        entries.push((ip.clone(), n));
                    }
                }
                for n in names(format!("{sn}.{ns}.svc")) {
                    entries.push((ip.clone(), n));
                }
            }
        }
        if let Some(block) = self.inner.dns.lock().unwrap().as_mut() {
            if let Err(e) = block.update(entries) {
                tracing::warn!("cluster DNS: {e}");
            }
        }
    }

    /// Removes the directories of volumes whose claim is gone.
    fn sync_volume_dirs(&self) {
        let dir = self.inner.cfg.state_dir.join("volumes");
        let Ok(entries) = std::fs::read_dir(&dir) else { return };
        let (claims, _) = self.inner.cfg.objects.store.list(&key("persistentvolumeclaims"), None);
        let uids: HashSet<&str> = claims.iter().map(|c| uid(c)).collect();
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if !uids.contains(n.as_str()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// Stops every pod's containers (SIGTERM, SIGKILL after at most `cap`).
    pub async fn stop_all(&self, cap: Duration) {
        let handles: Vec<watch::Sender<Option<Duration>>> = {
            let workers = self.inner.pods.lock().unwrap();
            workers.values().map(|h| h.stop.clone()).collect()
        };
        for h in &handles {
            let _ = h.send(Some(cap.min(Duration::from_secs(30))));
        }
        let deadline = tokio::time::Instant::now() + cap + Duration::from_secs(2);
        while tokio::time::Instant::now() < deadline && self.running_pids().next().is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill_all_now();
        self.inner.proxy.lock().unwrap().stop();
    }

    fn running_pids(&self) -> impl Iterator<Item = i32> {
        let workers = self.inner.pods.lock().unwrap();
        let pids: Vec<i32> = workers
            .values()
            .flat_map(|h| h.states.lock().unwrap().iter().filter_map(|s| s.pid).collect::<Vec<_>>())
            .collect();
        pids.into_iter()
    }

    /// SIGKILLs every process at once (used when dropped without shutdown).
    pub fn kill_all_now(&self) {
        for pid in self.running_pids() {
            signal_group(pid, libc::SIGCONT);
            signal_group(pid, libc::SIGKILL);
        }
    }

    /// Removes this simulator's block from the hosts file.
    /// The block is taken out first, so that a name update still in flight
    /// when the tasks are aborted cannot write it back (seen as stale
    /// blocks left behind by test processes).
    pub fn remove_dns(&self) {
        let block = self.inner.dns.lock().unwrap().take();
        if let Some(mut b) = block {
            b.remove();
        }
    }

    fn pod_handle<T>(&self, ns: &str, pod: &str, f: impl FnOnce(&PodHandle) -> T) -> ApiResult<T> {
        let workers = self.inner.pods.lock().unwrap();
        workers
            .values()
            .find(|h| h.namespace == ns && h.name == pod)
            .map(f)
            .ok_or_else(|| ApiError::not_found("pods (running)", pod))
    }

    fn pids_of(&self, ns: &str, pod: &str) -> ApiResult<Vec<i32>> {
        self.pod_handle(ns, pod, |h| h.states.lock().unwrap().iter().filter_map(|s| s.pid).collect())
    }

    /// Signals every container process of a pod.
    pub fn signal_pod(&self, ns: &str, pod: &str, sig: i32) -> ApiResult<Vec<i32>> {
        let pids = self.pids_of(ns, pod)?;
        for p in &pids {
            signal_group(*p, sig);
        }
        Ok(pids)
    }

    /// Kills the processes of pods using a claim, then wipes its volume (a
    /// process still running must not write into the fresh volume).
    pub fn lose_volume(&self, ns: &str, claim: &str) -> ApiResult<Value> {
        let objects = &self.inner.cfg.objects;
        let pvc = objects
            .store
            .get(&key("persistentvolumeclaims"), ns, claim)
            .ok_or_else(|| ApiError::not_found("persistentvolumeclaims", claim))?;
        let dir = controllers::volumes::volume_dir(&self.inner.cfg.state_dir, &pvc);
        let users: Vec<String> = objects
            .store
            .list(&key("pods"), Some(ns))
            .0
            .iter()
            .filter(|p| {
                p["spec"]["volumes"]
                    .as_array()
                    .is_some_and(|v| v.iter().any(|v| v["persistentVolumeClaim"]["claimName"] == claim))
            })
            .map(|p| name(p).to_string())
            .collect();
        let mut pids = Vec::new();
        for u in &users {
            pids.extend(self.signal_pod(ns, u, libc::SIGKILL).unwrap_or_default());
        }
        // Wait (bounded) until the killed processes are gone; the kubelet
        // restarts containers after a back-off of at least a second.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while pids.iter().any(|p| process_alive(*p)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
        Ok(json!({"claim": claim, "wiped": dir, "killedPods": users}))
    }

    /// Information about a running pod: address, pids, volume directories.
    pub fn pod_info(&self, ns: &str, pod: &str) -> ApiResult<Value> {
        let ip = self.inner.cfg.subnet.existing_pod_ip(ns, pod).map(|i| i.to_string());
        self.pod_handle(ns, pod, |h| {
            json!({
                "ip": ip,
                "pids": h.states.lock().unwrap().iter().filter_map(|s| s.pid).collect::<Vec<_>>(),
                "volumes": h.volumes.lock().unwrap().clone(),
            })
        })
    }
}

impl SimHooks for Kubelet {
    fn handle(
        &self,
        method: Method,
        segments: Vec<String>,
        _query: HashMap<String, String>,
    ) -> BoxFuture<'static, ApiResult<Value>> {
        let k = self.clone();
        Box::pin(async move {
            let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
            let objects = &k.inner.cfg.objects;
            match (method, segs.as_slice()) {
                (Method::GET, ["pods", ns, pod]) => k.pod_info(ns, pod),
                (Method::POST, ["pods", ns, pod, "kill"]) => {
                    Ok(json!({"killed": k.signal_pod(ns, pod, libc::SIGKILL)?}))
                }
                (Method::POST, ["pods", ns, pod, "pause"]) => {
                    Ok(json!({"paused": k.signal_pod(ns, pod, libc::SIGSTOP)?}))
                }
                (Method::POST, ["pods", ns, pod, "resume"]) => {
                    Ok(json!({"resumed": k.signal_pod(ns, pod, libc::SIGCONT)?}))
                }
                (Method::POST, ["pvcs", ns, claim, "lose"]) => k.lose_volume(ns, claim),
                (Method::POST, ["nodes", node, "notready"]) => {
                    controllers::nodes::set_ready(objects, node, false)?;
                    Ok(json!({"node": node, "ready": false}))
                }
                (Method::POST, ["nodes", node, "ready"]) => {
                    controllers::nodes::set_ready(objects, node, true)?;
                    Ok(json!({"node": node, "ready": true}))
                }
                (m, s) => Err(ApiError::no_route(&format!("{m} /sim/{}", s.join("/")))),
            }
        })
    }
}

/// Whether a process still runs (a zombie waiting to be reaped counts as gone).
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
