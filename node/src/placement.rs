//! Declarative placement: the meta group holds the desired replica set and
//! preferred leader of every partition; here each group's leader moves its
//! group toward it, one safe step per pass:
//!
//! add learner -> wait until caught up -> joint-consensus membership change
//! -> the dropped replica deletes its data once it sees the change committed.
//!
//! Every step reads the current state first and does only what is missing,
//! so a pass repeated after any crash (including of the leader driving it)
//! picks up where the last one stopped. Leadership moves to the preferred
//! leader when it is healthy and caught up; a draining node hands off its
//! leaderships. The meta leader also keeps the meta group's voters (3, or 5
//! from 5 nodes, over distinct zones; everyone else a learner) in step with
//! the member registry, and re-plans partitions that have replicas on failed
//! or decommissioning nodes.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use keyraft_api::pb;
use keyraft_api::placement::{self as planner, NodeView, PartitionTarget, PlanSettings};
use keyraft_api::{partition_of_group, META_GROUP};
use openraft::{BasicNode, ChangeMembers, ServerState};

use crate::error::NodeError;
use crate::groups::Group;
use crate::meta::{ClusterMeta, Member, MemberState, MetaOp, Placement};
use crate::node::Node;
use crate::types::{Command, CommandResult, GroupId, NodeId};

/// A learner within this many entries of the leader counts as caught up.
const CAUGHT_UP_LAG: u64 = 64;
/// Longest one placement step may take before the pass moves on.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for `Rebalance` when the request names no limit.
pub const DEFAULT_MAX_MOVES: usize = 4;

impl Node {
    /// Proposes a metadata change; a refusal by the state machine becomes a
    /// `FailedPrecondition` carrying its reason.
    pub async fn propose_meta(&self, op: MetaOp) -> Result<(), NodeError> {
        self.meta()?;
        let w = self.propose_group(META_GROUP, None, Command::Meta(op)).await?;
        match w.result {
            CommandResult::Meta(Ok(())) => Ok(()),
            CommandResult::Meta(Err(e)) => Err(NodeError::FailedPrecondition(e)),
            other => Err(NodeError::Internal(format!("unexpected meta result {other:?}"))),
        }
    }

    /// Finds a member by id or name.
    pub fn find_member(&self, id: NodeId, name: &str) -> Result<Member, NodeError> {
        let meta = self.meta()?;
        meta.members
            .values()
            .filter(|m| m.state != MemberState::Removed || id != 0)
            .find(|m| (id != 0 && m.id == id) || (id == 0 && m.name == name))
            .cloned()
            .ok_or_else(|| NodeError::invalid("node", format!("no member with id {id} or name {name:?}")))
    }

    pub async fn set_member_state(&self, id: NodeId, name: &str, state: MemberState) -> Result<Member, NodeError> {
        let m = self.find_member(id, name)?;
        self.propose_meta(MetaOp::SetMemberState { id: m.id, state }).await?;
        self.find_member(m.id, "")
    }

    pub async fn set_member_zone(&self, id: NodeId, name: &str, zone: String) -> Result<Member, NodeError> {
        let m = self.find_member(id, name)?;
        if m.zone != zone {
            self.propose_meta(MetaOp::SetZone { id: m.id, zone }).await?;
        }
        self.find_member(m.id, "")
    }

    /// Plans a balanced placement with the shared planner; applies it unless
    /// `dry_run`. Returns the partitions that change.
    pub async fn rebalance(&self, dry_run: bool, max_moves: usize) -> Result<Vec<pb::Move>, NodeError> {
        let meta = self.meta()?;
        let target = plan_for(&meta, max_moves);
        let moves = describe_moves(&meta.placement, &target);
        if !dry_run && !moves.is_empty() {
            self.propose_meta(MetaOp::SetPlacement(target)).await?;
        }
        Ok(moves)
    }

