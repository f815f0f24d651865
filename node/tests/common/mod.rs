//! Test support: real node processes on loopback, started, killed and
//! restarted by the tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use keyraft_client::local::{scratch_dir, LocalCluster, LocalOptions};
use keyraft_client::pb;

pub const READY: Duration = Duration::from_secs(60);

pub fn node_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_keyraft-node"))
}

/// A cluster of `nodes` processes, bootstrapped with `partitions` partitions.
pub async fn cluster(tag: &str, nodes: usize, partitions: u32, rf: u32, extra: &[&str]) -> LocalCluster {
    let mut c = LocalCluster::new(LocalOptions {
        nodes,
        base_port: 0,
        host: "127.0.0.1".into(),
        data_dir: scratch_dir(tag),
        node_bin: node_bin(),
        cluster: "test".into(),
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
    })
    .expect("lay out cluster");
    c.start_all().expect("start nodes");
    c.bootstrap(partitions, rf).await.expect("bootstrap");
    let all: Vec<usize> = (0..nodes).collect();
    c.wait_ready(&all, READY).await.expect("cluster ready");
    c
}

/// Node index -> ids of the partitions it leads, from live statuses.
pub async fn leaders(c: &LocalCluster) -> BTreeMap<usize, Vec<u32>> {
    let mut out: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    for (i, s) in c.statuses().await {
        for g in s.groups.iter().filter(|g| g.group > 0 && g.role == "leader") {
            out.entry(i).or_default().push((g.group - 1) as u32);
        }
    }
    out
}

/// The node leading the most partitions.
pub async fn busiest_leader(c: &LocalCluster) -> (usize, Vec<u32>) {
    leaders(c).await.into_iter().max_by_key(|(_, p)| p.len()).expect("some leader")
}

/// Node index of the raft id `id`.
pub async fn index_of(c: &LocalCluster, id: u64) -> Option<usize> {
    c.statuses().await.into_iter().find(|(_, s)| s.node.as_ref().is_some_and(|n| n.id == id)).map(|(i, _)| i)
}

pub async fn status_of(c: &LocalCluster, i: usize) -> pb::StatusResponse {
    c.statuses().await.into_iter().find(|(j, _)| *j == i).map(|(_, s)| s).expect("node answers")
}

pub fn cleanup(c: &mut LocalCluster) {
    c.stop_all();
    keyraft_client::local::remove_dir(&c.opts.data_dir);
}

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use keyraft_client::{Client, ConsistencyLevel};

/// A client workload: writers record every acknowledged write; readers
/// issue linearizable reads. Failures are counted, never hidden.
pub struct Load {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<(String, String)>>>,
    pub failed_writes: Arc<AtomicU64>,
    pub failed_reads: Arc<AtomicU64>,
    pub reads: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    client: Client,
}

