//! openraft's storage conformance suite, run against the node's log store
//! and state machine, both in the storage engine.

use keyraft_node::storage::wal::WalOptions;
use keyraft_node::storage::{LogStore, StateMachine, Wal};
use keyraft_node::types::{StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let wal = Wal::open(&dir.path().join("db"), WalOptions::default()).expect("open wal");
        let sm = StateMachine::open(1, wal.clone(), &dir.path().join("tmp"), None).expect("open state machine");
        // The log purges only what the state machine's saved state covers
        // (tested in the log's own tests); the suite purges without applying,
        // so declare every index covered.
        wal.state_saved(1, Some(u64::MAX)).expect("no deferred purge");
        Ok((dir, LogStore::new(1, wal), sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("storage suite");
}
