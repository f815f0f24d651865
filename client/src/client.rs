//! The Keyraft client: routes each request to the partition's leader (when
//! known), retries transparently on leader changes with bounded backoff, tags
//! writes with request ids so a retry is applied once, and keeps session
//! tokens for read-your-writes.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyraft_api::limits::MAX_MESSAGE_BYTES;
use keyraft_api::pb::admin_client::AdminClient;
use keyraft_api::pb::kv_client::KvClient;
use keyraft_api::pb::{self, batch_op};
use keyraft_api::tls::{FlagNames, TlsConnector, TlsFiles, TlsState};
use keyraft_api::{partition_for_key, ConsistencyLevel, SessionToken, LEADER_HINT_HEADER};
use std::path::PathBuf;
use tokio::sync::OnceCell;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::ClientError;

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Node addresses (host:port) to start from.
    pub endpoints: Vec<String>,
    /// How long one operation may take, retries included.
    pub timeout: Duration,
    /// How long one attempt may take before the next node is tried: a node
    /// that hangs (stopped, cut off) must not use up the whole timeout.
    pub attempt_timeout: Duration,
    /// Send requests straight to the leader a node named, even if it is not
    /// among `endpoints`.
    pub follow_leader_hints: bool,
    /// TLS settings; `None` dials plaintext (nodes run with
    /// `--insecure-plaintext`).
    pub tls: Option<TlsOptions>,
    /// Bearer token sent with every call this client makes (`authorization:
    /// Bearer`); needs `tls`. Raw clients from [`Client::admin`] carry it only
    /// on requests built with [`Client::request`].
    pub token: Option<String>,
}

/// Where the client's TLS files are.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM bundle of the cluster's CA; the nodes' certificates must chain to it.
    pub ca: PathBuf,
    /// PEM client certificate (URI SAN `keyraft-role:admin` or
    /// `keyraft-role:client`) and its key; without them, authenticate with a
    /// token.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientOptions {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            timeout: Duration::from_secs(15),
            attempt_timeout: Duration::from_secs(4),
            follow_leader_hints: true,
            tls: None,
            token: None,
        }
    }
}

/// Counters a caller can report (retries are what a user sees as latency).
#[derive(Debug, Default)]
pub struct ClientStats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
}

/// What a write returns.
#[derive(Debug, Clone)]
pub struct WriteInfo {
    pub partition: u32,
    pub index: u64,
    pub served_by: u64,
}

/// A handle to a cluster; cheap to clone and safe to share between tasks.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    opts: ClientOptions,
    tls: Option<TlsConnector>,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    channels: Mutex<HashMap<String, Channel>>,
    partitions: OnceCell<u32>,
    leaders: Mutex<HashMap<u32, String>>,
    sessions: Mutex<HashMap<u32, u64>>,
    client_id: u64,
    seq: AtomicU64,
    /// Seqs of the writes awaiting an answer.
    in_flight: Mutex<BTreeSet<u64>>,
    next_endpoint: AtomicUsize,
    /// Addresses that recently gave no answer in time, and since when: a
    /// stopped or cut-off node is skipped (leader hints included) for a while.
    silent: Mutex<HashMap<String, Instant>>,
    stats: ClientStats,
}

/// A write awaiting its answer; dropped once answered, failed or abandoned.
struct Pending {
    inner: Arc<Inner>,
    seq: u64,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.inner.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.seq);
    }
}

/// How long an address that gave no answer in time is passed over.
const SILENT_FOR: Duration = Duration::from_secs(5);

/// A status's message with its causes (a transport error's reason is in
/// its source chain).
fn chain_text(s: &Status) -> String {
    let mut text = s.message().to_string();
    let mut src = std::error::Error::source(s);
    while let Some(e) = src {
        let m = e.to_string();
        if !text.contains(&m) {
            text = format!("{text}: {m}");
        }
        src = e.source();
    }
    text
}

/// Whether a failure is a TLS refusal by either side.
fn is_tls_refusal(s: &Status) -> bool {
    keyraft_api::tls::is_refusal(&chain_text(s))
}

/// Whether a failed attempt may succeed on another try or node.
fn retryable(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
            | Code::FailedPrecondition
    )
}

impl Client {
    pub fn new(opts: ClientOptions) -> Result<Client, ClientError> {
        Self::build(opts, None)
    }

    /// A client presenting the identity of an already built TLS connector
    /// (a program that holds its certificate in memory, not in files);
    /// `opts.tls` is ignored.
    pub fn with_connector(mut opts: ClientOptions, connector: TlsConnector) -> Result<Client, ClientError> {
        opts.tls = Some(TlsOptions::default());
        Self::build(opts, Some(connector))
    }

