//! The pod worker: prepares a scheduled pod's volumes and environment,
//! runs its containers, writes its status (IP, phase, conditions,
//! container statuses), and on deletion stops the containers within the
//! grace period and removes the pod.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

use super::container::{ContainerSpec, ContainerState};
use super::env::{image_parts, PodContext};
use super::Kubelet;
use crate::controllers::{self, name, namespace, terminating, uid};
use crate::objects::DeleteOpts;
use crate::registry::GroupResource;
use crate::time;

/// Handle of a running pod worker.
pub struct PodHandle {
    pub namespace: String,
    pub name: String,
    pub states: Arc<Mutex<Vec<ContainerState>>>,
    /// Some(grace) stops the containers.
    pub stop: watch::Sender<Option<Duration>>,
    pub volumes: Arc<Mutex<BTreeMap<String, PathBuf>>>,
}

fn pods_key() -> GroupResource {
    GroupResource::new("", "pods")
}

/// The files of a configMap or secret volume from the object as it is now:
/// `None` for other volumes, `Some(None)` when the object is missing.
fn projected(k: &Kubelet, ns: &str, v: &Value) -> Option<Option<BTreeMap<String, Vec<u8>>>> {
    let objects = &k.inner.cfg.objects;
    let (resource, name) = if let Some(cm) = v["configMap"]["name"].as_str() {
        ("configmaps", cm)
    } else {
        ("secrets", v["secret"]["secretName"].as_str()?)
    };
    let Some(obj) = objects.store.get(&GroupResource::new("", resource), ns, name) else { return Some(None) };
    let data = obj["data"].as_object().cloned().unwrap_or_default().into_iter().map(|(k, v)| {
        let s = v.as_str().unwrap_or_default();
        let bytes = if resource == "secrets" {
            base64::engine::general_purpose::STANDARD.decode(s).unwrap_or_default()
        } else {
            s.as_bytes().to_vec()
        };
        (k, bytes)
    });
    Some(Some(data.collect()))
}

/// Makes a volume directory hold exactly `data`: changed files are replaced
/// atomically (a reader sees the old file or the new one), files whose key
/// is gone are removed, unchanged files are left alone.
fn write_files(dir: &std::path::Path, data: &BTreeMap<String, Vec<u8>>) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for (k, v) in data {
        let path = dir.join(k);
        if std::fs::read(&path).ok().as_ref() == Some(v) {
            continue;
        }
        let tmp = dir.join(format!(".{k}.tmp"));
        std::fs::write(&tmp, v).and_then(|_| std::fs::rename(&tmp, &path)).map_err(|e| e.to_string())?;
    }
    for e in std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !data.contains_key(&name) && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// Resolves the pod's volumes to host directories, or says what is missing.
fn volumes(k: &Kubelet, pod: &Value, pod_dir: &std::path::Path) -> Result<BTreeMap<String, PathBuf>, String> {
    let objects = &k.inner.cfg.objects;
    let ns = namespace(pod);
    let mut out = BTreeMap::new();
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let vname = v["name"].as_str().unwrap_or_default().to_string();
        let dir = pod_dir.join("volumes").join(&vname);
        if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
            let pvc = objects
                .store
                .get(&GroupResource::new("", "persistentvolumeclaims"), ns, claim)
                .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" not found"))?;
            if pvc["status"]["phase"] != "Bound" {
                return Err(format!("persistentvolumeclaim \"{claim}\" is not bound"));
            }
            if terminating(&pvc) {
                return Err(format!("persistentvolumeclaim \"{claim}\" is being deleted"));
            }
            let d = controllers::volumes::volume_dir(&k.inner.cfg.state_dir, &pvc);
            std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
            out.insert(vname, d);
        } else if let Some(data) = projected(k, ns, v) {
            let (kind, src) = match v["configMap"]["name"].as_str() {
                Some(cm) => ("configMap", cm),
                None => ("secret", v["secret"]["secretName"].as_str().unwrap_or_default()),
            };
            let data = match data {
                Some(d) => d,
                None if v[kind]["optional"] == true => BTreeMap::new(),
                None => return Err(format!("{} \"{src}\" not found", kind.to_lowercase())),
            };
            write_files(&dir, &data)?;
            out.insert(vname, dir);
        } else {
            // emptyDir and anything else: a fresh directory per pod.
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            out.insert(vname, dir);
        }
    }
    Ok(out)
}

