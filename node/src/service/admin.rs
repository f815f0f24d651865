//! Administration: status of the node and its groups, bootstrap, health.

use std::sync::Arc;

use keyraft_api::pb::admin_server::Admin;
use keyraft_api::pb::{self};
use keyraft_api::ConsistencyLevel;
use openraft::ServerState;
use tonic::{Request, Response, Status};

use super::observe;
use crate::auth::Caller;
use crate::error::NodeError;
use crate::meta::{MemberState, MetaOp, Placement};
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
                commit_index: node.wal.with_group(g.id, |l| l.committed.map_or(0, |c| c.index)),
                applied_index: m.last_applied.map_or(0, |l| l.index),
                last_log_index: m.last_log_index.unwrap_or(0),
                snapshot_index: m.snapshot.map_or(0, |l| l.index),
                purged_index: m.purged.map_or(0, |l| l.index),
                voters,
                learners,
                membership_index: m.membership_config.log_id().map_or(0, |l| l.index),
                keys: g.sm.keys().unwrap_or(0),
            }
        })
        .collect();
    let cluster = node.meta_rx.borrow().clone().map(|m| pb::ClusterView {
        cluster_id: m.cluster_id.clone(),
        partitions: m.partitions,
        replication_factor: m.replication_factor,
        members: m.members.values().map(member_record).collect(),
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
    pb::StatusResponse { node: Some(node.node_info()), groups, cluster }
}

impl AdminService {
    /// With TLS, a member certificate joins only under its own name. A
    /// forwarded join (hops > 0) comes from a registered member that checked
    /// the joiner's certificate itself.
    fn check_joiner(&self, caller: Option<&Caller>, name: &str, hops: u32) -> Result<(), Status> {
        let Some(Caller(principal)) = caller else { return Ok(()) };
        let Some(cert_member) = principal.member_name() else { return Ok(()) };
        if cert_member == name {
            return Ok(());
        }
        let forwarder_is_member = hops > 0
            && self.node.meta_rx.borrow().as_ref().is_some_and(|m| m.members.values().any(|m| m.name == cert_member));
        if forwarder_is_member {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "join as member {name:?} refused: the certificate is member {cert_member:?}'s; a node joins only under the name its certificate names"
        )))
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, _req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        // A departed member's view is stale: tools must not show it as current.
        self.node.refuse_if_departed()?;
        Ok(Response::new(status(&self.node)))
    }

    async fn bootstrap(&self, req: Request<pb::BootstrapRequest>) -> Result<Response<pb::BootstrapResponse>, Status> {
        observe(&self.node, "bootstrap", async {
            self.node.refuse_if_departed()?;
            let r = req.into_inner();
            let (cluster_id, already) =
                self.node.bootstrap(r.peers, r.partitions, r.replication_factor, r.zones).await?;
            if already {
                tracing::info!(%cluster_id, "bootstrap requested, but the cluster already exists; nothing changed");
            } else {
                tracing::info!(%cluster_id, "cluster bootstrapped");
            }
            Ok(Response::new(pb::BootstrapResponse { cluster_id, already_bootstrapped: already }))
        })
        .await
    }

    async fn health(&self, _req: Request<pb::HealthRequest>) -> Result<Response<pb::HealthResponse>, Status> {
        let ready = self.node.readiness();
        Ok(Response::new(pb::HealthResponse {
            live: true,
            ready: ready.is_ok(),
            message: ready.err().unwrap_or_else(|| "ready".into()),
        }))
    }

    async fn identify(&self, _req: Request<pb::IdentifyRequest>) -> Result<Response<pb::NodeInfo>, Status> {
        Ok(Response::new(self.node.node_info()))
    }

    async fn set_default_read(
        &self,
        req: Request<pb::SetDefaultReadRequest>,
    ) -> Result<Response<pb::SetDefaultReadResponse>, Status> {
        observe(&self.node, "set_default_read", async {
            self.node.refuse_if_departed()?;
            let level: ConsistencyLevel = ConsistencyLevel::from_wire(req.into_inner().consistency)
                .map_err(|e| NodeError::invalid("consistency", e))?
                .ok_or_else(|| NodeError::invalid("consistency", "name a level: linearizable, session or eventual"))?;
            self.node.meta()?;
            self.node
                .propose_group(keyraft_api::META_GROUP, None, Command::Meta(MetaOp::SetDefaultRead(level)))
                .await?;
            Ok(Response::new(pb::SetDefaultReadResponse {}))
        })
        .await
    }

    async fn set_placement(
        &self,
        req: Request<pb::SetPlacementRequest>,
    ) -> Result<Response<pb::SetPlacementResponse>, Status> {
        observe(&self.node, "set_placement", async {
            self.node.refuse_if_departed()?;
            let mut placement: Vec<(u32, Placement)> = req
                .into_inner()
                .placement
                .into_iter()
                .map(|p| (p.partition, Placement { replicas: p.replicas, preferred_leader: p.preferred_leader }))
                .collect();
            placement.sort_by_key(|(p, _)| *p);
            for (i, (p, _)) in placement.iter().enumerate() {
                if *p as usize != i {
                    return Err(NodeError::invalid(
                        "placement",
                        format!("give every partition once, in any order; partition {i} is missing or repeated"),
                    )
                    .into());
                }
            }
            let placement: Vec<Placement> = placement.into_iter().map(|(_, p)| p).collect();
            // Validate here too, so a bad request is InvalidArgument with the reason.
            crate::meta::validate_placement(&*self.node.meta()?, &placement)
                .map_err(|e| NodeError::invalid("placement", e))?;
            self.node.propose_meta(MetaOp::SetPlacement(placement)).await?;
            Ok(Response::new(pb::SetPlacementResponse {}))
        })
        .await
    }

    async fn set_member_state(
        &self,
        req: Request<pb::SetMemberStateRequest>,
    ) -> Result<Response<pb::SetMemberStateResponse>, Status> {
        observe(&self.node, "set_member_state", async {
            self.node.refuse_if_departed()?;
            let r = req.into_inner();
            let state = MemberState::parse(&r.state).ok_or_else(|| {
                NodeError::invalid(
                    "state",
                    format!("{:?} is not one of active, draining, decommissioning, failed, removed", r.state),
                )
            })?;
            let m = self.node.set_member_state(r.id, &r.name, state).await?;
            Ok(Response::new(pb::SetMemberStateResponse { member: Some(member_record(&m)) }))
        })
        .await
    }

    async fn set_member_zone(
        &self,
        req: Request<pb::SetMemberZoneRequest>,
    ) -> Result<Response<pb::SetMemberZoneResponse>, Status> {
        observe(&self.node, "set_member_zone", async {
            self.node.refuse_if_departed()?;
            let r = req.into_inner();
            if r.zone.is_empty() || r.zone.len() > 253 {
                return Err(NodeError::invalid("zone", "must be 1 to 253 bytes").into());
            }
            let m = self.node.set_member_zone(r.id, &r.name, r.zone).await?;
            Ok(Response::new(pb::SetMemberZoneResponse { member: Some(member_record(&m)) }))
        })
        .await
    }

    async fn rebalance(&self, req: Request<pb::RebalanceRequest>) -> Result<Response<pb::RebalanceResponse>, Status> {
        observe(&self.node, "rebalance", async {
            self.node.refuse_if_departed()?;
            let r = req.into_inner();
            let max = if r.max_moves == 0 { crate::placement::DEFAULT_MAX_MOVES } else { r.max_moves as usize };
            let moves = self.node.rebalance(r.dry_run, max).await?;
            Ok(Response::new(pb::RebalanceResponse { applied: !r.dry_run && !moves.is_empty(), moves }))
        })
        .await
    }

    async fn join(&self, req: Request<pb::JoinRequest>) -> Result<Response<pb::JoinResponse>, Status> {
        observe(&self.node, "join", async {
            self.node.refuse_if_departed()?;
            let hops =
                req.metadata().get(keyraft_api::HOPS_HEADER).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
            let caller = req.extensions().get::<Caller>().cloned();
            let info = req.into_inner().node.ok_or_else(|| NodeError::invalid("node", "missing"))?;
            self.check_joiner(caller.as_ref(), &info.name, hops)?;
            if info.id == 0 || info.advertise.is_empty() {
                return Err(NodeError::invalid("node", "id and advertise address are required").into());
            }
            let cluster_id = self.node.join(info, hops).await?;
            Ok(Response::new(pb::JoinResponse { cluster_id }))
        })
        .await
    }

    type BackupPartitionStream = tokio_stream::wrappers::ReceiverStream<super::backup::BackupItem>;

    async fn backup_partition(
        &self,
        req: Request<pb::BackupPartitionRequest>,
    ) -> Result<Response<Self::BackupPartitionStream>, Status> {
        let rx =
            observe(&self.node, "backup_partition", super::backup::start(self.node.clone(), req.into_inner())).await?;
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn campaign(&self, req: Request<pb::CampaignRequest>) -> Result<Response<pb::CampaignResponse>, Status> {
        let leader = self.node.campaign(req.into_inner().group).await?;
        Ok(Response::new(pb::CampaignResponse { leader }))
    }
}

fn member_record(mm: &crate::meta::Member) -> pb::MemberRecord {
    pb::MemberRecord {
        id: mm.id,
        name: mm.name.clone(),
        advertise: mm.advertise.clone(),
        zone: mm.zone.clone(),
        state: mm.state.as_str().into(),
        version: mm.version.clone(),
        incarnation: mm.incarnation.clone(),
    }
}
