//! Operator scenarios: a simulator with the operator installed by `helm
//! install` of charts/keyraft-operator, KeyraftClusters applied with
//! kubectl, their status read back, and a client workload that records every
//! acknowledged write.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use keyraft_client::{pb, Client, ClientOptions, ConsistencyLevel, TlsOptions};
use keyraft_e2e::Simulator;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::Value;

use super::{tool, wait_for, Out};

/// Namespace the chart is installed into.
pub const OPERATOR_NS: &str = "keyraft-system";

/// A simulator with cluster DNS and the operator chart installed, or the
/// external cluster of `KEYRAFT_E2E_CLUSTER=external` with the operator
/// already installed (e2e/kind).
pub struct Env {
    sim: Option<Simulator>,
    pub kubectl: PathBuf,
    pub helm: PathBuf,
    pub kube: kube::Client,
    _dir: Option<tempfile::TempDir>,
}

impl Env {
    /// `None` (the test prints SKIPPED and passes) without tools/bin. The
    /// node and operator binaries must be built: their absence fails.
    pub async fn with_operator() -> Option<Env> {
        Env::with_operator_on(|_| {}).await
    }

    /// [`Env::with_operator`] on a simulator configured by `configure`
    /// (more Nodes, image tags that run other builds).
    pub async fn with_operator_on(configure: impl FnOnce(&mut keyraft_e2e::SimConfig)) -> Option<Env> {
        let (Some(helm), Some(kubectl)) = (tool("helm"), tool("kubectl")) else { return None };
        if super::external() {
            let kube = kube::Client::try_default().await.expect("a kubeconfig or in-cluster account");
            let env = Env { sim: None, kubectl, helm, kube, _dir: None };
            let out = env.helm(&["status", "op", "-n", OPERATOR_NS]).await;
            assert!(out.ok, "the operator must be installed as release op in {OPERATOR_NS}: {}", out.stderr);
            return Some(env);
        }
        let bin = keyraft_e2e::sim::default_bin_dir();
        for b in ["keyraft-node", "keyraft-operator"] {
            assert!(
                bin.join(b).is_file(),
                "{} is missing: run `cargo build -p keyraft-node -p keyraft-operator` first",
                bin.join(b).display()
            );
        }
        let (sim, dir) = super::start_with(true, configure).await;
        let kube = super::client(&sim);
        let env = Env { sim: Some(sim), kubectl, helm, kube, _dir: Some(dir) };
        let chart = super::repo().join("charts/keyraft-operator");
        let out = env.helm(&["install", "op", chart.to_str().unwrap(), "-n", OPERATOR_NS, "--create-namespace"]).await;
        assert!(out.ok, "helm install: {}\n{}", out.stdout, out.stderr);
        Some(env)
    }

    fn kubeconfig(&self) -> Option<&std::path::Path> {
        self.sim.as_ref().map(|s| s.kubeconfig.as_path())
    }

    /// The simulator's fault hooks, or `None` on an external cluster (the
    /// caller prints SKIPPED naming `what` and returns).
    pub fn faults(&self, what: &str) -> Option<&Simulator> {
        if self.sim.is_none() {
            eprintln!("SKIPPED: {what} needs the simulator's fault hooks");
        }
        self.sim.as_ref()
    }

    fn sim(&self) -> &Simulator {
        self.sim.as_ref().expect("a simulator fault hook on an external cluster: check Env::faults first")
    }

    /// Stops the simulator and every process it started; nothing on an
    /// external cluster.
    pub async fn shutdown(self) {
        if let Some(sim) = self.sim {
            sim.shutdown().await;
        }
    }

    pub async fn helm(&self, args: &[&str]) -> Out {
        super::run_with(self.kubeconfig(), &self.helm, args, None).await
    }

    pub async fn kubectl(&self, args: &[&str]) -> Out {
        super::run_with(self.kubeconfig(), &self.kubectl, args, None).await
    }

    pub async fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Out {
        super::run_with(self.kubeconfig(), &self.kubectl, args, Some(stdin)).await
    }

