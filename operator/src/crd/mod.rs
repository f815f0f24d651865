//! The `KeyraftCluster` custom resource (group `keyraft.io`, version `v1alpha1`).
//!
//! Everything but `replicas` has a default, so the smallest manifest is
//! `spec: {replicas: 3}`. Structural validation (ranges, enums, patterns) lives
//! in schemars attributes; cross-field and transition rules are CEL
//! (`x-kubernetes-validations`), evaluated by the API server.

// Repeated printcolumn(type_ = ...) values in #[kube] trip this lint.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod backup;
pub use backup::*;

/// API group of every Keyraft custom resource.
pub const GROUP: &str = "keyraft.io";
/// Annotation that stops every action on a cluster (status keeps updating).
pub const PAUSE_ANNOTATION: &str = "keyraft.io/pause-reconciliation";
/// Default node image repository.
pub const DEFAULT_IMAGE: &str = "keyraft/keyraft-node";
/// Default node version (image tag).
pub const DEFAULT_VERSION: &str = "0.1.0";

/// Desired state of a Keyraft cluster: a StatefulSet of Raft-backed
/// key-value nodes that the operator bootstraps, scales and upgrades.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "keyraft.io",
    version = "v1alpha1",
    kind = "KeyraftCluster",
    namespaced,
    shortname = "kr",
    category = "keyraft",
    status = "KeyraftClusterStatus",
    derive = "PartialEq",
    doc = "A replicated, partitioned Keyraft key-value database cluster.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.currentVersion"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.replicationFactor <= self.replicas",
        "message": "replicationFactor must not exceed replicas: every partition needs replicationFactor distinct nodes (for a single-node cluster set replicationFactor: 1)",
        "reason": "FieldValueInvalid"
    },
    {
        "rule": "duration(has(self.failover) && has(self.failover.timeout) ? self.failover.timeout : '5m') > duration(has(self.timeouts) && has(self.timeouts.startup) ? self.timeouts.startup : '4m')",
        "message": "failover.timeout must be longer than timeouts.startup (default 4m), or a pod that is still starting would be failed over",
        "reason": "FieldValueInvalid"
    }
]))]
pub struct KeyraftClusterSpec {
    /// Number of keyraft-node pods. Must be at least replicationFactor.
    /// Scale with `kubectl scale kr/NAME --replicas=N`; scale-in decommissions
    /// the highest ordinals before their pods are removed.
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,

    /// Node image repository, without tag; the tag is `version`.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1, max = 512), pattern(r"^[a-z0-9]([a-z0-9._/:-]*[a-z0-9])?$"))]
    pub image: String,

    /// Keyraft version: the image tag to run. Changing it starts a rolling
    /// upgrade, one pod at a time, partition leaders last.
    /// It becomes a label value, so at most 63 characters.
    #[serde(default = "default_version")]
    #[schemars(pattern(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$"))]
    pub version: String,

