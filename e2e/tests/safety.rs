//! Operator safety scenarios on the simulator: data outlives a hand-made
//! StatefulSet scale-in, Events say what happened, and a member held back
//! during a rollout or a drain that never completes turns the cluster
//! Degraded within its bound, naming it,
//! a pod stuck Pending is failed over, and an operator whose watches keep
//! failing is restarted by its probe.
//!
//! Every scenario has its own namespace suffixed with the process id.

mod common;

use std::time::Duration;

use common::cluster::{
    assert_all_readable, assert_status_truthful, condition, manifest, members, namespace, new_id, node_id,
    pod_endpoints, service_endpoint, settled, Env, Workload,
};
use common::wait_for;
use serde_json::json;

/// Bound on a cluster going from `kubectl apply` to Running.
const CREATE: Duration = Duration::from_secs(180);
/// Bound on the workload making progress at a checkpoint.
const PROGRESS: Duration = Duration::from_secs(60);
/// Bound on a scale or a rollout settling (2 cores, debug builds).
const SETTLE: Duration = Duration::from_secs(300);

async fn claims(env: &Env, ns: &str, name: &str) -> Vec<String> {
    let mut c = env.cluster_objects(ns, name, "persistentvolumeclaims").await;
    c.sort();
    c
}

/// `kubectl scale sts` past the operator: the StatefulSet retains every
/// claim (Retain/Retain), the operator puts the replicas back and the
/// members come back with their data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_the_statefulset_by_hand_keeps_every_claim_and_the_operator_restores_the_cluster() {
    let Some(env) = Env::with_operator().await else { return };
    let ns = &namespace("sts-scale");
    env.create_namespace(ns).await;
    env.apply(ns, &manifest("kv", json!({"replicas": 3}))).await;
    env.wait_running(ns, "kv", 3, CREATE).await;
    let before = claims(&env, ns, "kv").await;
    assert_eq!(before.len(), 3, "{before:?}");
    let work = Workload::start(pod_endpoints(ns, "kv", 3), 2, "sts-scale");
    work.progresses(50, PROGRESS).await;

    env.kubectl_ok(&["scale", "sts/kv", "-n", ns, "--replicas=1"]).await;
    // Whatever the StatefulSet did meanwhile, no claim went, and the
    // operator brings it back to spec.replicas.
    let kr = env.wait_running(ns, "kv", 3, SETTLE).await;
    assert_eq!(claims(&env, ns, "kv").await, before, "a claim was deleted");
    let sts = env.kubectl_ok(&["get", "sts/kv", "-n", ns, "-o", "jsonpath={.spec.replicas}"]).await;
    assert_eq!(sts, "3");
    assert_eq!(kr["status"]["members"].as_array().unwrap().len(), 3);

    work.progresses(50, PROGRESS).await;
    let tally = work.stop().await;
    assert!(tally.wrong_reads.is_empty(), "read-your-writes: {:?}", tally.wrong_reads);
    assert_all_readable(vec![service_endpoint(ns, "kv")], &tally.acked).await;
    env.shutdown().await;
}

/// After `kubectl scale kr --replicas=5`, an Event says the StatefulSet was
/// set to 5: each occurrence keeps its own note.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_after_a_scale_from_three_to_five_name_five() {
    let Some(env) = Env::with_operator().await else { return };
    let ns = &namespace("events");
    env.create_namespace(ns).await;
    env.apply(ns, &manifest("kv", json!({"replicas": 3}))).await;
    env.wait_running(ns, "kv", 3, CREATE).await;
    env.kubectl_ok(&["scale", "kr/kv", "-n", ns, "--replicas=5"]).await;
    env.wait_running(ns, "kv", 5, SETTLE).await;
    let events = env.events(ns, "kv").await;
    let scaled: Vec<&str> = events.iter().filter(|(r, _, _)| r == "Scaled").map(|(_, _, n)| n.as_str()).collect();
    assert!(scaled.iter().any(|n| n.contains("set to 3 replicas")), "{events:?}");
    assert!(scaled.iter().any(|n| n.contains("set to 5 replicas")), "{events:?}");
    // Zones recorded for different members are different Events, each naming its member.
    let zones: Vec<&str> = events.iter().filter(|(r, _, _)| r == "ZoneRecorded").map(|(_, _, n)| n.as_str()).collect();
    for pod in ["kv-3", "kv-4"] {
        assert!(zones.iter().any(|n| n.contains(&format!("member {pod} "))), "{pod}: {events:?}");
    }
    env.shutdown().await;
}

