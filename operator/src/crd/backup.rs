//! Backups: the `KeyraftBackup` custom resource (one backup of one cluster,
//! taken by the operator) and the backup settings of `KeyraftCluster`
//! (`spec.backup`: a schedule and retention; `spec.bootstrap.fromBackup`:
//! a new cluster restored from a backup).

// Repeated printcolumn(type_ = ...) values in #[kube] trip this lint.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where backups are kept: an object store URL and the Secret with its
/// credentials.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupDestination {
    /// Object store URL under which each backup is a directory named after
    /// it: `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX`, `az://CONTAINER/PREFIX`
    /// or `file:///DIR` (a directory the operator's pod can write).
    #[schemars(length(min = 1, max = 1024))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self.matches('^(s3|s3a|gs|az|azure|abfs|abfss|file)://[^ ]+$')",
            "message": "destination.url must be an object store URL without spaces: s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX or file:///DIR",
            "reason": "FieldValueInvalid"
        }
    ]))]
    pub url: String,
    /// Secret in the same namespace whose keys are the settings the store
    /// needs, named as the environment variables of the AWS, Google and
    /// Azure tools: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ENDPOINT_URL` (`AWS_ALLOW_HTTP: "true"` for a
    /// plain-HTTP endpoint), `GOOGLE_SERVICE_ACCOUNT_KEY`,
    /// `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, ... Only
    /// these settings are used, never the operator's own environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,
}

/// Scheduled backups of a cluster and how many are kept.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterBackupSpec {
    /// Where the backups go; also the default of every `KeyraftBackup` of
    /// this cluster that names no destination.
    pub destination: BackupDestination,
    /// When to take a backup, in cron syntax (UTC): five fields (minute hour
    /// day-of-month month day-of-week, e.g. `0 3 * * *` for 03:00 every
    /// day) or six with seconds first (`0 0 3 * * *`). Each scheduled backup
    /// is a `KeyraftBackup` named `<cluster>-<UTC time>`. Unset: backups are
    /// only taken on demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub schedule: Option<String>,
    /// Stop taking scheduled backups (retention still applies).
    #[serde(default)]
    pub suspend: bool,
    /// Which scheduled backups are kept; older ones are deleted from the
    /// destination, then their `KeyraftBackup`. Backups taken on demand are
    /// never deleted by the operator.
    #[serde(default)]
    pub retention: RetentionSpec,
}

/// Retention of scheduled backups. A completed backup is deleted once it is
/// outside either bound; the newest completed backup is always kept.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Keep at most this many completed scheduled backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub count: Option<u32>,
    /// Delete completed scheduled backups older than this, as a duration
    /// such as 168h (a week) or 720h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^([0-9]+(s|m|h))+$"))]
    pub max_age: Option<String>,
}

/// How a new cluster gets its data.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// Restore a backup into the new cluster before it is presented as
    /// Available. The cluster gets a new cluster id; `status.restore` says
    /// which backup it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_backup: Option<FromBackup>,
}

/// The backup a new cluster is restored from.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FromBackup {
    /// Where the backup is.
    pub destination: BackupDestination,
    /// Name of the backup at the destination (a `KeyraftBackup`'s name, or
    /// one from `keyraft backup list --at URL`). The cluster's
    /// `partitions` must equal the backup's.
    #[schemars(length(min = 1, max = 253))]
    pub backup: String,
}

/// One backup of a cluster to object storage, taken by the operator: every
/// partition's state at a recorded Raft index, streamed from the leaders,
/// plus a manifest written last.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "keyraft.io",
    version = "v1alpha1",
    kind = "KeyraftBackup",
    namespaced,
    shortname = "krb",
    category = "keyraft",
    status = "KeyraftBackupStatus",
    derive = "PartialEq",
    doc = "A backup of a Keyraft cluster to object storage.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".status.sizeBytes"),
    printcolumn(name = "Completed", type_ = "date", json_path = ".status.completedAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self == oldSelf",
        "message": "a KeyraftBackup's spec is immutable: create a new KeyraftBackup to take another backup",
        "reason": "FieldValueForbidden"
    }
]))]
pub struct KeyraftBackupSpec {
    /// Name of the `KeyraftCluster` to back up, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub cluster: String,
    /// Where to write the backup. Unset: the cluster's
    /// `spec.backup.destination`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<BackupDestination>,
}

/// Progress and result of a backup.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyraftBackupStatus {
    /// Pending (waiting for the cluster), Running, Completed or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// `Complete` (True once the manifest is written) with the reason and
    /// message of the last step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The destination URL the backup was written to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Id of the cluster backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// When the backup started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When its manifest was written (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Bytes written to the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Keys backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    /// Partitions backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
    /// Why the backup failed, or what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Lifecycle of a backup.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupPhase {
    /// Waiting for the cluster to be bootstrapped and reachable.
    Pending,
    /// Partitions are being streamed to the store.
    Running,
    /// The manifest is written: the backup can be restored.
    Completed,
    /// The backup stopped; `message` says why. No manifest was written.
    Failed,
}

impl BackupPhase {
    /// Completed and Failed backups are never run again.
    pub fn is_final(self) -> bool {
        matches!(self, BackupPhase::Completed | BackupPhase::Failed)
    }
}

/// Progress of `spec.bootstrap.fromBackup` on a cluster.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// The backup restored.
    pub backup: String,
    /// Where it was read from.
    pub destination: String,
    /// Running, Completed or Failed.
    pub phase: RestorePhase,
    /// Id of the cluster the backup was taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_cluster_id: Option<String>,
    /// When the restore started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the last key was written (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Keys restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    /// Why the restore failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Lifecycle of a restore.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RestorePhase {
    /// Keys are being written.
    #[default]
    Running,
    /// Every key of the backup is in the cluster.
    Completed,
    /// The restore stopped (a bad backup, a partition count that differs);
    /// the cluster is not Available. Delete it and create it again.
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_names_a_cluster_and_maybe_a_destination() {
        let b: KeyraftBackup = serde_yaml::from_str(
            "apiVersion: keyraft.io/v1alpha1\nkind: KeyraftBackup\nmetadata: {name: b}\nspec: {cluster: basic}\n",
        )
        .unwrap();
        assert_eq!(b.spec.cluster, "basic");
        assert!(b.spec.destination.is_none());
        assert!(BackupPhase::Failed.is_final() && !BackupPhase::Running.is_final());
    }
}
