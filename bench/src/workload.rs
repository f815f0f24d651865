//! The closed-loop load: each client issues its next operation as soon as
//! the previous one returns. The same code drives both systems.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keyraft_client::{Client, ConsistencyLevel};
use rand::Rng;
use tonic::transport::Channel;

use crate::etcd::pb::{kv_client::KvClient, PutRequest, RangeRequest};
use crate::BenchError;

/// How the reads of a row are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    /// Keyraft linearizable (ReadIndex), etcd linearizable Range.
    Linearizable,
    /// Keyraft session reads (any replica that has the client's writes),
    /// etcd serializable Range (the member's own state).
    Session,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Short name for `--rows`.
    pub id: &'static str,
    pub clients: usize,
    /// Fraction of operations that are reads.
    pub read_ratio: f64,
    pub reads: ReadKind,
}

impl Row {
    pub fn label(&self) -> String {
        let n = self.clients;
        let c = if n == 1 { "client" } else { "clients" };
        if self.read_ratio == 0.0 {
            return format!("{n} {c}, writes");
        }
        let kind = match self.reads {
            ReadKind::Linearizable => "linearizable",
            ReadKind::Session => "session (etcd: serializable)",
        };
        format!("{n} {c}, {:.0}% {kind} reads", self.read_ratio * 100.0)
    }
}

/// The rows of the table, in the order they run (reads last, after the preload).
pub fn rows() -> Vec<Row> {
    let w = |id, clients| Row { id, clients, read_ratio: 0.0, reads: ReadKind::Linearizable };
    vec![
        w("w1", 1),
        w("w16", 16),
        w("w64", 64),
        w("w256", 256),
        Row { id: "lin64", clients: 64, read_ratio: 0.9, reads: ReadKind::Linearizable },
        Row { id: "ses64", clients: 64, read_ratio: 0.9, reads: ReadKind::Session },
    ]
}

/// The system under load.
#[derive(Clone)]
pub enum Target {
    /// One client library instance shared by every load client, as an
    /// application would.
    Keyraft(Client),
    /// One channel per member; load client `i` talks to member `i % n`
    /// (etcd forwards writes and linearizable reads to its leader).
    Etcd(Vec<KvClient<Channel>>),
}

impl Target {
    fn handle(&self, i: usize) -> Handle {
        match self {
            Target::Keyraft(c) => Handle::Keyraft(c.clone()),
            Target::Etcd(m) => Handle::Etcd(m[i % m.len()].clone()),
        }
    }
}

/// One load client's connection.
enum Handle {
    Keyraft(Client),
    Etcd(KvClient<Channel>),
}

impl Handle {
    async fn put(&mut self, key: String, value: Vec<u8>) -> bool {
        match self {
            Handle::Keyraft(c) => c.put(key, value).await.is_ok(),
            Handle::Etcd(c) => c.put(PutRequest { key: key.into_bytes(), value, ..Default::default() }).await.is_ok(),
        }
    }

    async fn get(&mut self, key: String, kind: ReadKind) -> bool {
        match self {
            Handle::Keyraft(c) => {
                let level = match kind {
                    ReadKind::Linearizable => ConsistencyLevel::Linearizable,
                    ReadKind::Session => ConsistencyLevel::Session,
                };
                c.get(key, Some(level)).await.is_ok()
            }
            Handle::Etcd(c) => {
                let serializable = kind == ReadKind::Session;
                c.range(RangeRequest { key: key.into_bytes(), serializable, ..Default::default() }).await.is_ok()
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub keys: u64,
    pub value_size: usize,
    /// Run before measuring (connections, leaders, caches).
    pub warmup: Duration,
    pub duration: Duration,
}

/// The operations of one row, measured from the end of the warm-up.
#[derive(Debug)]
pub struct Outcome {
    /// Latency in microseconds of every operation that succeeded.
    pub latency: Histogram<u64>,
    pub errors: u64,
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

pub fn key(i: u64) -> String {
    keyraft_client::bench::key(i)
}

/// Starts the row's clients. They run for the warm-up and then the measured
/// duration, and record only operations that start after the warm-up; the
/// returned [`Running`] says when that is.
pub fn start(target: &Target, row: &Row, s: &Settings) -> Running {
    let measure_from = Instant::now() + s.warmup;
    let until = measure_from + s.duration;
    let tasks = (0..row.clients)
        .map(|i| {
            let (mut h, row, s) = (target.handle(i), row.clone(), s.clone());
            tokio::spawn(async move {
                let (mut latency, mut errors) = (histogram(), 0u64);
                let value = vec![b'v'; s.value_size];
                loop {
                    let t = Instant::now();
                    if t >= until {
                        break;
                    }
                    let (k, read) = {
                        let mut rng = rand::rng();
                        (key(rng.random_range(0..s.keys)), rng.random_bool(row.read_ratio))
                    };
                    let ok = if read { h.get(k, row.reads).await } else { h.put(k, value.clone()).await };
                    if !ok {
                        // Closed loop without a busy spin on a failing member.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    if t < measure_from {
                        continue;
                    }
                    if ok {
                        latency.saturating_record(t.elapsed().as_micros().max(1) as u64);
                    } else {
                        errors += 1;
                    }
                }
                (latency, errors)
            })
        })
        .collect();
    Running { measure_from, tasks }
}

pub struct Running {
    pub measure_from: Instant,
    tasks: Vec<tokio::task::JoinHandle<(Histogram<u64>, u64)>>,
}

impl Running {
    pub async fn finish(self) -> Outcome {
        let (mut latency, mut errors) = (histogram(), 0);
        for t in self.tasks {
            let (l, e) = t.await.expect("a load client panicked");
            latency.add(l).expect("same bounds");
            errors += e;
        }
        Outcome { latency, errors }
    }
}

/// Writes every key once, `clients` at a time, so reads find data.
pub async fn preload(target: &Target, s: &Settings, clients: usize) -> Result<(), BenchError> {
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (mut h, next, failed, s) = (target.handle(i), next.clone(), failed.clone(), s.clone());
            tokio::spawn(async move {
                let value = vec![b'v'; s.value_size];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= s.keys {
                        break;
                    }
                    if !h.put(key(i), value.clone()).await {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a preload client panicked");
    }
    match failed.load(Ordering::Relaxed) {
        0 => Ok(()),
        failed => Err(BenchError::Preload { failed, keys: s.keys }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_the_issue_table_with_reads_last() {
        let r = rows();
        let ids: Vec<_> = r.iter().map(|r| r.id).collect();
        assert_eq!(ids, ["w1", "w16", "w64", "w256", "lin64", "ses64"]);
        assert_eq!(r[0].label(), "1 client, writes");
        assert_eq!(r[3].label(), "256 clients, writes");
        assert_eq!(r[4].label(), "64 clients, 90% linearizable reads");
        assert_eq!(r[5].label(), "64 clients, 90% session (etcd: serializable) reads");
        let first_read = r.iter().position(|r| r.read_ratio > 0.0).unwrap();
        assert!(r[first_read..].iter().all(|r| r.read_ratio > 0.0));
    }
}
