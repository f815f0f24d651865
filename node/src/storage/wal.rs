//! The Raft logs of every group of a node, in one embedded storage engine
//! (fjall: an LSM tree with a single journal), with group commit.
//!
//! Layout (keyspace `log`): `group:u64be ++ index:u64be` -> versioned entry.
//! Keyspace `raft`: `group:u64be ++ tag` -> the group's vote, committed id
//! and purged id. Values start with a format byte ([`FORMAT`]).
//!
//! Every change is committed to the engine by the caller (so it is readable
//! at once, as openraft requires) and reaches the OS with that commit; the
//! writer thread then makes everything committed so far durable with one
//! journal fsync and completes the callers queued meanwhile: appends and votes
//! of every group that arrive together share an fsync, and those arriving
//! during a flush form the next one. Reads come from the engine (memtable,
//! block cache, then disk); memory holds only a few ids per group.
//!
//! A failed write or fsync stops the process ([`fail_stop`]): the engine may
//! have lost what it acknowledged to the OS, so the node restarts and
//! recovers from what the disk holds, never from memory.
//!
//! Purges wait for the state machine: a group's log is purged only up to
//! the index its state machine has committed to the engine
//! ([`Wal::state_saved`]); a purge openraft asks for earlier (it purges as
//! soon as it hands a snapshot install over) is deferred until then. The
//! state machines live in the same engine (keyspace `sm`, see
//! [`super::sm_store`]): a purge committed after the state it relies on sits
//! after it in the one journal, so it never reaches the disk without it.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use openraft::storage::LogFlushed;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use super::entry_cache::EntryCache;
use crate::types::{Entry, GroupId, LogId, TypeConfig, Vote};

/// Format byte at the start of every stored value.
pub const FORMAT: u8 = 1;

const TAG_VOTE: u8 = 1;
const TAG_COMMITTED: u8 = 2;
const TAG_PURGED: u8 = 3;

/// The engine refuses a smaller journal budget.
pub const MIN_JOURNAL_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Block cache of the engine, in bytes.
    pub cache_bytes: u64,
    /// Largest memtable of a keyspace, in bytes.
    pub memtable_bytes: u64,
    /// Largest total size of the journal files, in bytes (at least 64 MiB).
    pub journal_bytes: u64,
    /// fsync before acknowledging. Only tests of non-durable paths turn it off.
    pub fsync: bool,
    /// The newest log entries kept in memory, in bytes across groups
    /// ([`super::entry_cache`]).
    pub entry_cache_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 64 << 20,
            memtable_bytes: 16 << 20,
            journal_bytes: 128 << 20,
            fsync: true,
            entry_cache_bytes: 16 << 20,
        }
    }
}

/// What memory holds of one group's log: a few ids.
#[derive(Debug, Default, Clone)]
pub struct GroupLog {
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    /// `committed` changed since it was last written (it is written with
    /// the group's next append or vote, see [`Wal::save_committed`]).
    committed_unsaved: bool,
    pub purged: Option<LogId>,
    /// Id of the last entry stored (None if the log holds no entry).
    pub last: Option<LogId>,
    /// Index up to which the state machine's state is in the engine.
    snapshot_index: Option<u64>,
    /// A purge waiting for state that covers it.
    deferred_purge: Option<LogId>,
}

impl GroupLog {
    pub fn last_log_id(&self) -> Option<LogId> {
        match (self.last, self.purged) {
            (Some(l), Some(p)) if p.index >= l.index => Some(p),
            (Some(l), _) => Some(l),
            (None, p) => p,
        }
    }
}

/// Who to tell once what was committed is durable.
enum Done {
    Flushed(LogFlushed<TypeConfig>),
    Notify(oneshot::Sender<io::Result<()>>),
}

impl Done {
    fn complete(self) {
        match self {
            Done::Flushed(cb) => cb.log_io_completed(Ok(())),
            Done::Notify(tx) => {
                let _ = tx.send(Ok(()));
            }
        }
    }
}

