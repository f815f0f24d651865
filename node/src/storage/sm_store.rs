//! The state machines of every group, in the storage engine (keyspace `sm`
//! of the database that holds the logs).
//!
//! Layout, all keys starting with `group:u64be`:
//!
//! | key                                   | value                                  |
//! |---------------------------------------|----------------------------------------|
//! | `group 0x00`                          | [`SmState`]: generation, last applied, key count |
//! | `group 0x01`                          | the last applied membership            |
//! | `group 0x02`                          | the cluster metadata (meta group)      |
//! | `group 0x03 gen:u64be 0x00 key`       | a key's value (raw bytes)              |
//! | `group 0x03 gen:u64be 0x01 client`    | an exactly-once client's marks         |
//! | `group 0x03 gen:u64be 0x02 client seq`| the result of one of its writes        |
//!
//! Records other than raw values start with a format byte (see `wal::encode`).
//! The data of a group lives under its current generation: a snapshot is
//! installed into the next generation, which one small batch then makes
//! current (with the applied index and membership), after which the old
//! generation is deleted. A crash at any step leaves either the old state or
//! the new one; leftovers of other generations are deleted at open.

use std::io;
use std::ops::Bound;

use fjall::{Database, Keyspace, OwnedWriteBatch, Readable};
use serde::{Deserialize, Serialize};

use super::wal::decode;
use crate::meta::ClusterMeta;
use crate::types::{GroupId, LogId, StoredMembership};

/// Name of the engine keyspace holding the state machines.
pub const SM_KEYSPACE: &str = "sm";

pub const TAG_STATE: u8 = 0;
pub const TAG_MEMBERSHIP: u8 = 1;
pub const TAG_META: u8 = 2;
pub const TAG_DATA: u8 = 3;

/// Kinds of data record under a generation.
pub const KIND_KV: u8 = 0;
pub const KIND_CLIENT: u8 = 1;
pub const KIND_RESULT: u8 = 2;

/// Largest batch written while copying or deleting a generation.
pub const COPY_BATCH_BYTES: usize = 4 << 20;

/// What a group's state record holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmState {
    /// Generation the group's data lives under.
    pub gen: u64,
    pub last_applied: Option<LogId>,
    /// Number of keys (for status; kept exact by every write).
    pub keys: u64,
}

pub fn head_key(group: GroupId, tag: u8) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8] = tag;
    k
}

/// `group 0x03 gen`: the start of a generation's data.
pub fn gen_prefix(group: GroupId, gen: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8] = TAG_DATA;
    k[9..].copy_from_slice(&gen.to_be_bytes());
    k
}

pub fn data_key(group: GroupId, gen: u64, kind: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(18 + rest.len());
    k.extend_from_slice(&gen_prefix(group, gen));
    k.push(kind);
    k.extend_from_slice(rest);
    k
}

/// The first key after every key starting with `prefix` (None: no such key).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// A handle to the state machines in the engine; cheap to clone.
#[derive(Clone)]
pub struct SmStore {
    pub(crate) db: Database,
    pub(crate) ks: Keyspace,
}

impl SmStore {
    pub fn state(&self, group: GroupId) -> io::Result<SmState> {
        read_state(&self.db.snapshot(), &self.ks, group)
    }

    pub fn membership(&self, group: GroupId) -> io::Result<StoredMembership> {
        read_membership(&self.db.snapshot(), &self.ks, group)
    }

    pub fn meta(&self, group: GroupId) -> io::Result<Option<ClusterMeta>> {
        match self.ks.get(head_key(group, TAG_META)).map_err(io_err)? {
            Some(v) => decode(&v).map_err(io_err),
            None => Ok(None),
        }
    }

    pub fn batch(&self) -> OwnedWriteBatch {
        self.db.batch()
    }

    /// Deletes every key in `[from, to)`, in bounded batches.
    pub fn delete_range(&self, from: &[u8], to: Option<&[u8]>) -> io::Result<()> {
        let end = match to {
            Some(t) => Bound::Excluded(t.to_vec()),
            None => Bound::Unbounded,
        };
        loop {
            let mut batch = self.db.batch();
            let mut bytes = 0usize;
            let mut n = 0usize;
            for kv in self.ks.range::<Vec<u8>, _>((Bound::Included(from.to_vec()), end.clone())) {
                let k = kv.key().map_err(io_err)?;
                bytes += k.len() + 16;
                batch.remove(&self.ks, k);
                n += 1;
                if bytes >= COPY_BATCH_BYTES {
                    break;
                }
            }
            if n == 0 {
                return Ok(());
            }
            batch.commit().map_err(io_err)?;
        }
    }

    /// Deletes the data of every generation of `group` but `keep`.
    pub fn delete_other_generations(&self, group: GroupId, keep: u64) -> io::Result<()> {
        self.delete_range(&gen_prefix(group, 0), Some(&gen_prefix(group, keep)))?;
        match keep.checked_add(1) {
            Some(next) => {
                self.delete_range(&gen_prefix(group, next), prefix_end(&head_key(group, TAG_DATA)).as_deref())
            }
            None => Ok(()),
        }
    }

