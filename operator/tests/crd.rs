//! CRD drift check and a table of manifests run through the generated schema:
//! structural rules (minimum/maximum/enum/pattern) with a JSON-schema
//! validator, CEL rules (`x-kubernetes-validations`) with kube's client-side
//! CEL evaluator, which applies schema defaults first as the API server does.

use std::path::PathBuf;

use keyraft_operator::crd::{backup_crd_yaml, crd_yaml, KeyraftBackup, KeyraftCluster};
use serde_json::Value;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `crds/*.yaml` and the chart's copies must be exactly what
/// `keyraft-operator crd [backup]` prints; regenerate them with `make crds`.
#[test]
fn crd_files_match_generated_crd() {
    for (file, want) in
        [("keyraftcluster.yaml", crd_yaml().unwrap()), ("keyraftbackup.yaml", backup_crd_yaml().unwrap())]
    {
        crd_file_matches(file, &want);
    }
}

fn crd_file_matches(file: &str, want: &str) {
    for rel in [format!("crds/{file}"), format!("charts/keyraft-operator/crds/{file}")] {
        let path = repo_root().join(&rel);
        let have =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}; run `make crds`", path.display()));
        assert!(
            have == want,
            "{rel} differs from `keyraft-operator crd` output; run `make crds` and commit the result"
        );
    }
}

fn schema() -> Value {
    schema_of(keyraft_operator::crd::crd())
}

fn schema_of(
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    serde_json::to_value(crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap()).unwrap()
}

fn manifest(spec: &str) -> Value {
    let yaml = format!(
        "apiVersion: keyraft.io/v1alpha1\nkind: KeyraftCluster\nmetadata:\n  name: t\nspec:\n{}",
        spec.lines().map(|l| format!("  {l}\n")).collect::<String>()
    );
    serde_yaml::from_str(&yaml).unwrap()
}

/// Every error the schema reports for `obj` (updated from `old` when given),
/// as "path: message" lines.
fn errors(obj: &Value, old: Option<&Value>) -> Vec<String> {
    errors_in(&schema(), obj, old)
}

