//! Builder snapshots for the example clusters, plus the properties that
//! matter most asserted directly (a snapshot alone is easy to re-accept).

use std::path::PathBuf;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use keyraft_operator::builders::{self, Names};
use keyraft_operator::crd::KeyraftCluster;

fn example(file: &str) -> KeyraftCluster {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(file);
    let mut kr: KeyraftCluster = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    kr.metadata.namespace = Some("prod".into());
    kr.metadata.uid = Some("0a1b2c3d-0000-4000-8000-000000000001".into());
    kr
}

fn cluster(spec_yaml: &str) -> KeyraftCluster {
    let mut kr = KeyraftCluster::new("t", serde_yaml::from_str(spec_yaml).unwrap());
    kr.metadata.namespace = Some("ns".into());
    kr.metadata.uid = Some("uid-1".into());
    kr
}

fn all_objects(kr: &KeyraftCluster) -> Vec<serde_yaml::Value> {
    let v = |o: serde_json::Value| serde_yaml::to_value(o).unwrap();
    vec![
        v(serde_json::to_value(builders::statefulset(kr, kr.spec.replicas).unwrap()).unwrap()),
        v(serde_json::to_value(builders::headless_service(kr).unwrap()).unwrap()),
        v(serde_json::to_value(builders::client_service(kr).unwrap()).unwrap()),
        v(serde_json::to_value(builders::pod_disruption_budget(kr).unwrap()).unwrap()),
        v(serde_json::to_value(builders::config_map(kr).unwrap()).unwrap()),
        v(serde_json::to_value(builders::network_policy(kr, Some("keyraft-system")).unwrap()).unwrap()),
    ]
}

/// The gRPC port is open to everyone unless `clients` narrows it, and then
/// still to the cluster's own pods and the operator; the HTTP port always.
#[test]
fn network_policy_admits_peers_the_operator_and_the_named_clients() {
    let open = builders::network_policy(&cluster("replicas: 3"), Some("ops")).unwrap().unwrap();
    let rules = open.spec.unwrap().ingress.unwrap();
    assert_eq!(rules.len(), 2);
    assert!(rules.iter().all(|r| r.from.is_none()), "no clients named: every source may connect");
    let port = |r: &k8s_openapi::api::networking::v1::NetworkPolicyIngressRule| {
        r.ports.as_ref().unwrap()[0].port.clone().unwrap()
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    assert_eq!((port(&rules[0]), port(&rules[1])), (IntOrString::Int(7000), IntOrString::Int(8080)));

    let narrowed = cluster("replicas: 3\nnetworkPolicy: {clients: [{podSelector: {matchLabels: {app: shop}}}]}");
    let np = builders::network_policy(&narrowed, Some("ops")).unwrap().unwrap();
    let grpc = &np.spec.unwrap().ingress.unwrap()[0];
    let from = serde_json::to_value(grpc.from.as_ref().unwrap()).unwrap();
    assert_eq!(
        from,
        serde_json::json!([
            {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "t", "app.kubernetes.io/name": "keyraft"}}},
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}},
             "podSelector": {"matchLabels": {"app.kubernetes.io/name": "keyraft-operator"}}},
            {"podSelector": {"matchLabels": {"app": "shop"}}}
        ])
    );
    let off = cluster("replicas: 3\nnetworkPolicy: {enabled: false}");
    assert!(builders::network_policy(&off, Some("ops")).unwrap().is_none());
}

#[test]
fn snapshot_basic() {
    insta::assert_yaml_snapshot!(all_objects(&example("basic.yaml")));
}

#[test]
fn snapshot_multi_zone() {
    insta::assert_yaml_snapshot!(all_objects(&example("multi-zone.yaml")));
}

#[test]
fn snapshot_dev_single() {
    insta::assert_yaml_snapshot!(all_objects(&example("dev-single.yaml")));
}

fn sts(kr: &KeyraftCluster) -> StatefulSet {
    builders::statefulset(kr, kr.spec.replicas).unwrap()
}