    /// kubectl that must succeed; its stdout.
    pub async fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args).await;
        assert!(out.ok, "kubectl {}: {}{}", args.join(" "), out.stdout, out.stderr);
        out.stdout
    }

    /// Creates a scenario namespace, labelled so e2e/kind/kind-e2e.sh can
    /// remove what an earlier run left.
    pub async fn create_namespace(&self, ns: &str) {
        self.kubectl_ok(&["create", "namespace", ns]).await;
        self.kubectl_ok(&["label", "namespace", ns, "keyraft.io/e2e=scenario"]).await;
    }

    /// `kubectl apply --server-side` of a file under the repository.
    pub async fn apply_file(&self, ns: &str, path: &str) {
        let path = super::repo().join(path);
        self.kubectl_ok(&["apply", "--server-side", "-n", ns, "-f", path.to_str().unwrap()]).await;
    }

    /// `kubectl apply --server-side` of a manifest.
    pub async fn apply(&self, ns: &str, manifest: &str) {
        let out = self.kubectl_stdin(&["apply", "--server-side", "-n", ns, "-f", "-"], manifest).await;
        assert!(out.ok, "apply: {}{}", out.stdout, out.stderr);
    }

    fn clusters(&self, ns: &str) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("keyraft.io", "v1alpha1", "KeyraftCluster");
        Api::namespaced_with(self.kube.clone(), ns, &ApiResource::from_gvk(&gvk))
    }

    /// The KeyraftCluster as JSON, or `None` when it does not exist.
    pub async fn cluster(&self, ns: &str, name: &str) -> Option<Value> {
        let obj = self.clusters(ns).get_opt(name).await.expect("reading the KeyraftCluster")?;
        Some(serde_json::to_value(obj).unwrap())
    }

    /// Waits until the operator reports the cluster settled at `replicas`
    /// for the current generation (see [`settled`]); returns the object.
    pub async fn wait_running(&self, ns: &str, name: &str, replicas: i64, limit: Duration) -> Value {
        let what = format!("Running with {replicas} ready replicas");
        self.wait_status(ns, name, &what, limit, |kr| settled(kr, replicas)).await
    }

    /// The cluster once `f` holds for it and its status is of the current
    /// generation; fails naming `what` with the last status after `limit`.
    pub async fn wait_status(
        &self,
        ns: &str,
        name: &str,
        what: &str,
        limit: Duration,
        mut f: impl FnMut(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(kr) = self.cluster(ns, name).await {
                if kr["status"]["observedGeneration"] == kr["metadata"]["generation"] && f(&kr) {
                    self.fetch_credentials(ns, name).await;
                    return kr;
                }
                last = kr["status"].clone();
            }
            assert!(
                Instant::now() < deadline,
                "{ns}/{name}: timed out after {limit:?} waiting for {what}; last status:\n{}",
                serde_json::to_string_pretty(&without_partitions(&last)).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Reads the cluster's admin certificate from its Secret (`<name>-admin-tls`,
    /// as a person would with kubectl) into files the clients of this test
    /// process use for the cluster's endpoints (see [`client_options`]).
    pub async fn fetch_credentials(&self, ns: &str, name: &str) {
        let api = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(self.kube.clone(), ns);
        let Some(secret) = api.get_opt(&format!("{name}-admin-tls")).await.expect("reading the admin Secret") else {
            return;
        };
        let data = secret.data.unwrap_or_default();
        let dir = std::env::temp_dir()
            .join(format!("keyraft-e2e-credentials-{}", std::process::id()))
            .join(format!("{ns}.{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        for (key, file) in [("ca.crt", "ca.pem"), ("tls.crt", "admin.pem"), ("tls.key", "admin-key.pem")] {
            let bytes = &data.get(key).unwrap_or_else(|| panic!("{ns}/{name}-admin-tls has no {key}")).0;
            // Replaced atomically: clients reread the files on their own.
            let tmp = dir.join(format!("{file}.tmp"));
            std::fs::write(&tmp, bytes).unwrap();
            std::fs::rename(&tmp, dir.join(file)).unwrap();
        }
        CREDENTIALS.lock().unwrap().insert(
            (ns.to_string(), name.to_string()),
            TlsOptions {
                ca: dir.join("ca.pem"),
                cert: Some(dir.join("admin.pem")),
                key: Some(dir.join("admin-key.pem")),
            },
        );
    }

    /// The zone label of the Node a pod runs on.
    pub async fn pod_zone(&self, ns: &str, pod: &str) -> String {
        let pod = Api::<Pod>::namespaced(self.kube.clone(), ns).get(pod).await.unwrap();
        let node = pod.spec.and_then(|s| s.node_name).expect("scheduled pod");
        let node = Api::<Node>::all(self.kube.clone()).get(&node).await.unwrap();
        node.metadata.labels.unwrap_or_default().get("topology.kubernetes.io/zone").cloned().unwrap_or_default()
    }

    /// Names of the objects of `kinds` labelled as cluster `name`'s.
    pub async fn cluster_objects(&self, ns: &str, name: &str, kinds: &str) -> Vec<String> {
        let selector = format!("app.kubernetes.io/instance={name}");
        let out = self.kubectl_ok(&["get", kinds, "-n", ns, "-l", &selector, "-o", "name"]).await;
        out.lines().map(String::from).collect()
    }

    /// Host directories of the volumes of `pod`, from the simulator's pod hook.
    pub async fn volume_dirs(&self, ns: &str, pod: &str) -> Vec<PathBuf> {
        let k = &self.sim().kubelet;
        let info = wait_for("the pod's worker", Duration::from_secs(10), || async { k.pod_info(ns, pod).ok() }).await;
        info["volumes"].as_object().map_or_else(Vec::new, |m| {
            m.values()
                .filter_map(|v| v.as_str())
                .map(PathBuf::from)
                .filter(|p| p.starts_with(self.volumes_root()))
                .collect()
        })
    }

    /// Sends `sig` to every process of a pod (SIGKILL, SIGSTOP, SIGCONT).
    pub fn signal(&self, ns: &str, pod: &str, sig: i32) {
        self.sim().kubelet.signal_pod(ns, pod, sig).unwrap_or_else(|e| panic!("signalling {pod}: {e:?}"));
    }

    /// Marks a simulated Node NotReady (its pods turn unready, their
    /// processes keep running) or Ready again.
    pub fn set_node_ready(&self, node: &str, ready: bool) {
        keyraft_e2e::controllers::nodes::set_ready(&self.sim().objects, node, ready)
            .unwrap_or_else(|e| panic!("setting {node} ready={ready}: {e:?}"));
    }

    /// The Node a pod is scheduled on.
    pub async fn pod_node(&self, ns: &str, pod: &str) -> String {
        let pod = Api::<Pod>::namespaced(self.kube.clone(), ns).get(pod).await.unwrap();
        pod.spec.and_then(|s| s.node_name).expect("scheduled pod")
    }

    /// Wipes a claim's data and kills the pods using it.
    pub fn lose_volume(&self, ns: &str, claim: &str) {
        self.sim().kubelet.lose_volume(ns, claim).unwrap_or_else(|e| panic!("losing {claim}: {e:?}"));
    }

    /// Merge-patches the KeyraftCluster's spec.
    pub async fn patch_spec(&self, ns: &str, name: &str, spec: Value) {
        let patch = serde_json::json!({ "spec": spec }).to_string();
        self.kubectl_ok(&["patch", "kr", name, "-n", ns, "--type=merge", "-p", &patch]).await;
    }

    /// (reason, type, note) of the cluster's Events, oldest first.
    pub async fn events(&self, ns: &str, name: &str) -> Vec<(String, String, String)> {
        let out = self
            .kubectl_ok(&[
                "get",
                "events",
                "-n",
                ns,
                "--field-selector",
                &format!("involvedObject.name={name}"),
                "-o",
                "jsonpath={range .items[*]}{.reason}{\"\\t\"}{.type}{\"\\t\"}{.note}{.message}{\"\\n\"}{end}",
            ])
            .await;
        out.lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, '\t');
                Some((f.next()?.to_string(), f.next()?.to_string(), f.next().unwrap_or_default().to_string()))
            })
            .collect()
    }

    /// Event reasons recorded for the cluster, oldest first.
    pub async fn event_reasons(&self, ns: &str, name: &str) -> Vec<String> {
        self.events(ns, name).await.into_iter().map(|(reason, _, _)| reason).collect()
    }

    fn volumes_root(&self) -> PathBuf {
        self.sim().kubeconfig.parent().unwrap().join("volumes")
    }
}

