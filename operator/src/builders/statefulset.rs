//! The StatefulSet of keyraft-node pods.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    EnvVarSource, HTTPGetAction, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretVolumeSource, SecurityContext,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{image, labels, object_meta, selector_labels, Names, DATA_DIR, DATA_VOLUME, GRPC_PORT, HTTP_PORT};
use crate::crd::{AntiAffinity, Constraint, KeyraftCluster};
use crate::tls::{TlsSecrets, CA_CRT, MOUNT_DIR};
use crate::Result;

/// The volume of the node Secret (certificates).
const TLS_VOLUME: &str = "tls";

/// UID/GID the node runs as; the image must not need root.
const NODE_UID: i64 = 10001;
/// Long enough for a node to hand its leaderships over before SIGKILL.
const TERMINATION_GRACE_SECONDS: i64 = 60;
/// How many of the lowest ordinals a new node asks to join through.
const JOIN_SEEDS: i32 = 3;

/// The StatefulSet with `replicas` pods. The planner decides `replicas`:
/// during scale-in it stays above `spec.replicas` until the highest members
/// are decommissioned.
pub fn statefulset(kr: &KeyraftCluster, replicas: i32) -> Result<StatefulSet> {
    let names = Names::of(kr)?;
    let spec = &kr.spec;
    let selector = selector_labels(&names.cluster);

    // Operator labels are applied last so overrides cannot break the selector.
    let mut pod_labels = spec.pod_template.labels.clone();
    pod_labels.extend(labels(kr));

    let pod_spec = PodSpec {
        containers: vec![node_container(kr, &names, replicas)],
        volumes: Some(vec![
            Volume {
                // readOnlyRootFilesystem: scratch space for the process.
                name: "tmp".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
            Volume {
                // Updated in place by the kubelet when the Secret changes;
                // the node rereads the files, so a renewal restarts nothing.
                name: TLS_VOLUME.into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(TlsSecrets::of(kr, &names).node),
                    // Readable by the node's group (fsGroup) only.
                    default_mode: Some(0o440),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
        ]),
        // The node never talks to the Kubernetes API.
        automount_service_account_token: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(NODE_UID),
            run_as_group: Some(NODE_UID),
            fs_group: Some(NODE_UID),
            fs_group_change_policy: Some("OnRootMismatch".into()),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..SeccompProfile::default() }),
            ..PodSecurityContext::default()
        }),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        affinity: affinity(kr, &selector),
        topology_spread_constraints: Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: spec.topology.zone_key.clone(),
            when_unsatisfiable: match spec.topology.spread {
                Constraint::Required => "DoNotSchedule",
                Constraint::Preferred => "ScheduleAnyway",
            }
            .into(),
            label_selector: Some(label_selector(&selector)),
            ..TopologySpreadConstraint::default()
        }]),
        node_selector: non_empty(spec.pod_template.node_selector.clone()),
        tolerations: (!spec.pod_template.tolerations.is_empty()).then(|| spec.pod_template.tolerations.clone()),
        priority_class_name: spec.pod_template.priority_class_name.clone(),
        ..PodSpec::default()
    };

    let mut storage_request = BTreeMap::new();
    storage_request.insert("storage".to_string(), Quantity(spec.storage.size.clone()));

    Ok(StatefulSet {
        metadata: object_meta(kr, &names, &names.statefulset)?,
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(names.headless.clone()),
            // Pods of a Raft cluster must all start to form a quorum.
            pod_management_policy: Some("Parallel".into()),
            // The operator restarts pods itself, one at a time, leaders last.
            update_strategy: Some(StatefulSetUpdateStrategy { type_: Some("OnDelete".into()), rolling_update: None }),
            selector: label_selector(&selector),
            // Retain always: `kubectl scale sts`, a GitOps sync or deleting
            // the StatefulSet must never take the volume of a member that was
            // not decommissioned. The operator deletes claims itself, per
            // storage.reclaimPolicy, once their member left the cluster.
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some("Retain".into()),
                when_scaled: Some("Retain".into()),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: non_empty(spec.pod_template.annotations.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(DATA_VOLUME.into()),
                    labels: Some(selector.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: spec.storage.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(storage_request),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                ..PersistentVolumeClaim::default()
            }]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    })
}

/// `KEYRAFT_JOIN`: stable addresses of ordinals 0..min(replicas, 3). A new
/// node asks them to let it join; on members, and before bootstrap, it is
/// harmless (the node retries until the cluster exists).
fn join_seeds(names: &Names, replicas: i32) -> String {
    (0..replicas.clamp(0, JOIN_SEEDS) as u32).map(|o| names.pod_address(&names.pod(o))).collect::<Vec<_>>().join(",")
}

