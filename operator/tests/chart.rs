//! Renders the Helm chart with real Helm (tools/bin/helm, fetched by
//! hack/fetch-k8s-tools.sh, or $KEYRAFT_HELM) for every values file in
//! charts/keyraft-operator/ci/ and checks the manifests:
//! - every object parses as its Kubernetes type, and serializing it back
//!   gives the same object (a misspelt or misplaced field would be dropped
//!   by the typed parse and show up as a difference);
//! - the RBAC rules are exactly `keyraft_operator::rbac`'s;
//! - the CRD is the generated one; labels and leader election are coherent.
//!
//! Skips, saying why, when Helm is not there.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use keyraft_operator::rbac;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn helm() -> Option<PathBuf> {
    let p = std::env::var_os("KEYRAFT_HELM").map(PathBuf::from).unwrap_or_else(|| root().join("tools/bin/helm"));
    p.exists().then_some(p)
}

fn render(helm: &Path, values: &Path) -> Vec<Value> {
    render_with(helm, &["-f".as_ref(), values.as_os_str()])
}

/// `helm template` with extra arguments (`-f file`, `--set k=v`).
fn render_with(helm: &Path, extra: &[&std::ffi::OsStr]) -> Vec<Value> {
    let values = extra.iter().map(|s| s.to_string_lossy()).collect::<Vec<_>>().join(" ");
    let out = Command::new(helm)
        .args(["template", "kr", "charts/keyraft-operator", "--namespace", "keyraft-system", "--include-crds"])
        .args(extra)
        .current_dir(root())
        .output()
        .expect("run helm");
    assert!(out.status.success(), "helm template {values}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|d| Value::deserialize(d).unwrap()).filter(|v| !v.is_null()).collect()
}

use serde::Deserialize;

/// Parses `v` as `T` and checks that nothing was lost on the way.
fn typed<T: DeserializeOwned + Serialize>(v: &Value, what: &str) -> T {
    let t: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(&back, v, "{what}: fields lost parsing as its Kubernetes type");
    t
}

fn triples(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for r in rules {
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    out.insert((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    out
}

#[test]
fn rendered_chart_is_valid_and_least_privilege() {
    let Some(helm) = helm() else {
        println!("SKIP: no Helm at tools/bin/helm or $KEYRAFT_HELM; run hack/fetch-k8s-tools.sh");
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("charts/keyraft-operator/ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "expected several ci values files");

    let crd_files: Vec<Value> = ["crds/keyraftcluster.yaml", "crds/keyraftbackup.yaml"]
        .iter()
        .map(|f| serde_yaml::from_str(&std::fs::read_to_string(root().join(f)).unwrap()).unwrap())
        .collect();

    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let values: Value = serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let objects = render(&helm, &file);
        let mut kinds = Vec::new();
        let mut deployment = None;
        let mut cluster_roles = Vec::new();
        let mut roles = Vec::new();
        let mut bindings_to = Vec::new();
        for obj in &objects {
            let kind = obj["kind"].as_str().unwrap_or_default().to_string();
            let what = format!("{name}: {kind} {}", obj["metadata"]["name"]);
            kinds.push(kind.clone());
            if kind != "CustomResourceDefinition" {
                let labels = &obj["metadata"]["labels"];
                for l in [
                    "app.kubernetes.io/name",
                    "app.kubernetes.io/instance",
                    "app.kubernetes.io/version",
                    "app.kubernetes.io/managed-by",
                    "app.kubernetes.io/part-of",
                ] {
                    assert!(labels.get(l).is_some(), "{what}: no label {l}");
                }
            }
            match kind.as_str() {
                "CustomResourceDefinition" => {
                    typed::<CustomResourceDefinition>(obj, &what);
                    assert!(crd_files.contains(obj), "{what}: chart CRD is not one of crds/*.yaml");
                }
                "Deployment" => deployment = Some(typed::<Deployment>(obj, &what)),
                "ServiceAccount" => {
                    typed::<ServiceAccount>(obj, &what);
                }
                "Service" => {
                    typed::<Service>(obj, &what);
                }
                "ConfigMap" => {
                    typed::<ConfigMap>(obj, &what);
                }
                "PodDisruptionBudget" => {
                    typed::<PodDisruptionBudget>(obj, &what);
                }
                // prometheus-operator kinds have no typed parse here; monitoring_objects_follow_their_flags checks them.
                "ServiceMonitor" | "PodMonitor" | "PrometheusRule" => {}
                "ClusterRole" => cluster_roles.push(typed::<ClusterRole>(obj, &what)),
                "Role" => roles.push(typed::<Role>(obj, &what)),
                "ClusterRoleBinding" => {
                    let b = typed::<ClusterRoleBinding>(obj, &what);
                    bindings_to.push(b.subjects.unwrap()[0].name.clone());
                }
                "RoleBinding" => {
                    let b = typed::<RoleBinding>(obj, &what);
                    bindings_to.push(b.subjects.unwrap()[0].name.clone());
                }
                other => panic!("{what}: unexpected kind {other}"),
            }
        }
        assert!(kinds.contains(&"CustomResourceDefinition".to_string()), "{name}: no CRD");

        // Cluster-wide: one ClusterRole with every rule. Namespace-scoped
        // (watchNamespaces): a Role per watched namespace with every rule but
        // Nodes, and a ClusterRole that only reads Nodes.
        let watched: Vec<String> = values["watchNamespaces"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        assert_eq!(cluster_roles.len(), 1, "{name}: one ClusterRole");
        let cr_want =
            if watched.is_empty() { rbac::triples(rbac::CLUSTER_RULES) } else { rbac::triples(&rbac::node_rules()) };
        assert_eq!(
            triples(cluster_roles[0].rules.as_deref().unwrap_or_default()),
            cr_want,
            "{name}: ClusterRole differs from operator/src/rbac.rs"
        );
        let lease_ns = "keyraft-system";
        let (lease_roles, ns_roles): (Vec<&Role>, Vec<&Role>) =
            roles.iter().partition(|r| r.metadata.name.as_deref().is_some_and(|n| n.ends_with("-leader-election")));
        let mut ns_of_roles: Vec<String> =
            ns_roles.iter().map(|r| r.metadata.namespace.clone().unwrap_or_default()).collect();
        ns_of_roles.sort();
        let mut want_ns = watched.clone();
        want_ns.sort();
        assert_eq!(ns_of_roles, want_ns, "{name}: a Role in each watched namespace, none elsewhere");
        for r in &ns_roles {
            assert_eq!(
                triples(r.rules.as_deref().unwrap_or_default()),
                rbac::triples(&rbac::namespaced_rules()),
                "{name}: namespace Role differs from rbac.rs"
            );
        }
        let role = lease_roles.first().copied();
        if let Some(r) = role {
            assert_eq!(r.metadata.namespace.as_deref(), Some(lease_ns), "{name}: lease Role namespace");
        }

        let d = deployment.unwrap_or_else(|| panic!("{name}: no Deployment"));
        let spec = d.spec.unwrap();
        let pod = spec.template.spec.unwrap();
        let env = pod.containers[0].env.clone().unwrap();
        let env_of = |n: &str| env.iter().find(|e| e.name == n).and_then(|e| e.value.clone());
        let election = env_of("KEYRAFT_OPERATOR_LEADER_ELECTION") == Some("true".into());
        let replicas = spec.replicas.unwrap_or(1);
        let want_replicas = values["replicaCount"].as_i64().unwrap_or(2) as i32;
        assert_eq!(replicas, want_replicas, "{name}: replicas");
        assert!(replicas == 1 || election, "{name}: {replicas} replicas without leader election");
        assert_eq!(pod.containers[0].args.as_deref(), Some(&["run".to_string()][..]));
        assert_eq!(env_of("KEYRAFT_OPERATOR_WATCH_NAMESPACES").unwrap_or_default(), watched.join(","), "{name}");
        match role {
            Some(r) => {
                assert!(election, "{name}: lease Role without leader election");
                assert_eq!(
                    triples(r.rules.as_deref().unwrap_or_default()),
                    rbac::triples(rbac::LEADER_ELECTION_RULES),
                    "{name}: leader-election Role differs from rbac.rs"
                );
            }
            None => assert!(!election, "{name}: leader election without a Role for Leases"),
        }
        // Every binding names the ServiceAccount the pods run as.
        let sa = pod.service_account_name.unwrap();
        assert!(!bindings_to.is_empty());
        assert!(bindings_to.iter().all(|b| b == &sa), "{name}: bindings {bindings_to:?} vs {sa}");
    }
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Each monitoring flag renders its object and nothing renders without it;
/// the objects carry what Prometheus and Grafana need.
#[test]
fn monitoring_objects_follow_their_flags() {
    let Some(helm) = helm() else {
        println!("SKIP: no Helm at tools/bin/helm or $KEYRAFT_HELM; run hack/fetch-k8s-tools.sh");
        return;
    };
    let kinds = ["ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"];
    let off = render_with(&helm, &[]);
    for k in kinds {
        assert!(of_kind(&off, k).is_empty(), "{k} rendered with its flag off");
    }
    for (flag, kind) in [
        ("metrics.serviceMonitor.enabled=true", "ServiceMonitor"),
        ("metrics.podMonitor.enabled=true", "PodMonitor"),
        ("metrics.prometheusRule.enabled=true", "PrometheusRule"),
        ("grafana.dashboards.enabled=true", "ConfigMap"),
    ] {
        let objs = render_with(&helm, &["--set".as_ref(), flag.as_ref()]);
        for k in kinds {
            assert_eq!(of_kind(&objs, k).len(), usize::from(k == kind), "--set {flag}: {k}");
        }
    }

    let objs = render_with(
        &helm,
        &["-f".as_ref(), root().join("charts/keyraft-operator/ci/monitoring-values.yaml").as_os_str()],
    );
    // ServiceMonitor: the metrics Service's port, selected by the Service's labels.
    let sm = of_kind(&objs, "ServiceMonitor")[0];
    let svc = of_kind(&objs, "Service")[0];
    assert_eq!(sm["spec"]["endpoints"][0]["port"], svc["spec"]["ports"][0]["name"]);
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&svc["metadata"]["labels"][k], v, "ServiceMonitor selector {k}");
    }
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus", "extra labels for the Prometheus selector");

    // PodMonitor: selects exactly what the operator puts on node pods.
    let pm = of_kind(&objs, "PodMonitor")[0];
    let kr: keyraft_operator::crd::KeyraftCluster =
        serde_yaml::from_str(&read("examples/basic.yaml")).expect("examples/basic.yaml is a KeyraftCluster");
    let pod_labels = keyraft_operator::builders::labels(&kr);
    let selector = pm["spec"]["selector"]["matchLabels"].as_object().unwrap();
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(pod_labels.get(k).map(String::as_str), v.as_str(), "PodMonitor selector {k} vs node pod labels");
    }
    assert!(!selector.contains_key("app.kubernetes.io/instance"), "one PodMonitor scrapes every cluster");
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "http");

    // PrometheusRule: the rules file as shipped, runbook links to sections that exist.
    let rule = of_kind(&objs, "PrometheusRule")[0];
    let file: Value = serde_yaml::from_str(&read("charts/keyraft-operator/files/keyraft-alerts.yaml")).unwrap();
    let base = "https://github.com/keyraft/keyraft/blob/main/docs/operations.md";
    let want: Value =
        serde_json::from_str(&serde_json::to_string(&file).unwrap().replace("RUNBOOK_BASE", base)).unwrap();
    assert_eq!(rule["spec"], want, "PrometheusRule spec is files/keyraft-alerts.yaml");
    let ops = read("docs/operations.md");
    let anchors: BTreeSet<String> =
        ops.lines().filter_map(|l| l.strip_prefix("### ")).map(|h| h.trim().to_lowercase().replace(' ', "-")).collect();
    let mut alerts = 0;
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            let name = r["alert"].as_str().unwrap();
            let url = r["annotations"]["runbook_url"].as_str().unwrap_or_else(|| panic!("{name}: no runbook_url"));
            let anchor = url.strip_prefix(&format!("{base}#")).unwrap_or_else(|| panic!("{name}: {url}"));
            assert_eq!(anchor, name.to_lowercase(), "{name}: runbook anchor");
            assert!(anchors.contains(anchor), "{name}: docs/operations.md has no section ### {name}");
            alerts += 1;
        }
    }
    assert!(alerts >= 10, "only {alerts} alerts");

    // Dashboard ConfigMap: the JSON file, labelled for the Grafana sidecar.
    let cm = of_kind(&objs, "ConfigMap")[0];
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let json = cm["data"]["keyraft.json"].as_str().unwrap();
    assert_eq!(json.trim(), read("charts/keyraft-operator/files/dashboards/keyraft.json").trim());
    let dash: Value = serde_json::from_str(json).expect("dashboard is valid JSON");
    assert!(dash["panels"].as_array().is_some_and(|p| !p.is_empty()));

    // Operator PDB only when there is a standby to keep.
    assert_eq!(of_kind(&objs, "PodDisruptionBudget").len(), 1);
    let single = render_with(&helm, &["--set".as_ref(), "replicaCount=1,leaderElection.enabled=false".as_ref()]);
    assert!(of_kind(&single, "PodDisruptionBudget").is_empty(), "a PDB on one replica would block node drains");
    let d = of_kind(&objs, "Deployment")[0];
    let env = d["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(
        env.iter().any(|e| e["name"] == "KEYRAFT_LOG_FORMAT" && e["value"] == "json"),
        "logFormat reaches the operator"
    );
}

/// The dashboard's and the rules' `keyraft_operator_*` names exist in the
/// operator's registry (the node's names are checked against a running
/// cluster by hack/monitoring-check.sh).
#[test]
fn operator_metric_names_in_dashboard_and_rules_exist() {
    let m = keyraft_operator::metrics::Metrics::new();
    m.reconciles.with_label_values(&["ns"]).inc();
    m.errors.with_label_values(&["ns"]).inc();
    m.duration.with_label_values(&["ns"]).observe(0.1);
    m.actions.with_label_values(&["ReplaceMember"]).inc();
    let exposed: BTreeSet<String> = m
        .render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
        .collect();
    let mut used = BTreeSet::new();
    for f in
        ["charts/keyraft-operator/files/dashboards/keyraft.json", "charts/keyraft-operator/files/keyraft-alerts.yaml"]
    {
        let text = read(f);
        for (i, _) in text.match_indices("keyraft_operator_") {
            let name: String = text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            used.insert(name);
        }
    }
    assert!(used.len() >= 4, "{used:?}");
    let missing: Vec<_> = used.difference(&exposed).collect();
    assert!(missing.is_empty(), "not exposed by the operator: {missing:?}");
}
