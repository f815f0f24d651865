//! A minimal kube-proxy: every port of a ClusterIP Service listens on the
//! Service's loopback ClusterIP and forwards each connection to a ready
//! endpoint (round-robin over the selected pods, targetPort resolved by
//! number or container-port name).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::probe::resolve_port;
use crate::controllers::{pod_ready, terminating};
use crate::selector::LabelSelector;

struct Listener {
    endpoints: Arc<RwLock<Vec<SocketAddr>>>,
    task: JoinHandle<()>,
}

/// The forwarding listeners, keyed by (service uid, clusterIP, port).
#[derive(Default)]
pub struct Proxy {
    listeners: HashMap<(String, String, u16), Listener>,
}

/// Ready endpoints of one Service port.
fn endpoints(svc: &Value, port: &Value, pods: &[Arc<Value>]) -> Vec<SocketAddr> {
    let Some(sel) = svc["spec"]["selector"].as_object().filter(|s| !s.is_empty()) else {
        return vec![];
    };
    let selector = LabelSelector::from_object(&serde_json::json!({"matchLabels": sel})).unwrap_or_default();
    let target = if port["targetPort"].is_null() { port["port"].clone() } else { port["targetPort"].clone() };
    pods.iter()
        .filter(|p| p["metadata"]["namespace"] == svc["metadata"]["namespace"])
        .filter(|p| selector.matches_object(p) && pod_ready(p) && !terminating(p))
        .filter_map(|p| {
            let ip = p["status"]["podIP"].as_str()?.parse().ok()?;
            let port = p["spec"]["containers"]
                .as_array()?
                .iter()
                .find_map(|c| resolve_port(&target, c))
                .or_else(|| target.as_u64().map(|n| n as u16))?;
            Some(SocketAddr::new(ip, port))
        })
        .collect()
}

async fn serve(listener: TcpListener, endpoints: Arc<RwLock<Vec<SocketAddr>>>) {
    let next = AtomicUsize::new(0);
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else { continue };
        let eps = endpoints.read().unwrap().clone();
        if eps.is_empty() {
            continue; // connection closed: no ready endpoint, as a refused connection
        }
        let target = eps[next.fetch_add(1, Ordering::Relaxed) % eps.len()];
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

impl Proxy {
    /// Brings listeners in line with the Services and pods.
    pub fn sync(&mut self, services: &[Arc<Value>], pods: &[Arc<Value>]) {
        let mut wanted = HashMap::new();
        for svc in services {
            let Some(ip) = svc["spec"]["clusterIP"].as_str().filter(|ip| ip.starts_with("127.")) else { continue };
            for port in svc["spec"]["ports"].as_array().into_iter().flatten() {
                let Some(p) = port["port"].as_u64().and_then(|p| u16::try_from(p).ok()) else { continue };
                let key = (svc["metadata"]["uid"].as_str().unwrap_or_default().to_string(), ip.to_string(), p);
                wanted.insert(key, endpoints(svc, port, pods));
            }
        }
        self.listeners.retain(|k, l| {
            let keep = wanted.contains_key(k);
            if !keep {
                l.task.abort();
            }
            keep
        });
        for (key, eps) in wanted {
            match self.listeners.get(&key) {
                Some(l) => *l.endpoints.write().unwrap() = eps,
                None => {
                    let addr: SocketAddr = match format!("{}:{}", key.1, key.2).parse() {
                        Ok(a) => a,
                        Err(_) => continue,
                    };
                    let std_listener = match std::net::TcpListener::bind(addr) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::warn!(%addr, "service proxy cannot listen: {e}");
                            continue;
                        }
                    };
                    let _ = std_listener.set_nonblocking(true);
                    let Ok(listener) = TcpListener::from_std(std_listener) else { continue };
                    let endpoints = Arc::new(RwLock::new(eps));
                    let task = tokio::spawn(serve(listener, endpoints.clone()));
                    self.listeners.insert(key, Listener { endpoints, task });
                }
            }
        }
    }

    /// Stops every listener.
    pub fn stop(&mut self) {
        for (_, l) in self.listeners.drain() {
            l.task.abort();
        }
    }
}
