//! Backup and restore through object storage (`keyraft backup ...`).
//!
//! A backup is, for every partition, the partition's state at one applied
//! Raft index (one engine snapshot on the partition's leader, taken after a
//! linearizable read barrier), written to `<prefix>/<name>/partition-NNNNN.krb`
//! in checksummed chunks, then `<prefix>/<name>/manifest.json`, written
//! LAST: a directory without a manifest is an incomplete backup and is never
//! listed or restored. Partitions are cut independently: there is no
//! cross-partition point in time.
//!
//! A restore reads the manifest, checks the target (same partition count,
//! no keys), reads and checks every chunk of every object BEFORE it writes
//! anything, then writes the records through the normal write path (Batch,
//! with request ids, so a retried batch applies once).

pub mod format;
pub mod store;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures::{StreamExt, TryStreamExt};
use keyraft_api::limits::{MAX_BATCH_OPS, MAX_MESSAGE_BYTES};
use keyraft_api::pb::{self, backup_partition_response::Part};
use keyraft_api::{partition_for_key, LEADER_HINT_HEADER};
use object_store::buffered::BufWriter;
use object_store::ObjectStoreExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tonic::Code;

pub use format::{Manifest, PartitionBackup, FORMAT_VERSION};
pub use store::{open, open_with, Credentials, Destination};

use crate::Client;
use format::{hex, ChunkBuilder, ChunkInfo, ChunkReader, CHUNK_TARGET_BYTES, MANIFEST};

/// Part size of a multipart upload (S3 needs at least 5 MiB but for the last).
const PART_BYTES: usize = 8 << 20;
/// Parts of one object in flight at once.
const PARTS_IN_FLIGHT: usize = 2;
/// Times a partition's stream is started over after it broke (a leader
/// change, a node killed) before the backup fails.
const STREAM_ATTEMPTS: u32 = 3;
/// How long to look for a partition's leader before giving up.
const LEADER_SEARCH: Duration = Duration::from_secs(60);
/// Largest key+value bytes of one restore Batch (a larger record goes alone):
/// a Raft entry that ships well within a heartbeat on a busy node.
const RESTORE_BATCH_BYTES: usize = 256 << 10;

/// Progress of a long run: bytes moved and partitions done. The CLI draws
/// it (indicatif); tests pass [`Progress::hidden`].
#[derive(Clone)]
pub struct Progress {
    bar: indicatif::ProgressBar,
    partitions_done: Arc<AtomicU64>,
    partitions: Arc<AtomicU64>,
}

impl Progress {
    pub fn new(bar: indicatif::ProgressBar) -> Self {
        Self { bar, partitions_done: Arc::default(), partitions: Arc::default() }
    }

    pub fn hidden() -> Self {
        Self::new(indicatif::ProgressBar::hidden())
    }

    fn start(&self, phase: &str, partitions: u32, bytes: Option<u64>) {
        self.partitions.store(partitions.into(), Ordering::Relaxed);
        self.partitions_done.store(0, Ordering::Relaxed);
        self.bar.reset();
        if let Some(b) = bytes {
            self.bar.set_length(b);
        }
        self.bar.set_prefix(phase.to_string());
        self.bar.set_message(format!("0/{partitions} partitions"));
    }

    fn bytes(&self, n: u64) {
        self.bar.inc(n);
    }

    fn partition_done(&self) {
        let done = self.partitions_done.fetch_add(1, Ordering::Relaxed) + 1;
        self.bar.set_message(format!("{done}/{} partitions", self.partitions.load(Ordering::Relaxed)));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Backup names: 1 to 128 of `A-Z a-z 0-9 . _ -`, not starting with a dot.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        bail!("backup name {name:?} is not valid: use 1 to 128 of A-Z a-z 0-9 . _ - (not starting with a dot)");
    }
    Ok(())
}

/// The default backup name: `keyraft-YYYYMMDDTHHMMSSZ` (UTC).
pub fn default_name() -> String {
    format!("keyraft-{}", jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ"))
}

#[derive(Clone)]
pub struct CreateOptions {
    /// Partitions streamed at once.
    pub concurrency: usize,
    pub progress: Progress,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self { concurrency: 2, progress: Progress::hidden() }
    }
}

