//! Who a certificate (or a bearer token) speaks for.
//!
//! Conventions, carried as URI subject alternative names:
//! - `keyraft-member:<name>`: the cluster member (node) started with
//!   `--name <name>`; the same certificate serves the node's listener and
//!   authenticates its calls to peers.
//! - `keyraft-role:admin` / `keyraft-role:client`: a person or program;
//!   admin may call everything a person may, client the key-value service
//!   and the read-only Admin calls.
//!
//! The subject common name only labels the caller in messages and logs.

use std::fmt;

use x509_parser::extensions::GeneralName;

/// URI SAN prefix naming a member: `keyraft-member:node-0`.
pub const MEMBER_URI_PREFIX: &str = "keyraft-member:";
/// URI SAN prefix naming a role: `keyraft-role:admin`.
pub const ROLE_URI_PREFIX: &str = "keyraft-role:";

/// What a person or program may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Client,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "client" => Some(Role::Client),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Client => "client",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A caller, as proven by its certificate or bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// A cluster member, by its name.
    Member(String),
    /// A person or program; `who` labels it (certificate CN, token label).
    User { role: Role, who: String },
}

impl Principal {
    pub fn member_name(&self) -> Option<&str> {
        match self {
            Principal::Member(n) => Some(n),
            Principal::User { .. } => None,
        }
    }

    pub fn role(&self) -> Option<Role> {
        match self {
            Principal::Member(_) => None,
            Principal::User { role, .. } => Some(*role),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Member(n) => write!(f, "member {n:?}"),
            Principal::User { role, who } => write!(f, "{role} {who:?}"),
        }
    }
}

/// What one certificate says about its holder.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub principal: Option<Principal>,
    pub common_name: String,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
    pub not_before: i64,
}

/// Reads the identity of a DER certificate: a member SAN wins over role SANs;
/// of several roles the strongest counts. `None` when it names neither.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let common_name =
        cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or("").to_string();
    let mut members = Vec::new();
    let mut role = None;
    if let Some(san) = cert.subject_alternative_name().map_err(|e| format!("subject alternative names: {e}"))? {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                if let Some(m) = uri.strip_prefix(MEMBER_URI_PREFIX) {
                    members.push(m.to_string());
                } else if let Some(r) = uri.strip_prefix(ROLE_URI_PREFIX) {
                    let r = Role::parse(r).ok_or_else(|| format!("URI SAN {uri:?}: role must be admin or client"))?;
                    role = role.max(Some(r));
                }
            }
        }
    }
    let principal = match (members.as_slice(), role) {
        ([], None) => None,
        ([m], _) if !m.is_empty() => Some(Principal::Member(m.clone())),
        ([_], _) => return Err(format!("URI SAN {MEMBER_URI_PREFIX} names no member")),
        ([], Some(role)) => Some(Principal::User {
            role,
            who: if common_name.is_empty() { "(no common name)".into() } else { common_name.clone() },
        }),
        (many, _) => {
            return Err(format!("names {} members ({}); a member certificate names one", many.len(), many.join(", ")))
        }
    };
    let v = cert.validity();
    Ok(CertInfo { principal, common_name, not_after: v.not_after.timestamp(), not_before: v.not_before.timestamp() })
}

/// [`cert_info`] of the first certificate in a PEM text (a certificate
/// file or a Secret's `tls.crt`).
pub fn cert_info_pem(pem: &[u8]) -> Result<CertInfo, String> {
    use rustls_pki_types::pem::PemObject;
    let der =
        rustls_pki_types::CertificateDer::from_pem_slice(pem).map_err(|e| format!("not a PEM certificate: {e}"))?;
    cert_info(&der)
}

/// Whether the PEM certificate `leaf` carries a valid signature of the CA
/// certificate `ca` (PEM). Unreadable input is "no".
pub fn signed_by(leaf: &[u8], ca: &[u8]) -> bool {
    use rustls_pki_types::pem::PemObject;
    let (Ok(leaf), Ok(ca)) =
        (rustls_pki_types::CertificateDer::from_pem_slice(leaf), rustls_pki_types::CertificateDer::from_pem_slice(ca))
    else {
        return false;
    };
    let (Ok((_, leaf)), Ok((_, ca))) =
        (x509_parser::parse_x509_certificate(&leaf), x509_parser::parse_x509_certificate(&ca))
    else {
        return false;
    };
    leaf.issuer() == ca.subject() && leaf.verify_signature(Some(ca.public_key())).is_ok()
}

/// SHA-256 of a DER certificate, lowercase hex: how nodes report which CAs
/// they trust and which certificate they serve (a CA roll-over waits on it).
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der).iter().map(|b| format!("{b:02x}")).collect()
}

/// [`fingerprint`] of every certificate in a PEM bundle, in order.
pub fn fingerprints_pem(pem: &[u8]) -> Vec<String> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).map(|c| fingerprint(&c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_order() {
        assert_eq!(Role::parse("admin"), Some(Role::Admin));
        assert_eq!(Role::parse("client"), Some(Role::Client));
        assert_eq!(Role::parse("root"), None);
        assert!(Role::Admin > Role::Client);
        assert_eq!(Principal::Member("n0".into()).to_string(), "member \"n0\"");
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(cert_info(b"nope").unwrap_err().contains("X.509"));
    }
}
