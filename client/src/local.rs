//! A cluster of real `keyraft-node` processes on loopback: what
//! `keyraft local up` runs, and what the integration tests drive (kill -9,
//! SIGSTOP, restart, wiping a data directory).

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyraft_api::pb;
use keyraft_api::tls::certgen::{Authority, Holder, DEFAULT_VALIDITY};
use keyraft_api::tls::Role;

use crate::{Client, ClientError, ClientOptions, TlsOptions};

/// The node flag that turns TLS off; a local cluster whose `extra_args`
/// hold it runs plaintext, any other runs TLS with a throwaway CA.
pub const PLAINTEXT_FLAG: &str = "--insecure-plaintext";

/// The throwaway CA of a local cluster and the credentials it issued, kept
/// under `<data_dir>/tls` (and reused when the cluster starts again):
/// `ca.pem`, `<node>.pem`, `admin.pem` (role admin), `client.pem` (role
/// client), each with its `-key.pem`.
pub struct LocalTls {
    pub dir: PathBuf,
    /// Issues more certificates (tests: rotation, expiry).
    pub authority: Authority,
    pub ca: PathBuf,
    /// Certificate and key with the admin role.
    pub admin: (PathBuf, PathBuf),
    /// Certificate and key with the client role.
    pub client: (PathBuf, PathBuf),
}

impl LocalTls {
    /// The CA and the admin and client credentials under `dir`, issued on
    /// first use (`cluster` names the CA) and read back afterwards.
    pub fn create_or_load(dir: &Path, cluster: &str) -> io::Result<LocalTls> {
        let ca = dir.join("ca.pem");
        let ca_key = dir.join("ca-key.pem");
        let authority = if ca.is_file() && ca_key.is_file() {
            Authority::from_pem(&fs::read_to_string(&ca)?, &fs::read_to_string(&ca_key)?).map_err(io::Error::other)?
        } else {
            let a =
                Authority::new(&format!("keyraft {cluster} local CA"), DEFAULT_VALIDITY).map_err(io::Error::other)?;
            a.write(dir)?;
            a
        };
        let mut t =
            LocalTls { dir: dir.to_path_buf(), authority, ca, admin: Default::default(), client: Default::default() };
        t.admin = t.issue_once("admin", &Holder::User { role: Role::Admin, common_name: "local-admin".into() })?;
        t.client = t.issue_once("client", &Holder::User { role: Role::Client, common_name: "local-client".into() })?;
        Ok(t)
    }

    /// `<dir>/<stem>.pem` and its key, issued now unless both exist.
    fn issue_once(&self, stem: &str, holder: &Holder) -> io::Result<(PathBuf, PathBuf)> {
        let (cert, key) = (self.dir.join(format!("{stem}.pem")), self.dir.join(format!("{stem}-key.pem")));
        if cert.is_file() && key.is_file() {
            return Ok((cert, key));
        }
        self.authority.issue(holder, DEFAULT_VALIDITY).map_err(io::Error::other)?.write(&self.dir, stem)
    }

    /// Member `name`'s certificate and key (for `host` and localhost).
    pub fn member(&self, name: &str, host: &str) -> io::Result<(PathBuf, PathBuf)> {
        let hosts = vec![host.to_string(), "localhost".to_string()];
        self.issue_once(name, &Holder::Member { name: name.into(), hosts })
    }

    /// Client TLS settings presenting `(cert, key)`.
    pub fn options(&self, (cert, key): &(PathBuf, PathBuf)) -> TlsOptions {
        TlsOptions { ca: self.ca.clone(), cert: Some(cert.clone()), key: Some(key.clone()) }
    }
}

#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub nodes: usize,
    /// gRPC port of node 0 (node i uses base + i, its HTTP port base + 1000 + i);
    /// 0 picks free ports.
    pub base_port: u16,
    pub host: String,
    pub data_dir: PathBuf,
    /// The `keyraft-node` executable.
    pub node_bin: PathBuf,
    pub cluster: String,
    /// Extra flags for every node (e.g. smaller snapshot thresholds in tests).
    pub extra_args: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
}

pub struct LocalCluster {
    pub opts: LocalOptions,
    pub nodes: Vec<NodeSpec>,
    /// Seeds each node joins through (empty for the bootstrap nodes).
    joins: Vec<Vec<String>>,
    tls: Option<LocalTls>,
    children: Vec<Option<Child>>,
}

fn free_port(host: &str) -> io::Result<u16> {
    Ok(TcpListener::bind((host, 0))?.local_addr()?.port())
}

/// Finds `keyraft-node`: `$KEYRAFT_NODE_BIN`, next to the running
/// executable (or its parent, for test binaries in deps/), or on `$PATH`.
pub fn find_node_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KEYRAFT_NODE_BIN") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let cand = dir.join("keyraft-node");
            if cand.is_file() {
                return cand;
            }
        }
    }
    PathBuf::from("keyraft-node")
}

