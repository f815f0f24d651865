//! Data directories as real volumes leave them: a freshly formatted
//! filesystem's `lost+found`, and the temp file a crash during the identity
//! write leaves behind. Real node processes on loopback.

mod common;

use std::fs;

use keyraft_client::local::{scratch_dir, LocalCluster, LocalOptions};
use keyraft_client::ConsistencyLevel;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_volumes_with_lost_and_found_bootstrap_and_join() {
    let mut c = LocalCluster::new(LocalOptions {
        nodes: 3,
        base_port: 0,
        host: "127.0.0.1".into(),
        data_dir: scratch_dir("datadir"),
        node_bin: common::node_bin(),
        cluster: "test".into(),
        extra_args: vec![],
    })
    .unwrap();
    for n in &c.nodes {
        fs::create_dir_all(n.data_dir.join("lost+found")).unwrap();
    }
    // Node 1 crashed while writing its first identity: a torn temp file.
    fs::write(c.nodes[1].data_dir.join("KEYRAFT_IDENTITY.tmp"), b"{\"format_version\": 1, \"node_").unwrap();
    c.start_all().unwrap();
    c.bootstrap(2, 3).await.expect("bootstrap on lost+found volumes");
    c.wait_ready(&[0, 1, 2], common::READY).await.unwrap();

    // A node joining later, on a fresh volume, left with an empty temp file.
    let joiner = opts_dir(&c, 3);
    fs::create_dir_all(joiner.join("lost+found")).unwrap();
    fs::write(joiner.join("KEYRAFT_IDENTITY.tmp"), b"").unwrap();
    let j = c.add_node().unwrap();
    c.wait_ready(&[j], common::READY).await.expect("joiner on a lost+found volume becomes ready");

    let client = c.client().unwrap();
    client.put("k", "v").await.unwrap();

    // A crash while the identity was being rewritten (the cluster id is
    // recorded after joining): the old identity and a torn temp file.
    c.kill(1);
    fs::write(c.nodes[1].data_dir.join("KEYRAFT_IDENTITY.tmp"), b"{\"format_ver").unwrap();
    c.start(1).unwrap();
    c.wait_ready(&[1], common::READY).await.expect("restart after a torn identity rewrite");
    let got = c.client_of(1).unwrap().get("k", Some(ConsistencyLevel::Linearizable)).await.unwrap();
    assert_eq!(got.as_deref(), Some(&b"v"[..]));
    for n in &c.nodes {
        assert!(n.data_dir.join("lost+found").is_dir(), "{}: lost+found left in place", n.name);
    }
    common::cleanup(&mut c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_data_dir_is_still_refused() {
    let mut c = LocalCluster::new(LocalOptions {
        nodes: 1,
        base_port: 0,
        host: "127.0.0.1".into(),
        data_dir: scratch_dir("foreign"),
        node_bin: common::node_bin(),
        cluster: "test".into(),
        extra_args: vec![],
    })
    .unwrap();
    fs::create_dir_all(c.nodes[0].data_dir.join("lost+found")).unwrap();
    fs::write(c.nodes[0].data_dir.join("postgresql.conf"), "x").unwrap();
    c.start(0).unwrap();
    let deadline = std::time::Instant::now() + common::READY;
    while c.is_running(0) {
        assert!(std::time::Instant::now() < deadline, "a foreign data directory was not refused");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let log = fs::read_to_string(c.log_path(0)).unwrap();
    assert!(log.contains("holds files but no KEYRAFT_IDENTITY"), "{log}");
    assert!(!c.nodes[0].data_dir.join("KEYRAFT_IDENTITY").exists());
    common::cleanup(&mut c);
}

/// Where node `i`'s data directory will be laid out.
fn opts_dir(c: &LocalCluster, i: usize) -> std::path::PathBuf {
    c.opts.data_dir.join(format!("node-{i}"))
}
/// A write cut short by a full disk leaves a torn batch at the end of the
/// storage engine's journal (here: an item whose value length fields
/// disagree and whose bytes end early). The node aborts on the failed write;
/// at restart the engine cuts the torn batch and every acknowledged write is
/// there. (Seen in the nemesis: the restart of a node after `disk full`
/// failed on an assertion of the engine's journal reader in debug builds.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_torn_by_a_full_disk_is_cut_at_the_last_whole_batch() {
    let mut c = common::cluster("torn-journal", 1, 1, 1, &[]).await;
    let client = c.client().unwrap();
    for i in 0..50 {
        client.put(format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    c.kill(0);
    let db = c.nodes[0].data_dir.join("db");
    let journal = fs::read_dir(&db)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
        .max_by_key(|p| p.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0))
        .expect("a journal file");
    // Start of a batch (tag 1, 1 item, a sequence number), then an item
    // (tag 2, value type 0, no compression, keyspace 0, key length 3, value
    // length 26, on-disk length 0, then the key), and nothing after it.
    let mut torn = vec![1u8];
    torn.extend(1u32.to_le_bytes());
    torn.extend(u64::MAX.to_le_bytes());
    torn.extend([2u8, 0, 0]);
    torn.extend(0u64.to_le_bytes());
    torn.extend(3u16.to_le_bytes());
    torn.extend(26u32.to_le_bytes());
    torn.extend(0u32.to_le_bytes());
    torn.extend(b"abc");
    // The journal file is preallocated: the batches end at the trailer of
    // the last one (`FJL` and the format byte 3 end every batch).
    let bytes = fs::read(&journal).unwrap();
    let end = bytes.windows(4).rposition(|w| w == b"FJL\x03").expect("a whole batch in the journal") + 4;
    let mut f = fs::OpenOptions::new().write(true).open(&journal).unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(end as u64)).unwrap();
    std::io::Write::write_all(&mut f, &torn).unwrap();
    drop(f);
    c.start(0).unwrap();
    c.wait_ready(&[0], common::READY).await.expect("restart after a torn journal");
    let client = c.client().unwrap();
    for i in 0..50 {
        let got = client.get(format!("k{i}"), Some(ConsistencyLevel::Linearizable)).await.unwrap();
        assert_eq!(got.as_deref(), Some(format!("v{i}").as_bytes()), "k{i}");
    }
    common::cleanup(&mut c);
}
