//! The client-facing key-value service. Every node serves every key: writes
//! go to the partition's leader (here or forwarded), reads go where their
//! consistency level allows.

use std::sync::Arc;

use keyraft_api::limits::{DEFAULT_SCAN_LIMIT, MAX_BATCH_OPS, MAX_SCAN_LIMIT};
use keyraft_api::pb::kv_server::Kv;
use keyraft_api::pb::{self, batch_op};
use keyraft_api::{group_of_partition, partition_for_key, ConsistencyLevel, SessionToken, HOPS_HEADER};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::{observe, observe_read};
use crate::error::NodeError;
use crate::node::{Node, ReadPlan, Written};
use crate::storage::sessions::MAX_UNACKED;
use crate::types::{Command, CommandResult, KvOp, RequestId};

pub struct KvService {
    pub node: Arc<Node>,
}

fn hops(md: &MetadataMap) -> u32 {
    md.get(HOPS_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A forwarded read waits no longer than this for the other node (which may
/// be hung) before the client gets `Unavailable` and retries elsewhere.
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn forwarded<T>(msg: T, hops: u32) -> Request<T> {
    let mut r = Request::new(msg);
    r.set_timeout(FORWARD_TIMEOUT);
    r.metadata_mut().insert(HOPS_HEADER, (hops + 1).to_string().parse().expect("digits are ASCII"));
    r
}

/// Awaits a forwarded call, bounded by [`FORWARD_TIMEOUT`].
async fn bounded<T>(
    addr: &str,
    f: impl std::future::Future<Output = Result<Response<T>, Status>>,
) -> Result<Response<T>, Status> {
    tokio::time::timeout(FORWARD_TIMEOUT, f).await.unwrap_or_else(|_| {
        Err(Status::unavailable(format!("node {addr} did not answer a forwarded read within {FORWARD_TIMEOUT:?}")))
    })
}

impl KvService {
    fn check_key(&self, field: &'static str, key: &[u8]) -> Result<(), NodeError> {
        if key.is_empty() {
            return Err(NodeError::invalid(field, "must not be empty"));
        }
        let max = self.node.cfg.max_key_bytes;
        if key.len() > max {
            return Err(NodeError::invalid(field, format!("{} bytes exceeds the limit of {max} bytes", key.len())));
        }
        Ok(())
    }

    fn check_value(&self, field: &'static str, v: &[u8]) -> Result<(), NodeError> {
        let max = self.node.cfg.max_value_bytes;
        if v.len() > max {
            return Err(NodeError::invalid(field, format!("{} bytes exceeds the limit of {max} bytes", v.len())));
        }
        Ok(())
    }

    fn partition_of(&self, key: &[u8]) -> Result<u32, NodeError> {
        Ok(partition_for_key(key, self.node.meta()?.partitions))
    }

    async fn write(&self, key: &[u8], rid: Option<pb::RequestId>, op: KvOp) -> Result<(Written, u32), NodeError> {
        let p = self.partition_of(key)?;
        let request_id = rid.map(request_id).transpose()?;
        let w = self.node.propose_group(group_of_partition(p), Some(p), Command::Kv { request_id, op }).await?;
        if w.result == CommandResult::AlreadyAcknowledged {
            return Err(NodeError::invalid(
                "request_id.seq",
                "the client had already acknowledged this write (seq below its first_unacked); it is not applied again",
            ));
        }
        Ok((w, p))
    }

    fn header(p: u32, index: u64, served_by: u64, addr: String) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            partition: p,
            session_token: SessionToken { partition: p, index }.to_string(),
            served_by,
            served_by_addr: addr,
        })
    }

    fn written_header(p: u32, w: &Written) -> Option<pb::ResponseHeader> {
        Self::header(p, w.index, w.served_by, w.served_by_addr.clone())
    }

    /// The level a read asked for (or the cluster default) and its session
    /// index for partition `p`.
    fn read_level(&self, consistency: i32, token: &str, p: u32) -> Result<(ConsistencyLevel, u64), NodeError> {
        let level = ConsistencyLevel::from_wire(consistency)
            .map_err(|e| NodeError::invalid("consistency", e))?
            .unwrap_or_else(|| self.node.default_read());
        if token.is_empty() {
            return Ok((level, 0));
        }
        let t: SessionToken = token.parse().map_err(|e: String| NodeError::invalid("session_token", e))?;
        if t.partition != p {
            return Err(NodeError::invalid(
                "session_token",
                format!("token is for partition {} but the key is in partition {p}", t.partition),
            ));
        }
        Ok((level, t.index))
    }

    async fn scan_partition(&self, req: &pb::ScanRequest, p: u32, hops: u32) -> Result<pb::ScanResponse, Status> {
        let (level, _) = self.read_level(req.consistency, "", p)?;
        match self.node.plan_read(p, level, 0, hops).await? {
            ReadPlan::Local { reader, .. } => {
                let limit = effective_limit(req.limit)? as usize;
                let (start, end) = scan_bounds(req)?;
                let (items, more) = reader.scan(&start, &end, limit).map_err(|e| Status::internal(e.to_string()))?;
                let items = items.into_iter().map(|(key, value)| pb::KeyValue { key, value }).collect();
                Ok(pb::ScanResponse { items, more })
            }
            ReadPlan::Forward(addr) => {
                let mut c = self.node.peers.kv(&addr).map_err(|e| Status::unavailable(e.to_string()))?;
                let mut fwd = req.clone();
                fwd.partition = Some(p);
                Ok(bounded(&addr, c.scan(forwarded(fwd, hops))).await?.into_inner())
            }
        }
    }
}

