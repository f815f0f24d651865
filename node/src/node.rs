//! A running node: its identity, its groups, and the logic shared by the
//! gRPC services — joining the cluster, proposing writes to a partition's
//! leader wherever it is, and choosing where a read is served.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyraft_api::pb::{IdentifyRequest, NodeInfo, RaftMessage};
use keyraft_api::{group_of_partition, ConsistencyLevel, META_GROUP};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState};
use rand::Rng;
use tokio::sync::watch;

use crate::config::Config;
use crate::error::NodeError;
use crate::groups::{Group, Groups};
use crate::identity::Identity;
use crate::meta::{initial_placement, ClusterMeta, Member, MemberState, MetaOp};
use crate::metrics::Metrics;
use crate::peers::Peers;
use crate::storage::sm_store::SmReader;
use crate::storage::throttle::SendThrottle;
use crate::storage::wal::{Wal, WalOptions};
use crate::types::{Command, CommandResult, NodeId};

/// How long a write or read keeps looking for a partition's leader.
const ROUTE_DEADLINE: Duration = Duration::from_secs(5);
/// How long one forwarded proposal may take (the target may be hung).
const FORWARD_ATTEMPT: Duration = Duration::from_secs(2);
/// How long a session read waits for a lagging replica before forwarding.
const SESSION_WAIT: Duration = Duration::from_millis(500);
/// Forwarding stops after this many hops (stale leader hints can loop).
pub const MAX_HOPS: u32 = 3;

/// Where a read will be served.
pub enum ReadPlan {
    Local { reader: SmReader, applied: u64, served_by: NodeId },
    Forward(String),
}

/// The outcome of a committed write.
pub struct Written {
    pub result: CommandResult,
    pub index: u64,
    pub served_by: NodeId,
    pub served_by_addr: String,
}

pub struct Node {
    pub cfg: Config,
    /// This node's TLS material (`None` with `--insecure-plaintext`).
    pub tls: Option<Arc<keyraft_api::tls::TlsState>>,
    identity: Mutex<Identity>,
    pub groups: Groups,
    pub peers: Peers,
    pub wal: Wal,
    pub meta_rx: watch::Receiver<Option<Arc<ClusterMeta>>>,
    pub metrics: Metrics,
    /// Last known leader of each partition, learned from answers.
    leader_hints: Mutex<HashMap<u32, NodeId>>,
    /// Groups whose leadership this node is handing over: no new proposals.
    transferring: Mutex<std::collections::HashSet<u64>>,
    pub started: Instant,
    /// Set once peers say this member was removed (it may have left the
    /// meta group before hearing so itself).
    pub removed: std::sync::atomic::AtomicBool,
}

impl Node {
    /// Opens the data directory (refusing a foreign or corrupt one), replays
    /// storage and starts every group found on disk plus the meta group.
    pub async fn open(cfg: Config) -> anyhow::Result<Arc<Node>> {
        #[cfg(feature = "failpoints")]
        crate::storage::failpoints::init();
        let tls = match cfg.transport().map_err(anyhow::Error::msg)? {
            crate::config::Transport::Tls(files) => Some(keyraft_api::tls::TlsState::load(files)?),
            crate::config::Transport::Plaintext => None,
        };
        let connector = tls.as_ref().map(keyraft_api::tls::TlsConnector::new).transpose()?;
        crate::storage::refuse_old_format(&cfg.data_dir)?;
        let identity = Identity::load_or_create(&cfg.data_dir, &cfg.name, &cfg.cluster)?;
        let wal = Wal::open(
            &cfg.data_dir.join("db"),
            WalOptions {
                cache_bytes: cfg.storage_cache_mb << 20,
                memtable_bytes: cfg.storage_memtable_mb << 20,
                journal_bytes: cfg.storage_journal_mb << 20,
                entry_cache_bytes: cfg.storage_log_cache_mb << 20,
                ..Default::default()
            },
        )?;
        let (meta_tx, meta_rx) = watch::channel(None);
        let peers = Peers::new(connector, SendThrottle::new(cfg.snapshot_send_bytes_per_sec));
        let groups = Groups::new(
            identity.node_id,
            cfg.data_dir.join("tmp"),
            wal.clone(),
            peers.clone(),
            cfg.cluster.clone(),
            cfg.raft_config(),
            meta_tx,
        )?;
        let node = Arc::new(Node {
            metrics: Metrics::new(),
            tls,
            identity: Mutex::new(identity),
            groups,
            peers,
            wal,
            meta_rx,
            cfg,
            leader_hints: Mutex::new(HashMap::new()),
            transferring: Mutex::new(Default::default()),
            started: Instant::now(),
            removed: Default::default(),
        });
        node.groups.open(META_GROUP).await?;
        for g in node.groups.on_disk()? {
            node.groups.open(g).await?;
        }
        node.check_cluster_id()?;
        Ok(node)
    }

