//! The identity of a data directory: format version, node id, incarnation
//! and the cluster it belongs to. Created on the first start; checked on
//! every start so that a node never runs on another cluster's data or on a
//! format it does not understand.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
const FILE: &str = "KEYRAFT_IDENTITY";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub format_version: u32,
    /// Raft id; random, so a node whose data was lost never reuses an id.
    pub node_id: NodeId,
    pub incarnation: String,
    pub name: String,
    pub cluster_name: String,
    /// Set once the node has joined a bootstrapped cluster.
    pub cluster_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("data directory {dir}: {source}")]
    Io { dir: PathBuf, source: io::Error },
    #[error("data directory {dir} is not a Keyraft data directory: it holds files but no {FILE}; refusing to start (point --data-dir at an empty or Keyraft directory)")]
    Foreign { dir: PathBuf },
    #[error("data directory {dir} has an unreadable {FILE}: {what}; refusing to start")]
    Corrupt { dir: PathBuf, what: String },
    #[error("data directory {dir} has format version {found}, this build understands version {FORMAT_VERSION}; refusing to start")]
    UnknownFormat { dir: PathBuf, found: u32 },
    #[error("data directory {dir} belongs to cluster {found:?}, but this node was started for cluster {expected:?} (--cluster); refusing to start")]
    OtherCluster { dir: PathBuf, found: String, expected: String },
    #[error("data directory {dir} belongs to node {found:?}, but this node is named {expected:?} (--name); refusing to start")]
    OtherNode { dir: PathBuf, found: String, expected: String },
}

impl Identity {
    /// Loads the identity in `dir`, or creates one if `dir` is empty.
    pub fn load_or_create(dir: &Path, name: &str, cluster: &str) -> Result<Identity, IdentityError> {
        let io = |source| IdentityError::Io { dir: dir.to_path_buf(), source };
        fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                let id: Identity = serde_json::from_slice(&bytes)
                    .map_err(|e| IdentityError::Corrupt { dir: dir.to_path_buf(), what: e.to_string() })?;
                if id.format_version != FORMAT_VERSION {
                    return Err(IdentityError::UnknownFormat { dir: dir.to_path_buf(), found: id.format_version });
                }
                if id.cluster_name != cluster {
                    return Err(IdentityError::OtherCluster {
                        dir: dir.to_path_buf(),
                        found: id.cluster_name,
                        expected: cluster.into(),
                    });
                }
                if id.name != name {
                    return Err(IdentityError::OtherNode {
                        dir: dir.to_path_buf(),
                        found: id.name,
                        expected: name.into(),
                    });
                }
                Ok(id)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let has_files = fs::read_dir(dir).map_err(io)?.next().is_some();
                if has_files {
                    return Err(IdentityError::Foreign { dir: dir.to_path_buf() });
                }
                let mut rng = rand::rng();
                let id = Identity {
                    format_version: FORMAT_VERSION,
                    // Below 2^53 so the id survives JSON tooling unchanged.
                    node_id: rng.random_range(1..(1u64 << 53)),
                    incarnation: format!("{:016x}", rng.random::<u64>()),
                    name: name.into(),
                    cluster_name: cluster.into(),
                    cluster_id: None,
                };
                id.save(dir).map_err(io)?;
                Ok(id)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Writes the identity atomically.
    pub fn save(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join(format!("{FILE}.tmp"));
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).map_err(io::Error::other)?)?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(FILE))?;
        crate::storage::wal::sync_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded() {
        let d = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(d.path(), "n0", "c").unwrap();
        let b = Identity::load_or_create(d.path(), "n0", "c").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn lost_data_means_a_new_id() {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(d1.path(), "n0", "c").unwrap();
        let b = Identity::load_or_create(d2.path(), "n0", "c").unwrap();
        assert_ne!(a.node_id, b.node_id);
        assert_ne!(a.incarnation, b.incarnation);
    }

    #[test]
    fn refuses_other_cluster_other_node_unknown_format_and_foreign_dirs() {
        let d = tempfile::tempdir().unwrap();
        let mut id = Identity::load_or_create(d.path(), "n0", "c").unwrap();
        let e = Identity::load_or_create(d.path(), "n0", "other").unwrap_err();
        assert!(e.to_string().contains("belongs to cluster \"c\""), "{e}");
        let e = Identity::load_or_create(d.path(), "n1", "c").unwrap_err();
        assert!(e.to_string().contains("belongs to node \"n0\""), "{e}");
        id.format_version = 99;
        id.save(d.path()).unwrap();
        let e = Identity::load_or_create(d.path(), "n0", "c").unwrap_err();
        assert!(e.to_string().contains("format version 99"), "{e}");

        let foreign = tempfile::tempdir().unwrap();
        fs::write(foreign.path().join("postgresql.conf"), "x").unwrap();
        let e = Identity::load_or_create(foreign.path(), "n0", "c").unwrap_err();
        assert!(matches!(e, IdentityError::Foreign { .. }), "{e}");

        let corrupt = tempfile::tempdir().unwrap();
        fs::write(corrupt.path().join(FILE), "{not json").unwrap();
        assert!(matches!(Identity::load_or_create(corrupt.path(), "n0", "c"), Err(IdentityError::Corrupt { .. })));
    }
}