    /// Number of hash partitions of the key space. Fixed at creation.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 1024))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self == oldSelf",
            "message": "partitions is immutable: the key space is hashed into this many partitions when the cluster is created; create a new cluster to change it",
            "reason": "FieldValueForbidden"
        }
    ]))]
    pub partitions: u32,

    /// Replicas of every partition (1, 3 or 5), each on a distinct node and,
    /// where the topology has them, a distinct zone.
    #[serde(default = "default_replication_factor")]
    #[schemars(extend("enum" = [1, 3, 5]))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self == oldSelf",
            "message": "replicationFactor is immutable: every partition's replica count is fixed when the cluster is created; create a new cluster to change it",
            "reason": "FieldValueForbidden"
        }
    ]))]
    pub replication_factor: u32,

    /// Read consistency settings.
    #[serde(default)]
    pub consistency: ConsistencySpec,

    /// Zone-aware placement of pods and partition replicas.
    #[serde(default)]
    pub topology: TopologySpec,

    /// Persistent volume of every node.
    #[serde(default)]
    pub storage: StorageSpec,

    /// CPU and memory requests and limits of the keyraft-node container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// How the operator rolls out a new version or pod template.
    #[serde(default)]
    pub update_strategy: UpdateStrategySpec,

    /// Replacement of members that stay unready.
    #[serde(default)]
    pub failover: FailoverSpec,

    /// Bounds of the operator's waits: past one, the cluster reports
    /// `Degraded=True` naming the blocker, and the operator keeps retrying.
    #[serde(default)]
    pub timeouts: TimeoutsSpec,

    /// Automatic rebalancing of partition replicas and leaders.
    #[serde(default)]
    pub rebalance: RebalanceSpec,

    /// Request size limits enforced by every node.
    #[serde(default)]
    pub limits: LimitsSpec,

    /// Additions to the pod template of every node.
    #[serde(default)]
    pub pod_template: PodTemplateOverrides,

    /// TLS on the nodes' gRPC port: mutual TLS between nodes, client
    /// certificates for applications and people, an admin certificate for
    /// the operator. On by default, with certificates the operator issues.
    #[serde(default)]
    pub tls: TlsSpec,

    /// A NetworkPolicy in front of the nodes: only the cluster's own pods,
    /// the operator and `clients` reach the gRPC port. On by default.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,

    /// Scheduled backups to object storage and their retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<ClusterBackupSpec>,

    /// Where a new cluster's data comes from: empty, or a backup
    /// (`fromBackup`). Fixed at creation.
    #[serde(default, skip_serializing_if = "is_default")]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self == oldSelf",
            "message": "bootstrap is immutable: it says how the cluster was created; create a new cluster to restore another backup",
            "reason": "FieldValueForbidden"
        }
    ]))]
    pub bootstrap: BootstrapSpec,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn default_image() -> String {
    DEFAULT_IMAGE.to_string()
}
fn default_version() -> String {
    DEFAULT_VERSION.to_string()
}
fn default_partitions() -> u32 {
    16
}
fn default_replication_factor() -> u32 {
    3
}

/// Read consistency settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsistencySpec {
    /// Consistency of reads that name none: linearizable (leader, never
    /// stale), session (read-your-writes with a token) or eventual (any
    /// replica, may be stale).
    #[serde(default)]
    pub default_read: ReadConsistency,
}

/// Read consistency level.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReadConsistency {
    /// Served by the leader after confirming leadership.
    #[default]
    Linearizable,
    /// Read-your-writes and monotonic reads through a session token.
    Session,
    /// The local replica answers at once; may be stale.
    Eventual,
}

impl ReadConsistency {
    /// The name used in the node's configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadConsistency::Linearizable => "linearizable",
            ReadConsistency::Session => "session",
            ReadConsistency::Eventual => "eventual",
        }
    }
}

/// Zone-aware placement.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopologySpec {
    /// Node label that names a node's zone; it becomes the topology key of
    /// the pods' spread and affinity rules, so it must be a label key.
    #[serde(default = "default_zone_key")]
    #[schemars(length(min = 1, max = 317))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self.matches('^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$')",
            "message": "topology.zoneKey must be a node label key: an optional DNS prefix and '/', then a name of at most 63 letters, digits, '-', '_' or '.' that starts and ends with a letter or digit (e.g. topology.kubernetes.io/zone)",
            "reason": "FieldValueInvalid"
        }
    ]))]
    pub zone_key: String,
    /// Zones to run in. Empty means every zone the scheduler picks; when set,
    /// pods get node affinity to these zones (label values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 63)))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self.all(z, z.matches('^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))",
            "message": "every entry of topology.zones must be a label value: at most 63 letters, digits, '-', '_' or '.' that starts and ends with a letter or digit",
            "reason": "FieldValueInvalid"
        }
    ]))]
    pub zones: Vec<String>,
    /// Spread of pods over zones: `required` refuses to schedule a pod that
    /// would unbalance zones by more than one, `preferred` only tries.
    #[serde(default)]
    pub spread: Constraint,
    /// Anti-affinity between pods of this cluster on one Kubernetes node:
    /// `required` never co-locates two, `preferred` tries not to, `none` ignores.
    #[serde(default)]
    pub anti_affinity: AntiAffinity,
}

fn default_zone_key() -> String {
    "topology.kubernetes.io/zone".to_string()
}

impl Default for TopologySpec {
    fn default() -> Self {
        TopologySpec {
            zone_key: default_zone_key(),
            zones: Vec::new(),
            spread: Constraint::default(),
            anti_affinity: AntiAffinity::default(),
        }
    }
}