fn node_container(kr: &KeyraftCluster, names: &Names, replicas: i32) -> Container {
    let env = |name: &str, value: String| EnvVar { name: name.into(), value: Some(value), ..EnvVar::default() };
    let http_probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    };
    Container {
        name: "keyraft-node".into(),
        image: Some(image(kr)),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["keyraft-node".into()]),
        // The node reads every setting from KEYRAFT_* variables.
        env: Some(vec![
            EnvVar {
                name: "KEYRAFT_NAME".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".into(),
                        ..ObjectFieldSelector::default()
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
            env("KEYRAFT_CLUSTER", names.cluster.clone()),
            env("KEYRAFT_DATA_DIR", DATA_DIR.into()),
            env("KEYRAFT_LISTEN", format!("0.0.0.0:{GRPC_PORT}")),
            // $(KEYRAFT_NAME) is expanded by the kubelet: the pod's stable DNS name.
            env("KEYRAFT_ADVERTISE", format!("$(KEYRAFT_NAME).{}.{}.svc:{GRPC_PORT}", names.headless, names.namespace)),
            env("KEYRAFT_HTTP_LISTEN", format!("0.0.0.0:{HTTP_PORT}")),
            // Scale-out: a new node joins the running cluster by itself.
            env("KEYRAFT_JOIN", join_seeds(names, replicas)),
            // Zones are recorded by the operator from Node labels, not by the pod.
            env("KEYRAFT_ZONE", String::new()),
            // Mutual TLS: the node's own certificate names its member
            // (`keyraft-member:<pod>`), every peer and client must chain to the CA.
            env("KEYRAFT_TLS_CA", format!("{MOUNT_DIR}/{CA_CRT}")),
            env("KEYRAFT_TLS_CERT", format!("{MOUNT_DIR}/$(KEYRAFT_NAME).crt")),
            env("KEYRAFT_TLS_KEY", format!("{MOUNT_DIR}/$(KEYRAFT_NAME).key")),
        ]),
        // Cluster-wide settings (limits, default read level, snapshot send
        // rate) from the ConfigMap, read at start.
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource { name: names.config_map.clone(), optional: Some(false) }),
            ..EnvFromSource::default()
        }]),
        ports: Some(vec![
            ContainerPort {
                name: Some("grpc".into()),
                container_port: GRPC_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("http".into()),
                container_port: HTTP_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        // Replaying a large log may take a while; liveness starts after
        // this allowance, which failover.timeout must exceed (CEL).
        startup_probe: Some(http_probe("/healthz", 2, startup_checks(&kr.spec.timeouts.startup))),
        resources: kr.spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Capabilities::default() }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount { name: DATA_VOLUME.into(), mount_path: DATA_DIR.into(), ..VolumeMount::default() },
            VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..VolumeMount::default() },
            VolumeMount {
                name: TLS_VOLUME.into(),
                mount_path: MOUNT_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    }
}

fn affinity(kr: &KeyraftCluster, selector: &BTreeMap<String, String>) -> Option<Affinity> {
    let topo = &kr.spec.topology;
    let term = PodAffinityTerm {
        label_selector: Some(label_selector(selector)),
        topology_key: "kubernetes.io/hostname".into(),
        ..PodAffinityTerm::default()
    };
    let pod_anti_affinity = match topo.anti_affinity {
        AntiAffinity::Required => Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term]),
            ..PodAntiAffinity::default()
        }),
        AntiAffinity::Preferred => Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: term,
            }]),
            ..PodAntiAffinity::default()
        }),
        AntiAffinity::None => None,
    };
    let node_affinity = (!topo.zones.is_empty()).then(|| NodeAffinity {
        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: topo.zone_key.clone(),
                    operator: "In".into(),
                    values: Some(topo.zones.clone()),
                }]),
                ..NodeSelectorTerm::default()
            }],
        }),
        ..NodeAffinity::default()
    });
    if pod_anti_affinity.is_none() && node_affinity.is_none() {
        return None;
    }
    Some(Affinity { pod_anti_affinity, node_affinity, ..Affinity::default() })
}

pub(super) fn label_selector(labels: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector { match_labels: Some(labels.clone()), ..LabelSelector::default() }
}

fn non_empty(m: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then_some(m)
}

/// Startup-probe failures allowed (one check every 2 s) for the
/// `timeouts.startup` duration; the schema has already checked its form.
fn startup_checks(startup: &str) -> i32 {
    let secs = crate::crd::parse_duration(startup).map_or(240, |d| d.as_secs());
    (secs / 2).clamp(1, i32::MAX as u64) as i32
}