/// A rollout whose restarted member cannot come back (a version that does
/// not start) waits for it and, past `timeouts.catchUp`, reports Degraded
/// naming that member; nothing else is restarted meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_held_back_in_a_rollout_turns_degraded_within_its_bound_naming_it() {
    let bins = tempfile::tempdir().unwrap();
    let broken = common::tag_bin_dir(bins.path(), "0.3.0-broken", "keyraft-node", "--no-such-flag");
    let Some(env) = Env::with_operator_on(|cfg| {
        cfg.tag_bin_dirs.insert("0.3.0-broken".into(), broken);
    })
    .await
    else {
        return;
    };
    let ns = &namespace("held");
    env.create_namespace(ns).await;
    let spec = json!({"replicas": 3, "timeouts": {"catchUp": "20s", "ready": "20s", "drain": "20s"}});
    env.apply(ns, &manifest("kv", spec)).await;
    env.wait_running(ns, "kv", 3, CREATE).await;

    env.patch_spec(ns, "kv", json!({"version": "0.3.0-broken"})).await;
    let kr = env
        .wait_status(ns, "kv", "Degraded naming the held-back member", SETTLE, |kr| {
            condition(kr, "Degraded").is_some_and(|c| {
                c["status"] == "True"
                    && ["CatchUpTimedOut", "ReadyTimedOut"].contains(&c["reason"].as_str().unwrap_or_default())
            })
        })
        .await;
    let degraded = condition(&kr, "Degraded").unwrap();
    let message = degraded["message"].as_str().unwrap();
    let members = kr["status"]["members"].as_array().unwrap();
    let broken_pods: Vec<&str> =
        members.iter().filter(|m| m["version"] == "0.3.0-broken").map(|m| m["pod"].as_str().unwrap()).collect();
    assert_eq!(broken_pods.len(), 1, "the rollout went no further: {members:?}");
    assert!(message.contains(broken_pods[0]), "{message}");
    assert!(message.contains("spec.timeouts."), "{message}");
    // A Warning Event carries the same message.
    let reason = degraded["reason"].as_str().unwrap();
    let warning = wait_for("a Warning Event for the Degraded reason", PROGRESS, || async {
        env.events(ns, "kv")
            .await
            .into_iter()
            .find(|(r, t, n)| r == reason && t == "Warning" && n.contains(broken_pods[0]))
    })
    .await;
    eprintln!("Degraded: {message}\nEvent: {warning:?}");

    // Reverting the version recovers.
    env.patch_spec(ns, "kv", json!({"version": "0.1.0"})).await;
    env.wait_running(ns, "kv", 3, SETTLE).await;
    env.shutdown().await;
}

/// A rollout whose next pod never hands its leaderships over (its node runs
/// with the `placement::hand_over` failpoint, so the drain cannot finish)
/// waits, past `timeouts.drain` reports Degraded `DrainTimedOut` naming the
/// draining pod, restarts nothing meanwhile, and recovers when the version
/// is reverted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_never_completes_turns_degraded_within_its_bound_naming_the_pod() {
    const CLINGY: &str = "0.1.0-clingy";
    let bins = tempfile::tempdir().unwrap();
    let clingy = common::tag_bin_dir_with_env(
        bins.path(),
        CLINGY,
        "keyraft-node",
        "FAILPOINTS=placement::hand_over=return",
        &format!("--reported-version {CLINGY}"),
    );
    let Some(env) = Env::with_operator_on(|cfg| {
        cfg.tag_bin_dirs.insert(CLINGY.into(), clingy);
    })
    .await
    else {
        return;
    };
    let ns = &namespace("stuck");
    env.create_namespace(ns).await;
    let spec = json!({"replicas": 3, "version": CLINGY, "timeouts": {"drain": "20s"}});
    env.apply(ns, &manifest("kv", spec)).await;
    env.wait_running(ns, "kv", 3, CREATE).await;
    let work = Workload::start(pod_endpoints(ns, "kv", 3), 2, "stuck");
    work.progresses(20, PROGRESS).await;

    env.patch_spec(ns, "kv", json!({"version": "0.1.0"})).await;
    let kr = env
        .wait_status(ns, "kv", "Degraded DrainTimedOut", SETTLE, |kr| {
            condition(kr, "Degraded").is_some_and(|c| c["status"] == "True" && c["reason"] == "DrainTimedOut")
        })
        .await;
    let message = condition(&kr, "Degraded").unwrap()["message"].as_str().unwrap().to_string();
    let members = kr["status"]["members"].as_array().unwrap();
    let draining: Vec<&str> =
        members.iter().filter(|m| m["state"] == "draining").map(|m| m["pod"].as_str().unwrap()).collect();
    assert_eq!(draining.len(), 1, "one pod drains at a time: {members:?}");
    assert!(message.contains(draining[0]) && message.contains("spec.timeouts.drain"), "{message}");
    assert!(members.iter().all(|m| m["version"] == CLINGY), "a pod was restarted before its drain: {members:?}");
    wait_for("a Warning Event naming the draining pod", PROGRESS, || async {
        env.events(ns, "kv")
            .await
            .into_iter()
            .find(|(r, t, n)| r == "DrainTimedOut" && t == "Warning" && n.contains(draining[0]))
    })
    .await;
    eprintln!("Degraded: {message}");

    // Reverting the version reactivates the member; the writes went on.
    env.patch_spec(ns, "kv", json!({"version": CLINGY})).await;
    env.wait_running(ns, "kv", 3, SETTLE).await;
    work.progresses(20, PROGRESS).await;
    let tally = work.stop().await;
    assert!(tally.wrong_reads.is_empty(), "read-your-writes: {:?}", tally.wrong_reads);
    assert_all_readable(vec![service_endpoint(ns, "kv")], &tally.acked).await;
    env.shutdown().await;
}

