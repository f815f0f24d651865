//! Certificate files loaded into rustls, and reloaded in place when they
//! change: the certificate resolvers and verifiers below read the current
//! material on every handshake, so a rotation reaches new connections
//! without rebuilding a server or a channel, and open connections carry on.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::identity::{cert_info, CertInfo};
use super::TlsError;

/// The flags a program names its files by, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct FlagNames {
    pub ca: &'static str,
    pub cert: &'static str,
    pub key: &'static str,
}

/// Where the PEM files are: the CA bundle every peer must chain to, and
/// this side's own certificate (chain) and key, if it has one.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub flags: FlagNames,
    /// The member the certificate must name (a node's own `--name`): a
    /// certificate for anyone else is refused, at start and on reload.
    pub require_member: Option<String>,
}

/// One consistent load of the files.
struct Loaded {
    /// The bytes read, to notice a change.
    stamp: Vec<u8>,
    key: Option<Arc<CertifiedKey>>,
    own: Option<CertInfo>,
    /// SHA-256 of the trusted CAs and of this side's certificate.
    fingerprints: Fingerprints,
    server_verifier: Arc<dyn ServerCertVerifier>,
    client_verifier: Arc<dyn ClientCertVerifier>,
}

/// What a loaded TLS state trusts and presents, as SHA-256 fingerprints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprints {
    /// Every CA certificate of the trust bundle, in file order.
    pub trusted_cas: Vec<String>,
    /// This side's own (leaf) certificate.
    pub own: Option<String>,
}

/// Live TLS material; share it as `Arc<TlsState>`.
pub struct TlsState {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Loaded>>,
    /// The stamp of the last load that failed, so it is reported once.
    last_failed: RwLock<Vec<u8>>,
    last_check: std::sync::Mutex<std::time::Instant>,
    /// Built from PEM in memory ([`TlsState::from_pem`]): nothing to reload.
    in_memory: bool,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState").field("files", &self.files).finish_non_exhaustive()
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { flag, path: path.to_path_buf(), source })
}

fn invalid(flag: &'static str, path: &Path, what: impl Into<String>) -> TlsError {
    TlsError::Invalid { flag, path: path.to_path_buf(), what: what.into() }
}

/// The crypto provider used throughout (ring), named explicitly so the
/// process-wide default never has to be guessed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsFiles {
    fn stamp(&self) -> Result<Vec<u8>, TlsError> {
        let mut s = read(self.flags.ca, &self.ca)?;
        for (flag, p) in [(self.flags.cert, &self.cert), (self.flags.key, &self.key)] {
            if let Some(p) = p {
                s.push(0);
                s.extend(read(flag, p)?);
            }
        }
        Ok(s)
    }

    fn load(&self, provider: &Arc<CryptoProvider>) -> Result<Loaded, TlsError> {
        let stamp = self.stamp()?;
        let f = &self.flags;
        let ca_pem = read(f.ca, &self.ca)?;
        let own = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((read(f.cert, cert)?, read(f.key, key)?)),
            _ => None,
        };
        self.build(provider, stamp, &ca_pem, own)
    }

    /// Material from PEM bytes (read from the files, or given in memory);
    /// errors name the flags and paths.
    fn build(
        &self,
        provider: &Arc<CryptoProvider>,
        stamp: Vec<u8>,
        ca_pem: &[u8],
        own: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Loaded, TlsError> {
        let f = &self.flags;
        let mut roots = RootCertStore::empty();
        let mut fingerprints = Fingerprints::default();
        for c in CertificateDer::pem_slice_iter(ca_pem) {
            let c = c.map_err(|e| invalid(f.ca, &self.ca, format!("not PEM certificates: {e}")))?;
            fingerprints.trusted_cas.push(super::fingerprint(&c));
            roots.add(c).map_err(|e| invalid(f.ca, &self.ca, format!("not a usable CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(invalid(f.ca, &self.ca, "holds no certificate"));
        }
        let roots = Arc::new(roots);
        let (key, own) = match (&self.cert, &self.key) {
            (None, None) => (None, None),
            (Some(cert), Some(key)) => {
                let (cert_pem, key_pem) = own.unwrap_or_default();
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
                    .collect::<Result<_, _>>()
                    .map_err(|e| invalid(f.cert, cert, format!("not PEM certificates: {e}")))?;
                let leaf = chain.first().ok_or_else(|| invalid(f.cert, cert, "holds no certificate"))?;
                let info = cert_info(leaf).map_err(|e| invalid(f.cert, cert, e))?;
                fingerprints.own = Some(super::fingerprint(leaf));
                if let Some(want) = &self.require_member {
                    if info.principal.as_ref().and_then(|p| p.member_name()) != Some(want.as_str()) {
                        let has = info.principal.as_ref().map_or("no identity".to_string(), |p| p.to_string());
                        return Err(invalid(
                            f.cert,
                            cert,
                            format!("names {has}, but this node is member {want:?}: its certificate needs the URI SAN {}{want}", super::MEMBER_URI_PREFIX),
                        ));
                    }
                }
                let pk = PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|e| invalid(f.key, key, format!("no PEM private key: {e}")))?;
                let ck = CertifiedKey::from_der(chain, pk, provider)
                    .map_err(|e| invalid(f.key, key, format!("does not go with {}: {e}", cert.display())))?;
                (Some(Arc::new(ck)), Some(info))
            }
            (Some(_), None) => return Err(TlsError::Config(format!("{} needs {} as well", f.cert, f.key))),
            (None, Some(_)) => return Err(TlsError::Config(format!("{} needs {} as well", f.key, f.cert))),
        };
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| invalid(f.ca, &self.ca, e.to_string()))?;
        // A client may authenticate with a bearer token instead: the
        // certificate is optional here and required per call by the policy.
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| invalid(f.ca, &self.ca, e.to_string()))?;
        Ok(Loaded { stamp, key, own, fingerprints, server_verifier, client_verifier })
    }
}