/// Counters for `/metrics`.
#[derive(Default, Debug)]
pub struct WalStats {
    pub fsyncs: AtomicU64,
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    /// Not used since the log lives in the engine (it compacts on its own);
    /// kept so the metric keeps its name.
    pub segments_compacted: AtomicU64,
}

struct Shared {
    dir: PathBuf,
    db: Database,
    log: Keyspace,
    raft: Keyspace,
    sm: Keyspace,
    groups: Mutex<HashMap<GroupId, GroupLog>>,
    /// Changed only while `groups` is held, right after the engine.
    cache: Mutex<EntryCache>,
    tx: Mutex<Option<mpsc::Sender<Done>>>,
    stats: WalStats,
}

/// A handle to the node's Raft logs; cheap to clone.
#[derive(Clone)]
pub struct Wal {
    shared: Arc<Shared>,
}

/// Errors opening the log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("storage engine I/O error in {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("storage engine in {path} cannot be opened: {what}; refusing to start")]
    Engine { path: PathBuf, what: String },
    #[error("storage engine in {path} holds an undecodable record ({what}); refusing to start")]
    Corrupt { path: PathBuf, what: String },
}

/// Stops the process after a failed write or fsync: what the engine holds in
/// memory can no longer be trusted to match the disk.
pub fn fail_stop(what: &str, group: Option<GroupId>, path: &Path, err: &dyn std::fmt::Display) -> ! {
    tracing::error!(group = ?group, path = %path.display(), error = %err, "{what} failed; stopping the node (it recovers from disk at restart)");
    eprintln!("keyraft-node: {what} failed (group {group:?}, {}): {err}; aborting", path.display());
    std::process::abort()
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` (and missing parents), fsyncing each new directory into its
/// parent so the creation survives a crash.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durable(parent)?;
    }
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![FORMAT];
    bincode::serialize_into(&mut out, v).expect("stored values always serialize");
    out
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&FORMAT, body)) => bincode::deserialize(body).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unknown format version {v}")),
        None => Err("empty value".into()),
    }
}

fn log_key(group: GroupId, index: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

fn raft_key(group: GroupId, tag: u8) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8] = tag;
    k
}

fn key_group(k: &[u8]) -> GroupId {
    u64::from_be_bytes(k[..8].try_into().expect("keys start with a group id"))
}

fn engine_err(dir: &Path) -> impl FnOnce(fjall::Error) -> WalError + '_ {
    move |e| WalError::Engine { path: dir.to_path_buf(), what: e.to_string() }
}

impl Wal {
    /// Opens (or creates) the engine in `dir`, reads every group's ids and
    /// starts the writer.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<Wal, WalError> {
        create_dir_durable(dir).map_err(|source| WalError::Io { path: dir.to_path_buf(), source })?;
        let db = Database::builder(dir)
            .cache_size(opts.cache_bytes)
            .max_journaling_size(opts.journal_bytes.max(MIN_JOURNAL_BYTES))
            .open()
            .map_err(engine_err(dir))?;
        let ks = |name: &str| {
            let mt = opts.memtable_bytes;
            db.keyspace(name, move || KeyspaceCreateOptions::default().max_memtable_size(mt))
        };
        let log = ks("log").map_err(engine_err(dir))?;
        let raft = ks("raft").map_err(engine_err(dir))?;
        // Values of 1 KiB and more go to blob files: compaction then moves
        // keys, not large values.
        let mt = opts.memtable_bytes;
        let sm = db
            .keyspace(super::sm_store::SM_KEYSPACE, move || {
                KeyspaceCreateOptions::default()
                    .max_memtable_size(mt)
                    .with_kv_separation(Some(fjall::KvSeparationOptions::default()))
            })
            .map_err(engine_err(dir))?;
        let corrupt = |what: String| WalError::Corrupt { path: dir.to_path_buf(), what };

        let mut groups: HashMap<GroupId, GroupLog> = HashMap::new();
        for kv in raft.iter() {
            let (k, v) = kv.into_inner().map_err(engine_err(dir))?;
            if k.len() != 9 {
                return Err(corrupt(format!("raft key of {} bytes", k.len())));
            }
            let g = groups.entry(key_group(&k)).or_default();
            match k[8] {
                TAG_VOTE => g.vote = Some(decode(&v).map_err(corrupt)?),
                TAG_COMMITTED => g.committed = decode(&v).map_err(corrupt)?,
                TAG_PURGED => g.purged = Some(decode(&v).map_err(corrupt)?),
                t => return Err(corrupt(format!("unknown raft record tag {t}"))),
            }
        }
        // The last entry of each group that has any: jump from group to group.
        let mut next = 0u64;
        loop {
            let Some(kv) = log.range(log_key(next, 0)..).next() else { break };
            let k = kv.key().map_err(engine_err(dir))?;
            let group = key_group(&k);
            let last =
                log.range(log_key(group, 0)..=log_key(group, u64::MAX)).next_back().expect("the group has an entry");
            let v = last.value().map_err(engine_err(dir))?;
            let e: Entry = decode(&v).map_err(corrupt)?;
            groups.entry(group).or_default().last = Some(e.log_id);
            match group.checked_add(1) {
                Some(n) => next = n,
                None => break,
            }
        }

        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            db,
            log,
            raft,
            sm,
            groups: Mutex::new(groups),
            cache: Mutex::new(EntryCache::new(usize::try_from(opts.entry_cache_bytes).unwrap_or(usize::MAX))),
            tx: Mutex::new(Some(tx)),
            stats: WalStats::default(),
        });
        // Fails the open if the engine's journal is not where the writer
        // looks for it (see `active_journal`).
        active_journal(dir).map_err(|source| WalError::Io { path: dir.to_path_buf(), source })?;
        let writer =
            Writer { shared: Arc::downgrade(&shared), fsync: opts.fsync, dir: dir.to_path_buf(), journal: None };
        thread::Builder::new()
            .name("keyraft-log".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| WalError::Io { path: dir.to_path_buf(), source })?;
        Ok(Wal { shared })
    }

    /// The state machines' part of the engine.
    pub fn sm_store(&self) -> super::sm_store::SmStore {
        super::sm_store::SmStore { db: self.shared.db.clone(), ks: self.shared.sm.clone() }
    }

    /// Directory of the engine.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    pub fn stats(&self) -> &WalStats {
        &self.shared.stats
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<GroupId, GroupLog>> {
        self.shared.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cache(&self) -> MutexGuard<'_, EntryCache> {
        self.shared.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn commit(&self, group: GroupId, batch: fjall::OwnedWriteBatch) {
        fail::fail_point!("storage::log_write");
        if let Err(e) = batch.commit() {
            fail_stop("log write", Some(group), &self.shared.dir, &e);
        }
    }

    /// Queues `done` to complete once everything committed so far is durable.
    fn after_sync(&self, done: Done) {
        let tx = self.shared.tx.lock().unwrap_or_else(|e| e.into_inner());
        match tx.as_ref() {
            Some(tx) => {
                if tx.send(done).is_err() {
                    fail_stop("log sync (writer gone)", None, &self.shared.dir, &"the writer thread stopped");
                }
            }
            // Closed at shutdown: nothing will be acknowledged any more.
            None => drop(done),
        }
    }

    async fn durable(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.after_sync(Done::Notify(tx));
        rx.await.unwrap_or_else(|_| Err(io::Error::other("the log is closed")))
    }

    /// Reads the entries of `group` in `range`, from the engine.
    pub fn entries<RB: RangeBounds<u64>>(&self, group: GroupId, range: RB) -> io::Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let cached_end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        if let Some(hit) = self.cache().get(group, start, cached_end) {
            return Ok(hit);
        }
        let end = match range.end_bound() {
            Bound::Included(&e) => Bound::Included(log_key(group, e)),
            Bound::Excluded(&e) => Bound::Excluded(log_key(group, e)),
            Bound::Unbounded => Bound::Included(log_key(group, u64::MAX)),
        };
        let mut out = Vec::new();
        for kv in self.shared.log.range::<[u8; 16], _>((Bound::Included(log_key(group, start)), end)) {
            let v = kv.value().map_err(io::Error::other)?;
            out.push(decode(&v).map_err(io::Error::other)?);
        }
        Ok(out)
    }

    pub fn append(&self, group: GroupId, entries: Vec<Entry>, cb: LogFlushed<TypeConfig>) {
        let Some(last) = entries.last().map(|e| e.log_id) else {
            cb.log_io_completed(Ok(()));
            return;
        };
        let mut batch = self.shared.db.batch();
        let mut bytes = 0u64;
        let mut sizes = Vec::with_capacity(entries.len());
        for e in &entries {
            let v = encode(e);
            bytes += v.len() as u64;
            sizes.push(v.len());
            batch.insert(&self.shared.log, log_key(group, e.log_id.index), v);
        }
        let n = entries.len() as u64;
        // The summary and the engine change together, in the caller's order.
        let mut groups = self.lock();
        let g = groups.entry(group).or_default();
        self.take_committed(group, g, &mut batch);
        self.commit(group, batch);
        g.last = Some(last);
        self.cache().append(group, entries.into_iter().zip(sizes));
        drop(groups);
        self.shared.stats.records.fetch_add(n, Ordering::Relaxed);
        self.shared.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.after_sync(Done::Flushed(cb));
    }

    pub async fn save_vote(&self, group: GroupId, vote: Vote) -> io::Result<()> {
        fail::fail_point!("storage::vote_save");
        let mut batch = self.shared.db.batch();
        batch.insert(&self.shared.raft, raft_key(group, TAG_VOTE), encode(&vote));
        {
            let mut groups = self.lock();
            let g = groups.entry(group).or_default();
            self.take_committed(group, g, &mut batch);
            self.commit(group, batch);
            g.vote = Some(vote);
        }
        self.durable().await
    }

    /// Records the committed id; it reaches the engine with the group's next
    /// append or vote, not in a write of its own (one engine commit per
    /// commit-index advance cost as much as the append it followed). Losing
    /// it costs nothing: the state machine keeps its applied index in the
    /// same engine, and the leader tells a restarted replica what is
    /// committed again.
    pub async fn save_committed(&self, group: GroupId, committed: Option<LogId>) -> io::Result<()> {
        let mut groups = self.lock();
        let g = groups.entry(group).or_default();
        g.committed = committed;
        g.committed_unsaved = true;
        Ok(())
    }

    /// Adds the committed id to `batch` if it changed since it was written.
    fn take_committed(&self, group: GroupId, g: &mut GroupLog, batch: &mut fjall::OwnedWriteBatch) {
        if std::mem::take(&mut g.committed_unsaved) {
            batch.insert(&self.shared.raft, raft_key(group, TAG_COMMITTED), encode(&g.committed));
        }
    }

    /// Removes the entries with index >= `since`.
    pub async fn truncate(&self, group: GroupId, since: u64) -> io::Result<()> {
        let mut batch = self.shared.db.batch();
        let mut new_last = None;
        for kv in self.shared.log.range(log_key(group, since)..=log_key(group, u64::MAX)) {
            let k = kv.key().map_err(io::Error::other)?;
            batch.remove(&self.shared.log, k);
        }
        if since > 0 {
            if let Some(kv) = self.shared.log.range(log_key(group, 0)..log_key(group, since)).next_back() {
                let e: Entry = decode(&kv.value().map_err(io::Error::other)?).map_err(io::Error::other)?;
                new_last = Some(e.log_id);
            }
        }
        {
            let mut groups = self.lock();
            self.commit(group, batch);
            groups.entry(group).or_default().last = new_last;
            self.cache().truncate(group, since);
        }
        self.durable().await
    }

    /// Removes the entries with index <= `upto.index`, once the state machine
    /// has committed state that covers them.
    pub fn purge(&self, group: GroupId, upto: LogId) -> io::Result<()> {
        let mut groups = self.lock();
        let g = groups.entry(group).or_default();
        if g.snapshot_index.is_none_or(|s| s < upto.index) {
            tracing::debug!(group, upto = upto.index, "purge deferred until state covering it is saved");
            if g.deferred_purge.is_none_or(|d| d.index < upto.index) {
                g.deferred_purge = Some(upto);
            }
            return Ok(());
        }
        self.purge_locked(group, g, upto)
    }

    fn purge_locked(&self, group: GroupId, g: &mut GroupLog, upto: LogId) -> io::Result<()> {
        fail::fail_point!("storage::log_purge");
        if g.purged.is_some_and(|p| p.index >= upto.index) {
            return Ok(());
        }
        let from = g.purged.map_or(0, |p| p.index + 1);
        let mut batch = self.shared.db.batch();
        for kv in self.shared.log.range(log_key(group, from)..=log_key(group, upto.index)) {
            let k = kv.key().map_err(io::Error::other)?;
            batch.remove(&self.shared.log, k);
        }
        batch.insert(&self.shared.raft, raft_key(group, TAG_PURGED), encode(&upto));
        self.commit(group, batch);
        self.cache().purge(group, upto.index);
        g.purged = Some(upto);
        if g.last.is_some_and(|l| l.index <= upto.index) {
            g.last = None;
        }
        Ok(())
    }

    /// The state machine of `group` has committed its state up to `index` to
    /// the engine: purges up to it are allowed now (and a deferred one runs).
    pub fn state_saved(&self, group: GroupId, index: Option<u64>) -> io::Result<()> {
        let mut groups = self.lock();
        let g = groups.entry(group).or_default();
        if index > g.snapshot_index {
            g.snapshot_index = index;
        }
        if let Some(d) = g.deferred_purge {
            if g.snapshot_index.is_some_and(|s| s >= d.index) {
                g.deferred_purge = None;
                return self.purge_locked(group, g, d);
            }
        }
        Ok(())
    }

    /// Forgets a group whose replica left this node.
    pub async fn drop_group(&self, group: GroupId) -> io::Result<()> {
        let mut batch = self.shared.db.batch();
        for kv in self.shared.log.range(log_key(group, 0)..=log_key(group, u64::MAX)) {
            batch.remove(&self.shared.log, kv.key().map_err(io::Error::other)?);
        }
        for tag in [TAG_VOTE, TAG_COMMITTED, TAG_PURGED] {
            batch.remove(&self.shared.raft, raft_key(group, tag));
        }
        {
            let mut groups = self.lock();
            self.commit(group, batch);
            groups.remove(&group);
            self.cache().remove_group(group);
        }
        self.durable().await
    }

    /// Runs `f` on what memory holds of a group's log (an empty one if the
    /// group is new).
    pub fn with_group<R>(&self, group: GroupId, f: impl FnOnce(&GroupLog) -> R) -> R {
        let groups = self.lock();
        match groups.get(&group) {
            Some(g) => f(g),
            None => f(&GroupLog::default()),
        }
    }

    /// Groups that have anything in the log, in id order.
    pub fn groups(&self) -> Vec<GroupId> {
        let mut v: Vec<_> = self.lock().keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Waits until everything committed so far is on disk.
    pub async fn sync(&self) -> io::Result<()> {
        self.durable().await
    }

    /// Stops the writer after it has made what is queued durable.
    pub fn close(&self) {
        self.shared.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

struct Writer {
    shared: std::sync::Weak<Shared>,
    fsync: bool,
    dir: PathBuf,
    /// The active journal file, opened for fsync.
    journal: Option<(PathBuf, File)>,
}

/// The engine's active journal: the highest-numbered `N.jnl` in its
/// directory. (The engine's own `persist` fsyncs while holding the lock every
/// commit needs; syncing the file through another descriptor lets commits go
/// on meanwhile. Each commit has reached the OS when it returns, and a
/// journal is fsynced by the engine when it is sealed, so syncing the active
/// one after taking the queue covers every commit queued.)
fn active_journal(dir: &Path) -> io::Result<PathBuf> {
    let mut best: Option<(u64, PathBuf)> = None;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(n) = name.to_str().and_then(|n| n.strip_suffix(".jnl")).and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        if best.as_ref().is_none_or(|(b, _)| n > *b) {
            best = Some((n, e.path()));
        }
    }
    best.map(|(_, p)| p)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the storage engine has no journal file (*.jnl)"))
}

/// The journal the engine rotates `path` (`N.jnl`) to: `N+1.jnl`.
fn next_journal(path: &Path) -> Option<PathBuf> {
    let n: u64 = path.file_name()?.to_str()?.strip_suffix(".jnl")?.parse().ok()?;
    Some(path.with_file_name(format!("{}.jnl", n.checked_add(1)?)))
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Done>) {
        while let Ok(first) = rx.recv() {
            // Everything queued now was committed before it was queued: one
            // fsync makes all of it durable.
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            self.sync();
            for d in batch {
                d.complete();
            }
        }
        self.sync();
    }

    fn sync(&mut self) {
        let Some(shared) = self.shared.upgrade() else { return };
        fail::fail_point!("storage::fsync");
        if self.fsync {
            let start = std::time::Instant::now();
            if let Err(e) = self.sync_journal() {
                fail_stop("log fsync", None, &self.dir, &e);
            }
            crate::metrics::observe_fsync(start.elapsed().as_secs_f64());
        } else if let Err(e) = shared.db.persist(PersistMode::Buffer) {
            fail_stop("log write", None, &self.dir, &e);
        }
        shared.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
    }

    fn sync_journal(&mut self) -> io::Result<()> {
        // The engine rotates from `N.jnl` to `N+1.jnl` only: while that does
        // not exist, `N` is still the active journal (one stat instead of
        // reading the directory at every fsync).
        let rotated = match &self.journal {
            Some((p, _)) => next_journal(p).is_none_or(|n| n.exists()),
            None => true,
        };
        if !rotated {
            let (_, f) = self.journal.as_ref().expect("checked");
            return f.sync_data();
        }
        let path = active_journal(&self.dir)?;
        if self.journal.as_ref().is_none_or(|(p, _)| *p != path) {
            let f = File::open(&path)?;
            // A new journal's directory entry must be durable too.
            sync_dir(&self.dir)?;
            self.journal = Some((path, f));
        }
        let (_, f) = self.journal.as_ref().expect("just set");
        f.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(crate::types::Command::Kv {
                request_id: None,
                op: crate::types::KvOp::Put { key: format!("k{index}").into_bytes(), value: vec![7; 100] },
            }),
        }
    }

    /// Appends without a LogFlushed (one cannot be built outside openraft).
    async fn append(wal: &Wal, group: GroupId, entries: Vec<Entry>) {
        let mut batch = wal.shared.db.batch();
        let last = entries.last().unwrap().log_id;
        for e in &entries {
            batch.insert(&wal.shared.log, log_key(group, e.log_id.index), encode(e));
        }
        wal.commit(group, batch);
        wal.lock().entry(group).or_default().last = Some(last);
        wal.durable().await.unwrap();
    }

    fn indexes(wal: &Wal, group: GroupId) -> Vec<u64> {
        wal.entries(group, ..).unwrap().iter().map(|e| e.log_id.index).collect()
    }

    #[tokio::test]
    async fn reopens_with_the_same_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
            append(&wal, 1, (1..=10).map(|i| entry(1, i)).collect()).await;
            append(&wal, 2, (1..=3).map(|i| entry(1, i)).collect()).await;
            wal.truncate(1, 8).await.unwrap();
            wal.save_vote(2, Vote::new(3, 9)).await.unwrap();
            wal.state_saved(1, Some(4)).unwrap();
            wal.purge(1, LogId::new(CommittedLeaderId::new(1, 1), 4)).unwrap();
            wal.sync().await.unwrap();
            wal.close();
        }
        let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(indexes(&wal, 1), vec![5, 6, 7]);
        assert_eq!(wal.entries(1, 6..7).unwrap().len(), 1);
        wal.with_group(1, |g| {
            assert_eq!(g.purged.map(|p| p.index), Some(4));
            assert_eq!(g.last_log_id().map(|l| l.index), Some(7));
        });
        wal.with_group(2, |g| assert_eq!(g.vote, Some(Vote::new(3, 9))));
        assert_eq!(wal.groups(), vec![1, 2]);
    }

    #[tokio::test]
    async fn purge_waits_for_a_durable_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
        append(&wal, 1, (1..=10).map(|i| entry(1, i)).collect()).await;
        wal.purge(1, LogId::new(CommittedLeaderId::new(1, 1), 6)).unwrap();
        assert_eq!(indexes(&wal, 1), (1..=10).collect::<Vec<_>>(), "no snapshot yet: nothing purged");
        wal.state_saved(1, Some(5)).unwrap();
        assert_eq!(indexes(&wal, 1).len(), 10, "the snapshot does not cover the purge yet");
        wal.state_saved(1, Some(6)).unwrap();
        assert_eq!(indexes(&wal, 1), (7..=10).collect::<Vec<_>>());
        wal.with_group(1, |g| assert_eq!(g.purged.map(|p| p.index), Some(6)));
    }

    #[tokio::test]
    async fn purging_everything_keeps_the_last_log_id() {
        let dir = tempfile::tempdir().unwrap();
        {
            let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
            append(&wal, 3, (1..=4).map(|i| entry(2, i)).collect()).await;
            wal.state_saved(3, Some(4)).unwrap();
            wal.purge(3, LogId::new(CommittedLeaderId::new(2, 1), 4)).unwrap();
            wal.sync().await.unwrap();
            wal.close();
        }
        let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert!(indexes(&wal, 3).is_empty());
        wal.with_group(3, |g| assert_eq!(g.last_log_id().map(|l| l.index), Some(4)));
    }

    #[tokio::test]
    async fn dropped_group_is_gone_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
            append(&wal, 1, vec![entry(1, 1)]).await;
            append(&wal, 2, vec![entry(1, 1)]).await;
            wal.save_vote(2, Vote::new(1, 1)).await.unwrap();
            wal.drop_group(2).await.unwrap();
            wal.close();
        }
        let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(wal.groups(), vec![1]);
    }

    #[test]
    fn values_of_an_unknown_format_are_errors() {
        let v = encode(&Vote::new(1, 2));
        assert_eq!(decode::<Vote>(&v).unwrap(), Vote::new(1, 2));
        let mut w = v.clone();
        w[0] = 9;
        assert!(decode::<Vote>(&w).unwrap_err().contains("unknown format version 9"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
        let mut tasks = Vec::new();
        for g in 0..32u64 {
            let wal = wal.clone();
            tasks.push(tokio::spawn(async move {
                for i in 1..=20 {
                    wal.save_vote(g, Vote::new(i, 1)).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let fsyncs = wal.stats().fsyncs.load(Ordering::Relaxed);
        // 640 durable writes; with group commit far fewer fsyncs are needed.
        assert!(fsyncs < 640, "expected shared fsyncs, got {fsyncs} for 640 writes");
    }
}