/// Marks every Node unschedulable (`kubectl cordon`) or schedulable again.
async fn cordon_all(env: &Env, cordon: bool) {
    let nodes = env.kubectl_ok(&["get", "nodes", "-o", "name"]).await;
    for node in nodes.lines().filter(|l| !l.is_empty()) {
        env.kubectl_ok(&[if cordon { "cordon" } else { "uncordon" }, node]).await;
    }
}

/// A pod that cannot be scheduled (every Node cordoned, then the pod
/// deleted) stays Pending with no Ready condition at all: past
/// `failover.timeout` its member is failed over like any unready one, its
/// replicas re-created on the others while writes go on; once it can be
/// scheduled it joins anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_stuck_pending_is_failed_over_and_rejoins_once_scheduled() {
    let Some(env) = Env::with_operator().await else { return };
    let ns = &namespace("pending");
    env.create_namespace(ns).await;
    let spec = json!({"replicas": 4, "failover": {"timeout": "30s"}, "timeouts": {"startup": "20s"}});
    env.apply(ns, &manifest("kv", spec)).await;
    let kr = env.wait_running(ns, "kv", 4, CREATE).await;
    let work = Workload::start(pod_endpoints(ns, "kv", 4), 3, "pending");
    work.progresses(100, PROGRESS).await;

    let pod = "kv-1";
    let old_id = node_id(&kr, pod);
    cordon_all(&env, true).await;
    env.kubectl_ok(&["delete", "pod", pod, "-n", ns, "--wait=false"]).await;
    let pending = wait_for("the re-created pod Pending", PROGRESS, || async {
        let out = env.kubectl(&["get", "pod", pod, "-n", ns, "-o", "json"]).await;
        let p: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        (p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] == "Pending").then_some(p)
    })
    .await;
    let conditions = pending["status"]["conditions"].as_array().cloned().unwrap_or_default();
    assert!(
        !conditions.iter().any(|c| c["type"] == "Ready"),
        "an unscheduled pod has no Ready condition: {conditions:?}"
    );
    let t = std::time::Instant::now();
    let failed_over = env
        .wait_status(ns, "kv", &format!("{pod} (Pending) failed over and removed"), SETTLE, |kr| {
            members(kr).iter().any(|m| m["pod"] == pod && m["state"] == "removed")
                && kr["status"]["partitions"].as_array().is_some_and(|ps| {
                    ps.iter().all(|p| p["replicas"].as_array().unwrap().iter().all(|r| r.as_u64() != Some(old_id)))
                })
        })
        .await;
    eprintln!("{pod} Pending: failed over and removed after {:?}", t.elapsed());
    assert!(condition(&failed_over, "Available").is_some_and(|c| c["status"] == "True"), "still Available");
    let events = env.event_reasons(ns, "kv").await;
    assert!(events.iter().any(|e| e == "MemberFailed"), "Event MemberFailed recorded: {events:?}");
    work.progresses(100, PROGRESS).await;

    cordon_all(&env, false).await;
    let back = env
        .wait_status(ns, "kv", &format!("{pod} scheduled and back as a new member"), SETTLE, |kr| {
            settled(kr, 4) && new_id(kr, pod, old_id)
        })
        .await;
    assert_status_truthful(&env, ns, &back).await;
    let tally = work.stop().await;
    assert!(tally.failed.is_empty(), "writes failed: {:?}", tally.failed);
    assert!(tally.wrong_reads.is_empty(), "read-your-writes: {:?}", tally.wrong_reads);
    assert_all_readable(vec![service_endpoint(ns, "kv")], &tally.acked).await;
    env.shutdown().await;
}

