//! Snapshots of a state machine held in the engine: written out from an
//! engine snapshot (a consistent view, taken at once) into a temporary file
//! record by record, and installed by streaming such a file into a staging
//! generation of the group's keys, which one small batch then makes current.
//! Neither holds more than a bounded batch of the state in memory.
//!
//! Stream format: frames `len:u32le crc32:u32le body`, the body starting with
//! its type: a header ([`SnapshotHeader`]), then one frame per record
//! (`kind:u8 key_len:u32le key value`, the record's key below the
//! generation), then an end frame holding the number of records.
//!
//! [`SnapshotData`] is openraft's snapshot data: an unlinked temporary file,
//! or an engine view not yet written out. The file is written the first time
//! the data is read or sought, so a snapshot openraft only asks about (at
//! start, or when it builds one to allow a log purge) costs no copy.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use fjall::Readable;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use super::sm_store::{
    data_key, gen_prefix, head_key, prefix_end, read_membership, read_meta, read_state, SmState, SmStore,
    COPY_BATCH_BYTES, TAG_DATA, TAG_MEMBERSHIP, TAG_META, TAG_STATE,
};
use super::throttle::SendThrottle;
use super::wal::{decode, encode};
use crate::meta::ClusterMeta;
use crate::types::{GroupId, LogId, StoredMembership};

const FRAME_HEADER: u8 = 1;
const FRAME_RECORD: u8 = 2;
const FRAME_END: u8 = 3;
/// Largest frame accepted when reading (a record holds one key and value).
const MAX_FRAME: u32 = 64 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub meta: Option<ClusterMeta>,
    pub keys: u64,
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Name prefix of snapshot files in the temporary directory.
const SNAPSHOT_FILE_PREFIX: &str = "snapshot-";

/// Creates a temporary file in `dir` and unlinks it at once: it lives as long
/// as its handle, and a crash leaves nothing behind.
pub fn unlinked_temp(dir: &Path) -> io::Result<File> {
    super::wal::create_dir_durable(dir)?;
    let path = dir.join(format!("{SNAPSHOT_FILE_PREFIX}{:016x}.tmp", rand::random::<u64>()));
    let f = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

/// Bytes on disk of this process's snapshot files under `tmp_dir`: the
/// unlinked temporary files of snapshots being written out, sent or received
/// (found through the process's open descriptors, `/proc/self/fd`, since they
/// have no name any more), plus any such file still linked there. Each file
/// counts once, however many descriptors it has.
pub fn files_bytes(tmp_dir: &Path) -> u64 {
    let dir = std::fs::canonicalize(tmp_dir).unwrap_or_else(|_| tmp_dir.to_path_buf());
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut count = |md: std::fs::Metadata| {
        if md.is_file() && seen.insert(file_id(&md)) {
            total += md.len();
        }
    };
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let ours = target.parent() == Some(dir.as_path())
                && target.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(SNAPSHOT_FILE_PREFIX));
            if ours {
                // stat through the descriptor: the file may be unlinked.
                if let Ok(md) = std::fs::metadata(fd.path()) {
                    count(md);
                }
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            if e.file_name().to_str().is_some_and(|n| n.starts_with(SNAPSHOT_FILE_PREFIX)) {
                if let Ok(md) = e.metadata() {
                    count(md);
                }
            }
        }
    }
    total
}

#[cfg(unix)]
fn file_id(md: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (md.dev(), md.ino())
}

#[cfg(not(unix))]
fn file_id(md: &std::fs::Metadata) -> (u64, u64) {
    (md.len(), 0)
}

fn write_frame(w: &mut impl Write, body: &[&[u8]]) -> io::Result<()> {
    let len: usize = body.iter().map(|b| b.len()).sum();
    let mut crc = crc32fast::Hasher::new();
    for b in body {
        crc.update(b);
    }
    w.write_all(&u32::try_from(len).map_err(|_| bad("frame too large"))?.to_le_bytes())?;
    w.write_all(&crc.finalize().to_le_bytes())?;
    for b in body {
        w.write_all(b)?;
    }
    Ok(())
}