/// Backs up every partition of the cluster `client` reaches to
/// `dest/<name>/`, and writes the manifest once all of them are stored.
/// On failure the partition objects written so far are deleted (best
/// effort) and no manifest is written.
pub async fn create(client: &Client, dest: &Destination, name: &str, opts: &CreateOptions) -> anyhow::Result<Manifest> {
    check_name(name)?;
    let manifest_path = dest.path(name, MANIFEST);
    match dest.store.head(&manifest_path).await {
        Ok(_) => bail!("backup {name} already exists at {}; choose another --name", dest.url),
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(store::explain(e, &format!("cannot reach the backup destination {}", dest.url))),
    }
    // A listing shows a missing bucket or refused credentials before any
    // data moves (a HEAD of a missing object in a missing bucket cannot).
    dest.store
        .list_with_delimiter(Some(&dest.dir(name)))
        .await
        .map_err(|e| store::explain(e, &format!("cannot list {}", dest.url)))?;
    let status = client.cluster_status().await.context("cannot reach the cluster")?;
    let cluster = status.cluster.ok_or_else(|| anyhow!("the node has not joined a cluster"))?;
    let members: Vec<String> =
        cluster.members.iter().filter(|m| m.state != "removed").map(|m| m.advertise.clone()).collect();
    let started_at = jiff::Timestamp::now();
    opts.progress.start("backup", cluster.partitions, None);
    let results: Vec<anyhow::Result<PartitionBackup>> = futures::stream::iter(0..cluster.partitions)
        .map(|p| {
            let members = members.clone();
            async move {
                let r = backup_partition(client, &members, dest, name, p, &opts.progress).await;
                if r.is_ok() {
                    opts.progress.partition_done();
                }
                r
            }
        })
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    let mut parts = Vec::new();
    let mut first_err = None;
    for r in results {
        match r {
            Ok(p) => parts.push(p),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        remove_objects(dest, name, cluster.partitions).await;
        opts.progress.finish();
        return Err(e.context(format!("backup {name} to {} failed; no manifest was written", dest.url)));
    }
    parts.sort_by_key(|p| p.partition);
    let manifest = Manifest {
        format: format::FORMAT.into(),
        format_version: FORMAT_VERSION,
        name: name.to_string(),
        cluster_id: cluster.cluster_id.clone(),
        partitions: cluster.partitions,
        replication_factor: cluster.replication_factor,
        started_at: started_at.to_string(),
        completed_at: jiff::Timestamp::now().to_string(),
        records: parts.iter().map(|p| p.records).sum(),
        bytes: parts.iter().map(|p| p.bytes).sum(),
        size_bytes: parts.iter().map(|p| p.size_bytes).sum(),
        partition_backups: parts,
    };
    let body = serde_json::to_vec_pretty(&manifest)?;
    dest.store
        .put(&manifest_path, body.into())
        .await
        .map_err(|e| store::explain(e, &format!("cannot write {}", dest.show(name, MANIFEST))))?;
    opts.progress.finish();
    Ok(manifest)
}

async fn remove_objects(dest: &Destination, name: &str, partitions: u32) {
    for p in 0..partitions {
        let _ = dest.store.delete(&dest.path(name, &format::object_name(p))).await;
    }
}

/// Opens partition `p`'s backup stream on its leader: asks the members in
/// turn, following the leader a node names, until one serves it.
async fn open_stream(
    client: &Client,
    members: &[String],
    p: u32,
) -> anyhow::Result<(String, tonic::Streaming<pb::BackupPartitionResponse>)> {
    let start = Instant::now();
    let mut hint: Option<String> = None;
    let mut next = 0usize;
    let mut last = String::from("no member answered");
    let mut backoff = Duration::from_millis(50);
    while start.elapsed() < LEADER_SEARCH {
        let addr = hint.take().unwrap_or_else(|| {
            next += 1;
            members[next % members.len().max(1)].clone()
        });
        let mut admin = client
            .admin(&addr)?
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let call = admin.backup_partition(pb::BackupPartitionRequest { partition: p, chunk_bytes: 0 });
        match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(Ok(s)) => return Ok((addr, s.into_inner())),
            Ok(Err(s)) if matches!(s.code(), Code::InvalidArgument | Code::Unimplemented | Code::PermissionDenied) => {
                bail!("partition {p}: node {addr} refused the backup: {}", s.message())
            }
            Ok(Err(s)) => {
                hint = s.metadata().get(LEADER_HINT_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
                last = format!("{addr}: {}", s.message());
            }
            Err(_) => last = format!("{addr}: no answer within 10s"),
        }
        if hint.is_none() {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
    bail!("partition {p}: no leader served the backup within {LEADER_SEARCH:?}; last answer: {last}")
}

async fn backup_partition(
    client: &Client,
    members: &[String],
    dest: &Destination,
    name: &str,
    p: u32,
    progress: &Progress,
) -> anyhow::Result<PartitionBackup> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match backup_partition_once(client, members, dest, name, p, progress).await {
            Ok(b) => return Ok(b),
            Err(e) if attempt < STREAM_ATTEMPTS && e.downcast_ref::<StreamBroke>().is_some() => {
                tracing::warn!(partition = p, attempt, error = %e, "backup stream broke; starting the partition over");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A partition's stream ended early or failed midway (worth starting over).
#[derive(Debug, thiserror::Error)]
#[error("partition {partition}: the backup stream from {addr} broke: {why}")]
struct StreamBroke {
    partition: u32,
    addr: String,
    why: String,
}

async fn backup_partition_once(
    client: &Client,
    members: &[String],
    dest: &Destination,
    name: &str,
    p: u32,
    progress: &Progress,
) -> anyhow::Result<PartitionBackup> {
    let (addr, mut stream) = open_stream(client, members, p).await?;
    let object = format::object_name(p);
    let shown = dest.show(name, &object);
    let broke = |why: String| anyhow::Error::new(StreamBroke { partition: p, addr: addr.clone(), why });
    let mut writer = BufWriter::with_capacity(dest.store.clone(), dest.path(name, &object), PART_BYTES)
        .with_max_concurrency(PARTS_IN_FLIGHT);
    // Set once the upload is being completed: after that the writer must
    // not be aborted (a failed completion leaves nothing to abort).
    let mut shut_down = false;
    let result: anyhow::Result<PartitionBackup> = async {
        let header = match stream.message().await {
            Ok(Some(pb::BackupPartitionResponse { part: Some(Part::Header(h)) })) => h,
            Ok(other) => return Err(broke(format!("expected a header, got {other:?}"))),
            Err(s) => return Err(broke(s.message().to_string())),
        };
        if header.partition != p {
            bail!("partition {p}: node {addr} sent partition {}", header.partition);
        }
        let mut whole = Sha256::new();
        let mut builder = ChunkBuilder::default();
        let mut chunks = Vec::new();
        let mut offset = 0u64;
        let (mut records, mut bytes) = (0u64, 0u64);
        let trailer = loop {
            let msg = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => return Err(broke("the stream ended before its trailer".into())),
                Err(s) => return Err(broke(s.message().to_string())),
            };
            match msg.part {
                Some(Part::Chunk(c)) => {
                    for kv in c.records {
                        records += 1;
                        bytes += (kv.key.len() + kv.value.len()) as u64;
                        builder.push(&kv.key, &kv.value);
                        if builder.payload_len() >= CHUNK_TARGET_BYTES {
                            offset += flush(&mut builder, &mut whole, &mut writer, &mut chunks, offset, &shown).await?;
                            progress.bytes(chunks.last().map_or(0, |c: &ChunkInfo| c.length));
                        }
                    }
                }
                Some(Part::Trailer(t)) => break t,
                other => return Err(broke(format!("unexpected message {other:?}"))),
            }
        };
        if !builder.is_empty() {
            offset += flush(&mut builder, &mut whole, &mut writer, &mut chunks, offset, &shown).await?;
            progress.bytes(chunks.last().map_or(0, |c| c.length));
        }
        let sha256 = hex(&whole.finalize());
        if (trailer.records, trailer.bytes) != (records, bytes) || trailer.sha256 != sha256 {
            bail!(
                "partition {p}: what arrived ({records} records, {bytes} bytes, sha256 {sha256}) differs from what \
                 node {addr} sent ({} records, {} bytes, sha256 {})",
                trailer.records,
                trailer.bytes,
                trailer.sha256
            );
        }
        if header.keys != records {
            bail!("partition {p}: node {addr} counts {} keys but sent {records} records", header.keys);
        }
        shut_down = true;
        tokio::io::AsyncWriteExt::shutdown(&mut writer)
            .await
            .with_context(|| format!("cannot complete the upload of {shown}"))?;
        Ok(PartitionBackup {
            partition: p,
            object: object.clone(),
            size_bytes: offset,
            applied_index: header.applied_index,
            applied_term: header.applied_term,
            served_by: header.served_by,
            records,
            bytes,
            sha256,
            chunks,
        })
    }
    .await;
    if result.is_err() && !shut_down {
        let _ = writer.abort().await;
    }
    result
}

async fn flush(
    builder: &mut ChunkBuilder,
    whole: &mut Sha256,
    writer: &mut BufWriter,
    chunks: &mut Vec<ChunkInfo>,
    offset: u64,
    shown: &str,
) -> anyhow::Result<u64> {
    let (framed, sha, records) = builder.finish(whole);
    let length = framed.len() as u64;
    writer.put(framed.into()).await.map_err(|e| store::explain(e, &format!("cannot write {shown}")))?;
    chunks.push(ChunkInfo { offset, length, records, sha256: hex(&sha) });
    Ok(length)
}

/// One line of `keyraft backup list`.
#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    pub name: String,
    pub format_version: u64,
    pub cluster_id: String,
    pub started_at: String,
    pub completed_at: String,
    pub partitions: u64,
    pub records: u64,
    pub size_bytes: u64,
}

/// The complete backups at `dest` (those with a manifest), oldest first, and
/// the names of incomplete ones (a directory without a manifest).
pub async fn list(dest: &Destination) -> anyhow::Result<(Vec<BackupSummary>, Vec<String>)> {
    let prefix = if dest.prefix.as_ref().is_empty() { None } else { Some(&dest.prefix) };
    let listing = dest
        .store
        .list_with_delimiter(prefix)
        .await
        .map_err(|e| store::explain(e, &format!("cannot list backups at {}", dest.url)))?;
    let mut out = Vec::new();
    let mut incomplete = Vec::new();
    for dir in listing.common_prefixes {
        let Some(name) = dir.filename().map(str::to_string) else { continue };
        let body = match dest.store.get(&dir.clone().join(MANIFEST)).await {
            Ok(g) => g.bytes().await.map_err(|e| store::explain(e, &dest.show(&name, MANIFEST)))?,
            Err(object_store::Error::NotFound { .. }) => {
                incomplete.push(name);
                continue;
            }
            Err(e) => return Err(store::explain(e, &format!("cannot read {}", dest.show(&name, MANIFEST)))),
        };
        let v: serde_json::Value = serde_json::from_slice(&body)
            .with_context(|| format!("{} is not valid JSON", dest.show(&name, MANIFEST)))?;
        let u = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        out.push(BackupSummary {
            name,
            format_version: u("format_version"),
            cluster_id: s("cluster_id"),
            started_at: s("started_at"),
            completed_at: s("completed_at"),
            partitions: u("partitions"),
            records: u("records"),
            size_bytes: u("size_bytes"),
        });
    }
    out.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.name.cmp(&b.name)));
    Ok((out, incomplete))
}

/// Reads and checks backup `name`'s manifest.
pub async fn read_manifest(dest: &Destination, name: &str) -> anyhow::Result<Manifest> {
    check_name(name)?;
    let shown = dest.show(name, MANIFEST);
    let body = match dest.store.get(&dest.path(name, MANIFEST)).await {
        Ok(g) => g.bytes().await.map_err(|e| store::explain(e, &format!("cannot read {shown}")))?,
        Err(object_store::Error::NotFound { .. }) => {
            let any = dest.store.list(Some(&dest.dir(name))).next().await;
            if matches!(any, Some(Ok(_))) {
                bail!(
                    "backup {name} at {} is incomplete: it has no {MANIFEST} (the backup failed or is still running); \
                     it cannot be restored",
                    dest.url
                );
            }
            bail!("no backup {name} at {} (see `keyraft backup list --at {}`)", dest.url, dest.url);
        }
        Err(e) => return Err(store::explain(e, &format!("cannot read {shown}"))),
    };
    let v: serde_json::Value =
        serde_json::from_slice(&body).with_context(|| format!("{shown} is not a valid manifest"))?;
    if v.get("format").and_then(|f| f.as_str()) != Some(format::FORMAT) {
        bail!("{shown} is not a keyraft backup manifest (format is not {:?})", format::FORMAT);
    }
    let version = v.get("format_version").and_then(|f| f.as_u64());
    if version != Some(FORMAT_VERSION.into()) {
        bail!(
            "backup {name} has format version {}; this keyraft reads format version {FORMAT_VERSION}",
            version.map_or("(none)".into(), |n| n.to_string())
        );
    }
    let mut m: Manifest = serde_json::from_value(v).with_context(|| format!("{shown} is not a valid manifest"))?;
    // The directory is the backup: one copied or renamed is read from where it is.
    m.name = name.to_string();
    if m.partition_backups.len() != m.partitions as usize
        || m.partition_backups.iter().enumerate().any(|(i, p)| p.partition as usize != i)
    {
        bail!("{shown} is not a valid manifest: it must list partitions 0..{} once each, in order", m.partitions);
    }
    Ok(m)
}

/// Deletes backup `name`: the manifest first, so a backup half deleted is
/// no longer listed or restorable, then its chunks. Deleting a backup that
/// is not there succeeds.
pub async fn delete(dest: &Destination, name: &str) -> anyhow::Result<()> {
    check_name(name)?;
    match dest.store.delete(&dest.path(name, MANIFEST)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(store::explain(e, &format!("cannot delete {}", dest.show(name, MANIFEST)))),
    }
    let objects: Vec<_> = dest
        .store
        .list(Some(&dest.dir(name)))
        .map_ok(|o| o.location)
        .try_collect()
        .await
        .map_err(|e| store::explain(e, &format!("cannot list backup {name} at {}", dest.url)))?;
    for o in objects {
        match dest.store.delete(&o).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store::explain(e, &format!("cannot delete {o} at {}", dest.url))),
        }
    }
    Ok(())
}

