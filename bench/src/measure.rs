//! Runs the rows against one system and samples its member processes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::report::Figures;
use crate::workload::{self, Row, Settings, Target};
use crate::{procstat, BenchError};

/// How often VmRSS is read during a row.
const RSS_EVERY: Duration = Duration::from_millis(200);
/// Load clients of the preload.
const PRELOAD_CLIENTS: usize = 256;

fn cpu_ticks(pids: &[u32]) -> Result<u64, BenchError> {
    pids.iter().map(|p| procstat::read_stat(*p).map(|s| s.cpu_ticks)).sum()
}

/// Every row in order against `target`, whose members are `pids`; the
/// keys are preloaded before the first row with reads. `progress` is told
/// each step.
pub async fn rows(
    target: &Target,
    pids: &[u32],
    rows: &[Row],
    s: &Settings,
    progress: impl Fn(&str),
) -> Result<Vec<Figures>, BenchError> {
    let mut preloaded = false;
    let mut out = Vec::new();
    for row in rows {
        if row.read_ratio > 0.0 && !preloaded {
            progress(&format!("preloading {} keys", s.keys));
            let t = Instant::now();
            workload::preload(target, s, PRELOAD_CLIENTS).await?;
            progress(&format!("preloaded in {:.1} s", t.elapsed().as_secs_f64()));
            preloaded = true;
        }
        progress(&format!("{} (member pids {pids:?})", row.label()));
        let f = row_figures(target, pids, row, s).await?;
        progress(&format!("  {:.0} ops/s, p99 {:.2} ms, {} errors", f.ops_per_second(), f.p99_ms, f.errors));
        out.push(f);
    }
    Ok(out)
}

async fn row_figures(target: &Target, pids: &[u32], row: &Row, s: &Settings) -> Result<Figures, BenchError> {
    let running = workload::start(target, row, s);
    tokio::time::sleep_until(running.measure_from.into()).await;
    let (t0, cpu0) = (Instant::now(), cpu_ticks(pids)?);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, pids) = (stop.clone(), pids.to_vec());
        tokio::spawn(async move {
            let mut peak = vec![0u64; pids.len()];
            while !stop.load(Ordering::Relaxed) {
                for (p, pid) in peak.iter_mut().zip(&pids) {
                    *p = (*p).max(procstat::read_vm_rss(*pid).unwrap_or(0));
                }
                tokio::time::sleep(RSS_EVERY).await;
            }
            peak
        })
    };
    let outcome = running.finish().await;
    let (seconds, cpu1) = (t0.elapsed().as_secs_f64(), cpu_ticks(pids)?);
    stop.store(true, Ordering::Relaxed);
    let rss = sampler.await.expect("the RSS sampler panicked");
    let ops = outcome.latency.len();
    let cpu = procstat::cpu_seconds_per_1k_ops(cpu0, cpu1, procstat::clock_ticks_per_second(), ops);
    Ok(Figures::new(&outcome.latency, outcome.errors, seconds, cpu, rss))
}
