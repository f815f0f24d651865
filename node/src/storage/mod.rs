//! Durable storage for every Raft group of a node.
//!
//! All groups share one write-ahead log ([`wal::Wal`]): appends and votes of
//! every partition that arrive together cost one fsync. Each group sees the
//! WAL through a [`log_store::LogStore`]; its state machine lives in memory
//! and is made durable by snapshots ([`state_machine::StateMachine`]) plus
//! the log entries after them.

pub mod log_store;
pub mod sessions;
pub mod state_machine;
pub mod wal;

pub use log_store::LogStore;
pub use state_machine::StateMachine;
pub use wal::Wal;
