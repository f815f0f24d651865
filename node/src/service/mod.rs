//! The gRPC services a node serves.

pub mod admin;
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
    let start = Instant::now();
    let res = f.await;
    node.metrics.request_seconds.with_label_values(&[method]).observe(start.elapsed().as_secs_f64());
    if let Err(s) = &res {
        node.metrics.request_errors.with_label_values(&[method, &format!("{:?}", s.code())]).inc();
    }
    res
}
