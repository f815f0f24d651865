//! Backup and restore (client::backup, Admin.BackupPartition) against real
//! node processes on loopback, to a file:// directory and to an
//! S3-compatible server (moto, started by hack/s3-server.sh).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyraft_api::limits::DEFAULT_MAX_VALUE_BYTES;
use keyraft_api::partition_for_key;
use keyraft_client::backup::{self, CreateOptions, RestoreOptions};
use keyraft_client::local::{scratch_dir, LocalCluster};
use keyraft_client::{Client, ConsistencyLevel};

/// Timings for a shared, loaded test machine (debug build), as in
/// envelope.rs: a lone 1 MiB AppendEntries can exceed the default 200 ms
/// heartbeat, which openraft also uses as its timeout.
const SLOW_DISK: &[&str] = &["--heartbeat-ms", "1000", "--election-timeout-ms", "5000"];

type State = BTreeMap<Vec<u8>, Vec<u8>>;
/// An acknowledged live write: key, value, partition, log index.
type Ack = (Vec<u8>, Vec<u8>, u32, u64);
type Op = (Vec<u8>, Option<Vec<u8>>);

/// Every key and value of the cluster, by partition (linearizable scans).
async fn state_by_partition(c: &LocalCluster, partitions: u32) -> Vec<State> {
    let all = c.client().unwrap().scan_prefix(b"", Some(ConsistencyLevel::Linearizable)).await.unwrap();
    let mut out = vec![State::new(); partitions as usize];
    for (k, v) in all {
        out[partition_for_key(&k, partitions) as usize].insert(k, v);
    }
    out
}

/// A value for `key` of `len` bytes that differs from key to key.
fn value_of(key: &[u8], len: usize) -> Vec<u8> {
    let seed = key.iter().fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(*b));
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

/// Writes `n` keys `pre-NNNNN` in per-partition batches, and `big` keys
/// whose value is exactly the 1 MiB limit. Returns what was written.
async fn preload(c: &Client, partitions: u32, n: usize, big: usize) -> State {
    let mut written = State::new();
    let mut by_p: BTreeMap<u32, Vec<Op>> = BTreeMap::new();
    for i in 0..n {
        let k = format!("pre-{i:05}").into_bytes();
        let v = value_of(&k, 100);
        written.insert(k.clone(), v.clone());
        by_p.entry(partition_for_key(&k, partitions)).or_default().push((k, Some(v)));
    }
    for ops in by_p.into_values() {
        for b in ops.chunks(500) {
            c.batch(b.to_vec()).await.expect("preload batch");
        }
    }
    for i in 0..big {
        let k = format!("big-{i}").into_bytes();
        let v = value_of(&k, DEFAULT_MAX_VALUE_BYTES);
        c.put(k.clone(), v.clone()).await.expect("1 MiB put");
        written.insert(k, v);
    }
    written
}

/// Writers putting unique keys, recording each acknowledged write with its
/// partition and log index (the per-partition history).
struct Writers {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    failed: Arc<Mutex<Vec<Vec<u8>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(c: &Client, n: usize) -> Writers {
        let w = Writers { stop: Arc::default(), acks: Arc::default(), failed: Arc::default(), tasks: Vec::new() };
        let mut tasks = Vec::new();
        for t in 0..n {
            let (c, stop, acks, failed) = (c.clone(), w.stop.clone(), w.acks.clone(), w.failed.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let k = format!("live-{t}-{i:06}").into_bytes();
                    let v = value_of(&k, 64);
                    match c.put(k.clone(), v.clone()).await {
                        Ok(info) => acks.lock().unwrap().push((k, v, info.partition, info.index)),
                        Err(e) => {
                            eprintln!("live write failed: {e}");
                            failed.lock().unwrap().push(k);
                        }
                    }
                    i += 1;
                }
            }));
        }
        Writers { tasks, ..w }
    }

    fn acked(&self) -> Vec<Ack> {
        self.acks.lock().unwrap().clone()
    }

    async fn stop(self) -> (Vec<Ack>, Vec<Vec<u8>>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failed = self.failed.lock().unwrap().clone();
        (self.acks.lock().unwrap().clone(), failed)
    }
}

