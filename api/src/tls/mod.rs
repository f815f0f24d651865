//! TLS shared by nodes and clients (feature `tls`): PEM files loaded into
//! rustls and reloaded in place when they change, the identities
//! certificates carry ([`identity`]), a TLS acceptor for the node's gRPC
//! listener and a connector for tonic channels. `certgen` issues throwaway
//! CAs and certificates with `rcgen`.

#[cfg(feature = "certgen")]
pub mod certgen;
pub mod identity;
mod net;
mod state;

use std::path::PathBuf;

pub use identity::{
    cert_info, cert_info_pem, fingerprint, fingerprints_pem, signed_by, CertInfo, Principal, Role, MEMBER_URI_PREFIX,
    ROLE_URI_PREFIX,
};
pub use net::{tls_incoming, PeerConn, TlsConn, TlsConnector};
pub use state::{provider, Fingerprints, FlagNames, TlsFiles, TlsState};

/// gRPC metadata key carrying a bearer token: `authorization: Bearer <token>`.
pub const AUTHORIZATION_HEADER: &str = "authorization";

/// How a refused TLS handshake is reported by [`TlsConnector`] (callers
/// look for it in an error's causes).
pub const HANDSHAKE_FAILED: &str = "TLS handshake failed";

/// Whether an error text (with its causes) reports a TLS refusal by either
/// side: a handshake this side gave up on, or an alert the other side sent
/// (with TLS 1.3 a refused client certificate surfaces as an alert on the
/// first read, after the handshake seemed done). Retrying will not help.
pub fn is_refusal(text: &str) -> bool {
    text.contains(HANDSHAKE_FAILED) || text.contains("received fatal alert")
}

/// What a TLS error text means for a person, if it is a known one.
pub fn explain(text: &str) -> Option<&'static str> {
    let has = |s: &str| text.contains(s);
    if has("CertificateExpired") || has("expired") {
        Some("a certificate has expired: renew it")
    } else if has("UnknownIssuer") || has("UnknownCA") {
        Some("the certificate is not signed by the CA the other side trusts")
    } else if has("CertificateRequired") || has("BadCertificate") {
        Some("the other side refused this side's certificate")
    } else if has("InvalidContentType") || has("corrupt message") || has("InvalidMessage") {
        Some("is the other side speaking plaintext? TLS needs both sides")
    } else if has("NotValidForName") {
        Some("the server certificate does not name the address dialled")
    } else {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag} {}: cannot read: {source}", path.display())]
    Read { flag: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{flag} {}: {what}", path.display())]
    Invalid { flag: &'static str, path: PathBuf, what: String },
    #[error("{0}")]
    Config(String),
}
