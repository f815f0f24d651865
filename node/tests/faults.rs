//! Faults under load: kill -9 of the node leading the most partitions, while
//! clients write. No acknowledged write may be lost; writes must resume.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyraft_api::partition_for_key;
use keyraft_client::ConsistencyLevel;

struct Ack {
    key: String,
    value: String,
    started: Instant,
    acked: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_leaders_under_load_loses_no_acknowledged_write() {
    let mut c = common::cluster("faults", 3, 8, 3, &[]).await;
    let client = c.client().unwrap();
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, acks, stop) = (client.clone(), acks.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut failed = 0u32;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (key, value) = (format!("w{w}-{n:06}"), format!("v{n}"));
                let started = Instant::now();
                match client.put(key.clone(), value.clone()).await {
                    Ok(_) => acks.lock().unwrap().push(Ack { key, value, started, acked: Instant::now() }),
                    // Not acknowledged: the write may or may not have happened.
                    Err(_) => failed += 1,
                }
                n += 1;
            }
            failed
        }));
    }
    let mut resume_ms = Vec::new();
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (victim, led) = common::busiest_leader(&c).await;
        let killed_at = Instant::now();
        c.kill(victim);
        // Writes to the partitions it led must be acknowledged again.
        let deadline = killed_at + Duration::from_secs(30);
        let resumed = loop {
            let first = acks
                .lock()
                .unwrap()
                .iter()
                .filter(|a| a.started >= killed_at && led.contains(&partition_for_key(a.key.as_bytes(), 8)))
                .map(|a| a.acked)
                .min();
            if let Some(t) = first {
                break t;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: writes to partitions {led:?} did not resume within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let ms = resumed.duration_since(killed_at).as_millis();
        eprintln!(
            "round {round}: killed node {victim} leading partitions {led:?}; writes to them resumed after {ms} ms"
        );
        resume_ms.push(ms);
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.start(victim).unwrap();
        c.wait_ready(&[0, 1, 2], common::READY).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let mut failed = 0;
    for w in writers {
        failed += w.await.unwrap();
    }
    let acks = std::mem::take(&mut *acks.lock().unwrap());
    eprintln!(
        "{} writes acknowledged, {failed} not acknowledged, {} client retries; resume times {resume_ms:?} ms",
        acks.len(),
        client.stats().retries.load(Ordering::Relaxed)
    );
    assert!(acks.len() > 100, "too little load to mean anything: {}", acks.len());
    let reader = c.client().unwrap();
    let mut lost = Vec::new();
    for a in &acks {
        match reader.get(a.key.clone(), Some(ConsistencyLevel::Linearizable)).await {
            Ok(Some(v)) if v == a.value.as_bytes() => {}
            other => lost.push(format!("{}: {other:?}", a.key)),
        }
    }
    assert!(lost.is_empty(), "{} acknowledged writes lost: {:?}", lost.len(), &lost[..lost.len().min(5)]);
    common::cleanup(&mut c);
}
