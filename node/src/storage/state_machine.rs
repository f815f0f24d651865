//! A group's state machine: the partition's keys (or, for the meta group, the
//! cluster metadata), kept in the storage engine ([`super::sm_store`]).
//!
//! `apply` writes each run of entries as one atomic engine batch: the keys it
//! changes, the exactly-once table's changes, the applied index, and the
//! membership or metadata when they change. The batch is not fsynced on its
//! own: it is in the engine's single journal, ahead of anything committed
//! after it, and everything it holds can be applied again from the log,
//! which keeps every entry after the state's applied index. That is the rule
//! the log's purge keeps: **the log is purged only up to an index the state
//! machine has committed to the engine** ([`Wal::state_saved`]); a purge is
//! committed after that state, so it cannot reach the disk without it. After
//! a restart a group resumes from its own applied index, with no state
//! loaded, and openraft applies only the later entries.
//!
//! Memory holds the exactly-once table (bounded by the clients' writes in
//! flight) and, for the meta group, the cluster metadata.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use tokio::sync::watch;

use super::sessions::{ClientMarks, SessionWrite, Sessions};
use super::sm_store::{
    data_key, gen_prefix, head_key, prefix_end, read_membership, read_state, SmReader, SmState, SmStore, KIND_CLIENT,
    KIND_KV, KIND_RESULT, TAG_MEMBERSHIP, TAG_META, TAG_STATE,
};
use super::snapshot::{self, PendingView, SnapshotData};
use super::wal::{decode, encode, fail_stop, Wal};
use crate::meta::ClusterMeta;
use crate::types::{CommandResult, Entry, GroupId, KvOp, LogId, RequestId, SnapshotMeta, StorageError, TypeConfig};

/// An apply batch is committed once it holds this many bytes (at an entry
/// boundary, each part with its own applied index).
const APPLY_BATCH_BYTES: usize = 8 << 20;

