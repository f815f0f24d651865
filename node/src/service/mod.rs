//! The gRPC services a node serves.

pub mod admin;
pub mod backup;
pub mod kv;
pub mod raft;

use std::future::Future;
use std::time::Instant;

use tonic::Status;

use crate::node::Node;

/// Runs a request handler, recording its latency and error code.
pub(crate) async fn observe<T, F>(node: &Node, method: &'static str, f: F) -> Result<T, Status>
where
    F: Future<Output = Result<T, Status>>,
{
    observe_at(node, method, "", f).await
}

/// [`observe`] for a read, labelled with its consistency level (the
/// cluster default when the request names none or an invalid one).
pub(crate) async fn observe_read<T, F>(node: &Node, method: &'static str, consistency: i32, f: F) -> Result<T, Status>
where
    F: Future<Output = Result<T, Status>>,
{
    let level =
        keyraft_api::ConsistencyLevel::from_wire(consistency).ok().flatten().unwrap_or_else(|| node.default_read());
    observe_at(node, method, level.as_str(), f).await
}

async fn observe_at<T, F>(node: &Node, method: &'static str, consistency: &str, f: F) -> Result<T, Status>
where
    F: Future<Output = Result<T, Status>>,
{
    let start = Instant::now();
    let res = f.await;
    node.metrics.request_seconds.with_label_values(&[method, consistency]).observe(start.elapsed().as_secs_f64());
    if let Err(s) = &res {
        node.metrics.request_errors.with_label_values(&[method, &format!("{:?}", s.code())]).inc();
    }
    res
}
