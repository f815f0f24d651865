//! Node processes for a nemesis run: on loopback, or each in its own network
//! namespace (`ip netns exec` execs the node, so the child's pid is the
//! node's and kill -9 / SIGSTOP reach it directly).

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyraft_api::pb::admin_client::AdminClient;
use keyraft_client::local::LocalTls;
use keyraft_client::{pb, Client, ClientOptions};
use tonic::transport::Channel;

use crate::error::ChaosError;
use crate::net::Net;

pub struct Node {
    pub name: String,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    pub netns: Option<String>,
    /// A small tmpfs the data directory lives in, when the run fills disks.
    pub volume: Option<PathBuf>,
    /// Seeds to join through (a node back with an empty data directory).
    pub join: Vec<String>,
    child: Option<Child>,
    paused: bool,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    bin: PathBuf,
    dir: PathBuf,
    name: String,
    /// The run's throwaway CA and credentials (under `<dir>/tls`): nodes
    /// serve mutual TLS as in production, the nemesis calls Admin as admin
    /// and the workload uses a client certificate.
    tls: LocalTls,
    admin: Client,
}

fn free_port() -> Result<u16, ChaosError> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(ChaosError::io("bind a free port"))?;
    Ok(l.local_addr().map_err(ChaosError::io("bind a free port"))?.port())
}

