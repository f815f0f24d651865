//! Who may call what on the gRPC port.
//!
//! Every call is authenticated by the TLS client certificate (the
//! conventions of `keyraft_api::tls::identity`) or, without one, by a
//! bearer token from `--tokens-file`. Then the method decides:
//! - `Raft/*`: members only (and a Raft message's sender must be the member
//!   the certificate names, see `service::raft`);
//! - `Kv/*` and the read-only `Admin/Status|Health|Identify`: any identity
//!   (the client library routes with Status);
//! - `Admin/Join|Bootstrap|Campaign`: admin or member (peers call them);
//! - every other Admin call: admin.
//!
//! With `--insecure-plaintext` nothing is checked.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use keyraft_api::tls::{PeerConn, Principal, Role, AUTHORIZATION_HEADER, MEMBER_URI_PREFIX, ROLE_URI_PREFIX};
use subtle::ConstantTimeEq;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::Status;

/// The authenticated caller of a request, in its extensions (absent with
/// `--insecure-plaintext`).
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

/// What a method requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A member (node) certificate.
    Member,
    /// Any authenticated identity.
    Anyone,
    /// An admin identity or a member.
    AdminOrMember,
    /// An admin identity.
    Admin,
}

/// The requirement of a gRPC method path (`/keyraft.v1.Admin/Join`).
pub fn need(path: &str) -> Need {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    match (service, method) {
        ("keyraft.v1.Raft", _) => Need::Member,
        ("keyraft.v1.Kv", _) => Need::Anyone,
        ("keyraft.v1.Admin", "Status" | "Health" | "Identify") => Need::Anyone,
        ("keyraft.v1.Admin", "Join" | "Bootstrap" | "Campaign") => Need::AdminOrMember,
        _ => Need::Admin,
    }
}

fn allowed(need: Need, p: &Principal) -> bool {
    matches!(
        (need, p),
        (Need::Anyone, _)
            | (Need::Member | Need::AdminOrMember, Principal::Member(_))
            | (Need::AdminOrMember | Need::Admin, Principal::User { role: Role::Admin, .. })
    )
}

fn needed_text(need: Need) -> String {
    let admin = format!("an admin identity (certificate URI SAN {ROLE_URI_PREFIX}admin, or an admin token)");
    match need {
        Need::Member => format!("a cluster member's certificate (URI SAN {MEMBER_URI_PREFIX}<name>)"),
        Need::Anyone => "any identity".into(),
        Need::AdminOrMember => format!("{admin} or a cluster member's certificate"),
        Need::Admin => admin,
    }
}

/// Known tokens and whom each stands for.
type TokenTable = Vec<(Vec<u8>, Principal)>;

/// Bearer tokens from `--tokens-file`, reloaded when the file changes.
pub struct Tokens {
    path: PathBuf,
    /// The file's bytes (to notice a change) and the tokens they hold.
    state: RwLock<(Vec<u8>, TokenTable)>,
}

impl Tokens {
    pub fn load(path: PathBuf) -> Result<Arc<Tokens>, String> {
        let bytes = std::fs::read(&path).map_err(|e| format!("--tokens-file {}: cannot read: {e}", path.display()))?;
        let parsed = parse_tokens(&bytes).map_err(|e| format!("--tokens-file {}: {e}", path.display()))?;
        Ok(Arc::new(Tokens { path, state: RwLock::new((bytes, parsed)) }))
    }

    /// The principal a token stands for. Every known token is compared in
    /// constant time, so timing does not reveal how much of one matched.
    fn principal(&self, token: &[u8]) -> Option<Principal> {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        let mut found = None;
        for (t, p) in &st.1 {
            if bool::from(t.as_slice().ct_eq(token)) {
                found = Some(p.clone());
            }
        }
        found
    }

    /// Polls the file every `every`; a file that no longer parses keeps the
    /// previous tokens (and is reported once).
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut failed: Vec<u8> = Vec::new();
            loop {
                tokio::time::sleep(every).await;
                let Ok(bytes) = std::fs::read(&me.path) else { continue };
                if bytes == me.state.read().unwrap_or_else(|e| e.into_inner()).0 || bytes == failed {
                    continue;
                }
                match parse_tokens(&bytes) {
                    Ok(t) => {
                        tracing::info!(tokens = t.len(), "bearer tokens reloaded");
                        *me.state.write().unwrap_or_else(|e| e.into_inner()) = (bytes, t);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, path = %me.path.display(), "tokens file changed but does not parse; keeping the previous tokens");
                        failed = bytes;
                    }
                }
            }
        });
    }
}

/// `ROLE NAME TOKEN` per line; blank lines and `#` comments are skipped.
fn parse_tokens(bytes: &[u8]) -> Result<TokenTable, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    let mut out = Vec::new();
    let mut seen = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let [role, name, token] = f[..] else {
            return Err(format!("line {}: expected `ROLE NAME TOKEN`, got {} fields", i + 1, f.len()));
        };
        let role = Role::parse(role).ok_or_else(|| format!("line {}: role {role:?} is not admin or client", i + 1))?;
        if token.len() < 16 {
            return Err(format!("line {}: token of {name:?} is {} characters; use at least 16", i + 1, token.len()));
        }
        if let Some(prev) = seen.insert(token, i + 1) {
            return Err(format!("line {}: same token as line {prev}", i + 1));
        }
        out.push((token.as_bytes().to_vec(), Principal::User { role, who: name.to_string() }));
    }
    Ok(out)
}

