//! Day-2 operator scenarios on the simulator: rolling upgrades, failover,
//! zone-aware placement and the default read level. Each runs a client
//! workload throughout and ends by reading back every acknowledged write.
//!
//! Like tests/scenarios.rs, every scenario has its own namespace suffixed
//! with the process id (cluster DNS names go into the shared /etc/hosts).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{
    assert_all_readable, assert_status_truthful, client, condition, node_status, pod_endpoint, pod_endpoints,
    service_endpoint, settled, Env, Workload,
};
use common::wait_for;
use keyraft_client::{Client, ClientOptions, ConsistencyLevel};
use serde_json::{json, Value};

/// Bound on a cluster going from `kubectl apply` to Running.
const CREATE: Duration = Duration::from_secs(180);
/// Bound on the workload making progress at a checkpoint.
const PROGRESS: Duration = Duration::from_secs(60);
/// Bound on a rollout, failover or rebalance settling (2 cores, debug builds).
const SETTLE: Duration = Duration::from_secs(300);

fn namespace(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

/// A KeyraftCluster named `name` with `spec` merged over a small default
/// (8 partitions, 4 moves at a time).
fn manifest(name: &str, spec: Value) -> String {
    let mut base = json!({
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

/// A bin dir for an image tag: `keyraft-node` runs the current build with
/// `extra` arguments first (another version, or a bad flag).
fn tag_dir(root: &Path, tag: &str, extra: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let real = keyraft_e2e::sim::default_bin_dir().join("keyraft-node");
    let dir = root.join(tag);
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("keyraft-node");
    std::fs::write(&script, format!("#!/bin/sh\nexec '{}' {extra} \"$@\"\n", real.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn members(kr: &Value) -> &Vec<Value> {
    kr["status"]["members"].as_array().expect("status.members")
}

fn member<'a>(kr: &'a Value, pod: &str) -> &'a Value {
    members(kr).iter().find(|m| m["pod"] == pod).unwrap_or_else(|| panic!("{pod} not in status.members"))
}

/// The cluster once its status satisfies `f` for the current generation.
async fn wait_status(env: &Env, ns: &str, name: &str, what: &str, limit: Duration, mut f: impl FnMut(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(kr) = env.cluster(ns, name).await {
            if kr["status"]["observedGeneration"] == kr["metadata"]["generation"] && f(&kr) {
                return kr;
            }
            last = kr["status"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "{ns}/{name}: timed out after {limit:?} waiting for {what}; last status:\n{}",
            serde_json::to_string_pretty(&common::cluster::without_partitions(&last)).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn condition_is(kr: &Value, type_: &str, status: &str, reason: &str) -> bool {
    condition(kr, type_).is_some_and(|c| c["status"] == status && c["reason"] == reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_upgrade_of_five_nodes_fails_no_request_and_a_bad_version_stops_at_one_pod_until_reverted() {
    let bins = tempfile::tempdir().unwrap();
    let v2 = tag_dir(bins.path(), "0.2.0", "--reported-version 0.2.0");
    let broken = tag_dir(bins.path(), "0.3.0-broken", "--no-such-flag");
    let Some(env) = Env::with_operator_on(|cfg| {
        cfg.tag_bin_dirs.insert("0.2.0".into(), v2);
        cfg.tag_bin_dirs.insert("0.3.0-broken".into(), broken);
    })
    .await
    else {
        return;
    };
    let ns = &namespace("upgrade");
    env.create_namespace(ns).await;
    env.apply(ns, &manifest("kv", json!({"replicas": 5}))).await;
    env.wait_running(ns, "kv", 5, CREATE).await;
    let work = Workload::start(pod_endpoints(ns, "kv", 5), 3, "upgrade");
    work.progresses(100, PROGRESS).await;

    // 0.1.0 -> 0.2.0 under load: one pod at a time, progress in status.
    let t = Instant::now();
    env.patch_spec(ns, "kv", json!({"version": "0.2.0"})).await;
    let mut progress = BTreeSet::new();
    let done = wait_status(&env, ns, "kv", "every pod on 0.2.0", SETTLE, |kr| {
        if let Some(c) = condition(kr, "Upgrading").filter(|c| c["status"] == "True") {
            let msg = c["message"].as_str().unwrap_or_default();
            if let Some(i) = msg.find(" pods updated") {
                progress.insert(msg[..i].rsplit(' ').next().unwrap().to_string());
            }
        }
        settled(kr, 5) && kr["status"]["currentVersion"] == "0.2.0" && kr["status"]["updatedReplicas"] == 5
    })
    .await;
    let took = t.elapsed();
    work.progresses(100, PROGRESS).await;
    eprintln!("rolling upgrade of 5 pods took {took:?}; progress seen: {progress:?}");
    assert!(progress.contains("0/5") && progress.len() >= 3, "Upgrading reports progress pod by pod: {progress:?}");
    assert_status_truthful(&env, ns, &done).await;
    for i in 0..5 {
        let info = node_status(&pod_endpoint(ns, "kv", i)).await.node.unwrap();
        assert_eq!(info.version, "0.2.0", "kv-{i} runs the new build");
    }
    let events = env.event_reasons(ns, "kv").await;
    for reason in ["DrainingLeaders", "RestartingPod", "MemberActive"] {
        assert!(events.iter().any(|e| e == reason), "Event {reason} recorded: {events:?}");
    }

    // A version whose pods cannot start: the rollout stops at its first pod.
    env.patch_spec(ns, "kv", json!({"version": "0.3.0-broken"})).await;
    let stuck = wait_status(&env, ns, "kv", "the rollout waiting on a pod that is not ready", SETTLE, |kr| {
        condition(kr, "Upgrading").is_some_and(|c| {
            c["status"] == "True"
                && c["reason"] == "WaitingForReady"
                && c["message"].as_str().unwrap_or_default().contains("ready on 0.3.0-broken")
        })
    })
    .await;
    let bad: Vec<&Value> = members(&stuck).iter().filter(|m| m["version"] == "0.3.0-broken").collect();
    assert_eq!(bad.len(), 1, "exactly one pod on the bad version: {bad:?}");
    let bad_pod = bad[0]["pod"].as_str().unwrap().to_string();
    assert_eq!(bad[0]["ready"], false, "{bad:?}");
    // The other four keep serving while it stays stuck.
    work.progresses(200, PROGRESS).await;
    let still = env.cluster(ns, "kv").await.unwrap();
    let on_bad = members(&still).iter().filter(|m| m["version"] == "0.3.0-broken").count();
    assert_eq!(on_bad, 1, "the rollout went no further than {bad_pod}");
    assert_eq!(member(&still, &bad_pod)["ready"], false);

    // Reverting the spec recovers: the stuck pod comes back on 0.2.0.
    let t = Instant::now();
    env.patch_spec(ns, "kv", json!({"version": "0.2.0"})).await;
    let back = wait_status(&env, ns, "kv", "every pod back on 0.2.0", SETTLE, |kr| {
        settled(kr, 5) && kr["status"]["currentVersion"] == "0.2.0"
    })
    .await;
    eprintln!("revert recovered {bad_pod} in {:?}", t.elapsed());
    assert_status_truthful(&env, ns, &back).await;
    work.progresses(100, PROGRESS).await;

    let tally = work.stop().await;
    eprintln!(
        "{} writes acknowledged, {} failed, {} client retries during upgrade, stuck rollout and revert",
        tally.acked.len(),
        tally.failed.len(),
        tally.retries
    );
    assert!(tally.failed.is_empty(), "requests failed during the rolling upgrade: {:?}", tally.failed);
    assert!(tally.wrong_reads.is_empty(), "read-your-writes: {:?}", tally.wrong_reads);
    assert_all_readable(vec![service_endpoint(ns, "kv")], &tally.acked).await;
    env.sim.shutdown().await;
}