    /// Handles a join request: the meta leader adds the node to the meta
    /// group as a learner and registers it; others forward to the leader.
    pub async fn join(&self, info: pb::NodeInfo, hops: u32) -> Result<String, NodeError> {
        let meta = self.meta()?;
        if info.cluster_name != meta.cluster_name {
            return Err(NodeError::FailedPrecondition(format!(
                "node {} belongs to cluster {:?}, this is {:?}",
                info.name, info.cluster_name, meta.cluster_name
            )));
        }
        let g = self.groups.open(META_GROUP).await?;
        let leader = g.raft.metrics().borrow().current_leader;
        if leader != Some(self.id()) {
            let addr = leader.and_then(|l| meta.member_addr(l).map(str::to_string));
            let (Some(addr), true) = (addr, hops < crate::node::MAX_HOPS) else {
                return Err(NodeError::NoLeader { partition: u32::MAX, detail: "the meta group has no leader".into() });
            };
            let mut c = self.peers.admin(&addr).map_err(|e| NodeError::Internal(e.to_string()))?;
            let mut req = tonic::Request::new(pb::JoinRequest { node: Some(info) });
            req.metadata_mut().insert(keyraft_api::HOPS_HEADER, (hops + 1).to_string().parse().expect("ascii"));
            let r = c
                .join(req)
                .await
                .map_err(|s| NodeError::NoLeader { partition: u32::MAX, detail: s.message().into() })?;
            return Ok(r.into_inner().cluster_id);
        }
        // A new incarnation under a known name replaces the old one: the old
        // id is treated as lost, so its replicas are re-created elsewhere.
        for old in meta.members.values().filter(|m| m.name == info.name && m.id != info.id) {
            if !matches!(old.state, MemberState::Failed | MemberState::Removed) {
                tracing::warn!(name = %old.name, old = old.id, new = info.id, "node came back with a new identity; marking the old one failed");
                self.propose_meta(MetaOp::SetMemberState { id: old.id, state: MemberState::Failed }).await?;
            }
        }
        if !meta.members.contains_key(&info.id) {
            let member = Member {
                id: info.id,
                name: info.name.clone(),
                advertise: info.advertise.clone(),
                zone: info.zone.clone(),
                state: MemberState::Active,
                version: info.version.clone(),
                incarnation: info.incarnation.clone(),
            };
            self.propose_meta(MetaOp::Register(member)).await?;
        }
        g.raft
            .add_learner(info.id, BasicNode { addr: info.advertise.clone() }, false)
            .await
            .map_err(|e| NodeError::NoLeader { partition: u32::MAX, detail: e.to_string() })?;
        Ok(meta.cluster_id.clone())
    }

