//! keyraft-node: a partitioned key-value database in which every partition
//! is a Raft group (openraft), replicated over gRPC and stored in one shared
//! write-ahead log per node.
//!
//! Layout: [`types`] (openraft type config and commands), [`storage`] (WAL,
//! log store, state machine), [`network`] + [`peers`] (Raft over gRPC),
//! [`groups`] (group lifecycle), [`node`] (joining, routing, reads;
//! [`read_index`] batches linearizable reads),
//! [`service`] (gRPC), [`http`] + [`metrics`], [`server`] (process).

pub mod auth;
pub mod config;
pub mod error;
pub mod groups;
pub mod http;
pub mod identity;
pub mod meta;
pub mod metrics;
pub mod network;
pub mod node;
pub mod peers;
pub mod placement;
pub mod read_index;
pub mod server;
pub mod service;
pub mod storage;
pub mod types;
