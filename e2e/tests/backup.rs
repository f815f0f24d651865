//! Backups through the operator, with kubectl, to a real S3-compatible
//! server (moto, started by hack/s3-server.sh on a free loopback port): an
//! on-demand `KeyraftBackup`, scheduled backups and their retention
//! (checked in the bucket with the `keyraft` CLI), and a new cluster
//! restored from the on-demand backup by `spec.bootstrap.fromBackup` that
//! serves every write acknowledged before the backup was requested. The
//! bad cases, cheap: a backup of a missing cluster, a backup without its
//! credentials Secret, a restore into a cluster of another partition count;
//! each fails with a message naming the cause.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::cluster::{assert_all_readable, client, condition, manifest, namespace, pod_endpoints, Env, Workload};
use common::wait_for;
use futures::StreamExt;
use keyraft_client::ConsistencyLevel;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::{json, Value};

/// Bound on a cluster going from `kubectl apply` to Running (2 cores, debug builds).
const CREATE: Duration = Duration::from_secs(180);
const BUCKET: &str = "keyraft-e2e";
/// Keys written before the on-demand backup.
const KEYS: usize = 2_000;
/// Partitions of both clusters (a restore needs the backup's count).
const PARTITIONS: u64 = 4;

/// moto's S3 server on 127.0.0.1 with one bucket; stopped when dropped.
struct S3Server {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl S3Server {
    /// Starts the server; [`S3Server::ready`] waits for the bucket.
    fn start() -> S3Server {
        let script = common::repo().join("hack/s3-server.sh");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(&script)
            .arg(port.to_string())
            .arg(BUCKET)
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("start hack/s3-server.sh (moto: `hack/s3-server.sh --install`)");
        S3Server { child, port, log }
    }

    /// The settings of the credentials Secret and of the CLI's environment.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "e2e".into()),
            ("AWS_SECRET_ACCESS_KEY", "e2e-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// `keyraft backup list --at URL -o json` with the server's settings:
    /// the complete backups' names (with a manifest), or the CLI's error.
    /// Directories without a manifest (a backup running, or one half
    /// deleted) are an error too: the CLI names them on stderr.
    async fn list(&self, url: &str) -> Result<BTreeSet<String>, String> {
        let bin = keyraft_e2e::sim::default_bin_dir().join("keyraft");
        assert!(bin.is_file(), "{} is missing: run `cargo build -p keyraft-client` first", bin.display());
        let env = self.env();
        let url = url.to_string();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(&bin)
                .args(["backup", "list", "--at", &url, "--retry-timeout", "5", "-o", "json"])
                .envs(env)
                .output()
                .expect("keyraft runs")
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || stderr.contains("not listed") {
            return Err(stderr.into());
        }
        let list: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("keyraft backup list -o json: {e}: {}", String::from_utf8_lossy(&out.stdout)))?;
        let list = list.as_array().ok_or_else(|| format!("not a JSON array: {list}"))?;
        Ok(list.iter().map(|b| b["name"].as_str().expect("a backup's name").to_string()).collect())
    }

