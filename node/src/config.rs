//! Command-line flags of `keyraft-node`; each also reads a `KEYRAFT_*`
//! environment variable so a pod template can set them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use keyraft_api::limits::{DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_VALUE_BYTES};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "keyraft-node",
    version,
    about = "A Keyraft database node: partitioned, Raft-replicated key-value storage"
)]
pub struct Config {
    /// Stable name of this node (the pod name on Kubernetes).
    #[arg(long, env = "KEYRAFT_NAME")]
    pub name: String,

    /// Directory holding the storage engine (Raft logs), snapshots and identity.
    #[arg(long, env = "KEYRAFT_DATA_DIR")]
    pub data_dir: PathBuf,

    /// Address the gRPC server binds.
    #[arg(long, env = "KEYRAFT_LISTEN", default_value = "0.0.0.0:7000")]
    pub listen: SocketAddr,

    /// Address (host:port) other nodes and clients use to reach this node.
    #[arg(long, env = "KEYRAFT_ADVERTISE")]
    pub advertise: String,

    /// Address the HTTP server (/healthz, /readyz, /metrics) binds.
    #[arg(long, env = "KEYRAFT_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: SocketAddr,

    /// Failure domain of this node; replicas of a partition go to distinct zones.
    #[arg(long, env = "KEYRAFT_ZONE", default_value = "")]
    pub zone: String,

    /// Name of the cluster this node belongs to; a data directory of another
    /// cluster is refused.
    #[arg(long, env = "KEYRAFT_CLUSTER", default_value = "keyraft")]
    pub cluster: String,

    /// Members of a running cluster to ask for admission (comma-separated
    /// addresses). Harmless on a node that already belongs to the cluster.
    #[arg(long, env = "KEYRAFT_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,

    /// Largest key accepted, in bytes.
    #[arg(long, env = "KEYRAFT_MAX_KEY_BYTES", default_value_t = DEFAULT_MAX_KEY_BYTES)]
    pub max_key_bytes: usize,

    /// Largest value accepted, in bytes.
    #[arg(long, env = "KEYRAFT_MAX_VALUE_BYTES", default_value_t = DEFAULT_MAX_VALUE_BYTES)]
    pub max_value_bytes: usize,

    /// Raft heartbeat interval in milliseconds. openraft also uses it as the
    /// timeout of one AppendEntries, so it must exceed a follower's fsync.
    #[arg(long, env = "KEYRAFT_HEARTBEAT_MS", default_value_t = 200)]
    pub heartbeat_ms: u64,

    /// Smallest election timeout in milliseconds (the largest is twice this).
    #[arg(long, env = "KEYRAFT_ELECTION_TIMEOUT_MS", default_value_t = 700)]
    pub election_timeout_ms: u64,

    /// Snapshot data this node sends to new replicas (learners: replicas
    /// added by rebalancing, scale-in or repair), in bytes per second over
    /// all its partitions. A voter that fell behind is sent its snapshot
    /// at full speed: it counts toward quorum. 0: unlimited.
    #[arg(long, env = "KEYRAFT_SNAPSHOT_SEND_BYTES_PER_SEC", default_value_t = 0)]
    pub snapshot_send_bytes_per_sec: u64,

    /// Take a snapshot of a group after this many new log entries.
    #[arg(long, env = "KEYRAFT_SNAPSHOT_ENTRIES", default_value_t = 10_000)]
    pub snapshot_entries: u64,

    /// Log entries kept behind a snapshot, so slightly lagging replicas catch
    /// up from the log instead of a snapshot.
    #[arg(long, env = "KEYRAFT_KEEP_ENTRIES", default_value_t = 1_000)]
    pub keep_entries: u64,

    /// Ignored: the log lives in the storage engine, which compacts on its
    /// own. Still parsed so existing settings keep working.
    #[arg(long, env = "KEYRAFT_WAL_SEGMENT_MB", default_value_t = 64, hide = true)]
    pub wal_segment_mb: u64,