    fn build(opts: ClientOptions, connector: Option<TlsConnector>) -> Result<Client, ClientError> {
        let mut opts = opts;
        if opts.endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        for e in &mut opts.endpoints {
            if let Some(rest) = e.strip_prefix("https://") {
                if opts.tls.is_none() {
                    return Err(ClientError::Tls(format!(
                        "endpoint {e} asks for TLS: pass --ca (KEYRAFT_CA) with the cluster's CA bundle"
                    )));
                }
                *e = rest.to_string();
            } else if let Some(rest) = e.strip_prefix("http://") {
                if opts.tls.is_some() {
                    return Err(ClientError::Tls(format!("endpoint {e} asks for plaintext, but --ca turns TLS on")));
                }
                *e = rest.to_string();
            }
            Endpoint::from_shared(format!("http://{e}"))
                .map_err(|err| ClientError::BadEndpoint(e.clone(), err.to_string()))?;
        }
        let tls = match (&opts.tls, connector) {
            (_, Some(c)) => Some(c),
            (None, None) => None,
            (Some(t), None) => {
                let state = TlsState::load(TlsFiles {
                    ca: t.ca.clone(),
                    cert: t.cert.clone(),
                    key: t.key.clone(),
                    flags: FlagNames { ca: "--ca", cert: "--cert", key: "--key" },
                    require_member: None,
                })
                .map_err(|e| ClientError::Tls(e.to_string()))?;
                Some(TlsConnector::new(&state).map_err(|e| ClientError::Tls(e.to_string()))?)
            }
        };
        let token = match &opts.token {
            None => None,
            Some(_) if tls.is_none() => {
                return Err(ClientError::Tls("a bearer token is only sent over TLS: pass --ca as well".into()))
            }
            Some(t) => Some(
                format!("Bearer {}", t.trim())
                    .parse()
                    .map_err(|_| ClientError::Tls("the token holds characters not allowed in a header".into()))?,
            ),
        };
        Ok(Client {
            inner: Arc::new(Inner {
                tls,
                token,
                opts,
                channels: Mutex::new(HashMap::new()),
                partitions: OnceCell::new(),
                leaders: Mutex::new(HashMap::new()),
                sessions: Mutex::new(HashMap::new()),
                client_id: rand::random::<u64>() | 1,
                seq: AtomicU64::new(1),
                in_flight: Mutex::new(BTreeSet::new()),
                next_endpoint: AtomicUsize::new(rand::random::<u32>() as usize),
                silent: Mutex::new(HashMap::new()),
                stats: ClientStats::default(),
            }),
        })
    }

    pub fn connect(endpoints: &[&str]) -> Result<Client, ClientError> {
        Self::new(ClientOptions::new(endpoints.iter().map(|s| s.to_string()).collect()))
    }

    pub fn stats(&self) -> &ClientStats {
        &self.inner.stats
    }

    pub fn endpoints(&self) -> &[String] {
        &self.inner.opts.endpoints
    }

    fn channel(&self, addr: &str) -> Result<Channel, ClientError> {
        let mut map = self.inner.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let scheme = if self.inner.tls.is_some() { "https" } else { "http" };
        let ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| ClientError::BadEndpoint(addr.into(), e.to_string()))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let ch = match &self.inner.tls {
            Some(tls) => ep.connect_with_connector_lazy(tls.clone()),
            None => ep.connect_lazy(),
        };
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    fn kv(&self, addr: &str) -> Result<KvClient<Channel>, ClientError> {
        Ok(KvClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// `msg` as a request carrying this client's bearer token, if any.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.inner.token {
            r.metadata_mut().insert(keyraft_api::tls::AUTHORIZATION_HEADER, t.clone());
        }
        r
    }

    /// An admin client for one node (it presents the client certificate;
    /// build requests with [`Client::request`] to send the token too).
    pub fn admin(&self, addr: &str) -> Result<AdminClient<Channel>, ClientError> {
        Ok(AdminClient::new(self.channel(addr)?))
    }

    fn is_silent(&self, addr: &str) -> bool {
        let silent = self.inner.silent.lock().unwrap_or_else(|e| e.into_inner());
        silent.get(addr).is_some_and(|since| since.elapsed() < SILENT_FOR)
    }

