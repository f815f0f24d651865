//! Throwaway certificate authorities and certificates following the
//! conventions of [`super::identity`], for `keyraft local up`, local test
//! clusters and the operator.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

use super::identity::{Role, MEMBER_URI_PREFIX, ROLE_URI_PREFIX};
use super::TlsError;

/// How long issued certificates last unless told otherwise.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

fn gen_err(what: &str, e: rcgen::Error) -> TlsError {
    TlsError::Config(format!("{what}: {e}"))
}

/// The holder a certificate is for.
#[derive(Debug, Clone)]
pub enum Holder {
    /// A member (node): `keyraft-member:<name>`, valid as server and client,
    /// for the host names and addresses it is dialled by.
    Member { name: String, hosts: Vec<String> },
    /// A person or program with a role (`keyraft-role:<role>`), labelled by
    /// its common name.
    User { role: Role, common_name: String },
}

/// A certificate and its key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// Writes `<dir>/<stem>.pem` and `<dir>/<stem>-key.pem` (the key readable
    /// by the owner only), each replaced atomically so a reader never sees
    /// half a file. Returns (cert, key) paths.
    pub fn write(&self, dir: &Path, stem: &str) -> io::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}-key.pem"));
        write_atomic(&key, self.key_pem.as_bytes(), 0o600)?;
        write_atomic(&cert, self.cert_pem.as_bytes(), 0o644)?;
        Ok((cert, key))
    }
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A certificate authority able to issue certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl Authority {
    /// A new self-signed CA named `common_name`.
    pub fn new(common_name: &str, validity: Duration) -> Result<Authority, TlsError> {
        let key = KeyPair::generate().map_err(|e| gen_err("CA key", e))?;
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, common_name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = SystemTime::now();
        p.not_before = (now - Duration::from_secs(300)).into();
        p.not_after = (now + validity).into();
        let cert = p.self_signed(&key).map_err(|e| gen_err("CA certificate", e))?;
        Ok(Authority { cert_pem: cert.pem(), issuer: Issuer::new(p, key) })
    }

    /// The CA kept in PEM files (e.g. by an earlier `keyraft local up`).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| gen_err("CA key", e))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| gen_err("CA certificate", e))?;
        Ok(Authority { issuer, cert_pem: cert_pem.to_string() })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Writes `<dir>/ca.pem` and `<dir>/ca-key.pem`.
    pub fn write(&self, dir: &Path) -> io::Result<(PathBuf, PathBuf)> {
        Issued { cert_pem: self.cert_pem.clone(), key_pem: self.key_pem() }.write(dir, "ca")
    }

    /// A certificate for `holder` valid from a few minutes ago for `validity`.
    pub fn issue(&self, holder: &Holder, validity: Duration) -> Result<Issued, TlsError> {
        let now = SystemTime::now();
        self.issue_between(holder, now - Duration::from_secs(300), now + validity)
    }

    /// A certificate for `holder` valid between the two instants (an
    /// already expired one too, for tests).
    pub fn issue_between(
        &self,
        holder: &Holder,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Issued, TlsError> {
        let key = KeyPair::generate().map_err(|e| gen_err("key", e))?;
        let mut p = CertificateParams::default();
        let uri = |s: String| SanType::URI(s.try_into().expect("URI SANs here are ASCII"));
        match holder {
            Holder::Member { name, hosts } => {
                p.distinguished_name.push(DnType::CommonName, name.as_str());
                p.subject_alt_names.push(uri(format!("{MEMBER_URI_PREFIX}{name}")));
                for h in hosts {
                    p.subject_alt_names.push(match h.parse() {
                        Ok(ip) => SanType::IpAddress(ip),
                        Err(_) => {
                            SanType::DnsName(h.clone().try_into().map_err(|e| gen_err(&format!("host {h:?}"), e))?)
                        }
                    });
                }
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
            }
            Holder::User { role, common_name } => {
                p.distinguished_name.push(DnType::CommonName, common_name.as_str());
                p.subject_alt_names.push(uri(format!("{ROLE_URI_PREFIX}{role}")));
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
        }
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.not_before = not_before.into();
        p.not_after = not_after.into();
        let cert = p.signed_by(&key, &self.issuer).map_err(|e| gen_err("certificate", e))?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{cert_info, Principal};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    #[test]
    fn issued_certificates_carry_the_identity_conventions() {
        let ca = Authority::new("test-ca", DEFAULT_VALIDITY).unwrap();
        let n = ca.issue(&Holder::Member { name: "node-1".into(), hosts: vec!["127.0.0.1".into()] }, DEFAULT_VALIDITY);
        let der = CertificateDer::from_pem_slice(n.unwrap().cert_pem.as_bytes()).unwrap();
        assert_eq!(cert_info(&der).unwrap().principal, Some(Principal::Member("node-1".into())));
        let a = ca.issue(&Holder::User { role: Role::Admin, common_name: "ops".into() }, DEFAULT_VALIDITY).unwrap();
        let der = CertificateDer::from_pem_slice(a.cert_pem.as_bytes()).unwrap();
        assert_eq!(cert_info(&der).unwrap().principal, Some(Principal::User { role: Role::Admin, who: "ops".into() }));
        let again = Authority::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert!(again.issue(&Holder::User { role: Role::Client, common_name: "app".into() }, DEFAULT_VALIDITY).is_ok());
    }

    #[test]
    fn tls_state_from_pem_in_memory_loads_and_names_its_source_on_errors() {
        use crate::tls::TlsState;
        let ca = Authority::new("test-ca", DEFAULT_VALIDITY).unwrap();
        let a = ca.issue(&Holder::User { role: Role::Admin, common_name: "op".into() }, DEFAULT_VALIDITY).unwrap();
        let st =
            TlsState::from_pem("Secret ns/x", ca.cert_pem().as_bytes(), a.cert_pem.as_bytes(), a.key_pem.as_bytes())
                .unwrap();
        assert_eq!(st.own().unwrap().principal, Some(Principal::User { role: Role::Admin, who: "op".into() }));
        assert!(!st.reload_if_changed().unwrap(), "nothing to reload in memory");
        let other = ca.issue(&Holder::User { role: Role::Client, common_name: "c".into() }, DEFAULT_VALIDITY).unwrap();
        let err = TlsState::from_pem(
            "Secret ns/x",
            ca.cert_pem().as_bytes(),
            a.cert_pem.as_bytes(),
            other.key_pem.as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("Secret ns/x") && err.contains("does not go with"), "{err}");
    }
}
