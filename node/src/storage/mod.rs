//! Durable storage for every Raft group of a node.
//!
//! The Raft logs of all groups live in one embedded storage engine (fjall,
//! one journal; see [`wal::Wal`]): appends and votes of every partition that
//! arrive together cost one fsync. Each group sees its log through a
//! [`log_store::LogStore`]. The state machines live in the same engine
//! (keyspace `sm`, [`sm_store`]), written by each apply batch
//! ([`state_machine::StateMachine`]); snapshots are written out from an
//! engine view when a replica needs one ([`snapshot`]).
//!
//! Failpoints (`fail` crate, built with the `failpoints` feature; armed with
//! the `FAILPOINTS` environment variable or over HTTP, see [`failpoints`]):
//!
//! | name                       | where                                              |
//! |----------------------------|----------------------------------------------------|
//! | `storage::log_write`       | before a batch (entries, vote, truncate, purge) is committed to the engine |
//! | `storage::fsync`           | before the writer's journal fsync                  |
//! | `storage::vote_save`       | before a vote is written                           |
//! | `storage::log_purge`       | before purged entries are removed                  |
//! | `storage::sm_write`        | before an apply batch is committed to the engine   |
//! | `storage::snapshot_build`  | before a snapshot is built                         |
//! | `storage::snapshot_install`| before a received snapshot is written and installed |
//! | `storage::membership`      | when a membership entry is applied                 |
//!
//! Outside storage: `network::send` / `network::delay` (Raft messages lost or
//! held, `network.rs`), `network::snapshot_delay` (each snapshot chunk held) and `placement::hand_over` (`return`: a leader never
//! hands its leadership over, so a drain never completes; `placement.rs`).

use std::path::{Path, PathBuf};

pub mod entry_cache;
#[cfg(feature = "failpoints")]
pub mod failpoints;
pub mod log_store;
pub mod sessions;
pub mod sm_store;
pub mod snapshot;
pub mod state_machine;
pub mod throttle;
pub mod wal;

pub use log_store::LogStore;
pub use state_machine::StateMachine;
pub use wal::Wal;

/// The storage format of this build: Raft logs and state machines in one
/// engine (`db/`). 1: bincode log in `wal/`; 2: log in `db/`, state
/// machines in memory with snapshot files under `groups/`.
pub const STORAGE_FORMAT: u32 = 3;

/// A data directory this build cannot open.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("data directory {dir} was written by an older Keyraft release (its log is in {dir}/wal, storage format 1); this release keeps data in a new format and cannot read it. Refusing to start. To migrate, replace the node: delete the data directory (the volume) and start the node again; it joins as a new incarnation and receives its replicas from the other members (remove the old member first if the cluster still counts it)", dir = .dir.display())]
    OldRelease { dir: PathBuf },
    #[error("data directory {dir} was written by an older Keyraft release (state machines in snapshot files under {dir}/groups, storage format 2); this release keeps them in the storage engine and cannot read it. Refusing to start. To migrate, replace the node: delete the data directory (the volume) and start the node again; it joins as a new incarnation and receives its replicas from the other members (remove the old member first if the cluster still counts it)", dir = .dir.display())]
    SnapshotFiles { dir: PathBuf },
}

/// Refuses a data directory written by an older storage format: the bincode
/// write-ahead log (directory `wal/`), or the engine log with state machines
/// in snapshot files (identity format 1 without `wal/`).
pub fn refuse_old_format(data_dir: &Path) -> Result<(), FormatError> {
    if data_dir.join("wal").is_dir() {
        return Err(FormatError::OldRelease { dir: data_dir.to_path_buf() });
    }
    // An unreadable identity is the identity check's to report.
    let version = std::fs::read(data_dir.join("KEYRAFT_IDENTITY"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("format_version")?.as_u64());
    if version == Some(1) {
        return Err(FormatError::SnapshotFiles { dir: data_dir.to_path_buf() });
    }
    Ok(())
}
