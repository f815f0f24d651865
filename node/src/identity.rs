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

/// The on-disk format this build reads and writes: the storage format (see
/// `storage::STORAGE_FORMAT`). Version 1 was written by the releases of
/// storage formats 1 (log in `wal/`) and 2 (state machines in snapshot
/// files), which `storage::refuse_old_format` tells apart.
pub const FORMAT_VERSION: u32 = crate::storage::STORAGE_FORMAT;
const FILE: &str = "KEYRAFT_IDENTITY";
/// Where a new identity is written before it is renamed into place.
const TMP_FILE: &str = "KEYRAFT_IDENTITY.tmp";
/// What a freshly formatted filesystem leaves at its root (ext2/3/4 create
/// `lost+found`); a volume mounted as the data directory holds it.
const FILESYSTEM_ARTEFACTS: &[&str] = &["lost+found"];

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
        create_dir_durably(dir).map_err(io)?;
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
                if !is_empty_volume(dir).map_err(io)? {
                    return Err(IdentityError::Foreign { dir: dir.to_path_buf() });
                }
                // A crash while the first identity was being written leaves
                // only its temp file: the directory is still empty.
                remove_if_present(&dir.join(TMP_FILE)).map_err(io)?;
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

    /// Writes the identity atomically: a crash at any step leaves either the
    /// old file or the new one in place, never a torn one.
    pub fn save(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join(TMP_FILE);
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).map_err(io::Error::other)?)?;
        fail::fail_point!("identity::before_sync", |_| Err(io::Error::other("failpoint identity::before_sync")));
        f.sync_all()?;
        fail::fail_point!("identity::before_rename", |_| Err(io::Error::other("failpoint identity::before_rename")));
        fs::rename(&tmp, dir.join(FILE))?;
        sync_dir(dir)
    }
}

/// Whether `dir` holds nothing but filesystem artefacts and a leftover
/// identity temp file.
fn is_empty_volume(dir: &Path) -> io::Result<bool> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let artefact = FILESYSTEM_ARTEFACTS.iter().any(|a| name == *a) && entry.file_type()?.is_dir();
        if !artefact && name != TMP_FILE {
            return Ok(false);
        }
    }
    Ok(true)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Creates `dir` (and missing parents), each fsynced into its parent so the
/// directory survives a crash.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durably(parent)?;
    }
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The identity failpoints are process-wide: the test that arms them and
    /// every test that writes an identity run one at a time.
    fn serial() -> std::sync::MutexGuard<'static, ()> {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        LOCK.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn created_once_then_reloaded() {
        let _serial = serial();
        let d = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(d.path(), "n0", "c").unwrap();
        let b = Identity::load_or_create(d.path(), "n0", "c").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn lost_data_means_a_new_id() {
        let _serial = serial();
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(d1.path(), "n0", "c").unwrap();
        let b = Identity::load_or_create(d2.path(), "n0", "c").unwrap();
        assert_ne!(a.node_id, b.node_id);
        assert_ne!(a.incarnation, b.incarnation);
    }

    #[test]
    fn refuses_other_cluster_other_node_unknown_format_and_foreign_dirs() {
        let _serial = serial();
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

        let foreign_dir = tempfile::tempdir().unwrap();
        fs::create_dir(foreign_dir.path().join("pgdata")).unwrap();
        let e = Identity::load_or_create(foreign_dir.path(), "n0", "c").unwrap_err();
        assert!(e.to_string().contains("holds files but no KEYRAFT_IDENTITY"), "{e}");

        // A file named like the artefact is not the artefact.
        let fake = tempfile::tempdir().unwrap();
        fs::write(fake.path().join("lost+found"), "x").unwrap();
        assert!(matches!(Identity::load_or_create(fake.path(), "n0", "c"), Err(IdentityError::Foreign { .. })));

        let corrupt = tempfile::tempdir().unwrap();
        fs::write(corrupt.path().join(FILE), "{not json").unwrap();
        assert!(matches!(Identity::load_or_create(corrupt.path(), "n0", "c"), Err(IdentityError::Corrupt { .. })));
    }

    #[test]
    fn a_fresh_volume_with_lost_and_found_is_empty() {
        let _serial = serial();
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("lost+found")).unwrap();
        let a = Identity::load_or_create(d.path(), "n0", "c").unwrap();
        assert_eq!(Identity::load_or_create(d.path(), "n0", "c").unwrap(), a);
        assert!(d.path().join("lost+found").is_dir(), "the filesystem's directory is left alone");
    }

    #[test]
    fn a_missing_data_dir_is_created() {
        let _serial = serial();
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a/b/data");
        Identity::load_or_create(&dir, "n0", "c").unwrap();
        assert!(dir.join(FILE).is_file());
    }

    /// Every state a crash during the first write can leave: an empty temp
    /// file (crash after create), a torn one (during write), a complete one
    /// (between fsync and rename). None of them bricks the directory.
    #[test]
    fn a_crash_while_creating_the_identity_never_bricks_the_directory() {
        let _serial = serial();
        let complete = serde_json::to_vec_pretty(&Identity {
            format_version: FORMAT_VERSION,
            node_id: 7,
            incarnation: "x".into(),
            name: "n0".into(),
            cluster_name: "c".into(),
            cluster_id: None,
        })
        .unwrap();
        for (what, tmp) in [("empty", &b""[..]), ("torn", &complete[..complete.len() / 2]), ("complete", &complete)] {
            let d = tempfile::tempdir().unwrap();
            fs::create_dir(d.path().join("lost+found")).unwrap();
            fs::write(d.path().join(TMP_FILE), tmp).unwrap();
            let a = Identity::load_or_create(d.path(), "n0", "c").unwrap_or_else(|e| panic!("{what} temp file: {e}"));
            assert!(!d.path().join(TMP_FILE).exists(), "{what}: the leftover temp file is removed");
            assert_eq!(Identity::load_or_create(d.path(), "n0", "c").unwrap(), a, "{what}");
        }
    }

    /// A crash while an existing identity is rewritten (the cluster id is
    /// recorded after joining) leaves the old file in place and a temp file.
    #[test]
    fn a_crash_while_rewriting_the_identity_keeps_the_old_one() {
        let _serial = serial();
        let d = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(d.path(), "n0", "c").unwrap();
        fs::create_dir(d.path().join("wal")).unwrap();
        fs::write(d.path().join(TMP_FILE), b"{\"format_ver").unwrap();
        assert_eq!(Identity::load_or_create(d.path(), "n0", "c").unwrap(), a);
        let mut b = a.clone();
        b.cluster_id = Some("abc".into());
        b.save(d.path()).unwrap();
        assert_eq!(Identity::load_or_create(d.path(), "n0", "c").unwrap(), b);
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn a_failed_identity_write_leaves_the_previous_identity() {
        let _serial = serial();
        let d = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(d.path(), "n0", "c").unwrap();
        let mut b = a.clone();
        b.cluster_id = Some("abc".into());
        for fp in ["identity::before_sync", "identity::before_rename"] {
            let scenario = fail::FailScenario::setup();
            fail::cfg(fp, "return").unwrap();
            assert!(b.save(d.path()).is_err(), "{fp}");
            scenario.teardown();
            assert_eq!(Identity::load_or_create(d.path(), "n0", "c").unwrap(), a, "{fp}");
        }
    }
}