impl TlsState {
    /// Loads the files; any problem is an error naming the flag and file.
    /// A certificate and key that do not match are read again a few times
    /// (a rotation may be between writing the two).
    pub fn load(files: TlsFiles) -> Result<Arc<TlsState>, TlsError> {
        let provider = provider();
        let mut tries = 0;
        let loaded = loop {
            match files.load(&provider) {
                Err(TlsError::Invalid { what, .. }) if what.contains("does not go with") && tries < 10 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                res => break res?,
            }
        };
        Ok(Arc::new(TlsState {
            files,
            provider,
            current: RwLock::new(Arc::new(loaded)),
            last_failed: RwLock::new(Vec::new()),
            last_check: std::sync::Mutex::new(std::time::Instant::now()),
            in_memory: false,
        }))
    }

    /// Material given as PEM (a CA bundle, a certificate chain and its key)
    /// rather than files: a program that reads its credentials from an API
    /// (the operator, from Secrets) keeps keys off disk. `label` names the
    /// source in errors; nothing is reloaded: build a new state for new PEM.
    pub fn from_pem(label: &str, ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Arc<TlsState>, TlsError> {
        let files = TlsFiles {
            ca: PathBuf::from(label),
            cert: Some(PathBuf::from(label)),
            key: Some(PathBuf::from(label)),
            flags: FlagNames { ca: "ca.crt", cert: "tls.crt", key: "tls.key" },
            require_member: None,
        };
        let provider = provider();
        let loaded = files.build(&provider, Vec::new(), ca, Some((cert.to_vec(), key.to_vec())))?;
        Ok(Arc::new(TlsState {
            files,
            provider,
            current: RwLock::new(Arc::new(loaded)),
            last_failed: RwLock::new(Vec::new()),
            last_check: std::sync::Mutex::new(std::time::Instant::now()),
            in_memory: true,
        }))
    }

    fn current(&self) -> Arc<Loaded> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The CAs trusted and the certificate presented now.
    pub fn fingerprints(&self) -> Fingerprints {
        self.current().fingerprints.clone()
    }

    /// What this side's own certificate says (None without one).
    pub fn own(&self) -> Option<CertInfo> {
        self.current().own.clone()
    }

    /// Reads the files again and, when they changed and load cleanly,
    /// switches to them. `Ok(true)` when the material changed. A failed load
    /// keeps the previous material (a rotation may be half-written).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        if self.in_memory {
            return Ok(false);
        }
        let stamp = self.files.stamp()?;
        if stamp == self.current().stamp {
            return Ok(false);
        }
        match self.files.load(&self.provider) {
            Ok(l) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(l);
                Ok(true)
            }
            Err(e) => {
                *self.last_failed.write().unwrap_or_else(|e| e.into_inner()) = stamp;
                Err(e)
            }
        }
    }

    /// [`TlsState::reload_if_changed`] unless the last check was less than
    /// `every` ago; a failed load is reported once.
    pub fn reload_if_changed_at_most_every(&self, every: Duration) -> Result<bool, TlsError> {
        if self.in_memory {
            return Ok(false);
        }
        {
            let mut last = self.last_check.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() < every {
                return Ok(false);
            }
            *last = std::time::Instant::now();
        }
        if self.files.stamp().ok() == Some(self.last_failed.read().unwrap_or_else(|e| e.into_inner()).clone()) {
            return Ok(false);
        }
        self.reload_if_changed()
    }

    /// Polls the files every `every` and switches to new material, logging
    /// each change and each failed load once. Ends with the state.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let in_memory = self.in_memory;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            if in_memory {
                return;
            }
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { return };
                let known_bad =
                    me.files.stamp().ok() == Some(me.last_failed.read().unwrap_or_else(|e| e.into_inner()).clone());
                if known_bad {
                    continue;
                }
                match me.reload_if_changed() {
                    Ok(false) => {}
                    Ok(true) => match me.own() {
                        Some(c) => tracing::info!(
                            principal = ?c.principal, not_after = c.not_after,
                            "TLS certificates reloaded; new connections use them"
                        ),
                        None => tracing::info!("TLS CA bundle reloaded; new connections use it"),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS files changed but do not load; keeping the previous ones")
                    }
                }
            }
        })
    }

    /// A server configuration whose certificate and client verification
    /// follow the reloaded files. Client certificates are optional at the
    /// handshake (tokens are the alternative); the caller's policy decides.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut cfg = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(Arc::new(Live(self.clone())))
            .with_cert_resolver(Arc::new(Live(self.clone())));
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// A client configuration: the server must chain to the CA and match
    /// the host name dialled; this side's certificate (if any) is presented.
    pub fn client_config(self: &Arc<Self>) -> Result<Arc<ClientConfig>, TlsError> {
        let mut cfg = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Live(self.clone())))
            .with_client_cert_resolver(Arc::new(Live(self.clone())));
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// Delegates every TLS decision to the material current at the handshake.
#[derive(Debug)]
struct Live(Arc<TlsState>);

impl ResolvesServerCert for Live {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current().key.clone()
    }
}

impl ResolvesClientCert for Live {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.current().key.clone()
    }

    fn has_certs(&self) -> bool {
        self.0.current().key.is_some()
    }
}

impl ServerCertVerifier for Live {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.current().server_verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().server_verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().server_verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().server_verifier.supported_verify_schemes()
    }
}

impl ClientCertVerifier for Live {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    // No hints: the reloadable root set cannot lend out a borrowed list,
    // and a client then sends the one certificate it has.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.current().client_verifier.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().client_verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().client_verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().client_verifier.supported_verify_schemes()
    }
}