#[test]
fn statefulset_is_parallel_on_delete_with_one_pvc() {
    let s = sts(&cluster("replicas: 3")).spec.unwrap();
    assert_eq!(s.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(s.update_strategy.unwrap().type_.as_deref(), Some("OnDelete"));
    assert_eq!(s.service_name.as_deref(), Some("t-headless"));
    let pvcs = s.volume_claim_templates.unwrap();
    assert_eq!(pvcs.len(), 1);
    assert_eq!(pvcs[0].metadata.name.as_deref(), Some("data"));
}

#[test]
fn node_env_advertises_the_stable_dns_name() {
    let s = sts(&cluster("replicas: 3")).spec.unwrap();
    let c = &s.template.spec.unwrap().containers[0];
    let env = c.env.as_ref().unwrap();
    let get = |n: &str| env.iter().find(|e| e.name == n).unwrap();
    assert_eq!(get("KEYRAFT_ADVERTISE").value.as_deref(), Some("$(KEYRAFT_NAME).t-headless.ns.svc:7000"));
    // KEYRAFT_NAME must come before its use for $(VAR) expansion to work.
    let pos = |n: &str| env.iter().position(|e| e.name == n).unwrap();
    assert!(pos("KEYRAFT_NAME") < pos("KEYRAFT_ADVERTISE"));
    assert_eq!(
        get("KEYRAFT_NAME").value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path,
        "metadata.name"
    );
    assert_eq!(get("KEYRAFT_CLUSTER").value.as_deref(), Some("t"));
    assert_eq!(c.image.as_deref(), Some("keyraft/keyraft-node:0.1.0"));
}

#[test]
fn node_env_joins_through_the_first_three_ordinals() {
    let join = |spec: &str, replicas: i32| {
        let s = builders::statefulset(&cluster(spec), replicas).unwrap().spec.unwrap();
        let c = s.template.spec.unwrap().containers.remove(0);
        c.env.unwrap().into_iter().find(|e| e.name == "KEYRAFT_JOIN").unwrap().value.unwrap()
    };
    assert_eq!(
        join("replicas: 5", 5),
        "t-0.t-headless.ns.svc:7000,t-1.t-headless.ns.svc:7000,t-2.t-headless.ns.svc:7000"
    );
    // The seeds follow the StatefulSet's replicas, not the spec's.
    assert_eq!(join("replicas: 5", 2), "t-0.t-headless.ns.svc:7000,t-1.t-headless.ns.svc:7000");
    assert_eq!(join("replicas: 1\nreplicationFactor: 1", 1), "t-0.t-headless.ns.svc:7000");
}

/// `rebalance.maxBytesPerSecond` reaches every node as whole bytes through
/// the ConfigMap the node container reads with `envFrom`; absent, the key is
/// absent too (the node's unlimited), and the pod template is the same
/// either way, so setting or changing it rolls no pod.
#[test]
fn snapshot_send_rate_reaches_the_nodes_as_bytes_through_the_config_map() {
    const KEY: &str = "KEYRAFT_SNAPSHOT_SEND_BYTES_PER_SEC";
    assert_eq!(builders::SNAPSHOT_SEND_BYTES_PER_SEC, KEY);
    let rate = |spec: &str| builders::config_map(&cluster(spec)).unwrap().data.unwrap().get(KEY).cloned();
    assert_eq!(rate("replicas: 3\nrebalance: {maxBytesPerSecond: 64Mi}").as_deref(), Some("67108864"));
    assert_eq!(rate("replicas: 3\nrebalance: {maxBytesPerSecond: 100M}").as_deref(), Some("100000000"));
    assert_eq!(rate("replicas: 3\nrebalance: {maxBytesPerSecond: 1.5Ki}").as_deref(), Some("1536"));
    assert_eq!(rate("replicas: 3"), None);
    assert_eq!(rate("replicas: 3\nrebalance: {maxConcurrentMoves: 4}"), None);

    let limited = cluster("replicas: 3\nrebalance: {maxBytesPerSecond: 64Mi}");
    let c = &sts(&limited).spec.unwrap().template.spec.unwrap().containers[0];
    let from = c.env_from.as_ref().unwrap();
    assert_eq!(from[0].config_map_ref.as_ref().map(|r| r.name.as_str()), Some("t-config"));
    assert!(c.env.as_ref().unwrap().iter().all(|e| e.name != KEY), "set through the ConfigMap only");
    assert_eq!(sts(&limited).spec.unwrap().template, sts(&cluster("replicas: 3")).spec.unwrap().template);

    // The schema refuses these; a CRD without it must not make 0 (unlimited) of them.
    for bad in ["0", "0Mi", "lots"] {
        let kr = cluster(&format!("replicas: 3\nrebalance: {{maxBytesPerSecond: '{bad}'}}"));
        let err = builders::config_map(&kr).unwrap_err().to_string();
        assert!(err.contains("spec.rebalance.maxBytesPerSecond"), "{bad}: {err}");
    }
}

#[test]
fn pdb_allows_one_disruption_and_never_blocks_a_drain() {
    let pdb =
        |spec: &str| builders::pod_disruption_budget(&cluster(spec)).unwrap().spec.unwrap().max_unavailable.unwrap();
    // RF 3 and 5: one node away keeps every partition's majority.
    assert_eq!(pdb("replicas: 3"), IntOrString::Int(1));
    assert_eq!(pdb("replicas: 7\nreplicationFactor: 5"), IntOrString::Int(1));
    // RF 1: a budget of 0 would block every node drain forever.
    assert_eq!(pdb("replicas: 1\nreplicationFactor: 1"), IntOrString::Int(1));
    assert_eq!(pdb("replicas: 4\nreplicationFactor: 1"), IntOrString::Int(1));
}

#[test]
fn claims_are_retained_by_the_statefulset_whatever_the_reclaim_policy() {
    for spec in ["replicas: 3", "replicas: 3\nstorage: {reclaimPolicy: Retain}"] {
        let policy = sts(&cluster(spec)).spec.unwrap().persistent_volume_claim_retention_policy.unwrap();
        assert_eq!(policy.when_scaled.as_deref(), Some("Retain"), "{spec}");
        assert_eq!(policy.when_deleted.as_deref(), Some("Retain"), "{spec}");
    }
}

#[test]
fn a_cluster_name_too_long_for_its_derived_names_is_refused() {
    let mut kr = cluster("replicas: 3");
    kr.metadata.name = Some("x".repeat(53));
    let err = builders::Names::of(&kr).unwrap_err().to_string();
    assert!(err.contains("metadata.name") && err.contains("at most 52"), "{err}");
    kr.metadata.name = Some("x".repeat(52));
    assert!(builders::Names::of(&kr).is_ok());
}

#[test]
fn topology_maps_to_spread_and_anti_affinity() {
    let required = sts(&cluster("replicas: 3\ntopology: {spread: required, antiAffinity: required, zones: [a, b]}"));
    let pod = required.spec.unwrap().template.spec.unwrap();
    let tsc = &pod.topology_spread_constraints.as_ref().unwrap()[0];
    assert_eq!(tsc.when_unsatisfiable, "DoNotSchedule");
    assert_eq!(tsc.topology_key, "topology.kubernetes.io/zone");
    let aff = pod.affinity.unwrap();
    assert!(aff.pod_anti_affinity.unwrap().required_during_scheduling_ignored_during_execution.is_some());
    let zones =
        &aff.node_affinity.unwrap().required_during_scheduling_ignored_during_execution.unwrap().node_selector_terms[0];
    assert_eq!(zones.match_expressions.as_ref().unwrap()[0].values, Some(vec!["a".to_string(), "b".to_string()]));

    let none = sts(&cluster("replicas: 3\ntopology: {antiAffinity: none}"));
    let pod = none.spec.unwrap().template.spec.unwrap();
    assert!(pod.affinity.is_none());
    assert_eq!(pod.topology_spread_constraints.unwrap()[0].when_unsatisfiable, "ScheduleAnyway");
}

#[test]
fn every_object_is_owned_by_the_cluster() {
    let kr = cluster("replicas: 3");
    for obj in all_objects(&kr) {
        let owner = &obj["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "KeyraftCluster");
        assert_eq!(owner["uid"], "uid-1");
        assert_eq!(owner["controller"], true);
    }
}

#[test]
fn pod_labels_cannot_override_the_selector() {
    let kr = cluster("replicas: 3\npodTemplate: {labels: {app.kubernetes.io/instance: evil, team: x}}");
    let s = sts(&kr).spec.unwrap();
    let labels = s.template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["app.kubernetes.io/instance"], "t");
    assert_eq!(labels["team"], "x");
}

#[test]
fn names() {
    let n = Names::of(&cluster("replicas: 3")).unwrap();
    assert_eq!(n.pod(2), "t-2");
    assert_eq!(n.pod_address("t-2"), "t-2.t-headless.ns.svc:7000");
    assert_eq!(n.pvc("t-2"), "data-t-2");
    // A cluster without a namespace cannot be built (no silent "default").
    let kr = KeyraftCluster::new("x", serde_yaml::from_str("replicas: 1").unwrap());
    assert!(Names::of(&kr).is_err());
}
