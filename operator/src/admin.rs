//! Node admin client: Admin.Status / Bootstrap / SetDefaultRead /
//! SetMemberState / Rebalance over gRPC, each bounded by a timeout so an
//! unreachable node is an observation, never a hung reconcile.

use std::time::Duration;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use keyraft_api::pb::{self, admin_client::AdminClient};
use keyraft_api::tls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use keyraft_api::placement::NodeState;

use crate::crd::ReadConsistency;
use std::collections::BTreeMap;

use crate::planner::{ClusterViewReport, GroupReport, MemberReport, MemberState, NodeReport, Role};
use crate::{Error, Result};

/// Reaches nodes by `<pod>.<headless>.<ns>.svc:7000`, over mutual TLS with
/// the admin certificate of the node's cluster.
#[derive(Clone)]
pub struct Admin {
    pub timeout: Duration,
    /// TLS of each cluster, by the DNS suffix its pods are reached under
    /// (`<headless>.<ns>.svc`); the controller registers it every pass.
    pub tls: Arc<RwLock<HashMap<String, TlsConnector>>>,
    /// Tests: every call goes to this address instead of the node's, in
    /// plaintext.
    #[cfg(test)]
    pub redirect: Option<String>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

/// The DNS suffix of a pod address: `<headless>.<ns>.svc` of
/// `<pod>.<headless>.<ns>.svc:7000`.
fn cluster_suffix(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.split_once('.').map_or(host, |(_, rest)| rest)
}

impl Admin {
    pub fn new(timeout: Duration) -> Admin {
        Admin {
            timeout,
            tls: Arc::default(),
            #[cfg(test)]
            redirect: None,
        }
    }

    /// From now on, nodes whose addresses end in `suffix` are reached over
    /// TLS through `connector`.
    pub fn set_tls(&self, suffix: &str, connector: TlsConnector) {
        self.tls.write().unwrap_or_else(|e| e.into_inner()).insert(suffix.to_string(), connector);
    }

    /// Forgets a deleted cluster's TLS.
    pub fn forget_tls(&self, suffix: &str) {
        self.tls.write().unwrap_or_else(|e| e.into_inner()).remove(suffix);
    }

    async fn client(&self, addr: &str) -> Result<AdminClient<Channel>> {
        #[cfg(test)]
        if let Some(to) = &self.redirect {
            return self.connect(to, None).await;
        }
        let tls = self.tls.read().unwrap_or_else(|e| e.into_inner()).get(cluster_suffix(addr)).cloned();
        // Unit tests talk to fake nodes in plaintext; the operator never does.
        if tls.is_none() && !cfg!(test) {
            return Err(admin_err(addr, "no admin certificate for this cluster yet (see its TLS Secrets)"));
        }
        self.connect(addr, tls).await
    }

