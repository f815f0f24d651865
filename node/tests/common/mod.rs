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