impl Cluster {
    /// Lays out `n` nodes under `dir`, in `net`'s namespaces when given.
    pub fn new(bin: PathBuf, dir: PathBuf, n: usize, net: Option<&Net>) -> Result<Cluster, ChaosError> {
        fs::create_dir_all(&dir).map_err(ChaosError::io(format!("create {}", dir.display())))?;
        let mut nodes = Vec::new();
        for i in 0..n {
            let (grpc, http) = match net {
                Some(net) => {
                    (SocketAddr::new(IpAddr::V4(net.ip(i)), 7000), SocketAddr::new(IpAddr::V4(net.ip(i)), 8000))
                }
                None => (
                    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?)),
                    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?)),
                ),
            };
            nodes.push(Node {
                name: format!("node-{i}"),
                grpc,
                http,
                data_dir: dir.join(format!("node-{i}")),
                netns: net.map(|n| n.ns(i)),
                volume: None,
                join: Vec::new(),
                child: None,
                paused: false,
            });
        }
        let name = format!("chaos-{}", std::process::id());
        let tls = LocalTls::create_or_load(&dir.join("tls"), &name).map_err(ChaosError::io("issue TLS credentials"))?;
        let mut opts = ClientOptions::new(nodes.iter().map(|n| n.grpc.to_string()).collect());
        opts.timeout = Duration::from_secs(5);
        opts.attempt_timeout = Duration::from_secs(2);
        opts.tls = Some(tls.options(&tls.admin));
        let admin = Client::new(opts).map_err(|e| ChaosError::Cluster(e.to_string()))?;
        Ok(Cluster { nodes, bin, dir, name, tls, admin })
    }

    /// Options for a workload client: every node, TLS with the client role.
    pub fn client_options(&self) -> ClientOptions {
        let mut o = ClientOptions::new(self.endpoints());
        o.tls = Some(self.tls.options(&self.tls.client));
        o
    }

    /// Puts each node's data directory on its own tmpfs of `mib` MiB (root
    /// only), so a disk can be filled: a real `ENOSPC` under the node's
    /// writes. Call before the nodes start.
    pub fn mount_volumes(&mut self, mib: u64) -> Result<(), ChaosError> {
        for n in &mut self.nodes {
            let vol = self.dir.join(format!("{}-volume", n.name));
            fs::create_dir_all(&vol).map_err(ChaosError::io(format!("create {}", vol.display())))?;
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
                .arg(&vol)
                .output()
                .map_err(ChaosError::io("run mount"))?;
            if !out.status.success() {
                return Err(ChaosError::Cluster(format!(
                    "mount a tmpfs at {}: {}",
                    vol.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            n.data_dir = vol.join("data");
            n.volume = Some(vol);
        }
        Ok(())
    }

    /// Fills node `i`'s volume until the file system says it is full.
    pub fn fill_disk(&self, i: usize) -> Result<(), ChaosError> {
        let vol =
            self.nodes[i].volume.as_ref().ok_or_else(|| ChaosError::Cluster(format!("node {i} has no volume")))?;
        let path = vol.join("filler");
        let mut f = fs::File::create(&path).map_err(ChaosError::io(format!("create {}", path.display())))?;
        let chunk = vec![0u8; 1 << 20];
        loop {
            match std::io::Write::write(&mut f, &chunk) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return Ok(()),
                Err(e) => return Err(ChaosError::Io { what: format!("fill {}", path.display()), source: e }),
            }
        }
    }

    /// Frees what [`Cluster::fill_disk`] took, on every volume.
    pub fn free_disks(&self) {
        for vol in self.nodes.iter().filter_map(|n| n.volume.as_ref()) {
            let _ = fs::remove_file(vol.join("filler"));
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.grpc.to_string()).collect()
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.log", self.nodes[i].name))
    }

    pub fn start(&mut self, i: usize) -> Result<(), ChaosError> {
        if self.is_running(i) {
            return Ok(());
        }
        let log_path = self.log_path(i);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(ChaosError::io(format!("open {}", log_path.display())))?;
        let n = &self.nodes[i];
        let (cert, key) =
            self.tls.member(&n.name, &n.grpc.ip().to_string()).map_err(ChaosError::io("issue a node certificate"))?;
        let mut cmd = match &n.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.arg("--name")
            .arg(&n.name)
            .arg("--data-dir")
            .arg(&n.data_dir)
            .arg("--listen")
            .arg(n.grpc.to_string())
            .arg("--advertise")
            .arg(n.grpc.to_string())
            .arg("--http-listen")
            .arg(n.http.to_string())
            .arg("--cluster")
            .arg(&self.name)
            .args(if n.join.is_empty() { vec![] } else { vec!["--join".to_string(), n.join.join(",")] })
            .arg("--tls-ca")
            .arg(&self.tls.ca)
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(ChaosError::io("clone log handle"))?)
            .stderr(log);
        let child = cmd.spawn().map_err(ChaosError::io(format!("start {}", self.bin.display())))?;
        let n = &mut self.nodes[i];
        n.child = Some(child);
        n.paused = false;
        Ok(())
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        matches!(self.nodes[i].child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn signal(&self, i: usize, sig: i32) {
        if let Some(c) = &self.nodes[i].child {
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// kill -9.
    pub fn kill(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.signal(i, libc::SIGKILL);
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.wait();
        }
    }

    pub fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.nodes[i].paused = true;
    }

    pub fn resume(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.nodes[i].paused = false;
    }

    /// Resumes paused nodes and restarts dead ones.
    pub fn revive_all(&mut self) -> Result<(), ChaosError> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused {
                self.resume(i);
            }
            if !self.is_running(i) {
                self.start(i)?;
            }
        }
        Ok(())
    }

    pub async fn bootstrap(&mut self, partitions: u32, rf: u32, within: Duration) -> Result<(), ChaosError> {
        for i in 0..self.nodes.len() {
            self.start(i)?;
        }
        let deadline = Instant::now() + within;
        let addr = self.nodes[0].grpc.to_string();
        loop {
            let mut a = self.admin.admin(&addr).map_err(|e| ChaosError::Cluster(e.to_string()))?;
            let req = pb::BootstrapRequest {
                peers: self.endpoints(),
                partitions,
                replication_factor: rf,
                zones: Default::default(),
            };
            match a.bootstrap(req).await {
                Ok(_) => break,
                Err(e) if Instant::now() >= deadline => {
                    return Err(ChaosError::Cluster(format!(
                        "bootstrap through {addr}: {} (logs in {})",
                        e.message(),
                        self.dir.display()
                    )))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        self.wait_ready(within).await
    }

    /// Deletes node `i`'s data directory (a lost volume); the node must be down.
    pub fn wipe(&self, i: usize) -> Result<(), ChaosError> {
        match fs::remove_dir_all(&self.nodes[i].data_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ChaosError::Io { what: format!("wipe {}", self.nodes[i].data_dir.display()), source: e })
            }
            _ => Ok(()),
        }
    }

    /// Runs an admin call on the first node that answers, retrying for up
    /// to `within`.
    pub async fn admin_any<T, F, Fut>(&self, what: &str, within: Duration, call: F) -> Result<T, ChaosError>
    where
        F: Fn(AdminClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        loop {
            for n in &self.nodes {
                let a = self.admin.admin(&n.grpc.to_string()).map_err(|e| ChaosError::Cluster(e.to_string()))?;
                match tokio::time::timeout(Duration::from_secs(5), call(a)).await {
                    Ok(Ok(r)) => return Ok(r.into_inner()),
                    Ok(Err(s)) => last = format!("{}: {}", n.name, s.message()),
                    Err(_) => last = format!("{}: no answer in 5 s", n.name),
                }
            }
            if Instant::now() >= deadline {
                return Err(ChaosError::Cluster(format!("{what}: {last}")));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The Raft id node `i` runs under now.
    pub async fn node_id(&self, i: usize) -> Result<u64, ChaosError> {
        let mut a =
            self.admin.admin(&self.nodes[i].grpc.to_string()).map_err(|e| ChaosError::Cluster(e.to_string()))?;
        let info = tokio::time::timeout(Duration::from_secs(5), a.identify(pb::IdentifyRequest {}))
            .await
            .map_err(|_| ChaosError::Cluster(format!("{}: no answer to Identify", self.nodes[i].name)))?
            .map_err(|s| ChaosError::Cluster(format!("{}: {}", self.nodes[i].name, s.message())))?;
        Ok(info.into_inner().id)
    }

    pub async fn set_member_state(&self, id: u64, state: &str) -> Result<(), ChaosError> {
        let state = state.to_string();
        self.admin_any(&format!("set member {id} {state}"), Duration::from_secs(60), |mut a| {
            let req = pb::SetMemberStateRequest { id, name: String::new(), state: state.clone() };
            async move { a.set_member_state(req).await }
        })
        .await
        .map(drop)
    }

    /// The registry state of member `id`, from the node furthest along the
    /// meta log (a member that left the meta group keeps an old view).
    pub async fn member_state(&self, id: u64) -> Option<String> {
        self.statuses()
            .await
            .into_iter()
            .filter_map(|(_, s)| s.cluster)
            .max_by_key(|c| c.meta_applied_index)?
            .members
            .into_iter()
            .find(|m| m.id == id)
            .map(|m| m.state)
    }

    pub async fn rebalance(&self, max_moves: u32) -> Result<usize, ChaosError> {
        self.admin_any("rebalance", Duration::from_secs(60), |mut a| async move {
            a.rebalance(pb::RebalanceRequest { dry_run: false, max_moves }).await
        })
        .await
        .map(|r| r.moves.len())
    }

    /// Admin.Status of every node that answers within 2 s.
    pub async fn statuses(&self) -> Vec<(usize, pb::StatusResponse)> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let Ok(mut a) = self.admin.admin(&n.grpc.to_string()) else { continue };
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), a.status(pb::StatusRequest {})).await {
                out.push((i, s.into_inner()));
            }
        }
        out
    }

    /// Partitions each node leads (by node index).
    pub async fn leader_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.nodes.len()];
        for (i, s) in self.statuses().await {
            counts[i] = s.groups.iter().filter(|g| g.group != 0 && g.role == "leader").count();
        }
        counts
    }

    /// Waits until every node is ready and every partition has a leader.
    pub async fn wait_ready(&self, within: Duration) -> Result<(), ChaosError> {
        let deadline = Instant::now() + within;
        loop {
            let gap = self.readiness_gap().await;
            match gap {
                None => return Ok(()),
                Some(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
                Some(w) => {
                    return Err(ChaosError::Cluster(format!(
                        "not ready after {within:?}: {w} (logs in {})",
                        self.dir.display()
                    )))
                }
            }
        }
    }

    async fn readiness_gap(&self) -> Option<String> {
        let st = self.statuses().await;
        for i in 0..self.nodes.len() {
            match st.iter().find(|(j, _)| *j == i) {
                None => return Some(format!("node {i} does not answer")),
                Some((_, s)) if !s.node.as_ref().is_some_and(|n| n.ready) => {
                    return Some(format!("node {i} is not ready"))
                }
                _ => {}
            }
        }
        let Some(partitions) = st.iter().find_map(|(_, s)| s.cluster.as_ref().map(|c| c.partitions)) else {
            return Some("no node has joined a cluster".into());
        };
        let led: BTreeSet<u64> =
            st.iter().flat_map(|(_, s)| s.groups.iter()).filter(|g| g.role == "leader").map(|g| g.group).collect();
        (0..=u64::from(partitions)).find(|g| !led.contains(g)).map(|g| format!("group {g} has no leader"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        for vol in self.nodes.iter().filter_map(|n| n.volume.as_ref()) {
            let _ = Command::new("umount").arg("-l").arg(vol).status();
        }
    }
}
