//! openraft's network for one group, carried by the node's shared peer
//! connections. Messages are bincode-encoded openraft types wrapped in a
//! `RaftMessage` that names the group and the cluster.

use std::time::Duration;

use keyraft_api::pb::RaftMessage;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use crate::meta::ClusterMeta;
use crate::peers::Peers;
use crate::types::{GroupId, NodeId, TypeConfig};

#[derive(Clone)]
pub struct NetworkFactory {
    pub group: GroupId,
    pub cluster: String,
    pub peers: Peers,
    /// Latest addresses from the member registry win over those recorded in
    /// the Raft membership, so a node that moved stays reachable.
    pub meta: watch::Receiver<Option<std::sync::Arc<ClusterMeta>>>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = GroupNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GroupNetwork {
        GroupNetwork { f: self.clone(), target, addr: node.addr.clone() }
    }
}

pub struct GroupNetwork {
    f: NetworkFactory,
    target: NodeId,
    addr: String,
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl GroupNetwork {
    fn addr(&self) -> String {
        self.f
            .meta
            .borrow()
            .as_ref()
            .and_then(|m| m.member_addr(self.target).map(str::to_string))
            .unwrap_or_else(|| self.addr.clone())
    }

    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        fail::fail_point!("network::send", |_| Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
            "failpoint network::send"
        )))));
        let payload = bincode::serialize(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let msg = RaftMessage { group: self.f.group, payload, cluster: self.f.cluster.clone(), target: self.target };
        let mut client = self.f.peers.raft(&self.addr()).map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let fut = async move {
            match rpc {
                Rpc::Append => client.append_entries(msg).await,
                Rpc::Vote => client.vote(msg).await,
                Rpc::Snapshot => client.install_snapshot(msg).await,
            }
        };
        let resp = match tokio::time::timeout(ttl, fut).await {
            Err(_) => {
                let e = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer from node {} within {ttl:?}", self.target),
                );
                return Err(RPCError::Network(NetworkError::new(&e)));
            }
            Ok(Err(status)) => return Err(RPCError::Unreachable(Unreachable::new(&status))),
            Ok(Ok(r)) => r.into_inner(),
        };
        let res: Result<Resp, RaftError<NodeId, E>> =
            bincode::deserialize(&resp.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for GroupNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let carries_entries = !rpc.entries.is_empty();
        let start = std::time::Instant::now();
        let res = self.call(Rpc::Append, &rpc, option.hard_ttl()).await;
        if carries_entries && res.is_ok() {
            crate::metrics::observe_raft_append(start.elapsed().as_secs_f64());
        }
        res
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        let bytes = rpc.data.len() as u64;
        let res = self.call(Rpc::Snapshot, &rpc, option.hard_ttl()).await;
        if res.is_ok() {
            crate::metrics::add_snapshot_bytes_sent(bytes);
        }
        res
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, option.hard_ttl()).await
    }
}