    pub fn id(&self) -> NodeId {
        self.identity.lock().unwrap_or_else(|e| e.into_inner()).node_id
    }

    pub fn identity(&self) -> Identity {
        self.identity.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The cluster metadata, or `NotJoined` before this node has any.
    pub fn meta(&self) -> Result<Arc<ClusterMeta>, NodeError> {
        self.meta_rx.borrow().clone().ok_or_else(|| NodeError::NotJoined { name: self.cfg.name.clone() })
    }

    fn check_cluster_id(&self) -> Result<(), NodeError> {
        let Some(meta) = self.meta_rx.borrow().clone() else {
            return Ok(());
        };
        let mut id = self.identity.lock().unwrap_or_else(|e| e.into_inner());
        match &id.cluster_id {
            Some(c) if *c != meta.cluster_id => Err(NodeError::FailedPrecondition(format!(
                "data directory {} belongs to cluster id {c}, but its meta group holds cluster id {}; refusing to start",
                self.cfg.data_dir.display(),
                meta.cluster_id
            ))),
            Some(_) => Ok(()),
            None => {
                id.cluster_id = Some(meta.cluster_id.clone());
                id.save(&self.cfg.data_dir).map_err(|e| NodeError::Internal(format!("saving identity: {e}")))
            }
        }
    }

    pub fn node_info(&self) -> NodeInfo {
        let id = self.identity();
        let meta = self.meta_rx.borrow().clone();
        let tls = self.tls.as_ref().map(|t| t.fingerprints()).unwrap_or_default();
        NodeInfo {
            id: id.node_id,
            name: id.name,
            incarnation: id.incarnation,
            advertise: self.cfg.advertise.clone(),
            zone: self.cfg.zone.clone(),
            version: self.cfg.reported_version.clone(),
            cluster_name: id.cluster_name,
            cluster_id: meta.as_ref().map(|m| m.cluster_id.clone()).unwrap_or_default(),
            joined: meta.as_ref().is_some_and(|m| m.members.contains_key(&id.node_id)),
            ready: self.readiness().is_ok(),
            tls_trusted_ca_sha256: tls.trusted_cas,
            tls_certificate_sha256: tls.own.unwrap_or_default(),
        }
    }

    /// Ready = joined a cluster, registered, and the meta group has a leader.
    pub fn readiness(&self) -> Result<(), String> {
        let meta = self.meta().map_err(|e| e.to_string())?;
        if !meta.members.contains_key(&self.id()) {
            return Err(format!("node {} is not yet registered in cluster {}", self.cfg.name, meta.cluster_id));
        }
        let g = self.groups.get(META_GROUP).ok_or("meta group is not open")?;
        if g.raft.metrics().borrow().current_leader.is_none() {
            return Err("meta group has no leader".into());
        }
        Ok(())
    }

    /// Whether this node may open `group` on a peer's request: the meta
    /// group always; a partition only when the placement puts it here and
    /// this member may hold replicas.
    pub fn may_host(&self, group: u64) -> bool {
        let Some(p) = keyraft_api::partition_of_group(group) else { return true };
        let Some(meta) = self.meta_rx.borrow().clone() else { return false };
        let me = self.id();
        meta.members.get(&me).is_some_and(|m| m.state.holds_replicas())
            && meta.placement.get(p as usize).is_some_and(|pl| pl.replicas.contains(&me))
    }

    /// The default read level of the cluster.
    pub fn default_read(&self) -> ConsistencyLevel {
        self.meta_rx.borrow().as_ref().map_or(ConsistencyLevel::Linearizable, |m| m.default_read)
    }

    pub(crate) fn addr_of(&self, meta: &ClusterMeta, id: NodeId) -> Option<String> {
        if id == self.id() {
            return Some(self.cfg.advertise.clone());
        }
        meta.member_addr(id).map(str::to_string)
    }

    // ---- joining ----------------------------------------------------------

    /// Keeps this node's part of the cluster in step with the metadata: opens
    /// the partitions placed here, initialises those it founds, registers
    /// itself. Runs until the process ends.
    pub async fn run_membership_loop(self: Arc<Self>) {
        let mut rx = self.meta_rx.clone();
        loop {
            if let Err(e) = self.reconcile_local().await {
                tracing::debug!(error = %e, "local reconcile incomplete; will retry");
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
        }
    }

    async fn reconcile_local(&self) -> Result<(), NodeError> {
        let Some(meta) = self.meta_rx.borrow().clone() else {
            return Ok(());
        };
        if let Err(e) = self.check_cluster_id() {
            tracing::error!(error = %e, "cluster id mismatch");
            return Err(e);
        }
        let me = self.id();
        let wanted = Member {
            id: me,
            name: self.cfg.name.clone(),
            advertise: self.cfg.advertise.clone(),
            // Without --zone, the zone recorded for this member (by the operator) stands.
            zone: match meta.members.get(&me) {
                Some(m) if self.cfg.zone.is_empty() => m.zone.clone(),
                _ => self.cfg.zone.clone(),
            },
            state: meta.members.get(&me).map_or(MemberState::Active, |m| m.state),
            version: self.cfg.reported_version.clone(),
            incarnation: self.identity().incarnation,
        };
        if meta.members.get(&me) != Some(&wanted) {
            let cmd = Command::Meta(MetaOp::Register(wanted));
            self.propose_group(META_GROUP, None, cmd).await?;
        }
        // A member on its way out (decommissioning, failed) may hold a stale
        // placement after leaving the meta group: it opens nothing.
        if !meta.members.get(&me).is_some_and(|m| m.state.holds_replicas()) {
            return Ok(());
        }
        for (p, pl) in meta.placement.iter().enumerate() {
            if !pl.replicas.contains(&me) {
                continue;
            }
            let g = self.groups.open(group_of_partition(p as u32)).await?;
            let founder = pl.replicas[0] == me && !meta.moved.contains(&(p as u32));
            if founder && !g.raft.is_initialized().await.unwrap_or(true) {
                let members: BTreeMap<NodeId, BasicNode> = pl
                    .replicas
                    .iter()
                    .filter_map(|id| Some((*id, BasicNode { addr: self.addr_of(&meta, *id)? })))
                    .collect();
                if let Err(e) = g.raft.initialize(members).await {
                    tracing::debug!(partition = p, error = %e, "partition already initialised");
                }
            }
        }
        Ok(())
    }

    /// Creates the cluster: identifies every peer, founds the meta group with
    /// up to 3 (5 from 5 nodes) voters, adds the rest as learners, and
    /// commits the initial metadata. Safe to repeat: once a cluster exists
    /// the call changes nothing.
    pub async fn bootstrap(
        &self,
        mut peers: Vec<String>,
        partitions: u32,
        rf: u32,
        zones: std::collections::HashMap<String, String>,
    ) -> Result<(String, bool), NodeError> {
        if let Some(m) = self.meta_rx.borrow().clone() {
            return Ok((m.cluster_id.clone(), true));
        }
        peers.sort();
        peers.dedup();
        validate_bootstrap(&peers, partitions, rf, &self.cfg.advertise)?;
        // The same voter set whichever node is asked: the lowest addresses.
        let n_voters = if peers.len() >= 5 { 5 } else { peers.len().min(3) };
        if peers[0] != self.cfg.advertise {
            // Only the first voter founds the meta group; ask it.
            let mut c = self.peers.admin(&peers[0]).map_err(|e| NodeError::Internal(e.to_string()))?;
            let resp = c
                .bootstrap(keyraft_api::pb::BootstrapRequest { peers, partitions, replication_factor: rf, zones })
                .await
                .map_err(|s| {
                    NodeError::FailedPrecondition(format!("bootstrap via {}: {}", "the first peer", s.message()))
                })?
                .into_inner();
            return Ok((resp.cluster_id, resp.already_bootstrapped));
        }
        let mut members = Vec::new();
        for addr in &peers {
            let info = self.identify(addr).await?;
            if info.cluster_name != self.cfg.cluster {
                return Err(NodeError::FailedPrecondition(format!(
                    "peer {addr} belongs to cluster {:?}, not {:?}",
                    info.cluster_name, self.cfg.cluster
                )));
            }
            if !info.cluster_id.is_empty() {
                return Err(NodeError::FailedPrecondition(format!(
                    "peer {addr} already belongs to cluster id {}; refusing to found a second cluster",
                    info.cluster_id
                )));
            }
            members.push(Member {
                id: info.id,
                name: info.name,
                advertise: addr.clone(),
                zone: zones.get(addr).filter(|z| !z.is_empty()).cloned().unwrap_or(info.zone),
                state: MemberState::Active,
                version: info.version,
                incarnation: info.incarnation,
            });
        }
        let meta_group = self.groups.open(META_GROUP).await?;
        let voters: BTreeMap<NodeId, BasicNode> =
            members[..n_voters].iter().map(|m| (m.id, BasicNode { addr: m.advertise.clone() })).collect();
        if !meta_group.raft.is_initialized().await.unwrap_or(false) {
            meta_group
                .raft
                .initialize(voters)
                .await
                .map_err(|e| NodeError::Internal(format!("initialise meta group: {e}")))?;
        }
        let wait = meta_group.raft.wait(Some(Duration::from_secs(30)));
        wait.metrics(|m| m.current_leader.is_some(), "meta leader")
            .await
            .map_err(|e| NodeError::Timeout(format!("meta group elected no leader: {e}")))?;
        let cluster_id = format!("{:032x}", rand::rng().random::<u128>());
        let meta = ClusterMeta {
            cluster_id: cluster_id.clone(),
            cluster_name: self.cfg.cluster.clone(),
            partitions,
            replication_factor: rf,
            placement: initial_placement(&members, partitions, rf),
            members: members.iter().map(|m| (m.id, m.clone())).collect(),
            default_read: ConsistencyLevel::Linearizable,
            moved: Default::default(),
        };
        for m in &members[n_voters..] {
            self.add_meta_learner(m).await?;
        }
        let w = self.propose_group(META_GROUP, None, Command::Meta(MetaOp::Bootstrap(meta))).await?;
        match w.result {
            CommandResult::Meta(Ok(())) => Ok((cluster_id, false)),
            CommandResult::Meta(Err(_)) => Ok((self.meta()?.cluster_id.clone(), true)),
            other => Err(NodeError::Internal(format!("unexpected bootstrap result {other:?}"))),
        }
    }

    async fn add_meta_learner(&self, m: &Member) -> Result<(), NodeError> {
        let deadline = Instant::now() + ROUTE_DEADLINE;
        loop {
            let g = self.groups.open(META_GROUP).await?;
            match g.raft.add_learner(m.id, BasicNode { addr: m.advertise.clone() }, false).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "add meta learner; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(NodeError::Internal(format!("add node {} to the meta group: {e}", m.name))),
            }
        }
    }

    async fn identify(&self, addr: &str) -> Result<NodeInfo, NodeError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let res = match self.peers.admin(addr) {
                Ok(mut c) => tokio::time::timeout(Duration::from_secs(2), c.identify(IdentifyRequest {}))
                    .await
                    .map_err(|_| tonic::Status::deadline_exceeded("identify timed out")),
                Err(e) => Err(tonic::Status::unavailable(e.to_string())),
            };
            match res {
                Ok(Ok(info)) => return Ok(info.into_inner()),
                Ok(Err(s)) | Err(s) if Instant::now() >= deadline => {
                    return Err(NodeError::FailedPrecondition(format!("peer {addr} is unreachable: {}", s.message())))
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    // ---- writes -----------------------------------------------------------

    /// Commits `cmd` in `group` through its leader, wherever it is.
    pub async fn propose_group(&self, group: u64, partition: Option<u32>, cmd: Command) -> Result<Written, NodeError> {
        let deadline = Instant::now() + ROUTE_DEADLINE;
        let mut hint: Option<NodeId> = partition.and_then(|p| self.leader_hint(p));
        let mut rotate = 0usize;
        let mut backoff = Duration::from_millis(10);
        let mut last_err = String::from("no attempt made");
        // Peers that gave no answer in this request: not dialled again (a
        // stopped leader would take the caller's whole deadline), the group
        // elects another leader meanwhile.
        let mut silent: Vec<NodeId> = Vec::new();
        loop {
            if Instant::now() >= deadline {
                let partition = partition.unwrap_or(u32::MAX);
                return Err(NodeError::NoLeader { partition, detail: last_err });
            }
            let local = self.groups.get(group);
            let target = hint
                .or_else(|| local.as_ref().and_then(|g| g.raft.metrics().borrow().current_leader))
                .or_else(|| self.guess_replica(group, &mut rotate));
            if target.is_some_and(|t| silent.contains(&t)) {
                hint = None;
                rotate += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(200));
                continue;
            }
            let me = self.id();
            match target {
                Some(t) if t == me && self.is_transferring(group) => {
                    last_err = format!("node {me} is handing over leadership of group {group}");
                    hint = None;
                }
                Some(t) if t == me => {
                    let g = match local {
                        Some(g) => g,
                        None => self.groups.open(group).await?,
                    };
                    match commit_timed(&g, cmd.clone()).await {
                        Ok(resp) => {
                            if let Some(p) = partition {
                                self.set_leader_hint(p, me);
                            }
                            return Ok(Written {
                                result: resp.data,
                                index: resp.log_id.index,
                                served_by: me,
                                served_by_addr: self.cfg.advertise.clone(),
                            });
                        }
                        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                            last_err = format!("node {me} is not the leader");
                            hint = f.leader_id.filter(|l| *l != me);
                        }
                        Err(e) => {
                            self.metrics.proposal_errors.inc();
                            last_err = e.to_string();
                            hint = None;
                            ensure_retry_is_safe(&cmd, &last_err)?;
                        }
                    }
                }
                Some(t) => match self.forward_propose(t, group, &cmd).await {
                    Ok(w) => {
                        if let Some(p) = partition {
                            self.set_leader_hint(p, w.served_by);
                        }
                        return Ok(w);
                    }
                    Err(ForwardError::NotLeader(next)) => {
                        last_err = format!("node {t} is not the leader");
                        hint = next.filter(|n| *n != t);
                    }
                    Err(ForwardError::Silent(e)) => {
                        last_err = e;
                        hint = None;
                        rotate += 1;
                        silent.push(t);
                        ensure_retry_is_safe(&cmd, &last_err)?;
                    }
                    Err(ForwardError::Failed(e)) => {
                        last_err = e;
                        hint = None;
                        rotate += 1;
                        ensure_retry_is_safe(&cmd, &last_err)?;
                    }
                    Err(ForwardError::Fatal(e)) => return Err(e),
                },
                None => {
                    last_err = "no replica of the group is known".into();
                }
            }
            if hint.is_none() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
        }
    }

    async fn forward_propose(&self, target: NodeId, group: u64, cmd: &Command) -> Result<Written, ForwardError> {
        let meta = self.meta().map_err(ForwardError::Fatal)?;
        let addr = self
            .addr_of(&meta, target)
            .ok_or_else(|| ForwardError::Failed(format!("node {target} has no known address")))?;
        let payload = bincode::serialize(cmd).map_err(|e| ForwardError::Fatal(NodeError::Internal(e.to_string())))?;
        let mut c = self.peers.raft(&addr).map_err(|e| ForwardError::Failed(e.to_string()))?;
        let msg = RaftMessage { group, payload, cluster: self.cfg.cluster.clone(), target: 0 };
        let answer = tokio::select! {
            answer = tokio::time::timeout(FORWARD_ATTEMPT, c.propose(msg)) => answer,
            // A stopped leader is noticed by the election this node takes
            // part in sooner than by the attempt's timeout.
            next = self.another_leader(group, target) => {
                return Err(ForwardError::Silent(format!(
                    "node {target} gave no answer and group {group} elected node {next} meanwhile"
                )));
            }
        };
        let resp = answer
            .map_err(|_| ForwardError::Silent(format!("node {target} did not answer within {FORWARD_ATTEMPT:?}")))?
            .map_err(|s| ForwardError::Failed(format!("node {target}: {}", s.message())))?
            .into_inner();
        let ans: ProposeAnswer = bincode::deserialize(&resp.payload)
            .map_err(|e| ForwardError::Failed(format!("bad answer from {target}: {e}")))?;
        match ans {
            ProposeAnswer::Written { result, index, served_by } => {
                Ok(Written { result, index, served_by, served_by_addr: addr })
            }
            ProposeAnswer::NotLeader(l) => Err(ForwardError::NotLeader(l)),
            ProposeAnswer::Failed(e) => Err(ForwardError::Failed(e)),
        }
    }

    /// Resolves once this node's replica of `group` sees a leader other
    /// than `target` and than the one it saw when called (a newer term);
    /// never without a local replica.
    async fn another_leader(&self, group: u64, target: NodeId) -> NodeId {
        let Some(g) = self.groups.get(group) else { return std::future::pending().await };
        let mut rx = g.raft.metrics();
        let seen = rx.borrow().current_leader;
        loop {
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
            let now = rx.borrow().current_leader;
            if let Some(l) = now.filter(|l| *l != target && Some(*l) != seen) {
                return l;
            }
        }
    }

    /// Serves a `Propose` from a peer: commit here if this node leads.
    pub async fn handle_propose(&self, group: u64, cmd: Command) -> ProposeAnswer {
        if self.is_transferring(group) {
            return ProposeAnswer::NotLeader(None);
        }
        let Some(g) = self.groups.get(group) else {
            return ProposeAnswer::Failed(format!("group {group} has no replica on node {}", self.id()));
        };
        match commit_timed(&g, cmd).await {
            Ok(r) => ProposeAnswer::Written { result: r.data, index: r.log_id.index, served_by: self.id() },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => ProposeAnswer::NotLeader(f.leader_id),
            Err(e) => {
                self.metrics.proposal_errors.inc();
                ProposeAnswer::Failed(e.to_string())
            }
        }
    }

    fn guess_replica(&self, group: u64, rotate: &mut usize) -> Option<NodeId> {
        let meta = self.meta_rx.borrow().clone()?;
        let replicas: Vec<NodeId> = match keyraft_api::partition_of_group(group) {
            Some(p) => meta.placement.get(p as usize)?.replicas.clone(),
            None => meta.members.keys().copied().collect(),
        };
        if replicas.is_empty() {
            return None;
        }
        let r = replicas[*rotate % replicas.len()];
        *rotate += 1;
        Some(r)
    }

    pub fn set_transferring(&self, group: u64, on: bool) {
        let mut t = self.transferring.lock().unwrap_or_else(|e| e.into_inner());
        if on {
            t.insert(group);
        } else {
            t.remove(&group);
        }
    }

    fn is_transferring(&self, group: u64) -> bool {
        self.transferring.lock().unwrap_or_else(|e| e.into_inner()).contains(&group)
    }

    pub fn leader_hint(&self, p: u32) -> Option<NodeId> {
        self.leader_hints.lock().unwrap_or_else(|e| e.into_inner()).get(&p).copied()
    }

    fn set_leader_hint(&self, p: u32, id: NodeId) {
        self.leader_hints.lock().unwrap_or_else(|e| e.into_inner()).insert(p, id);
    }

    // ---- reads ------------------------------------------------------------

    /// Decides where a read of partition `p` at `level` is served. `min_index`
    /// is the session token's index (0 without one); `hops` how often the
    /// request was forwarded already.
    pub async fn plan_read(
        &self,
        p: u32,
        level: ConsistencyLevel,
        min_index: u64,
        hops: u32,
    ) -> Result<ReadPlan, NodeError> {
        let meta = self.meta()?;
        let placement = meta.placement.get(p as usize).ok_or_else(|| {
            NodeError::invalid(
                "partition",
                format!("partition {p} does not exist; the cluster has {}", meta.partitions),
            )
        })?;
        let local = self.groups.get(group_of_partition(p)).filter(|_| placement.replicas.contains(&self.id()));
        let can_forward = hops < MAX_HOPS;
        let me = self.id();
        let leader_addr = |g: Option<&Arc<Group>>| -> Option<String> {
            let l = g.and_then(|g| g.raft.metrics().borrow().current_leader).or_else(|| self.leader_hint(p));
            l.filter(|l| *l != me).and_then(|l| self.addr_of(&meta, l))
        };
        let any_replica = || -> Option<String> {
            leader_addr(None)
                .or_else(|| placement.replicas.iter().filter(|r| **r != me).find_map(|r| self.addr_of(&meta, *r)))
        };
        let forward = |addr: Option<String>, why: &str| -> Result<ReadPlan, NodeError> {
            match addr {
                Some(a) if can_forward => Ok(ReadPlan::Forward(a)),
                _ => Err(NodeError::NoLeader { partition: p, detail: why.to_string() }),
            }
        };
        let local_plan = |g: &Arc<Group>| {
            let applied = g.raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
            ReadPlan::Local { reader: g.sm.clone(), applied, served_by: me }
        };
        match level {
            ConsistencyLevel::Eventual => match &local {
                Some(g) => Ok(local_plan(g)),
                None => forward(any_replica(), "no replica reachable"),
            },
            ConsistencyLevel::Session => {
                if let Some(g) = &local {
                    let reached = g
                        .raft
                        .wait(Some(SESSION_WAIT))
                        .applied_index_at_least(Some(min_index), "session read")
                        .await
                        .is_ok();
                    if reached {
                        return Ok(local_plan(g));
                    }
                    let m = g.raft.metrics().borrow().clone();
                    if m.state == ServerState::Leader {
                        let last = m.last_log_index.unwrap_or(0);
                        if min_index > last {
                            return Err(NodeError::UnknownSessionToken { partition: p, index: min_index, last });
                        }
                        return Err(NodeError::Timeout(format!(
                            "partition {p}: not yet applied up to index {min_index}"
                        )));
                    }
                }
                forward(leader_addr(local.as_ref()).or_else(any_replica), "session read: no leader known")
            }
            ConsistencyLevel::Linearizable => {
                if let Some(g) = &local {
                    match g.reads.barrier(&g.raft).await {
                        Ok(_) => {
                            self.set_leader_hint(p, me);
                            return Ok(local_plan(g));
                        }
                        Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                            if let Some(l) = f.leader_id.filter(|l| *l != me) {
                                self.set_leader_hint(p, l);
                                return forward(self.addr_of(&meta, l), "leader unknown");
                            }
                            return Err(NodeError::NotLeader { partition: p, leader: None });
                        }
                        Err(e) => return Err(NodeError::NoLeader { partition: p, detail: e.to_string() }),
                    }
                }
                forward(leader_addr(None).or_else(any_replica), "no replica reachable")
            }
        }
    }
}

