//! The backup format: data objects made of checksummed chunks, and the
//! manifest that describes a complete backup.
//!
//! A data object (`partition-NNNNN.krb`) is a sequence of chunks:
//!
//! | bytes | field                                                 |
//! |-------|-------------------------------------------------------|
//! | 4     | magic `KRB1`                                          |
//! | 4     | record count, u32 big-endian                          |
//! | 4     | payload length, u32 big-endian                        |
//! | 32    | SHA-256 of the payload                                |
//! | n     | payload: records, each u32 BE key length, key, u32 BE value length, value |
//!
//! The SHA-256 over every chunk's payload in order is the partition's record
//! checksum, the same one the node sends in the stream's trailer.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's `format` value.
pub const FORMAT: &str = "keyraft-backup";
/// Version of the format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the manifest object, written last.
pub const MANIFEST: &str = "manifest.json";

pub const CHUNK_MAGIC: &[u8; 4] = b"KRB1";
pub const CHUNK_HEADER_BYTES: usize = 44;
/// Payload bytes after which a chunk is closed (it holds whole records).
pub const CHUNK_TARGET_BYTES: usize = 4 << 20;
/// Largest payload a reader accepts: the target plus one record of the
/// largest key and value a node takes, with room to spare.
pub const MAX_CHUNK_PAYLOAD: usize = 16 << 20;

/// The data object of a partition.
pub fn object_name(partition: u32) -> String {
    format!("partition-{partition:05}.krb")
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// manifest.json: what a complete backup holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub name: String,
    pub cluster_id: String,
    pub partitions: u32,
    pub replication_factor: u32,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub completed_at: String,
    /// Records (keys) in all partitions.
    pub records: u64,
    /// Key and value bytes of every record.
    pub bytes: u64,
    /// Bytes of every data object.
    pub size_bytes: u64,
    /// One entry per partition, in partition order.
    pub partition_backups: Vec<PartitionBackup>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartitionBackup {
    pub partition: u32,
    /// Object name relative to the backup's directory.
    pub object: String,
    pub size_bytes: u64,
    /// The records are the partition's state after this Raft index.
    pub applied_index: u64,
    pub applied_term: u64,
    /// Raft id of the leader that served the partition.
    pub served_by: u64,
    pub records: u64,
    pub bytes: u64,
    /// SHA-256 of every chunk payload in order (the node's record checksum).
    pub sha256: String,
    pub chunks: Vec<ChunkInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChunkInfo {
    pub offset: u64,
    /// Header and payload.
    pub length: u64,
    pub records: u32,
    /// SHA-256 of the payload.
    pub sha256: String,
}

/// Builds chunks from records.
#[derive(Default)]
pub struct ChunkBuilder {
    payload: Vec<u8>,
    records: u32,
}

impl ChunkBuilder {
    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        self.payload.extend_from_slice(&(key.len() as u32).to_be_bytes());
        self.payload.extend_from_slice(key);
        self.payload.extend_from_slice(&(value.len() as u32).to_be_bytes());
        self.payload.extend_from_slice(value);
        self.records += 1;
    }

    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The framed chunk, its payload's SHA-256 and record count; the builder
    /// starts over. `whole` is updated with the payload.
    pub fn finish(&mut self, whole: &mut Sha256) -> (Vec<u8>, [u8; 32], u32) {
        let sha: [u8; 32] = Sha256::digest(&self.payload).into();
        whole.update(&self.payload);
        let mut out = Vec::with_capacity(CHUNK_HEADER_BYTES + self.payload.len());
        out.extend_from_slice(CHUNK_MAGIC);
        out.extend_from_slice(&self.records.to_be_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&sha);
        out.extend_from_slice(&self.payload);
        let records = std::mem::take(&mut self.records);
        self.payload.clear();
        (out, sha, records)
    }
}

/// A key and its value, borrowed from a chunk.
pub type Record<'a> = (&'a [u8], &'a [u8]);

/// A chunk read back and checked against its own checksum.
#[derive(Debug)]
pub struct Chunk {
    pub offset: u64,
    pub length: u64,
    pub records: u32,
    pub sha256: [u8; 32],
    pub payload: Vec<u8>,
}

impl Chunk {
    /// The records of the payload (checked to fill it exactly).
    pub fn records(&self) -> Result<Vec<Record<'_>>, String> {
        let mut out = Vec::with_capacity(self.records as usize);
        let mut p = &self.payload[..];
        fn take<'a>(p: &mut &'a [u8]) -> Option<&'a [u8]> {
            let n = u32::from_be_bytes(p.get(..4)?.try_into().ok()?) as usize;
            let v = p.get(4..4 + n)?;
            *p = &p[4 + n..];
            Some(v)
        }
        while !p.is_empty() {
            let k = take(&mut p).ok_or("a record runs past the end of its chunk")?;
            let v = take(&mut p).ok_or("a record runs past the end of its chunk")?;
            out.push((k, v));
        }
        if out.len() != self.records as usize {
            return Err(format!("the chunk says {} records but holds {}", self.records, out.len()));
        }
        Ok(out)
    }
}