/// Hard or soft scheduling constraint.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Constraint {
    /// The scheduler must honour it.
    Required,
    /// The scheduler tries to honour it (default: works on one-node dev clusters).
    #[default]
    Preferred,
}

/// Pod anti-affinity mode.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AntiAffinity {
    /// Never two pods of the cluster on one Kubernetes node.
    Required,
    /// Avoid two pods of the cluster on one Kubernetes node when possible.
    #[default]
    Preferred,
    /// No anti-affinity.
    None,
}

/// Persistent volume settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Volume size as a Kubernetes quantity, e.g. 1Gi or 500Mi.
    #[serde(default = "default_storage_size")]
    #[schemars(pattern(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    pub size: String,
    /// StorageClass of the volumes; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// What happens to a volume when its member is removed by scale-in or
    /// the cluster is deleted: Delete removes it, Retain keeps it.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
}

fn default_storage_size() -> String {
    "1Gi".to_string()
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec { size: default_storage_size(), storage_class_name: None, reclaim_policy: ReclaimPolicy::default() }
    }
}

/// Volume reclaim policy on scale-in and deletion.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReclaimPolicy {
    /// Delete the PersistentVolumeClaim once its member has left the cluster.
    #[default]
    Delete,
    /// Keep the PersistentVolumeClaim.
    Retain,
}

/// Rollout settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategySpec {
    /// Stop rolling pods to a new version or template (running pods stay).
    #[serde(default)]
    pub paused: bool,
    /// Pods restarted at once during a rollout. Only 1 is supported: a Raft
    /// group of 3 survives one member down, not two.
    #[serde(default = "default_max_unavailable")]
    #[schemars(range(min = 1, max = 1))]
    pub max_unavailable: i32,
    /// A restarted member leads again only once, on every partition it
    /// holds, its applied index is at most this many entries behind the
    /// leader's commit index.
    #[serde(default = "default_max_catch_up_lag")]
    #[schemars(range(min = 0, max = 1000000))]
    pub max_catch_up_lag: u64,
}

fn default_max_catch_up_lag() -> u64 {
    100
}

fn default_max_unavailable() -> i32 {
    1
}

impl Default for UpdateStrategySpec {
    fn default() -> Self {
        UpdateStrategySpec {
            paused: false,
            max_unavailable: default_max_unavailable(),
            max_catch_up_lag: default_max_catch_up_lag(),
        }
    }
}

/// Failover settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSpec {
    /// How long a member may stay unready before its replicas are re-created
    /// on other nodes, as a duration such as 90s, 5m or 1h30m.
    /// Always longer than `timeouts.startup` (CEL), so a slow start is never
    /// failed over.
    #[serde(default = "default_failover_timeout")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub timeout: String,
}

/// Bounds of the operator's waits, as durations such as 90s, 5m or 1h30m.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutsSpec {
    /// A draining member handing its leaderships over before its restart
    /// (Degraded reason `DrainTimedOut`).
    #[serde(default = "default_timeout_drain")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub drain: String,
    /// A restarted member becoming ready and catching up on every partition
    /// it holds (Degraded reason `CatchUpTimedOut`).
    #[serde(default = "default_timeout_catch_up")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub catch_up: String,
    /// A pod becoming ready before the next one restarts (Degraded reason
    /// `ReadyTimedOut`).
    #[serde(default = "default_timeout_ready")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub ready: String,
    /// A leaving member's replicas moving off it on scale-in (Degraded
    /// reason `ScaleInTimedOut`).
    #[serde(default = "default_timeout_scale_in")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub scale_in: String,
    /// A new pod joining the cluster on scale-out (Degraded reason `JoinTimedOut`).
    #[serde(default = "default_timeout_join")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub join: String,
    /// A starting node's first successful health check (the startup probe,
    /// e.g. while it replays a large log); the container is restarted after
    /// it. `failover.timeout` must be longer (CEL).
    #[serde(default = "default_timeout_startup")]
    #[schemars(pattern(r"^([0-9]+(s|m|h))+$"))]
    pub startup: String,
}