    /// Asks each seed in turn to let this node join, until one succeeds.
    pub async fn join_via_seeds(self: Arc<Self>, seeds: Vec<String>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            if self.meta_rx.borrow().is_some() {
                return;
            }
            for seed in seeds.iter().filter(|s| **s != self.cfg.advertise) {
                let Ok(mut c) = self.peers.admin(seed) else { continue };
                let req = pb::JoinRequest { node: Some(self.node_info()) };
                match tokio::time::timeout(Duration::from_secs(5), c.join(req)).await {
                    Ok(Ok(r)) => {
                        tracing::info!(%seed, cluster_id = %r.into_inner().cluster_id, "joined the cluster");
                        return;
                    }
                    Ok(Err(s)) => tracing::debug!(%seed, error = %s.message(), "join refused; will retry"),
                    Err(_) => tracing::debug!(%seed, "join timed out; will retry"),
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Refuses client and admin calls on a member that was removed, by its
    /// own metadata or by its peers' (see [`Node::learn_removal`]): its view
    /// of the cluster no longer follows the cluster's.
    pub fn refuse_if_departed(&self) -> Result<(), NodeError> {
        let Some(meta) = self.meta_rx.borrow().clone() else { return Ok(()) };
        let me = self.id();
        let Some(m) = meta.members.get(&me) else { return Ok(()) };
        if m.state == MemberState::Removed || self.removed.load(Ordering::Relaxed) {
            return Err(NodeError::Departed { name: m.name.clone(), id: me, state: MemberState::Removed });
        }
        Ok(())
    }

    /// A member on its way out leaves the meta group before it may hear that
    /// it was removed: it asks its peers, and once one says so it stops
    /// serving (see [`Node::refuse_if_departed`]).
    async fn learn_removal(&self, meta: &ClusterMeta) {
        let me = self.id();
        if self.removed.load(Ordering::Relaxed) || meta.members.get(&me).is_none_or(|m| m.state.holds_replicas()) {
            return;
        }
        // The first active peer that answers decides (until the next pass).
        for peer in meta.members.values().filter(|m| m.id != me && m.state == MemberState::Active) {
            let Ok(mut c) = self.peers.admin(&peer.advertise) else { continue };
            let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), c.status(pb::StatusRequest {})).await else {
                continue;
            };
            let view = s.into_inner().cluster;
            let mine = view.as_ref().and_then(|v| v.members.iter().find(|m| m.id == me));
            if mine.is_some_and(|m| MemberState::parse(&m.state) == Some(MemberState::Removed)) {
                tracing::warn!(node = me, via = %peer.advertise, "this member was removed from the cluster; refusing requests from now on");
                self.removed.store(true, Ordering::Relaxed);
            }
            return;
        }
    }

    /// Campaigns for leadership of `group` once the current leader's lease
    /// has lapsed (the leader stops heartbeats to hand over).
    pub async fn campaign(&self, group: GroupId) -> Result<bool, NodeError> {
        let g = self
            .groups
            .get(group)
            .ok_or_else(|| NodeError::invalid("group", format!("no replica of group {group} here")))?;
        let lease = Duration::from_millis(self.cfg.election_timeout_ms * 2);
        let deadline = tokio::time::Instant::now() + lease * 3;
        tokio::time::sleep(lease).await;
        while tokio::time::Instant::now() < deadline {
            if g.raft.metrics().borrow().state == ServerState::Leader {
                return Ok(true);
            }
            let _ = g.raft.trigger().elect().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(g.raft.metrics().borrow().state == ServerState::Leader)
    }

    /// Moves every group this node leads toward its desired membership, and
    /// deletes replicas that left this node. Runs until the process ends.
    pub async fn run_placement_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(300));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(meta) = self.meta_rx.borrow().clone() else { continue };
            // Every step is bounded: one group whose change cannot commit
            // (lost quorum) must not stall the others or the meta duties.
            for g in self.groups.all() {
                let step = async {
                    if g.id == META_GROUP {
                        self.drive_meta(&g, &meta).await
                    } else {
                        self.drive_partition(&g, &meta).await
                    }
                };
                match tokio::time::timeout(STEP_TIMEOUT, step).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(group = g.id, error = %e, "placement step failed; will retry"),
                    Err(_) => tracing::warn!(
                        group = g.id,
                        "placement step did not finish within {STEP_TIMEOUT:?}; will retry"
                    ),
                }
            }
            if tokio::time::timeout(STEP_TIMEOUT, self.learn_removal(&meta)).await.is_err() {
                tracing::debug!("asking peers about this member's removal timed out; will retry");
            }
            match tokio::time::timeout(STEP_TIMEOUT, self.collect_removed_replicas(&meta)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "replica cleanup incomplete; will retry"),
                Err(_) => tracing::warn!("replica cleanup did not finish within {STEP_TIMEOUT:?}; will retry"),
            }
        }
    }

    async fn drive_partition(&self, g: &Arc<Group>, meta: &ClusterMeta) -> Result<(), NodeError> {
        let Some(p) = partition_of_group(g.id) else { return Ok(()) };
        let Some(pl) = meta.placement.get(p as usize) else { return Ok(()) };
        let voters: BTreeSet<NodeId> = pl.replicas.iter().copied().collect();
        if !self.converge_membership(g, meta, &voters, &BTreeSet::new()).await? {
            return Ok(());
        }
        self.steer_leadership(g, meta, pl.preferred_leader).await
    }

    async fn drive_meta(&self, g: &Arc<Group>, meta: &ClusterMeta) -> Result<(), NodeError> {
        if g.raft.metrics().borrow().state != ServerState::Leader {
            return Ok(());
        }
        let current: BTreeSet<NodeId> = g.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
        let voters = meta_voters(meta, &current);
        // Everyone who holds or may hold replicas follows the meta group; a
        // decommissioning member leaves it once its replicas are gone.
        let holds = |id: NodeId| meta.placement.iter().any(|pl| pl.replicas.contains(&id));
        let learners: BTreeSet<NodeId> = meta
            .members
            .values()
            .filter(|m| m.state.holds_replicas() || (m.state == MemberState::Decommissioning && holds(m.id)))
            .map(|m| m.id)
            .filter(|id| !voters.contains(id))
            .collect();
        // The other duties below do not depend on this step finishing.
        if let Err(e) = self.converge_membership(g, meta, &voters, &learners).await {
            tracing::debug!(error = %e, "meta membership step failed; will retry");
        }
        // Re-plan partitions with replicas on members that may not hold them.
        let broken = meta
            .placement
            .iter()
            .filter(|pl| pl.replicas.iter().any(|r| !meta.members.get(r).is_some_and(|m| m.state.holds_replicas())))
            .count();
        if broken > 0 {
            let target = plan_for(meta, broken);
            if target != meta.placement && crate::meta::validate_placement(meta, &target).is_ok() {
                tracing::info!(partitions = broken, "re-placing replicas held by failed or decommissioning nodes");
                self.propose_meta(MetaOp::SetPlacement(target)).await?;
            }
        }
        // Members marked failed or decommissioning that are out of the meta
        // group and of every partition group become removed. The desired
        // placement dropping them is not enough: until each partition's
        // leader has committed a membership without them they still count
        // toward its quorums, and `removed` tells the operator (or a person)
        // that their volume may go.
        let in_meta = |id: NodeId| g.raft.metrics().borrow().membership_config.membership().get_node(&id).is_some();
        let leaving: Vec<&Member> = meta
            .members
            .values()
            .filter(|m| matches!(m.state, MemberState::Failed | MemberState::Decommissioning))
            .filter(|m| !holds(m.id) && !in_meta(m.id))
            .collect();
        if leaving.is_empty() {
            return Ok(());
        }
        let answers = self.member_statuses(meta).await;
        let Some(held) = still_held(meta.partitions, &answers) else {
            tracing::debug!("not every partition's leader answered with a committed membership; removal waits");
            return Ok(());
        };
        for m in leaving {
            if held.contains(&m.id) {
                tracing::debug!(node = m.id, name = %m.name, "member is still in a partition's membership; removal waits");
                continue;
            }
            tracing::info!(node = m.id, name = %m.name, "member is out of every group; marking it removed");
            self.propose_meta(MetaOp::SetMemberState { id: m.id, state: MemberState::Removed }).await?;
        }
        Ok(())
    }

    /// This node's status and that of every other member that may hold
    /// replicas, each asked at once with a short bound; silent ones are left
    /// out.
    async fn member_statuses(&self, meta: &ClusterMeta) -> Vec<pb::StatusResponse> {
        let me = self.id();
        let asks = meta
            .members
            .values()
            .filter(|m| m.id != me && (m.state.holds_replicas() || m.state == MemberState::Decommissioning))
            .filter_map(|m| self.peers.admin(&m.advertise).ok())
            .map(|mut c| async move {
                match tokio::time::timeout(Duration::from_secs(2), c.status(pb::StatusRequest {})).await {
                    Ok(Ok(r)) => Some(r.into_inner()),
                    _ => None,
                }
            });
        let mut out: Vec<pb::StatusResponse> = futures::future::join_all(asks).await.into_iter().flatten().collect();
        out.push(crate::service::admin::status(self));
        out
    }

    /// One step toward `voters` (+ `learners`) in a group this node leads.
    /// Returns true when the membership already matches.
    async fn converge_membership(
        &self,
        g: &Arc<Group>,
        meta: &ClusterMeta,
        voters: &BTreeSet<NodeId>,
        learners: &BTreeSet<NodeId>,
    ) -> Result<bool, NodeError> {
        let m = g.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader || voters.is_empty() {
            return Ok(false);
        }
        let membership = m.membership_config.membership();
        // A joint configuration left behind by a leader that crashed mid-change
        // is not finished by openraft on its own: proposing the goal again
        // moves it to the next coherent step (a change still in flight here
        // is refused as in progress, and retried next pass).
        if membership.get_joint_config().len() > 1 {
            tracing::info!(group = g.id, to = ?voters, "finishing a joint membership change");
            g.raft.change_membership(voters.clone(), false).await.map_err(|e| NodeError::NoLeader {
                partition: partition_of_group(g.id).unwrap_or(u32::MAX),
                detail: e.to_string(),
            })?;
            return Ok(false);
        }
        let cur_voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let cur_learners: BTreeSet<NodeId> = membership.learner_ids().collect();
        let me = self.id();
        // A leader whose own removal committed steps down by itself; openraft
        // must not get membership changes from it meanwhile.
        if !cur_voters.contains(&me) {
            return Ok(false);
        }
        let raft_err = |e: openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, BasicNode>>| {
            NodeError::NoLeader { partition: partition_of_group(g.id).unwrap_or(u32::MAX), detail: e.to_string() }
        };
        // 1. Every future member first joins as a learner.
        for id in voters.iter().chain(learners).filter(|id| !cur_voters.contains(id) && !cur_learners.contains(id)) {
            let Some(addr) = meta.member_addr(*id) else { continue };
            tracing::info!(group = g.id, node = id, "adding learner");
            g.raft.add_learner(*id, BasicNode { addr: addr.to_string() }, false).await.map_err(raft_err)?;
        }
        // 2. Once the new voters caught up, one joint-consensus change.
        if *voters != cur_voters {
            let caught_up = |id: &NodeId| caught_up(&m, *id);
            let lagging: Vec<NodeId> =
                voters.iter().filter(|id| !cur_voters.contains(id) && !caught_up(id)).copied().collect();
            if !lagging.is_empty() {
                tracing::debug!(group = g.id, ?lagging, "waiting for learners to catch up");
                return Ok(false);
            }
            // This leader leaves the group: with every other voter live, hand
            // leadership to one that stays (or first make the new voters
            // voters alongside this one), so the group never waits for an
            // election. With a voter down a hand-over may never win; the
            // leader then removes itself, and the guard above keeps it from
            // proposing anything more.
            if !voters.contains(&me) && cur_voters.iter().filter(|id| **id != me).all(caught_up) {
                let stays: Vec<NodeId> = voters.intersection(&cur_voters).filter(|id| caught_up(id)).copied().collect();
                let active = |id: &&NodeId| meta.members.get(*id).is_some_and(|m| m.state == MemberState::Active);
                match stays.iter().find(active).or(stays.first()) {
                    Some(target) => self.hand_over(g, meta, *target).await,
                    None => {
                        let mut with_me = voters.clone();
                        with_me.insert(me);
                        tracing::info!(group = g.id, from = ?cur_voters, to = ?with_me, "changing voters before leaving");
                        g.raft.change_membership(with_me, false).await.map_err(raft_err)?;
                    }
                }
                return Ok(false);
            }
            tracing::info!(group = g.id, from = ?cur_voters, to = ?voters, "changing voters");
            g.raft.change_membership(voters.clone(), false).await.map_err(raft_err)?;
            return Ok(false);
        }
        // 3. Learners nobody wants any more leave.
        let stray: BTreeSet<NodeId> = cur_learners.difference(learners).copied().collect();
        if !stray.is_empty() {
            tracing::info!(group = g.id, ?stray, "removing learners");
            g.raft.change_membership(ChangeMembers::RemoveNodes(stray), false).await.map_err(raft_err)?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Hands leadership to the preferred leader when it is active and
    /// caught up, or to any active caught-up voter when this node drains.
    async fn steer_leadership(&self, g: &Arc<Group>, meta: &ClusterMeta, preferred: NodeId) -> Result<(), NodeError> {
        let me = self.id();
        let m = g.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return Ok(());
        }
        let my_state = meta.members.get(&me).map(|m| m.state);
        let draining = !matches!(my_state, Some(MemberState::Active));
        let healthy =
            |id: &NodeId| meta.members.get(id).is_some_and(|mm| mm.state == MemberState::Active) && caught_up(&m, *id);
        let target = if preferred != me && healthy(&preferred) {
            Some(preferred)
        } else if draining {
            let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().filter(|v| *v != me).collect();
            voters.into_iter().find(|v| healthy(v))
        } else {
            None
        };
        if let Some(target) = target {
            self.hand_over(g, meta, target).await;
        }
        Ok(())
    }

    /// Makes `target` campaign for leadership of `g` after this leader
    /// stops heartbeats (openraft 0.9 has no leader transfer).
    async fn hand_over(&self, g: &Arc<Group>, meta: &ClusterMeta, target: NodeId) {
        // A leader that keeps its leaderships: the operator's drain bound.
        fail::fail_point!("placement::hand_over", |_| ());
        let Some(addr) = meta.member_addr(target) else { return };
        tracing::info!(group = g.id, to = target, "handing over leadership");
        // Stop heartbeats and new proposals so followers' leases lapse and
        // the target can win an election with an up-to-date log.
        let _paused = PausedLeadership::new(self, g);
        let res = match self.peers.admin(addr) {
            Ok(mut c) => {
                tokio::time::timeout(Duration::from_secs(10), c.campaign(pb::CampaignRequest { group: g.id })).await
            }
            Err(e) => Ok(Err(tonic::Status::unavailable(e.to_string()))),
        };
        match res {
            Ok(Ok(r)) if r.get_ref().leader => tracing::info!(group = g.id, to = target, "leadership handed over"),
            other => tracing::debug!(group = g.id, to = target, ?other, "leadership hand-over did not complete"),
        }
    }

    /// Deletes local replicas of partitions placed elsewhere, once a leader
    /// confirms that the membership change removing this node committed. A
    /// node leaving the cluster checks every replica it holds: it may have
    /// left the meta group before hearing the final placement.
    async fn collect_removed_replicas(&self, meta: &ClusterMeta) -> Result<(), NodeError> {
        let me = self.id();
        let leaving = !meta.members.get(&me).is_some_and(|m| m.state.holds_replicas());
        for g in self.groups.all() {
            let Some(p) = partition_of_group(g.id) else { continue };
            let Some(pl) = meta.placement.get(p as usize) else { continue };
            if pl.replicas.contains(&me) && !leaving {
                continue;
            }
            let mut ask: Vec<NodeId> = pl.replicas.clone();
            ask.extend(g.raft.metrics().borrow().membership_config.membership().voter_ids());
            ask.sort_unstable();
            ask.dedup();
            ask.retain(|id| *id != me);
            if self.removal_committed(g.id, &ask, meta).await {
                tracing::info!(partition = p, "replica moved away; deleting its local data");
                self.groups.remove(g.id).await?;
            }
        }
        Ok(())
    }

    async fn removal_committed(&self, group: GroupId, replicas: &[NodeId], meta: &ClusterMeta) -> bool {
        let me = self.id();
        for r in replicas {
            let Some(addr) = meta.member_addr(*r) else { continue };
            let Ok(mut c) = self.peers.admin(addr) else { continue };
            let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), c.status(pb::StatusRequest {})).await else {
                continue;
            };
            if let Some(gs) = s.get_ref().groups.iter().find(|x| x.group == group && x.role == "leader") {
                // The leader's membership counts only once committed (applied
                // by the leader): an uncommitted change may still be undone.
                let committed = gs.applied_index >= gs.membership_index;
                return committed && !gs.voters.contains(&me) && !gs.learners.contains(&me);
            }
        }
        false
    }
}