/// Cuts a byte stream into chunks, checking each one's magic, length and
/// checksum as it completes. Holds at most one chunk.
#[derive(Default)]
pub struct ChunkReader {
    buf: Vec<u8>,
    offset: u64,
}

impl ChunkReader {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete chunk, None until more bytes are fed.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, String> {
        if self.buf.len() < CHUNK_HEADER_BYTES {
            return Ok(None);
        }
        if &self.buf[..4] != CHUNK_MAGIC {
            return Err(format!("no chunk starts at byte {} (bad magic)", self.offset));
        }
        let records = u32::from_be_bytes(self.buf[4..8].try_into().expect("4 bytes"));
        let len = u32::from_be_bytes(self.buf[8..12].try_into().expect("4 bytes")) as usize;
        if len > MAX_CHUNK_PAYLOAD {
            return Err(format!("the chunk at byte {} claims {len} payload bytes, over the limit", self.offset));
        }
        if self.buf.len() < CHUNK_HEADER_BYTES + len {
            return Ok(None);
        }
        let want: [u8; 32] = self.buf[12..44].try_into().expect("32 bytes");
        let payload = self.buf[CHUNK_HEADER_BYTES..CHUNK_HEADER_BYTES + len].to_vec();
        let got: [u8; 32] = Sha256::digest(&payload).into();
        if got != want {
            return Err(format!(
                "the chunk at byte {} fails its checksum (sha256 {} recorded, {} read)",
                self.offset,
                hex(&want),
                hex(&got)
            ));
        }
        self.buf.drain(..CHUNK_HEADER_BYTES + len);
        let chunk =
            Chunk { offset: self.offset, length: (CHUNK_HEADER_BYTES + len) as u64, records, sha256: want, payload };
        self.offset += chunk.length;
        Ok(Some(chunk))
    }

    /// After the last bytes: an error if a partial chunk is left over.
    pub fn finish(&self) -> Result<(), String> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the object ends inside a chunk: {} bytes after byte {} are incomplete",
                self.buf.len(),
                self.offset
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(records: &[(&[u8], &[u8])], per_chunk: usize) -> (Vec<u8>, Vec<[u8; 32]>) {
        let mut whole = Sha256::new();
        let mut b = ChunkBuilder::default();
        let mut out = Vec::new();
        let mut shas = Vec::new();
        for (i, (k, v)) in records.iter().enumerate() {
            b.push(k, v);
            if (i + 1) % per_chunk == 0 {
                let (c, sha, _) = b.finish(&mut whole);
                out.extend(c);
                shas.push(sha);
            }
        }
        if !b.is_empty() {
            let (c, sha, _) = b.finish(&mut whole);
            out.extend(c);
            shas.push(sha);
        }
        (out, shas)
    }

    #[test]
    fn chunks_read_back_in_pieces_of_any_size() {
        let recs: Vec<(&[u8], &[u8])> = vec![(b"a", b"1"), (b"b", b""), (b"c", &[0u8; 300]), (b"d", b"4")];
        let (obj, shas) = object(&recs, 3);
        for step in [1, 7, 44, 1000] {
            let mut r = ChunkReader::default();
            let mut got = Vec::new();
            for piece in obj.chunks(step) {
                r.feed(piece);
                while let Some(c) = r.next_chunk().unwrap() {
                    got.push(c);
                }
            }
            r.finish().unwrap();
            assert_eq!(got.len(), 2);
            assert_eq!(got.iter().map(|c| c.sha256).collect::<Vec<_>>(), shas);
            let all: Vec<(Vec<u8>, Vec<u8>)> =
                got.iter().flat_map(|c| c.records().unwrap()).map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            assert_eq!(all, recs.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect::<Vec<_>>());
            assert_eq!(got[1].offset, got[0].length);
        }
    }

    #[test]
    fn a_flipped_byte_or_a_cut_is_refused() {
        let (mut obj, _) = object(&[(b"k", b"value")], 1);
        let last = obj.len() - 1;
        obj[last] ^= 1;
        let mut r = ChunkReader::default();
        r.feed(&obj);
        assert!(r.next_chunk().unwrap_err().contains("fails its checksum"));
        let (obj, _) = object(&[(b"k", b"value")], 1);
        let mut r = ChunkReader::default();
        r.feed(&obj[..obj.len() - 2]);
        assert!(r.next_chunk().unwrap().is_none());
        assert!(r.finish().unwrap_err().contains("ends inside a chunk"));
    }
}