pub struct StateMachine {
    group: GroupId,
    store: SmStore,
    wal: Wal,
    tmp_dir: PathBuf,
    state: SmState,
    membership: crate::types::StoredMembership,
    sessions: Sessions,
    meta: Option<ClusterMeta>,
    /// Published after every applied meta change (meta group only).
    meta_tx: Option<watch::Sender<Option<Arc<ClusterMeta>>>>,
    snapshots_built: Arc<AtomicU64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SmOpenError {
    #[error("state machine of group {group} cannot be read from the storage engine: {source}")]
    Io { group: GroupId, source: io::Error },
}

fn sm_err(verb: ErrorVerb, e: io::Error) -> StorageError {
    StorageError::from_io_error(ErrorSubject::StateMachine, verb, e)
}

fn snap_err(meta: Option<&SnapshotMeta>, verb: ErrorVerb, e: io::Error) -> StorageError {
    StorageError::from_io_error(ErrorSubject::Snapshot(meta.map(|m| m.signature())), verb, e)
}

/// The id of the snapshot of a group's state at `last`: the same state has
/// the same id on every replica.
fn snapshot_id(group: GroupId, last: Option<LogId>) -> String {
    match last {
        Some(l) => format!("{group}-{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
        None => format!("{group}-0-0-0"),
    }
}

impl StateMachine {
    /// Opens the state machine of `group` from the engine: reads its state
    /// record, membership and exactly-once table (not its keys). `tmp_dir`
    /// takes the temporary files of snapshots being sent or received.
    pub fn open(
        group: GroupId,
        wal: Wal,
        tmp_dir: &Path,
        meta_tx: Option<watch::Sender<Option<Arc<ClusterMeta>>>>,
    ) -> Result<Self, SmOpenError> {
        let io = |source| SmOpenError::Io { group, source };
        let store = wal.sm_store();
        let state = store.state(group).map_err(io)?;
        // Leftovers of a snapshot install or a deletion cut short.
        store.delete_other_generations(group, state.gen).map_err(io)?;
        let membership = store.membership(group).map_err(io)?;
        let meta = store.meta(group).map_err(io)?;
        let sessions = load_sessions(&store, group, state.gen).map_err(io)?;
        if let Some(tx) = &meta_tx {
            tx.send_replace(meta.clone().map(Arc::new));
        }
        wal.state_saved(group, state.last_applied.map(|l| l.index)).map_err(io)?;
        Ok(Self {
            group,
            store,
            wal,
            tmp_dir: tmp_dir.to_path_buf(),
            state,
            membership,
            sessions,
            meta,
            meta_tx,
            snapshots_built: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn reader(&self) -> SmReader {
        SmReader { store: self.store.clone(), group: self.group }
    }

    pub fn snapshots_built(&self) -> Arc<AtomicU64> {
        self.snapshots_built.clone()
    }

    fn publish_meta(&self) {
        if let Some(tx) = &self.meta_tx {
            tx.send_replace(self.meta.clone().map(Arc::new));
        }
    }
}

fn load_sessions(store: &SmStore, group: GroupId, gen: u64) -> io::Result<Sessions> {
    let mut s = Sessions::default();
    let from = data_key(group, gen, KIND_CLIENT, &[]);
    let to = prefix_end(&data_key(group, gen, KIND_RESULT, &[])).expect("a prefix with an end");
    let skip = gen_prefix(group, gen).len() + 1;
    for kv in store.ks.range(from..to) {
        let (k, v) = kv.into_inner().map_err(io::Error::other)?;
        let id = |at: usize| -> io::Result<u64> {
            k.get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| io::Error::other("short exactly-once key"))
        };
        match k[skip - 1] {
            KIND_CLIENT => s.load_client(id(skip)?, decode::<ClientMarks>(&v).map_err(io::Error::other)?),
            _ => s.load_result(id(skip)?, id(skip + 8)?, decode(&v).map_err(io::Error::other)?),
        }
    }
    Ok(s)
}

/// The changes of one apply batch, before they are committed: later reads in
/// the same batch see them, and each key is written once.
struct Pending<'a> {
    store: &'a SmStore,
    group: GroupId,
    gen: u64,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
    keys: u64,
}

impl Pending<'_> {
    fn kv_key(&self, key: &[u8]) -> Vec<u8> {
        data_key(self.group, self.gen, KIND_KV, key)
    }

    fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let k = self.kv_key(key);
        match self.writes.get(&k) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.store.ks.get(&k).map_err(io::Error::other)?.map(|v| v.to_vec())),
        }
    }

    fn exists(&self, key: &[u8]) -> io::Result<bool> {
        let k = self.kv_key(key);
        match self.writes.get(&k) {
            Some(v) => Ok(v.is_some()),
            None => self.store.ks.contains_key(&k).map_err(io::Error::other),
        }
    }

    fn set(&mut self, key: &[u8], value: Option<Vec<u8>>) -> io::Result<()> {
        let existed = self.exists(key)?;
        match (existed, value.is_some()) {
            (false, true) => self.keys += 1,
            (true, false) => self.keys -= 1,
            _ => {}
        }
        self.bytes += key.len() + value.as_ref().map_or(0, |v| v.len()) + 32;
        let k = self.kv_key(key);
        self.writes.insert(k, value);
        Ok(())
    }
}

impl StateMachine {
    fn apply_kv(
        &mut self,
        p: &mut Pending<'_>,
        index: u64,
        rid: Option<RequestId>,
        op: KvOp,
    ) -> io::Result<CommandResult> {
        if let Some(rid) = rid {
            if let Some(r) = self.sessions.seen(&rid) {
                return Ok(r.clone());
            }
        }
        let res = match op {
            KvOp::Put { key, value } => {
                p.set(&key, Some(value))?;
                CommandResult::Done
            }
            KvOp::Delete { key } => {
                let existed = p.exists(&key)?;
                if existed {
                    p.set(&key, None)?;
                }
                CommandResult::Deleted { existed }
            }
            KvOp::Cas { key, expected, new } => {
                let current = p.get(&key)?;
                if current == expected {
                    p.set(&key, new)?;
                    CommandResult::Cas { succeeded: true, current: None }
                } else {
                    CommandResult::Cas { succeeded: false, current }
                }
            }
            KvOp::Batch(ops) => {
                for (k, v) in ops {
                    p.set(&k, v)?;
                }
                CommandResult::Done
            }
        };
        if let Some(rid) = rid {
            self.sessions.record(index, rid, &res);
        }
        self.sessions.expire(index);
        Ok(res)
    }

