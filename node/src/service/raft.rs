//! Node-to-node service: openraft RPCs addressed to a group, and proposal
//! forwarding to a group's leader.

use std::sync::Arc;

use keyraft_api::pb::raft_server::Raft as RaftRpc;
use keyraft_api::pb::RaftMessage;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use crate::auth::Caller;
use crate::node::Node;
use crate::types::{Command, NodeId, TypeConfig};

pub struct RaftService {
    pub node: Arc<Node>,
}

fn decode<T: DeserializeOwned>(m: &RaftMessage) -> Result<T, Status> {
    bincode::deserialize(&m.payload).map_err(|e| Status::invalid_argument(format!("payload: undecodable: {e}")))
}

fn encode<T: Serialize>(group: u64, v: &T) -> Result<Response<RaftMessage>, Status> {
    let payload = bincode::serialize(v).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftMessage { group, payload, cluster: String::new(), target: 0 }))
}

/// The node a Raft request says it comes from (the candidate or leader
/// named in its vote).
fn sender_of(vote: &openraft::Vote<NodeId>) -> Option<NodeId> {
    vote.leader_id().voted_for()
}

impl RaftService {
    /// With TLS, the sender a message claims (by node id) must be the member
    /// its certificate names. An id the registry does not hold yet (a new
    /// cluster's first messages, a replica that lags the registry) is taken
    /// from any member of the cluster's CA: refusing it could keep a lagging
    /// replica from ever catching up.
    fn check_sender(&self, caller: Option<&Caller>, sender: Option<NodeId>) -> Result<(), Status> {
        let (Some(Caller(principal)), Some(sender)) = (caller, sender) else { return Ok(()) };
        let Some(cert_member) = principal.member_name() else {
            return Err(Status::permission_denied(format!(
                "Raft messages come from members only; the caller is {principal}"
            )));
        };
        let meta = self.node.meta_rx.borrow().clone();
        if let Some(claimed) = meta.as_ref().and_then(|m| m.members.get(&sender)) {
            if claimed.name != cert_member {
                return Err(Status::permission_denied(format!(
                    "Raft message claims to come from member {:?} (node {sender}), but its certificate is member {cert_member:?}'s",
                    claimed.name
                )));
            }
        }
        Ok(())
    }

    /// Checks the sender's cluster and the node the message is meant for.
    fn addressed(&self, m: &RaftMessage) -> Result<(), Status> {
        if m.cluster != self.node.cfg.cluster {
            return Err(Status::failed_precondition(format!(
                "cluster: message for cluster {:?} reached a node of cluster {:?}",
                m.cluster, self.node.cfg.cluster
            )));
        }
        if m.target != 0 && m.target != self.node.id() {
            return Err(Status::failed_precondition(format!(
                "target: message for node {} reached node {} at that address (a new incarnation)",
                m.target,
                self.node.id()
            )));
        }
        Ok(())
    }

    /// Opens the addressed group.
    async fn group(&self, m: &RaftMessage) -> Result<Arc<crate::groups::Group>, Status> {
        if let Some(g) = self.node.groups.get(m.group) {
            return Ok(g);
        }
        // A leader may reach a new replica before the replica's own meta
        // group has applied the placement that puts the group here; open it
        // on demand then, but never a group this node is not meant to hold
        // (a stale sender would resurrect a replica that moved away).
        if !self.node.may_host(m.group) {
            return Err(Status::failed_precondition(format!(
                "group {}: node {} holds no replica of it",
                m.group,
                self.node.id()
            )));
        }
        Ok(self.node.groups.open(m.group).await?)
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let caller = req.extensions().get::<Caller>().cloned();
        let m = req.into_inner();
        self.addressed(&m)?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&m)?;
        self.check_sender(caller.as_ref(), sender_of(&rpc.vote))?;
        let g = self.group(&m).await?;
        let res = g.raft.append_entries(rpc).await;
        encode(m.group, &res)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let caller = req.extensions().get::<Caller>().cloned();
        let m = req.into_inner();
        self.addressed(&m)?;
        let rpc: VoteRequest<NodeId> = decode(&m)?;
        self.check_sender(caller.as_ref(), sender_of(&rpc.vote))?;
        let g = self.group(&m).await?;
        let res = g.raft.vote(rpc).await;
        encode(m.group, &res)
    }

    async fn install_snapshot(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let caller = req.extensions().get::<Caller>().cloned();
        let m = req.into_inner();
        self.addressed(&m)?;
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(&m)?;
        self.check_sender(caller.as_ref(), sender_of(&rpc.vote))?;
        let g = self.group(&m).await?;
        // openraft 0.9 sends a follower no heartbeat while its snapshot is in
        // flight, and a chunk does not reset the election timer: a voter
        // whose snapshot takes longer than its election timeout would call
        // an election, unseat the leader and restart its own snapshot, over
        // and over. Each chunk counts as the leader's heartbeat: an empty
        // AppendEntries from the log's start changes nothing but the timer
        // (a stale vote is refused, as the chunk will be).
        let heartbeat =
            AppendEntriesRequest { vote: rpc.vote, prev_log_id: None, leader_commit: None, entries: vec![] };
        let _ = g.raft.append_entries(heartbeat).await;
        let res = g.raft.install_snapshot(rpc).await;
        encode(m.group, &res)
    }

    async fn propose(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let m = req.into_inner();
        if m.cluster != self.node.cfg.cluster {
            return Err(Status::failed_precondition("cluster: proposal from another cluster"));
        }
        let cmd: Command = decode(&m)?;
        let ans = self.node.handle_propose(m.group, cmd).await;
        encode(m.group, &ans)
    }
}