/// The answer to a forwarded proposal.
#[derive(serde::Serialize, serde::Deserialize)]
pub enum ProposeAnswer {
    Written { result: CommandResult, index: u64, served_by: NodeId },
    NotLeader(Option<NodeId>),
    Failed(String),
}

enum ForwardError {
    NotLeader(Option<NodeId>),
    /// The peer gave no answer in time (stopped, cut off).
    Silent(String),
    Failed(String),
    Fatal(NodeError),
}

/// After a proposal whose outcome is unknown (it may have committed), only
/// a write with a request id is proposed again: the exactly-once table
/// answers its retry. A key-value write without one fails instead.
fn ensure_retry_is_safe(cmd: &Command, err: &str) -> Result<(), NodeError> {
    match cmd {
        Command::Kv { request_id: None, .. } => Err(NodeError::Timeout(format!(
            "the write may or may not have been applied ({err}); it carries no request id, so it is not proposed again"
        ))),
        _ => Ok(()),
    }
}

fn validate_bootstrap(peers: &[String], partitions: u32, rf: u32, me: &str) -> Result<(), NodeError> {
    if peers.is_empty() {
        return Err(NodeError::invalid("peers", "list every initial node's advertise address, this node's included"));
    }
    if !peers.iter().any(|p| p == me) {
        return Err(NodeError::invalid("peers", format!("must include this node's advertise address {me}")));
    }
    if !(1..=1024).contains(&partitions) {
        return Err(NodeError::invalid("partitions", format!("{partitions} is outside 1..=1024")));
    }
    if ![1, 3, 5].contains(&rf) {
        return Err(NodeError::invalid("replication_factor", format!("{rf} must be 1, 3 or 5")));
    }
    if rf as usize > peers.len() {
        return Err(NodeError::invalid(
            "replication_factor",
            format!("{rf} exceeds the {} nodes given; replicas must be on distinct nodes", peers.len()),
        ));
    }
    Ok(())
}

