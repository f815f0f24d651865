//! Node admin client: Admin.Status / Bootstrap / SetDefaultRead over gRPC,
//! each bounded by a timeout so an unreachable node is an observation, never
//! a hung reconcile.

use std::time::Duration;

use keyraft_api::pb::{self, admin_client::AdminClient};
use tonic::transport::{Channel, Endpoint};

use crate::crd::ReadConsistency;
use crate::planner::{ClusterViewReport, MemberReport, NodeReport};
use crate::{Error, Result};

/// Reaches nodes by `<pod>.<headless>.<ns>.svc:7000`.
#[derive(Clone, Debug)]
pub struct Admin {
    pub timeout: Duration,
}

impl Admin {
    async fn client(&self, addr: &str) -> Result<AdminClient<Channel>> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| admin_err(addr, e))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout);
        let channel = tokio::time::timeout(self.timeout, endpoint.connect())
            .await
            .map_err(|_| admin_err(addr, "connect timed out"))?
            .map_err(|e| admin_err(addr, e))?;
        Ok(AdminClient::new(channel))
    }

    /// Admin.Status, turned into the planner's view of the node.
    pub async fn status(&self, addr: &str) -> Result<NodeReport> {
        let mut c = self.client(addr).await?;
        let resp = c.status(pb::StatusRequest {}).await.map_err(|e| admin_err(addr, e.message()))?.into_inner();
        Ok(node_report(resp))
    }

    /// Admin.Bootstrap; returns the cluster id (also when it already existed).
    pub async fn bootstrap(
        &self,
        addr: &str,
        peers: Vec<String>,
        partitions: u32,
        replication_factor: u32,
    ) -> Result<String> {
        let mut c = self.client(addr).await?;
        let resp = c
            .bootstrap(pb::BootstrapRequest { peers, partitions, replication_factor })
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
}

fn admin_err(addr: &str, e: impl std::fmt::Display) -> Error {
    Error::Admin { addr: addr.to_string(), message: e.to_string() }
}

/// Maps an Admin.Status answer to the planner's NodeReport.
pub fn node_report(resp: pb::StatusResponse) -> NodeReport {
    let node = resp.node.unwrap_or_default();
    // Group 0 is meta; partition p is group p + 1.
    let led_partitions: Vec<u32> =
        resp.groups.iter().filter(|g| g.group > 0 && g.role == "leader").map(|g| (g.group - 1) as u32).collect();
    let view = resp.cluster.map(|v| ClusterViewReport {
        meta_applied_index: v.meta_applied_index,
        members: v.members.into_iter().map(|m| MemberReport { id: m.id, name: m.name, state: m.state }).collect(),
        placement: v.placement.into_iter().map(|p| (p.partition, p.replicas)).collect(),
        default_read: match pb::Consistency::try_from(v.default_read) {
            Ok(pb::Consistency::Linearizable) => Some(ReadConsistency::Linearizable),
            Ok(pb::Consistency::Session) => Some(ReadConsistency::Session),
            Ok(pb::Consistency::Eventual) => Some(ReadConsistency::Eventual),
            _ => None,
        },
    });
    NodeReport {
        node_id: node.id,
        joined: node.joined,
        cluster_id: node.cluster_id,
        ready: node.ready,
        version: node.version,
        leaders: led_partitions.len() as u32,
        led_partitions,
        view,
    }
}

#[cfg(test)]
mod tests {
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
                pb::GroupStatus { group: 3, role: "leader".into(), ..Default::default() },
                pb::GroupStatus { group: 4, role: "follower".into(), ..Default::default() },
            ],
            cluster: Some(pb::ClusterView {
                default_read: pb::Consistency::Session as i32,
                placement: vec![pb::PartitionPlacement { partition: 2, replicas: vec![7, 8], preferred_leader: 7 }],
                ..Default::default()
            }),
        };
        let r = node_report(resp);
        assert_eq!(r.node_id, 7);
        // The meta group's leadership is not a partition leadership.
        assert_eq!(r.led_partitions, vec![2]);
        assert_eq!(r.leaders, 1);
        let v = r.view.unwrap();
        assert_eq!(v.default_read, Some(ReadConsistency::Session));
        assert_eq!(v.placement, vec![(2, vec![7, 8])]);
    }

    /// A node that answers Status and records Bootstrap calls.
    #[derive(Default)]
    struct FakeNode {
        bootstraps: std::sync::Mutex<Vec<pb::BootstrapRequest>>,
    }

    #[tonic::async_trait]
    impl pb::admin_server::Admin for FakeNode {
        async fn status(
            &self,
            _: tonic::Request<pb::StatusRequest>,
        ) -> Result<tonic::Response<pb::StatusResponse>, tonic::Status> {
            Ok(tonic::Response::new(pb::StatusResponse {
                node: Some(pb::NodeInfo { id: 3, joined: false, version: "0.1.0".into(), ..Default::default() }),
                ..Default::default()
            }))
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
            Err(tonic::Status::unimplemented("fake"))
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
            _: tonic::Request<pb::SetMemberStateRequest>,
        ) -> Result<tonic::Response<pb::SetMemberStateResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn rebalance(
            &self,
            _: tonic::Request<pb::RebalanceRequest>,
        ) -> Result<tonic::Response<pb::RebalanceResponse>, tonic::Status> {
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

    #[tokio::test]
    async fn talks_to_a_node_over_grpc() {
        let node = std::sync::Arc::new(FakeNode::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let incoming = futures::stream::unfold(listener, |l| async move {
            let conn = l.accept().await.map(|(s, _)| s);
            Some((conn, l))
        });
        let svc = pb::admin_server::AdminServer::from_arc(node.clone());
        tokio::spawn(tonic::transport::Server::builder().add_service(svc).serve_with_incoming(incoming));

        let admin = Admin { timeout: Duration::from_secs(2) };
        let report = admin.status(&addr).await.unwrap();
        assert_eq!(report.node_id, 3);
        assert!(!report.joined);
        let id = admin.bootstrap(&addr, vec!["a:7000".into(), "b:7000".into()], 16, 3).await.unwrap();
        assert_eq!(id, "cid-1");
        let calls = node.bootstraps.lock().unwrap().clone();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].peers, ["a:7000", "b:7000"]);
        assert_eq!((calls[0].partitions, calls[0].replication_factor), (16, 3));
        // A gRPC error names the node and carries the node's message.
        let err = admin.set_default_read(&addr, ReadConsistency::Session).await.unwrap_err();
        assert!(err.to_string().contains(&addr) && err.to_string().contains("no such level"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_node_is_an_error_within_the_timeout() {
        let admin = Admin { timeout: Duration::from_millis(300) };
        // Port 1 on loopback: nothing listens.
        let start = std::time::Instant::now();
        let err = admin.status("127.0.0.1:1").await.unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(3));
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}
