use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("history line {line}: {message}")]
    History { line: usize, message: String },
}

impl ChaosError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> ChaosError {
        let what = what.into();
        move |source| ChaosError::Io { what, source }
    }
}