/// Checks a request id's acknowledgement mark: at or below its seq, and
/// not so far below that the node would keep unbounded results for it.
fn request_id(r: pb::RequestId) -> Result<RequestId, NodeError> {
    if r.first_unacked != 0 {
        if r.first_unacked > r.seq {
            return Err(NodeError::invalid(
                "request_id.first_unacked",
                format!("{} is above the request's own seq {}", r.first_unacked, r.seq),
            ));
        }
        if r.seq - r.first_unacked > MAX_UNACKED {
            return Err(NodeError::invalid(
                "request_id.first_unacked",
                format!(
                    "{} is {} below seq {}; at most {MAX_UNACKED} writes may await an answer",
                    r.first_unacked,
                    r.seq - r.first_unacked,
                    r.seq
                ),
            ));
        }
    }
    Ok(RequestId { client_id: r.client_id, seq: r.seq, first_unacked: r.first_unacked })
}

fn effective_limit(limit: u32) -> Result<u32, NodeError> {
    match limit {
        0 => Ok(DEFAULT_SCAN_LIMIT),
        l if l > MAX_SCAN_LIMIT => {
            Err(NodeError::invalid("limit", format!("{l} exceeds the maximum of {MAX_SCAN_LIMIT}")))
        }
        l => Ok(l),
    }
}

/// The [start, end) range a scan covers; an empty end means unbounded.
fn scan_bounds(req: &pb::ScanRequest) -> Result<(Vec<u8>, Vec<u8>), NodeError> {
    if !req.prefix.is_empty() {
        if !req.start.is_empty() || !req.end.is_empty() {
            return Err(NodeError::invalid("prefix", "give either a prefix or a start/end range, not both"));
        }
        return Ok((req.prefix.clone(), prefix_end(&req.prefix)));
    }
    if !req.end.is_empty() && req.end <= req.start {
        return Err(NodeError::invalid("end", "must sort after start"));
    }
    Ok((req.start.clone(), req.end.clone()))
}

