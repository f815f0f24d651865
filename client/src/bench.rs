//! `keyraft bench`: concurrent clients issuing a read/write mix against a
//! cluster for a fixed time, reporting throughput and latency percentiles.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keyraft_api::ConsistencyLevel;
use rand::Rng;
use serde::Serialize;

use crate::Client;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub clients: usize,
    pub duration: Duration,
    pub value_size: usize,
    /// Fraction of operations that are reads, 0.0..=1.0.
    pub read_ratio: f64,
    pub consistency: ConsistencyLevel,
    /// Number of distinct keys.
    pub keys: u64,
}

#[derive(Debug)]
pub struct BenchReport {
    pub elapsed: Duration,
    pub reads: Histogram<u64>,
    pub writes: Histogram<u64>,
    pub errors: u64,
    pub retries: u64,
}

impl BenchReport {
    pub fn ops(&self) -> u64 {
        self.reads.len() + self.writes.len()
    }

    /// The figures of the report, for `-o json|yaml`.
    pub fn summary(&self, o: &BenchOptions) -> BenchSummary {
        let secs = self.elapsed.as_secs_f64();
        let latency = |h: &Histogram<u64>| {
            (!h.is_empty()).then(|| {
                let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
                LatencySummary {
                    ops: h.len(),
                    ops_per_second: h.len() as f64 / secs,
                    p50_ms: ms(0.5),
                    p99_ms: ms(0.99),
                    p999_ms: ms(0.999),
                    max_ms: h.max() as f64 / 1000.0,
                }
            })
        };
        BenchSummary {
            clients: o.clients,
            duration_seconds: secs,
            value_bytes: o.value_size,
            read_ratio: o.read_ratio,
            consistency: o.consistency.as_str().to_string(),
            ops: self.ops(),
            ops_per_second: self.ops() as f64 / secs,
            errors: self.errors,
            retries: self.retries,
            writes: latency(&self.writes),
            reads: latency(&self.reads),
        }
    }

    pub fn render(&self, o: &BenchOptions) -> String {
        let mut s = String::new();
        let secs = self.elapsed.as_secs_f64();
        let _ = writeln!(
            s,
            "clients {}  duration {:.1}s  value {} B  read ratio {:.2}  consistency {}",
            o.clients, secs, o.value_size, o.read_ratio, o.consistency
        );
        let _ = writeln!(
            s,
            "total {} ops  {:.0} ops/s  errors {}  retries {}",
            self.ops(),
            self.ops() as f64 / secs,
            self.errors,
            self.retries
        );
        for (name, h) in [("write", &self.writes), ("read", &self.reads)] {
            if h.is_empty() {
                continue;
            }
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            let _ = writeln!(
                s,
                "{name:<5} {:>8} ops {:>9.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p999 {:>7.2} ms  max {:>7.2} ms",
                h.len(),
                h.len() as f64 / secs,
                ms(0.5),
                ms(0.99),
                ms(0.999),
                h.max() as f64 / 1000.0
            );
        }
        s
    }
}

/// [`BenchReport`] as plain figures.
#[derive(Debug, Serialize)]
pub struct BenchSummary {
    pub clients: usize,
    pub duration_seconds: f64,
    pub value_bytes: usize,
    pub read_ratio: f64,
    pub consistency: String,
    pub ops: u64,
    pub ops_per_second: f64,
    pub errors: u64,
    pub retries: u64,
    /// Absent when no operation of the kind succeeded.
    pub writes: Option<LatencySummary>,
    pub reads: Option<LatencySummary>,
}

#[derive(Debug, Serialize)]
pub struct LatencySummary {
    pub ops: u64,
    pub ops_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// The key the benchmark uses for number `i`.
pub fn key(i: u64) -> String {
    format!("bench-{i:08}")
}

/// Writes keys `0..keys` once each, `clients` at a time, so a benchmark
/// reads existing data; counts finished writes in `done`. Returns the
/// number of failed writes.
pub async fn load(client: &Client, keys: u64, value_size: usize, clients: usize, done: &AtomicU64) -> u64 {
    use futures::stream::{self, StreamExt};
    let value = vec![b'v'; value_size];
    stream::iter(0..keys)
        .map(|i| {
            let (c, v) = (client.clone(), value.clone());
            async move {
                let failed = u64::from(c.put(key(i), v).await.is_err());
                done.fetch_add(1, Ordering::Relaxed);
                failed
            }
        })
        .buffer_unordered(clients.max(1))
        .fold(0u64, |acc, failed| async move { acc + failed })
        .await
}

/// Runs the benchmark until its duration passes or `stop` is set.
pub async fn run(client: &Client, o: &BenchOptions) -> BenchReport {
    run_until(client, o, Arc::new(AtomicBool::new(false)), Arc::default()).await
}

/// [`run`] that also ends when `stop` is set and counts finished operations in `done`.
pub async fn run_until(client: &Client, o: &BenchOptions, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) -> BenchReport {
    let retries_before = client.stats().retries.load(Ordering::Relaxed);
    let start = Instant::now();
    let deadline = start + o.duration;
    let mut tasks = Vec::new();
    for _ in 0..o.clients {
        let (c, o, stop, done) = (client.clone(), o.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let (mut reads, mut writes, mut errors) = (histogram(), histogram(), 0u64);
            let value = vec![b'v'; o.value_size];
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                let (key, read) = {
                    let mut rng = rand::rng();
                    (key(rng.random_range(0..o.keys)), rng.random_bool(o.read_ratio))
                };
                let t = Instant::now();
                let ok = if read {
                    c.get(key, Some(o.consistency)).await.is_ok()
                } else {
                    c.put(key, value.clone()).await.is_ok()
                };
                let us = t.elapsed().as_micros().max(1) as u64;
                done.fetch_add(1, Ordering::Relaxed);
                match (ok, read) {
                    (false, _) => errors += 1,
                    (true, true) => reads.saturating_record(us),
                    (true, false) => writes.saturating_record(us),
                }
            }
            (reads, writes, errors)
        }));
    }
    let (mut reads, mut writes, mut errors) = (histogram(), histogram(), 0);
    for t in tasks {
        if let Ok((r, w, e)) = t.await {
            reads.add(r).expect("same bounds");
            writes.add(w).expect("same bounds");
            errors += e;
        }
    }
    BenchReport {
        elapsed: start.elapsed(),
        reads,
        writes,
        errors,
        retries: client.stats().retries.load(Ordering::Relaxed) - retries_before,
    }
}