fn default_timeout_drain() -> String {
    "5m".to_string()
}
fn default_timeout_catch_up() -> String {
    "10m".to_string()
}
fn default_timeout_ready() -> String {
    "10m".to_string()
}
fn default_timeout_scale_in() -> String {
    "30m".to_string()
}
fn default_timeout_join() -> String {
    "10m".to_string()
}
fn default_timeout_startup() -> String {
    "4m".to_string()
}

impl Default for TimeoutsSpec {
    fn default() -> Self {
        TimeoutsSpec {
            drain: default_timeout_drain(),
            catch_up: default_timeout_catch_up(),
            ready: default_timeout_ready(),
            scale_in: default_timeout_scale_in(),
            join: default_timeout_join(),
            startup: default_timeout_startup(),
        }
    }
}

fn default_failover_timeout() -> String {
    "5m".to_string()
}

impl Default for FailoverSpec {
    fn default() -> Self {
        FailoverSpec { timeout: default_failover_timeout() }
    }
}

/// Rebalancing settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceSpec {
    /// Move replicas and leaders to even out nodes and zones.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Replica moves in flight at once over the whole cluster.
    #[serde(default = "default_max_concurrent_moves")]
    #[schemars(range(min = 1, max = 64))]
    pub max_concurrent_moves: u32,
    /// Snapshot data each node may send per second, summed over all its
    /// partitions, as a Kubernetes quantity of bytes such as 64Mi or 100M
    /// (a fraction rounds up to whole bytes). Bounds the network and disk
    /// bandwidth that replica moves take: rebalancing, scale-in and repair
    /// of a failed member, each streaming a Raft snapshot from a partition's
    /// leader to a new replica (a voter that fell behind is sent its
    /// snapshot at full speed, as it counts toward quorum). It is per
    /// sending node: a node receiving from several leaders at once may
    /// receive several times this. Absent means unlimited; at most 1Ti.
    /// Each node reads it when it starts (through the ConfigMap): a change
    /// restarts no pod and applies to a node at its next restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), pattern(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "!isQuantity(self) || (quantity(self).isGreaterThan(quantity('0')) && quantity(self).compareTo(quantity('1Ti')) <= 0)",
            "message": "rebalance.maxBytesPerSecond must be more than 0 and at most 1Ti bytes per second (e.g. 64Mi or 100M); leave it out for no limit",
            "reason": "FieldValueInvalid"
        }
    ]))]
    pub max_bytes_per_second: Option<String>,
}

fn default_true() -> bool {
    true
}
fn default_max_concurrent_moves() -> u32 {
    2
}

impl Default for RebalanceSpec {
    fn default() -> Self {
        RebalanceSpec {
            enabled: true,
            max_concurrent_moves: default_max_concurrent_moves(),
            max_bytes_per_second: None,
        }
    }
}

/// Request size limits; the node's built-in defaults when unset.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Largest key accepted, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65536))]
    pub max_key_bytes: Option<u32>,
    /// Largest value accepted, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 67108864))]
    pub max_value_bytes: Option<u32>,
}

