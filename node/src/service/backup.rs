//! Admin.BackupPartition: one partition's data, read from ONE engine
//! snapshot after a linearizable read barrier on the partition's leader, and
//! streamed as a header, bounded chunks of records, and a trailer.
//!
//! Memory: the engine walk runs on a blocking thread and hands chunks to the
//! gRPC stream through a channel of [`CHANNEL_CHUNKS`] places, so at most a
//! few chunks (each about `chunk_bytes` plus one record) are held at once,
//! whatever the partition's size.

use std::io;
use std::sync::Arc;

use keyraft_api::pb;
use keyraft_api::{group_of_partition, LEADER_HINT_HEADER};
use openraft::error::{CheckIsLeaderError, RaftError};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tonic::Status;

use crate::error::NodeError;
use crate::node::Node;

/// Payload bytes of a chunk when the request names none.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;
/// Largest chunk a request may ask for.
pub const MAX_CHUNK_BYTES: usize = 16 << 20;
/// Chunks queued between the engine walk and the network.
const CHANNEL_CHUNKS: usize = 2;

pub type BackupItem = Result<pb::BackupPartitionResponse, Status>;

/// The SHA-256 of the records of a backup stream (see `BackupTrailer`).
#[derive(Default)]
pub struct RecordDigest {
    sha: Sha256,
    pub records: u64,
    pub bytes: u64,
}

impl RecordDigest {
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        self.sha.update((key.len() as u32).to_be_bytes());
        self.sha.update(key);
        self.sha.update((value.len() as u32).to_be_bytes());
        self.sha.update(value);
        self.records += 1;
        self.bytes += (key.len() + value.len()) as u64;
    }

    pub fn hex(self) -> String {
        self.sha.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Checks the request, runs the read barrier, and starts the engine walk.
/// Returns the receiving end of the stream.
pub async fn start(node: Arc<Node>, req: pb::BackupPartitionRequest) -> Result<mpsc::Receiver<BackupItem>, Status> {
    node.refuse_if_departed()?;
    let meta = node.meta()?;
    let p = req.partition;
    if p >= meta.partitions {
        return Err(NodeError::invalid(
            "partition",
            format!("{p} does not exist; the cluster has {} partitions", meta.partitions),
        )
        .into());
    }
    let chunk_bytes = match req.chunk_bytes as usize {
        0 => DEFAULT_CHUNK_BYTES,
        n if n > MAX_CHUNK_BYTES => {
            return Err(NodeError::invalid("chunk_bytes", format!("{n} exceeds the limit of {MAX_CHUNK_BYTES}")).into())
        }
        n => n,
    };
    let me = node.id();
    let not_leader = |leader: Option<u64>| -> Status {
        let addr = leader.filter(|l| *l != me).and_then(|l| node.addr_of(&meta, l).map(|a| (l, a)));
        let mut s = Status::failed_precondition(match &addr {
            Some((id, a)) => format!(
                "partition {p}: node {} is not the leader; a backup is served by the leader, node {id} at {a}",
                node.cfg.name
            ),
            None => {
                format!("partition {p}: node {} is not the leader and knows of none yet; retry", node.cfg.name)
            }
        });
        if let Some(v) = addr.and_then(|(_, a)| a.parse().ok()) {
            s.metadata_mut().insert(LEADER_HINT_HEADER, v);
        }
        s
    };
    let group = match node.groups.get(group_of_partition(p)) {
        Some(g) if meta.placement.get(p as usize).is_some_and(|pl| pl.replicas.contains(&me)) => g,
        _ => return Err(not_leader(node.leader_hint(p))),
    };
    // The barrier: confirms leadership with a quorum and waits until the
    // state machine applied everything committed before this call, so every
    // write acknowledged before it is in the snapshot taken below.
    let barrier = match group.raft.ensure_linearizable().await {
        Ok(read_log_id) => read_log_id.map_or(0, |l| l.index),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => return Err(not_leader(f.leader_id)),
        Err(e) => return Err(NodeError::NoLeader { partition: p, detail: e.to_string() }.into()),
    };
    let header = pb::BackupHeader {
        cluster_id: meta.cluster_id.clone(),
        partition: p,
        partitions: meta.partitions,
        replication_factor: meta.replication_factor,
        served_by: me,
        ..Default::default()
    };
    let (tx, rx) = mpsc::channel::<BackupItem>(CHANNEL_CHUNKS);
    let reader = group.sm.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = walk(&reader, header, barrier, chunk_bytes, &tx) {
            // A closed channel means the caller went away: nobody to tell.
            let _ = tx.blocking_send(Err(Status::internal(format!("partition {p}: backup stopped: {e}"))));
        }
    });
    Ok(rx)
}

fn send(tx: &mpsc::Sender<BackupItem>, part: pb::backup_partition_response::Part) -> io::Result<()> {
    tx.blocking_send(Ok(pb::BackupPartitionResponse { part: Some(part) }))
        .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the caller closed the stream"))
}

fn walk(
    reader: &crate::storage::sm_store::SmReader,
    mut header: pb::BackupHeader,
    barrier: u64,
    chunk_bytes: usize,
    tx: &mpsc::Sender<BackupItem>,
) -> io::Result<()> {
    use pb::backup_partition_response::Part;
    let mut digest = RecordDigest::default();
    let mut chunk = pb::BackupChunk::default();
    let mut pending = 0usize;
    reader.export(
        |st| {
            let applied = st.last_applied.unwrap_or_default();
            if applied.index < barrier {
                return Err(io::Error::other(format!(
                    "the engine snapshot is at applied index {} but the read barrier is {barrier}",
                    applied.index
                )));
            }
            header.applied_index = applied.index;
            header.applied_term = applied.leader_id.term;
            header.keys = st.keys;
            send(tx, Part::Header(header))
        },
        |k, v| {
            digest.add(k, v);
            chunk.records.push(pb::KeyValue { key: k.to_vec(), value: v.to_vec() });
            pending += k.len() + v.len();
            if pending >= chunk_bytes {
                let seq = chunk.seq;
                let full = std::mem::replace(&mut chunk, pb::BackupChunk { seq: seq + 1, records: Vec::new() });
                pending = 0;
                send(tx, Part::Chunk(full))?;
            }
            Ok(())
        },
    )?;
    if !chunk.records.is_empty() {
        send(tx, Part::Chunk(chunk))?;
    }
    let (records, bytes) = (digest.records, digest.bytes);
    send(tx, Part::Trailer(pb::BackupTrailer { records, bytes, sha256: digest.hex() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_digest_frames_each_key_and_value() {
        // ("ab","c") and ("a","bc") concatenate alike; the lengths tell them apart.
        let mut a = RecordDigest::default();
        a.add(b"ab", b"c");
        let mut b = RecordDigest::default();
        b.add(b"a", b"bc");
        assert_eq!((a.records, a.bytes), (1, 3));
        assert_ne!(a.hex(), b.hex());
        // SHA-256 of the empty input.
        assert_eq!(RecordDigest::default().hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