/// Writes the state of `group` as `view` sees it into `out`; returns the
/// header written.
pub fn write_snapshot(
    store: &SmStore,
    view: &fjall::Snapshot,
    group: GroupId,
    out: &mut File,
) -> io::Result<SnapshotHeader> {
    let st = read_state(view, &store.ks, group)?;
    let header = SnapshotHeader {
        last_applied: st.last_applied,
        membership: read_membership(view, &store.ks, group)?,
        meta: read_meta(view, &store.ks, group)?,
        keys: st.keys,
    };
    let mut w = BufWriter::with_capacity(1 << 20, &mut *out);
    write_frame(&mut w, &[&[FRAME_HEADER], &encode(&header)])?;
    let base = gen_prefix(group, st.gen);
    let end = prefix_end(&base).expect("a generation prefix has an end");
    let mut count = 0u64;
    for kv in view.range(&store.ks, base.to_vec()..end) {
        let (k, v) = kv.into_inner().map_err(io_err)?;
        let rest = &k[base.len()..];
        let (kind, key) = rest.split_first().ok_or_else(|| bad("record key without a kind"))?;
        let klen = u32::try_from(key.len()).map_err(|_| bad("key too large"))?.to_le_bytes();
        write_frame(&mut w, &[&[FRAME_RECORD, *kind], &klen, key, &v])?;
        count += 1;
    }
    write_frame(&mut w, &[&[FRAME_END], &count.to_le_bytes()])?;
    w.flush()?;
    drop(w);
    out.sync_data()?;
    out.seek(SeekFrom::Start(0))?;
    Ok(header)
}

fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut head = [0u8; 8];
    r.read_exact(&mut head).map_err(|e| bad(format!("snapshot stream cut short: {e}")))?;
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    if len > MAX_FRAME {
        return Err(bad(format!("snapshot frame of {len} bytes exceeds {MAX_FRAME}")));
    }
    buf.resize(len as usize, 0);
    r.read_exact(buf).map_err(|e| bad(format!("snapshot stream cut short: {e}")))?;
    if crc32fast::hash(buf) != crc {
        return Err(bad("snapshot frame checksum mismatch"));
    }
    if buf.is_empty() {
        return Err(bad("empty snapshot frame"));
    }
    Ok(())
}

/// Installs the snapshot in `file` as the state of `group`: its records go
/// into the next generation in bounded batches, then one batch makes that
/// generation current with the snapshot's applied index, membership and
/// metadata, and the old generation is deleted. Returns the new state.
pub fn install(
    store: &SmStore,
    group: GroupId,
    file: File,
    last_applied: Option<LogId>,
    membership: &StoredMembership,
) -> io::Result<(SmState, Option<ClusterMeta>)> {
    let old = store.state(group)?;
    let gen = old.gen + 1;
    // Leftovers of an install that failed before its switch.
    store.delete_other_generations(group, old.gen)?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut buf = Vec::new();
    read_frame(&mut r, &mut buf)?;
    if buf[0] != FRAME_HEADER {
        return Err(bad("snapshot stream does not start with a header"));
    }
    let header: SnapshotHeader = decode(&buf[1..]).map_err(bad)?;
    let mut batch = store.batch();
    let mut pending = 0usize;
    let mut count = 0u64;
    loop {
        read_frame(&mut r, &mut buf)?;
        match buf[0] {
            FRAME_RECORD => {
                if buf.len() < 6 {
                    return Err(bad("short snapshot record"));
                }
                let kind = buf[1];
                let klen = u32::from_le_bytes(buf[2..6].try_into().expect("4 bytes")) as usize;
                let key = buf.get(6..6 + klen).ok_or_else(|| bad("snapshot record key out of bounds"))?;
                let value = buf[6 + klen..].to_vec();
                pending += key.len() + value.len() + 32;
                batch.insert(&store.ks, data_key(group, gen, kind, key), value);
                count += 1;
                if pending >= COPY_BATCH_BYTES {
                    std::mem::replace(&mut batch, store.batch()).commit().map_err(io_err)?;
                    pending = 0;
                }
            }
            FRAME_END => {
                let n = buf.get(1..9).ok_or_else(|| bad("short snapshot end"))?;
                if u64::from_le_bytes(n.try_into().expect("8 bytes")) != count {
                    return Err(bad("snapshot record count mismatch"));
                }
                break;
            }
            t => return Err(bad(format!("unknown snapshot frame type {t}"))),
        }
    }
    batch.commit().map_err(io_err)?;
    // The switch. It follows the staged records in the engine's journal, so
    // it cannot reach the disk without them.
    let st = SmState { gen, last_applied, keys: header.keys };
    let mut batch = store.batch();
    batch.insert(&store.ks, head_key(group, TAG_STATE), encode(&st));
    batch.insert(&store.ks, head_key(group, TAG_MEMBERSHIP), encode(membership));
    match &header.meta {
        Some(m) => batch.insert(&store.ks, head_key(group, TAG_META), encode(&Some(m.clone()))),
        None => batch.remove(&store.ks, head_key(group, TAG_META)),
    }
    batch.commit().map_err(io_err)?;
    store.delete_other_generations(group, gen)?;
    debug_assert_eq!(head_key(group, TAG_DATA)[..8], gen_prefix(group, gen)[..8]);
    Ok((st, header.meta))
}

/// An engine view waiting to be written out.
pub struct PendingView {
    pub store: SmStore,
    pub view: fjall::Snapshot,
    pub group: GroupId,
    pub tmp_dir: PathBuf,
}

