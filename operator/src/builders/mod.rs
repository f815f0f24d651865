//! Pure builders: `KeyraftCluster` -> the Kubernetes objects it owns.
//!
//! No I/O here; the controller server-side applies what these return. Every
//! object carries the cluster's labels and a controller owner reference, so
//! garbage collection removes them with the cluster.

mod objects;
mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::KeyraftCluster;
use crate::{Error, Result};

pub use objects::{
    client_service, config_map, headless_service, network_policy, pdb_max_unavailable, pod_disruption_budget,
    OPERATOR_POD_LABEL, SNAPSHOT_SEND_BYTES_PER_SEC,
};
pub use statefulset::statefulset;

/// gRPC port of every node (Kv, Raft, Admin).
pub const GRPC_PORT: i32 = 7000;
/// HTTP port of every node (/healthz, /readyz, /metrics).
pub const HTTP_PORT: i32 = 8080;
/// Where the node's volume is mounted.
pub const DATA_DIR: &str = "/var/lib/keyraft";
/// Name of the PVC template (PVCs are `data-<pod>`).
pub const DATA_VOLUME: &str = "data";
/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "keyraft-operator";
/// Longest cluster name: the pods' controller-revision-hash label is
/// `<name>-<10 characters>` and must stay within 63.
pub const MAX_CLUSTER_NAME: usize = 52;

/// Names of the objects one cluster owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub cluster: String,
    pub namespace: String,
    /// StatefulSet; pods are `<statefulset>-<ordinal>`.
    pub statefulset: String,
    /// Headless Service that gives every pod a stable DNS name.
    pub headless: String,
    /// Client Service.
    pub client: String,
    pub config_map: String,
    pub pdb: String,
}

impl Names {
    pub fn of(kr: &KeyraftCluster) -> Result<Names> {
        let cluster = kr.name_any();
        let namespace = kr.namespace().ok_or_else(|| Error::MissingField(cluster.clone(), "metadata.namespace"))?;
        if cluster.len() > MAX_CLUSTER_NAME {
            return Err(Error::Invalid(format!(
                "metadata.name {cluster:?} has {} characters; at most {MAX_CLUSTER_NAME}, so the names and labels derived from it stay within 63",
                cluster.len()
            )));
        }
        Ok(Names {
            statefulset: cluster.clone(),
            headless: format!("{cluster}-headless"),
            client: cluster.clone(),
            config_map: format!("{cluster}-config"),
            pdb: cluster.clone(),
            cluster,
            namespace,
        })
    }

    /// Pod name of an ordinal.
    pub fn pod(&self, ordinal: u32) -> String {
        format!("{}-{ordinal}", self.statefulset)
    }

    /// Stable gRPC address of a pod through the headless Service.
    pub fn pod_address(&self, pod: &str) -> String {
        format!("{pod}.{}.{}.svc:{GRPC_PORT}", self.headless, self.namespace)
    }

    /// PVC of a pod.
    pub fn pvc(&self, pod: &str) -> String {
        format!("{DATA_VOLUME}-{pod}")
    }
}

/// Labels that select a cluster's pods. Never change: a StatefulSet's
/// selector is immutable.
pub fn selector_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "keyraft".to_string()),
        ("app.kubernetes.io/instance".to_string(), cluster.to_string()),
    ])
}

/// Labels of every owned object.
pub fn labels(kr: &KeyraftCluster) -> BTreeMap<String, String> {
    let mut l = selector_labels(&kr.name_any());
    l.insert("app.kubernetes.io/component".into(), "database".into());
    l.insert("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into());
    l.insert("app.kubernetes.io/version".into(), kr.spec.version.clone());
    l
}

/// Label selector string of the pods (status.selector, for `kubectl scale`).
pub fn selector_string(cluster: &str) -> String {
    selector_labels(cluster).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn owner_reference(kr: &KeyraftCluster) -> Result<OwnerReference> {
    kr.controller_owner_ref(&()).ok_or_else(|| Error::MissingField(kr.name_any(), "metadata.uid"))
}

/// Metadata of an owned object: name, namespace, labels, owner reference.
pub(crate) fn object_meta(kr: &KeyraftCluster, names: &Names, name: &str) -> Result<ObjectMeta> {
    Ok(ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(names.namespace.clone()),
        labels: Some(labels(kr)),
        owner_references: Some(vec![owner_reference(kr)?]),
        ..ObjectMeta::default()
    })
}

/// The full image reference the nodes run.
pub fn image(kr: &KeyraftCluster) -> String {
    format!("{}:{}", kr.spec.image, kr.spec.version)
}
