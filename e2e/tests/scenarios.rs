//! Operator end-to-end scenarios on the simulator. Each installs the
//! operator as users do (`helm install` of charts/keyraft-operator), applies
//! KeyraftClusters with kubectl, runs a keyraft-client workload while it
//! checks, and ends by reading back every acknowledged write and checking
//! that status and conditions tell the truth.
//!
//! Every scenario uses its own namespace, suffixed with the process id:
//! cluster DNS names go into the shared /etc/hosts, so two simulators must
//! not both serve `basic-0.basic-headless.NS.svc`.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{
    assert_all_readable, assert_status_truthful, client, node_status, pod_endpoints, service_endpoint, Env, Workload,
};
use common::wait_for;

/// Bound on a cluster going from `kubectl apply` to Running (a few seconds
/// on an idle machine; CI shares two cores).
const CREATE: Duration = Duration::from_secs(120);
/// Bound on the workload making progress at a checkpoint.
const PROGRESS: Duration = Duration::from_secs(60);

/// A namespace unique to this test process: pod DNS names include it, and
/// a hosts-file block left by a killed run must not shadow ours.
fn namespace(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

/// `kubectl get kr` as rows of whitespace-separated cells, header first.
fn table(out: &str) -> Vec<Vec<String>> {
    out.lines().map(|l| l.split_whitespace().map(String::from).collect()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_from_the_example_becomes_available_and_keeps_every_acknowledged_write() {
    let Some(env) = Env::with_operator().await else { return };
    let ns = &namespace("create-basic");
    env.create_namespace(ns).await;
    let t0 = Instant::now();
    env.apply_file(ns, "examples/basic.yaml").await;
    let kr = env.wait_running(ns, "basic", 3, CREATE).await;
    eprintln!("basic Running after {:?}", t0.elapsed());

    // What a person sees.
    env.kubectl_ok(&["wait", "--for=condition=Available", "kr/basic", "-n", ns, "--timeout=10s"]).await;
    let rows = table(&env.kubectl_ok(&["get", "kr", "-n", ns]).await);
    assert_eq!(rows[0], ["NAME", "REPLICAS", "READY", "VERSION", "PHASE", "AGE"], "{rows:?}");
    let version = kr["spec"]["version"].as_str().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1][..5], ["basic", "3", "3", version, "Running"], "{rows:?}");

    // A workload through the pods' DNS names, running while we check.
    let work = Workload::start(pod_endpoints(ns, "basic", 3), 3, "create");
    work.progresses(100, PROGRESS).await;
    let kr = env.wait_running(ns, "basic", 3, Duration::from_secs(30)).await;
    assert_status_truthful(&env, ns, &kr).await;
    assert_eq!(
        env.cluster_objects(ns, "basic", "pvc").await.len(),
        3,
        "one claim per member: {:?}",
        env.cluster_objects(ns, "basic", "pvc").await
    );
    work.progresses(100, PROGRESS).await;
    let tally = work.stop().await;
    assert!(tally.failed.is_empty(), "writes failed on a healthy cluster: {:?}", tally.failed);
    assert!(tally.wrong_reads.is_empty(), "read-your-writes: {:?}", tally.wrong_reads);

    // Every acknowledged write, through the client Service this time.
    assert_all_readable(vec![service_endpoint(ns, "basic")], &tally.acked).await;
    // Nothing changed underneath: still Running, same cluster.
    let after = env.wait_running(ns, "basic", 3, Duration::from_secs(30)).await;
    assert_eq!(after["status"]["clusterId"], kr["status"]["clusterId"]);
    tls_is_on_and_enforced(&env, ns, "basic").await;
    eprintln!("{} writes acknowledged and read back; scenario took {:?}", tally.acked.len(), t0.elapsed());
    env.shutdown().await;
}

/// The cluster runs TLS by default: the client certificate taken from its
/// Secret with kubectl (the README's recipe) reads and writes but may not
/// call admin methods; a client without a certificate, or in plaintext, is
/// refused with a message saying so.
async fn tls_is_on_and_enforced(env: &Env, ns: &str, name: &str) {
    use base64::Engine as _;
    use keyraft_client::{Client, ClientOptions, TlsOptions};
    let dir = tempfile::tempdir().unwrap();
    let secret = format!("{name}-client-tls");
    for (key, file) in [("ca\\.crt", "ca.pem"), ("tls\\.crt", "client.pem"), ("tls\\.key", "client-key.pem")] {
        let jsonpath = format!("jsonpath={{.data.{key}}}");
        let b64 = env.kubectl_ok(&["get", "secret", &secret, "-n", ns, "-o", &jsonpath]).await;
        let pem = base64::engine::general_purpose::STANDARD.decode(b64.trim()).expect("base64 from kubectl");
        std::fs::write(dir.path().join(file), pem).unwrap();
    }
    let ep = service_endpoint(ns, name);
    let with = |cert: bool, tls: bool| {
        let mut o = ClientOptions::new(vec![ep.clone()]);
        o.timeout = Duration::from_secs(10);
        o.tls = tls.then(|| TlsOptions {
            ca: dir.path().join("ca.pem"),
            cert: cert.then(|| dir.path().join("client.pem")),
            key: cert.then(|| dir.path().join("client-key.pem")),
        });
        Client::new(o).expect("client options")
    };

    let app = with(true, true);
    app.put("tls/app", "over mutual TLS").await.expect("a client certificate writes");
    let back = app.get("tls/app", Some(keyraft_client::ConsistencyLevel::Linearizable)).await.unwrap();
    assert_eq!(back.as_deref(), Some(&b"over mutual TLS"[..]));
    let mut admin = app.admin(&ep).unwrap();
    let refused = admin
        .rebalance(keyraft_client::pb::RebalanceRequest { dry_run: true, max_moves: 1 })
        .await
        .expect_err("a client identity may not call Admin.Rebalance");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("admin"), "{}", refused.message());

    let t = Instant::now();
    let anonymous = with(false, true).put("tls/anonymous", "x").await.expect_err("no certificate, no token");
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated, "{anonymous}");
    let plaintext = with(false, false).put("tls/plaintext", "x").await.expect_err("plaintext to a TLS node");
    assert!(t.elapsed() < Duration::from_secs(25), "refusals must not hang: {:?}", t.elapsed());
    eprintln!("refused as expected: without a certificate: {anonymous}; in plaintext: {plaintext}");
}