    /// Deletes everything of `group` (its replica left this node).
    pub fn drop_group(&self, group: GroupId) -> io::Result<()> {
        let mut batch = self.db.batch();
        for tag in [TAG_STATE, TAG_MEMBERSHIP, TAG_META] {
            batch.remove(&self.ks, head_key(group, tag));
        }
        // The state goes first: a crash midway leaves no half state, only
        // data of no generation, deleted at the next open.
        batch.commit().map_err(io_err)?;
        self.delete_range(&head_key(group, TAG_DATA), prefix_end(&group.to_be_bytes()).as_deref())
    }

    /// Groups that have a state machine in the engine, in id order.
    pub fn groups(&self) -> io::Result<Vec<GroupId>> {
        let mut out = Vec::new();
        let mut next = Some(0u64);
        while let Some(from) = next {
            let Some(kv) = self.ks.range(head_key(from, 0)..).next() else { break };
            let k = kv.key().map_err(io_err)?;
            let group = u64::from_be_bytes(k[..8].try_into().map_err(io_err)?);
            if self.ks.contains_key(head_key(group, TAG_STATE)).map_err(io_err)? {
                out.push(group);
            }
            next = group.checked_add(1);
        }
        Ok(out)
    }
}

pub fn read_state(view: &impl Readable, ks: &Keyspace, group: GroupId) -> io::Result<SmState> {
    match view.get(ks, head_key(group, TAG_STATE)).map_err(io_err)? {
        Some(v) => decode(&v).map_err(io_err),
        None => Ok(SmState::default()),
    }
}

pub fn read_membership(view: &impl Readable, ks: &Keyspace, group: GroupId) -> io::Result<StoredMembership> {
    match view.get(ks, head_key(group, TAG_MEMBERSHIP)).map_err(io_err)? {
        Some(v) => decode(&v).map_err(io_err),
        None => Ok(StoredMembership::default()),
    }
}

pub fn read_meta(view: &impl Readable, ks: &Keyspace, group: GroupId) -> io::Result<Option<ClusterMeta>> {
    match view.get(ks, head_key(group, TAG_META)).map_err(io_err)? {
        Some(v) => decode(&v).map_err(io_err),
        None => Ok(None),
    }
}

/// A key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Serves reads of one group from the engine. Each read takes an engine
/// snapshot, so what it returns and the applied index it reports are of the
/// same state.
#[derive(Clone)]
pub struct SmReader {
    pub(crate) store: SmStore,
    pub(crate) group: GroupId,
}

impl SmReader {
    /// The value of `key` and the applied index of the state it was read from.
    pub fn get(&self, key: &[u8]) -> io::Result<(Option<Vec<u8>>, u64)> {
        let snap = self.store.db.snapshot();
        let st = read_state(&snap, &self.store.ks, self.group)?;
        let v = snap.get(&self.store.ks, data_key(self.group, st.gen, KIND_KV, key)).map_err(io_err)?;
        Ok((v.map(|v| v.to_vec()), st.last_applied.map_or(0, |l| l.index)))
    }

    /// Up to `limit` keys in `[start, end)` (empty end: unbounded), and
    /// whether more follow.
    pub fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> io::Result<(Vec<KeyValue>, bool)> {
        let snap = self.store.db.snapshot();
        let st = read_state(&snap, &self.store.ks, self.group)?;
        let base = data_key(self.group, st.gen, KIND_KV, &[]);
        let from = data_key(self.group, st.gen, KIND_KV, start);
        let to = if end.is_empty() { prefix_end(&base) } else { Some(data_key(self.group, st.gen, KIND_KV, end)) };
        let range = match to {
            Some(t) => snap.range(&self.store.ks, from..t),
            None => snap.range(&self.store.ks, from..),
        };
        let mut items = Vec::new();
        for kv in range {
            if items.len() == limit {
                return Ok((items, true));
            }
            let (k, v) = kv.into_inner().map_err(io_err)?;
            items.push((k[base.len()..].to_vec(), v.to_vec()));
        }
        Ok((items, false))
    }

    /// Every key and value of the group, in key order, from ONE engine
    /// snapshot, with the state (applied index, key count) of that same
    /// snapshot. `on_state` sees the state before the first record; a
    /// callback's error stops the walk and is returned. Nothing but the
    /// record being passed is held in memory.
    pub fn export(
        &self,
        on_state: impl FnOnce(&SmState) -> io::Result<()>,
        mut on_record: impl FnMut(&[u8], &[u8]) -> io::Result<()>,
    ) -> io::Result<SmState> {
        let snap = self.store.db.snapshot();
        let st = read_state(&snap, &self.store.ks, self.group)?;
        on_state(&st)?;
        let base = data_key(self.group, st.gen, KIND_KV, &[]);
        let range = match prefix_end(&base) {
            Some(t) => snap.range(&self.store.ks, base.clone()..t),
            None => snap.range(&self.store.ks, base.clone()..),
        };
        for kv in range {
            let (k, v) = kv.into_inner().map_err(io_err)?;
            on_record(&k[base.len()..], &v)?;
        }
        Ok(st)
    }

    /// Number of keys and the applied index of the state counted.
    pub fn keys(&self) -> io::Result<u64> {
        Ok(self.store.state(self.group)?.keys)
    }
}