fn errors_in(schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<String> {
    let schema = schema.clone();
    let validator = jsonschema::options().with_draft(jsonschema::Draft::Draft4).build(&schema).unwrap();
    let mut out: Vec<String> = validator.iter_errors(obj).map(|e| format!("{}: {}", e.instance_path(), e)).collect();
    if let Err(cel) = kube::core::cel::Validator::new().validate(&schema, obj, old) {
        out.extend(cel.iter().map(|e| e.to_string()));
    }
    out
}

#[test]
fn good_manifests_pass() {
    for spec in [
        "replicas: 3",
        "replicas: 1\nreplicationFactor: 1",
        "replicas: 3\nfailover: {timeout: 30s}\ntimeouts: {startup: 20s}",
        "replicas: 3\ntopology: {zoneKey: kubernetes.io/hostname, zones: [eu-west-1a, Zone_B.2]}",
        "replicas: 3\ntopology: {zoneKey: zone}",
        "replicas: 3\nbackup: {destination: {url: 's3://bucket/keyraft', credentialsSecret: s3}, schedule: '0 3 * * *', retention: {count: 7, maxAge: 168h}}",
        "replicas: 3\nbootstrap: {fromBackup: {destination: {url: 'file:///backups'}, backup: basic-20261201030000}}",
        "replicas: 3\ntls: {mode: certManager, certManager: {issuerRef: {name: ca-issuer}}}",
        "replicas: 3\ntls: {mode: certManager, certManager: {issuerRef: {name: corp, kind: ClusterIssuer}}}",
        "replicas: 3\ntls: {mode: provided, provided: {nodeSecret: n, operatorSecret: o}}",
        "replicas: 3\nrebalance: {maxBytesPerSecond: 64Mi}",
        "replicas: 3\nrebalance: {maxBytesPerSecond: 100M, maxConcurrentMoves: 1}",
        "replicas: 3\nrebalance: {maxBytesPerSecond: '1048576'}",
        "replicas: 3\nrebalance: {maxBytesPerSecond: 1.5Gi}",
        "replicas: 3\nrebalance: {maxBytesPerSecond: 1Ti}",
        "replicas: 5\nreplicationFactor: 5\npartitions: 1024\nversion: v0.2.0-rc.1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\nstorage: {size: 500Mi, reclaimPolicy: Retain}\nfailover: {timeout: 1h30m}\ntimeouts: {drain: 30s, catchUp: 2m, ready: 90s, scaleIn: 1h, join: 5m, startup: 1h}\nconsistency: {defaultRead: session}\ntopology: {spread: required, antiAffinity: none, zones: [a, b, c]}",
    ] {
        let errs = errors(&manifest(spec), None);
        assert!(errs.is_empty(), "{spec:?} was rejected: {errs:?}");
    }
    for file in ["basic.yaml", "multi-zone.yaml", "dev-single.yaml"] {
        let text = std::fs::read_to_string(repo_root().join("examples").join(file)).unwrap();
        let obj: Value = serde_yaml::from_str(&text).unwrap();
        let errs = errors(&obj, None);
        assert!(errs.is_empty(), "examples/{file} was rejected: {errs:?}");
        // And the operator itself can read it.
        serde_json::from_value::<KeyraftCluster>(obj).unwrap();
    }
}

#[test]
fn bad_manifests_are_rejected_with_a_message_naming_the_field() {
    // (spec, a fragment every matching error must contain: the field's path or name)
    let table: &[(&str, &str)] = &[
        ("replicas: 0", "/spec/replicas"),
        ("replicas: -3", "/spec/replicas"),
        ("replicas: 3\nreplicationFactor: 2", "/spec/replicationFactor"),
        ("replicas: 3\nreplicationFactor: 5", "replicationFactor must not exceed replicas"),
        // Defaults count: replicationFactor defaults to 3.
        ("replicas: 1", "replicationFactor must not exceed replicas"),
        ("replicas: 3\npartitions: 0", "/spec/partitions"),
        ("replicas: 3\npartitions: 1025", "/spec/partitions"),
        ("replicas: 3\nstorage: {size: lots}", "/spec/storage/size"),
        ("replicas: 3\nstorage: {size: 1GB}", "/spec/storage/size"),
        ("replicas: 3\nstorage: {reclaimPolicy: Recycle}", "/spec/storage/reclaimPolicy"),
        ("replicas: 3\nversion: 'bad tag!'", "/spec/version"),
        ("replicas: 3\nversion: '-v1'", "/spec/version"),
        ("replicas: 3\nimage: 'Keyraft/Node'", "/spec/image"),
        ("replicas: 3\nconsistency: {defaultRead: strong}", "/spec/consistency/defaultRead"),
        ("replicas: 3\ntopology: {spread: maybe}", "/spec/topology/spread"),
        ("replicas: 3\ntopology: {antiAffinity: always}", "/spec/topology/antiAffinity"),
        ("replicas: 3\nfailover: {timeout: 5 minutes}", "/spec/failover/timeout"),
        ("replicas: 3\nrebalance: {maxConcurrentMoves: 0}", "/spec/rebalance/maxConcurrentMoves"),
        ("replicas: 3\nupdateStrategy: {maxUnavailable: 2}", "/spec/updateStrategy/maxUnavailable"),
        // Snapshot send rate: a positive quantity of bytes; 0 would read as unlimited.
        ("replicas: 3\nrebalance: {maxBytesPerSecond: '0'}", "rebalance.maxBytesPerSecond must be more than 0"),
        ("replicas: 3\nrebalance: {maxBytesPerSecond: 0Mi}", "rebalance.maxBytesPerSecond must be more than 0"),
        ("replicas: 3\nrebalance: {maxBytesPerSecond: '0.0'}", "rebalance.maxBytesPerSecond must be more than 0"),
        ("replicas: 3\nrebalance: {maxBytesPerSecond: 2Ti}", "rebalance.maxBytesPerSecond must be more than 0"),
        ("replicas: 3\nrebalance: {maxBytesPerSecond: 1Ei}", "rebalance.maxBytesPerSecond must be more than 0"),
        ("replicas: 3\nrebalance: {maxBytesPerSecond: -64Mi}", "/spec/rebalance/maxBytesPerSecond"),
        ("replicas: 3\nrebalance: {maxBytesPerSecond: 64MB}", "/spec/rebalance/maxBytesPerSecond"),
        ("replicas: 3\nrebalance: {maxBytesPerSecond: 64 Mi}", "/spec/rebalance/maxBytesPerSecond"),
        ("replicas: 3\nrebalance: {maxBytesPerSecond: 500m}", "/spec/rebalance/maxBytesPerSecond"),
        ("replicas: 3\nrebalance: {maxBytesPerSecond: fast}", "/spec/rebalance/maxBytesPerSecond"),
        ("replicas: 3\nrebalance: {maxBytesPerSecond: ''}", "/spec/rebalance/maxBytesPerSecond"),
        ("replicas: 3\nrebalance: {maxBytesPerSecond: 67108864}", "/spec/rebalance/maxBytesPerSecond"),
        ("replicas: '3'", "/spec/replicas"),
        ("partitions: 8", "replicas"),
        // A failover shorter than the startup allowance would fail over slow starts.
        ("replicas: 3\nfailover: {timeout: 4m}", "failover.timeout must be longer than timeouts.startup"),
        ("replicas: 3\nfailover: {timeout: 90s}", "failover.timeout must be longer than timeouts.startup"),
        (
            "replicas: 3\nfailover: {timeout: 30s}\ntimeouts: {startup: 30s}",
            "failover.timeout must be longer than timeouts.startup",
        ),
        ("replicas: 3\ntimeouts: {startup: 10m}", "failover.timeout must be longer than timeouts.startup"),
        // The version becomes a label value: at most 63 characters.
        ("replicas: 3\nversion: 'v1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'", "/spec/version"),
        ("replicas: 3\ntimeouts: {drain: forever}", "/spec/timeouts/drain"),
        // The zone key and zones become a topology key and label values.
        ("replicas: 3\ntopology: {zoneKey: 'zone key'}", "topology.zoneKey must be a node label key"),
        ("replicas: 3\ntopology: {zoneKey: 'example.com/'}", "topology.zoneKey must be a node label key"),
        ("replicas: 3\ntopology: {zoneKey: '-zone'}", "topology.zoneKey must be a node label key"),
        ("replicas: 3\ntopology: {zones: [a, 'b c']}", "every entry of topology.zones must be a label value"),
        ("replicas: 3\nupdateStrategy: {maxCatchUpLag: -1}", "/spec/updateStrategy/maxCatchUpLag"),
        ("replicas: 3\nbackup: {schedule: '0 3 * * *'}", "destination"),
        ("replicas: 3\nbackup: {destination: {url: '/var/backups'}}", "destination.url must be an object store URL"),
        ("replicas: 3\nbackup: {destination: {url: 's3://b'}, retention: {count: 0}}", "/spec/backup/retention/count"),
        (
            "replicas: 3\nbackup: {destination: {url: 's3://b'}, retention: {maxAge: 7d}}",
            "/spec/backup/retention/maxAge",
        ),
        ("replicas: 3\nbootstrap: {fromBackup: {destination: {url: 's3://b'}}}", "backup"),
        ("replicas: 3\ntls: {mode: certManager}", "tls.mode certManager needs tls.certManager.issuerRef"),
        (
            "replicas: 3\ntls: {certManager: {issuerRef: {name: ca-issuer}}}",
            "tls.certManager is only read with tls.mode certManager",
        ),
        ("replicas: 3\ntls: {mode: certManager, certManager: {issuerRef: {}}}", "name"),
        ("replicas: 3\ntls: {mode: letsEncrypt}", "/spec/tls/mode"),
        ("replicas: 3\ntls: {mode: provided}", "tls.mode provided needs tls.provided.nodeSecret"),
    ];
    for (spec, fragment) in table {
        let errs = errors(&manifest(spec), None);
        if std::env::var_os("SHOW_ERRORS").is_some() {
            println!("{spec:?} -> {errs:?}");
        }
        assert!(!errs.is_empty(), "{spec:?} was accepted");
        assert!(errs.iter().any(|e| e.contains(fragment)), "{spec:?}: no error names {fragment:?}: {errs:?}");
    }
}

/// KeyraftBackup: a cluster is required, the destination is a URL, and the
/// spec never changes after creation.
#[test]
fn backup_manifests_are_checked() {
    let schema = schema_of(<KeyraftBackup as kube::CustomResourceExt>::crd());
    let backup = |spec: &str| -> Value {
        serde_yaml::from_str(&format!(
            "apiVersion: keyraft.io/v1alpha1\nkind: KeyraftBackup\nmetadata: {{name: b}}\nspec: {spec}\n"
        ))
        .unwrap()
    };
    let good = backup("{cluster: basic, destination: {url: 's3://bucket/x', credentialsSecret: s3}}");
    assert!(errors_in(&schema, &good, None).is_empty(), "{:?}", errors_in(&schema, &good, None));
    serde_json::from_value::<KeyraftBackup>(good.clone()).unwrap();
    let errs = errors_in(&schema, &backup("{destination: {url: 's3://bucket/x'}}"), None);
    assert!(errs.iter().any(|e| e.contains("cluster")), "{errs:?}");
    let errs = errors_in(&schema, &backup("{cluster: basic, destination: {url: 'bucket'}}"), None);
    assert!(errs.iter().any(|e| e.contains("destination.url must be an object store URL")), "{errs:?}");
    let errs = errors_in(&schema, &backup("{cluster: other}"), Some(&good));
    assert!(errs.iter().any(|e| e.contains("a KeyraftBackup's spec is immutable")), "{errs:?}");
}

#[test]
fn bootstrap_is_immutable() {
    let old = manifest("replicas: 3\nbootstrap: {fromBackup: {destination: {url: 's3://b'}, backup: a}}");
    let new = manifest("replicas: 3\nbootstrap: {fromBackup: {destination: {url: 's3://b'}, backup: b}}");
    let errs = errors(&new, Some(&old));
    assert!(errs.iter().any(|e| e.contains("bootstrap is immutable")), "{errs:?}");
    assert!(errors(&old, Some(&old)).is_empty());
}

#[test]
fn partitions_are_immutable() {
    let old = manifest("replicas: 3\npartitions: 16");
    let new = manifest("replicas: 3\npartitions: 32");
    let errs = errors(&new, Some(&old));
    assert!(errs.iter().any(|e| e.contains("partitions is immutable")), "changing partitions was accepted: {errs:?}");
    let old_rf = manifest("replicas: 5\npartitions: 16\nreplicationFactor: 3");
    let new_rf = manifest("replicas: 5\npartitions: 16\nreplicationFactor: 5");
    let errs = errors(&new_rf, Some(&old_rf));
    assert!(errs.iter().any(|e| e.contains("replicationFactor is immutable")), "changing RF was accepted: {errs:?}");
    // Scaling is a legal update.
    let scaled = manifest("replicas: 5\npartitions: 16");
    let errs = errors(&scaled, Some(&old));
    assert!(errs.is_empty(), "scaling was rejected: {errs:?}");
}

#[test]
fn crd_has_subresources_columns_and_short_name() {
    let crd = keyraft_operator::crd::crd();
    assert_eq!(crd.spec.group, "keyraft.io");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names.as_deref(), Some(&["kr".to_string()][..]));
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    let sub = v.subresources.as_ref().unwrap();
    assert!(sub.status.is_some());
    let scale = sub.scale.as_ref().unwrap();
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    let cols: Vec<&str> = v.additional_printer_columns.as_ref().unwrap().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(cols, ["Replicas", "Ready", "Version", "Phase", "Age"]);
}

