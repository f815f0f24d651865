//! A group's state machine: the partition's keys (or, for the meta group, the
//! cluster metadata) in memory, made durable by snapshot files plus the log.
//!
//! After a restart the latest snapshot is loaded and openraft re-applies the
//! committed log entries that follow it, so applying need not touch the disk.

use std::fs::{self, OpenOptions};
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::sessions::Sessions;
use super::wal::{create_dir_durable, fail_stop, sync_dir, Wal};
use crate::meta::ClusterMeta;
use crate::types::{
    CommandResult, Entry, GroupId, KvMap, KvOp, LogId, RequestId, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig,
};

/// Everything a snapshot holds.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct SmData {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub kv: KvMap,
    sessions: Sessions,
    pub meta: Option<ClusterMeta>,
}

impl SmData {
    fn apply_kv(&mut self, index: u64, rid: Option<RequestId>, op: KvOp) -> CommandResult {
        if let Some(rid) = rid {
            if let Some(r) = self.sessions.seen(&rid) {
                return r.clone();
            }
        }
        let res = match op {
            KvOp::Put { key, value } => {
                self.kv.insert(key, value);
                CommandResult::Done
            }
            KvOp::Delete { key } => CommandResult::Deleted { existed: self.kv.remove(&key).is_some() },
            KvOp::Cas { key, expected, new } => {
                let current = self.kv.get(&key);
                if current == expected.as_ref() {
                    match new {
                        Some(v) => self.kv.insert(key, v),
                        None => self.kv.remove(&key),
                    };
                    CommandResult::Cas { succeeded: true, current: None }
                } else {
                    CommandResult::Cas { succeeded: false, current: current.cloned() }
                }
            }
            KvOp::Batch(ops) => {
                for (k, v) in ops {
                    match v {
                        Some(v) => self.kv.insert(k, v),
                        None => self.kv.remove(&k),
                    };
                }
                CommandResult::Done
            }
        };
        if let Some(rid) = rid {
            self.sessions.record(index, rid, &res);
        }
        self.sessions.expire(index);
        res
    }
}

/// The file form of a snapshot.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    data: Vec<u8>,
    crc: u32,
}

/// Shared read access to a state machine, for serving reads.
#[derive(Clone)]
pub struct SmReader {
    data: Arc<RwLock<SmData>>,
}

impl SmReader {
    pub fn read(&self) -> RwLockReadGuard<'_, SmData> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct StateMachine {
    group: GroupId,
    dir: PathBuf,
    data: Arc<RwLock<SmData>>,
    snapshot_seq: Arc<AtomicU64>,
    /// Published after every applied meta change (meta group only).
    meta_tx: Option<watch::Sender<Option<Arc<ClusterMeta>>>>,
    snapshots_built: Arc<AtomicU64>,
    saver: SnapshotSaver,
}

/// Writes a group's snapshot file and tells the log what it now covers.
/// Build and install each use their own temporary file, and a snapshot never
/// replaces a newer one (a build that started before an install may finish
/// after it).
#[derive(Clone)]
struct SnapshotSaver {
    group: GroupId,
    dir: PathBuf,
    wal: Wal,
    /// Index of the snapshot file on disk; the lock orders the writers.
    saved: Arc<Mutex<Option<u64>>>,
}

impl SnapshotSaver {
    /// Returns false if a newer snapshot was already saved.
    fn save(&self, tmp_name: &str, meta: &SnapshotMeta, data: &[u8]) -> io::Result<bool> {
        let mut saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        let index = meta.last_log_id.map(|l| l.index);
        if saved.is_some() && index < *saved {
            return Ok(false);
        }
        if let Err(e) = save_snapshot_file(&self.dir, tmp_name, meta, data) {
            // The directory is gone when the group was deleted meanwhile.
            if e.kind() == io::ErrorKind::NotFound {
                return Err(e);
            }
            fail_stop("snapshot write", Some(self.group), &self.dir, &e);
        }
        *saved = index;
        drop(saved);
        self.wal.snapshot_durable(self.group, index)?;
        Ok(true)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotLoadError {
    #[error("snapshot {path} cannot be read: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("snapshot {path} is corrupt ({what}); refusing to start")]
    Corrupt { path: PathBuf, what: String },
}

fn snap_io(subject: ErrorSubject<u64>, verb: ErrorVerb, e: io::Error) -> StorageError {
    StorageError::from_io_error(subject, verb, e)
}

impl StateMachine {
    /// Opens the state machine of `group` stored under `dir`, loading its
    /// latest snapshot if there is one.
    pub fn open(
        group: GroupId,
        dir: &Path,
        meta_tx: Option<watch::Sender<Option<Arc<ClusterMeta>>>>,
        wal: Wal,
    ) -> Result<Self, SnapshotLoadError> {
        create_dir_durable(dir).map_err(|source| SnapshotLoadError::Io { path: dir.to_path_buf(), source })?;
        let path = dir.join("snapshot.bin");
        let data = match fs::read(&path) {
            Ok(bytes) => decode_snapshot(&bytes)
                .and_then(|f| bincode::deserialize::<SmData>(&f.data).map_err(|e| e.to_string()))
                .map_err(|what| SnapshotLoadError::Corrupt { path: path.clone(), what })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => SmData::default(),
            Err(source) => return Err(SnapshotLoadError::Io { path, source }),
        };
        if let Some(tx) = &meta_tx {
            tx.send_replace(data.meta.clone().map(Arc::new));
        }
        let saved = data.last_applied.map(|l| l.index);
        wal.snapshot_durable(group, saved).map_err(|source| SnapshotLoadError::Io { path: path.clone(), source })?;
        let saver = SnapshotSaver { group, dir: dir.to_path_buf(), wal, saved: Arc::new(Mutex::new(saved)) };
        Ok(Self {
            group,
            dir: dir.to_path_buf(),
            data: Arc::new(RwLock::new(data)),
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            meta_tx,
            snapshots_built: Arc::new(AtomicU64::new(0)),
            saver,
        })
    }

    pub fn reader(&self) -> SmReader {
        SmReader { data: self.data.clone() }
    }

    pub fn snapshots_built(&self) -> Arc<AtomicU64> {
        self.snapshots_built.clone()
    }

    fn write(&self) -> RwLockWriteGuard<'_, SmData> {
        self.data.write().unwrap_or_else(|e| e.into_inner())
    }

    fn publish_meta(&self, data: &SmData) {
        if let Some(tx) = &self.meta_tx {
            tx.send_replace(data.meta.clone().map(Arc::new));
        }
    }
}

/// Writes a snapshot atomically. The group's directory must exist: a group
/// deleted while a snapshot was being built must stay deleted.
fn save_snapshot_file(dir: &Path, tmp_name: &str, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
    let file = SnapshotFile { meta: meta.clone(), data: data.to_vec(), crc: crc32fast::hash(data) };
    let bytes = bincode::serialize(&file).map_err(io::Error::other)?;
    let tmp = dir.join(tmp_name);
    let mut f = OpenOptions::new().create(true).write(true).truncate(true).open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join("snapshot.bin"))?;
    sync_dir(dir)
}