#[derive(Clone)]
pub struct RestoreOptions {
    /// Partitions read or written at once.
    pub concurrency: usize,
    /// Allow a target that holds keys (to finish a restore that was
    /// interrupted: records are written again, which changes nothing).
    pub resume: bool,
    pub progress: Progress,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self { concurrency: 2, resume: false, progress: Progress::hidden() }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub partitions: u32,
    pub records: u64,
    pub bytes: u64,
    pub verify_seconds: f64,
    pub write_seconds: f64,
}

/// Client options for a restore: a batch carrying a value at the 1 MiB limit
/// may take seconds to commit on a busy cluster, so each attempt may take
/// 30 s (not the default 4 s) and a write 120 s with its retries.
pub fn restore_client_options(mut o: crate::ClientOptions) -> crate::ClientOptions {
    o.attempt_timeout = o.attempt_timeout.max(Duration::from_secs(30));
    o.timeout = o.timeout.max(Duration::from_secs(120));
    o
}

/// Restores backup `name` from `dest` into the cluster `client` reaches.
pub async fn restore(
    client: &Client,
    dest: &Destination,
    name: &str,
    opts: &RestoreOptions,
) -> anyhow::Result<RestoreReport> {
    let m = read_manifest(dest, name).await?;
    let target = client.partitions().await.context("cannot reach the target cluster")?;
    if target != m.partitions {
        bail!(
            "backup {name} has {} partitions but the target cluster has {target}; restore into a cluster \
             bootstrapped with {} partitions",
            m.partitions,
            m.partitions
        );
    }
    if !opts.resume {
        let page = client
            .scan_page(pb::ScanRequest {
                limit: 1,
                consistency: pb::Consistency::Linearizable as i32,
                ..Default::default()
            })
            .await
            .context("cannot check that the target cluster is empty")?;
        if let Some(kv) = page.items.first() {
            bail!(
                "the target cluster holds keys (for one, {:?}); a backup is restored only into an empty cluster \
                 (--resume finishes an interrupted restore into the same cluster)",
                String::from_utf8_lossy(&kv.key)
            );
        }
    }
    // Every chunk is read and checked before anything is written.
    let t = Instant::now();
    opts.progress.start("verify", m.partitions, Some(m.size_bytes));
    futures::stream::iter(m.partition_backups.iter())
        .map(|pb| read_partition(dest, &m, pb, &opts.progress, None))
        .buffer_unordered(opts.concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    let verify_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    opts.progress.start("restore", m.partitions, Some(m.size_bytes));
    futures::stream::iter(m.partition_backups.iter())
        .map(|pb| read_partition(dest, &m, pb, &opts.progress, Some(client)))
        .buffer_unordered(opts.concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await
        .with_context(|| {
            format!("restore of backup {name} stopped partway; run it again with --resume to finish it")
        })?;
    opts.progress.finish();
    Ok(RestoreReport {
        backup: name.to_string(),
        partitions: m.partitions,
        records: m.records,
        bytes: m.bytes,
        verify_seconds,
        write_seconds: t.elapsed().as_secs_f64(),
    })
}

/// Reads every object of backup `name` and checks every chunk against the
/// manifest; writes nothing. Returns the manifest.
pub async fn verify(dest: &Destination, name: &str) -> anyhow::Result<Manifest> {
    let m = read_manifest(dest, name).await?;
    let progress = Progress::hidden();
    for pb in &m.partition_backups {
        read_partition(dest, &m, pb, &progress, None).await?;
    }
    Ok(m)
}

/// Reads partition `pb`'s object and checks it against the manifest chunk by
/// chunk; with `write_to`, also writes its records to that cluster.
async fn read_partition(
    dest: &Destination,
    m: &Manifest,
    pb: &PartitionBackup,
    progress: &Progress,
    write_to: Option<&Client>,
) -> anyhow::Result<()> {
    let shown = dest.show(&m.name, &pb.object);
    let path = dest.path(&m.name, &pb.object);
    let bad =
        |why: String| anyhow!("backup {}: object {shown} is corrupt: {why}; nothing was restored from it", m.name);
    let got = dest.store.get(&path).await.map_err(|e| store::explain(e, &format!("cannot read {shown}")))?;
    if got.meta.size != pb.size_bytes {
        return Err(anyhow!(
            "backup {}: object {shown} is truncated or altered: it has {} bytes, the manifest says {}",
            m.name,
            got.meta.size,
            pb.size_bytes
        ));
    }
    let mut stream = got.into_stream();
    let mut reader = ChunkReader::default();
    let mut whole = Sha256::new();
    let mut n = 0usize;
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut batch: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    let mut batch_bytes = 0usize;
    loop {
        let piece = stream.try_next().await.map_err(|e| store::explain(e, &format!("cannot read {shown}")))?;
        let Some(piece) = piece else { break };
        reader.feed(&piece);
        while let Some(chunk) = reader.next_chunk().map_err(bad)? {
            let want = pb
                .chunks
                .get(n)
                .ok_or_else(|| bad(format!("it holds more than the {} chunks listed", pb.chunks.len())))?;
            if (want.offset, want.length, want.records) != (chunk.offset, chunk.length, chunk.records)
                || want.sha256 != hex(&chunk.sha256)
            {
                return Err(bad(format!("chunk {n} at byte {} differs from the manifest", chunk.offset)));
            }
            n += 1;
            whole.update(&chunk.payload);
            for (k, v) in chunk.records().map_err(|e| bad(format!("chunk {n}: {e}")))? {
                records += 1;
                bytes += (k.len() + v.len()) as u64;
                if partition_for_key(k, m.partitions) != pb.partition {
                    return Err(bad(format!("a key of chunk {n} belongs to another partition")));
                }
                if let Some(c) = write_to {
                    if !batch.is_empty()
                        && (batch.len() == MAX_BATCH_OPS || batch_bytes + k.len() + v.len() > RESTORE_BATCH_BYTES)
                    {
                        write_batch(c, &mut batch, pb.partition).await?;
                        batch_bytes = 0;
                    }
                    batch_bytes += k.len() + v.len();
                    batch.push((k.to_vec(), Some(v.to_vec())));
                }
            }
            progress.bytes(chunk.length);
        }
    }
    reader.finish().map_err(bad)?;
    if n != pb.chunks.len() {
        return Err(bad(format!("it holds {n} chunks, the manifest lists {}", pb.chunks.len())));
    }
    if (records, bytes) != (pb.records, pb.bytes) || hex(&whole.finalize()) != pb.sha256 {
        return Err(bad("its records differ from the manifest's count or checksum".into()));
    }
    if let Some(c) = write_to {
        if !batch.is_empty() {
            write_batch(c, &mut batch, pb.partition).await?;
        }
    }
    progress.partition_done();
    Ok(())
}

async fn write_batch(c: &Client, batch: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>, p: u32) -> anyhow::Result<()> {
    let ops = std::mem::take(batch);
    let mut attempt = 0;
    loop {
        attempt += 1;
        // The client retries within its timeout with the same request id; a
        // batch that still failed is sent again whole (puts of the backed-up
        // values: applying one twice changes nothing).
        match c.batch(ops.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if attempt < 3 && e.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(anyhow!("partition {p}: writing a batch of {} records failed: {e}", ops.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("nightly-2024.01_02").is_ok());
        for bad in ["", ".hidden", "a/b", "x y", &"n".repeat(129)] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.contains("is not valid"), "{bad}: {e}");
        }
        assert!(check_name(&default_name()).is_ok());
    }
}
