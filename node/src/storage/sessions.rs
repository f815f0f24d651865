//! The exactly-once table: for every client, the results of its writes that
//! it may still retry, so a retried write returns the first result instead
//! of applying again. It is part of the state machine (and its snapshots).
//!
//! Each request carries the client's lowest unacknowledged seq: results
//! below it are dropped (the client will never ask again) and a write below
//! it is refused, so the table holds at most the client's in-flight writes
//! whatever their number. Older clients send no such mark (0); for them the
//! last [`LEGACY_RESULTS`] results are kept, as before.

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

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct ClientSession {
    last_index: u64,
    /// Every seq below this was answered to the client.
    first_unacked: u64,
    results: BTreeMap<u64, CommandResult>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Sessions {
    clients: HashMap<u64, ClientSession>,
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
        let s = self.clients.entry(rid.client_id).or_default();
        s.last_index = index;
        s.results.insert(rid.seq, res.clone());
        if rid.first_unacked == 0 {
            while s.results.len() > LEGACY_RESULTS {
                s.results.pop_first();
            }
        } else if rid.first_unacked > s.first_unacked {
            s.first_unacked = rid.first_unacked;
            s.results = s.results.split_off(&rid.first_unacked);
        }
    }

    /// Forgets idle clients; called as the log advances.
    pub fn expire(&mut self, index: u64) {
        if index.is_multiple_of(4096) {
            self.clients.retain(|_, s| s.last_index + SESSION_IDLE_ENTRIES > index);
        }
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
