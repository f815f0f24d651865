//! Errors a node answers requests with; each maps to one gRPC status.

use keyraft_api::LEADER_HINT_HEADER;
use tonic::{Code, Status};

use crate::types::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("node {name} has not joined a cluster yet; bootstrap it (Admin.Bootstrap, `keyraft local up`) or wait for it to join")]
    NotJoined { name: String },
    #[error("partition {partition}: this node is not the leader{}", leader_text(.leader))]
    NotLeader { partition: u32, leader: Option<(NodeId, String)> },
    #[error("partition {partition}: no leader is reachable right now ({detail}); retry")]
    NoLeader { partition: u32, detail: String },
    #[error("partition {partition}: session token index {index} is beyond the partition's last log index {last}; it was not issued by this cluster")]
    UnknownSessionToken { partition: u32, index: u64, last: u64 },
    #[error("{0}")]
    Timeout(String),
    #[error("the cluster is already bootstrapped: {0}")]
    AlreadyBootstrapped(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("node {name} ({id}) is {} and no longer serves the cluster; its view of the cluster is stale; ask another node", .state.as_str())]
    Departed { name: String, id: NodeId, state: crate::meta::MemberState },
    #[error("internal error: {0}")]
    Internal(String),
}

fn leader_text(leader: &Option<(NodeId, String)>) -> String {
    match leader {
        Some((id, addr)) => format!("; the leader is node {id} at {addr}"),
        None => "; no leader is known yet".into(),
    }
}

impl NodeError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { field, reason: reason.into() }
    }
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        let code = match &e {
            NodeError::InvalidArgument { .. } | NodeError::UnknownSessionToken { .. } => Code::InvalidArgument,
            NodeError::NotJoined { .. } | NodeError::FailedPrecondition(_) | NodeError::Departed { .. } => {
                Code::FailedPrecondition
            }
            NodeError::AlreadyBootstrapped(_) => Code::AlreadyExists,
            NodeError::NotLeader { .. } | NodeError::NoLeader { .. } => Code::Unavailable,
            NodeError::Timeout(_) => Code::DeadlineExceeded,
            NodeError::Internal(_) => Code::Internal,
        };
        let mut status = Status::new(code, e.to_string());
        if let NodeError::NotLeader { leader: Some((_, addr)), .. } = &e {
            if let Ok(v) = addr.parse() {
                status.metadata_mut().insert(LEADER_HINT_HEADER, v);
            }
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_names_partition_and_leader_and_carries_a_hint() {
        let s: Status = NodeError::NotLeader { partition: 3, leader: Some((7, "127.0.0.1:7002".into())) }.into();
        assert_eq!(s.code(), Code::Unavailable);
        assert!(
            s.message().contains("partition 3") && s.message().contains("node 7 at 127.0.0.1:7002"),
            "{}",
            s.message()
        );
        assert_eq!(s.metadata().get(LEADER_HINT_HEADER).unwrap(), "127.0.0.1:7002");
    }

    #[test]
    fn a_departed_member_is_failed_precondition_naming_it_and_its_state() {
        let s: Status =
            NodeError::Departed { name: "n2".into(), id: 9, state: crate::meta::MemberState::Removed }.into();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(s.message().starts_with("node n2 (9) is removed"), "{}", s.message());
    }

    #[test]
    fn bad_input_is_invalid_argument_naming_the_field() {
        let s: Status = NodeError::invalid("key", "1 MiB exceeds the limit of 4096 bytes").into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().starts_with("key: "));
    }
}
