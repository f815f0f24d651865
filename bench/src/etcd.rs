//! Three etcd members on loopback (etcd's defaults: fsync on every commit)
//! and gRPC clients of their KV service.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

use crate::BenchError;

pub mod pb {
    tonic::include_proto!("etcdserverpb");
}

use pb::kv_client::KvClient;

pub struct EtcdCluster {
    /// Client URLs (http://127.0.0.1:PORT), one per member.
    pub client_urls: Vec<String>,
    pub dir: PathBuf,
    children: Vec<Child>,
}

fn free_port() -> Result<u16, BenchError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(BenchError::io("free port"))?;
    Ok(l.local_addr().map_err(BenchError::io("free port"))?.port())
}

/// `etcd --version`'s first line, e.g. "etcd Version: 3.4.23".
pub fn version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_string)
}

impl EtcdCluster {
    /// Starts `members` etcd processes with data directories under `dir`
    /// (logs in `dir/eN.log`).
    pub fn start(bin: &Path, dir: &Path, members: usize) -> Result<Self, BenchError> {
        let mut peers = Vec::new();
        let mut client_urls = Vec::new();
        for i in 0..members {
            peers.push((format!("e{i}"), format!("http://127.0.0.1:{}", free_port()?)));
            client_urls.push(format!("http://127.0.0.1:{}", free_port()?));
        }
        let initial: Vec<String> = peers.iter().map(|(n, u)| format!("{n}={u}")).collect();
        let mut cluster = EtcdCluster { client_urls, dir: dir.to_path_buf(), children: Vec::new() };
        for (i, (name, peer)) in peers.iter().enumerate() {
            let log = File::create(dir.join(format!("{name}.log"))).map_err(BenchError::io("etcd log"))?;
            let data = dir.join(name);
            fs::create_dir_all(&data).map_err(BenchError::io(format!("{}", data.display())))?;
            let url = &cluster.client_urls[i];
            let child = Command::new(bin)
                .args(["--name", name])
                .arg("--data-dir")
                .arg(&data)
                .args(["--listen-client-urls", url, "--advertise-client-urls", url])
                .args(["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer])
                .args(["--initial-cluster", &initial.join(","), "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "keyraft-bench", "--logger", "zap", "--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(BenchError::io("etcd log"))?)
                .stderr(log)
                .spawn()
                .map_err(BenchError::io(format!("cannot start {}", bin.display())))?;
            cluster.children.push(child);
        }
        Ok(cluster)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// One KV client per member, once every member has served a
    /// linearizable write and read (a leader exists and all have joined).
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<Vec<KvClient<Channel>>, BenchError> {
        let deadline = Instant::now() + timeout;
        let mut clients = Vec::new();
        for (i, url) in self.client_urls.clone().iter().enumerate() {
            let channel = Endpoint::from_shared(url.clone())
                .map_err(|source| BenchError::Connect { addr: url.clone(), source })?
                .connect_lazy();
            let mut c = KvClient::new(channel);
            loop {
                let key = format!("bench-ready-{i}").into_bytes();
                let put = c.put(pb::PutRequest { key: key.clone(), value: b"1".to_vec(), ..Default::default() });
                let r = match tokio::time::timeout(Duration::from_secs(5), put).await {
                    Ok(Ok(_)) => c.range(pb::RangeRequest { key, ..Default::default() }).await.map(|_| ()),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(tonic::Status::deadline_exceeded("put took over 5 s")),
                };
                match r {
                    Ok(()) => break,
                    Err(e) if Instant::now() >= deadline => {
                        let log = self.dir.join(format!("e{i}.log"));
                        return Err(BenchError::NotReady {
                            system: "etcd",
                            why: format!("member e{i} ({url}): {} (log: {})", e.message(), log.display()),
                        });
                    }
                    Err(_) => {
                        if let Some(status) = self.children[i].try_wait().ok().flatten() {
                            return Err(BenchError::NotReady {
                                system: "etcd",
                                why: format!("member e{i} exited with {status}"),
                            });
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                }
            }
            clients.push(c);
        }
        Ok(clients)
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}