/// A leadership hand-over in progress: heartbeats and new proposals stop.
/// Dropping it (hand-over done, failed, or its future cancelled by a step
/// timeout) resumes both, so the group never stays refusing writes.
struct PausedLeadership<'a> {
    node: &'a Node,
    group: &'a Group,
}

impl<'a> PausedLeadership<'a> {
    fn new(node: &'a Node, group: &'a Group) -> Self {
        node.set_transferring(group.id, true);
        group.raft.runtime_config().heartbeat(false);
        Self { node, group }
    }
}

impl Drop for PausedLeadership<'_> {
    fn drop(&mut self) {
        self.group.raft.runtime_config().heartbeat(true);
        self.node.set_transferring(self.group.id, false);
    }
}

/// Whether the leader whose metrics these are has replicated to `id` within
/// `CAUGHT_UP_LAG` entries of its log.
fn caught_up(m: &openraft::RaftMetrics<NodeId, BasicNode>, id: NodeId) -> bool {
    let last = m.last_log_index.unwrap_or(0);
    m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).is_some_and(|l| l.index + CAUGHT_UP_LAG >= last)
}

/// Up to 3 voters (5 from 5 eligible members), spread over zones, keeping
/// current voters where possible.
pub fn meta_voters(meta: &ClusterMeta, current: &BTreeSet<NodeId>) -> BTreeSet<NodeId> {
    // Draining members stay eligible: a restart for an upgrade must not
    // shrink the meta group (and move its leader) only to grow it again.
    let eligible: Vec<&Member> = meta.members.values().filter(|m| m.state.holds_replicas()).collect();
    let want = if eligible.len() >= 5 { 5 } else { eligible.len().min(3) };
    let mut chosen: Vec<&Member> = Vec::new();
    let mut zones: HashSet<&str> = HashSet::new();
    // Current voters first, then new members; distinct zones before repeats.
    let mut ordered: Vec<&Member> = eligible.clone();
    ordered.sort_by_key(|m| (!current.contains(&m.id), m.id));
    for distinct in [true, false] {
        for m in &ordered {
            if chosen.len() == want || chosen.iter().any(|c| c.id == m.id) {
                continue;
            }
            if distinct && !m.zone.is_empty() && zones.contains(m.zone.as_str()) {
                continue;
            }
            zones.insert(&m.zone);
            chosen.push(m);
        }
    }
    chosen.into_iter().map(|m| m.id).collect()
}

