//! The exactly-once table: for every client, the results of its writes that
//! it may still retry, so a retried write returns the first result instead
//! of applying again. It is part of the state machine (and its snapshots).
//!
//! Each request carries the client's lowest unacknowledged seq: results
//! below it are dropped (the client will never ask again) and a write below
//! it is refused, so the table holds at most the client's in-flight writes
//! whatever their number. Older clients send no such mark (0); for them the
//! last [`LEGACY_RESULTS`] results are kept, as before.
//!
//! The table lives in memory (its size is bounded by the writes clients have
//! in flight, not by the data) and in the engine: every change is noted and
//! written with the apply batch that made it ([`Sessions::take_writes`]).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::types::{CommandResult, RequestId};

/// How many recent results a client that sends no acknowledgement mark
/// keeps for retries.
const LEGACY_RESULTS: usize = 256;
/// A client not seen for this many log entries is forgotten.
const SESSION_IDLE_ENTRIES: u64 = 200_000;
/// How far a request's seq may run ahead of its client's first unanswered
/// one: the bound on the results kept per client and partition.
pub const MAX_UNACKED: u64 = 1 << 20;

static ALREADY_ACKNOWLEDGED: CommandResult = CommandResult::AlreadyAcknowledged;

#[derive(Debug, Default, Clone)]
struct ClientSession {
    last_index: u64,
    /// Every seq below this was answered to the client.
    first_unacked: u64,
    results: BTreeMap<u64, CommandResult>,
}

/// What is stored for a client besides its results.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClientMarks {
    pub last_index: u64,
    pub first_unacked: u64,
}

/// A change to write to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Changed {
    Client(u64),
    Result(u64, u64),
}

/// A record to store (`Some`) or delete (`None`).
#[derive(Debug)]
pub enum SessionWrite {
    Client(u64, Option<ClientMarks>),
    Result(u64, u64, Option<CommandResult>),
}

#[derive(Debug, Default)]
pub struct Sessions {
    clients: HashMap<u64, ClientSession>,
    changed: Vec<Changed>,
}

impl Sessions {
    /// The result to answer this request with without applying it: the
    /// result of an earlier application, or `AlreadyAcknowledged` for a
    /// write whose client has moved past it.
    pub fn seen(&self, rid: &RequestId) -> Option<&CommandResult> {
        let s = self.clients.get(&rid.client_id)?;
        s.results.get(&rid.seq).or((rid.seq < s.first_unacked).then_some(&ALREADY_ACKNOWLEDGED))
    }

    /// Remembers the result of `rid`, applied at log `index`, and forgets
    /// what the client has acknowledged since.
    pub fn record(&mut self, index: u64, rid: RequestId, res: &CommandResult) {
        let c = rid.client_id;
        let s = self.clients.entry(c).or_default();
        s.last_index = index;
        s.results.insert(rid.seq, res.clone());
        self.changed.push(Changed::Client(c));
        self.changed.push(Changed::Result(c, rid.seq));
        if rid.first_unacked == 0 {
            while s.results.len() > LEGACY_RESULTS {
                if let Some((seq, _)) = s.results.pop_first() {
                    self.changed.push(Changed::Result(c, seq));
                }
            }
        } else if rid.first_unacked > s.first_unacked {
            s.first_unacked = rid.first_unacked;
            let kept = s.results.split_off(&rid.first_unacked);
            let dropped = std::mem::replace(&mut s.results, kept);
            self.changed.extend(dropped.into_keys().map(|seq| Changed::Result(c, seq)));
        }
    }

    /// Forgets idle clients; called as the log advances.
    pub fn expire(&mut self, index: u64) {
        if index.is_multiple_of(4096) {
            let changed = &mut self.changed;
            self.clients.retain(|c, s| {
                let keep = s.last_index + SESSION_IDLE_ENTRIES > index;
                if !keep {
                    changed.push(Changed::Client(*c));
                    changed.extend(s.results.keys().map(|seq| Changed::Result(*c, *seq)));
                }
                keep
            });
        }
    }

    /// The records changed since the last call, as they now are.
    pub fn take_writes(&mut self) -> Vec<SessionWrite> {
        let mut changed = std::mem::take(&mut self.changed);
        changed.sort_unstable_by_key(|c| match *c {
            Changed::Client(c) => (c, 0, 0),
            Changed::Result(c, s) => (c, 1, s),
        });
        changed.dedup();
        changed
            .into_iter()
            .map(|c| match c {
                Changed::Client(c) => SessionWrite::Client(
                    c,
                    self.clients
                        .get(&c)
                        .map(|s| ClientMarks { last_index: s.last_index, first_unacked: s.first_unacked }),
                ),
                Changed::Result(c, seq) => {
                    SessionWrite::Result(c, seq, self.clients.get(&c).and_then(|s| s.results.get(&seq)).cloned())
                }
            })
            .collect()
    }

    /// Restores a client's marks read back from the engine.
    pub fn load_client(&mut self, client: u64, marks: ClientMarks) {
        let s = self.clients.entry(client).or_default();
        s.last_index = marks.last_index;
        s.first_unacked = marks.first_unacked;
    }

    /// Restores a result read back from the engine.
    pub fn load_result(&mut self, client: u64, seq: u64, res: CommandResult) {
        self.clients.entry(client).or_default().results.insert(seq, res);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rid(seq: u64, first_unacked: u64) -> RequestId {
        RequestId { client_id: 9, seq, first_unacked }
    }

    fn put(s: &mut Sessions, index: u64, r: RequestId) -> CommandResult {
        if let Some(res) = s.seen(&r) {
            return res.clone();
        }
        let res = CommandResult::Deleted { existed: r.seq.is_multiple_of(2) };
        s.record(index, r, &res);
        res
    }

    #[test]
    fn results_are_kept_until_acknowledged_whatever_the_number_in_flight() {
        let mut s = Sessions::default();
        // 10,000 writes in flight: seq 1 still unanswered throughout.
        for seq in 1..=10_000 {
            put(&mut s, seq, rid(seq, 1));
        }
        let first = CommandResult::Deleted { existed: false };
        assert_eq!(s.seen(&rid(1, 1)), Some(&first), "the oldest in-flight write is still deduplicated");
        assert_eq!(s.clients[&9].results.len(), 10_000);
        // The client has its answers up to 9,000: those results go.
        put(&mut s, 10_001, rid(10_001, 9_000));
        assert_eq!(s.clients[&9].results.len(), 1_002);
        assert_eq!(s.seen(&rid(9_000, 1)), Some(&CommandResult::Deleted { existed: true }));
        // A late copy of an acknowledged write is not applied again.
        assert_eq!(s.seen(&rid(5, 1)), Some(&CommandResult::AlreadyAcknowledged));
        // The mark never goes back (requests carry the mark of their creation).
        put(&mut s, 10_002, rid(10_002, 3));
        assert_eq!(s.seen(&rid(5, 1)), Some(&CommandResult::AlreadyAcknowledged));
    }

    #[test]
    fn clients_without_a_mark_keep_a_window_of_results() {
        let mut s = Sessions::default();
        for seq in 1..=1_000 {
            put(&mut s, seq, rid(seq, 0));
        }
        assert_eq!(s.clients[&9].results.len(), LEGACY_RESULTS);
        assert!(s.seen(&rid(1_000, 0)).is_some());
        assert!(s.seen(&rid(1, 0)).is_none());
    }
}