/// Whether the status says: this generation observed, phase Running,
/// `replicas` pods all ready, Available=True for this generation, and no
/// rebalance under way.
pub fn settled(kr: &Value, replicas: i64) -> bool {
    let s = &kr["status"];
    let generation = &kr["metadata"]["generation"];
    s["observedGeneration"] == *generation
        && s["phase"] == "Running"
        && s["replicas"] == replicas
        && s["readyReplicas"] == replicas
        && s["members"].as_array().is_some_and(|m| m.len() as i64 == replicas && m.iter().all(|m| m["ready"] == true))
        && condition(kr, "Available").is_some_and(|c| c["status"] == "True" && c["observedGeneration"] == *generation)
        && condition(kr, "Rebalancing").is_none_or(|c| c["status"] != "True")
}

/// `status.members`.
pub fn members(kr: &Value) -> &Vec<Value> {
    kr["status"]["members"].as_array().expect("status.members")
}

/// The member of a pod in `status.members`.
pub fn member<'a>(kr: &'a Value, pod: &str) -> &'a Value {
    members(kr).iter().find(|m| m["pod"] == pod).unwrap_or_else(|| panic!("{pod} not in status.members"))
}

/// The node id of a pod's member.
pub fn node_id(kr: &Value, pod: &str) -> u64 {
    member(kr, pod)["nodeId"].as_u64().unwrap_or_else(|| panic!("{pod} has no node id: {}", member(kr, pod)))
}

