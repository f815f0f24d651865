//! The workload: concurrent clients, each its own session, run a seeded mix
//! of operations on a small key space and record every one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyraft_api::partition_for_key;
use keyraft_client::{Client, ClientError, ClientOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checker::{self, Report};
use crate::error::ChaosError;
use crate::history::{write_error_outcome, Level, Op, Outcome, Record, Recorder, Ret};

/// Keys in groups of two that share a partition, so a batch can write both.
#[derive(Debug, Clone)]
pub struct KeySpace {
    pub groups: Vec<[String; 2]>,
}

impl KeySpace {
    /// `groups` pairs of keys starting with `prefix`.
    pub fn new(prefix: &str, groups: usize, partitions: u32) -> Self {
        let groups = (0..groups)
            .map(|g| {
                let a = format!("{prefix}k{g}a");
                let p = partition_for_key(a.as_bytes(), partitions);
                let b = (0..)
                    .map(|n| format!("{prefix}k{g}b{n}"))
                    .find(|b| partition_for_key(b.as_bytes(), partitions) == p)
                    .expect("some key lands in every partition");
                [a, b]
            })
            .collect();
        Self { groups }
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.groups.iter().flatten()
    }
}

/// A recorded workload in the background: [`Recording::start`], faults or
/// operations of any kind, then [`Recording::finish`].
pub struct Recording {
    rec: Recorder,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    keys: Arc<KeySpace>,
    opts: ClientOptions,
    clients: u32,
}

/// What a finished recording holds.
pub struct Recorded {
    pub history: Vec<Record>,
    /// When the workload stopped (ns since it began), before the final reads.
    pub end_ns: u64,
    /// Why the final reads did not all answer, if they did not.
    pub final_reads: Result<(), String>,
}

impl Recording {
    /// Starts `clients` clients (each its own session) with `opts`, on
    /// `groups` key pairs under `prefix`, their choices seeded by `seed`.
    pub async fn start(
        opts: ClientOptions,
        clients: usize,
        groups: usize,
        prefix: &str,
        seed: u64,
        pause: Duration,
    ) -> Result<Recording, ChaosError> {
        let client = |o: &ClientOptions| Client::new(o.clone()).map_err(|e| ChaosError::Cluster(e.to_string()));
        let partitions = client(&opts)?.partitions().await.map_err(|e| ChaosError::Cluster(e.to_string()))?;
        let keys = Arc::new(KeySpace::new(prefix, groups, partitions));
        let rec = Recorder::new();
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for id in 0..clients as u32 {
            let c = client(&opts)?;
            workers.push(tokio::spawn(run_client(id, c, keys.clone(), rec.clone(), stop.clone(), seed, pause)));
        }
        Ok(Recording { rec, stop, workers, keys, opts, clients: clients as u32 })
    }

    pub fn recorder(&self) -> &Recorder {
        &self.rec
    }

    /// Stops the clients, then reads every key once more (linearizably,
    /// retried for up to `final_within`).
    pub async fn finish(self, final_within: Duration) -> Recorded {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.await;
        }
        let end_ns = self.rec.now();
        let final_reads = match Client::new(self.opts) {
            Ok(c) => final_reads(&c, &self.keys, &self.rec, self.clients, final_within).await,
            Err(e) => Err(e.to_string()),
        };
        Recorded { history: self.rec.snapshot(), end_ns, final_reads }
    }

    /// [`Recording::finish`], then the checker: `Err` names what failed.
    pub async fn finish_and_check(self, final_within: Duration) -> Result<Report, String> {
        let done = self.finish(final_within).await;
        done.final_reads?;
        let report = checker::check(&done.history);
        if report.ok() {
            return Ok(report);
        }
        let lines: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
        Err(format!("history of {} operations: {}", done.history.len(), lines.join("; ")))
    }
}