/// Checks, partition by partition, that `restored` is exactly the source
/// state at the manifest's applied index: the preloaded keys plus every
/// live write whose log index is at or below it, and nothing else.
fn check_exact(m: &backup::Manifest, pre: &State, acks: &[Ack], before_backup: usize, restored: &[State]) {
    let partitions = m.partitions;
    for pb in &m.partition_backups {
        let p = pb.partition;
        let mut want: State = pre
            .iter()
            .filter(|(k, _)| partition_for_key(k, partitions) == p)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v, ap, index) in acks {
            assert_eq!(*ap, partition_for_key(k, partitions));
            if *ap == p && *index <= pb.applied_index {
                want.insert(k.clone(), v.clone());
            }
        }
        let got = &restored[p as usize];
        let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).take(3).collect();
        let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).take(3).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "partition {p} at applied index {}: missing {missing:?}, extra {extra:?}",
            pb.applied_index
        );
        assert!(want == *got, "partition {p}: a value differs from the source's at index {}", pb.applied_index);
        assert_eq!(pb.records, want.len() as u64, "partition {p}: manifest record count");
    }
    // Every write acknowledged before the backup started is in it.
    for (k, _, p, index) in &acks[..before_backup] {
        let pb = &m.partition_backups[*p as usize];
        assert!(*index <= pb.applied_index, "write acknowledged before the backup at {index} > {}", pb.applied_index);
        assert!(restored[*p as usize].contains_key(k));
    }
}

/// A client for restores (longer per-attempt timeout, as the CLI uses).
fn restore_client(c: &LocalCluster) -> Client {
    Client::new(backup::restore_client_options(c.client_options())).unwrap()
}

/// The environment that gives the CLI the cluster's CA and admin certificate.
fn admin_env(c: &LocalCluster) -> Vec<(&'static str, String)> {
    let t = c.tls().expect("the cluster runs TLS");
    let path = |p: &Path| p.display().to_string();
    vec![("KEYRAFT_CA", path(&t.ca)), ("KEYRAFT_CERT", path(&t.admin.0)), ("KEYRAFT_KEY", path(&t.admin.1))]
}

fn keyraft_bin() -> PathBuf {
    common::node_bin().with_file_name("keyraft")
}

