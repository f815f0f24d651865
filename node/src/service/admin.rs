//! Administration: status of the node and its groups, bootstrap, health.

use std::sync::Arc;

use keyraft_api::pb::admin_server::Admin;
use keyraft_api::pb::{self};
use keyraft_api::ConsistencyLevel;
use openraft::ServerState;
use tonic::{Request, Response, Status};

use super::observe;
use crate::error::NodeError;
use crate::meta::MetaOp;
use crate::node::Node;
use crate::types::Command;

pub struct AdminService {
    pub node: Arc<Node>,
}

fn role(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

pub fn status(node: &Node) -> pb::StatusResponse {
    let groups = node
        .groups
        .all()
        .into_iter()
        .map(|g| {
            let m = g.raft.metrics().borrow().clone();
            let membership = m.membership_config.membership();
            let voters: Vec<u64> = membership.voter_ids().collect();
            let learners: Vec<u64> = membership.learner_ids().collect();
            pb::GroupStatus {
                group: g.id,
                role: role(m.state).into(),
                term: m.current_term,
                leader: m.current_leader.unwrap_or(0),
                commit_index: node
                    .wal
                    .with_group(g.id, |l| l.committed.map_or(0, |c| c.index)),
                applied_index: m.last_applied.map_or(0, |l| l.index),
                last_log_index: m.last_log_index.unwrap_or(0),
                snapshot_index: m.snapshot.map_or(0, |l| l.index),
                purged_index: m.purged.map_or(0, |l| l.index),
                voters,
                learners,
                keys: g.sm.read().kv.len() as u64,
            }
        })
        .collect();
    let cluster = node.meta_rx.borrow().clone().map(|m| pb::ClusterView {
        cluster_id: m.cluster_id.clone(),
        partitions: m.partitions,
        replication_factor: m.replication_factor,
        members: m
            .members
            .values()
            .map(|mm| pb::MemberRecord {
                id: mm.id,
                name: mm.name.clone(),
                advertise: mm.advertise.clone(),
                zone: mm.zone.clone(),
                state: mm.state.as_str().into(),
                version: mm.version.clone(),
                incarnation: mm.incarnation.clone(),
            })
            .collect(),
        placement: m
            .placement
            .iter()
            .enumerate()
            .map(|(p, pl)| pb::PartitionPlacement {
                partition: p as u32,
                replicas: pl.replicas.clone(),
                preferred_leader: pl.preferred_leader,
            })
            .collect(),
        meta_applied_index: node
            .groups
            .get(keyraft_api::META_GROUP)
            .and_then(|g| g.raft.metrics().borrow().last_applied.map(|l| l.index))
            .unwrap_or(0),
        default_read: m.default_read.to_wire() as i32,
    });
    pb::StatusResponse {
        node: Some(node.node_info()),
        groups,
        cluster,
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(status(&self.node)))
    }

    async fn bootstrap(
        &self,
        req: Request<pb::BootstrapRequest>,
    ) -> Result<Response<pb::BootstrapResponse>, Status> {
        observe(&self.node, "bootstrap", async {
            let r = req.into_inner();
            let (cluster_id, already) = self.node.bootstrap(r.peers, r.partitions, r.replication_factor).await?;
            if already {
                tracing::info!(%cluster_id, "bootstrap requested, but the cluster already exists; nothing changed");
            } else {
                tracing::info!(%cluster_id, "cluster bootstrapped");
            }
            Ok(Response::new(pb::BootstrapResponse { cluster_id, already_bootstrapped: already }))
        })
        .await
    }

    async fn health(
        &self,
        _req: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        let ready = self.node.readiness();
        Ok(Response::new(pb::HealthResponse {
            live: true,
            ready: ready.is_ok(),
            message: ready.err().unwrap_or_else(|| "ready".into()),
        }))
    }

    async fn identify(
        &self,
        _req: Request<pb::IdentifyRequest>,
    ) -> Result<Response<pb::NodeInfo>, Status> {
        Ok(Response::new(self.node.node_info()))
    }

    async fn set_default_read(
        &self,
        req: Request<pb::SetDefaultReadRequest>,
    ) -> Result<Response<pb::SetDefaultReadResponse>, Status> {
        observe(&self.node, "set_default_read", async {
            let level: ConsistencyLevel = ConsistencyLevel::from_wire(req.into_inner().consistency)
                .map_err(|e| NodeError::invalid("consistency", e))?
                .ok_or_else(|| {
                    NodeError::invalid(
                        "consistency",
                        "name a level: linearizable, session or eventual",
                    )
                })?;
            self.node.meta()?;
            self.node
                .propose_group(
                    keyraft_api::META_GROUP,
                    None,
                    Command::Meta(MetaOp::SetDefaultRead(level)),
                )
                .await?;
            Ok(Response::new(pb::SetDefaultReadResponse {}))
        })
        .await
    }
}