/// Additions to the node pod template.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverrides {
    /// Extra pod labels (the operator's own labels win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Node selector of the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Where the cluster's certificates come from.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.mode != 'provided' || has(self.provided)",
        "message": "tls.mode provided needs tls.provided.nodeSecret and tls.provided.operatorSecret naming the Secrets that hold the certificates",
        "reason": "FieldValueRequired"
    },
    {
        "rule": "self.mode == 'provided' || !has(self.provided)",
        "message": "tls.provided is only read with tls.mode provided; remove it or set mode: provided",
        "reason": "FieldValueForbidden"
    },
    {
        "rule": "self.mode != 'certManager' || has(self.certManager)",
        "message": "tls.mode certManager needs tls.certManager.issuerRef naming the cert-manager Issuer or ClusterIssuer that signs the cluster's certificates",
        "reason": "FieldValueRequired"
    },
    {
        "rule": "self.mode == 'certManager' || !has(self.certManager)",
        "message": "tls.certManager is only read with tls.mode certManager; remove it or set mode: certManager",
        "reason": "FieldValueForbidden"
    },
    {
        "rule": "duration(has(self.certificateValidity) ? self.certificateValidity : '2160h') >= duration('1h')",
        "message": "tls.certificateValidity must be at least 1h: certificates are renewed when a third of their validity remains",
        "reason": "FieldValueInvalid"
    }
]))]
pub struct TlsSpec {
    /// `operator` (default): the operator creates a CA for this cluster and
    /// issues the node, admin and client certificates into Secrets
    /// (`<name>-ca`, `<name>-node-tls`, `<name>-admin-tls`,
    /// `<name>-client-tls`) and renews them before they expire; nodes reload
    /// renewed certificates without a restart; its CA rolls over by itself.
    /// `certManager`: cert-manager issues and renews them from the issuer in
    /// `certManager.issuerRef` (one `Certificate` per pod, `<name>-admin`,
    /// `<name>-client`); the operator gathers the pods' certificates into
    /// `<name>-node-tls`. `provided`: the Secrets named in `provided` hold
    /// certificates issued elsewhere. Fixed at creation: the modes keep
    /// their certificates in different Secrets.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self == oldSelf",
            "message": "tls.mode is immutable: nodes would stop trusting each other half-way through a change of CA; create a new cluster to change it",
            "reason": "FieldValueForbidden"
        }
    ]))]
    pub mode: TlsMode,

    /// Lifetime of the certificates the operator issues (mode operator) or
    /// asks cert-manager for (mode certManager), as a duration such as
    /// 2160h (the default, 90 days) or 720h. A certificate is renewed once
    /// less than a third of it remains. The operator's CA lasts ten years.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub certificate_validity: Option<String>,

    /// The Secrets of mode provided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provided: Option<ProvidedTls>,

    /// The issuer of mode certManager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_manager: Option<CertManagerTls>,
}

impl Default for TlsSpec {
    fn default() -> Self {
        TlsSpec { mode: TlsMode::Operator, certificate_validity: None, provided: None, cert_manager: None }
    }
}

/// The NetworkPolicy of a cluster's pods. Peers and clients share the gRPC
/// port (7000), where mutual TLS tells them apart; the policy narrows who
/// can open a connection at all. The HTTP port (8080: health, metrics)
/// stays open to every source, for probes and Prometheus. It takes effect
/// only with a network plugin that enforces NetworkPolicy.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicy `<name>-nodes` (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Who else may reach the gRPC port, as NetworkPolicy peers
    /// (`podSelector`, `namespaceSelector`, `ipBlock`), e.g. the pods of
    /// one application. Empty (the default): every client may connect, and
    /// authenticates with its certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub clients: Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        NetworkPolicySpec { enabled: true, clients: Vec::new() }
    }
}

/// Who issues the certificates.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TlsMode {
    /// The operator runs a CA per cluster and issues every certificate.
    #[default]
    Operator,
    /// cert-manager, from the issuer named in `tls.certManager`.
    CertManager,
    /// Existing Secrets named in `tls.provided`.
    Provided,
}

/// Mode certManager: who signs. The issuer must put the CA in each
/// Secret's `ca.crt` (a CA, Vault or private-CA issuer; ACME issuers do
/// not): nodes and clients trust each other through it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertManagerTls {
    /// The cert-manager issuer every certificate of the cluster names.
    pub issuer_ref: IssuerRef,
}

/// A cert-manager issuer, as a `Certificate`'s `spec.issuerRef` names it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Name of the Issuer (in the cluster's namespace) or ClusterIssuer.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `Issuer` (default) or `ClusterIssuer`, or an external issuer's kind.
    #[serde(default = "default_issuer_kind")]
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// API group of the issuer (default `cert-manager.io`).
    #[serde(default = "default_issuer_group")]
    #[schemars(length(min = 1, max = 253))]
    pub group: String,
}

fn default_issuer_kind() -> String {
    "Issuer".into()
}

fn default_issuer_group() -> String {
    "cert-manager.io".into()
}

/// Secrets holding certificates issued outside the operator, in the
/// cluster's namespace. Certificates follow Keyraft's identity conventions:
/// a node's names its member with the URI SAN `keyraft-member:<pod name>`,
/// the operator's carries `keyraft-role:admin`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvidedTls {
    /// Secret with `ca.crt` (the CA bundle every certificate chains to) and,
    /// for every pod, `<pod>.crt` and `<pod>.key`, e.g. `basic-0.crt`. Each
    /// node certificate also names the pod's DNS names
    /// (`<pod>.<name>-headless.<namespace>.svc`) and the client Service
    /// (`<name>.<namespace>.svc`).
    #[schemars(length(min = 1, max = 253))]
    pub node_secret: String,
    /// Secret with `ca.crt`, `tls.crt` and `tls.key`: an admin client
    /// certificate the operator reaches the nodes with.
    #[schemars(length(min = 1, max = 253))]
    pub operator_secret: String,
}

