//! The real kubectl and Helm against the simulator: CRD install, tables,
//! explain, rejections naming the field, scale, and a Helm install and
//! uninstall of the operator chart.

mod common;

use std::time::Duration;

use common::{run, start, tool, wait_for};

const BAD: &[(&str, &str)] = &[
    ("replicas: 0", "spec.replicas"),
    ("replicas: 3\nreplicationFactor: 5", "replicationFactor must not exceed replicas"),
    ("replicas: 3\nconsistency: {defaultRead: sometimes}", "spec.consistency.defaultRead"),
    ("replicas: 3\nbogus: 1", "unknown field \"spec.bogus\""),
];

fn manifest(name: &str, spec: &str) -> String {
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!("apiVersion: keyraft.io/v1alpha1\nkind: KeyraftCluster\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_installs_the_crd_and_rejects_bad_manifests() {
    let Some(kubectl) = tool("kubectl") else { return };
    let (sim, _dir) = start(false).await;
    let crd = common::repo().join("crds/keyraftcluster.yaml");
    let out = run(&sim, &kubectl, &["apply", "--server-side", "-f", crd.to_str().unwrap()], None).await;
    assert!(out.ok, "apply CRD: {}", out.stderr);
    let out = run(
        &sim,
        &kubectl,
        &["wait", "--for=condition=Established", "crd/keyraftclusters.keyraft.io", "--timeout=10s"],
        None,
    )
    .await;
    assert!(out.ok, "wait: {}", out.stderr);

    let out = run(&sim, &kubectl, &["apply", "-f", "-"], Some(&manifest("good", "replicas: 3"))).await;
    assert!(out.ok, "apply good: {}", out.stderr);
    let out = run(&sim, &kubectl, &["get", "kr"], None).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("REPLICAS") && out.stdout.contains("good"), "printer columns: {}", out.stdout);
    // Defaults from the schema were filled in.
    let out = run(&sim, &kubectl, &["get", "kr", "good", "-o", "jsonpath={.spec.replicationFactor}"], None).await;
    assert_eq!(out.stdout, "3", "{}", out.stderr);

    let out = run(&sim, &kubectl, &["explain", "keyraftcluster.spec.replicas"], None).await;
    assert!(out.ok && out.stdout.contains("replicas"), "explain: {} {}", out.stdout, out.stderr);

    for (spec, field) in BAD {
        let out = run(&sim, &kubectl, &["apply", "-f", "-"], Some(&manifest("bad", spec))).await;
        assert!(!out.ok, "{spec:?} was accepted");
        assert!(out.stderr.contains(field), "{spec:?}: message should name {field:?}: {}", out.stderr);
    }

    let out = run(&sim, &kubectl, &["scale", "kr/good", "--replicas=5"], None).await;
    assert!(out.ok, "scale: {}", out.stderr);
    let out =
        run(&sim, &kubectl, &["get", "kr", "good", "-o", "jsonpath={.spec.replicas}/{.metadata.generation}"], None)
            .await;
    assert_eq!(out.stdout, "5/2");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installs_and_uninstalls_the_operator_chart() {
    let (Some(helm), Some(kubectl)) = (tool("helm"), tool("kubectl")) else { return };
    let (sim, _dir) = start(false).await;
    let chart = common::repo().join("charts/keyraft-operator");
    let out =
        run(&sim, &helm, &["install", "op", chart.to_str().unwrap(), "-n", "ops", "--create-namespace"], None).await;
    assert!(out.ok, "helm install: {}\n{}", out.stdout, out.stderr);
    for kind in
        ["deployment/op-keyraft-operator", "serviceaccount/op-keyraft-operator", "service/op-keyraft-operator-metrics"]
    {
        let out = run(&sim, &kubectl, &["get", "-n", "ops", kind], None).await;
        assert!(out.ok, "{kind}: {}", out.stderr);
    }
    let out =
        run(&sim, &kubectl, &["get", "clusterrole/op-keyraft-operator", "crd/keyraftclusters.keyraft.io"], None).await;
    assert!(out.ok, "{}", out.stderr);
    // The Deployment controller makes two pods (whatever their binary does).
    wait_for("two operator pods", Duration::from_secs(20), || async {
        let out = run(&sim, &kubectl, &["get", "pods", "-n", "ops", "-o", "name"], None).await;
        (out.stdout.lines().count() == 2).then_some(())
    })
    .await;
    let out = run(&sim, &helm, &["list", "-n", "ops", "-q"], None).await;
    assert_eq!(out.stdout.trim(), "op");

    let out = run(&sim, &helm, &["uninstall", "op", "-n", "ops", "--wait", "--timeout", "60s"], None).await;
    assert!(out.ok, "helm uninstall: {}\n{}", out.stdout, out.stderr);
    wait_for("the chart's objects to be gone", Duration::from_secs(60), || async {
        let out = run(&sim, &kubectl, &["get", "deploy,rs,pods,sa,svc,secrets", "-n", "ops", "-o", "name"], None).await;
        let left: Vec<&str> = out.stdout.lines().filter(|l| !l.ends_with("/default")).collect();
        left.is_empty().then_some(())
    })
    .await;
    let out = run(&sim, &kubectl, &["get", "clusterrole/op-keyraft-operator"], None).await;
    assert!(!out.ok, "the ClusterRole should be gone");
    sim.shutdown().await;
}
