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
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
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
    let out = Command::new(helm)
        .args(["template", "kr", "charts/keyraft-operator", "--namespace", "keyraft-system", "--include-crds", "-f"])
        .arg(values)
        .current_dir(root())
        .output()
        .expect("run helm");
    assert!(out.status.success(), "helm template -f {}: {}", values.display(), String::from_utf8_lossy(&out.stderr));
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

    let crd_file: Value =
        serde_yaml::from_str(&std::fs::read_to_string(root().join("crds/keyraftcluster.yaml")).unwrap()).unwrap();

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
                    assert_eq!(obj, &crd_file, "{what}: chart CRD is not crds/keyraftcluster.yaml");
                }
                "Deployment" => deployment = Some(typed::<Deployment>(obj, &what)),
                "ServiceAccount" => {
                    typed::<ServiceAccount>(obj, &what);
                }
                "Service" => {
                    typed::<Service>(obj, &what);
                }
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