/// Observed state of a Keyraft cluster, written by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyraftClusterStatus {
    /// Coarse lifecycle phase; the conditions carry the detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Available, Progressing, Degraded, Upgrading and Rebalancing, each with
    /// a reason and a message saying what the operator waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Pods that exist (the scale subresource reads this).
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are ready: joined, caught up and serving.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Version every member runs, once they agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    /// Version the cluster is moving to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    /// Pods already running the target version (rolling upgrade progress).
    #[serde(default)]
    pub updated_replicas: i32,
    /// One entry per pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// One entry per partition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionStatus>,
    /// The metadata.generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Id the cluster got at bootstrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Label selector of the pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The restore of `spec.bootstrap.fromBackup`: which backup, how far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
}

/// Lifecycle phase.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Pods are being created.
    Pending,
    /// Waiting for every initial pod, then bootstrapping Raft.
    Bootstrapping,
    /// Bootstrapped, and writing the keys of `spec.bootstrap.fromBackup`;
    /// not Available until every key is in.
    Restoring,
    /// Every member is ready and up to date, and no replica moves or waits
    /// to move (`Rebalancing` is not True).
    Running,
    /// Members are being added or decommissioned: the pod count differs
    /// from `spec.replicas`, or every pod is ready but replicas still move
    /// onto or off members (`Rebalancing=True`).
    Scaling,
    /// Pods are being restarted on a new version.
    Upgrading,
    /// Something needs attention; see the Degraded condition.
    Degraded,
    /// The pause annotation is set; nothing is changed.
    Paused,
}

/// One member (pod) of the cluster.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Pod name.
    pub pod: String,
    /// Raft node id, once the node has answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u64>,
    /// Zone of the Kubernetes node the pod runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Whether the node is joined, caught up and serving.
    #[serde(default)]
    pub ready: bool,
    /// Version the node reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Partitions this node leads.
    #[serde(default)]
    pub leaders: u32,
    /// Member state in the meta group (active, draining, decommissioning, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// Placement summary of one partition.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    /// Partition number.
    pub partition: u32,
    /// Raft node ids holding a replica.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<u64>,
    /// Raft node id of the leader, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<u64>,
}

/// The CRD: the derived one plus the rules on the whole object (only the
/// root schema sees `metadata.name`).
pub fn crd() -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = KeyraftCluster::crd();
    let max = crate::builders::MAX_CLUSTER_NAME;
    for v in &mut crd.spec.versions {
        if let Some(root) = v.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
            root.x_kubernetes_validations = Some(vec![
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::ValidationRule {
                    rule: format!("self.metadata.name.size() <= {max}"),
                    message: Some(format!(
                        "metadata.name may have at most {max} characters: the pod, Service and label values derived from it must stay within 63"
                    )),
                    reason: Some("FieldValueInvalid".into()),
                    ..Default::default()
                },
            ]);
        }
    }
    crd
}

/// The CRD as YAML: the content of `crds/keyraftcluster.yaml` and of the
/// chart's copy, printed by `keyraft-operator crd`.
pub fn crd_yaml() -> Result<String, crate::Error> {
    let body = serde_yaml::to_string(&crd())?;
    Ok(format!("# Generated from operator/src/crd/mod.rs by `keyraft-operator crd`; do not edit.\n{body}"))
}

/// The KeyraftBackup CRD as YAML: `crds/keyraftbackup.yaml` and the chart's
/// copy, printed by `keyraft-operator crd backup`.
pub fn backup_crd_yaml() -> Result<String, crate::Error> {
    use kube::CustomResourceExt;
    let body = serde_yaml::to_string(&KeyraftBackup::crd())?;
    Ok(format!("# Generated from operator/src/crd/backup.rs by `keyraft-operator crd backup`; do not edit.\n{body}"))
}

