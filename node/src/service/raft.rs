//! Node-to-node service: openraft RPCs addressed to a group, and proposal
//! forwarding to a group's leader.

use std::sync::Arc;

use keyraft_api::pb::raft_server::Raft as RaftRpc;
use keyraft_api::pb::RaftMessage;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::node::Node;
use crate::types::Command;

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

impl RaftService {
    /// Checks the sender's cluster and opens the addressed group.
    async fn group(&self, m: &RaftMessage) -> Result<Arc<crate::groups::Group>, Status> {
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
        let m = req.into_inner();
        let g = self.group(&m).await?;
        let res = g.raft.append_entries(decode(&m)?).await;
        encode(m.group, &res)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let m = req.into_inner();
        let g = self.group(&m).await?;
        let res = g.raft.vote(decode(&m)?).await;
        encode(m.group, &res)
    }

    async fn install_snapshot(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let m = req.into_inner();
        let g = self.group(&m).await?;
        let res = g.raft.install_snapshot(decode(&m)?).await;
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