/// Runs one client until `stop`, recording each operation.
pub async fn run_client(
    id: u32,
    client: Client,
    keys: Arc<KeySpace>,
    rec: Recorder,
    stop: Arc<AtomicBool>,
    seed: u64,
    pause: Duration,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(id) << 32));
    // The last value this client saw for each key, to aim its swaps.
    let mut seen: HashMap<String, Option<String>> = HashMap::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let group = &keys.groups[rng.random_range(0..keys.groups.len())];
        let key = group[rng.random_range(0..2)].clone();
        let mut fresh = || {
            n += 1;
            format!("{id}.{n}")
        };
        let op = match rng.random_range(0..100) {
            0..25 => Op::Put { key, value: fresh() },
            25..60 => Op::Get { key, level: Level::ALL[rng.random_range(0..3)] },
            60..65 => Op::Delete { key },
            65..85 => {
                let expected = if rng.random_bool(0.7) { seen.get(&key).cloned().flatten() } else { None };
                let new = if rng.random_bool(0.9) { Some(fresh()) } else { None };
                Op::Cas { key, expected, new }
            }
            _ => {
                let writes = group
                    .iter()
                    .map(|k| (k.clone(), if rng.random_bool(0.85) { Some(fresh()) } else { None }))
                    .collect();
                Op::Batch { writes }
            }
        };
        let invoke_ns = rec.now();
        let (outcome, ret, error) = match execute(&client, &op).await {
            Ok(ret) => (Outcome::Ok, Some(ret), None),
            // A read that failed observed nothing; a write may have applied.
            Err(e) if !op.is_write() => (Outcome::Unknown, None, Some(e.to_string())),
            Err(e) => (write_error_outcome(&e), None, Some(e.to_string())),
        };
        let complete_ns = rec.now();
        match (&op, &ret) {
            (Op::Get { key, .. }, Some(Ret::Read { value })) => {
                seen.insert(key.clone(), value.clone());
            }
            (Op::Cas { key, .. }, Some(Ret::Cas { succeeded: false, current })) => {
                seen.insert(key.clone(), current.clone());
            }
            _ => {
                if outcome == Outcome::Ok {
                    for k in op.keys() {
                        seen.remove(k);
                    }
                    for (k, v) in op.written() {
                        seen.insert(k.to_string(), Some(v.to_string()));
                    }
                }
            }
        }
        rec.record(Record { id: 0, client: id, op, invoke_ns, complete_ns, outcome, ret, error });
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

pub async fn execute(client: &Client, op: &Op) -> Result<Ret, ClientError> {
    Ok(match op {
        Op::Put { key, value } => {
            client.put(key.as_bytes(), value.as_bytes()).await?;
            Ret::Written
        }
        Op::Get { key, level } => {
            let v = client.get(key.as_bytes(), Some(level.to_client())).await?;
            Ret::Read { value: v.map(|v| String::from_utf8_lossy(&v).into_owned()) }
        }
        Op::Delete { key } => Ret::Deleted { existed: client.delete(key.as_bytes()).await? },
        Op::Cas { key, expected, new } => {
            let (succeeded, current) = client
                .compare_and_swap(
                    key.as_bytes(),
                    expected.as_ref().map(|v| v.as_bytes().to_vec()),
                    new.as_ref().map(|v| v.as_bytes().to_vec()),
                )
                .await?;
            Ret::Cas { succeeded, current: current.map(|v| String::from_utf8_lossy(&v).into_owned()) }
        }
        Op::Batch { writes } => {
            client
                .batch(
                    writes
                        .iter()
                        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_ref().map(|v| v.as_bytes().to_vec())))
                        .collect(),
                )
                .await?;
            Ret::Written
        }
    })
}

/// After the faults: one linearizable read of every key, retried until it
/// answers (recorded as client `client`), so a lost acknowledged write shows
/// up as a history that is not linearizable.
pub async fn final_reads(
    client: &Client,
    keys: &KeySpace,
    rec: &Recorder,
    id: u32,
    within: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    for key in keys.keys() {
        let op = Op::Get { key: key.clone(), level: Level::Linearizable };
        loop {
            let invoke_ns = rec.now();
            match execute(client, &op).await {
                Ok(ret) => {
                    let complete_ns = rec.now();
                    rec.record(Record {
                        id: 0,
                        client: id,
                        op,
                        invoke_ns,
                        complete_ns,
                        outcome: Outcome::Ok,
                        ret: Some(ret),
                        error: None,
                    });
                    break;
                }
                Err(e) if Instant::now() >= deadline => return Err(format!("final read of {key}: {e}")),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_keys_of_a_group_share_a_partition() {
        let ks = KeySpace::new("t/", 6, 8);
        for [a, b] in &ks.groups {
            assert_ne!(a, b);
            assert_eq!(partition_for_key(a.as_bytes(), 8), partition_for_key(b.as_bytes(), 8));
        }
    }
}
