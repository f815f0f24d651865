//! The simulator refuses what a real cluster refuses, driven through the
//! real kubectl: PodDisruptionBudgets on eviction (`kubectl drain`),
//! built-in validation of names, labels and StatefulSet updates, a new pod
//! IP per incarnation, server-side apply conflicts between field managers,
//! the StatefulSet claim retention policy, and a scheduler that honours
//! required anti-affinity and topology spread (a lost Node and a force
//! delete leave a pod Pending).

mod common;

use std::time::Duration;

use common::{run, start, tool, wait_for, Out};
use keyraft_e2e::Simulator;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

/// A StatefulSet of `replicas` sleeping pods labelled `app: NAME`, with a
/// claim per pod; `extra_spec` and `pod_spec` are YAML lines added to the
/// set's and the pod template's spec.
fn sleeper_set(name: &str, replicas: usize, extra_spec: &str, pod_spec: &str) -> String {
    let indent = |s: &str, n: usize| s.lines().map(|l| format!("{}{l}\n", " ".repeat(n))).collect::<String>();
    format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  serviceName: {name}\n  podManagementPolicy: Parallel\n  selector:\n    matchLabels: {{app: {name}}}\n{}  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      terminationGracePeriodSeconds: 2\n      containers:\n      - name: main\n        image: busybox\n        command: [sleep, \"3600\"]\n{}  volumeClaimTemplates:\n  - metadata: {{name: data}}\n    spec:\n      accessModes: [ReadWriteOnce]\n      resources: {{requests: {{storage: 1Gi}}}}\n",
        indent(extra_spec, 2),
        indent(pod_spec, 6)
    )
}

async fn kubectl(sim: &Simulator, k: &std::path::Path, args: &[&str]) -> Out {
    run(sim, k, args, None).await
}

async fn kubectl_ok(sim: &Simulator, k: &std::path::Path, args: &[&str]) -> String {
    let out = kubectl(sim, k, args).await;
    assert!(out.ok, "kubectl {args:?}: {}", out.stderr);
    out.stdout
}

async fn apply(sim: &Simulator, k: &std::path::Path, manifest: &str) {
    let out = run(sim, k, &["apply", "-f", "-"], Some(manifest)).await;
    assert!(out.ok, "apply: {}\n{manifest}", out.stderr);
}

async fn get_json(sim: &Simulator, k: &std::path::Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kubectl_ok(sim, k, &all).await).unwrap()
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        && p["metadata"]["deletionTimestamp"].is_null()
}

