use std::io;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("cannot parse {path}: {why}")]
    Proc { path: String, why: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: tonic::transport::Error },
    #[error("{system} is not ready: {why}")]
    NotReady { system: &'static str, why: String },
    #[error("{system}: expected {expected} member processes, found {found}")]
    Members { system: &'static str, expected: usize, found: usize },
    #[error("preload: {failed} of {keys} writes failed")]
    Preload { failed: u64, keys: u64 },
}

impl BenchError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }
}