/// The pod's member reports a node id other than `old`.
pub fn new_id(kr: &Value, pod: &str, old: u64) -> bool {
    members(kr).iter().any(|m| m["pod"] == pod && m["nodeId"].as_u64().is_some_and(|id| id != old))
}

/// A status condition by type.
pub fn condition<'a>(kr: &'a Value, type_: &str) -> Option<&'a Value> {
    kr["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

/// The status without its (long) partition table, for failure messages.
pub fn without_partitions(status: &Value) -> Value {
    let mut s = status.clone();
    if let Some(o) = s.as_object_mut() {
        o.remove("partitions");
    }
    s
}

/// Client address of pod `ordinal` through its cluster DNS name.
pub fn pod_endpoint(ns: &str, name: &str, ordinal: usize) -> String {
    format!("{name}-{ordinal}.{name}-headless.{ns}.svc:7000")
}

pub fn pod_endpoints(ns: &str, name: &str, replicas: usize) -> Vec<String> {
    (0..replicas).map(|i| pod_endpoint(ns, name, i)).collect()
}

/// Client address of the cluster's client Service.
pub fn service_endpoint(ns: &str, name: &str) -> String {
    format!("{name}.{ns}.svc:7000")
}

/// Admin credentials of each cluster (namespace, name) this process has
/// seen settle, from its Secret.
static CREDENTIALS: Mutex<BTreeMap<(String, String), TlsOptions>> = Mutex::new(BTreeMap::new());

/// The cluster (namespace, name) an endpoint of [`pod_endpoint`] or
/// [`service_endpoint`] belongs to.
fn cluster_of(endpoint: &str) -> Option<(String, String)> {
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(h, _)| h);
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        [_pod, headless, ns, "svc", ..] if headless.ends_with("-headless") => {
            Some((ns.to_string(), headless.trim_end_matches("-headless").to_string()))
        }
        [name, ns, "svc", ..] => Some((ns.to_string(), name.to_string())),
        _ => None,
    }
}

/// Client options for a cluster's endpoints: TLS with the admin certificate
/// fetched when the cluster settled.
pub fn client_options(endpoints: Vec<String>) -> ClientOptions {
    let tls = endpoints.first().and_then(|e| cluster_of(e)).and_then(|c| CREDENTIALS.lock().unwrap().get(&c).cloned());
    let mut o = ClientOptions::new(endpoints);
    o.tls = tls;
    o
}

pub fn client(endpoints: Vec<String>) -> Client {
    Client::new(client_options(endpoints)).expect("client")
}