/// The planner's view of the cluster.
fn plan_for(meta: &ClusterMeta, max_moves: usize) -> Vec<Placement> {
    let nodes: Vec<NodeView> =
        meta.members.values().map(|m| NodeView { id: m.id, zone: m.zone.clone(), state: m.state }).collect();
    let current: Vec<PartitionTarget> = meta
        .placement
        .iter()
        .map(|p| PartitionTarget { replicas: p.replicas.clone(), preferred_leader: p.preferred_leader })
        .collect();
    let settings = PlanSettings { replication_factor: meta.replication_factor as usize, max_moves };
    planner::plan(&nodes, &current, settings)
        .into_iter()
        .map(|t| Placement { replicas: t.replicas, preferred_leader: t.preferred_leader })
        .collect()
}

fn describe_moves(from: &[Placement], to: &[Placement]) -> Vec<pb::Move> {
    from.iter()
        .zip(to)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(p, (a, b))| pb::Move {
            partition: p as u32,
            from: a.replicas.clone(),
            to: b.replicas.clone(),
            leader_from: a.preferred_leader,
            leader_to: b.preferred_leader,
        })
        .collect()
}

/// The members in any partition group's membership (voters and learners),
/// as reported by each partition's leader once that membership committed;
/// `None` when some partition has no such report (no leader answered, or its
/// latest membership is not committed yet), since then nobody can tell.
pub fn still_held(partitions: u32, answers: &[pb::StatusResponse]) -> Option<BTreeSet<NodeId>> {
    let mut held = BTreeSet::new();
    for p in 0..partitions {
        let group = keyraft_api::group_of_partition(p);
        let leader = answers
            .iter()
            .flat_map(|a| a.groups.iter())
            .filter(|gs| gs.group == group && gs.role == "leader" && gs.applied_index >= gs.membership_index)
            .max_by_key(|gs| gs.term)?;
        held.extend(leader.voters.iter().chain(&leader.learners).copied());
    }
    Some(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(group: u64, role: &str, term: u64, voters: &[u64], committed: bool) -> pb::GroupStatus {
        pb::GroupStatus {
            group,
            role: role.into(),
            term,
            voters: voters.to_vec(),
            membership_index: 10,
            applied_index: if committed { 10 } else { 9 },
            ..Default::default()
        }
    }

    fn answer(groups: Vec<pb::GroupStatus>) -> pb::StatusResponse {
        pb::StatusResponse { groups, ..Default::default() }
    }

    #[test]
    fn still_held_takes_each_partitions_leader_and_its_committed_membership() {
        type Case = (&'static str, Vec<pb::StatusResponse>, Option<Vec<u64>>);
        let cases: Vec<Case> = vec![
            (
                "both partitions led, member 4 already out",
                vec![
                    answer(vec![group(1, "leader", 3, &[1, 2, 3], true), group(2, "follower", 3, &[1, 2, 4], true)]),
                    answer(vec![group(2, "leader", 4, &[1, 2, 3], true)]),
                ],
                Some(vec![1, 2, 3]),
            ),
            (
                "a follower's stale view does not count, the leader's does",
                vec![answer(vec![
                    group(1, "leader", 3, &[1, 2, 4], true),
                    group(2, "leader", 3, &[1, 2, 3], true),
                    group(2, "follower", 3, &[1, 2, 3], true),
                ])],
                Some(vec![1, 2, 3, 4]),
            ),
            (
                "a partition without a leader answer: nobody can tell",
                vec![answer(vec![group(1, "leader", 3, &[1, 2, 3], true), group(2, "follower", 3, &[1, 2, 3], true)])],
                None,
            ),
            (
                "an uncommitted membership without member 4 is not enough",
                vec![answer(vec![group(1, "leader", 3, &[1, 2, 3], true), group(2, "leader", 3, &[1, 2, 3], false)])],
                None,
            ),
            (
                "two claimed leaders: the newer term wins",
                vec![
                    answer(vec![group(1, "leader", 3, &[1, 2, 4], true), group(2, "leader", 3, &[1, 2, 3], true)]),
                    answer(vec![group(1, "leader", 5, &[1, 2, 3], true)]),
                ],
                Some(vec![1, 2, 3]),
            ),
        ];
        for (case, answers, want) in cases {
            let got = still_held(2, &answers).map(|s| s.into_iter().collect::<Vec<_>>());
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn learners_count_as_held() {
        let mut g = group(1, "leader", 1, &[1, 2, 3], true);
        g.learners = vec![7];
        assert_eq!(still_held(1, &[answer(vec![g])]), Some(BTreeSet::from([1, 2, 3, 7])));
    }
}