    /// Block cache of the storage engine, in MiB: with the memtables
    /// (`--storage-memtable-mb`) it bounds what the engine keeps in memory,
    /// whatever the amount of data.
    #[arg(long, env = "KEYRAFT_STORAGE_CACHE_MB", default_value_t = 64)]
    pub storage_cache_mb: u64,

    /// Largest memtable of one storage-engine keyspace, in MiB. Each of the
    /// three keyspaces holds its active memtable and at most four sealed ones
    /// waiting to be flushed (the engine then holds writes back), so the
    /// memtables take at most 15 times this. The engine records it when a
    /// keyspace is created: it applies to new data directories only.
    #[arg(long, env = "KEYRAFT_STORAGE_MEMTABLE_MB", default_value_t = 16)]
    pub storage_memtable_mb: u64,

    /// The newest Raft log entries kept in memory, in MiB across every
    /// partition: replication and apply read them from there instead of the
    /// storage engine. 0 turns the cache off.
    #[arg(long, env = "KEYRAFT_STORAGE_LOG_CACHE_MB", default_value_t = 16)]
    pub storage_log_cache_mb: u64,

    /// Largest total size of the storage engine's journal files, in MiB (at
    /// least 64): past it the engine flushes the memtables that keep the
    /// oldest journal alive, so it can be deleted. Bounds the disk the
    /// journal takes and the log replayed at start.
    #[arg(long, env = "KEYRAFT_STORAGE_JOURNAL_MB", default_value_t = 128,
          value_parser = clap::value_parser!(u64).range(64..))]
    pub storage_journal_mb: u64,

    /// PEM bundle of the CA that signs this cluster's certificates: every
    /// peer and client certificate must chain to it. With --tls-cert and
    /// --tls-key it turns on TLS for the gRPC port (mutual TLS between nodes).
    #[arg(long, env = "KEYRAFT_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,

    /// PEM certificate (chain) of this node, with the URI SAN
    /// `keyraft-member:<--name>` and the host names/addresses it is reached by;
    /// used to serve and to call peers. Reloaded when the file changes.
    #[arg(long, env = "KEYRAFT_TLS_CERT", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert. Reloaded when the file changes.
    #[arg(long, env = "KEYRAFT_TLS_KEY", requires_all = ["tls_ca", "tls_cert"])]
    pub tls_key: Option<PathBuf>,

    /// Bearer tokens clients may authenticate with instead of a certificate:
    /// one `ROLE NAME TOKEN` per line (ROLE admin or client; `#` comments).
    /// Reloaded when the file changes. Needs TLS.
    #[arg(long, env = "KEYRAFT_TOKENS_FILE", requires = "tls_ca")]
    pub tokens_file: Option<PathBuf>,

    /// Serve gRPC in plaintext with no authentication at all: anyone who
    /// reaches the port controls the cluster. Local experiments only.
    #[arg(long, env = "KEYRAFT_INSECURE_PLAINTEXT", conflicts_with_all = ["tls_ca", "tls_cert", "tls_key", "tokens_file"])]
    pub insecure_plaintext: bool,

    /// Seconds between checks of the TLS and token files for changes.
    #[arg(long, env = "KEYRAFT_TLS_RELOAD_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub tls_reload_secs: u64,

    /// Version this node reports to the cluster (defaults to the build's).
    #[arg(long = "reported-version", env = "KEYRAFT_VERSION", default_value = env!("CARGO_PKG_VERSION"))]
    pub reported_version: String,
}

/// Size of one snapshot chunk on the wire.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;
/// How long the leader waits for the answer to one snapshot chunk: a chunk's
/// transfer and write, and for the last one the install of the partition.
pub const SNAPSHOT_INSTALL_TIMEOUT_MS: u64 = 30_000;

/// How the gRPC port is protected.
#[derive(Debug, Clone)]
pub enum Transport {
    Tls(keyraft_api::tls::TlsFiles),
    /// `--insecure-plaintext`.
    Plaintext,
}