/// `GET path` on an operator pod's HTTP port: the status code and body.
async fn operator_http(ip: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((ip, 8080)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()))
}

/// The operator pods of release `op`: (name, ready, restarts, the value of
/// `env` in its container, pod IP).
#[allow(clippy::type_complexity)]
async fn operator_pods(env: &Env, var: &str) -> Vec<(String, bool, i64, Option<String>, String)> {
    let out = env
        .kubectl_ok(&[
            "get",
            "pods",
            "-n",
            common::cluster::OPERATOR_NS,
            "-l",
            "app.kubernetes.io/instance=op",
            "-o",
            "json",
        ])
        .await;
    let pods: serde_json::Value = serde_json::from_str(&out).unwrap();
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let name = p["metadata"]["name"].as_str().unwrap().to_string();
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            let restarts = p["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["restartCount"].as_i64())
                .sum();
            let value = p["spec"]["containers"][0]["env"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["name"] == var)
                .and_then(|e| e["value"].as_str().map(str::to_string));
            (name, ready, restarts, value, p["status"]["podIP"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

/// An operator started without the permissions to watch its resources
/// (the ClusterRoleBinding deleted) leads but is not Ready, and once its
/// watches have failed for `unhealthyAfterSeconds` its `/healthz` fails and
/// the kubelet restarts it; with the binding back (`helm upgrade`) every
/// operator pod turns Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_whose_watches_keep_failing_turns_unready_then_is_restarted() {
    const VAR: &str = "KEYRAFT_OPERATOR_UNHEALTHY_AFTER_SECONDS";
    let Some(env) = Env::with_operator().await else { return };
    if env.faults("deleting the operator's RBAC").is_none() {
        return;
    }
    let chart = common::repo().join("charts/keyraft-operator");
    let upgrade = ["upgrade", "op", chart.to_str().unwrap(), "-n", common::cluster::OPERATOR_NS, "--reuse-values"];
    let out = env.helm(&[&upgrade[..], &["--set", "unhealthyAfterSeconds=10"]].concat()).await;
    assert!(out.ok, "helm upgrade: {}{}", out.stdout, out.stderr);
    wait_for("two Ready operator pods with unhealthyAfterSeconds=10", PROGRESS * 2, || async {
        let pods = operator_pods(&env, VAR).await;
        (pods.len() == 2 && pods.iter().all(|(_, ready, _, v, _)| *ready && v.as_deref() == Some("10"))).then_some(())
    })
    .await;

    env.kubectl_ok(&["delete", "clusterrolebinding", "op-keyraft-operator"]).await;
    // Fresh processes: a running watch keeps its connection after the
    // binding goes; a new one is refused on its first list.
    env.kubectl_ok(&[
        "delete",
        "pods",
        "-n",
        common::cluster::OPERATOR_NS,
        "-l",
        "app.kubernetes.io/instance=op",
        "--wait=false",
    ])
    .await;
    // The leader's own probes say why before the kubelet acts on them.
    let unhealthy = wait_for("the leader's /healthz failing on its watches", SETTLE, || async {
        for (_, _, _, _, ip) in operator_pods(&env, VAR).await {
            if let Some((503, body)) = operator_http(&ip, "/healthz").await {
                return Some(body);
            }
        }
        None
    })
    .await;
    assert!(unhealthy.contains("watches failing for"), "{unhealthy}");
    let restarted = wait_for("an operator pod restarted by its liveness probe and not Ready", SETTLE, || async {
        operator_pods(&env, VAR).await.into_iter().find(|(_, ready, restarts, _, _)| !ready && *restarts >= 1)
    })
    .await;
    eprintln!("/healthz: {unhealthy}restarted: {restarted:?}");
    // The other replica is a standby: Ready, never restarted.
    let pods = operator_pods(&env, VAR).await;
    assert!(
        pods.iter().any(|(name, ready, restarts, _, _)| *name != restarted.0 && *ready && *restarts == 0),
        "the standby stays Ready and alive: {pods:?}"
    );

    let out = env.helm(&upgrade).await;
    assert!(out.ok, "helm upgrade: {}{}", out.stdout, out.stderr);
    env.kubectl_ok(&["get", "clusterrolebinding", "op-keyraft-operator"]).await;
    wait_for("every operator pod Ready with its permissions back", SETTLE, || async {
        let pods = operator_pods(&env, VAR).await;
        (pods.len() == 2 && pods.iter().all(|(_, ready, _, _, _)| *ready)).then_some(())
    })
    .await;
    env.shutdown().await;
}
