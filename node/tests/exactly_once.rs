//! Exactly once under concurrency: 1,000 writes in flight at all times
//! through ONE client while partition leaders are killed (kill -9) and
//! restarted. Every write is a compare-and-swap step of a per-task counter
//! with a single writer, so a write applied twice is visible: its answer
//! says "failed" while the key holds exactly the value it wrote.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyraft_client::{Client, ConsistencyLevel};

const TASKS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_writes_through_one_client_apply_once_while_leaders_die() {
    let mut c = common::cluster("exactly-once", 3, 2, 3, &[]).await;
    let mut opts = c.client_options();
    opts.timeout = Duration::from_secs(60);
    let client = Client::new(opts).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (client, stop, acked, violations) = (client.clone(), stop.clone(), acked.clone(), violations.clone());
        tasks.push(tokio::spawn(async move {
            let key = format!("eo-{t:04}");
            // The value this task knows the key holds (None: absent).
            let mut have: Option<u64> = None;
            while !stop.load(Ordering::Relaxed) {
                let next = have.map_or(0, |n| n + 1);
                let expected = have.map(|n| n.to_string().into_bytes());
                match client.compare_and_swap(key.clone(), expected, Some(next.to_string().into_bytes())).await {
                    Ok((true, _)) => {
                        have = Some(next);
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((false, current)) => {
                        let current = current.map(|v| String::from_utf8_lossy(&v).into_owned());
                        let what = if current.as_deref() == Some(&next.to_string()) {
                            "applied twice: the retry re-ran and failed against its own first application"
                        } else {
                            "changed by no one else"
                        };
                        violations.lock().unwrap().push(format!(
                            "{key}: cas {have:?} -> {next} answered failed with current {current:?}: {what}"
                        ));
                        return (key, have, false);
                    }
                    // Not acknowledged: it may or may not have applied. Find out.
                    Err(_) => loop {
                        match client.get(key.clone(), Some(ConsistencyLevel::Linearizable)).await {
                            Ok(v) => {
                                have = v.map(|v| String::from_utf8_lossy(&v).parse().expect("a counter"));
                                break;
                            }
                            Err(_) if stop.load(Ordering::Relaxed) => return (key, have, true),
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    },
                }
            }
            (key, have, false)
        }));
    }

    let writes_so_far = |acked: &AtomicU64| acked.load(Ordering::Relaxed);
    for round in 0..3 {
        // Let the writes flow (and sequence numbers move on) before each kill.
        let before = writes_so_far(&acked);
        common::eventually("writes progress", Duration::from_secs(120), || {
            let now = writes_so_far(&acked);
            async move {
                if now >= before + 2000 {
                    Ok(())
                } else {
                    Err(format!("{} acknowledged", now - before))
                }
            }
        })
        .await;
        let (victim, led) = common::busiest_leader(&c).await;
        eprintln!("round {round}: kill -9 node {victim}, leader of partitions {led:?}");
        let killed = Instant::now();
        c.kill(victim);
        let at_kill = writes_so_far(&acked);
        common::eventually("writes resume after the kill", Duration::from_secs(120), || {
            let now = writes_so_far(&acked);
            async move {
                if now >= at_kill + 1000 {
                    Ok(())
                } else {
                    Err(format!("{} acknowledged", now - at_kill))
                }
            }
        })
        .await;
        eprintln!("round {round}: 1000 writes acknowledged {:?} after the kill", killed.elapsed());
        c.start(victim).unwrap();
        c.wait_ready(&[0, 1, 2], common::READY).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let mut finals = Vec::new();
    for t in tasks {
        finals.push(t.await.unwrap());
    }
    let violations = violations.lock().unwrap().clone();
    eprintln!(
        "{} compare-and-swaps acknowledged through one client with {TASKS} in flight, {} client retries",
        acked.load(Ordering::Relaxed),
        client.stats().retries.load(Ordering::Relaxed)
    );
    assert!(
        violations.is_empty(),
        "{} writes applied twice or lost: {:?}",
        violations.len(),
        &violations[..violations.len().min(5)]
    );

    // None acknowledged lost: every counter holds what its task knows it holds.
    let reader = c.client().unwrap();
    let mut lost = Vec::new();
    for (key, have, in_doubt) in finals {
        let got = reader.get(key.clone(), Some(ConsistencyLevel::Linearizable)).await.unwrap();
        let got: Option<u64> = got.map(|v| String::from_utf8_lossy(&v).parse().unwrap());
        let ok = got == have || (in_doubt && got == Some(have.map_or(0, |n| n + 1)));
        if !ok {
            lost.push(format!("{key}: holds {got:?}, acknowledged {have:?}"));
        }
    }
    assert!(
        lost.is_empty(),
        "{} counters differ from what was acknowledged: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    common::cleanup(&mut c);
}
