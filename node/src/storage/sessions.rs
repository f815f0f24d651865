//! The exactly-once table: for every client, the results of its recent
//! writes, so a retried write returns the first result instead of applying
//! again. It is part of the state machine (and of its snapshots).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::types::{CommandResult, RequestId};

/// How many recent results a client's session remembers for retries.
const SESSION_RESULTS: usize = 256;
/// A client not seen for this many log entries is forgotten.
const SESSION_IDLE_ENTRIES: u64 = 200_000;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct ClientSession {
    last_index: u64,
    results: BTreeMap<u64, CommandResult>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Sessions {
    clients: HashMap<u64, ClientSession>,
}

impl Sessions {
    /// The result of an earlier application of this request, if any.
    pub fn seen(&self, rid: &RequestId) -> Option<&CommandResult> {
        self.clients.get(&rid.client_id).and_then(|s| s.results.get(&rid.seq))
    }

    /// Remembers the result of `rid`, applied at log `index`.
    pub fn record(&mut self, index: u64, rid: RequestId, res: &CommandResult) {
        let s = self.clients.entry(rid.client_id).or_default();
        s.last_index = index;
        s.results.insert(rid.seq, res.clone());
        while s.results.len() > SESSION_RESULTS {
            s.results.pop_first();
        }
    }

    /// Forgets idle clients; called as the log advances.
    pub fn expire(&mut self, index: u64) {
        if index.is_multiple_of(4096) {
            self.clients.retain(|_, s| s.last_index + SESSION_IDLE_ENTRIES > index);
        }
    }
}
