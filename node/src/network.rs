//! openraft's network for one group, carried by the node's shared peer
//! connections. Messages are bincode-encoded openraft types wrapped in a
//! `RaftMessage` that names the group and the cluster.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use keyraft_api::pb::RaftMessage;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Unreachable,
};
use openraft::network::snapshot_transport::{Chunked, SnapshotTransport};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::SnapshotResponse;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::storage::Snapshot;
use openraft::{BasicNode, RaftMetrics, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use crate::meta::ClusterMeta;
use crate::peers::Peers;
use crate::types::{GroupId, NodeId, TypeConfig};

/// Largest AppendEntries payload sent in one RPC, in bytes. openraft gives
/// one AppendEntries a heartbeat interval to be shipped and fsynced, so a
/// batch is cut by bytes as well as by entries; a single larger entry (a
/// value near the limit) still goes alone.
pub const MAX_APPEND_BYTES: u64 = 2 << 20;

/// How many leading entries of `entries` fit in [`MAX_APPEND_BYTES`] (at
/// least one).
pub fn entries_that_fit<T: Serialize>(entries: &[T]) -> usize {
    let mut total = 0u64;
    for (i, e) in entries.iter().enumerate() {
        total += bincode::serialized_size(e).unwrap_or(u64::MAX);
        if total > MAX_APPEND_BYTES {
            return i.max(1);
        }
    }
    entries.len()
}

/// Holds the caller for the milliseconds the failpoint `name` returns
/// (`return(MS)`), without blocking the runtime as the `fail` crate's own
/// delay (a thread sleep) would.
async fn failpoint_delay(name: &str) {
    #[cfg(feature = "failpoints")]
    if let Some(ms) = fail::eval(name, |arg| arg.and_then(|a| a.parse::<u64>().ok())).flatten() {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

#[derive(Clone)]
pub struct NetworkFactory {
    pub group: GroupId,
    pub cluster: String,
    pub peers: Peers,
    /// Latest addresses from the member registry win over those recorded in
    /// the Raft membership, so a node that moved stays reachable.
    pub meta: watch::Receiver<Option<std::sync::Arc<ClusterMeta>>>,
    /// The group's own metrics, set once its Raft is created: who is a voter.
    pub raft_metrics: Arc<OnceLock<watch::Receiver<RaftMetrics<NodeId, BasicNode>>>>,
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

    // The failpoint closure returns the same (large) error type as the RPC.
    #[allow(clippy::result_large_err)]
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
        // A slow link: `return(MS)` holds this message MS milliseconds.
        failpoint_delay("network::delay").await;
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
        // Too many bytes: openraft retries at once with the hinted number of
        // entries (and keeps the hint for the next few RPCs), so an
        // oversized batch is split instead of timing out forever.
        let fit = entries_that_fit(&rpc.entries);
        if fit < rpc.entries.len() {
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fit as u64)));
        }
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
        // A slow snapshot link: `return(MS)` holds each chunk MS milliseconds.
        failpoint_delay("network::snapshot_delay").await;
        let bytes = rpc.data.len() as u64;
        let res = self.call(Rpc::Snapshot, &rpc, option.hard_ttl()).await;
        if res.is_ok() {
            crate::metrics::add_snapshot_bytes_sent(bytes);
        }
        res
    }

    /// Snapshots to learners (replicas being added: rebalancing, repair)
    /// are paced by the node's send rate. Those to voters are not: openraft
    /// sends a follower no heartbeat while its snapshot is in flight, so a
    /// voter waiting longer than its election timeout between two chunks
    /// would call an election; a learner never does.
    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        mut snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let learner = self.f.raft_metrics.get().is_some_and(|m| {
            let m = m.borrow();
            let membership = m.membership_config.membership();
            membership.learner_ids().any(|id| id == self.target) && !membership.voter_ids().any(|id| id == self.target)
        });
        if learner {
            snapshot.snapshot = Box::new(snapshot.snapshot.paced(self.f.peers.send_throttle()));
        }
        Chunked::send_snapshot(self, vote, snapshot, cancel, option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, option.hard_ttl()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_by_bytes_but_never_below_one_entry() {
        let small = vec![vec![0u8; 1000]; 64];
        assert_eq!(entries_that_fit(&small), 64);
        let big = vec![vec![0u8; 1 << 20]; 64];
        assert_eq!(entries_that_fit(&big), 1);
        let huge = vec![vec![0u8; 3 << 20]; 2];
        assert_eq!(entries_that_fit(&huge), 1, "an entry larger than the cap still goes alone");
        let mixed = vec![vec![0u8; 700 << 10]; 5];
        assert_eq!(entries_that_fit(&mixed), 2);
    }
}