    /// The next endpoint in turn, passing over those that were silent lately
    /// (all silent: the next one anyway).
    fn rotate_endpoint(&self) -> String {
        let eps = &self.inner.opts.endpoints;
        let start = self.inner.next_endpoint.fetch_add(1, Ordering::Relaxed);
        (0..eps.len())
            .map(|i| &eps[(start + i) % eps.len()])
            .find(|e| !self.is_silent(e))
            .unwrap_or(&eps[start % eps.len()])
            .clone()
    }

    /// Runs `attempt` against a node until it succeeds, fails for good, or
    /// the timeout passes. `partition` selects the cached leader.
    async fn with_retries<T, F, Fut>(
        &self,
        partition: Option<u32>,
        prefer_leader: bool,
        mut attempt: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.inner.stats.requests.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let mut backoff = Duration::from_millis(10);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let cached = partition
                .filter(|_| prefer_leader && self.inner.opts.follow_leader_hints)
                .and_then(|p| self.inner.leaders.lock().unwrap_or_else(|e| e.into_inner()).get(&p).cloned())
                .filter(|addr| !self.is_silent(addr));
            let target = cached.unwrap_or_else(|| self.rotate_endpoint());
            let remaining =
                self.inner.opts.timeout.saturating_sub(start.elapsed()).min(self.inner.opts.attempt_timeout);
            let res = match tokio::time::timeout(remaining.max(Duration::from_millis(1)), attempt(target.clone())).await
            {
                Ok(r) => r,
                Err(_) => {
                    self.inner.silent.lock().unwrap_or_else(|e| e.into_inner()).insert(target.clone(), Instant::now());
                    Err(Status::deadline_exceeded(format!("no answer from {target} in time")))
                }
            };
            match res {
                Ok(resp) => {
                    self.inner.silent.lock().unwrap_or_else(|e| e.into_inner()).remove(&target);
                    return Ok(resp.into_inner());
                }
                // A handshake every node refuses (unknown CA, expired or
                // missing certificate) will not pass on a retry.
                Err(s) if is_tls_refusal(&s) && attempts as usize >= self.inner.opts.endpoints.len() => {
                    return Err(ClientError::Rejected { code: Code::Unauthenticated, message: self.describe(&s) })
                }
                Err(s) if retryable(&s) && start.elapsed() < self.inner.opts.timeout => {
                    self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
                    if let Some(p) = partition {
                        let mut leaders = self.inner.leaders.lock().unwrap_or_else(|e| e.into_inner());
                        match s.metadata().get(LEADER_HINT_HEADER).and_then(|v| v.to_str().ok()) {
                            Some(hint) if self.inner.opts.follow_leader_hints && !self.is_silent(hint) => {
                                leaders.insert(p, hint.to_string());
                                continue;
                            }
                            _ => {
                                leaders.remove(&p);
                            }
                        }
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Err(s) if retryable(&s) => {
                    return Err(ClientError::Unavailable {
                        attempts,
                        elapsed: start.elapsed(),
                        last: self.describe(&s),
                    })
                }
                Err(s) => return Err(ClientError::Rejected { code: s.code(), message: self.describe(&s) }),
            }
        }
    }

    /// A status's message with its causes and what they mean, plus a hint
    /// when plaintext met a TLS node.
    fn describe(&self, s: &Status) -> String {
        let mut text = chain_text(s);
        if let Some(hint) = keyraft_api::tls::explain(&text).filter(|_| !text.contains(" (")) {
            text = format!("{text} ({hint})");
        }
        let transport = matches!(s.code(), Code::Unavailable | Code::Unknown | Code::Internal)
            || text.contains("h2 protocol error")
            || text.contains("transport error");
        if self.inner.tls.is_none() && transport && !text.contains("refused") {
            text.push_str(" (if the nodes run TLS, pass --ca with the cluster's CA, and --cert/--key or --token-file)");
        }
        text
    }

    /// The cluster's partition count, learned once from any node.
    pub async fn partitions(&self) -> Result<u32, ClientError> {
        self.inner
            .partitions
            .get_or_try_init(|| async {
                let status = self.cluster_status().await?;
                status.cluster.map(|c| c.partitions).ok_or_else(|| ClientError::Rejected {
                    code: Code::FailedPrecondition,
                    message: "the node has not joined a cluster yet".into(),
                })
            })
            .await
            .copied()
    }

    /// Admin.Status of any reachable node that has joined the cluster.
    pub async fn cluster_status(&self) -> Result<pb::StatusResponse, ClientError> {
        self.with_retries(None, false, |addr| {
            let this = self.clone();
            async move {
                let mut c = this.admin(&addr).map_err(|e| Status::invalid_argument(e.to_string()))?;
                let r = c.status(this.request(pb::StatusRequest {})).await?;
                if r.get_ref().cluster.is_none() {
                    return Err(Status::failed_precondition(format!("node {addr} has not joined a cluster yet")));
                }
                Ok(r)
            }
        })
        .await
    }

    fn learn(&self, header: &Option<pb::ResponseHeader>, leader: bool) {
        let Some(h) = header else { return };
        if leader && !h.served_by_addr.is_empty() {
            self.inner.leaders.lock().unwrap_or_else(|e| e.into_inner()).insert(h.partition, h.served_by_addr.clone());
        }
        if let Ok(t) = h.session_token.parse::<SessionToken>() {
            let mut s = self.inner.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let e = s.entry(t.partition).or_insert(0);
            *e = (*e).max(t.index);
        }
    }

    fn write_info(header: &Option<pb::ResponseHeader>) -> WriteInfo {
        let h = header.clone().unwrap_or_default();
        let index = h.session_token.parse::<SessionToken>().map_or(0, |t| t.index);
        WriteInfo { partition: h.partition, index, served_by: h.served_by }
    }

    /// A new request id, with the lowest seq still awaiting an answer (this
    /// one included), so the cluster can forget the results of the others.
    /// The write counts as awaiting its answer until the guard is dropped.
    fn request_id(&self) -> (Option<pb::RequestId>, Pending) {
        let mut in_flight = self.inner.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        // Taken under the lock: a seq is never below a mark already sent.
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        in_flight.insert(seq);
        let first_unacked = in_flight.first().copied().unwrap_or(seq);
        (
            Some(pb::RequestId { client_id: self.inner.client_id, seq, first_unacked }),
            Pending { inner: self.inner.clone(), seq },
        )
    }

    async fn partition_of(&self, key: &[u8]) -> Result<u32, ClientError> {
        if key.is_empty() {
            return Err(ClientError::Rejected {
                code: Code::InvalidArgument,
                message: "key: must not be empty".into(),
            });
        }
        Ok(partition_for_key(key, self.partitions().await?))
    }

    /// Sends `req` with `call` to a node, with the retry and routing rules
    /// of [`Client::with_retries`].
    async fn kv_call<Req, Resp, F, Fut>(
        &self,
        partition: Option<u32>,
        prefer_leader: bool,
        req: &Req,
        call: F,
    ) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(KvClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.with_retries(partition, prefer_leader, |addr| {
            let kv = self.kv(&addr).map_err(|e| Status::invalid_argument(e.to_string()));
            let fut = kv.map(|c| call(c, self.request(req.clone())));
            async move { fut?.await }
        })
        .await
    }

    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<WriteInfo, ClientError> {
        let (request_id, _pending) = self.request_id();
        let req = pb::PutRequest { key: key.into(), value: value.into(), request_id };
        let p = self.partition_of(&req.key).await?;
        let resp = self.kv_call(Some(p), true, &req, |mut c, r| async move { c.put(r).await }).await?;
        self.learn(&resp.header, true);
        Ok(Self::write_info(&resp.header))
    }

    /// Reads `key`; `None` level means the cluster default.
    pub async fn get(
        &self,
        key: impl Into<Vec<u8>>,
        level: Option<ConsistencyLevel>,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        let key = key.into();
        let p = self.partition_of(&key).await?;
        let token = match level {
            Some(ConsistencyLevel::Session) | None => self
                .inner
                .sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&p)
                .map(|i| SessionToken { partition: p, index: *i }.to_string())
                .unwrap_or_default(),
            _ => String::new(),
        };
        let req = pb::GetRequest {
            key,
            consistency: level.map_or(pb::Consistency::Unspecified, |l| l.to_wire()) as i32,
            session_token: token,
        };
        let to_leader = matches!(level, Some(ConsistencyLevel::Linearizable) | None);
        let resp = self.kv_call(Some(p), to_leader, &req, |mut c, r| async move { c.get(r).await }).await?;
        self.learn(&resp.header, false);
        Ok(resp.found.then_some(resp.value))
    }