/// Waits until the pods labelled `app=NAME` number `n` and `ready_n` of them are Ready.
async fn wait_pods(sim: &Simulator, k: &std::path::Path, app: &str, n: usize, ready_n: usize) -> Vec<Value> {
    let sel = format!("app={app}");
    wait_for(&format!("{ready_n}/{n} ready pods of {app}"), LIMIT, || async {
        let list = get_json(sim, k, &["get", "pods", "-l", &sel]).await;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        (items.len() == n && items.iter().filter(|p| ready(p)).count() == ready_n).then_some(items)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_is_refused_while_the_budget_allows_no_disruption() {
    let Some(k) = tool("kubectl") else { return };
    let (sim, _dir) = start(false).await;
    apply(&sim, &k, &sleeper_set("web", 3, "", "")).await;
    apply(&sim, &k, "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\nspec:\n  minAvailable: 3\n  selector: {matchLabels: {app: web}}\n").await;
    let pods = wait_pods(&sim, &k, "web", 3, 3).await;
    let status = wait_for("the budget's status", LIMIT, || async {
        let pdb = get_json(&sim, &k, &["get", "pdb", "web"]).await;
        (pdb["status"]["currentHealthy"] == 3).then(|| pdb["status"].clone())
    })
    .await;
    assert_eq!(
        (&status["desiredHealthy"], &status["expectedPods"], &status["disruptionsAllowed"]),
        (&Value::from(3), &Value::from(3), &Value::from(0)),
        "{status}"
    );
    let node = pods[0]["spec"]["nodeName"].as_str().unwrap().to_string();
    let out = kubectl(&sim, &k, &["drain", &node, "--ignore-daemonsets", "--timeout=4s"]).await;
    assert!(!out.ok, "drain passed a budget that allows no disruption");
    assert!(
        out.stderr.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "drain: {}",
        out.stderr
    );
    assert_eq!(wait_pods(&sim, &k, "web", 3, 3).await.len(), 3, "no pod was evicted");

    // With room for one disruption the same drain evicts the node's pod.
    kubectl_ok(&sim, &k, &["patch", "pdb", "web", "--type=merge", "-p", r#"{"spec":{"minAvailable":2}}"#]).await;
    wait_for("one disruption allowed", LIMIT, || async {
        let pdb = get_json(&sim, &k, &["get", "pdb", "web"]).await;
        (pdb["status"]["disruptionsAllowed"] == 1).then_some(())
    })
    .await;
    let out = kubectl(&sim, &k, &["drain", &node, "--ignore-daemonsets", "--timeout=60s"]).await;
    assert!(out.ok, "drain with a disruption allowed: {}", out.stderr);
    assert!(out.stdout.contains("evicted"), "{}", out.stdout);
    let on_node = get_json(&sim, &k, &["get", "pods", "--field-selector", &format!("spec.nodeName={node}")]).await;
    assert_eq!(on_node["items"].as_array().unwrap().len(), 0, "the cordoned node got no pod back");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_labels_and_statefulset_changes_are_rejected_as_by_the_api_server() {
    let Some(k) = tool("kubectl") else { return };
    let (sim, _dir) = start(false).await;
    let out = run(
        &sim,
        &k,
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Service\nmetadata: {name: 1kv}\nspec:\n  ports: [{port: 80}]\n"),
    )
    .await;
    assert!(!out.ok, "a Service name that is no DNS-1035 label was accepted");
    assert!(
        out.stderr.contains(r#"The Service "1kv" is invalid: metadata.name: Invalid value: "1kv": a DNS-1035 label must consist of lower case alphanumeric characters"#),
        "{}",
        out.stderr
    );
    let long = "v".repeat(64);
    let out = run(
        &sim,
        &k,
        &["apply", "-f", "-"],
        Some(&format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  labels: {{version: {long}}}\n")),
    )
    .await;
    assert!(!out.ok, "a 64-character label value was accepted");
    assert!(
        out.stderr
            .contains(&format!(r#"metadata.labels: Invalid value: "{long}": must be no more than 63 characters"#)),
        "{}",
        out.stderr
    );

    // A StatefulSet name so long that `controller-revision-hash` passes 63
    // characters: the set is stored, its pods cannot be created.
    let long_set = "s".repeat(56);
    apply(&sim, &k, &sleeper_set(&long_set, 1, "", "")).await;
    let msg = wait_for("a FailedCreate event", LIMIT, || async {
        let ev = get_json(&sim, &k, &["get", "events", "--field-selector", "reason=FailedCreate"]).await;
        ev["items"].as_array()?.first().map(|e| e["message"].as_str().unwrap_or_default().to_string())
    })
    .await;
    assert!(msg.contains("must be no more than 63 characters"), "{msg}");
    let pods = get_json(&sim, &k, &["get", "pods"]).await;
    assert_eq!(pods["items"].as_array().unwrap().len(), 0);

    apply(&sim, &k, &sleeper_set("web", 1, "", "")).await;
    let out =
        kubectl(&sim, &k, &["patch", "sts", "web", "--type=merge", "-p", r#"{"spec":{"serviceName":"other"}}"#]).await;
    assert!(!out.ok, "an immutable StatefulSet field changed");
    assert!(
        out.stderr.contains("spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"),
        "{}",
        out.stderr
    );
    kubectl_ok(&sim, &k, &["scale", "sts", "web", "--replicas=2"]).await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_pod_gets_a_new_ip() {
    let Some(k) = tool("kubectl") else { return };
    let (sim, _dir) = start(false).await;
    apply(&sim, &k, &sleeper_set("web", 1, "", "")).await;
    let first = wait_pods(&sim, &k, "web", 1, 1).await.remove(0);
    let (uid, ip) = (first["metadata"]["uid"].clone(), first["status"]["podIP"].clone());
    assert!(ip.is_string(), "{first}");
    kubectl_ok(&sim, &k, &["delete", "pod", "web-0"]).await;
    let second = wait_for("web-0 re-created and ready", LIMIT, || async {
        let p = get_json(&sim, &k, &["get", "pods", "-l", "app=web"]).await["items"][0].clone();
        (p["metadata"]["uid"] != uid && ready(&p)).then_some(p)
    })
    .await;
    assert_ne!(second["status"]["podIP"], ip, "the new incarnation kept the old address");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_by_another_field_manager_conflicts_unless_forced() {
    let Some(k) = tool("kubectl") else { return };
    let (sim, _dir) = start(false).await;
    let cm = |x: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\ndata: {{x: \"{x}\"}}\n");
    let ssa = |manager: &'static str, force: bool| {
        let mut args = vec!["apply", "--server-side", "--field-manager", manager, "-f", "-"];
        if force {
            args.push("--force-conflicts");
        }
        args
    };
    assert!(run(&sim, &k, &ssa("gitops", false), Some(&cm("1"))).await.ok);
    let out = run(&sim, &k, &ssa("operator", false), Some(&cm("2"))).await;
    assert!(!out.ok, "a second manager changed an owned field without force");
    assert!(out.stderr.contains(r#"Apply failed with 1 conflict: conflict with "gitops": .data.x"#), "{}", out.stderr);
    // The same value is shared ownership, not a conflict.
    assert!(run(&sim, &k, &ssa("operator", false), Some(&cm("1"))).await.ok);
    let out = run(&sim, &k, &ssa("operator", true), Some(&cm("2"))).await;
    assert!(out.ok, "forced apply: {}", out.stderr);
    let obj = get_json(&sim, &k, &["get", "cm", "c", "--show-managed-fields"]).await;
    assert_eq!(obj["data"]["x"], "2");
    let owners: Vec<&str> = obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["fieldsV1"]["f:data"].get("f:x").is_some())
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert_eq!(owners, ["operator"], "the forced apply took the field");

    // An edit (an Update) owns what it changed: the applier conflicts with it.
    kubectl_ok(&sim, &k, &["patch", "cm", "c", "--type=merge", "-p", r#"{"data":{"x":"3"}}"#]).await;
    let out = run(&sim, &k, &ssa("operator", false), Some(&cm("2"))).await;
    assert!(!out.ok, "apply over an edited field");
    assert!(out.stderr.contains(r#"conflict with "kubectl-patch" using v1"#), "{}", out.stderr);
    sim.shutdown().await;
}

async fn claims(sim: &Simulator, k: &std::path::Path) -> Vec<String> {
    let list = get_json(sim, k, &["get", "pvc"]).await;
    let mut names: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["metadata"]["deletionTimestamp"].is_null())
        .map(|c| c["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

async fn wait_claims(sim: &Simulator, k: &std::path::Path, want: &[&str]) {
    wait_for(&format!("claims {want:?}"), LIMIT, || async { (claims(sim, k).await == want).then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_retention_policy_deletes_or_keeps_claims() {
    let Some(k) = tool("kubectl") else { return };
    let (sim, _dir) = start(false).await;
    let policy = |scaled: &str, deleted: &str| {
        format!("persistentVolumeClaimRetentionPolicy: {{whenScaled: {scaled}, whenDeleted: {deleted}}}")
    };
    apply(&sim, &k, &sleeper_set("web", 3, &policy("Delete", "Retain"), "")).await;
    wait_pods(&sim, &k, "web", 3, 3).await;
    wait_claims(&sim, &k, &["data-web-0", "data-web-1", "data-web-2"]).await;
    kubectl_ok(&sim, &k, &["scale", "sts", "web", "--replicas=1"]).await;
    wait_claims(&sim, &k, &["data-web-0"]).await;

    // Retain on scale-in, Delete with the set (a mutable field).
    apply(&sim, &k, &sleeper_set("web", 2, &policy("Retain", "Delete"), "")).await;
    wait_pods(&sim, &k, "web", 2, 2).await;
    kubectl_ok(&sim, &k, &["scale", "sts", "web", "--replicas=1"]).await;
    wait_pods(&sim, &k, "web", 1, 1).await;
    wait_claims(&sim, &k, &["data-web-0", "data-web-1"]).await;
    let owners = get_json(&sim, &k, &["get", "pvc", "data-web-1"]).await["metadata"]["ownerReferences"].clone();
    assert_eq!(owners[0]["kind"], "StatefulSet", "whenDeleted: Delete puts the set as owner: {owners}");
    kubectl_ok(&sim, &k, &["delete", "sts", "web"]).await;
    wait_claims(&sim, &k, &[]).await;

    // whenDeleted: Retain keeps them.
    apply(&sim, &k, &sleeper_set("db", 1, &policy("Retain", "Retain"), "")).await;
    wait_pods(&sim, &k, "db", 1, 1).await;
    kubectl_ok(&sim, &k, &["delete", "sts", "db"]).await;
    wait_for("db's pod gone", LIMIT, || async {
        get_json(&sim, &k, &["get", "pods", "-l", "app=db"]).await["items"].as_array()?.is_empty().then_some(())
    })
    .await;
    assert_eq!(claims(&sim, &k).await, ["data-db-0"]);
    sim.shutdown().await;
}

fn set_node_ready(sim: &Simulator, node: &str, ready: bool) {
    keyraft_e2e::controllers::nodes::set_ready(&sim.objects, node, ready).expect("node exists");
}

fn scheduled_false(p: &Value) -> Option<String> {
    let c = p["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "PodScheduled")?;
    (c["status"] == "False" && c["reason"] == "Unschedulable").then(|| c["message"].as_str().unwrap_or_default().into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_honours_anti_affinity_and_zone_spread() {
    let Some(k) = tool("kubectl") else { return };
    let (sim, _dir) = start(false).await;
    // Required anti-affinity per host: 4 pods, 3 nodes.
    let anti = "affinity:\n  podAntiAffinity:\n    requiredDuringSchedulingIgnoredDuringExecution:\n    - labelSelector: {matchLabels: {app: web}}\n      topologyKey: kubernetes.io/hostname\n";
    apply(&sim, &k, &sleeper_set("web", 4, "", anti)).await;
    wait_pods(&sim, &k, "web", 4, 3).await;
    let pending = get_json(&sim, &k, &["get", "pod", "web-3"]).await;
    let msg = scheduled_false(&pending).unwrap_or_else(|| panic!("web-3 not Unschedulable: {pending}"));
    assert!(msg.contains("3 node(s) didn't match pod anti-affinity rules"), "{msg}");
    let ev =
        get_json(&sim, &k, &["get", "events", "--field-selector", "reason=FailedScheduling,involvedObject.name=web-3"])
            .await;
    assert_eq!(ev["items"][0]["type"], "Warning", "{ev}");

    // A lost node: its pod turns unready; force-deleted, it comes back Pending.
    kubectl_ok(&sim, &k, &["scale", "sts", "web", "--replicas=3"]).await;
    wait_pods(&sim, &k, "web", 3, 3).await;
    let node = get_json(&sim, &k, &["get", "pod", "web-0"]).await["spec"]["nodeName"].as_str().unwrap().to_string();
    set_node_ready(&sim, &node, false);
    wait_pods(&sim, &k, "web", 3, 2).await;
    kubectl_ok(&sim, &k, &["delete", "pod", "web-0", "--force", "--grace-period=0"]).await;
    wait_for("web-0 Pending", LIMIT, || async {
        let p = get_json(&sim, &k, &["get", "pod", "web-0"]).await;
        (p["status"]["phase"] == "Pending" && scheduled_false(&p).is_some()).then_some(())
    })
    .await;
    set_node_ready(&sim, &node, true);
    wait_pods(&sim, &k, "web", 3, 3).await;

    // Zone spread with DoNotSchedule: a zone whose node is NotReady still
    // counts, so the third pod waits for it rather than doubling a zone.
    set_node_ready(&sim, "sim-node-2", false);
    let spread = "topologySpreadConstraints:\n- maxSkew: 1\n  topologyKey: topology.kubernetes.io/zone\n  whenUnsatisfiable: DoNotSchedule\n  labelSelector: {matchLabels: {app: db}}\n";
    apply(&sim, &k, &sleeper_set("db", 3, "", spread)).await;
    let pods = wait_pods(&sim, &k, "db", 3, 2).await;
    let pending: Vec<&Value> = pods.iter().filter(|p| p["spec"]["nodeName"].is_null()).collect();
    assert_eq!(pending.len(), 1, "one db pod waits");
    let msg = scheduled_false(pending[0]).expect("Unschedulable");
    assert!(msg.contains("node(s) didn't match pod topology spread constraints"), "{msg}");
    set_node_ready(&sim, "sim-node-2", true);
    let pods = wait_pods(&sim, &k, "db", 3, 3).await;
    let mut zones: Vec<String> = Vec::new();
    for p in &pods {
        let node = p["spec"]["nodeName"].as_str().unwrap();
        let n = get_json(&sim, &k, &["get", "node", node]).await;
        zones.push(n["metadata"]["labels"]["topology.kubernetes.io/zone"].as_str().unwrap().into());
    }
    zones.sort();
    assert_eq!(zones, ["zone-a", "zone-b", "zone-c"]);
    sim.shutdown().await;
}