impl Config {
    /// TLS from the files, or plaintext when asked for explicitly; neither
    /// is an error naming the flags.
    pub fn transport(&self) -> Result<Transport, String> {
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (Some(ca), Some(cert), Some(key)) => Ok(Transport::Tls(keyraft_api::tls::TlsFiles {
                ca: ca.clone(),
                cert: Some(cert.clone()),
                key: Some(key.clone()),
                flags: keyraft_api::tls::FlagNames { ca: "--tls-ca", cert: "--tls-cert", key: "--tls-key" },
                require_member: Some(self.name.clone()),
            })),
            _ if self.insecure_plaintext => Ok(Transport::Plaintext),
            _ => Err("no TLS configured: pass --tls-ca, --tls-cert and --tls-key (env KEYRAFT_TLS_CA, \
                 KEYRAFT_TLS_CERT, KEYRAFT_TLS_KEY), or --insecure-plaintext (KEYRAFT_INSECURE_PLAINTEXT=true) \
                 to serve without any authentication"
                .into()),
        }
    }

    pub fn raft_config(&self) -> openraft::Config {
        openraft::Config {
            cluster_name: self.cluster.clone(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_ms,
            election_timeout_max: self.election_timeout_ms * 2,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_entries),
            max_in_snapshot_log_to_keep: self.keep_entries,
            // openraft times one AppendEntries out after a heartbeat interval:
            // keep a batch small enough to ship and fsync well within it.
            // Batches are also cut by bytes in the network layer
            // (`network::MAX_APPEND_BYTES`).
            max_payload_entries: 64,
            // A snapshot goes in chunks of this size, each with its own
            // timeout: room to ship and write a chunk on a busy node, and
            // for the last chunk, whose answer waits for the whole snapshot
            // to be installed. With 2.5 s, moving 1 GiB over 16 partitions
            // timed out last chunks and sent 77% of the bytes twice
            // (`make bench-rebalance`).
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            install_snapshot_timeout: SNAPSHOT_INSTALL_TIMEOUT_MS,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent_and_read_from_the_environment() {
        Config::command().debug_assert();
        let c = Config::try_parse_from([
            "keyraft-node",
            "--name",
            "n0",
            "--data-dir",
            "/d",
            "--advertise",
            "h:1",
            "--listen",
            "127.0.0.1:1",
        ])
        .unwrap();
        assert_eq!(c.max_key_bytes, DEFAULT_MAX_KEY_BYTES);
        assert_eq!(c.cluster, "keyraft");
        let err = Config::try_parse_from(["keyraft-node", "--data-dir", "/d"]).unwrap_err().to_string();
        assert!(err.contains("--name"), "{err}");
        let why = c.transport().unwrap_err();
        assert!(why.contains("--tls-cert") && why.contains("--insecure-plaintext"), "{why}");
        let base = ["keyraft-node", "--name", "n0", "--data-dir", "/d", "--advertise", "h:1"];
        let plain = Config::try_parse_from(base.iter().chain(&["--insecure-plaintext"])).unwrap();
        assert!(matches!(plain.transport(), Ok(Transport::Plaintext)));
        let tls = Config::try_parse_from(base.iter().chain(&["--tls-ca", "ca", "--tls-cert", "c", "--tls-key", "k"]));
        assert!(matches!(tls.unwrap().transport(), Ok(Transport::Tls(_))));
        let half = Config::try_parse_from(base.iter().chain(&["--tls-cert", "c"])).unwrap_err().to_string();
        assert!(half.contains("--tls-ca"), "{half}");
        let both = Config::try_parse_from(base.iter().chain(&[
            "--tls-ca",
            "ca",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--insecure-plaintext",
        ]));
        assert!(both.is_err());
        assert_eq!(c.storage_journal_mb, 128);
        let small = Config::try_parse_from(base.iter().chain(&["--storage-journal-mb", "32"]));
        assert!(small.unwrap_err().to_string().contains("64"), "the engine needs at least 64 MiB of journal");
    }
}