    /// Reads `key` from one specific node, with no retries or rerouting:
    /// for tests and tools that need to know who answered.
    pub async fn get_from(
        &self,
        addr: &str,
        key: impl Into<Vec<u8>>,
        level: ConsistencyLevel,
        token: &str,
    ) -> Result<pb::GetResponse, Status> {
        let req = pb::GetRequest { key: key.into(), consistency: level.to_wire() as i32, session_token: token.into() };
        self.kv(addr)
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .get(self.request(req))
            .await
            .map(|r| r.into_inner())
    }

    /// A raw Kv client for one node (for tools and tests).
    pub fn kv_client(&self, addr: &str) -> Result<KvClient<Channel>, ClientError> {
        self.kv(addr)
    }

    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<bool, ClientError> {
        let (request_id, _pending) = self.request_id();
        let req = pb::DeleteRequest { key: key.into(), request_id };
        let p = self.partition_of(&req.key).await?;
        let resp = self.kv_call(Some(p), true, &req, |mut c, r| async move { c.delete(r).await }).await?;
        self.learn(&resp.header, true);
        Ok(resp.existed)
    }

    /// Sets `key` to `new` (deletes on `None`) if it currently holds
    /// `expected` (`None`: absent). Returns whether it did, and the value
    /// found when it did not.
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Vec<u8>>,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<(bool, Option<Vec<u8>>), ClientError> {
        let (request_id, _pending) = self.request_id();
        let req = pb::CompareAndSwapRequest { key: key.into(), expected, new_value: new, request_id };
        let p = self.partition_of(&req.key).await?;
        let resp = self.kv_call(Some(p), true, &req, |mut c, r| async move { c.compare_and_swap(r).await }).await?;
        self.learn(&resp.header, true);
        Ok((resp.succeeded, resp.current))
    }