    /// Waits until the bucket exists and lists (empty).
    async fn ready(&mut self, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match self.list(url).await {
                Ok(l) => {
                    assert!(l.is_empty(), "a new bucket holds backups: {l:?}");
                    return;
                }
                Err(e) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!(
                            "the S3 server exited ({status}): {}",
                            std::fs::read_to_string(self.log.path()).unwrap()
                        );
                    }
                    assert!(Instant::now() < deadline, "the S3 server with bucket {BUCKET} did not answer: {e}");
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn backups(env: &Env, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("keyraft.io", "v1alpha1", "KeyraftBackup");
    Api::namespaced_with(env.kube.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// A KeyraftBackup's JSON once its phase is final (Completed or Failed).
async fn wait_backup_final(env: &Env, ns: &str, name: &str, limit: Duration) -> Value {
    let api = backups(env, ns);
    wait_for(&format!("KeyraftBackup {name} Completed or Failed"), limit, || async {
        let b = serde_json::to_value(api.get_opt(name).await.expect("reading a KeyraftBackup")?).unwrap();
        matches!(b["status"]["phase"].as_str(), Some("Completed" | "Failed")).then_some(b)
    })
    .await
}

/// (name, phase) of the scheduled backups of `cluster`, by name (= by time).
async fn scheduled(env: &Env, ns: &str, cluster: &str) -> Vec<(String, String)> {
    let selector = format!("keyraft.io/cluster={cluster},keyraft.io/scheduled=true");
    let list = backups(env, ns).list(&ListParams::default().labels(&selector)).await.expect("listing backups");
    let mut out: Vec<(String, String)> = list
        .items
        .into_iter()
        .map(|b| {
            let v = serde_json::to_value(b).unwrap();
            let phase = v["status"]["phase"].as_str().unwrap_or("").to_string();
            (v["metadata"]["name"].as_str().unwrap().to_string(), phase)
        })
        .collect();
    out.sort();
    out
}

/// The notes of events of `reason` about `object`.
async fn event_notes(env: &Env, ns: &str, object: &str, reason: &str) -> Vec<String> {
    env.events(ns, object).await.into_iter().filter(|(r, _, _)| r == reason).map(|(_, _, note)| note).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_and_on_demand_backups_to_s3_keep_their_retention_and_a_new_cluster_restores_every_acknowledged_write(
) {
    if common::external() {
        eprintln!("SKIPPED: the S3 server runs on this machine's loopback, out of the external cluster's reach");
        return;
    }
    let t0 = Instant::now();
    // moto starts (a few seconds of Python) while the operator is installed.
    let mut s3 = S3Server::start();
    let Some(env) = Env::with_operator().await else { return };
    let url = format!("s3://{BUCKET}/keyraft");
    s3.ready(&url).await;
    let ns = &namespace("backup");
    env.create_namespace(ns).await;
    let mut secret = vec!["create", "secret", "generic", "s3-credentials", "-n", ns];
    let literals: Vec<String> = s3.env().iter().map(|(k, v)| format!("--from-literal={k}={v}")).collect();
    secret.extend(literals.iter().map(String::as_str));
    env.kubectl_ok(&secret).await;

    let destination = json!({"url": url, "credentialsSecret": "s3-credentials"});
    let spec = json!({
        "replicas": 3,
        "partitions": PARTITIONS,
        "backup": {"destination": destination, "schedule": "*/15 * * * * *", "retention": {"count": 2}},
    });
    env.apply(ns, &manifest("src", spec)).await;
    // The bad case, cheap: a backup of a cluster that does not exist.
    let orphan = json!({
        "apiVersion": "keyraft.io/v1alpha1",
        "kind": "KeyraftBackup",
        "metadata": {"name": "orphan"},
        "spec": {"cluster": "no-such-cluster", "destination": destination},
    });
    env.apply(ns, &orphan.to_string()).await;
    let src = env.wait_running(ns, "src", 3, CREATE).await;
    let src_id = src["status"]["clusterId"].as_str().expect("status.clusterId").to_string();
    eprintln!("src Running after {:?}", t0.elapsed());

    // Keys written before the backup, then a writer that keeps going while it runs.
    let endpoints = pod_endpoints(ns, "src", 3);
    let c = client(endpoints.clone());
    let preload: Vec<(String, String)> = (0..KEYS).map(|i| (format!("pre/{i:05}"), format!("value {i}"))).collect();
    let failed: Vec<String> = futures::stream::iter(&preload)
        .map(|(k, v)| {
            let c = c.clone();
            async move { c.put(k.clone(), v.clone()).await.err().map(|e| format!("{k}: {e}")) }
        })
        .buffer_unordered(32)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    assert!(failed.is_empty(), "writes failed on a healthy cluster: {failed:?}");
    let work = Workload::start(endpoints.clone(), 1, "live");
    work.progresses(20, Duration::from_secs(60)).await;

    // The on-demand backup, with kubectl.
    let requested = Instant::now();
    let on_demand = json!({
        "apiVersion": "keyraft.io/v1alpha1",
        "kind": "KeyraftBackup",
        "metadata": {"name": "src-on-demand"},
        "spec": {"cluster": "src"},
    });
    env.apply(ns, &on_demand.to_string()).await;
    // A destination whose credentials Secret does not exist.
    let no_secret = json!({
        "apiVersion": "keyraft.io/v1alpha1",
        "kind": "KeyraftBackup",
        "metadata": {"name": "no-secret"},
        "spec": {"cluster": "src", "destination": {"url": url, "credentialsSecret": "no-such-secret"}},
    });
    env.apply(ns, &no_secret.to_string()).await;
    let b = wait_backup_final(&env, ns, "src-on-demand", Duration::from_secs(120)).await;
    let s = &b["status"];
    assert_eq!(s["phase"], "Completed", "on-demand backup: {s:#}");
    eprintln!("on-demand backup Completed {:?} after it was applied", requested.elapsed());
    // Written after the backup completed: none of this may come back.
    c.put("after/new", "written after the backup").await.expect("a write after the backup");
    for (k, _) in &preload[..10] {
        c.put(k.clone(), "overwritten after the backup").await.expect("an overwrite after the backup");
    }
    let tally = work.stop().await;
    assert!(tally.failed.is_empty() && tally.wrong_reads.is_empty(), "live writer: {tally:?}");
    let live_before: Vec<(String, String)> =
        tally.acked.iter().zip(&tally.acks).filter(|(_, (_, at))| *at < requested).map(|(kv, _)| kv.clone()).collect();
    assert!(live_before.len() >= 20);
    let records = s["records"].as_u64().expect("status.records");
    let before = (KEYS + live_before.len()) as u64;
    assert!(records >= before, "{records} keys backed up, {before} acknowledged before the backup: {s:#}");
    assert!(s["sizeBytes"].as_u64().is_some_and(|n| n > 0), "status.sizeBytes: {s:#}");
    assert_eq!(s["partitions"].as_u64(), Some(PARTITIONS), "{s:#}");
    assert_eq!(s["clusterId"], src_id.as_str(), "{s:#}");
    assert_eq!(s["destination"], url.as_str(), "the cluster's destination by default: {s:#}");
    let complete = condition(&b, "Complete").unwrap_or_else(|| panic!("a Complete condition: {s:#}"));
    assert_eq!(complete["status"], "True", "{complete}");
    let row = env.kubectl_ok(&["get", "krb", "src-on-demand", "-n", ns, "--no-headers"]).await;
    let row: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(row[..3], ["src-on-demand", "src", "Completed"], "kubectl get krb: {row:?}");

    // Scheduled backups: wait for the third, and for retention to have
    // deleted one, then suspend the schedule and let what runs finish.
    let seen = std::sync::Mutex::new(BTreeSet::new());
    let limit = Duration::from_secs(150);
    wait_for("three scheduled backups and one deleted by retention", limit, || async {
        let now: BTreeSet<String> = scheduled(&env, ns, "src").await.into_iter().map(|(n, _)| n).collect();
        let mut seen = seen.lock().unwrap();
        seen.extend(now.iter().cloned());
        (seen.len() >= 3 && seen.len() > now.len()).then_some(())
    })
    .await;
    let mut seen = seen.into_inner().unwrap();
    eprintln!("scheduled backups seen after {:?}: {seen:?}", t0.elapsed());
    env.patch_spec(ns, "src", json!({"backup": {"suspend": true}})).await;
    let kept = wait_for("the scheduled backups settled at 2 completed", Duration::from_secs(90), || async {
        let now = scheduled(&env, ns, "src").await;
        (now.len() == 2 && now.iter().all(|(_, p)| p == "Completed")).then_some(now)
    })
    .await;
    let kept: BTreeSet<String> = kept.into_iter().map(|(n, _)| n).collect();
    for n in &kept {
        // Named and annotated with the schedule's time, to the second.
        let t = n.strip_prefix("src-").filter(|t| t.len() == 14 && t.bytes().all(|b| b.is_ascii_digit()));
        let t = t.unwrap_or_else(|| panic!("named <cluster>-<YYYYMMDDHHMMSS>: {n}"));
        let at = format!("{}-{}-{}T{}:{}:{}+00:00", &t[..4], &t[4..6], &t[6..8], &t[8..10], &t[10..12], &t[12..]);
        assert!(t[12..].parse::<u32>().unwrap() % 15 == 0, "{n} is not a time of */15 seconds");
        let jsonpath = "jsonpath={.metadata.annotations.keyraft\\.io/scheduled-at}";
        let annotation = env.kubectl_ok(&["get", "krb", n, "-n", ns, "-o", jsonpath]).await;
        assert_eq!(annotation, at, "{n}: keyraft.io/scheduled-at");
    }
    let created: BTreeSet<String> = event_notes(&env, ns, "src", "BackupScheduled")
        .await
        .iter()
        .filter_map(|n| n.strip_prefix("scheduled backup ")?.split_whitespace().next().map(String::from))
        .collect();
    seen.extend(created.iter().cloned());
    assert!(created.len() >= 3, "a BackupScheduled event per scheduled backup: {created:?}");
    let notes = event_notes(&env, ns, "src", "BackupScheduled").await;
    assert!(notes.iter().all(|n| !n.contains('.')), "scheduled for whole seconds: {notes:?}");
    // The newest two are kept: every deleted one is older.
    let deleted: BTreeSet<&String> = seen.difference(&kept).collect();
    assert!(!deleted.is_empty(), "{seen:?}");
    assert!(deleted.iter().all(|d| kept.iter().all(|k| *d < k)), "retention kept {kept:?} of {seen:?}");
    // The bucket holds exactly the kept ones and the on-demand backup.
    let mut expected = kept.clone();
    expected.insert("src-on-demand".into());
    let listed = wait_for("the bucket to hold exactly the kept backups", Duration::from_secs(30), || async {
        s3.list(&url).await.ok().filter(|l| *l == expected)
    })
    .await;
    eprintln!("bucket after retention: {listed:?} ({:?})", t0.elapsed());

    // The source cluster goes; a new one is restored from the on-demand backup.
    env.kubectl_ok(&["delete", "kr", "src", "-n", ns, "--timeout=90s"]).await;
    let from = json!({"destination": destination, "backup": "src-on-demand"});
    let spec = json!({"replicas": 3, "partitions": PARTITIONS, "bootstrap": {"fromBackup": from}});
    env.apply(ns, &manifest("restored", spec)).await;
    // A restore the backup does not fit: 8 partitions, the backup has 4.
    let spec = json!({"replicas": 1, "replicationFactor": 1, "partitions": 8, "bootstrap": {"fromBackup": from}});
    env.apply(ns, &manifest("misfit", spec)).await;
    let (mut early, mut phases) = (Vec::new(), BTreeSet::new());
    let restored = env
        .wait_status(ns, "restored", "Running with the backup restored", CREATE, |kr| {
            let restore_done = kr["status"]["restore"]["phase"] == "Completed";
            let available = condition(kr, "Available").is_some_and(|c| c["status"] == "True");
            phases.insert(kr["status"]["phase"].as_str().unwrap_or("").to_string());
            if available && !restore_done {
                early.push(kr["status"].clone());
            }
            restore_done && common::cluster::settled(kr, 3)
        })
        .await;
    assert!(early.is_empty(), "Available before the restore completed: {early:?}");
    assert!(phases.contains("Restoring"), "phase Restoring while the keys are written: saw {phases:?}");
    let r = &restored["status"]["restore"];
    assert_eq!(r["phase"], "Completed", "{r:#}");
    assert_eq!(r["backup"], "src-on-demand", "{r:#}");
    assert_eq!(r["destination"], url.as_str(), "{r:#}");
    assert_eq!(r["sourceClusterId"], src_id.as_str(), "{r:#}");
    assert_eq!(r["records"].as_u64(), Some(records), "every key of the backup restored: {r:#}");
    assert!(r["startedAt"].is_string() && r["completedAt"].is_string(), "{r:#}");
    let new_id = restored["status"]["clusterId"].as_str().expect("status.clusterId");
    assert_ne!(new_id, src_id, "a restored cluster has its own id");
    let notes = event_notes(&env, ns, "restored", "Restored").await;
    assert!(notes.iter().any(|n| n.contains("from backup src-on-demand")), "a Restored event: {notes:?}");
    eprintln!("restored Running after {:?}", t0.elapsed());

    // Every write acknowledged before the backup was requested, with its value then.
    let mut acked = preload.clone();
    acked.extend(live_before);
    let restored_endpoints = pod_endpoints(ns, "restored", 3);
    assert_all_readable(restored_endpoints.clone(), &acked).await;
    let rc = client(restored_endpoints);
    let after =
        rc.get("after/new", Some(ConsistencyLevel::Linearizable)).await.expect("a read of the restored cluster");
    assert_eq!(after, None, "a key written after the backup completed");

    // The restore that does not fit failed, saying why, and the cluster is
    // not presented as Available.
    let misfit = env
        .wait_status(ns, "misfit", "restore Failed", CREATE, |kr| kr["status"]["restore"]["phase"] == "Failed")
        .await;
    let msg = misfit["status"]["restore"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("has 4 partitions but spec.partitions is 8"), "{:#}", misfit["status"]["restore"]);
    let available = condition(&misfit, "Available").expect("an Available condition");
    assert_eq!((&available["status"], &available["reason"]), (&json!("False"), &json!("RestoreFailed")), "{available}");
    assert_eq!(misfit["status"]["phase"], "Degraded", "{:#}", misfit["status"]);
    let notes = event_notes(&env, ns, "misfit", "RestoreFailed").await;
    assert!(notes.iter().any(|n| n.contains("has 4 partitions")), "a RestoreFailed event: {notes:?}");

    // A backup without its credentials Secret failed, naming the Secret.
    let b = wait_backup_final(&env, ns, "no-secret", Duration::from_secs(30)).await;
    assert_eq!(b["status"]["phase"], "Failed", "{b:#}");
    let msg = b["status"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(&format!("credentials Secret {ns}/no-such-secret does not exist")), "{msg:?}");

    // The backup of a cluster that does not exist failed, saying so.
    let orphan = wait_backup_final(&env, ns, "orphan", Duration::from_secs(30)).await;
    assert_eq!(orphan["status"]["phase"], "Failed", "{orphan:#}");
    let msg = orphan["status"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("no-such-cluster"), "the message names the cluster: {msg:?}");
    let notes = event_notes(&env, ns, "orphan", "BackupFailed").await;
    assert!(notes.iter().any(|n| n.contains("no-such-cluster")), "a BackupFailed event: {notes:?}");

    eprintln!("backup scenario took {:?}", t0.elapsed());
    env.shutdown().await;
    drop(s3);
}