/// Lines of `kubectl describe` output as (key, value) after trimming.
fn described(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| l.trim().split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_and_get_show_the_cluster_and_invalid_changes_are_rejected_while_it_serves() {
    let Some(env) = Env::with_operator().await else { return };
    let ns = &namespace("describe");
    env.create_namespace(ns).await;
    env.apply_file(ns, "examples/basic.yaml").await;
    let kr = env.wait_running(ns, "basic", 3, CREATE).await;
    let work = Workload::start(pod_endpoints(ns, "basic", 3), 2, "describe");
    work.progresses(50, PROGRESS).await;

    // describe: identity, spec with defaults, status, conditions, events.
    let out = env.kubectl_ok(&["describe", "kr", "basic", "-n", ns]).await;
    let kv = described(&out);
    let has = |k: &str, v: &str| kv.iter().any(|(a, b)| a == k && b == v);
    for (k, v) in [
        ("Name", "basic"),
        ("Namespace", ns),
        ("Kind", "KeyraftCluster"),
        ("API Version", "keyraft.io/v1alpha1"),
        ("Replicas", "3"),
        ("Replication Factor", "3"),
        ("Partitions", "16"),
        ("Default Read", "linearizable"),
        ("Reclaim Policy", "Delete"),
        ("Phase", "Running"),
        ("Ready Replicas", "3"),
        ("Cluster Id", kr["status"]["clusterId"].as_str().unwrap()),
        ("Current Version", kr["spec"]["version"].as_str().unwrap()),
    ] {
        assert!(has(k, v), "describe should show {k}: {v}\n{out}");
    }
    // The Available condition, as a block: its Status line comes right before its Type line.
    let avail = kv.iter().position(|(k, v)| k == "Type" && v == "Available").expect("an Available condition");
    assert_eq!(kv[avail - 1], ("Status".to_string(), "True".to_string()), "{out}");
    assert!(kv.iter().any(|(k, v)| k == "Reason" && v == "QuorumAvailable"), "{out}");
    for i in 0..3 {
        assert!(has("Pod", &format!("basic-{i}")), "member basic-{i} listed\n{out}");
    }
    assert!(out.contains("Finalizers:") && out.contains("keyraft.io/cleanup"), "{out}");
    // The operator's Events (events.k8s.io/v1) under the object, as on a cluster.
    let events = &out[out.find("\nEvents:").expect("an Events section")..];
    let bootstrapped = events.lines().find(|l| l.contains("Bootstrapped")).unwrap_or_else(|| panic!("{events}"));
    for part in ["Normal", "keyraft-operator", "bootstrapped through basic-0 with 3 nodes"] {
        assert!(bootstrapped.contains(part), "{part:?} in {bootstrapped:?}");
    }

    // get: by name, -o wide, across namespaces, by short and full names.
    let rows = table(&env.kubectl_ok(&["get", "keyraftclusters.keyraft.io", "basic", "-n", ns]).await);
    assert_eq!(rows[1][..5], ["basic", "3", "3", kr["spec"]["version"].as_str().unwrap(), "Running"], "{rows:?}");
    let rows = table(&env.kubectl_ok(&["get", "kr", "-A"]).await);
    assert_eq!(rows[0][..2], ["NAMESPACE", "NAME"], "{rows:?}");
    assert!(rows.iter().any(|r| r[..2] == [ns, "basic"]), "{rows:?}");
    let name = env.kubectl_ok(&["get", "kr", "-n", ns, "-o", "name"]).await;
    assert_eq!(name.trim(), "keyraftcluster.keyraft.io/basic");

    // Changes the API server must refuse on a live cluster, with messages
    // that say what is wrong (kubectl.rs covers bad manifests at creation).
    let refused: [(&[&str], &str); 4] = [
        (
            &["patch", "kr", "basic", "-n", ns, "--type=merge", "-p", r#"{"spec":{"partitions":32}}"#],
            "partitions is immutable",
        ),
        (&["scale", "kr/basic", "-n", ns, "--replicas=2"], "replicationFactor must not exceed replicas"),
        (
            &["patch", "kr", "basic", "-n", ns, "--type=merge", "-p", r#"{"spec":{"replicationFactor":2}}"#],
            "spec.replicationFactor",
        ),
        (
            &["patch", "kr", "basic", "-n", ns, "--type=merge", "-p", r#"{"spec":{"storage":{"size":"lots"}}}"#],
            "spec.storage.size",
        ),
    ];
    for (args, message) in refused {
        let out = env.kubectl(args).await;
        assert!(!out.ok, "kubectl {} was accepted", args.join(" "));
        assert!(out.stderr.contains(message), "kubectl {}: should say {message:?}: {}", args.join(" "), out.stderr);
    }
    // A bad manifest through apply --server-side names the field too.
    let bad = "apiVersion: keyraft.io/v1alpha1\nkind: KeyraftCluster\nmetadata:\n  name: other\nspec:\n  replicas: 3\n  failover: {timeout: soon}\n";
    let out = env.kubectl_stdin(&["apply", "--server-side", "-n", ns, "-f", "-"], bad).await;
    assert!(!out.ok && out.stderr.contains("spec.failover.timeout"), "{}", out.stderr);
    assert!(env.cluster(ns, "other").await.is_none());

    // Nothing of that reached the cluster: same generation and spec, still settled and serving.
    let now = env.wait_running(ns, "basic", 3, Duration::from_secs(30)).await;
    assert_eq!(now["metadata"]["generation"], kr["metadata"]["generation"]);
    assert_eq!(now["spec"], kr["spec"]);
    work.progresses(50, PROGRESS).await;
    let tally = work.stop().await;
    assert!(tally.failed.is_empty(), "writes failed: {:?}", tally.failed);
    assert_all_readable(vec![service_endpoint(ns, "basic")], &tally.acked).await;
    env.shutdown().await;
}

/// A directory with at least one file somewhere below it.
fn has_files(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).into_iter().flatten().flatten().any(|e| e.path().is_file() || has_files(&e.path()))
}

const KEPT: &str = "apiVersion: keyraft.io/v1alpha1
kind: KeyraftCluster
metadata:
  name: kept
spec:
  replicas: 1
  replicationFactor: 1
  partitions: 4
  storage:
    reclaimPolicy: Retain
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_cluster_removes_its_objects_and_keeps_volumes_only_when_asked() {
    let Some(env) = Env::with_operator().await else { return };
    if env.faults("reading the volumes' directories").is_none() {
        return;
    }
    let ns = &namespace("delete");
    env.create_namespace(ns).await;
    env.apply_file(ns, "examples/basic.yaml").await;
    env.apply(ns, KEPT).await;
    let basic = env.wait_running(ns, "basic", 3, CREATE).await;
    let kept = env.wait_running(ns, "kept", 1, CREATE).await;
    for kr in [&basic, &kept] {
        let finalizers = &kr["metadata"]["finalizers"];
        assert!(
            finalizers.as_array().is_some_and(|f| f.iter().any(|f| f == "keyraft.io/cleanup")),
            "the operator's finalizer: {finalizers}"
        );
    }
    let mut basic_dirs = Vec::new();
    for i in 0..3 {
        basic_dirs.extend(env.volume_dirs(ns, &format!("basic-{i}")).await);
    }
    let kept_dirs = env.volume_dirs(ns, "kept-0").await;
    assert_eq!((basic_dirs.len(), kept_dirs.len()), (3, 1), "one data volume per pod");

    // Data in both; a workload on basic while the other cluster is deleted.
    let kept_client = client(pod_endpoints(ns, "kept", 1));
    kept_client.put("kept-key", "survives").await.expect("write to kept");
    let work = Workload::start(pod_endpoints(ns, "basic", 3), 2, "delete");
    work.progresses(50, PROGRESS).await;
    // The nodes keep their data on the claims' volumes (not in some pod-local directory).
    for d in basic_dirs.iter().chain(&kept_dirs) {
        assert!(has_files(d), "no data on volume {}", d.display());
    }

    // Retain: every object goes, the claim and its data stay.
    env.kubectl_ok(&["delete", "kr", "kept", "-n", ns, "--timeout=60s"]).await;
    assert!(env.cluster(ns, "kept").await.is_none(), "kubectl delete waits for the finalizer");
    wait_for("kept's StatefulSet, Services, pods, ConfigMap, PDB gone", Duration::from_secs(60), || async {
        env.cluster_objects(ns, "kept", "statefulset,service,pod,configmap,poddisruptionbudget")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(
        env.cluster_objects(ns, "kept", "pvc").await,
        ["persistentvolumeclaim/data-kept-0"],
        "Retain keeps the claim"
    );
    assert!(has_files(&kept_dirs[0]), "Retain keeps the data: {}", kept_dirs[0].display());
    // The other cluster never noticed.
    work.progresses(50, PROGRESS).await;

    // Delete (the default): the claims go too, and their data with them.
    let work_tally = work.stop().await;
    env.kubectl_ok(&["delete", "kr", "basic", "-n", ns, "--timeout=60s"]).await;
    assert!(env.cluster(ns, "basic").await.is_none());
    wait_for("basic's objects and claims gone", Duration::from_secs(60), || async {
        env.cluster_objects(ns, "basic", "statefulset,service,pod,configmap,poddisruptionbudget,pvc")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    wait_for("basic's volume directories removed", Duration::from_secs(30), || async {
        basic_dirs.iter().all(|d| !d.exists()).then_some(())
    })
    .await;
    assert!(work_tally.failed.is_empty(), "writes failed before deletion: {:?}", work_tally.failed);
    let events = env
        .kubectl_ok(&[
            "get",
            "events.events.k8s.io",
            "-n",
            ns,
            "-o",
            "jsonpath={range .items[*]}{.regarding.name} {.reason}: {.note}{\"\\n\"}{end}",
        ])
        .await;
    assert!(events.contains("kept Deleted: cluster deleted; volumes retained"), "{events}");
    assert!(events.contains("basic Deleted: cluster deleted; volumes deleted"), "{events}");

    env.shutdown().await;
}

/// Retain keeps data for a purpose: a cluster created again under the same
/// name finds its volumes, serves the old data, and says it is Running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_created_again_over_retained_volumes_serves_its_old_data() {
    let Some(env) = Env::with_operator().await else { return };
    let ns = &namespace("retain");
    env.create_namespace(ns).await;
    env.apply(ns, KEPT).await;
    let first = env.wait_running(ns, "kept", 1, CREATE).await;
    client(pod_endpoints(ns, "kept", 1)).put("kept-key", "survives").await.expect("write to kept");
    env.kubectl_ok(&["delete", "kr", "kept", "-n", ns, "--timeout=60s"]).await;
    wait_for("kept's pod gone", Duration::from_secs(60), || async {
        env.cluster_objects(ns, "kept", "pod").await.is_empty().then_some(())
    })
    .await;
    assert_eq!(env.cluster_objects(ns, "kept", "pvc").await, ["persistentvolumeclaim/data-kept-0"]);

    env.apply(ns, KEPT).await;
    // The new cluster object has a CA of its own: its credentials are read
    // once it runs.
    let again = env.wait_running(ns, "kept", 1, CREATE).await;
    let c = client(pod_endpoints(ns, "kept", 1));
    let got = wait_for("kept-key readable again", CREATE, || async { c.get("kept-key", None).await.ok() }).await;
    assert_eq!(got.as_deref(), Some(&b"survives"[..]), "the retained claim's data");
    assert_eq!(again["status"]["clusterId"], first["status"]["clusterId"], "the same Raft cluster");
    assert_status_truthful(&env, ns, &again).await;
    env.shutdown().await;
}

/// Eight partitions moving four at a time: scaling settles in about a
/// minute on two cores instead of several.
const SCALED: &str = "apiVersion: keyraft.io/v1alpha1
kind: KeyraftCluster
metadata:
  name: basic
spec:
  replicas: 3
  partitions: 8
  rebalance:
    maxConcurrentMoves: 4
";

/// 3 -> 5 -> 3 under a workload, with `kubectl scale`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_three_to_five_and_back_keeps_serving_and_every_write() {
    let Some(env) = Env::with_operator().await else { return };
    let ns = &namespace("scale");
    env.create_namespace(ns).await;
    env.apply(ns, SCALED).await;
    let kr = env.wait_running(ns, "basic", 3, CREATE).await;
    let cluster_id = kr["status"]["clusterId"].clone();
    let work = Workload::start(pod_endpoints(ns, "basic", 3), 2, "scale");
    work.progresses(50, PROGRESS).await;

    let t = Instant::now();
    env.kubectl_ok(&["scale", "kr/basic", "-n", ns, "--replicas=5"]).await;
    // Settled, and the new members carry data: every member holds some
    // replica. Until then no status may claim a balanced cluster: the new
    // pods exist, and then are ready, before any replica moves onto them,
    // so while a member holds no replica Rebalancing must be True, whatever
    // the phase (it used to read Running, Available and Rebalancing=False
    // Balanced in that window). Only statuses that know the placement and
    // every member's node id count: a pass in which no node answered knows
    // neither.
    let empty_members = |kr: &serde_json::Value| -> Vec<String> {
        let partitions = kr["status"]["partitions"].as_array().cloned().unwrap_or_default();
        common::cluster::members(kr)
            .iter()
            .filter(|m| {
                let id = &m["nodeId"];
                !partitions.iter().any(|p| p["replicas"].as_array().is_some_and(|r| r.contains(id)))
            })
            .map(|m| m["pod"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let mut claimed_balanced = Vec::new();
    let five = env
        .wait_status(ns, "basic", "Running with 5 members, each holding a replica", Duration::from_secs(300), |kr| {
            let knows_placement = kr["status"]["partitions"].as_array().is_some_and(|p| !p.is_empty())
                && common::cluster::members(kr).iter().all(|m| m["nodeId"].is_u64());
            let empty = empty_members(kr);
            let rebalancing = common::cluster::condition(kr, "Rebalancing").is_some_and(|c| c["status"] == "True");
            if knows_placement && !empty.is_empty() && !rebalancing {
                claimed_balanced.push(format!(
                    "after {:?}, {empty:?} hold no replica: {}",
                    t.elapsed(),
                    common::cluster::without_partitions(&kr["status"])
                ));
            }
            common::cluster::settled(kr, 5) && empty.is_empty()
        })
        .await;
    assert!(
        claimed_balanced.is_empty(),
        "while a member held no replica, the status did not say Rebalancing=True:\n{}",
        claimed_balanced.join("\n")
    );
    eprintln!("3 -> 5 settled after {:?}", t.elapsed());
    assert_status_truthful(&env, ns, &five).await;
    work.progresses(50, PROGRESS).await;

    let t = Instant::now();
    env.kubectl_ok(&["scale", "kr/basic", "-n", ns, "--replicas=3"]).await;
    let three = env.wait_running(ns, "basic", 3, Duration::from_secs(300)).await;
    eprintln!("5 -> 3 settled after {:?}", t.elapsed());
    assert_status_truthful(&env, ns, &three).await;
    assert_eq!(three["status"]["clusterId"], cluster_id);
    wait_for("the removed members' claims deleted (reclaimPolicy Delete)", Duration::from_secs(60), || async {
        (env.cluster_objects(ns, "basic", "pvc").await.len() == 3).then_some(())
    })
    .await;
    work.progresses(50, PROGRESS).await;
    let tally = work.stop().await;
    assert!(tally.failed.is_empty(), "writes failed while scaling: {:?}", tally.failed);
    assert!(tally.wrong_reads.is_empty(), "read-your-writes: {:?}", tally.wrong_reads);
    let t = Instant::now();
    assert_all_readable(vec![service_endpoint(ns, "basic")], &tally.acked).await;
    eprintln!("{} acknowledged writes read back in {:?}", tally.acked.len(), t.elapsed());
    env.shutdown().await;
}

/// The operator itself changes under a running cluster: `helm upgrade` to a
/// new operator build hands the Lease to the new pods, which go on
/// reconciling; `helm uninstall` removes the operator and leaves the
/// cluster, its pods and its volumes serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_upgrade_and_uninstall_of_the_operator_leave_the_cluster_serving() {
    if common::external() {
        // The other scenarios share that cluster's operator release.
        eprintln!("SKIPPED: upgrading and uninstalling the operator needs an operator of its own");
        return;
    }
    let bins = tempfile::tempdir().unwrap();
    // A second operator build: the image tag runs it.
    let dir = common::tag_bin_dir(bins.path(), "0.2.0-next", "keyraft-operator", "");
    let Some(env) = Env::with_operator_on(|cfg| {
        cfg.tag_bin_dirs.insert("0.2.0-next".into(), dir);
    })
    .await
    else {
        return;
    };
    let ns = &namespace("helm");
    env.create_namespace(ns).await;
    env.apply(ns, SCALED).await;
    env.wait_running(ns, "basic", 3, CREATE).await;
    let work = Workload::start(pod_endpoints(ns, "basic", 3), 2, "helm");
    work.progresses(50, PROGRESS).await;

    let operator_pods = |out: String| -> Vec<(String, String)> {
        out.lines().filter_map(|l| l.split_once(' ')).map(|(a, b)| (a.to_string(), b.to_string())).collect()
    };
    let list = [
        "get",
        "pods",
        "-n",
        common::cluster::OPERATOR_NS,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.containers[0].image}{\"\\n\"}{end}",
    ];
    let before = operator_pods(env.kubectl_ok(&list).await);
    assert_eq!(before.len(), 2, "two operator replicas: {before:?}");

    // helm upgrade to the new build.
    let chart = common::repo().join("charts/keyraft-operator");
    let out = env
        .helm(&[
            "upgrade",
            "op",
            chart.to_str().unwrap(),
            "-n",
            common::cluster::OPERATOR_NS,
            "--set",
            "image.tag=0.2.0-next",
        ])
        .await;
    assert!(out.ok, "helm upgrade: {}{}", out.stdout, out.stderr);
    wait_for("both operator pods on the new build, the old ones gone", CREATE, || async {
        let pods = operator_pods(env.kubectl_ok(&list).await);
        (pods.len() == 2 && pods.iter().all(|(_, image)| image.ends_with(":0.2.0-next"))).then_some(())
    })
    .await;
    let lease_holder = || async {
        env.kubectl_ok(&[
            "get",
            "lease",
            "-n",
            common::cluster::OPERATOR_NS,
            "-o",
            "jsonpath={.items[*].spec.holderIdentity}",
        ])
        .await
    };
    let new_pods: Vec<String> = operator_pods(env.kubectl_ok(&list).await).into_iter().map(|(n, _)| n).collect();
    wait_for("a new operator pod holding the Lease", PROGRESS, || async {
        let holder = lease_holder().await;
        new_pods.iter().any(|p| holder.contains(p.as_str())).then_some(())
    })
    .await;
    // The new operator reconciles: a spec change reaches the nodes.
    let patch = r#"{"spec":{"consistency":{"defaultRead":"session"}}}"#;
    env.kubectl_ok(&["patch", "kr", "basic", "-n", ns, "--type=merge", "-p", patch]).await;
    wait_for("the new operator to push the default read level", PROGRESS, || async {
        let s = node_status(&common::cluster::pod_endpoint(ns, "basic", 0)).await;
        s.cluster.is_some_and(|c| c.default_read == keyraft_client::pb::Consistency::Session as i32).then_some(())
    })
    .await;
    env.wait_running(ns, "basic", 3, PROGRESS).await;
    work.progresses(50, PROGRESS).await;

    // helm uninstall: the operator goes, the cluster stays and serves.
    let out = env.helm(&["uninstall", "op", "-n", common::cluster::OPERATOR_NS]).await;
    assert!(out.ok, "helm uninstall: {}{}", out.stdout, out.stderr);
    wait_for("the operator's pods gone", PROGRESS, || async {
        env.kubectl_ok(&list).await.trim().is_empty().then_some(())
    })
    .await;
    assert!(env.cluster(ns, "basic").await.is_some(), "the KeyraftCluster stays (CRDs are not removed by helm)");
    assert_eq!(env.cluster_objects(ns, "basic", "pvc").await.len(), 3, "the volumes stay");
    work.progresses(100, PROGRESS).await;
    let ready =
        env.kubectl_ok(&["get", "statefulset", "basic", "-n", ns, "-o", "jsonpath={.status.readyReplicas}"]).await;
    assert_eq!(ready, "3", "every node pod still ready without the operator");

    let tally = work.stop().await;
    assert!(tally.failed.is_empty(), "writes failed while the operator changed: {:?}", tally.failed);
    assert!(tally.wrong_reads.is_empty(), "read-your-writes: {:?}", tally.wrong_reads);
    assert_all_readable(vec![service_endpoint(ns, "basic")], &tally.acked).await;
    eprintln!("{} writes acknowledged across helm upgrade and uninstall", tally.acked.len());
    env.shutdown().await;
}

/// Every node's `keyraft_tls_certificate_expiry_timestamp_seconds`, read
/// from its HTTP port through the pod's DNS name; `None` while a node cannot
/// be read (its name not yet in the hosts file, a refused connection).
fn certificate_expiries(ns: &str, name: &str, replicas: usize) -> Option<Vec<i64>> {
    use std::io::{Read, Write};
    (0..replicas)
        .map(|i| {
            let host = format!("{name}-{i}.{name}-headless.{ns}.svc:8080");
            let mut s = std::net::TcpStream::connect(&host).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            write!(s, "GET /metrics HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
            let mut body = String::new();
            s.read_to_string(&mut body).ok()?;
            body.lines()
                .find_map(|l| l.strip_prefix("keyraft_tls_certificate_expiry_timestamp_seconds "))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect()
}

/// The pods' (uid, restart count), by name.
async fn pod_incarnations(env: &Env, ns: &str, name: &str) -> Vec<String> {
    let out = env
        .kubectl_ok(&[
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            &format!("app.kubernetes.io/instance={name}"),
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}/{.metadata.uid}/{.status.containerStatuses[0].restartCount} {end}",
        ])
        .await;
    let mut pods: Vec<String> = out.split_whitespace().map(String::from).collect();
    pods.sort();
    pods
}

/// Certificates issued again while clients write: the operator re-issues
/// the node certificates into the Secret, the kubelet updates the mounted
/// files in place, every node reloads its certificate, and no request fails
/// and no pod restarts. Then the CA itself rolls over
/// (`keyraft.io/rotate-ca`), with the same guarantees. (The re-issue is forced by deleting the Secret: a
/// renewal by age needs a third of `certificateValidity`, at least 1h, to
/// pass; both take the same path: the operator issues what is missing or
/// due.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_issued_again_under_load_are_reloaded_without_a_failed_request_or_a_restart() {
    let Some(env) = Env::with_operator().await else { return };
    let ns = &namespace("rotate");
    env.create_namespace(ns).await;
    env.apply(ns, &common::cluster::manifest("rot", serde_json::json!({"replicas": 3, "partitions": 4}))).await;
    env.wait_running(ns, "rot", 3, CREATE).await;
    env.fetch_credentials(ns, "rot").await;
    let pods = pod_incarnations(&env, ns, "rot").await;
    let before = wait_for("every node's certificate expiry metric", Duration::from_secs(60), || async {
        certificate_expiries(ns, "rot", 3)
    })
    .await;
    assert!(before.iter().all(|e| *e > 0), "every node serves TLS: {before:?}");

    let work = Workload::start(pod_endpoints(ns, "rot", 3), 2, "rotate");
    work.progresses(50, PROGRESS).await;
    // Certificates carry whole seconds: make the new ones expire later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.kubectl_ok(&["delete", "secret", "rot-node-tls", "-n", ns]).await;
    let after = wait_for("every node to load its new certificate", Duration::from_secs(120), || async {
        let now = certificate_expiries(ns, "rot", 3)?;
        now.iter().zip(&before).all(|(n, b)| n > b).then_some(now)
    })
    .await;
    work.progresses(50, PROGRESS).await;

    // The CA itself rolls over: trusted everywhere first, then signing,
    // then the old one dropped, each step once every node reports it ready.
    // The client rereads its files, kept up to date as a mounted Secret is.
    let ca_of = |secret: &'static str, key: &'static str| {
        let env = &env;
        async move {
            let jsonpath = format!("jsonpath={{.data.{}}}", key.replace('.', "\\."));
            let b64 = env.kubectl_ok(&["get", "secret", secret, "-n", ns, "-o", &jsonpath]).await;
            use base64::Engine;
            let pem = base64::engine::general_purpose::STANDARD.decode(b64.trim()).unwrap_or_default();
            keyraft_api::tls::fingerprints_pem(&pem)
        }
    };
    let old_ca = ca_of("rot-ca", "ca.crt").await;
    assert_eq!(old_ca.len(), 1, "{old_ca:?}");
    env.kubectl_ok(&["annotate", "keyraftcluster/rot", "-n", ns, "keyraft.io/rotate-ca=e2e"]).await;
    let new_ca = wait_for("the CA roll-over to finish", Duration::from_secs(300), || async {
        env.fetch_credentials(ns, "rot").await;
        let (ca, next, previous) = (
            ca_of("rot-ca", "ca.crt").await,
            ca_of("rot-ca", "ca-next.crt").await,
            ca_of("rot-ca", "ca-previous.crt").await,
        );
        let bundle = ca_of("rot-node-tls", "ca.crt").await;
        (ca != old_ca && next.is_empty() && previous.is_empty() && bundle == ca).then_some(ca)
    })
    .await;
    env.fetch_credentials(ns, "rot").await;
    let events = env.events(ns, "rot").await;
    let step = |reason: &str| events.iter().any(|(r, _, _)| r == reason);
    assert!(step("CARollOverStarted") && step("CASwitched") && step("CARetired"), "an Event per step: {events:?}");
    work.progresses(50, PROGRESS).await;
    let tally = work.stop().await;
    assert!(tally.failed.is_empty(), "requests failed during the rotation: {:?}", tally.failed);
    assert!(tally.wrong_reads.is_empty(), "read-your-writes: {:?}", tally.wrong_reads);
    assert_eq!(pod_incarnations(&env, ns, "rot").await, pods, "no pod was restarted or replaced");
    assert_all_readable(pod_endpoints(ns, "rot", 3), &tally.acked).await;
    eprintln!(
        "certificates rotated ({before:?} -> {after:?}), CA {old_ca:?} -> {new_ca:?}; {} writes, none failed",
        tally.acked.len()
    );
    env.shutdown().await;
}

/// Stands in for cert-manager on the simulator, which has none: for every
/// Certificate in `ns` whose Secret is missing, issues what it asks for
/// (`uris`, `dnsNames`, `ipAddresses`, `duration`) from `ca` and writes the
/// Secret as cert-manager does (`ca.crt`, `tls.crt`, `tls.key`, the
/// `secretTemplate` labels). Refuses, by panicking, a Certificate that
/// names another issuer.
fn stand_in_cert_manager(
    kube: kube::Client,
    ns: String,
    issuer: &'static str,
    ca: std::sync::Arc<keyraft_api::tls::certgen::Authority>,
) -> tokio::task::JoinHandle<()> {
    use k8s_openapi::api::core::v1::Secret;
    use keyraft_api::tls::certgen::Holder;
    use keyraft_api::tls::{Role, MEMBER_URI_PREFIX, ROLE_URI_PREFIX};
    use kube::api::{Api, DynamicObject, PostParams};
    tokio::spawn(async move {
        let gvk = kube::api::GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate");
        let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, "certificates");
        let certs: Api<DynamicObject> = Api::namespaced_with(kube.clone(), &ns, &resource);
        let secrets: Api<Secret> = Api::namespaced(kube, &ns);
        loop {
            for c in certs.list(&Default::default()).await.map(|l| l.items).unwrap_or_default() {
                let spec = &c.data["spec"];
                assert_eq!(spec["issuerRef"]["name"], issuer, "{spec}");
                let name = spec["secretName"].as_str().unwrap().to_string();
                if secrets.get_opt(&name).await.ok().flatten().is_some() {
                    continue;
                }
                let strs = |k: &str| -> Vec<String> {
                    spec[k].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect()
                };
                let uri = strs("uris").pop().expect("a Keyraft identity URI");
                let holder = match (uri.strip_prefix(MEMBER_URI_PREFIX), uri.strip_prefix(ROLE_URI_PREFIX)) {
                    (Some(member), _) => Holder::Member {
                        name: member.into(),
                        hosts: strs("dnsNames").into_iter().chain(strs("ipAddresses")).collect(),
                    },
                    (_, Some(role)) => Holder::User {
                        role: Role::parse(role).expect("a known role"),
                        common_name: spec["commonName"].as_str().unwrap_or(role).into(),
                    },
                    _ => panic!("not a Keyraft identity: {uri}"),
                };
                // The operator writes durations in seconds, e.g. `7776000s`.
                let secs = spec["duration"].as_str().and_then(|d| d.strip_suffix('s')?.parse().ok()).unwrap();
                let validity = Duration::from_secs(secs);
                let issued = ca.issue(&holder, validity).unwrap();
                let labels: std::collections::BTreeMap<String, String> =
                    serde_json::from_value(spec["secretTemplate"]["labels"].clone()).unwrap_or_default();
                let data =
                    [("ca.crt", ca.cert_pem().to_string()), ("tls.crt", issued.cert_pem), ("tls.key", issued.key_pem)]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.into_bytes())))
                        .collect();
                let secret = Secret {
                    metadata: kube::api::ObjectMeta { name: Some(name), labels: Some(labels), ..Default::default() },
                    type_: Some("kubernetes.io/tls".into()),
                    data: Some(data),
                    ..Default::default()
                };
                let _ = secrets.create(&PostParams::default(), &secret).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// The message of condition `type_` once its reason is `reason` (within 60 s).
async fn condition_message(env: &Env, ns: &str, name: &str, type_: &str, reason: &str) -> String {
    let what = format!("{type_} {reason}");
    let kr = env
        .wait_status(ns, name, &what, Duration::from_secs(60), |kr| {
            common::cluster::condition(kr, type_).is_some_and(|c| c["reason"] == reason)
        })
        .await;
    common::cluster::condition(&kr, type_).unwrap()["message"].as_str().unwrap().to_string()
}

/// `tls.mode: certManager`. Without cert-manager's API the cluster says so
/// and creates no pod. Once Certificates can be made, the operator asks for
/// one per pod plus the admin and client identities from the named issuer,
/// creates each pod only once its certificate is in the node Secret, and
/// the cluster serves over mutual TLS with the client Secret cert-manager
/// wrote. A certificate issued again (cert-manager's renewal) reaches the
/// node without a restart or a failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_cert_manager_the_cluster_waits_for_its_certificates_then_serves_and_takes_renewals_without_a_restart() {
    let Some(env) = Env::with_operator().await else { return };
    let ns = &namespace("certmgr");
    env.create_namespace(ns).await;
    let spec = serde_json::json!({"replicas": 3, "partitions": 4,
        "tls": {"mode": "certManager", "certManager": {"issuerRef": {"name": "test-ca"}}}});
    env.apply(ns, &common::cluster::manifest("cm", spec)).await;
    let message = condition_message(&env, ns, "cm", "Degraded", "TlsNotReady").await;
    assert!(message.contains("cert-manager.io/v1 Certificate"), "{message}");
    let pods = env.kubectl_ok(&["get", "pods", "-n", ns, "-o", "name"]).await;
    assert!(pods.trim().is_empty(), "no pod without a certificate: {pods}");

    if !common::external() {
        env.apply_file(
            ns,
            common::repo().join("e2e/tests/fixtures/cert-manager-certificates-crd.yaml").to_str().unwrap(),
        )
        .await;
    }
    // The Certificates exist before anything issues them: the pods wait.
    let names = wait_for("the operator's Certificates", Duration::from_secs(60), || async {
        let out = env.kubectl(&["get", "certificates.cert-manager.io", "-n", ns, "-o", "name"]).await;
        let mut names: Vec<String> = out.stdout.lines().map(String::from).collect();
        names.sort();
        (out.ok && names.len() == 5).then_some(names)
    })
    .await;
    assert_eq!(
        names,
        ["cm-0", "cm-1", "cm-2", "cm-admin", "cm-client"].map(|n| format!("certificate.cert-manager.io/{n}"))
    );
    let message = condition_message(&env, ns, "cm", "Progressing", "WaitingForCertificates").await;
    assert!(message.contains("cm-0"), "{message}");
    let sts = env.kubectl(&["get", "statefulset", "cm", "-n", ns, "-o", "jsonpath={.spec.replicas}"]).await;
    assert!(!sts.ok || sts.stdout.trim() == "0", "no pod before its certificate: {}", sts.stdout);

    let ca = std::sync::Arc::new(
        keyraft_api::tls::certgen::Authority::new("stand-in issuer", Duration::from_secs(3600)).unwrap(),
    );
    let issuer = stand_in_cert_manager(env.kube.clone(), ns.clone(), "test-ca", ca.clone());
    env.wait_running(ns, "cm", 3, CREATE).await;
    tls_is_on_and_enforced(&env, ns, "cm").await;

    env.fetch_credentials(ns, "cm").await;
    let pods = pod_incarnations(&env, ns, "cm").await;
    let before = wait_for("every node's certificate expiry metric", Duration::from_secs(60), || async {
        certificate_expiries(ns, "cm", 3)
    })
    .await;
    let work = Workload::start(pod_endpoints(ns, "cm", 3), 2, "certmgr");
    work.progresses(50, PROGRESS).await;
    // A renewal: cert-manager writes a new certificate into the pod's
    // Secret (whole seconds: wait for a later expiry).
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.kubectl_ok(&["delete", "secret", "cm-1-tls", "-n", ns]).await;
    wait_for("cm-1 to serve its renewed certificate", Duration::from_secs(120), || async {
        let now = certificate_expiries(ns, "cm", 3)?;
        (now[1] > before[1]).then_some(())
    })
    .await;
    work.progresses(50, PROGRESS).await;
    let tally = work.stop().await;
    issuer.abort();
    assert!(tally.failed.is_empty(), "requests failed during the renewal: {:?}", tally.failed);
    assert_eq!(pod_incarnations(&env, ns, "cm").await, pods, "no pod was restarted or replaced");
    assert_all_readable(pod_endpoints(ns, "cm", 3), &tally.acked).await;
    assert!(env.kubectl(&["get", "secret", "cm-ca", "-n", ns]).await.stdout.is_empty(), "no operator CA in this mode");
    env.shutdown().await;
}