    async fn connect(&self, addr: &str, tls: Option<TlsConnector>) -> Result<AdminClient<Channel>> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| admin_err(addr, e))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout);
        let connect = async {
            match tls {
                Some(c) => endpoint.connect_with_connector(c).await,
                None => endpoint.connect().await,
            }
        };
        let channel = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| admin_err(addr, "connect timed out"))?
            .map_err(|e| admin_err(addr, error_text(&e)))?;
        Ok(AdminClient::new(channel))
    }

    /// Admin.Status, turned into the planner's view of the node.
    /// A member that was removed refuses Status (`FailedPrecondition`: its
    /// view is stale) but still says who it is: the report then carries its
    /// identity only, not serving, so the planner can reclaim its pod.
    pub async fn status(&self, addr: &str) -> Result<NodeReport> {
        let mut c = self.client(addr).await?;
        match c.status(pb::StatusRequest {}).await {
            Ok(resp) => node_report(resp.into_inner()).map_err(|e| admin_err(addr, e)),
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                let info =
                    c.identify(pb::IdentifyRequest {}).await.map_err(|e| admin_err(addr, e.message()))?.into_inner();
                Ok(NodeReport {
                    node_id: info.id,
                    joined: info.joined,
                    cluster_id: info.cluster_id,
                    ready: false,
                    version: info.version,
                    tls: tls_of(info.tls_trusted_ca_sha256, info.tls_certificate_sha256),
                    ..NodeReport::default()
                })
            }
            Err(e) => Err(admin_err(addr, e.message())),
        }
    }

    /// Admin.Bootstrap; returns the cluster id (also when it already existed).
    pub async fn bootstrap(
        &self,
        addr: &str,
        peers: Vec<String>,
        partitions: u32,
        replication_factor: u32,
        zones: std::collections::HashMap<String, String>,
    ) -> Result<String> {
        let mut c = self.client(addr).await?;
        let resp = c
            .bootstrap(pb::BootstrapRequest { peers, partitions, replication_factor, zones })
            .await
            .map_err(|e| admin_err(addr, e.message()))?
            .into_inner();
        Ok(resp.cluster_id)
    }

    pub async fn set_default_read(&self, addr: &str, level: ReadConsistency) -> Result<()> {
        let mut c = self.client(addr).await?;
        let consistency = match level {
            ReadConsistency::Linearizable => pb::Consistency::Linearizable,
            ReadConsistency::Session => pb::Consistency::Session,
            ReadConsistency::Eventual => pb::Consistency::Eventual,
        };
        c.set_default_read(pb::SetDefaultReadRequest { consistency: consistency as i32 })
            .await
            .map_err(|e| admin_err(addr, e.message()))?;
        Ok(())
    }

    /// Admin.SetMemberState through the node at `addr` (any joined node: it
    /// forwards to the meta leader). The member is named by `id` when it is
    /// known, else by `name` (its pod name); returns its new record.
    pub async fn set_member_state(&self, addr: &str, id: u64, name: &str, state: NodeState) -> Result<MemberReport> {
        let mut c = self.client(addr).await?;
        let resp = c
            .set_member_state(pb::SetMemberStateRequest { id, name: name.to_string(), state: state.as_str().into() })
            .await
            .map_err(|e| admin_err(addr, e.message()))?
            .into_inner();
        let m = resp.member.ok_or_else(|| admin_err(addr, "SetMemberState answered without a member"))?;
        member_report(m).map_err(|e| admin_err(addr, e))
    }

    /// Admin.SetMemberZone through the node at `addr`; returns the member's new record.
    pub async fn set_member_zone(&self, addr: &str, id: u64, zone: &str) -> Result<MemberReport> {
        let mut c = self.client(addr).await?;
        let resp = c
            .set_member_zone(pb::SetMemberZoneRequest { id, name: String::new(), zone: zone.to_string() })
            .await
            .map_err(|e| admin_err(addr, e.message()))?
            .into_inner();
        let m = resp.member.ok_or_else(|| admin_err(addr, "SetMemberZone answered without a member"))?;
        member_report(m).map_err(|e| admin_err(addr, e))
    }

    /// Admin.Rebalance: the moves of a balanced placement, at most
    /// `max_moves` partitions (0: the node's default), applied unless `dry_run`.
    pub async fn rebalance(&self, addr: &str, dry_run: bool, max_moves: u32) -> Result<pb::RebalanceResponse> {
        let mut c = self.client(addr).await?;
        let resp = c
            .rebalance(pb::RebalanceRequest { dry_run, max_moves })
            .await
            .map_err(|e| admin_err(addr, e.message()))?
            .into_inner();
        Ok(resp)
    }
}