/// Every schema property the user can set carries a description (from the
/// `///` docs), so `kubectl explain` is useful.
#[test]
fn every_spec_field_is_documented() {
    fn walk(path: &str, s: &Value, missing: &mut Vec<String>) {
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                let p = format!("{path}.{k}");
                if v.get("description").is_none() {
                    missing.push(p.clone());
                }
                walk(&p, v, missing);
            }
        }
        if let Some(items) = s.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let schema = schema();
    let mut missing = Vec::new();
    walk("spec", &schema["properties"]["spec"], &mut missing);
    walk("status", &schema["properties"]["status"], &mut missing);
    assert!(missing.is_empty(), "fields without description: {missing:?}");
}

#[test]
fn a_cluster_name_longer_than_the_derived_names_allow_is_refused_with_the_limit() {
    let named = |n: usize| {
        let mut obj = manifest("replicas: 3");
        obj["metadata"]["name"] = Value::String("k".repeat(n));
        obj
    };
    let max = keyraft_operator::builders::MAX_CLUSTER_NAME;
    assert!(errors(&named(max), None).is_empty(), "a {max}-character name was refused");
    let errs = errors(&named(max + 1), None);
    assert!(
        errs.iter().any(|e| e.contains(&format!("metadata.name may have at most {max} characters"))),
        "a {}-character name was accepted: {errs:?}",
        max + 1
    );
}