/// The authentication and authorisation of the gRPC port.
pub struct Auth {
    pub tokens: Option<Arc<Tokens>>,
}

impl Auth {
    /// The caller of a request, or `Unauthenticated` saying what was missing.
    fn authenticate(&self, req: &http::Request<Body>) -> Result<Principal, Status> {
        let conn = req.extensions().get::<PeerConn>();
        if let Some(p) = conn.and_then(|c| c.principal.clone()) {
            return Ok(p);
        }
        let bearer = req
            .headers()
            .get(AUTHORIZATION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        if let Some(token) = bearer {
            return match self.tokens.as_ref().and_then(|t| t.principal(token.trim().as_bytes())) {
                Some(p) => Ok(p),
                None if self.tokens.is_none() => {
                    Err(Status::unauthenticated("bearer token given, but this node accepts none (no --tokens-file)"))
                }
                None => Err(Status::unauthenticated("bearer token not recognised (not in the node's --tokens-file)")),
            };
        }
        let why = conn.and_then(|c| c.unusable_cert.clone()).map(|w| format!(" ({w})")).unwrap_or_default();
        Err(Status::unauthenticated(format!(
            "no identity: present a client certificate signed by the cluster CA with URI SAN \
             {ROLE_URI_PREFIX}admin|client, or a bearer token{why}"
        )))
    }

    /// Authenticates and authorises one call.
    pub fn check(&self, req: &http::Request<Body>) -> Result<Principal, Status> {
        let path = req.uri().path();
        let p = self.authenticate(req)?;
        let need = need(path);
        if !allowed(need, &p) {
            return Err(Status::permission_denied(format!("{path} needs {}; the caller is {p}", needed_text(need))));
        }
        Ok(p)
    }
}

/// Wraps a generated gRPC service with [`Auth::check`]; the caller lands in
/// the request's extensions as [`Caller`].
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    auth: Option<Arc<Auth>>,
}

impl<S> Guard<S> {
    pub fn new(inner: S, auth: Option<Arc<Auth>>) -> Self {
        Guard { inner, auth }
    }
}

impl<S: NamedService> NamedService for Guard<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower_service::Service<http::Request<Body>> for Guard<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        if let Some(auth) = &self.auth {
            match auth.check(&req) {
                Ok(p) => {
                    req.extensions_mut().insert(Caller(p));
                }
                Err(status) => {
                    tracing::debug!(path = %req.uri().path(), error = %status.message(), "call refused");
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            }
        }
        // The ready service answers this call; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { inner.call(req).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_map_to_requirements() {
        assert_eq!(need("/keyraft.v1.Raft/AppendEntries"), Need::Member);
        assert_eq!(need("/keyraft.v1.Kv/Put"), Need::Anyone);
        assert_eq!(need("/keyraft.v1.Admin/Status"), Need::Anyone);
        assert_eq!(need("/keyraft.v1.Admin/Join"), Need::AdminOrMember);
        assert_eq!(need("/keyraft.v1.Admin/SetMemberState"), Need::Admin);
        assert_eq!(need("/something.Else/X"), Need::Admin);
        let client = Principal::User { role: Role::Client, who: "app".into() };
        let admin = Principal::User { role: Role::Admin, who: "ops".into() };
        let member = Principal::Member("n0".into());
        assert!(allowed(Need::Anyone, &client));
        assert!(!allowed(Need::Admin, &client) && !allowed(Need::AdminOrMember, &client));
        assert!(!allowed(Need::Member, &admin) && allowed(Need::Admin, &admin));
        assert!(allowed(Need::AdminOrMember, &member) && !allowed(Need::Admin, &member));
    }

    #[test]
    fn tokens_file_is_checked_line_by_line() {
        let ok = parse_tokens(b"# comment\nadmin ops 0123456789abcdef0123\n\nclient app abcdefabcdefabcdef\n").unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].1, Principal::User { role: Role::Admin, who: "ops".into() });
        assert!(parse_tokens(b"root x 0123456789abcdef0").unwrap_err().contains("line 1: role"));
        assert!(parse_tokens(b"admin x short").unwrap_err().contains("at least 16"));
        assert!(parse_tokens(b"admin x").unwrap_err().contains("ROLE NAME TOKEN"));
        assert!(parse_tokens(b"admin a 0123456789abcdef0\nclient b 0123456789abcdef0").unwrap_err().contains("line 2"));
        let t = Tokens { path: PathBuf::new(), state: RwLock::new((vec![], ok)) };
        assert!(t.principal(b"0123456789abcdef0123").is_some());
        assert!(t.principal(b"0123456789abcdef012").is_none());
    }
}
