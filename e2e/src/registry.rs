//! Which resources are served: the built-in kinds the operator, Helm and
//! kubectl use, plus every CustomResourceDefinition created at run time.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::schema::CrdSchema;

/// Paths of the scale subresource inside an object.
#[derive(Debug, Clone)]
pub struct ScalePaths {
    /// e.g. `.spec.replicas`
    pub spec_replicas: String,
    /// e.g. `.status.replicas`
    pub status_replicas: String,
    /// Built-ins: `None` (the selector is derived from `.spec.selector`);
    /// CRDs: `labelSelectorPath`.
    pub label_selector: Option<String>,
}

/// A CRD `additionalPrinterColumns` entry.
#[derive(Debug, Clone)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub json_path: String,
    pub description: String,
    pub priority: i64,
}

/// One served resource.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    /// Versions served; the first is the preferred (storage) version.
    pub versions: Vec<String>,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Has a `/status` subresource (status is only written through it).
    pub status: bool,
    pub scale: Option<ScalePaths>,
    /// CRD schema (defaults, pruning, validation), per version.
    pub schemas: BTreeMap<String, Arc<CrdSchema>>,
    pub printer_columns: Vec<PrinterColumn>,
    /// Defined by a CustomResourceDefinition.
    pub custom: bool,
    /// Verbs listed in discovery.
    pub verbs: Vec<&'static str>,
}

impl ResourceType {
    /// `group/version` or `v1` for the core group.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }
    /// `plural.group` or `plural`: how messages name the resource.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    /// `Kind.group` or `Kind`: how validation messages name the kind.
    pub fn kind_group(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
    /// Storage key.
    pub fn key(&self) -> GroupResource {
        GroupResource { group: self.group.clone(), resource: self.plural.clone() }
    }
}

/// Group + plural resource name: the storage key of a resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupResource {
    pub group: String,
    pub resource: String,
}

impl GroupResource {
    /// Builds a key.
    pub fn new(group: &str, resource: &str) -> Self {
        GroupResource { group: group.into(), resource: resource.into() }
    }
}

const ALL_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
    scale: bool,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        versions: vec![version.into()],
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: if matches!(plural, "pods" | "services" | "deployments" | "statefulsets" | "replicasets") {
            vec!["all".into()]
        } else {
            vec![]
        },
        status,
        scale: scale.then(|| ScalePaths {
            spec_replicas: ".spec.replicas".into(),
            status_replicas: ".status.replicas".into(),
            label_selector: None,
        }),
        schemas: BTreeMap::new(),
        printer_columns: vec![],
        custom: false,
        verbs: ALL_VERBS.to_vec(),
    }
}

