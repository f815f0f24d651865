//! The recorded history: every operation a workload client ran, with its
//! invocation and completion times (monotonic, since the run began) and what
//! is known about its effect.

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use keyraft_client::{ClientError, ConsistencyLevel};
use serde::{Deserialize, Serialize};
use tonic::Code;

use crate::error::ChaosError;

/// Read consistency levels, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Linearizable,
    Session,
    Eventual,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Linearizable, Level::Session, Level::Eventual];

    pub fn to_client(self) -> ConsistencyLevel {
        match self {
            Level::Linearizable => ConsistencyLevel::Linearizable,
            Level::Session => ConsistencyLevel::Session,
            Level::Eventual => ConsistencyLevel::Eventual,
        }
    }
}

/// What a client asked for. Values are unique per write, so a read names the
/// write it observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    Put {
        key: String,
        value: String,
    },
    Get {
        key: String,
        level: Level,
    },
    Delete {
        key: String,
    },
    /// Sets `key` to `new` (deletes on `None`) if it holds `expected`.
    Cas {
        key: String,
        expected: Option<String>,
        new: Option<String>,
    },
    /// Puts (`Some`) and deletes (`None`) applied atomically (one partition).
    Batch {
        writes: Vec<(String, Option<String>)>,
    },
}

impl Op {
    /// The keys the operation reads or writes.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            Op::Put { key, .. } | Op::Get { key, .. } | Op::Delete { key } | Op::Cas { key, .. } => vec![key],
            Op::Batch { writes } => writes.iter().map(|(k, _)| k.as_str()).collect(),
        }
    }

    pub fn is_write(&self) -> bool {
        !matches!(self, Op::Get { .. })
    }

    /// Every value this operation may write, with its key.
    pub fn written(&self) -> Vec<(&str, &str)> {
        match self {
            Op::Put { key, value } => vec![(key, value)],
            Op::Cas { key, new: Some(v), .. } => vec![(key, v)],
            Op::Batch { writes } => writes.iter().filter_map(|(k, v)| v.as_deref().map(|v| (k.as_str(), v))).collect(),
            _ => vec![],
        }
    }
}

/// What is known about an operation's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Acknowledged, with its result.
    Ok,
    /// Definitely not applied.
    Failed,
    /// May have taken effect at any time after invocation, or never.
    Unknown,
}

/// The result of an acknowledged operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Ret {
    /// A put or batch.
    Written,
    Read {
        value: Option<String>,
    },
    Deleted {
        existed: bool,
    },
    /// `current` is what the key held when the swap did not happen.
    Cas {
        succeeded: bool,
        current: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: u64,
    /// The workload client (one session) that ran it.
    pub client: u32,
    pub op: Op,
    pub invoke_ns: u64,
    pub complete_ns: u64,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Ret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// gRPC codes this client library returns for a write that was never
/// applied. The library retries `Unavailable`, `DeadlineExceeded`, `Unknown`,
/// `Cancelled`, `Aborted` and `FailedPrecondition` with the same request id
/// until its timeout, then reports `ClientError::Unavailable`: an earlier
/// attempt may have been proposed, so that is unknown. A non-retryable code is
/// final, but it may follow an attempt that timed out, so only codes the node
/// decides from the request alone before proposing (bad key or value, limits,
/// not implemented, not allowed) say "definitely not applied". `Internal` is
/// returned after a proposal was applied, so it is unknown too.
pub fn definitely_not_applied(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument | Code::OutOfRange | Code::Unimplemented | Code::PermissionDenied | Code::Unauthenticated
    )
}

/// The outcome of a write that returned an error.
pub fn write_error_outcome(e: &ClientError) -> Outcome {
    match e {
        ClientError::Rejected { code, .. } if definitely_not_applied(*code) => Outcome::Failed,
        // Refused by the library before anything was sent.
        ClientError::NoEndpoints | ClientError::BadEndpoint(..) => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

/// Collects records from concurrent clients.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    records: Arc<Mutex<Vec<Record>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self { start: Instant::now(), records: Arc::default() }
    }

    /// When the run began.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Nanoseconds since the run began.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn since_start(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_nanos() as u64
    }

    pub fn record(&self, mut r: Record) {
        let mut recs = self.records.lock().unwrap_or_else(|e| e.into_inner());
        r.id = recs.len() as u64;
        recs.push(r);
    }

    pub fn snapshot(&self) -> Vec<Record> {
        self.records.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Writes a history as JSON lines.
pub fn write_jsonl(records: &[Record], mut w: impl Write) -> std::io::Result<()> {
    for r in records {
        serde_json::to_writer(&mut w, r)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Reads a history written by [`write_jsonl`].
pub fn read_jsonl(r: impl BufRead) -> Result<Vec<Record>, ChaosError> {
    let mut out = Vec::new();
    for (i, line) in r.lines().enumerate() {
        let line = line.map_err(|e| ChaosError::History { line: i + 1, message: e.to_string() })?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| ChaosError::History { line: i + 1, message: e.to_string() })?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_request_level_refusals_count_as_not_applied() {
        let rejected = |code| ClientError::Rejected { code, message: String::new() };
        assert_eq!(write_error_outcome(&rejected(Code::InvalidArgument)), Outcome::Failed);
        assert_eq!(write_error_outcome(&rejected(Code::Internal)), Outcome::Unknown);
        assert_eq!(write_error_outcome(&rejected(Code::AlreadyExists)), Outcome::Unknown);
        let timeout =
            ClientError::Unavailable { attempts: 3, elapsed: std::time::Duration::from_secs(1), last: "x".into() };
        assert_eq!(write_error_outcome(&timeout), Outcome::Unknown);
    }

    #[test]
    fn a_history_survives_json_lines() {
        let recs = vec![Record {
            id: 0,
            client: 1,
            op: Op::Batch { writes: vec![("a".into(), Some("1".into())), ("b".into(), None)] },
            invoke_ns: 5,
            complete_ns: 9,
            outcome: Outcome::Unknown,
            ret: None,
            error: Some("timeout".into()),
        }];
        let mut buf = Vec::new();
        write_jsonl(&recs, &mut buf).unwrap();
        assert_eq!(read_jsonl(&buf[..]).unwrap(), recs);
    }
}
