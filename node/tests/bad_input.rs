//! Bad input gets a clear status naming the field and the limit, applies
//! nothing, and never takes the node down; bad data directories are refused.

mod common;

use std::process::Command;

use keyraft_api::pb::{self, batch_op};
use keyraft_api::{partition_for_key, SessionToken};
use keyraft_client::local::{scratch_dir, LocalCluster, LocalOptions};
use keyraft_client::ConsistencyLevel;
use tonic::Code;

/// Asserts a refusal with `code` whose message names every needle.
fn expect<T: std::fmt::Debug>(res: Result<tonic::Response<T>, tonic::Status>, code: Code, needles: &[&str]) {
    let err = res.expect_err("must be refused");
    assert_eq!(err.code(), code, "{err:?}");
    for n in needles {
        assert!(err.message().contains(n), "message {:?} lacks {n:?}", err.message());
    }
}

fn put(key: &[u8], value: &[u8]) -> pb::PutRequest {
    pb::PutRequest { key: key.to_vec(), value: value.to_vec(), request_id: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_limit_is_enforced_with_a_clear_status_and_nothing_partially_applied() {
    let mut c = common::cluster("badinput", 1, 4, 1, &["--max-key-bytes", "64", "--max-value-bytes", "1024"]).await;
    let client = c.client().unwrap();
    let mut kv = client.kv_client(&c.nodes[0].grpc.to_string()).unwrap();

    expect(kv.put(put(b"", b"v")).await, Code::InvalidArgument, &["key", "empty"]);
    expect(kv.put(put(&[b'k'; 65], b"v")).await, Code::InvalidArgument, &["key", "65 bytes", "64 bytes"]);
    expect(kv.put(put(b"k", &[0; 1025])).await, Code::InvalidArgument, &["value", "1025 bytes", "1024 bytes"]);
    expect(kv.get(pb::GetRequest { key: vec![], ..Default::default() }).await, Code::InvalidArgument, &["key"]);
    expect(
        kv.get(pb::GetRequest { key: b"k".to_vec(), consistency: 9, ..Default::default() }).await,
        Code::InvalidArgument,
        &["consistency", "unknown level 9"],
    );
    expect(
        kv.get(pb::GetRequest { key: b"k".to_vec(), consistency: 2, session_token: "garbage".into() }).await,
        Code::InvalidArgument,
        &["session_token", "PARTITION:INDEX"],
    );
    let p = partition_for_key(b"k", 4);
    let wrong = SessionToken { partition: (p + 1) % 4, index: 1 }.to_string();
    expect(
        kv.get(pb::GetRequest { key: b"k".to_vec(), consistency: 2, session_token: wrong }).await,
        Code::InvalidArgument,
        &["session_token", &format!("key is in partition {p}")],
    );
    expect(kv.delete(pb::DeleteRequest { key: vec![], request_id: None }).await, Code::InvalidArgument, &["key"]);
    expect(
        kv.compare_and_swap(pb::CompareAndSwapRequest {
            key: b"k".to_vec(),
            new_value: Some(vec![0; 2000]),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        &["new_value", "1024 bytes"],
    );
    expect(
        kv.scan(pb::ScanRequest { prefix: b"a".to_vec(), start: b"b".to_vec(), ..Default::default() }).await,
        Code::InvalidArgument,
        &["prefix"],
    );
    expect(
        kv.scan(pb::ScanRequest { limit: 1_000_000, ..Default::default() }).await,
        Code::InvalidArgument,
        &["limit", "10000"],
    );
    expect(
        kv.scan(pb::ScanRequest { partition: Some(99), ..Default::default() }).await,
        Code::InvalidArgument,
        &["partition", "99"],
    );
    expect(kv.batch(pb::BatchRequest::default()).await, Code::InvalidArgument, &["ops", "at least one"]);

    // A batch with one bad operation applies none of them.
    let keys: Vec<String> =
        (0..).map(|i| format!("b{i}")).filter(|k| partition_for_key(k.as_bytes(), 4) == p).take(3).collect();
    let op = |k: &str, v: Vec<u8>| pb::BatchOp {
        op: Some(batch_op::Op::Put(pb::KeyValue { key: k.as_bytes().to_vec(), value: v })),
    };
    let bad = pb::BatchRequest {
        ops: vec![op(&keys[0], b"x".to_vec()), op(&keys[1], vec![0; 4096]), op(&keys[2], b"z".to_vec())],
        request_id: None,
    };
    expect(kv.batch(bad).await, Code::InvalidArgument, &["ops.put.value", "1024 bytes"]);
    // A batch spanning partitions is refused whole, too.
    let other = (0..).map(|i| format!("o{i}")).find(|k| partition_for_key(k.as_bytes(), 4) != p).unwrap();
    let span = pb::BatchRequest { ops: vec![op(&keys[0], b"x".to_vec()), op(&other, b"y".to_vec())], request_id: None };
    expect(kv.batch(span).await, Code::InvalidArgument, &["ops", "span partitions"]);
    for k in keys.iter().chain([&other]) {
        assert_eq!(
            client.get(k.clone(), Some(ConsistencyLevel::Linearizable)).await.unwrap(),
            None,
            "{k} was partially applied"
        );
    }
    // The node is alive and still serves.
    client.put("after", "fine").await.unwrap();
    assert!(c.is_running(0), "node died on bad input");
    common::cleanup(&mut c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_has_not_joined_says_so() {
    let mut c = LocalCluster::new(LocalOptions {
        nodes: 1,
        base_port: 0,
        host: "127.0.0.1".into(),
        data_dir: scratch_dir("unjoined"),
        node_bin: common::node_bin(),
        cluster: "test".into(),
        extra_args: vec![],
    })
    .unwrap();
    c.start(0).unwrap();
    c.wait_live(0, common::READY).await.unwrap();
    let mut kv = c.client().unwrap().kv_client(&c.nodes[0].grpc.to_string()).unwrap();
    let err = kv.put(put(b"k", b"v")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("has not joined a cluster"), "{}", err.message());
    let ready = reqwest_free_get(&c.nodes[0].http.to_string(), "/readyz");
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    let live = reqwest_free_get(&c.nodes[0].http.to_string(), "/healthz");
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    // A Raft message meant for another node id (the predecessor at this
    // address) is refused, never answered with this node's log.
    let mut raft = common::raft_as(&c, 0, 0);
    let msg = keyraft_client::pb::RaftMessage { group: 0, payload: vec![], cluster: "test".into(), target: 999 };
    let err = raft.append_entries(msg).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().starts_with("target: message for node 999"), "{}", err.message());
    common::cleanup(&mut c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bootstrap_is_idempotent() {
    let mut c = common::cluster("rebootstrap", 3, 4, 3, &[]).await;
    let first = common::status_of(&c, 0).await.cluster.unwrap().cluster_id;
    // Again, and through another node: same cluster, nothing changed.
    let mut a = c.client().unwrap().admin(&c.nodes[2].grpc.to_string()).unwrap();
    let r = a
        .bootstrap(pb::BootstrapRequest {
            peers: c.endpoints(),
            partitions: 16,
            replication_factor: 1,
            zones: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.already_bootstrapped);
    assert_eq!(r.cluster_id, first);
    let view = common::status_of(&c, 1).await.cluster.unwrap();
    assert_eq!((view.partitions, view.replication_factor, view.cluster_id), (4, 3, first));
    // /metrics tells the same story in Prometheus text.
    let metrics = reqwest_free_get(&c.nodes[1].http.to_string(), "/metrics");
    assert!(metrics.contains("keyraft_member_replicas{member=\"node-0\",state=\"active\"} 4"), "{metrics}");
    for name in ["keyraft_group_applied_index{group=\"1\"}", "keyraft_wal_fsyncs_total", "keyraft_node_ready 1"] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    common::cleanup(&mut c);
}

/// A minimal HTTP/1.1 GET, returning the raw response.
fn reqwest_free_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn run_node(dir: &std::path::Path, name: &str, cluster: &str) -> std::process::Output {
    Command::new(common::node_bin())
        .args([
            "--name",
            name,
            "--cluster",
            cluster,
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--advertise",
            "127.0.0.1:1",
            "--insecure-plaintext",
        ])
        .arg("--data-dir")
        .arg(dir)
        .env("KEYRAFT_LOG", "error")
        .output()
        .unwrap()
}

#[test]
fn foreign_other_cluster_and_unknown_format_data_directories_are_refused_at_start() {
    let root = scratch_dir("datadirs");
    // Another cluster's directory: create an identity, then start for a different cluster.
    let theirs = root.join("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    let ident = serde_json::json!({"format_version": keyraft_node::identity::FORMAT_VERSION, "node_id": 42, "incarnation": "x", "name": "n0", "cluster_name": "alpha", "cluster_id": null});
    std::fs::write(theirs.join("KEYRAFT_IDENTITY"), ident.to_string()).unwrap();
    let out = run_node(&theirs, "n0", "beta");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("belongs to cluster \"alpha\"") && err.contains("refusing to start"), "{err}");

    let future = root.join("future");
    std::fs::create_dir_all(&future).unwrap();
    let ident = serde_json::json!({"format_version": 7, "node_id": 42, "incarnation": "x", "name": "n0", "cluster_name": "beta", "cluster_id": null});
    std::fs::write(future.join("KEYRAFT_IDENTITY"), ident.to_string()).unwrap();
    let out = run_node(&future, "n0", "beta");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("format version 7"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let foreign = root.join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("PG_VERSION"), "16").unwrap();
    let out = run_node(&foreign, "n0", "beta");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a Keyraft data directory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing in the refused directories was touched.
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 1);
    keyraft_client::local::remove_dir(&root);
}