/// Every built-in resource the simulator serves.
fn builtins() -> Vec<ResourceType> {
    vec![
        builtin("", "v1", "Namespace", "namespaces", false, &["ns"], true, false),
        builtin("", "v1", "Node", "nodes", false, &["no"], true, false),
        builtin("", "v1", "Pod", "pods", true, &["po"], true, false),
        builtin("", "v1", "Service", "services", true, &["svc"], true, false),
        builtin("", "v1", "Endpoints", "endpoints", true, &["ep"], false, false),
        builtin("", "v1", "ConfigMap", "configmaps", true, &["cm"], false, false),
        builtin("", "v1", "Secret", "secrets", true, &[], false, false),
        builtin("", "v1", "ServiceAccount", "serviceaccounts", true, &["sa"], false, false),
        builtin("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true, &["pvc"], true, false),
        builtin("", "v1", "PersistentVolume", "persistentvolumes", false, &["pv"], true, false),
        builtin("", "v1", "Event", "events", true, &["ev"], false, false),
        builtin("", "v1", "ResourceQuota", "resourcequotas", true, &["quota"], true, false),
        builtin("", "v1", "LimitRange", "limitranges", true, &["limits"], false, false),
        builtin("apps", "v1", "StatefulSet", "statefulsets", true, &["sts"], true, true),
        builtin("apps", "v1", "Deployment", "deployments", true, &["deploy"], true, true),
        builtin("apps", "v1", "ReplicaSet", "replicasets", true, &["rs"], true, true),
        builtin("apps", "v1", "DaemonSet", "daemonsets", true, &["ds"], true, false),
        builtin("apps", "v1", "ControllerRevision", "controllerrevisions", true, &[], false, false),
        builtin("batch", "v1", "Job", "jobs", true, &[], true, false),
        builtin("coordination.k8s.io", "v1", "Lease", "leases", true, &[], false, false),
        builtin("events.k8s.io", "v1", "Event", "events", true, &["ev"], false, false),
        builtin("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true, &["pdb"], true, false),
        builtin("rbac.authorization.k8s.io", "v1", "Role", "roles", true, &[], false, false),
        builtin("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true, &[], false, false),
        builtin("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false, &[], false, false),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            &[],
            false,
            false,
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            &["crd", "crds"],
            true,
            false,
        ),
        builtin("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true, &[], false, false),
        builtin("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", true, &["netpol"], false, false),
        builtin("networking.k8s.io", "v1", "Ingress", "ingresses", true, &["ing"], true, false),
        builtin("storage.k8s.io", "v1", "StorageClass", "storageclasses", false, &["sc"], false, false),
        builtin("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", false, &["pc"], false, false),
    ]
}

/// The set of served resources. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<RwLock<BTreeMap<GroupResource, Arc<ResourceType>>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry of the built-in resources.
    pub fn new() -> Self {
        let map = builtins().into_iter().map(|t| (t.key(), Arc::new(t))).collect();
        Registry { inner: Arc::new(RwLock::new(map)) }
    }

    /// The resource `plural` of `group` if `version` is served.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        let map = self.inner.read().unwrap();
        map.get(&GroupResource::new(group, plural)).filter(|t| t.versions.iter().any(|v| v == version)).cloned()
    }

    /// The resource of a storage key.
    pub fn get(&self, key: &GroupResource) -> Option<Arc<ResourceType>> {
        self.inner.read().unwrap().get(key).cloned()
    }

    /// The resource of a kind in an `apiVersion`.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        let (group, version) = split_api_version(api_version);
        self.inner
            .read()
            .unwrap()
            .values()
            .find(|t| t.group == group && t.kind == kind && t.versions.iter().any(|v| v == version))
            .cloned()
    }

    /// Every served resource.
    pub fn all(&self) -> Vec<Arc<ResourceType>> {
        self.inner.read().unwrap().values().cloned().collect()
    }

    /// Adds or replaces a resource (CRD created or updated).
    pub fn insert(&self, t: ResourceType) {
        self.inner.write().unwrap().insert(t.key(), Arc::new(t));
    }

    /// Stops serving a resource (CRD deleted).
    pub fn remove(&self, key: &GroupResource) {
        self.inner.write().unwrap().remove(key);
    }

    /// The served resource a CustomResourceDefinition object describes.
    pub fn from_crd(crd: &Value) -> Result<ResourceType, String> {
        let spec = &crd["spec"];
        let group = spec["group"].as_str().ok_or("spec.group: Required value")?;
        let names = &spec["names"];
        let plural = names["plural"].as_str().ok_or("spec.names.plural: Required value")?;
        let kind = names["kind"].as_str().ok_or("spec.names.kind: Required value")?;
        let strs = |v: &Value| -> Vec<String> {
            v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
        };
        let versions = spec["versions"].as_array().ok_or("spec.versions: Required value")?;
        let mut served: Vec<&Value> = versions.iter().filter(|v| v["served"] != false).collect();
        // The storage version first: it is the preferred one.
        served.sort_by_key(|v| v["storage"] != true);
        let first = served.first().ok_or("spec.versions: no served version")?;
        let mut schemas = BTreeMap::new();
        for v in &served {
            let name = v["name"].as_str().unwrap_or_default().to_string();
            if let Some(s) = v.pointer("/schema/openAPIV3Schema") {
                schemas.insert(name, Arc::new(CrdSchema::new(s.clone())?));
            }
        }
        let sub = &first["subresources"];
        let scale = sub.get("scale").map(|s| ScalePaths {
            spec_replicas: s["specReplicasPath"].as_str().unwrap_or(".spec.replicas").into(),
            status_replicas: s["statusReplicasPath"].as_str().unwrap_or(".status.replicas").into(),
            label_selector: s["labelSelectorPath"].as_str().map(String::from),
        });
        let printer_columns = first["additionalPrinterColumns"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .map(|c| PrinterColumn {
                        name: c["name"].as_str().unwrap_or_default().into(),
                        type_: c["type"].as_str().unwrap_or("string").into(),
                        json_path: c["jsonPath"].as_str().unwrap_or_default().into(),
                        description: c["description"].as_str().unwrap_or_default().into(),
                        priority: c["priority"].as_i64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(ResourceType {
            group: group.into(),
            versions: served.iter().filter_map(|v| v["name"].as_str().map(String::from)).collect(),
            kind: kind.into(),
            plural: plural.into(),
            singular: names["singular"].as_str().map(String::from).unwrap_or_else(|| kind.to_lowercase()),
            namespaced: spec["scope"] != "Cluster",
            short_names: strs(&names["shortNames"]),
            categories: strs(&names["categories"]),
            status: sub.get("status").is_some(),
            scale,
            schemas,
            printer_columns,
            custom: true,
            verbs: ALL_VERBS.to_vec(),
        })
    }
}

/// `apps/v1` -> (`apps`, `v1`); `v1` -> (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}
