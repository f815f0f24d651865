//! Services, PodDisruptionBudget, NetworkPolicy and ConfigMap of a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::statefulset::label_selector;
use super::{object_meta, selector_labels, Names, GRPC_PORT, HTTP_PORT};
use crate::crd::KeyraftCluster;
use crate::{Error, Result};

fn ports() -> Vec<ServicePort> {
    vec![
        ServicePort {
            name: Some("grpc".into()),
            port: GRPC_PORT,
            target_port: Some(IntOrString::String("grpc".into())),
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        },
        ServicePort {
            name: Some("http".into()),
            port: HTTP_PORT,
            target_port: Some(IntOrString::String("http".into())),
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        },
    ]
}

/// Headless Service: `<pod>.<name>-headless.<ns>.svc` for every pod,
/// published before the pod is ready so peers can find each other while
/// the cluster forms.
pub fn headless_service(kr: &KeyraftCluster) -> Result<Service> {
    let names = Names::of(kr)?;
    Ok(Service {
        metadata: object_meta(kr, &names, &names.headless)?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&names.cluster)),
            ports: Some(ports()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// Client Service: load-balances over ready nodes; any node serves any key.
pub fn client_service(kr: &KeyraftCluster) -> Result<Service> {
    let names = Names::of(kr)?;
    Ok(Service {
        metadata: object_meta(kr, &names, &names.client)?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(&names.cluster)),
            ports: Some(ports()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// Voluntary disruptions the PDB allows: one. With replication factor 3
/// or 5 every partition keeps a majority without that node; with 1 a drain
/// costs the partitions on that node their downtime, but a budget of 0
/// would block every node drain forever.
pub fn pdb_max_unavailable(_kr: &KeyraftCluster) -> i32 {
    1
}

/// PodDisruptionBudget that never lets a node drain take a quorum away.
pub fn pod_disruption_budget(kr: &KeyraftCluster) -> Result<PodDisruptionBudget> {
    let names = Names::of(kr)?;
    Ok(PodDisruptionBudget {
        metadata: object_meta(kr, &names, &names.pdb)?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(pdb_max_unavailable(kr))),
            selector: Some(label_selector(&selector_labels(&names.cluster))),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

/// Label that selects the operator's pods (the chart's `app.kubernetes.io/name`).
pub const OPERATOR_POD_LABEL: (&str, &str) = ("app.kubernetes.io/name", "keyraft-operator");

/// The NetworkPolicy of the nodes' pods (`spec.networkPolicy`): the gRPC
/// port from the cluster's own pods, the operator's pods (in
/// `operator_namespace`, or any namespace when unknown) and
/// `spec.networkPolicy.clients` (everyone when empty); the HTTP port from
/// anywhere. None when disabled.
pub fn network_policy(kr: &KeyraftCluster, operator_namespace: Option<&str>) -> Result<Option<NetworkPolicy>> {
    let names = Names::of(kr)?;
    let spec = &kr.spec.network_policy;
    if !spec.enabled {
        return Ok(None);
    }
    let port = |p: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(p)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    };
    let own = NetworkPolicyPeer {
        pod_selector: Some(label_selector(&selector_labels(&names.cluster))),
        ..NetworkPolicyPeer::default()
    };
    let operator = NetworkPolicyPeer {
        pod_selector: Some(label_selector(&BTreeMap::from([(
            OPERATOR_POD_LABEL.0.to_string(),
            OPERATOR_POD_LABEL.1.to_string(),
        )]))),
        namespace_selector: Some(match operator_namespace {
            Some(ns) => label_selector(&BTreeMap::from([("kubernetes.io/metadata.name".to_string(), ns.to_string())])),
            None => LabelSelector::default(),
        }),
        ..NetworkPolicyPeer::default()
    };
    let mut from = vec![own, operator];
    from.extend(spec.clients.iter().cloned());
    let grpc = NetworkPolicyIngressRule {
        // No `from` at all admits every source.
        from: (!spec.clients.is_empty()).then_some(from),
        ports: Some(vec![port(GRPC_PORT)]),
    };
    let http = NetworkPolicyIngressRule { from: None, ports: Some(vec![port(HTTP_PORT)]) };
    Ok(Some(NetworkPolicy {
        metadata: object_meta(kr, &names, &format!("{}-nodes", names.cluster))?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(label_selector(&selector_labels(&names.cluster))),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![grpc, http]),
            ..NetworkPolicySpec::default()
        }),
    }))
}

/// The node's cap on snapshot bytes it sends per second, summed over its
/// partitions (`spec.rebalance.maxBytesPerSecond`); unset is unlimited.
pub const SNAPSHOT_SEND_BYTES_PER_SEC: &str = "KEYRAFT_SNAPSHOT_SEND_BYTES_PER_SEC";

/// Cluster-wide node settings, read by every node as environment variables
/// (`envFrom`) when it starts: a change here restarts no pod (the pod
/// template does not change) and reaches a node at its next restart.
/// Bootstrap passes partitions and replication factor through the admin API
/// as well; here they document what the cluster was made with.
pub fn config_map(kr: &KeyraftCluster) -> Result<ConfigMap> {
    let names = Names::of(kr)?;
    let spec = &kr.spec;
    let mut data = BTreeMap::from([
        ("KEYRAFT_PARTITIONS".to_string(), spec.partitions.to_string()),
        ("KEYRAFT_REPLICATION_FACTOR".to_string(), spec.replication_factor.to_string()),
        ("KEYRAFT_DEFAULT_READ".to_string(), spec.consistency.default_read.as_str().to_string()),
    ]);
    if let Some(n) = spec.limits.max_key_bytes {
        data.insert("KEYRAFT_MAX_KEY_BYTES".into(), n.to_string());
    }
    if let Some(n) = spec.limits.max_value_bytes {
        data.insert("KEYRAFT_MAX_VALUE_BYTES".into(), n.to_string());
    }
    // Unset means unlimited on the node, so an absent field sets nothing.
    if let Some(q) = &spec.rebalance.max_bytes_per_second {
        let bytes = crate::crd::parse_quantity_bytes(q).filter(|&n| n > 0).ok_or_else(|| {
            Error::Invalid(format!(
                "spec.rebalance.maxBytesPerSecond {q:?} is not a positive quantity of bytes such as 64Mi or 100M"
            ))
        })?;
        data.insert(SNAPSHOT_SEND_BYTES_PER_SEC.into(), bytes.to_string());
    }
    Ok(ConfigMap { metadata: object_meta(kr, &names, &names.config_map)?, data: Some(data), ..ConfigMap::default() })
}