/// The first key after every key starting with `prefix` (empty: none).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        observe(&self.node, "put", async {
            self.node.refuse_if_departed()?;
            let r = req.into_inner();
            self.check_key("key", &r.key)?;
            self.check_value("value", &r.value)?;
            let (w, p) = self.write(&r.key.clone(), r.request_id, KvOp::Put { key: r.key, value: r.value }).await?;
            Ok(Response::new(pb::PutResponse { header: Self::written_header(p, &w) }))
        })
        .await
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let consistency = req.get_ref().consistency;
        observe_read(&self.node, "get", consistency, async {
            self.node.refuse_if_departed()?;
            let hops = hops(req.metadata());
            let r = req.into_inner();
            self.check_key("key", &r.key)?;
            let p = self.partition_of(&r.key)?;
            let (level, min_index) = self.read_level(r.consistency, &r.session_token, p)?;
            match self.node.plan_read(p, level, min_index, hops).await? {
                ReadPlan::Local { reader, served_by, .. } => {
                    // The token is the index of the state actually read (the
                    // applied-index metric can lag it): a later read with it
                    // never sees an older state, on any replica.
                    let (value, read_at) = reader.get(&r.key).map_err(|e| Status::internal(e.to_string()))?;
                    Ok(Response::new(pb::GetResponse {
                        header: Self::header(p, read_at.max(min_index), served_by, self.node.cfg.advertise.clone()),
                        found: value.is_some(),
                        value: value.unwrap_or_default(),
                    }))
                }
                ReadPlan::Forward(addr) => {
                    let mut c = self.node.peers.kv(&addr).map_err(|e| Status::unavailable(e.to_string()))?;
                    bounded(&addr, c.get(forwarded(r, hops))).await
                }
            }
        })
        .await
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        observe(&self.node, "delete", async {
            self.node.refuse_if_departed()?;
            let r = req.into_inner();
            self.check_key("key", &r.key)?;
            let (w, p) = self.write(&r.key.clone(), r.request_id, KvOp::Delete { key: r.key }).await?;
            let existed = matches!(w.result, CommandResult::Deleted { existed: true });
            Ok(Response::new(pb::DeleteResponse { header: Self::written_header(p, &w), existed }))
        })
        .await
    }

    async fn scan(&self, req: Request<pb::ScanRequest>) -> Result<Response<pb::ScanResponse>, Status> {
        let consistency = req.get_ref().consistency;
        observe_read(&self.node, "scan", consistency, async {
            self.node.refuse_if_departed()?;
            let hops = hops(req.metadata());
            let r = req.into_inner();
            let limit = effective_limit(r.limit)? as usize;
            scan_bounds(&r)?;
            let meta = self.node.meta()?;
            if let Some(p) = r.partition {
                if p >= meta.partitions {
                    return Err(NodeError::invalid(
                        "partition",
                        format!("{p} does not exist; the cluster has {} partitions", meta.partitions),
                    )
                    .into());
                }
                return Ok(Response::new(self.scan_partition(&r, p, hops).await?));
            }
            let parts =
                futures::future::try_join_all((0..meta.partitions).map(|p| self.scan_partition(&r, p, hops))).await?;
            // A partition cut short may hold unseen keys after its last one:
            // only keys up to the smallest such cut are complete.
            let cutoff = parts.iter().filter(|p| p.more).filter_map(|p| p.items.last()).map(|kv| kv.key.clone()).min();
            let mut more = parts.iter().any(|p| p.more);
            let mut items: Vec<pb::KeyValue> = parts.into_iter().flat_map(|p| p.items).collect();
            if let Some(c) = &cutoff {
                items.retain(|kv| kv.key <= *c);
            }
            items.sort_by(|a, b| a.key.cmp(&b.key));
            if items.len() > limit {
                items.truncate(limit);
                more = true;
            }
            Ok(Response::new(pb::ScanResponse { items, more }))
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        req: Request<pb::CompareAndSwapRequest>,
    ) -> Result<Response<pb::CompareAndSwapResponse>, Status> {
        observe(&self.node, "compare_and_swap", async {
            self.node.refuse_if_departed()?;
            let r = req.into_inner();
            self.check_key("key", &r.key)?;
            if let Some(v) = &r.expected {
                self.check_value("expected", v)?;
            }
            if let Some(v) = &r.new_value {
                self.check_value("new_value", v)?;
            }
            let op = KvOp::Cas { key: r.key.clone(), expected: r.expected, new: r.new_value };
            let (w, p) = self.write(&r.key, r.request_id, op).await?;
            let (succeeded, current) = match &w.result {
                CommandResult::Cas { succeeded, current } => (*succeeded, current.clone()),
                other => return Err(Status::internal(format!("unexpected result {other:?}"))),
            };
            Ok(Response::new(pb::CompareAndSwapResponse { header: Self::written_header(p, &w), succeeded, current }))
        })
        .await
    }

    async fn batch(&self, req: Request<pb::BatchRequest>) -> Result<Response<pb::BatchResponse>, Status> {
        observe(&self.node, "batch", async {
            self.node.refuse_if_departed()?;
            let r = req.into_inner();
            if r.ops.is_empty() {
                return Err(NodeError::invalid("ops", "a batch needs at least one operation").into());
            }
            if r.ops.len() > MAX_BATCH_OPS {
                return Err(NodeError::invalid(
                    "ops",
                    format!("{} operations exceed the limit of {MAX_BATCH_OPS}", r.ops.len()),
                )
                .into());
            }
            let mut ops = Vec::with_capacity(r.ops.len());
            for op in r.ops {
                match op.op {
                    Some(batch_op::Op::Put(kv)) => {
                        self.check_key("ops.put.key", &kv.key)?;
                        self.check_value("ops.put.value", &kv.value)?;
                        ops.push((kv.key, Some(kv.value)));
                    }
                    Some(batch_op::Op::Delete(k)) => {
                        self.check_key("ops.delete", &k)?;
                        ops.push((k, None));
                    }
                    None => return Err(NodeError::invalid("ops", "an operation is neither put nor delete").into()),
                }
            }
            let p = self.partition_of(&ops[0].0)?;
            for (k, _) in &ops {
                let q = self.partition_of(k)?;
                if q != p {
                    return Err(NodeError::invalid(
                        "ops",
                        format!("keys span partitions {p} and {q}; a batch must stay within one partition"),
                    )
                    .into());
                }
            }
            let first = ops[0].0.clone();
            let (w, p) = self.write(&first, r.request_id, KvOp::Batch(ops)).await?;
            Ok(Response::new(pb::BatchResponse { header: Self::written_header(p, &w) }))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"ab"), b"ac");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"");
    }

    #[test]
    fn scan_bounds_reject_mixed_or_inverted_ranges() {
        let mut r = pb::ScanRequest { prefix: b"p".to_vec(), start: b"a".to_vec(), ..Default::default() };
        assert!(matches!(scan_bounds(&r), Err(NodeError::InvalidArgument { field: "prefix", .. })));
        r.prefix.clear();
        r.end = b"a".to_vec();
        assert!(matches!(scan_bounds(&r), Err(NodeError::InvalidArgument { field: "end", .. })));
        assert!(matches!(effective_limit(MAX_SCAN_LIMIT + 1), Err(NodeError::InvalidArgument { field: "limit", .. })));
        assert_eq!(effective_limit(0).unwrap(), DEFAULT_SCAN_LIMIT);
    }

    #[test]
    fn an_acknowledgement_mark_must_be_at_or_below_the_seq_and_near_it() {
        let r = |seq, first_unacked| pb::RequestId { client_id: 1, seq, first_unacked };
        assert!(request_id(r(5, 0)).is_ok(), "older clients send no mark");
        assert!(request_id(r(5, 5)).is_ok());
        let e = request_id(r(5, 6)).unwrap_err();
        assert!(matches!(e, NodeError::InvalidArgument { field: "request_id.first_unacked", .. }), "{e}");
        let e = request_id(r(MAX_UNACKED + 2, 1)).unwrap_err();
        assert!(e.to_string().contains(&format!("at most {MAX_UNACKED}")), "{e}");
    }
}