/// Runs the CLI; returns (success, stdout, stderr).
fn cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(keyraft_bin());
    cmd.args(args);
    for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP", "AWS_REGION"] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e} (build it: cargo build -p keyraft-client)", keyraft_bin().display()));
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// moto on loopback, stopped on drop.
struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    async fn start(bucket: &str) -> S3Server {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/s3-server.sh");
        let port = free_port();
        let child = Command::new(&script)
            .arg(port.to_string())
            .arg(bucket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hack/s3-server.sh");
        let s = S3Server { child, port };
        // The in-process backup calls read their credentials and endpoint
        // from the environment, like the CLI (tests run one at a time).
        for (k, v) in s.env() {
            std::env::set_var(k, v);
        }
        // Ready once the bucket exists: listing it answers 200.
        common::eventually("S3 server with the bucket", Duration::from_secs(60), || async {
            let dest = backup::open(&format!("s3://{bucket}/probe"), Duration::from_secs(1), false)
                .map_err(|e| e.to_string())?;
            backup::list(&dest).await.map(|_| ()).map_err(|e| e.to_string())
        })
        .await;
        s
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ENDPOINT_URL".into(), format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 10,000 keys and values at the 1 MiB limit, a backup to S3 while writers
/// run, the source cluster deleted, a restore into a new cluster: each
/// partition is exactly the source's state at the manifest's applied index.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_backup_under_load_restores_each_partition_at_its_applied_index() {
    let bucket = "keyraft-test";
    let s3 = S3Server::start(bucket).await;
    let mut src = common::cluster("backup-src", 3, 4, 3, SLOW_DISK).await;
    let c = src.client().unwrap();
    let pre = preload(&c, 4, 10_000, 3).await;
    let writers = Writers::start(&c, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = writers.acked().len();
    let dest = backup::open(&format!("s3://{bucket}/nightly"), Duration::from_secs(30), false).unwrap();
    let m = backup::create(&c, &dest, "b1", &CreateOptions::default()).await.expect("backup");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (acks, failed) = writers.stop().await;
    assert!(failed.is_empty(), "live writes failed, so their index is unknown: {failed:?}");
    assert!(acks.len() > before, "writers kept writing during the backup");
    assert_eq!((m.partitions, m.replication_factor, m.format_version), (4, 3, 1));
    assert!(m.records >= 10_003);
    let (list, incomplete) = backup::list(&dest).await.unwrap();
    assert_eq!(list.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(), ["b1"]);
    assert!(incomplete.is_empty());
    common::cleanup(&mut src);

    let mut dst = common::cluster("backup-dst", 3, 4, 3, SLOW_DISK).await;
    let r = backup::restore(&restore_client(&dst), &dest, "b1", &RestoreOptions::default()).await.expect("restore");
    assert_eq!(r.records, m.records);
    let restored = state_by_partition(&dst, 4).await;
    check_exact(&m, &pre, &acks, before, &restored);
    // Big values came back whole.
    let big = restored.iter().flat_map(|s| s.iter()).filter(|(k, _)| k.starts_with(b"big-")).count();
    assert_eq!(big, 3);
    common::cleanup(&mut dst);
    drop(s3);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A corrupt chunk, a truncated object, a manifest of another format
/// version, a missing backup, a target with keys or another partition count:
/// each refused with a message naming it, and nothing written. Then the
/// intact backup restores exactly; the CLI lists it (table and JSON) and
/// names missing credentials and an unreachable destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_backups_and_bad_targets_are_refused_before_anything_is_written() {
    let dir = scratch_dir("backup-files");
    let url = format!("file://{}", dir.join("store").display());
    let mut src = common::cluster("backup-files-src", 3, 4, 3, SLOW_DISK).await;
    let c = src.client().unwrap();
    let pre = preload(&c, 4, 2_000, 2).await;
    let dest = backup::open(&url, Duration::from_secs(5), true).unwrap();
    // Chunks of at most 4 MiB: the two 1 MiB values and the rest make several.
    let m = backup::create(&c, &dest, "good", &CreateOptions::default()).await.expect("backup");
    assert_eq!(m.records, 2_002);
    let again = backup::create(&c, &dest, "good", &CreateOptions::default()).await.unwrap_err();
    assert!(format!("{again:#}").contains("backup good already exists"), "{again:#}");

    let store = dir.join("store");
    let variant = |name: &str| {
        copy_dir(&store.join("good"), &store.join(name));
        store.join(name)
    };
    // A flipped byte in a chunk's payload.
    let big_p = m.partition_backups.iter().max_by_key(|p| p.size_bytes).unwrap().clone();
    let corrupt = variant("corrupt");
    let obj = corrupt.join(&big_p.object);
    let mut bytes = std::fs::read(&obj).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x40;
    std::fs::write(&obj, &bytes).unwrap();
    // The last 100 bytes cut off.
    let truncated = variant("truncated");
    let obj_t = truncated.join(&big_p.object);
    let len = std::fs::metadata(&obj_t).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&obj_t).unwrap().set_len(len - 100).unwrap();
    // A manifest from a future format.
    let foreign = variant("foreign");
    let mf = std::fs::read_to_string(foreign.join("manifest.json")).unwrap();
    std::fs::write(foreign.join("manifest.json"), mf.replace("\"format_version\": 1", "\"format_version\": 2"))
        .unwrap();
    // A backup that never got its manifest.
    let partial = variant("partial");
    std::fs::remove_file(partial.join("manifest.json")).unwrap();

    let mut dst = common::cluster("backup-files-dst", 3, 4, 3, SLOW_DISK).await;
    let d = restore_client(&dst);
    let refused = |name: &'static str| {
        let (d, dest) = (d.clone(), dest.clone());
        async move { format!("{:#}", backup::restore(&d, &dest, name, &RestoreOptions::default()).await.unwrap_err()) }
    };
    let e = refused("corrupt").await;
    assert!(
        e.contains(&format!("good/../corrupt/{}", big_p.object)) || e.contains(&format!("corrupt/{}", big_p.object)),
        "{e}"
    );
    assert!(e.contains("fails its checksum"), "{e}");
    let e = refused("truncated").await;
    assert!(e.contains(&format!("{url}/truncated/{}", big_p.object)) && e.contains("is truncated"), "{e}");
    let e = refused("foreign").await;
    assert!(e.contains("backup foreign has format version 2; this keyraft reads format version 1"), "{e}");
    let e = refused("partial").await;
    assert!(e.contains("backup partial") && e.contains("is incomplete"), "{e}");
    let e = refused("absent").await;
    assert!(e.contains(&format!("no backup absent at {url}")), "{e}");
    let (list, incomplete) = backup::list(&dest).await.unwrap();
    assert_eq!(
        list.iter().map(|b| b.name.as_str()).collect::<BTreeSet<_>>(),
        BTreeSet::from(["corrupt", "foreign", "good", "truncated"])
    );
    assert_eq!(incomplete, ["partial"]);
    // Nothing was written by any refused restore.
    assert!(state_by_partition(&dst, 4).await.iter().all(|s| s.is_empty()), "a refused restore wrote keys");
    // A target holding keys.
    let e = format!("{:#}", backup::restore(&c, &dest, "good", &RestoreOptions::default()).await.unwrap_err());
    assert!(e.contains("the target cluster holds keys"), "{e}");
    // A target of another partition count.
    let mut other = common::cluster("backup-files-other", 1, 2, 1, SLOW_DISK).await;
    let e = format!(
        "{:#}",
        backup::restore(&other.client().unwrap(), &dest, "good", &RestoreOptions::default()).await.unwrap_err()
    );
    assert!(e.contains("backup good has 4 partitions but the target cluster has 2"), "{e}");
    common::cleanup(&mut other);

    // The intact backup restores exactly (no writes ran: the state is the source's).
    backup::restore(&d, &dest, "good", &RestoreOptions::default()).await.expect("restore");
    let restored = state_by_partition(&dst, 4).await;
    check_exact(&m, &pre, &[], 0, &restored);
    assert_eq!(restored, state_by_partition(&src, 4).await);

    // The CLI: list as a table and as JSON.
    let eps = dst.endpoints().join(",");
    let auth = admin_env(&dst);
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (ok, out, err) = cli(&["backup", "list", "--at", &url], &[]);
    assert!(ok, "{err}");
    assert!(out.starts_with("NAME") && out.lines().any(|l| l.starts_with("good ")), "{out}");
    assert!(err.contains("not listed (no manifest: failed or still running): partial"), "{err}");
    let (ok, out, err) = cli(&["backup", "list", "--at", &url, "-o", "json"], &[]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let good = v.as_array().unwrap().iter().find(|b| b["name"] == "good").unwrap();
    assert_eq!((good["records"].as_u64(), good["partitions"].as_u64()), (Some(2_002), Some(4)));
    // Restoring through the CLI into a cluster with keys is refused.
    let (ok, _, err) = cli(&["--endpoints", &eps, "backup", "restore", "--from", &url, "--backup", "good"], &auth);
    assert!(!ok && err.contains("the target cluster holds keys"), "{err}");
    // Missing credentials, and a destination nobody answers at.
    let (ok, _, err) = cli(&["--endpoints", &eps, "backup", "create", "--to", "s3://some-bucket/backups"], &auth);
    assert!(!ok && err.contains("s3://some-bucket/backups: no S3 credentials"), "{err}");
    let mut unreachable = auth.clone();
    unreachable.extend([
        ("AWS_ACCESS_KEY_ID", "x"),
        ("AWS_SECRET_ACCESS_KEY", "x"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
        ("AWS_ALLOW_HTTP", "true"),
    ]);
    let (ok, _, err) = cli(
        &["--endpoints", &eps, "backup", "create", "--to", "s3://some-bucket/backups", "--retry-timeout", "2"],
        &unreachable,
    );
    assert!(!ok && err.contains("cannot reach the backup destination s3://some-bucket/backups"), "{err}");

    common::cleanup(&mut dst);
    common::cleanup(&mut src);
    keyraft_client::local::remove_dir(&dir);
}

/// A node killed while a backup streams: the backup either completes (the
/// partition is started over on the new leader) with every object whole, or
/// fails and leaves no manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_backup_leaves_a_complete_backup_or_no_manifest() {
    let dir = scratch_dir("backup-kill");
    let url = format!("file://{}", dir.join("store").display());
    let mut src = common::cluster("backup-kill-src", 3, 4, 3, SLOW_DISK).await;
    let c = src.client().unwrap();
    // About 48 MiB, so the streams are still running when the node dies.
    preload(&c, 4, 200, 48).await;
    let dest = backup::open(&url, Duration::from_secs(5), true).unwrap();
    let (victim, _) = common::busiest_leader(&src).await;
    let task = {
        let (c, dest) = (c.clone(), dest.clone());
        tokio::spawn(async move { backup::create(&c, &dest, "k1", &CreateOptions::default()).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let finished_early = task.is_finished();
    src.kill(victim);
    let outcome = task.await.unwrap();
    let manifest = dir.join("store/k1/manifest.json");
    match outcome {
        Ok(m) => {
            eprintln!("backup completed (finished before the kill: {finished_early})");
            let v = backup::verify(&dest, "k1").await.expect("every object of a complete backup is whole");
            assert_eq!(v, m);
            assert_eq!(m.records, 248);
        }
        Err(e) => {
            eprintln!("backup failed: {e:#}");
            assert!(!manifest.exists(), "a failed backup left a manifest");
            let (list, _) = backup::list(&dest).await.unwrap();
            assert!(list.is_empty(), "a failed backup is listed: {list:?}");
        }
    }
    common::cleanup(&mut src);
    keyraft_client::local::remove_dir(&dir);
}