/// Admin.Status of one node, straight from its address: each call bounded
/// by 5 s, retried for 30 s on a fresh connection.
pub async fn node_status(addr: &str) -> pb::StatusResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = client(vec![addr.to_string()]);
        let mut admin = c.admin(addr).expect("admin client");
        let err = match tokio::time::timeout(Duration::from_secs(5), admin.status(pb::StatusRequest {})).await {
            Ok(Ok(r)) => return r.into_inner(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 5 s".to_string(),
        };
        assert!(Instant::now() < deadline, "Admin.Status of {addr}: {err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a workload saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// (key, value) of every acknowledged write.
    pub acked: Vec<(String, String)>,
    /// Errors of writes that were not acknowledged.
    pub failed: Vec<String>,
    /// Read-your-write checks that returned something else.
    pub wrong_reads: Vec<String>,
    /// (writer, when) of every acknowledgement, in order per writer.
    pub acks: Vec<(usize, Instant)>,
    /// Requests the client retried (what a user sees as latency, not errors).
    pub retries: u64,
}

impl Tally {
    /// The longest time any writer waited, from `from` or its last
    /// acknowledgement after it, for an acknowledgement before `to`: how
    /// long writes were unavailable to it after an event at `from`.
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let mut last: std::collections::HashMap<usize, Instant> = std::collections::HashMap::new();
        let mut longest = Duration::ZERO;
        for (w, at) in self.acks.iter().filter(|(_, at)| *at > from && *at <= to) {
            let prev = last.insert(*w, *at).unwrap_or(from);
            longest = longest.max(at.duration_since(prev));
        }
        longest
    }
}

/// Writers that put distinct keys until stopped, each reading back every
/// tenth key it wrote; a write counts only once acknowledged.
pub struct Workload {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    tally: Arc<Mutex<Tally>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    client: Client,
}

