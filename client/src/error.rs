use std::time::Duration;

use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no endpoints given; pass --endpoints HOST:PORT[,HOST:PORT...] or set KEYRAFT_ENDPOINTS")]
    NoEndpoints,
    #[error("endpoint {0:?} is not a valid address: {1}")]
    BadEndpoint(String, String),
    /// TLS settings that cannot be used (unreadable files, token without TLS).
    #[error("{0}")]
    Tls(String),
    /// The cluster refused the request; retrying will not help.
    #[error("{message}")]
    Rejected { code: Code, message: String },
    /// Every attempt failed with a transient error until the timeout.
    #[error("cluster unavailable after {attempts} attempts in {elapsed:.1?}: {last}")]
    Unavailable { attempts: u32, elapsed: Duration, last: String },
}

impl ClientError {
    /// The gRPC code of a refusal, `Unavailable` for transient failures.
    pub fn code(&self) -> Code {
        match self {
            Self::Rejected { code, .. } => *code,
            Self::Unavailable { .. } => Code::Unavailable,
            Self::NoEndpoints | Self::BadEndpoint(..) | Self::Tls(_) => Code::InvalidArgument,
        }
    }
}
