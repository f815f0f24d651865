//! One gRPC connection per peer node, shared by every Raft group and by
//! request forwarding (the `multi-raft-kv` router idea).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use keyraft_api::limits::MAX_MESSAGE_BYTES;
use keyraft_api::pb::admin_client::AdminClient;
use keyraft_api::pb::kv_client::KvClient;
use keyraft_api::pb::raft_client::RaftClient;
use keyraft_api::tls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::storage::throttle::SendThrottle;

#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<RwLock<HashMap<String, Channel>>>,
    /// Dials TLS presenting this node's certificate; `None` in plaintext.
    tls: Option<TlsConnector>,
    /// What this node may send of snapshots to new replicas; `None`: unlimited.
    send_throttle: Option<Arc<SendThrottle>>,
}

impl Peers {
    pub fn new(tls: Option<TlsConnector>, send_throttle: Option<SendThrottle>) -> Peers {
        Peers { channels: Default::default(), tls, send_throttle: send_throttle.map(Arc::new) }
    }

    /// The pace of snapshots sent to new replicas (`--snapshot-send-bytes-per-sec`).
    pub fn send_throttle(&self) -> Option<Arc<SendThrottle>> {
        self.send_throttle.clone()
    }

    /// A lazily connecting channel to `addr` (host:port), created once.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        if let Some(c) = self.channels.read().unwrap_or_else(|e| e.into_inner()).get(addr) {
            return Ok(c.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let ep = Endpoint::from_shared(format!("{scheme}://{addr}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let ch = match &self.tls {
            Some(tls) => ep.connect_with_connector_lazy(tls.clone()),
            None => ep.connect_lazy(),
        };
        let mut map = self.channels.write().unwrap_or_else(|e| e.into_inner());
        Ok(map.entry(addr.to_string()).or_insert(ch).clone())
    }

    pub fn raft(&self, addr: &str) -> Result<RaftClient<Channel>, tonic::transport::Error> {
        Ok(RaftClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    pub fn kv(&self, addr: &str) -> Result<KvClient<Channel>, tonic::transport::Error> {
        Ok(KvClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    pub fn admin(&self, addr: &str) -> Result<AdminClient<Channel>, tonic::transport::Error> {
        Ok(AdminClient::new(self.channel(addr)?))
    }
}
