//! Three Keyraft nodes on loopback through the client library's
//! [`LocalCluster`], the code `keyraft local up` runs.

use std::path::Path;
use std::time::Duration;

use keyraft_client::local::{LocalCluster, LocalOptions, PLAINTEXT_FLAG};
use keyraft_client::Client;

use crate::{procstat, BenchError};

pub struct KeyraftCluster {
    pub cluster: LocalCluster,
    pub client: Client,
    pub pids: Vec<u32>,
}

fn not_ready(why: impl ToString) -> BenchError {
    BenchError::NotReady { system: "keyraft", why: why.to_string() }
}

/// `keyraft-node --version`, e.g. "keyraft-node 0.1.0".
pub fn version(bin: &Path) -> Option<String> {
    let out = std::process::Command::new(bin).arg("--version").output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_string)
}

impl KeyraftCluster {
    /// Starts `nodes` nodes under `dir`, bootstraps `partitions` partitions
    /// replicated on every node, and waits for a leader of each. With `tls`
    /// the nodes serve mutual TLS from a throwaway CA and the client presents
    /// the admin certificate; without, they run `--insecure-plaintext`.
    pub async fn start(
        node_bin: &Path,
        dir: &Path,
        nodes: usize,
        partitions: u32,
        tls: bool,
    ) -> Result<Self, BenchError> {
        let mut cluster = LocalCluster::new(LocalOptions {
            nodes,
            base_port: 0,
            host: "127.0.0.1".into(),
            data_dir: dir.to_path_buf(),
            node_bin: node_bin.to_path_buf(),
            cluster: "keyraft-bench".into(),
            extra_args: if tls { Vec::new() } else { vec![PLAINTEXT_FLAG.to_string()] },
        })
        .map_err(BenchError::io("keyraft cluster layout"))?;
        cluster.start_all().map_err(BenchError::io("keyraft nodes"))?;
        cluster.bootstrap(partitions, nodes as u32).await.map_err(not_ready)?;
        let all: Vec<usize> = (0..nodes).collect();
        cluster.wait_ready(&all, Duration::from_secs(120)).await.map_err(not_ready)?;
        let client = cluster.client().map_err(not_ready)?;
        let name = node_bin.file_name().and_then(|n| n.to_str()).unwrap_or("keyraft-node");
        // The kernel keeps the first 15 bytes of a command name.
        let pids = procstat::children_named(&name[..name.len().min(15)]);
        if pids.len() != nodes {
            return Err(BenchError::Members { system: "keyraft", expected: nodes, found: pids.len() });
        }
        Ok(Self { cluster, client, pids })
    }
}
