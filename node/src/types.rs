//! The openraft type configuration shared by every group on a node, and the
//! commands that travel through the Raft logs.

use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::meta::MetaOp;

pub type NodeId = u64;
pub type GroupId = keyraft_api::GroupId;

openraft::declare_raft_types!(
    /// One configuration for the meta group and every partition group.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = BasicNode,
        SnapshotData = crate::storage::snapshot::SnapshotData,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, BasicNode>;
pub type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;

/// A client's write identity, so a retried write is applied once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestId {
    pub client_id: u64,
    pub seq: u64,
    /// The client's lowest unanswered seq (0: not sent); see `Sessions`.
    pub first_unacked: u64,
}

/// What a partition's log carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// A key-value write, with the request id used for exactly-once retries.
    Kv { request_id: Option<RequestId>, op: KvOp },
    /// A change to cluster metadata (meta group only).
    Meta(MetaOp),
}

// Byte strings are (de)serialized as bytes, not as sequences of u8: the
// same encoding, without a call per byte (a 1 MiB value is copied once).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum KvOp {
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// `expected: None` means "must not exist"; `new: None` deletes.
    Cas {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        expected: Option<Vec<u8>>,
        #[serde(with = "serde_bytes")]
        new: Option<Vec<u8>>,
    },
    /// Applied atomically: `Some(value)` puts, `None` deletes.
    Batch(Vec<(Vec<u8>, Option<Vec<u8>>)>),
}

/// What applying a command produced; returned to the proposer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    #[default]
    Done,
    Deleted {
        existed: bool,
    },
    Cas {
        succeeded: bool,
        #[serde(with = "serde_bytes")]
        current: Option<Vec<u8>>,
    },
    Meta(Result<(), String>),
    /// The write's seq is below what its client has acknowledged: a late
    /// copy of a write already answered, not applied again.
    AlreadyAcknowledged,
}

/// The keys and values of one partition.
pub type KvMap = BTreeMap<Vec<u8>, Vec<u8>>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Values as bytes keep the encoding of a sequence of u8, so what the
    /// previous build wrote still decodes.
    #[test]
    fn byte_fields_keep_their_encoding() {
        #[derive(Serialize)]
        enum OldKvOp {
            Put { key: Vec<u8>, value: Vec<u8> },
        }
        let old = bincode::serialize(&OldKvOp::Put { key: b"k".to_vec(), value: vec![1, 2, 3] }).unwrap();
        let new = bincode::serialize(&KvOp::Put { key: b"k".to_vec(), value: vec![1, 2, 3] }).unwrap();
        assert_eq!(old, new);
        match bincode::deserialize::<KvOp>(&old).unwrap() {
            KvOp::Put { key, value } => assert_eq!((key, value), (b"k".to_vec(), vec![1, 2, 3])),
            other => panic!("{other:?}"),
        }
    }
}
