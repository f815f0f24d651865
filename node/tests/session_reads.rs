//! Session reads never go back: one writer per key counting up, 8 readers
//! each with its own client reading at `session` level from whichever
//! replica it reaches, on a healthy 3-node cluster and across a leader's
//! kill -9 and restart. No reader may ever see a key's count go down.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyraft_client::{Client, ConsistencyLevel};

const KEYS: usize = 4;
const READERS: usize = 8;

fn count(v: &[u8]) -> u64 {
    String::from_utf8_lossy(v).parse().expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_reads_never_go_back_across_replicas_and_a_leader_kill() {
    let mut c = common::cluster("session-reads", 3, 2, 3, &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for k in 0..KEYS {
        let (client, stop, writes) = (c.client().unwrap(), stop.clone(), writes.clone());
        writers.push(tokio::spawn(async move {
            let key = format!("sr-{k}");
            let mut have: Option<u64> = None;
            while !stop.load(Ordering::Relaxed) {
                let next = have.map_or(0, |n| n + 1);
                let new = format!("{next:012}").into_bytes();
                // Compare-and-swap: a write in doubt that lands late cannot
                // put an older count back.
                match client
                    .compare_and_swap(key.clone(), have.map(|n| format!("{n:012}").into_bytes()), Some(new))
                    .await
                {
                    Ok((true, _)) => {
                        have = Some(next);
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((false, current)) => have = current.as_deref().map(count),
                    Err(_) => {
                        if let Ok(v) = client.get(key.clone(), Some(ConsistencyLevel::Linearizable)).await {
                            have = v.as_deref().map(count);
                        }
                    }
                }
            }
        }));
    }
    let reads = Arc::new(AtomicU64::new(0));
    let went_back: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut readers = Vec::new();
    for r in 0..READERS {
        let mut opts = c.client_options();
        opts.timeout = Duration::from_secs(30);
        let client = Client::new(opts).unwrap();
        let (stop, reads, went_back) = (stop.clone(), reads.clone(), went_back.clone());
        readers.push(tokio::spawn(async move {
            let mut seen: HashMap<usize, u64> = HashMap::new();
            let mut failed = 0u64;
            let mut i = r;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let k = i % KEYS;
                match client.get(format!("sr-{k}"), Some(ConsistencyLevel::Session)).await {
                    Ok(Some(v)) => {
                        let n = count(&v);
                        let last = seen.entry(k).or_insert(0);
                        if n < *last {
                            went_back.lock().unwrap().push(format!("reader {r}: sr-{k} read {n} after {last}"));
                        }
                        *last = (*last).max(n);
                    }
                    Ok(None) => {
                        if seen.contains_key(&k) {
                            went_back.lock().unwrap().push(format!("reader {r}: sr-{k} absent after being seen"));
                        }
                    }
                    Err(_) => failed += 1,
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
            failed
        }));
    }

    let started = Instant::now();
    common::eventually("healthy phase", Duration::from_secs(120), || {
        let elapsed = started.elapsed();
        async move {
            if elapsed >= Duration::from_secs(10) {
                Ok(())
            } else {
                Err(format!("{elapsed:?}"))
            }
        }
    })
    .await;
    let healthy = (reads.load(Ordering::Relaxed), went_back.lock().unwrap().len());
    let (victim, led) = common::busiest_leader(&c).await;
    eprintln!("healthy 10 s: {} reads, {} went back; kill -9 node {victim} (leads {led:?})", healthy.0, healthy.1);
    c.kill(victim);
    let at_kill = writes.load(Ordering::Relaxed);
    common::eventually("writes resume", Duration::from_secs(120), || {
        let now = writes.load(Ordering::Relaxed);
        async move {
            if now > at_kill + 100 {
                Ok(())
            } else {
                Err(format!("{} writes", now - at_kill))
            }
        }
    })
    .await;
    c.start(victim).unwrap();
    c.wait_ready(&[0, 1, 2], common::READY).await.unwrap();
    let at_restart = reads.load(Ordering::Relaxed);
    common::eventually("reads after the restart", Duration::from_secs(120), || {
        let now = reads.load(Ordering::Relaxed);
        async move {
            if now > at_restart + 2000 {
                Ok(())
            } else {
                Err(format!("{} reads", now - at_restart))
            }
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let mut failed = 0;
    for r in readers {
        failed += r.await.unwrap();
    }
    let went_back = went_back.lock().unwrap().clone();
    eprintln!(
        "{} session reads by {READERS} readers over {:?}, {} writes, {failed} reads failed, {} went back",
        reads.load(Ordering::Relaxed),
        started.elapsed(),
        writes.load(Ordering::Relaxed),
        went_back.len()
    );
    assert!(writes.load(Ordering::Relaxed) > 100, "too few writes to mean anything");
    assert!(
        went_back.is_empty(),
        "{} session reads went back: {:?}",
        went_back.len(),
        &went_back[..went_back.len().min(5)]
    );
    common::cleanup(&mut c);
}
