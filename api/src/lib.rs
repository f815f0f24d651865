//! The Keyraft wire protocol and the small pieces of logic that client and
//! node must agree on: partition hashing, group numbering, consistency levels,
//! session tokens and request limits.

pub mod consistency;
pub mod limits;
#[cfg(feature = "logging")]
pub mod logging;
pub mod partition;
pub mod placement;
#[cfg(feature = "tls")]
pub mod tls;

/// Generated gRPC and protobuf types (package `keyraft.v1`).
pub mod pb {
    tonic::include_proto!("keyraft.v1");
}

pub use consistency::{ConsistencyLevel, SessionToken};
pub use partition::{group_of_partition, partition_for_key, partition_of_group, GroupId, META_GROUP};

/// gRPC metadata key a node sets on NotLeader answers: the leader's address.
pub const LEADER_HINT_HEADER: &str = "x-keyraft-leader";
/// gRPC metadata key counting how many times a request was forwarded.
pub const HOPS_HEADER: &str = "x-keyraft-hops";