    /// Commits what `p` holds with the state as it now is.
    fn commit(&mut self, p: &mut Pending<'_>, membership_changed: bool, meta_changed: bool) {
        let mut batch = self.store.batch();
        let ks = &self.store.ks;
        for w in self.sessions.take_writes() {
            let (k, v) = match w {
                SessionWrite::Client(c, m) => {
                    (data_key(self.group, p.gen, KIND_CLIENT, &c.to_be_bytes()), m.map(|m| encode(&m)))
                }
                SessionWrite::Result(c, seq, r) => {
                    let mut id = c.to_be_bytes().to_vec();
                    id.extend_from_slice(&seq.to_be_bytes());
                    (data_key(self.group, p.gen, KIND_RESULT, &id), r.map(|r| encode(&r)))
                }
            };
            p.writes.insert(k, v);
        }
        for (k, v) in std::mem::take(&mut p.writes) {
            match v {
                Some(v) => batch.insert(ks, k, v),
                None => batch.remove(ks, k),
            }
        }
        self.state.keys = p.keys;
        batch.insert(ks, head_key(self.group, TAG_STATE), encode(&self.state));
        if membership_changed {
            batch.insert(ks, head_key(self.group, TAG_MEMBERSHIP), encode(&self.membership));
        }
        if meta_changed {
            batch.insert(ks, head_key(self.group, TAG_META), encode(&self.meta));
        }
        fail::fail_point!("storage::sm_write");
        if let Err(e) = batch.commit() {
            fail_stop("state machine write", Some(self.group), self.wal.dir(), &e);
        }
        p.bytes = 0;
    }
}

/// Builds snapshots: an engine view of the state, written out only when it is
/// read (see [`snapshot`]).
pub struct SnapshotBuilder {
    group: GroupId,
    store: SmStore,
    wal: Wal,
    tmp_dir: PathBuf,
    built: Arc<AtomicU64>,
}