impl Load {
    pub fn start(client: Client, writers: usize, readers: usize, tag: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acks: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let (failed_writes, failed_reads, reads) =
            (Arc::<AtomicU64>::default(), Arc::<AtomicU64>::default(), Arc::<AtomicU64>::default());
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (c, stop, acks, failed) = (client.clone(), stop.clone(), acks.clone(), failed_writes.clone());
            let tag = tag.to_string();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (k, v) = (format!("{tag}-w{w}-{n:06}"), format!("v{n}"));
                    match c.put(k.clone(), v.clone()).await {
                        Ok(_) => acks.lock().unwrap().push((k, v)),
                        Err(e) => {
                            eprintln!("write {k} failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    n += 1;
                }
            }));
        }
        for _ in 0..readers {
            let (c, stop, acks, failed, reads) =
                (client.clone(), stop.clone(), acks.clone(), failed_reads.clone(), reads.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let pick = {
                        let a = acks.lock().unwrap();
                        if a.is_empty() {
                            None
                        } else {
                            Some(a[rand::random_range(0..a.len())].clone())
                        }
                    };
                    let Some((k, v)) = pick else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    match c.get(k.clone(), Some(ConsistencyLevel::Linearizable)).await {
                        Ok(Some(got)) if got == v.as_bytes() => {}
                        other => {
                            eprintln!("linearizable read of {k} gave {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        Load { stop, acks, failed_writes, failed_reads, reads, tasks, client }
    }

    pub fn acked(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    /// Stops the workload and checks every acknowledged write is readable.
    /// Returns (acknowledged writes, client retries).
    pub async fn finish(self, c: &LocalCluster) -> (usize, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let acks = self.acks.lock().unwrap().clone();
        let reader = c.client().unwrap();
        let mut lost = Vec::new();
        for (k, v) in &acks {
            match reader.get(k.clone(), Some(ConsistencyLevel::Linearizable)).await {
                Ok(Some(got)) if got == v.as_bytes() => {}
                other => lost.push(format!("{k}: {other:?}")),
            }
        }
        assert!(lost.is_empty(), "{} acknowledged writes lost: {:?}", lost.len(), &lost[..lost.len().min(5)]);
        assert_eq!(self.failed_writes.load(Ordering::Relaxed), 0, "writes failed beyond retries");
        assert_eq!(self.failed_reads.load(Ordering::Relaxed), 0, "reads failed beyond retries");
        (acks.len(), self.client.stats().retries.load(Ordering::Relaxed))
    }
}

/// Polls `check` (which explains what is missing) until it passes.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(()) => return,
            Err(why) if std::time::Instant::now() >= deadline => {
                panic!("{what}: not reached within {timeout:?}: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Every partition's leader reports exactly the desired voters, no learners.
pub async fn placement_converged(c: &LocalCluster) -> Result<(), String> {
    let st = c.statuses().await;
    let cluster = st.iter().find_map(|(_, s)| s.cluster.clone()).ok_or("no cluster view")?;
    for p in &cluster.placement {
        let g = u64::from(p.partition) + 1;
        let leader = st
            .iter()
            .flat_map(|(_, s)| s.groups.iter())
            .find(|x| x.group == g && x.role == "leader")
            .ok_or(format!("partition {} has no leader", p.partition))?;
        let mut want = p.replicas.clone();
        want.sort();
        let mut have = leader.voters.clone();
        have.sort();
        if want != have || !leader.learners.is_empty() {
            return Err(format!(
                "partition {}: voters {have:?} learners {:?}, desired {want:?}",
                p.partition, leader.learners
            ));
        }
    }
    Ok(())
}

pub async fn admin(c: &LocalCluster) -> keyraft_api::pb::admin_client::AdminClient<tonic::transport::Channel> {
    c.client().unwrap().admin(&c.nodes[0].grpc.to_string()).unwrap()
}

/// A channel to node `to` presenting `cert` (certificate, key) and trusting
/// the cluster's CA, as a peer or tool would dial it.
pub fn channel_as(c: &LocalCluster, cert: Option<&(PathBuf, PathBuf)>, to: usize) -> tonic::transport::Channel {
    let t = c.tls().expect("the cluster runs TLS");
    let state = keyraft_api::tls::TlsState::load(keyraft_api::tls::TlsFiles {
        ca: t.ca.clone(),
        cert: cert.map(|c| c.0.clone()),
        key: cert.map(|c| c.1.clone()),
        flags: keyraft_api::tls::FlagNames { ca: "ca", cert: "cert", key: "key" },
        require_member: None,
    })
    .expect("load TLS files");
    let connector = keyraft_api::tls::TlsConnector::new(&state).expect("connector");
    tonic::transport::Endpoint::from_shared(format!("https://{}", c.nodes[to].grpc))
        .unwrap()
        .connect_with_connector_lazy(connector)
}

/// A raw Raft client to node `to` presenting node `member`'s certificate.
pub fn raft_as(
    c: &LocalCluster,
    member: usize,
    to: usize,
) -> keyraft_api::pb::raft_client::RaftClient<tonic::transport::Channel> {
    let t = c.tls().expect("the cluster runs TLS");
    let cert = t.member(&c.nodes[member].name, &c.opts.host).expect("member certificate");
    keyraft_api::pb::raft_client::RaftClient::new(channel_as(c, Some(&cert), to))
}

/// One HTTP/1.1 request to a node's HTTP port; the whole response.
pub fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of an unlabelled metric on node `i` (0 when not exported yet).
pub fn metric(c: &LocalCluster, i: usize, name: &str) -> f64 {
    let page = http(c.nodes[i].http, "GET", "/metrics", "");
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap_or_else(|e| panic!("{name} on node {i}: {v}: {e}")))
}

/// `len` bytes of xorshift output from `seed`: incompressible, so the
/// engine's compression cannot shrink what a test means to store or move,
/// and different for every seed.
pub fn incompressible(seed: u64, len: usize) -> Vec<u8> {
    let mut x = (seed + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Puts every item, `conc` at a time, each up to `attempts` times (a put is
/// idempotent); panics naming the key when one still fails.
pub async fn put_all(
    client: &keyraft_client::Client,
    items: impl Iterator<Item = (String, Vec<u8>)>,
    conc: usize,
    attempts: u32,
) {
    use futures::stream::{self, StreamExt};
    stream::iter(items)
        .map(|(k, v)| {
            let client = client.clone();
            async move {
                let mut attempt = 1;
                while let Err(e) = client.put(k.clone(), v.clone()).await {
                    assert!(attempt < attempts, "put {k}: {e}");
                    attempt += 1;
                }
            }
        })
        .buffer_unordered(conc)
        .collect::<Vec<_>>()
        .await;
}