/// One line per move, for Events: `p3 [1,2,3] -> [1,2,4]`.
pub fn describe_moves(moves: &[pb::Move]) -> String {
    let ids = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    moves
        .iter()
        .map(|m| {
            let mut s = format!("p{} [{}] -> [{}]", m.partition, ids(&m.from), ids(&m.to));
            if m.leader_from != m.leader_to {
                s.push_str(&format!(" leader {} -> {}", m.leader_from, m.leader_to));
            }
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Member states are parsed here, at the wire boundary: an answer naming a
/// state this operator does not know is no answer (the planner waits).
fn member_report(m: pb::MemberRecord) -> Result<MemberReport, String> {
    let state =
        MemberState::parse(&m.state).ok_or_else(|| format!("member {} has unknown state {:?}", m.id, m.state))?;
    Ok(MemberReport { id: m.id, name: m.name, state, zone: m.zone })
}

/// An error with its causes: a refused TLS handshake's reason is in the
/// source chain of tonic's transport error.
fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !text.contains(&m) {
            text = format!("{text}: {m}");
        }
        src = c.source();
    }
    text
}

fn admin_err(addr: &str, e: impl std::fmt::Display) -> Error {
    Error::Admin { addr: addr.to_string(), message: e.to_string() }
}

/// Maps an Admin.Status answer to the planner's NodeReport.
pub fn node_report(resp: pb::StatusResponse) -> Result<NodeReport, String> {
    let node = resp.node.unwrap_or_default();
    // Group 0 is meta; partition p is group p + 1.
    let mut partitions = BTreeMap::new();
    for g in resp.groups.iter().filter(|g| g.group > 0) {
        let role = Role::parse(&g.role).ok_or_else(|| format!("group {} has unknown role {:?}", g.group, g.role))?;
        let report = GroupReport { role, term: g.term, commit_index: g.commit_index, applied_index: g.applied_index };
        partitions.insert((g.group - 1) as u32, report);
    }
    let led = || resp.groups.iter().filter(|g| g.group > 0 && g.role == "leader");
    let led_partitions: Vec<u32> = led().map(|g| (g.group - 1) as u32).collect();
    let led_voters: Vec<(u32, Vec<u64>)> = led().map(|g| ((g.group - 1) as u32, g.voters.clone())).collect();
    let view = match resp.cluster {
        Some(v) => Some(ClusterViewReport {
            meta_applied_index: v.meta_applied_index,
            members: v.members.into_iter().map(member_report).collect::<Result<_, _>>()?,
            preferred_leaders: v.placement.iter().map(|p| (p.partition, p.preferred_leader)).collect(),
            placement: v.placement.into_iter().map(|p| (p.partition, p.replicas)).collect(),
            default_read: match pb::Consistency::try_from(v.default_read) {
                Ok(pb::Consistency::Linearizable) => Some(ReadConsistency::Linearizable),
                Ok(pb::Consistency::Session) => Some(ReadConsistency::Session),
                Ok(pb::Consistency::Eventual) => Some(ReadConsistency::Eventual),
                _ => None,
            },
        }),
        None => None,
    };
    let tls = tls_of(node.tls_trusted_ca_sha256, node.tls_certificate_sha256);
    Ok(NodeReport {
        node_id: node.id,
        joined: node.joined,
        cluster_id: node.cluster_id,
        ready: node.ready,
        version: node.version,
        leaders: led_partitions.len() as u32,
        led_partitions,
        led_voters,
        view,
        partitions,
        tls,
    })
}

/// The TLS fingerprints a node's `NodeInfo` reports (empty: no certificate).
fn tls_of(trusted_cas: Vec<String>, own: String) -> keyraft_api::tls::Fingerprints {
    keyraft_api::tls::Fingerprints { trusted_cas, own: Some(own).filter(|s| !s.is_empty()) }
}

/// A fake node's Admin service on loopback, for the admin and controller tests.
#[cfg(test)]
pub(crate) mod fake {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A node that answers Status and records Bootstrap, SetMemberState and
    /// Rebalance calls.
    pub struct FakeNode {
        /// What Status answers.
        pub status: Mutex<pb::StatusResponse>,
        /// A removed member: Status is refused, Identify still answers.
        pub departed: Mutex<bool>,
        pub bootstraps: Mutex<Vec<pb::BootstrapRequest>>,
        pub member_states: Mutex<Vec<pb::SetMemberStateRequest>>,
        pub rebalances: Mutex<Vec<pb::RebalanceRequest>>,
    }

    #[tonic::async_trait]
    impl pb::admin_server::Admin for FakeNode {
        async fn status(
            &self,
            _: tonic::Request<pb::StatusRequest>,
        ) -> Result<tonic::Response<pb::StatusResponse>, tonic::Status> {
            if *self.departed.lock().unwrap() {
                return Err(tonic::Status::failed_precondition("node kv-1 (3) is removed"));
            }
            Ok(tonic::Response::new(self.status.lock().unwrap().clone()))
        }
        async fn bootstrap(
            &self,
            req: tonic::Request<pb::BootstrapRequest>,
        ) -> Result<tonic::Response<pb::BootstrapResponse>, tonic::Status> {
            self.bootstraps.lock().unwrap().push(req.into_inner());
            Ok(tonic::Response::new(pb::BootstrapResponse { cluster_id: "cid-1".into(), already_bootstrapped: false }))
        }
        async fn health(
            &self,
            _: tonic::Request<pb::HealthRequest>,
        ) -> Result<tonic::Response<pb::HealthResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn identify(
            &self,
            _: tonic::Request<pb::IdentifyRequest>,
        ) -> Result<tonic::Response<pb::NodeInfo>, tonic::Status> {
            Ok(tonic::Response::new(self.status.lock().unwrap().node.clone().unwrap_or_default()))
        }
        async fn set_default_read(
            &self,
            _: tonic::Request<pb::SetDefaultReadRequest>,
        ) -> Result<tonic::Response<pb::SetDefaultReadResponse>, tonic::Status> {
            Err(tonic::Status::invalid_argument("no such level"))
        }
        async fn set_placement(
            &self,
            _: tonic::Request<pb::SetPlacementRequest>,
        ) -> Result<tonic::Response<pb::SetPlacementResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn set_member_state(
            &self,
            req: tonic::Request<pb::SetMemberStateRequest>,
        ) -> Result<tonic::Response<pb::SetMemberStateResponse>, tonic::Status> {
            let req = req.into_inner();
            self.member_states.lock().unwrap().push(req.clone());
            if NodeState::parse(&req.state).is_none() {
                return Err(tonic::Status::invalid_argument(format!("{:?} is not a member state", req.state)));
            }
            if req.id == 0 && req.name != "kv-4" {
                return Err(tonic::Status::invalid_argument(format!("no member with id 0 or name {:?}", req.name)));
            }
            let id = if req.id == 0 { 5 } else { req.id };
            Ok(tonic::Response::new(pb::SetMemberStateResponse {
                member: Some(pb::MemberRecord { id, name: "kv-4".into(), state: req.state, ..Default::default() }),
            }))
        }
        async fn set_member_zone(
            &self,
            _: tonic::Request<pb::SetMemberZoneRequest>,
        ) -> Result<tonic::Response<pb::SetMemberZoneResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn rebalance(
            &self,
            req: tonic::Request<pb::RebalanceRequest>,
        ) -> Result<tonic::Response<pb::RebalanceResponse>, tonic::Status> {
            let req = req.into_inner();
            self.rebalances.lock().unwrap().push(req);
            let moves = vec![
                pb::Move { partition: 0, from: vec![1, 2, 3], to: vec![1, 2, 4], leader_from: 1, leader_to: 1 },
                pb::Move { partition: 3, from: vec![1, 2, 3], to: vec![4, 2, 3], leader_from: 1, leader_to: 4 },
            ];
            let moves: Vec<pb::Move> = moves.into_iter().take(req.max_moves.max(1) as usize).collect();
            Ok(tonic::Response::new(pb::RebalanceResponse { applied: !req.dry_run && !moves.is_empty(), moves }))
        }
        type BackupPartitionStream = futures::stream::Empty<Result<pb::BackupPartitionResponse, tonic::Status>>;
        async fn backup_partition(
            &self,
            _: tonic::Request<pb::BackupPartitionRequest>,
        ) -> Result<tonic::Response<Self::BackupPartitionStream>, tonic::Status> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn join(
            &self,
            _: tonic::Request<pb::JoinRequest>,
        ) -> Result<tonic::Response<pb::JoinResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn campaign(
            &self,
            _: tonic::Request<pb::CampaignRequest>,
        ) -> Result<tonic::Response<pb::CampaignResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("fake"))
        }
    }

    impl Default for FakeNode {
        fn default() -> FakeNode {
            FakeNode {
                status: Mutex::new(pb::StatusResponse {
                    node: Some(pb::NodeInfo { id: 3, joined: false, version: "0.1.0".into(), ..Default::default() }),
                    ..Default::default()
                }),
                departed: Mutex::new(false),
                bootstraps: Mutex::default(),
                member_states: Mutex::default(),
                rebalances: Mutex::default(),
            }
        }
    }

    /// Serves `node` on a loopback port; returns its address.
    pub async fn serve(node: Arc<FakeNode>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let incoming = futures::stream::unfold(listener, |l| async move {
            let conn = l.accept().await.map(|(s, _)| s);
            Some((conn, l))
        });
        let svc = pb::admin_server::AdminServer::from_arc(node);
        tokio::spawn(tonic::transport::Server::builder().add_service(svc).serve_with_incoming(incoming));
        addr
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeNode;
    use super::*;

    #[test]
    fn status_maps_to_report() {
        let resp = pb::StatusResponse {
            node: Some(pb::NodeInfo {
                id: 7,
                joined: true,
                ready: true,
                cluster_id: "c".into(),
                version: "0.1.0".into(),
                ..Default::default()
            }),
            groups: vec![
                pb::GroupStatus { group: 0, role: "leader".into(), ..Default::default() },
                pb::GroupStatus { group: 3, role: "leader".into(), voters: vec![7, 8], ..Default::default() },
                pb::GroupStatus { group: 4, role: "follower".into(), ..Default::default() },
            ],
            cluster: Some(pb::ClusterView {
                default_read: pb::Consistency::Session as i32,
                placement: vec![pb::PartitionPlacement { partition: 2, replicas: vec![7, 8], preferred_leader: 7 }],
                members: vec![pb::MemberRecord {
                    id: 7,
                    name: "kv-0".into(),
                    state: "draining".into(),
                    zone: "z1".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        };
        // Unknown states and roles are no answer, not a guess.
        let mut odd = resp.clone();
        odd.cluster.as_mut().unwrap().members[0].state = "resting".into();
        assert!(node_report(odd).unwrap_err().contains("unknown state \"resting\""));
        let mut odd = resp.clone();
        odd.groups[2].role = "observer".into();
        assert!(node_report(odd).unwrap_err().contains("unknown role"));
        let r = node_report(resp).unwrap();
        assert_eq!(r.node_id, 7);
        // Every partition replica, with its role, as the catch-up check reads it.
        assert_eq!(r.partitions.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(r.partitions[&2].role, Role::Leader);
        assert_eq!(r.partitions[&3].role, Role::Follower);
        // The meta group's leadership is not a partition leadership.
        assert_eq!(r.led_partitions, vec![2]);
        assert_eq!(r.leaders, 1);
        let v = r.view.unwrap();
        assert_eq!(v.default_read, Some(ReadConsistency::Session));
        assert_eq!(v.placement, vec![(2, vec![7, 8])]);
        assert_eq!(v.preferred_leaders.get(&2), Some(&7));
        let m = v.member("kv-0").unwrap();
        assert_eq!((m.id, m.state.as_str(), m.zone.as_str()), (7, "draining", "z1"));
        // Voters of led partitions: how the planner sees moves in flight.
        assert_eq!(r.led_voters, vec![(2, vec![7, 8])]);
    }

    #[tokio::test]
    async fn talks_to_a_node_over_grpc() {
        let node = std::sync::Arc::new(FakeNode::default());
        let addr = fake::serve(node.clone()).await;

        let admin = Admin::new(Duration::from_secs(2));
        let report = admin.status(&addr).await.unwrap();
        assert_eq!(report.node_id, 3);
        assert!(!report.joined);
        let id =
            admin.bootstrap(&addr, vec!["a:7000".into(), "b:7000".into()], 16, 3, Default::default()).await.unwrap();
        assert_eq!(id, "cid-1");
        let calls = node.bootstraps.lock().unwrap().clone();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].peers, ["a:7000", "b:7000"]);
        assert_eq!((calls[0].partitions, calls[0].replication_factor), (16, 3));
        // A gRPC error names the node and carries the node's message.
        let err = admin.set_default_read(&addr, ReadConsistency::Session).await.unwrap_err();
        assert!(err.to_string().contains(&addr) && err.to_string().contains("no such level"), "{err}");

        // SetMemberState: by id when the planner knows it, the pod name along.
        let m = admin.set_member_state(&addr, 5, "kv-4", NodeState::Decommissioning).await.unwrap();
        assert_eq!((m.id, m.name.as_str(), m.state.as_str()), (5, "kv-4", "decommissioning"));
        for state in [NodeState::Draining, NodeState::Active, NodeState::Failed] {
            admin.set_member_state(&addr, 5, "kv-4", state).await.unwrap();
        }
        // By name alone.
        assert_eq!(admin.set_member_state(&addr, 0, "kv-4", NodeState::Removed).await.unwrap().id, 5);
        let err = admin.set_member_state(&addr, 0, "kv-9", NodeState::Failed).await.unwrap_err();
        assert!(err.to_string().contains("kv-9"), "{err}");
        let calls = node.member_states.lock().unwrap().clone();
        let sent: Vec<(u64, &str, &str)> = calls.iter().map(|r| (r.id, r.name.as_str(), r.state.as_str())).collect();
        assert_eq!(
            sent,
            [
                (5, "kv-4", "decommissioning"),
                (5, "kv-4", "draining"),
                (5, "kv-4", "active"),
                (5, "kv-4", "failed"),
                (0, "kv-4", "removed"),
                (0, "kv-9", "failed"),
            ]
        );

        // Rebalance: applied, bounded by max_moves; a dry run changes nothing.
        let r = admin.rebalance(&addr, false, 1).await.unwrap();
        assert!(r.applied);
        assert_eq!(describe_moves(&r.moves), "p0 [1,2,3] -> [1,2,4]");
        let r = admin.rebalance(&addr, true, 2).await.unwrap();
        assert!(!r.applied);
        assert_eq!(describe_moves(&r.moves), "p0 [1,2,3] -> [1,2,4]; p3 [1,2,3] -> [4,2,3] leader 1 -> 4");
        let calls = node.rebalances.lock().unwrap().clone();
        let sent: Vec<(bool, u32)> = calls.iter().map(|r| (r.dry_run, r.max_moves)).collect();
        assert_eq!(sent, [(false, 1), (true, 2)]);
    }

    #[tokio::test]
    async fn a_removed_member_that_refuses_status_is_reported_by_its_identity() {
        let node = std::sync::Arc::new(FakeNode::default());
        node.status.lock().unwrap().node.as_mut().unwrap().joined = true;
        *node.departed.lock().unwrap() = true;
        let addr = fake::serve(node.clone()).await;
        let admin = Admin::new(Duration::from_secs(2));
        let report = admin.status(&addr).await.unwrap();
        assert_eq!((report.node_id, report.joined, report.ready), (3, true, false));
        assert!(report.view.is_none() && report.partitions.is_empty(), "no stale view taken from it: {report:?}");
    }

    #[tokio::test]
    async fn unreachable_node_is_an_error_within_the_timeout() {
        let admin = Admin::new(Duration::from_millis(300));
        // Port 1 on loopback: nothing listens.
        let start = std::time::Instant::now();
        let err = admin.status("127.0.0.1:1").await.unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(3));
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}
