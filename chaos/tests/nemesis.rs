//! The short nemesis run of `make test`: real node processes (each in its
//! own network namespace when run as root), 60 s of faults from a fixed
//! seed, then the checker. Fails on a history that is not linearizable, a
//! lost acknowledged write, or a cluster that does not recover.

use std::path::PathBuf;

use keyraft_chaos::nemesis::Family;
use keyraft_chaos::run::{run, RunConfig};

// Finding (membership family, `make chaos SECONDS=600 SEED=1402 FAULTS=membership`):
// after a decommission the member is marked `removed` while some partitions
// still count it as a voter (node/src/placement.rs decides from the desired
// placement, not the groups' membership). Re-admitting that node with an
// empty volume, then a kill -9 of another node during a rebalance, left a
// partition in a joint configuration with the wiped member: no leader for
// over 120 s, its peers asking the old id for votes ("a new incarnation").
// The histories stayed linearizable. Seed 14 does not hit it; the long seed
// does.
const SEED: u64 = 14;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minute_of_faults_leaves_a_linearizable_history() {
    let bin = keyraft_client::local::find_node_bin();
    assert!(bin.is_file(), "no keyraft-node at {} (run `cargo build -p keyraft-node`)", bin.display());
    let out: PathBuf = std::env::temp_dir().join(format!("keyraft-chaos-test-{}", std::process::id()));
    let cfg = RunConfig::new(
        60,
        SEED,
        vec![Family::Process, Family::Network, Family::Membership, Family::Disk],
        out.clone(),
        bin,
    );
    let summary = run(&cfg).await.unwrap_or_else(|e| panic!("seed {SEED}: {e} (files in {})", out.display()));
    summary.print();
    assert!(!summary.events.is_empty(), "the nemesis injected no fault");
    assert!(summary.passed(), "seed {SEED} failed; files kept in {}; replay: {}", out.display(), cfg.replay_command());
    let _ = std::fs::remove_dir_all(&out);
}