enum DataState {
    Pending(Option<PendingView>),
    Writing(tokio::task::JoinHandle<io::Result<File>>),
    Ready(tokio::fs::File),
}

/// openraft's snapshot data (see the module doc).
pub struct SnapshotData {
    state: DataState,
    /// A seek asked for before the file existed.
    seek: Option<SeekFrom>,
    /// Data being sent: reads are paced by the node's send rate.
    pacer: Option<Pacer>,
}

/// Reads of a snapshot being sent, paced by the shared [`SendThrottle`].
struct Pacer {
    throttle: Arc<SendThrottle>,
    /// Until when the next read waits.
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self.state {
            DataState::Pending(_) => "pending",
            DataState::Writing(_) => "writing",
            DataState::Ready(_) => "file",
        };
        f.debug_struct("SnapshotData").field("state", &s).finish()
    }
}

impl SnapshotData {
    pub fn file(f: File) -> Self {
        Self { state: DataState::Ready(tokio::fs::File::from_std(f)), seek: None, pacer: None }
    }

    pub fn pending(p: PendingView) -> Self {
        Self { state: DataState::Pending(Some(p)), seek: None, pacer: None }
    }

    /// Data to be sent: reads go no faster than `throttle` allows.
    pub fn paced(mut self, throttle: Option<Arc<SendThrottle>>) -> Self {
        self.pacer = throttle.map(|throttle| Pacer { throttle, wait: None });
        self
    }

    /// Makes the file ready, writing it out first if it is still a view.
    fn poll_ready_file(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let next = match &mut self.state {
                DataState::Ready(_) => return Poll::Ready(Ok(())),
                DataState::Pending(p) => {
                    let p = p.take().expect("pending view taken once");
                    DataState::Writing(tokio::task::spawn_blocking(move || {
                        let mut f = unlinked_temp(&p.tmp_dir)?;
                        write_snapshot(&p.store, &p.view, p.group, &mut f)?;
                        Ok(f)
                    }))
                }
                DataState::Writing(h) => {
                    let f = ready!(Pin::new(h).poll(cx)).map_err(io_err)??;
                    DataState::Ready(tokio::fs::File::from_std(f))
                }
            };
            self.state = next;
        }
    }

    fn poll_file(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Pin<&mut tokio::fs::File>>> {
        ready!(self.poll_ready_file(cx))?;
        match &mut self.state {
            DataState::Ready(f) => Poll::Ready(Ok(Pin::new(f))),
            _ => unreachable!("the file was just made ready"),
        }
    }

    /// The data as a file positioned at its start, written out first if needed.
    pub async fn into_file(mut self) -> io::Result<File> {
        std::future::poll_fn(|cx| self.poll_ready_file(cx)).await?;
        let DataState::Ready(f) = self.state else { unreachable!("the file was just made ready") };
        let mut f = f.into_std().await;
        f.seek(SeekFrom::Start(0))?;
        Ok(f)
    }
}

impl AsyncRead for SnapshotData {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(wait) = this.pacer.as_mut().and_then(|p| p.wait.as_mut()) {
            ready!(wait.as_mut().poll(cx));
        }
        let before = buf.filled().len();
        ready!(ready!(this.poll_file(cx))?.poll_read(cx, buf))?;
        if let Some(p) = &mut this.pacer {
            let until = p.throttle.reserve((buf.filled().len() - before) as u64);
            p.wait = Some(Box::pin(tokio::time::sleep_until(until)));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SnapshotData {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_file(cx))?.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_file(cx))?.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_file(cx))?.poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotData {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        match &mut this.state {
            DataState::Ready(f) => Pin::new(f).start_seek(position),
            _ => {
                this.seek = Some(position);
                Ok(())
            }
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let this = self.get_mut();
        let seek = this.seek.take();
        let mut f = match this.poll_file(cx) {
            Poll::Ready(Ok(f)) => f,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {
                this.seek = seek;
                return Poll::Pending;
            }
        };
        if let Some(pos) = seek {
            f.as_mut().start_seek(pos)?;
        }
        f.poll_complete(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_files_are_measured_while_open_though_unlinked() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        assert_eq!(files_bytes(&tmp), 0, "no directory, no files");
        let mut a = unlinked_temp(&tmp).unwrap();
        a.write_all(&[1u8; 10_000]).unwrap();
        let mut b = unlinked_temp(&tmp).unwrap();
        b.write_all(&[2u8; 5_000]).unwrap();
        // A second descriptor of the same file counts once.
        let a2 = a.try_clone().unwrap();
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "the files have no name");
        if Path::new("/proc/self/fd").is_dir() {
            assert_eq!(files_bytes(&tmp), 15_000);
            drop(b);
            assert_eq!(files_bytes(&tmp), 10_000);
            drop((a, a2));
        }
        assert_eq!(files_bytes(&tmp), 0, "closed: the space is free again");
    }
}