impl LocalCluster {
    /// Lays out the nodes (ports, data directories) without starting them.
    pub fn new(mut opts: LocalOptions) -> io::Result<Self> {
        fs::create_dir_all(&opts.data_dir)?;
        // Absolute, so the paths handed to nodes and printed work from anywhere.
        opts.data_dir = std::path::absolute(&opts.data_dir)?;
        let tls = if opts.extra_args.iter().any(|a| a == PLAINTEXT_FLAG) {
            None
        } else {
            Some(LocalTls::create_or_load(&opts.data_dir.join("tls"), &opts.cluster)?)
        };
        let mut nodes = Vec::new();
        for i in 0..opts.nodes {
            nodes.push(Self::layout(&opts, i)?);
        }
        let children = (0..opts.nodes).map(|_| None).collect();
        let joins = vec![Vec::new(); opts.nodes];
        Ok(Self { opts, nodes, joins, children, tls })
    }

    fn layout(opts: &LocalOptions, i: usize) -> io::Result<NodeSpec> {
        let (g, h) = if opts.base_port == 0 {
            (free_port(&opts.host)?, free_port(&opts.host)?)
        } else {
            let g = opts.base_port as usize + i;
            let h = g + 1000;
            if h > u16::MAX as usize {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "base port too high for this many nodes"));
            }
            (g as u16, h as u16)
        };
        let ip = opts.host.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("host: {e}")))?;
        Ok(NodeSpec {
            name: format!("node-{i}"),
            grpc: SocketAddr::new(ip, g),
            http: SocketAddr::new(ip, h),
            data_dir: opts.data_dir.join(format!("node-{i}")),
        })
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.grpc.to_string()).collect()
    }

    /// The cluster's TLS credentials (`None` when it runs plaintext).
    pub fn tls(&self) -> Option<&LocalTls> {
        self.tls.as_ref()
    }

    /// Options reaching every node with the admin identity.
    pub fn client_options(&self) -> ClientOptions {
        let mut o = ClientOptions::new(self.endpoints());
        o.tls = self.tls.as_ref().map(|t| t.options(&t.admin));
        o
    }

    pub fn client(&self) -> Result<Client, ClientError> {
        Client::new(self.client_options())
    }

    /// A client that talks only to node `i`.
    pub fn client_of(&self, i: usize) -> Result<Client, ClientError> {
        let mut o = self.client_options();
        o.endpoints = vec![self.nodes[i].grpc.to_string()];
        o.follow_leader_hints = false;
        Client::new(o)
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.opts.data_dir.join(format!("{}.log", self.nodes[i].name))
    }

    /// Starts node `i` (again).
    pub fn start(&mut self, i: usize) -> io::Result<()> {
        if self.is_running(i) {
            return Ok(());
        }
        let n = &self.nodes[i];
        let tls_args = match &self.tls {
            Some(t) => {
                let (cert, key) = t.member(&n.name, &self.opts.host)?;
                let p = |p: &Path| p.display().to_string();
                vec!["--tls-ca".into(), p(&t.ca), "--tls-cert".into(), p(&cert), "--tls-key".into(), p(&key)]
            }
            None => vec![],
        };
        let log = OpenOptions::new().create(true).append(true).open(self.log_path(i))?;
        let child = Command::new(&self.opts.node_bin)
            .arg("--name")
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
            .arg(&self.opts.cluster)
            .args(if self.joins[i].is_empty() { vec![] } else { vec!["--join".to_string(), self.joins[i].join(",")] })
            .args(tls_args)
            .args(&self.opts.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", self.opts.node_bin.display())))?;
        self.children[i] = Some(child);
        Ok(())
    }

    pub fn start_all(&mut self) -> io::Result<()> {
        (0..self.nodes.len()).try_for_each(|i| self.start(i))
    }

    /// Adds and starts one more node that joins through the existing ones;
    /// returns its index.
    pub fn add_node(&mut self) -> io::Result<usize> {
        let seeds = self.endpoints();
        self.add_node_at(self.nodes.len(), &seeds)
    }

    /// From now on, node `i` starts with `--join` through `seeds` (for a node
    /// coming back with an empty data directory).
    pub fn set_join(&mut self, i: usize, seeds: Vec<String>) {
        self.joins[i] = seeds;
    }

    /// Starts node number `index` (name `node-INDEX`) joining through `seeds`.
    pub fn add_node_at(&mut self, index: usize, seeds: &[String]) -> io::Result<usize> {
        let mut spec = Self::layout(&self.opts, index)?;
        spec.name = format!("node-{index}");
        self.nodes.push(spec);
        self.joins.push(seeds.to_vec());
        self.children.push(None);
        let i = self.nodes.len() - 1;
        self.start(i)?;
        Ok(i)
    }

    /// The process id of node `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        matches!(self.children[i].as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn signal(&self, i: usize, sig: i32) {
        if let Some(c) = &self.children[i] {
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// kill -9: no chance to flush or say goodbye.
    pub fn kill(&mut self, i: usize) {
        self.signal(i, libc::SIGKILL);
        if let Some(mut c) = self.children[i].take() {
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit (SIGKILL after 10 s).
    pub fn stop(&mut self, i: usize) {
        self.signal(i, libc::SIGTERM);
        if let Some(mut c) = self.children[i].take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.signal(i, libc::SIGTERM);
        }
        for i in 0..self.nodes.len() {
            self.stop(i);
        }
    }

    /// SIGSTOP: the process freezes with its sockets open (a hung node).
    pub fn pause(&self, i: usize) {
        self.signal(i, libc::SIGSTOP);
    }

    pub fn resume(&self, i: usize) {
        self.signal(i, libc::SIGCONT);
    }

    /// Deletes node `i`'s data directory (a lost volume).
    pub fn wipe(&self, i: usize) -> io::Result<()> {
        match fs::remove_dir_all(&self.nodes[i].data_dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Waits until node `i` answers Admin.Identify.
    pub async fn wait_live(&self, i: usize, timeout: Duration) -> Result<pb::NodeInfo, String> {
        let c = self.client_of(i).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + timeout;
        loop {
            let mut a = c.admin(&self.nodes[i].grpc.to_string()).map_err(|e| e.to_string())?;
            match a.identify(c.request(pb::IdentifyRequest {})).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!(
                        "{} did not come up within {timeout:?}: {} (log: {})",
                        self.nodes[i].name,
                        e.message(),
                        self.log_path(i).display()
                    ))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Bootstraps the cluster through node 0 with every node as a peer.
    pub async fn bootstrap(&self, partitions: u32, rf: u32) -> Result<pb::BootstrapResponse, String> {
        for i in 0..self.nodes.len() {
            self.wait_live(i, Duration::from_secs(30)).await?;
        }
        let c = self.client_of(0).map_err(|e| e.to_string())?;
        let mut a = c.admin(&self.nodes[0].grpc.to_string()).map_err(|e| e.to_string())?;
        let r = a
            .bootstrap(pb::BootstrapRequest {
                peers: self.endpoints(),
                partitions,
                replication_factor: rf,
                zones: Default::default(),
            })
            .await
            .map_err(|s| format!("bootstrap: {}", s.message()))?;
        Ok(r.into_inner())
    }

    /// Admin.Status of every running node that answers.
    pub async fn statuses(&self) -> Vec<(usize, pb::StatusResponse)> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let Ok(c) = self.client_of(i) else { continue };
            let Ok(mut a) = c.admin(&n.grpc.to_string()) else {
                continue;
            };
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), a.status(pb::StatusRequest {})).await {
                out.push((i, s.into_inner()));
            }
        }
        out
    }

    /// Waits until the given nodes are ready and every partition has a leader.
    pub async fn wait_ready(&self, nodes: &[usize], timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut why;
        loop {
            let st = self.statuses().await;
            why = readiness_gap(&st, nodes);
            match &why {
                None => return Ok(()),
                Some(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                Some(w) => return Err(format!("cluster not ready after {timeout:?}: {w}")),
            }
        }
    }
}

/// What keeps the cluster from being ready, if anything.
fn readiness_gap(st: &[(usize, pb::StatusResponse)], nodes: &[usize]) -> Option<String> {
    for i in nodes {
        match st.iter().find(|(j, _)| j == i) {
            None => return Some(format!("node {i} does not answer")),
            Some((_, s)) if !s.node.as_ref().is_some_and(|n| n.ready) => return Some(format!("node {i} is not ready")),
            _ => {}
        }
    }
    let Some(cluster) = st.iter().find_map(|(_, s)| s.cluster.clone()) else {
        return Some("no node has joined a cluster".into());
    };
    let led: BTreeSet<u64> =
        st.iter().flat_map(|(_, s)| s.groups.iter()).filter(|g| g.role == "leader").map(|g| g.group).collect();
    (1..=u64::from(cluster.partitions)).find(|g| !led.contains(g)).map(|g| format!("partition {} has no leader", g - 1))
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.resume(i);
            self.kill(i);
        }
    }
}

/// A fresh directory under the system temp dir for a test cluster.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("keyraft-{tag}-{}-{}", std::process::id(), rand::random::<u32>()));
    let _ = fs::remove_dir_all(&d);
    d
}

pub fn remove_dir(p: &Path) {
    let _ = fs::remove_dir_all(p);
}