/// A snapshot of `group`'s current state: its meta and a view of its data.
fn current_snapshot(store: &SmStore, group: GroupId, tmp_dir: &Path) -> io::Result<Snapshot<TypeConfig>> {
    let view = store.db.snapshot();
    let st = read_state(&view, &store.ks, group)?;
    let last_membership = read_membership(&view, &store.ks, group)?;
    let meta = SnapshotMeta {
        last_log_id: st.last_applied,
        last_membership,
        snapshot_id: snapshot_id(group, st.last_applied),
    };
    let data = SnapshotData::pending(PendingView { store: store.clone(), view, group, tmp_dir: tmp_dir.to_path_buf() });
    Ok(Snapshot { meta, snapshot: Box::new(data) })
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        fail::fail_point!("storage::snapshot_build");
        let snap =
            current_snapshot(&self.store, self.group, &self.tmp_dir).map_err(|e| snap_err(None, ErrorVerb::Read, e))?;
        // The state it covers is committed to the engine: the log may be
        // purged up to it.
        self.wal
            .state_saved(self.group, snap.meta.last_log_id.map(|l| l.index))
            .map_err(|e| snap_err(Some(&snap.meta), ErrorVerb::Write, e))?;
        self.built.fetch_add(1, Ordering::Relaxed);
        Ok(snap)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, crate::types::StoredMembership), StorageError> {
        Ok((self.state.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let start = std::time::Instant::now();
        let store = self.store.clone();
        let mut p = Pending {
            store: &store,
            group: self.group,
            gen: self.state.gen,
            writes: BTreeMap::new(),
            bytes: 0,
            keys: self.state.keys,
        };
        let mut out = Vec::new();
        let (mut membership_changed, mut meta_changed, mut any_meta) = (false, false, false);
        for e in entries {
            self.state.last_applied = Some(e.log_id);
            let res = match e.payload {
                EntryPayload::Blank => CommandResult::Done,
                EntryPayload::Membership(m) => {
                    fail::fail_point!("storage::membership");
                    self.membership = crate::types::StoredMembership::new(Some(e.log_id), m);
                    membership_changed = true;
                    CommandResult::Done
                }
                EntryPayload::Normal(crate::types::Command::Kv { request_id, op }) => {
                    self.apply_kv(&mut p, e.log_id.index, request_id, op).map_err(|e| sm_err(ErrorVerb::Read, e))?
                }
                EntryPayload::Normal(crate::types::Command::Meta(op)) => {
                    meta_changed = true;
                    CommandResult::Meta(op.apply(&mut self.meta))
                }
            };
            out.push(res);
            if p.bytes >= APPLY_BATCH_BYTES {
                self.commit(&mut p, membership_changed, meta_changed);
                any_meta |= meta_changed;
                (membership_changed, meta_changed) = (false, false);
            }
        }
        self.commit(&mut p, membership_changed, meta_changed);
        if any_meta || meta_changed {
            self.publish_meta();
        }
        crate::metrics::observe_raft_apply(start.elapsed().as_secs_f64());
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            group: self.group,
            store: self.store.clone(),
            wal: self.wal.clone(),
            tmp_dir: self.tmp_dir.clone(),
            built: self.snapshots_built.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        let f = snapshot::unlinked_temp(&self.tmp_dir).map_err(|e| snap_err(None, ErrorVerb::Write, e))?;
        Ok(Box::new(SnapshotData::file(f)))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, data: Box<SnapshotData>) -> Result<(), StorageError> {
        fail::fail_point!("storage::snapshot_install");
        let file = data.into_file().await.map_err(|e| snap_err(Some(meta), ErrorVerb::Read, e))?;
        let (store, group, last, membership) =
            (self.store.clone(), self.group, meta.last_log_id, meta.last_membership.clone());
        let (state, cluster_meta) =
            tokio::task::spawn_blocking(move || snapshot::install(&store, group, file, last, &membership))
                .await
                .map_err(|e| snap_err(Some(meta), ErrorVerb::Write, io::Error::other(e)))?
                .map_err(|e| {
                    tracing::error!(group = self.group, error = %e, "cannot install snapshot");
                    snap_err(Some(meta), ErrorVerb::Write, e)
                })?;
        self.state = state;
        self.membership = meta.last_membership.clone();
        self.meta = cluster_meta;
        self.sessions = load_sessions(&self.store, self.group, state.gen).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        // Committed to the engine before openraft purges the log up to it.
        self.wal
            .state_saved(self.group, state.last_applied.map(|l| l.index))
            .map_err(|e| snap_err(Some(meta), ErrorVerb::Write, e))?;
        self.publish_meta();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        if self.state.last_applied.is_none() {
            return Ok(None);
        }
        current_snapshot(&self.store, self.group, &self.tmp_dir)
            .map(Some)
            .map_err(|e| snap_err(None, ErrorVerb::Read, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::wal::WalOptions;
    use crate::types::Command;
    use openraft::CommittedLeaderId;

    fn entry(index: u64, rid: Option<RequestId>, op: KvOp) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command::Kv { request_id: rid, op }),
        }
    }

    fn put(index: u64, k: &str, v: &str) -> Entry {
        entry(index, None, KvOp::Put { key: k.into(), value: v.into() })
    }

    fn open(dir: &Path, group: GroupId) -> (Wal, StateMachine) {
        let wal = Wal::open(&dir.join("db"), WalOptions::default()).unwrap();
        let sm = StateMachine::open(group, wal.clone(), &dir.join("tmp"), None).unwrap();
        (wal, sm)
    }

    fn get(sm: &StateMachine, k: &str) -> Option<String> {
        sm.reader().get(k.as_bytes()).unwrap().0.map(|v| String::from_utf8(v).unwrap())
    }

    #[tokio::test]
    async fn state_is_read_back_from_the_engine_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let rid = RequestId { client_id: 7, seq: 1, first_unacked: 1 };
        {
            let (wal, mut sm) = open(dir.path(), 3);
            let out = sm
                .apply(vec![
                    put(1, "a", "1"),
                    put(2, "b", "2"),
                    put(3, "a", "3"),
                    entry(4, None, KvOp::Delete { key: b"b".to_vec() }),
                    entry(5, Some(rid), KvOp::Cas { key: b"c".to_vec(), expected: None, new: Some(b"x".to_vec()) }),
                ])
                .await
                .unwrap();
            assert_eq!(out[3], CommandResult::Deleted { existed: true });
            assert_eq!(out[4], CommandResult::Cas { succeeded: true, current: None });
            wal.sync().await.unwrap();
            wal.close();
        }
        let (_wal, mut sm) = open(dir.path(), 3);
        assert_eq!(sm.applied_state().await.unwrap().0.map(|l| l.index), Some(5));
        assert_eq!(get(&sm, "a").as_deref(), Some("3"));
        assert_eq!(get(&sm, "b"), None);
        assert_eq!(sm.reader().get(b"a").unwrap().1, 5, "a read reports the index of the state it read");
        assert_eq!(sm.reader().keys().unwrap(), 2);
        // The exactly-once table came back too: the retried CAS is not applied again.
        let out = sm
            .apply(vec![entry(
                6,
                Some(rid),
                KvOp::Cas { key: b"c".to_vec(), expected: None, new: Some(b"y".to_vec()) },
            )])
            .await
            .unwrap();
        assert_eq!(out[0], CommandResult::Cas { succeeded: true, current: None });
        assert_eq!(get(&sm, "c").as_deref(), Some("x"));
        let (items, more) = sm.reader().scan(b"", b"", 10).unwrap();
        assert_eq!(items.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), vec![b"a".to_vec(), b"c".to_vec()]);
        assert!(!more);
    }

    #[tokio::test]
    async fn a_snapshot_streams_from_one_engine_into_another_and_replaces_its_keys() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (_w1, mut leader) = open(d1.path(), 2);
        let (_w2, mut follower) = open(d2.path(), 2);
        let big = "v".repeat(300_000);
        let mut entries: Vec<Entry> = (1..=40).map(|i| put(i, &format!("k{i:03}"), &big)).collect();
        entries.push(entry(
            41,
            Some(RequestId { client_id: 9, seq: 4, first_unacked: 4 }),
            KvOp::Delete { key: b"k001".to_vec() },
        ));
        leader.apply(entries).await.unwrap();
        follower.apply(vec![put(1, "stale", "x")]).await.unwrap();

        let built = leader.get_snapshot_builder().await.build_snapshot().await.unwrap();
        // Writes after the build are not in the snapshot taken from it.
        leader.apply(vec![put(42, "later", "x")]).await.unwrap();
        let data = built.snapshot.into_file().await.unwrap();
        let mut recv = follower.begin_receiving_snapshot().await.unwrap();
        *recv = SnapshotData::file(data);
        follower.install_snapshot(&built.meta, recv).await.unwrap();

        assert_eq!(follower.applied_state().await.unwrap().0.map(|l| l.index), Some(41));
        assert_eq!(follower.reader().keys().unwrap(), 39);
        assert_eq!(get(&follower, "stale"), None, "keys not in the snapshot are gone");
        assert_eq!(get(&follower, "later"), None);
        assert_eq!(get(&follower, "k001"), None);
        assert_eq!(get(&follower, "k040").map(|v| v.len()), Some(300_000));
        // The exactly-once table came with it.
        let out = follower
            .apply(vec![entry(
                42,
                Some(RequestId { client_id: 9, seq: 4, first_unacked: 4 }),
                KvOp::Delete { key: b"k002".to_vec() },
            )])
            .await
            .unwrap();
        assert_eq!(out[0], CommandResult::Deleted { existed: true });
        assert!(get(&follower, "k002").is_some(), "a retried delete is not applied again");
        // Only one generation of data is left.
        let st = follower.store.state(2).unwrap();
        let all = follower.store.ks.prefix(head_key(2, super::super::sm_store::TAG_DATA)).count();
        let current = follower.store.ks.prefix(gen_prefix(2, st.gen)).count();
        assert_eq!(all, current);
    }

    #[tokio::test]
    async fn leftovers_of_an_install_cut_short_are_deleted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (wal, mut sm) = open(dir.path(), 5);
            sm.apply(vec![put(1, "a", "1")]).await.unwrap();
            // What an install that crashed before its switch leaves.
            let mut b = sm.store.batch();
            b.insert(&sm.store.ks, data_key(5, sm.state.gen + 1, KIND_KV, b"staged"), b"x".to_vec());
            b.commit().unwrap();
            wal.sync().await.unwrap();
            wal.close();
        }
        let (_wal, sm) = open(dir.path(), 5);
        assert_eq!(get(&sm, "a").as_deref(), Some("1"));
        assert_eq!(sm.store.ks.prefix(gen_prefix(5, sm.state.gen + 1)).count(), 0);
    }
}