impl Workload {
    pub fn start(endpoints: Vec<String>, writers: usize, prefix: &str) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let c = client(endpoints);
        let tasks = (0..writers)
            .map(|w| {
                let (c, stop, acked, tally) = (c.clone(), stop.clone(), acked.clone(), tally.clone());
                let prefix = prefix.to_string();
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("{prefix}/{w}/{i:06}");
                        let value = format!("value {w} {i}");
                        match c.put(key.clone(), value.clone()).await {
                            Ok(_) => {
                                {
                                    let mut t = tally.lock().unwrap();
                                    t.acked.push((key.clone(), value.clone()));
                                    t.acks.push((w, Instant::now()));
                                }
                                acked.fetch_add(1, Ordering::Relaxed);
                                if i.is_multiple_of(10) {
                                    match c.get(key.clone(), None).await {
                                        Ok(Some(v)) if v == value.as_bytes() => {}
                                        other => tally.lock().unwrap().wrong_reads.push(format!("{key}: {other:?}")),
                                    }
                                }
                            }
                            Err(e) => tally.lock().unwrap().failed.push(format!("{key}: {e}")),
                        }
                        i += 1;
                        // A steady rate, not a CPU hog on a shared machine.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect();
        Workload { stop, acked, tally, tasks, client: c }
    }

    /// Acknowledged writes so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `more` writes beyond the current count are acknowledged:
    /// the cluster is serving now, not only at the start.
    pub async fn progresses(&self, more: usize, limit: Duration) {
        let target = self.acked() + more;
        let deadline = Instant::now() + limit;
        while self.acked() < target {
            if Instant::now() >= deadline {
                let t = self.tally.lock().unwrap();
                let recent: Vec<&String> = t.failed.iter().rev().take(5).collect();
                panic!(
                    "the workload stalled: {} of {more} more writes acknowledged in {limit:?}; {} failed, latest: {recent:?}",
                    self.acked() + more - target,
                    t.failed.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("writer task");
        }
        let mut tally = Arc::try_unwrap(self.tally).expect("writers done").into_inner().unwrap();
        tally.retries = self.client.stats().retries.load(Ordering::Relaxed);
        tally
    }
}

/// Every acknowledged write reads back (linearizable) through `endpoints`,
/// 16 reads in flight at a time.
pub async fn assert_all_readable(endpoints: Vec<String>, acked: &[(String, String)]) {
    use futures::StreamExt;
    let c = client(endpoints);
    let lost: Vec<String> = futures::stream::iter(acked)
        .map(|(k, v)| {
            let c = c.clone();
            async move {
                match c.get(k.clone(), Some(ConsistencyLevel::Linearizable)).await {
                    Ok(Some(got)) if got == v.as_bytes() => None,
                    other => Some(format!("{k}: {other:?}")),
                }
            }
        })
        .buffer_unordered(16)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    assert!(lost.is_empty(), "{} of {} acknowledged writes not readable: {:?}", lost.len(), acked.len(), lost);
}

/// The status agrees with what the nodes themselves report and with the
/// Kubernetes objects: member node ids, names, cluster id, zones, the
/// partition table, versions and conditions.
pub async fn assert_status_truthful(env: &Env, ns: &str, kr: &Value) {
    let name = kr["metadata"]["name"].as_str().unwrap();
    let s = &kr["status"];
    let spec = &kr["spec"];
    let replicas = spec["replicas"].as_i64().unwrap() as usize;
    let cluster_id = s["clusterId"].as_str().expect("status.clusterId");
    assert!(!cluster_id.is_empty());

    let members = s["members"].as_array().expect("status.members");
    let mut ids = BTreeSet::new();
    for (i, m) in members.iter().enumerate() {
        let pod = format!("{name}-{i}");
        assert_eq!(m["pod"], pod.as_str(), "members in ordinal order: {m}");
        let node = node_status(&pod_endpoint(ns, name, i)).await;
        let info = node.node.expect("NodeInfo");
        assert_eq!(m["nodeId"].as_u64(), Some(info.id), "{pod}: status nodeId vs the node's own id");
        assert_eq!(info.name, pod);
        assert_eq!(info.cluster_id, cluster_id, "{pod}: cluster id");
        assert!(info.joined && info.ready, "{pod} joined and ready: {info:?}");
        assert_eq!(m["state"], "active", "{pod}");
        assert_eq!(m["version"], spec["version"], "{pod}");
        assert_eq!(m["zone"], env.pod_zone(ns, &pod).await.as_str(), "{pod}: zone of its Node");
        ids.insert(info.id);
    }
    assert_eq!(ids.len(), replicas, "distinct node ids");

    let rf = spec["replicationFactor"].as_u64().unwrap() as usize;
    let partitions = s["partitions"].as_array().expect("status.partitions");
    assert_eq!(partitions.len() as u64, spec["partitions"].as_u64().unwrap(), "one entry per partition");
    for p in partitions {
        let reps: BTreeSet<u64> = p["replicas"].as_array().unwrap().iter().map(|r| r.as_u64().unwrap()).collect();
        assert_eq!(reps.len(), rf, "partition {}: {rf} distinct replicas", p["partition"]);
        assert!(reps.is_subset(&ids), "partition {} on non-members: {reps:?} vs {ids:?}", p["partition"]);
        if let Some(l) = p["leader"].as_u64() {
            assert!(reps.contains(&l), "partition {}: leader {l} is not a replica", p["partition"]);
        }
    }

    assert_eq!(s["currentVersion"], spec["version"]);
    assert_eq!(s["targetVersion"], spec["version"]);
    let generation = &kr["metadata"]["generation"];
    for (type_, want) in [("Available", "True"), ("Degraded", "False"), ("Progressing", "False")] {
        let c = condition(kr, type_).unwrap_or_else(|| panic!("condition {type_} missing"));
        assert_eq!(c["status"], want, "{type_}: {c}");
        assert_eq!(c["observedGeneration"], *generation, "{type_}: {c}");
        assert!(c["reason"].as_str().is_some_and(|r| !r.is_empty()), "{type_} has a reason: {c}");
    }

    // The Kubernetes side agrees: the StatefulSet and its pods.
    let ready = env
        .kubectl_ok(&["get", "statefulset", name, "-n", ns, "-o", "jsonpath={.spec.replicas}/{.status.readyReplicas}"])
        .await;
    assert_eq!(ready, format!("{replicas}/{replicas}"), "StatefulSet replicas/ready");
}

/// A scenario's namespace: `prefix` and this test process's id.
pub fn namespace(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

/// A KeyraftCluster named `name` with `spec` merged over a small default
/// (8 partitions, 4 moves at a time).
pub fn manifest(name: &str, spec: serde_json::Value) -> String {
    let mut base = serde_json::json!({
        "apiVersion": "keyraft.io/v1alpha1",
        "kind": "KeyraftCluster",
        "metadata": {"name": name},
        "spec": {"partitions": 8, "rebalance": {"maxConcurrentMoves": 4}},
    });
    for (k, v) in spec.as_object().unwrap() {
        base["spec"][k] = v.clone();
    }
    serde_json::to_string(&base).unwrap()
}