fn decode_snapshot(bytes: &[u8]) -> Result<SnapshotFile, String> {
    let f: SnapshotFile = bincode::deserialize(bytes).map_err(|e| format!("undecodable: {e}"))?;
    if crc32fast::hash(&f.data) != f.crc {
        return Err("checksum mismatch".into());
    }
    Ok(f)
}

/// Builds snapshots from a point-in-time copy of the state.
pub struct SnapshotBuilder {
    group: GroupId,
    saver: SnapshotSaver,
    data: Arc<RwLock<SmData>>,
    seq: Arc<AtomicU64>,
    built: Arc<AtomicU64>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        fail::fail_point!("storage::snapshot_build");
        let (bytes, last_applied, last_membership) = {
            let d = self.data.read().unwrap_or_else(|e| e.into_inner());
            let bytes = bincode::serialize(&*d)
                .map_err(|e| snap_io(ErrorSubject::StateMachine, ErrorVerb::Read, io::Error::other(e)))?;
            (bytes, d.last_applied, d.last_membership.clone())
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}-{seq}", self.group, l.leader_id.term, l.index),
            None => format!("{}-0-0-{seq}", self.group),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership, snapshot_id };
        let (m2, b2, saver) = (meta.clone(), bytes.clone(), self.saver.clone());
        tokio::task::spawn_blocking(move || saver.save("snapshot.build.tmp", &m2, &b2))
            .await
            .map_err(|e| snap_io(ErrorSubject::Snapshot(None), ErrorVerb::Write, io::Error::other(e)))?
            .map_err(|e| {
                tracing::error!(group = self.group, error = %e, "cannot write snapshot");
                snap_io(ErrorSubject::Snapshot(None), ErrorVerb::Write, e)
            })?;
        self.built.fetch_add(1, Ordering::Relaxed);
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let d = self.data.read().unwrap_or_else(|e| e.into_inner());
        Ok((d.last_applied, d.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let start = std::time::Instant::now();
        let mut out = Vec::new();
        let mut meta_changed = false;
        let mut d = self.write();
        for e in entries {
            d.last_applied = Some(e.log_id);
            let res = match e.payload {
                EntryPayload::Blank => CommandResult::Done,
                EntryPayload::Membership(m) => {
                    fail::fail_point!("storage::membership");
                    d.last_membership = StoredMembership::new(Some(e.log_id), m);
                    CommandResult::Done
                }
                EntryPayload::Normal(crate::types::Command::Kv { request_id, op }) => {
                    d.apply_kv(e.log_id.index, request_id, op)
                }
                EntryPayload::Normal(crate::types::Command::Meta(op)) => {
                    meta_changed = true;
                    CommandResult::Meta(op.apply(&mut d.meta))
                }
            };
            out.push(res);
        }
        if meta_changed {
            self.publish_meta(&d);
        }
        crate::metrics::observe_raft_apply(start.elapsed().as_secs_f64());
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            group: self.group,
            saver: self.saver.clone(),
            data: self.data.clone(),
            seq: self.snapshot_seq.clone(),
            built: self.snapshots_built.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        fail::fail_point!("storage::snapshot_install");
        let bytes = snapshot.into_inner();
        let mut new: SmData = bincode::deserialize(&bytes).map_err(|e| {
            snap_io(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Read, io::Error::other(e))
        })?;
        new.last_applied = meta.last_log_id;
        new.last_membership = meta.last_membership.clone();
        // Durable before the state switches: openraft purges the log up to
        // this snapshot, and the log waits for it (see `Wal::purge`).
        self.saver
            .save("snapshot.install.tmp", meta, &bytes)
            .map_err(|e| snap_io(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write, e))?;
        let mut d = self.write();
        *d = new;
        self.publish_meta(&d);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let path = self.dir.join("snapshot.bin");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(snap_io(ErrorSubject::Snapshot(None), ErrorVerb::Read, e)),
        };
        let f = decode_snapshot(&bytes)
            .map_err(|e| snap_io(ErrorSubject::Snapshot(None), ErrorVerb::Read, io::Error::other(e)))?;
        Ok(Some(Snapshot { meta: f.meta, snapshot: Box::new(Cursor::new(f.data)) }))
    }
}