/// Brings a running pod's configMap and secret volumes up to date with
/// their objects, as a kubelet does (there within a minute or so; here on
/// the next sync), so a rotated certificate reaches the pod in place. A
/// deleted object leaves the files as they were.
pub(super) fn refresh_projected(k: &Kubelet, pod: &Value, dirs: &BTreeMap<String, PathBuf>) {
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let Some(dir) = v["name"].as_str().and_then(|n| dirs.get(n)) else { continue };
        if let Some(Some(data)) = projected(k, namespace(pod), v) {
            if let Err(e) = write_files(dir, &data) {
                tracing::warn!(pod = name(pod), volume = ?v["name"], "refresh volume: {e}");
            }
        }
    }
}

impl Kubelet {
    /// Runs a scheduled pod until it is deleted.
    pub(super) async fn run_pod(
        self,
        pod: Value,
        states: Arc<Mutex<Vec<ContainerState>>>,
        mut stop: watch::Receiver<Option<Duration>>,
        vols: Arc<Mutex<BTreeMap<String, PathBuf>>>,
    ) {
        let cfg = &self.inner.cfg;
        let objects = cfg.objects.clone();
        let pods_rt = controllers::rt(&objects, "", "pods");
        let (ns, pod_name, pod_uid) = (namespace(&pod).to_string(), name(&pod).to_string(), uid(&pod).to_string());
        let ip = cfg.subnet.pod_ip(&ns, &pod_name, &pod_uid, !objects.strict.new_pod_ip_per_incarnation);
        let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default().to_string();
        let host_ip = self.node_ip(&node_name);
        let base = cfg.state_dir.join("pods").join(&ns).join(&pod_name);
        let pod_dir = base.join(&pod_uid);
        let changed = Arc::new(Notify::new());
        let started_at = time::now();
        let _ = std::fs::create_dir_all(pod_dir.join("tmp"));

        // Volumes and launches; retried until they resolve or the pod goes.
        let containers: Vec<Value> = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
        let launches = loop {
            let current = objects.store.get(&pods_key(), &ns, &pod_name);
            if current.as_ref().is_none_or(|p| uid(p) != pod_uid || terminating(p)) || stop.borrow().is_some() {
                self.finish(&ns, &pod_name, &pod_uid).await;
                return;
            }
            let attempt = volumes(&self, &pod, &pod_dir).and_then(|v| {
                *vols.lock().unwrap() = v.clone();
                let (_, tag) = image_parts(containers.first().and_then(|c| c["image"].as_str()).unwrap_or_default());
                let bin_dir = cfg.tag_bin_dirs.get(&tag).cloned().unwrap_or_else(|| cfg.bin_dir.clone());
                let ctx = PodContext {
                    objects: &objects,
                    pod: &pod,
                    pod_ip: ip.to_string(),
                    host_ip: host_ip.clone(),
                    volumes: &v,
                    bin_dir: &bin_dir,
                };
                containers.iter().map(|c| ctx.launch(c)).collect::<Result<Vec<_>, _>>()
            });
            match attempt {
                Ok(l) => break l,
                Err(why) => {
                    {
                        let mut st = states.lock().unwrap();
                        for s in st.iter_mut() {
                            s.waiting = Some(("ContainerCreating".into(), why.clone()));
                        }
                    }
                    let _ = self.write_status(&pods_rt, &pod, &states, &started_at, ip, &host_ip, &node_name);
                    tokio::select! {
                        _ = stop.changed() => {}
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        };

        // Service-account credentials as a kubeconfig (see README: the one deviation).
        let sa = pod["spec"]["serviceAccountName"].as_str().unwrap_or("default");
        let mut base_env = vec![
            ("PATH".to_string(), std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())),
            ("HOME".to_string(), pod_dir.display().to_string()),
            ("TMPDIR".to_string(), pod_dir.join("tmp").display().to_string()),
            ("HOSTNAME".to_string(), pod["spec"]["hostname"].as_str().unwrap_or(&pod_name).to_string()),
        ];
        if pod["spec"]["automountServiceAccountToken"] != false {
            let kubeconfig = pod_dir.join("kubeconfig");
            let token = crate::auth::service_account_token(&ns, sa);
            let _ = std::fs::write(&kubeconfig, crate::sim::kubeconfig_yaml(&cfg.api_url, &token, &ns));
            let port = cfg.api_url.rsplit(':').next().unwrap_or("443").to_string();
            base_env.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
            base_env.push(("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()));
            base_env.push(("KUBERNETES_SERVICE_PORT".into(), port));
        }
        let grace = Duration::from_secs(pod["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap_or(30));
        let mut tasks = Vec::new();
        for (i, (spec, launch)) in containers.iter().zip(launches).enumerate() {
            let c = ContainerSpec {
                index: i,
                spec: spec.clone(),
                launch,
                base_env: base_env.clone(),
                workdir: pod_dir.clone(),
                log: base.join(format!("{}.log", spec["name"].as_str().unwrap_or("main"))),
                ip,
                restart_policy: pod["spec"]["restartPolicy"].as_str().unwrap_or("Always").to_string(),
                grace,
                states: states.clone(),
                changed: changed.clone(),
            };
            tasks.push(tokio::spawn(c.run(stop.clone())));
        }

        // Status writer until stopped; the kubelet loop sends the stop.
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        loop {
            let _ = self.write_status(&pods_rt, &pod, &states, &started_at, ip, &host_ip, &node_name);
            if stop.borrow().is_some() {
                break;
            }
            tokio::select! {
                _ = changed.notified() => {}
                _ = ticker.tick() => {}
                _ = stop.changed() => {}
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        let _ = self.write_status(&pods_rt, &pod, &states, &started_at, ip, &host_ip, &node_name);
        self.finish(&ns, &pod_name, &pod_uid).await;
    }

    /// After the containers stopped: removes a deleted pod (the kubelet's
    /// final delete with grace 0).
    async fn finish(&self, ns: &str, pod_name: &str, pod_uid: &str) {
        let objects = &self.inner.cfg.objects;
        let pods_rt = controllers::rt(objects, "", "pods");
        if let Some(p) = objects.store.get(&pods_key(), ns, pod_name) {
            if uid(&p) == pod_uid && terminating(&p) {
                let _ = objects.delete(
                    &pods_rt,
                    ns,
                    pod_name,
                    &DeleteOpts {
                        grace_period_seconds: Some(0),
                        precondition_uid: Some(pod_uid.to_string()),
                        ..DeleteOpts::default()
                    },
                );
            }
        }
        self.inner.pods.lock().unwrap().remove(pod_uid);
    }

    #[allow(clippy::too_many_arguments)]
    fn write_status(
        &self,
        pods_rt: &crate::registry::ResourceType,
        pod: &Value,
        states: &Arc<Mutex<Vec<ContainerState>>>,
        started_at: &str,
        ip: std::net::Ipv4Addr,
        host_ip: &str,
        node_name: &str,
    ) -> crate::error::ApiResult<()> {
        let objects = &self.inner.cfg.objects;
        let (ns, pod_name) = (namespace(pod), name(pod));
        let Some(current) = objects.store.get(&pods_key(), ns, pod_name) else { return Ok(()) };
        if uid(&current) != uid(pod) {
            return Ok(());
        }
        let node_ready = objects
            .store
            .get(&GroupResource::new("", "nodes"), "", node_name)
            .is_some_and(|n| controllers::nodes::is_ready(&n));
        let states = states.lock().unwrap().clone();
        let all_ready = !states.is_empty() && states.iter().all(|s| s.ready);
        let ready = all_ready && node_ready && !terminating(&current);
        let any_running = states.iter().any(|s| s.pid.is_some());
        let all_done = states.iter().all(|s| s.terminated.is_some());
        let phase = if all_done && !terminating(&current) {
            if states.iter().all(|s| s.terminated.as_ref().is_some_and(|t| t["exitCode"] == 0)) {
                "Succeeded"
            } else {
                "Failed"
            }
        } else if any_running || states.iter().any(|s| s.restart_count > 0 || s.terminated.is_some()) {
            "Running"
        } else {
            "Pending"
        };
        let old_conditions = current["status"]["conditions"].as_array().cloned().unwrap_or_default();
        let cond = |t: &str, ok: bool| {
            let status = if ok { "True" } else { "False" };
            match old_conditions.iter().find(|c| c["type"] == t) {
                Some(c) if c["status"] == status => c.clone(),
                _ => json!({"type": t, "status": status, "lastTransitionTime": time::now()}),
            }
        };
        let status = json!({
            "phase": phase,
            "podIP": ip.to_string(),
            "podIPs": [{"ip": ip.to_string()}],
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "startTime": started_at,
            "qosClass": current["status"]["qosClass"].as_str().unwrap_or("BestEffort"),
            "conditions": [
                cond("PodReadyToStartContainers", true),
                cond("Initialized", true),
                cond("Ready", ready),
                cond("ContainersReady", all_ready),
                cond("PodScheduled", true),
            ],
            "containerStatuses": states.iter().map(ContainerState::status).collect::<Vec<_>>(),
        });
        controllers::patch_status(objects, pods_rt, ns, pod_name, status).map(|_| ())
    }
}
