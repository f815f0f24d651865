//! `keyraft bench`: concurrent clients issuing a read/write mix against a
//! cluster for a fixed time, reporting throughput and latency percentiles.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keyraft_api::ConsistencyLevel;
use rand::Rng;

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

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// The key the benchmark uses for number `i`.
pub fn key(i: u64) -> String {
    format!("bench-{i:08}")
}

/// Writes keys `0..keys` once each, `clients` at a time, so a benchmark
/// reads existing data. Returns the number of failed writes.
pub async fn load(client: &Client, keys: u64, value_size: usize, clients: usize) -> u64 {
    use futures::stream::{self, StreamExt};
    let value = vec![b'v'; value_size];
    stream::iter(0..keys)
        .map(|i| {
            let (c, v) = (client.clone(), value.clone());
            async move { u64::from(c.put(key(i), v).await.is_err()) }
        })
        .buffer_unordered(clients.max(1))
        .fold(0u64, |acc, failed| async move { acc + failed })
        .await
}

/// Runs the benchmark until its duration passes or `stop` is set.
pub async fn run(client: &Client, o: &BenchOptions) -> BenchReport {
    run_until(client, o, Arc::new(AtomicBool::new(false))).await
}

pub async fn run_until(client: &Client, o: &BenchOptions, stop: Arc<AtomicBool>) -> BenchReport {
    let retries_before = client.stats().retries.load(Ordering::Relaxed);
    let start = Instant::now();
    let deadline = start + o.duration;
    let mut tasks = Vec::new();
    for _ in 0..o.clients {
        let (c, o, stop) = (client.clone(), o.clone(), stop.clone());
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