/// `client_write` on this node's replica (the leader), with the time from
/// proposal to applied result recorded as the commit latency.
async fn commit_timed(
    g: &Group,
    cmd: Command,
) -> Result<
    openraft::raft::ClientWriteResponse<crate::types::TypeConfig>,
    RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
> {
    let start = std::time::Instant::now();
    let res = g.raft.client_write(cmd).await;
    if res.is_ok() {
        crate::metrics::observe_raft_commit(start.elapsed().as_secs_f64());
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_input_is_validated_with_the_field_named() {
        let peers = vec!["a:1".to_string(), "b:1".into(), "c:1".into()];
        assert!(validate_bootstrap(&peers, 8, 3, "a:1").is_ok());
        let cases = [
            (vec![], 8, 3, "peers"),
            (peers.clone(), 8, 3, "peers"), // me = z:1 below
            (peers.clone(), 0, 3, "partitions"),
            (peers.clone(), 2000, 3, "partitions"),
            (peers.clone(), 8, 2, "replication_factor"),
            (peers[..1].to_vec(), 8, 3, "replication_factor"),
        ];
        for (i, (p, parts, rf, field)) in cases.into_iter().enumerate() {
            let me = if i == 1 { "z:1" } else { "a:1" };
            match validate_bootstrap(&p, parts, rf, me) {
                Err(NodeError::InvalidArgument { field: f, .. }) => {
                    assert_eq!(f, field, "case {i}")
                }
                other => panic!("case {i}: expected invalid {field}, got {other:?}"),
            }
        }
    }
}