    /// Applies puts (`Some`) and deletes (`None`) atomically; all keys must be
    /// in one partition.
    pub async fn batch(&self, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<WriteInfo, ClientError> {
        let first = ops.first().map(|(k, _)| k.clone()).unwrap_or_default();
        let p = self.partition_of(&first).await?;
        let (request_id, _pending) = self.request_id();
        let req = pb::BatchRequest {
            ops: ops
                .into_iter()
                .map(|(k, v)| pb::BatchOp {
                    op: Some(match v {
                        Some(value) => batch_op::Op::Put(pb::KeyValue { key: k, value }),
                        None => batch_op::Op::Delete(k),
                    }),
                })
                .collect(),
            request_id,
        };
        let resp = self.kv_call(Some(p), true, &req, |mut c, r| async move { c.batch(r).await }).await?;
        self.learn(&resp.header, true);
        Ok(Self::write_info(&resp.header))
    }

    /// One page of a scan (see `ScanRequest`); `more` says whether to go on
    /// from the last key.
    pub async fn scan_page(&self, req: pb::ScanRequest) -> Result<pb::ScanResponse, ClientError> {
        self.kv_call(req.partition, false, &req, |mut c, r| async move { c.scan(r).await }).await
    }

    /// Every key with `prefix`, in order, following pages.
    pub async fn scan_prefix(
        &self,
        prefix: &[u8],
        level: Option<ConsistencyLevel>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ClientError> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let end = {
            let mut e = prefix.to_vec();
            loop {
                match e.pop() {
                    Some(b) if b < 0xff => {
                        e.push(b + 1);
                        break e;
                    }
                    Some(_) => continue,
                    None => break Vec::new(),
                }
            }
        };
        let mut start = prefix.to_vec();
        loop {
            let page = self
                .scan_page(pb::ScanRequest {
                    start: start.clone(),
                    end: end.clone(),
                    limit: 1000,
                    consistency: level.map_or(pb::Consistency::Unspecified, |l| l.to_wire()) as i32,
                    ..Default::default()
                })
                .await?;
            let more = page.more;
            for kv in page.items {
                if out.last().is_none_or(|(k, _)| *k < kv.key) {
                    out.push((kv.key, kv.value));
                }
            }
            match (more, out.last()) {
                (true, Some((k, _))) => {
                    start = k.clone();
                    start.push(0);
                }
                _ => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_endpoint_that_gave_no_answer_is_passed_over_for_a_while() {
        let c = Client::new(ClientOptions::new(vec!["a:1".into(), "b:1".into(), "c:1".into()])).unwrap();
        c.inner.silent.lock().unwrap().insert("b:1".into(), Instant::now());
        let picked: Vec<String> = (0..9).map(|_| c.rotate_endpoint()).collect();
        assert!(!picked.iter().any(|e| e == "b:1"), "{picked:?}");
        assert!(picked.iter().any(|e| e == "a:1") && picked.iter().any(|e| e == "c:1"), "{picked:?}");
        // Once the while is over it is tried again.
        c.inner.silent.lock().unwrap().insert("b:1".into(), Instant::now() - SILENT_FOR);
        assert!((0..9).map(|_| c.rotate_endpoint()).any(|e| e == "b:1"));
    }
}