impl KeyraftCluster {
    /// Whether the pause annotation is set to "true".
    pub fn is_paused(&self) -> bool {
        self.metadata.annotations.as_ref().and_then(|a| a.get(PAUSE_ANNOTATION)).is_some_and(|v| v == "true")
    }
}

/// Parses a duration such as `90s`, `5m` or `1h30m` (the `failover.timeout`
/// grammar).
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let mut total_ms: u64 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else {
            return None;
        };
        total_ms = total_ms.checked_add(n.checked_mul(unit_ms)?)?;
        rest = &rest[len..];
    }
    Some(std::time::Duration::from_millis(total_ms))
}

/// Parses a Kubernetes quantity of bytes in the grammar of `storage.size`
/// and `rebalance.maxBytesPerSecond` (`64Mi`, `100M`, `1.5Gi`, `4096`) into
/// whole bytes, rounding a fraction up as Kubernetes does. None when it is
/// not in that grammar or does not fit in a u64.
pub fn parse_quantity_bytes(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let multiplier: u128 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (number.contains('.') && !digits(fraction)) {
        return None;
    }
    // whole.fraction = mantissa / 10^scale, exact in integers.
    let mantissa: u128 = format!("{whole}{fraction}").parse().ok()?;
    let scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    let bytes = mantissa.checked_mul(multiplier)?.div_ceil(scale);
    u64::try_from(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_manifest_is_just_replicas() {
        let kr: KeyraftCluster = serde_yaml::from_str(
            "apiVersion: keyraft.io/v1alpha1\nkind: KeyraftCluster\nmetadata: {name: a}\nspec: {replicas: 3}\n",
        )
        .unwrap();
        assert_eq!(kr.spec.partitions, 16);
        assert_eq!(kr.spec.replication_factor, 3);
        assert_eq!(kr.spec.version, DEFAULT_VERSION);
        assert_eq!(kr.spec.storage.size, "1Gi");
        assert_eq!(kr.spec.failover.timeout, "5m");
        assert_eq!(kr.spec.rebalance.max_concurrent_moves, 2);
        assert_eq!(kr.spec.topology.zone_key, "topology.kubernetes.io/zone");
        assert_eq!(kr.spec.consistency.default_read, ReadConsistency::Linearizable);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m").unwrap().as_secs(), 300);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("250ms").unwrap().as_millis(), 250);
        assert!(parse_duration("").is_none());
        assert!(parse_duration("5").is_none());
        assert!(parse_duration("m5").is_none());
        assert!(parse_duration("5d").is_none());
    }

    #[test]
    fn quantities_of_bytes() {
        assert_eq!(parse_quantity_bytes("64Mi"), Some(67_108_864));
        assert_eq!(parse_quantity_bytes("100M"), Some(100_000_000));
        assert_eq!(parse_quantity_bytes("4096"), Some(4096));
        assert_eq!(parse_quantity_bytes("1.5Gi"), Some(1_610_612_736));
        assert_eq!(parse_quantity_bytes("1.5k"), Some(1500));
        assert_eq!(parse_quantity_bytes("1Ti"), Some(1 << 40));
        assert_eq!(parse_quantity_bytes("16Ei"), None, "2^64 does not fit");
        assert_eq!(parse_quantity_bytes("15Ei"), Some(15 << 60));
        // Fractions of a byte round up, as Kubernetes' Quantity.Value() does.
        assert_eq!(parse_quantity_bytes("0.5"), Some(1));
        assert_eq!(parse_quantity_bytes("0.0001Ki"), Some(1));
        assert_eq!(parse_quantity_bytes("0"), Some(0));
        for bad in ["", "Mi", "64MB", "64 Mi", "1.Mi", ".5Mi", "1..5", "-1", "1e6", "100m", "1.5.5Ki"] {
            assert_eq!(parse_quantity_bytes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pause_annotation() {
        let mut kr = KeyraftCluster::new("a", serde_yaml::from_str::<KeyraftClusterSpec>("replicas: 1").unwrap());
        assert!(!kr.is_paused());
        kr.metadata.annotations = Some([(PAUSE_ANNOTATION.to_string(), "true".to_string())].into());
        assert!(kr.is_paused());
        kr.metadata.annotations = Some([(PAUSE_ANNOTATION.to_string(), "false".to_string())].into());
        assert!(!kr.is_paused());
    }
}
