//! Certificates of a cluster (`spec.tls`): which Secrets hold them, and, in
//! mode operator, what to issue or renew. Pure: the controller reads the
//! Secrets, asks [`plan`] and writes what it returns.
//!
//! Mode operator keeps four Secrets, each owned by the cluster:
//! - `<name>-ca`: the cluster's CA (`ca.crt`, `ca.key`); only the operator
//!   reads it.
//! - `<name>-node-tls`: `ca.crt` and, per pod, `<pod>.crt` / `<pod>.key`
//!   with the URI SAN `keyraft-member:<pod>` and the pod's and client
//!   Service's DNS names. Mounted into every node pod (a StatefulSet's pods
//!   share one template, so every pod can read every member's key: the
//!   member check keeps out other clusters, clients and mistakes, not a
//!   compromised pod of the same cluster).
//! - `<name>-admin-tls`: `ca.crt`, `tls.crt`, `tls.key` with
//!   `keyraft-role:admin`; the operator reaches the nodes with it.
//! - `<name>-client-tls`: the same with `keyraft-role:client`, for
//!   applications (key-value calls and read-only Admin calls).
//!
//! A certificate is issued again when it is missing, was signed by another
//! CA than the current one, or has less than a third of its validity left.
//! Nodes and clients reread their files, so a renewal restarts nothing.
//!
//! The CA itself rolls over (when it has less than a third of its validity
//! left, or when the cluster's `keyraft.io/rotate-ca` annotation takes a
//! new value) in three steps, each gated on what every node reports in its
//! status (SHA-256 of the CAs it trusts and of the certificate it serves),
//! so no connection is refused on the way:
//! 1. a next CA is created and joins every trust bundle (`ca.crt` holds
//!    both); the current CA still signs;
//! 2. once every node trusts the next CA ([`rotation_step`]), it becomes
//!    the signing CA, the old one stays in the bundles as the previous CA,
//!    and every certificate is issued again from the new CA;
//! 3. once every node serves its certificate from the new CA, the previous
//!    CA leaves the bundles.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use keyraft_api::tls::certgen::{Authority, Holder};
use keyraft_api::tls::{cert_info_pem, Fingerprints, Role};

use crate::builders::Names;
use crate::crd::{KeyraftCluster, TlsMode};
use crate::{Error, Result};

/// CA certificate key in every Secret.
pub const CA_CRT: &str = "ca.crt";
/// CA private key, in `<name>-ca` only.
pub const CA_KEY: &str = "ca.key";
/// Client certificate and key in the admin and client Secrets.
pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
/// An incoming CA during a roll-over, in `<name>-ca` only: trusted
/// everywhere, not yet signing.
pub const CA_NEXT_CRT: &str = "ca-next.crt";
pub const CA_NEXT_KEY: &str = "ca-next.key";
/// The outgoing CA during a roll-over: still trusted while certificates
/// signed by it are replaced.
pub const CA_PREVIOUS_CRT: &str = "ca-previous.crt";
/// The `keyraft.io/rotate-ca` value that started the last roll-over.
pub const ROTATION: &str = "rotation";
/// Annotation on a KeyraftCluster: a new value starts a CA roll-over.
pub const ROTATE_CA_ANNOTATION: &str = "keyraft.io/rotate-ca";
/// Where node pods mount the node Secret.
pub const MOUNT_DIR: &str = "/etc/keyraft/tls";
/// Lifetime of the CA.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Lifetime of issued certificates when `tls.certificateValidity` is unset.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Common name of the operator's admin certificate.
pub const OPERATOR_CN: &str = "keyraft-operator";

/// The Secrets a cluster's TLS lives in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSecrets {
    /// Mode operator: the CA Secret; `None` in the other modes.
    pub ca: Option<String>,
    /// Mounted into the node pods.
    pub node: String,
    /// The admin certificate the operator uses.
    pub operator: String,
    /// Modes operator and certManager: the client-role certificate for
    /// applications.
    pub client: Option<String>,
}

impl TlsSecrets {
    pub fn of(kr: &KeyraftCluster, names: &Names) -> TlsSecrets {
        let c = &names.cluster;
        match (kr.spec.tls.mode, &kr.spec.tls.provided) {
            (TlsMode::Provided, Some(p)) => {
                TlsSecrets { ca: None, node: p.node_secret.clone(), operator: p.operator_secret.clone(), client: None }
            }
            // cert-manager writes the admin and client Secrets; the operator
            // gathers the pods' Secrets into the node Secret.
            (TlsMode::CertManager, _) => TlsSecrets {
                ca: None,
                node: format!("{c}-node-tls"),
                operator: format!("{c}-admin-tls"),
                client: Some(format!("{c}-client-tls")),
            },
            // The schema requires `provided` in mode provided.
            _ => TlsSecrets {
                ca: Some(format!("{c}-ca")),
                node: format!("{c}-node-tls"),
                operator: format!("{c}-admin-tls"),
                client: Some(format!("{c}-client-tls")),
            },
        }
    }
}

/// How many of the lowest ordinals have a certificate in the node Secret.
pub fn certified(kr: &KeyraftCluster, names: &Names, current: &SecretsData) -> u32 {
    let Some(node) = current.get(&TlsSecrets::of(kr, names).node) else { return 0 };
    (0..).take_while(|&o| node.contains_key(&format!("{}.crt", names.pod(o)))).count() as u32
}

/// Lifetime of the certificates the operator issues for `kr`.
pub fn validity(kr: &KeyraftCluster) -> Duration {
    kr.spec.tls.certificate_validity.as_deref().and_then(crate::crd::parse_duration).unwrap_or(DEFAULT_VALIDITY)
}

/// Host names (and addresses) a node certificate names: the pod's stable
/// DNS names, the client Service's names, and loopback for port-forwards.
pub fn node_hosts(names: &Names, pod: &str) -> Vec<String> {
    let (ns, h, c) = (&names.namespace, &names.headless, &names.client);
    vec![
        format!("{pod}.{h}.{ns}.svc"),
        format!("{pod}.{h}.{ns}.svc.cluster.local"),
        c.clone(),
        format!("{c}.{ns}"),
        format!("{c}.{ns}.svc"),
        format!("{c}.{ns}.svc.cluster.local"),
        "localhost".into(),
        "127.0.0.1".into(),
    ]
}

/// PEM of the admin identity the operator presents, with the CA to trust.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorIdentity {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl OperatorIdentity {
    /// From the operator Secret's data; says which key is missing.
    pub fn from_secret(name: &str, data: &BTreeMap<String, Vec<u8>>) -> Result<OperatorIdentity> {
        let get = |k: &str| {
            data.get(k)
                .and_then(|v| String::from_utf8(v.clone()).ok())
                .ok_or_else(|| Error::Invalid(format!("Secret {name} has no {k}: the operator needs an admin certificate ({CA_CRT}, {TLS_CRT}, {TLS_KEY}) to reach the nodes")))
        };
        Ok(OperatorIdentity { ca: get(CA_CRT)?, cert: get(TLS_CRT)?, key: get(TLS_KEY)? })
    }
}

/// What [`plan`] decided.
#[derive(Debug, Default)]
pub struct Issuance {
    /// Secret name -> its complete new data, for the Secrets that change.
    pub writes: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Whether the CA Secret is new (create it, never overwrite one).
    pub new_ca: bool,
    /// What was issued, for an Event: e.g. `basic-2 (new)`, `admin (renewal)`.
    pub issued: Vec<String>,
    /// Why a CA roll-over started in this pass (a next CA was created).
    pub rollover: Option<String>,
}

/// Secret data as the controller read it (name -> key -> bytes; absent
/// Secrets are missing from the map).
pub type SecretsData = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

fn text(data: Option<&BTreeMap<String, Vec<u8>>>, key: &str) -> Option<String> {
    data.and_then(|d| d.get(key)).and_then(|v| String::from_utf8(v.clone()).ok())
}

/// Why a certificate must be issued (again), if it must.
fn reissue_reason(
    cert: Option<&str>,
    signed_by_current: bool,
    validity: Duration,
    now: SystemTime,
) -> Option<&'static str> {
    let Some(cert) = cert else { return Some("new") };
    if !signed_by_current {
        return Some("new CA");
    }
    let Ok(info) = cert_info_pem(cert.as_bytes()) else { return Some("unreadable") };
    let now = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let left = info.not_after - now;
    (left < (validity.as_secs() / 3) as i64).then_some("renewal")
}

/// Mode operator: the certificates to issue for pods `0..members` and the
/// two client identities, given the Secrets as they are. Certificates of
/// ordinals at or past `members` are dropped.
pub fn plan(
    kr: &KeyraftCluster,
    names: &Names,
    members: u32,
    current: &SecretsData,
    now: SystemTime,
) -> Result<Issuance> {
    let secrets = TlsSecrets::of(kr, names);
    let (Some(ca_name), Some(client_name)) = (&secrets.ca, &secrets.client) else {
        return Ok(Issuance::default());
    };
    let gen = |e: keyraft_api::tls::TlsError| Error::Invalid(format!("issuing certificates: {e}"));
    let validity = validity(kr);
    let mut out = Issuance::default();
    let ca_data = current.get(ca_name);
    let authority = match (text(ca_data, CA_CRT), text(ca_data, CA_KEY)) {
        (Some(c), Some(k)) => Authority::from_pem(&c, &k).map_err(|e| {
            Error::Invalid(format!("Secret {ca_name} does not hold a usable CA ({e}); delete it to start a new CA"))
        })?,
        _ => {
            let a = Authority::new(&format!("keyraft {}/{} CA", names.namespace, names.cluster), CA_VALIDITY)
                .map_err(gen)?;
            out.new_ca = true;
            out.writes.insert(
                ca_name.clone(),
                BTreeMap::from([
                    (CA_CRT.to_string(), a.cert_pem().as_bytes().to_vec()),
                    (CA_KEY.to_string(), a.key_pem().into_bytes()),
                ]),
            );
            a
        }
    };
    let ca_pem = authority.cert_pem().to_string();
    let mut ca_secret = ca_data.cloned().unwrap_or_default();
    if !out.new_ca {
        if let Some(why) = rollover_due(kr, &ca_secret, &ca_pem, now) {
            let cn = format!("keyraft {}/{} CA {}", names.namespace, names.cluster, unix(now));
            let next = Authority::new(&cn, CA_VALIDITY).map_err(gen)?;
            ca_secret.insert(CA_NEXT_CRT.into(), next.cert_pem().as_bytes().to_vec());
            ca_secret.insert(CA_NEXT_KEY.into(), next.key_pem().into_bytes());
            ca_secret.insert(ROTATION.into(), rotate_request(kr).unwrap_or_default().into_bytes());
            out.writes.insert(ca_name.clone(), ca_secret.clone());
            out.rollover = Some(why);
        }
    }
    // What everyone trusts: the signing CA, and during a roll-over the
    // next or the previous one.
    let mut bundle = ca_pem.clone();
    for k in [CA_NEXT_CRT, CA_PREVIOUS_CRT] {
        if let Some(pem) = text(Some(&ca_secret), k) {
            bundle.push_str(&pem);
        }
    }
    let signed = |cert: &str| keyraft_api::tls::signed_by(cert.as_bytes(), ca_pem.as_bytes());

    // Node certificates, one pair per pod.
    let node_data = current.get(&secrets.node);
    let mut node: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut node_changed = text(node_data, CA_CRT).as_deref() != Some(bundle.as_str());
    node.insert(CA_CRT.into(), bundle.clone().into_bytes());
    for ordinal in 0..members {
        let pod = names.pod(ordinal);
        let (crt, key) = (format!("{pod}.crt"), format!("{pod}.key"));
        let have = text(node_data, &crt).filter(|_| node_data.is_some_and(|d| d.contains_key(&key)));
        let by_current = have.as_deref().is_some_and(signed);
        match reissue_reason(have.as_deref(), by_current, validity, now) {
            None => {
                let d = node_data.expect("a certificate was read from it");
                node.insert(crt.clone(), d[&crt].clone());
                node.insert(key.clone(), d[&key].clone());
            }
            Some(why) => {
                let holder = Holder::Member { name: pod.clone(), hosts: node_hosts(names, &pod) };
                let issued = authority.issue(&holder, validity).map_err(gen)?;
                node.insert(crt, issued.cert_pem.into_bytes());
                node.insert(key, issued.key_pem.into_bytes());
                out.issued.push(format!("{pod} ({why})"));
                node_changed = true;
            }
        }
    }
    // Pairs of ordinals no longer in the cluster go.
    if node_data.is_some_and(|d| d.keys().any(|k| !node.contains_key(k))) {
        node_changed = true;
    }
    if node_changed {
        out.writes.insert(secrets.node.clone(), node);
    }

    for (secret, role, cn) in [
        (&secrets.operator, Role::Admin, OPERATOR_CN.to_string()),
        (client_name, Role::Client, format!("{}-client", names.cluster)),
    ] {
        let data = current.get(secret);
        let have = text(data, TLS_CRT).filter(|_| data.is_some_and(|d| d.contains_key(TLS_KEY)));
        let by_current = have.as_deref().is_some_and(signed);
        if let Some(why) = reissue_reason(have.as_deref(), by_current, validity, now) {
            let issued = authority.issue(&Holder::User { role, common_name: cn }, validity).map_err(gen)?;
            out.writes.insert(
                secret.clone(),
                BTreeMap::from([
                    (CA_CRT.to_string(), bundle.clone().into_bytes()),
                    (TLS_CRT.to_string(), issued.cert_pem.into_bytes()),
                    (TLS_KEY.to_string(), issued.key_pem.into_bytes()),
                ]),
            );
            out.issued.push(format!("{role} certificate ({why})"));
        } else if text(data, CA_CRT).as_deref() != Some(bundle.as_str()) {
            let mut d = data.cloned().unwrap_or_default();
            d.insert(CA_CRT.into(), bundle.clone().into_bytes());
            out.writes.insert(secret.clone(), d);
        }
    }
    Ok(out)
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The cluster's `keyraft.io/rotate-ca` value, when set.
fn rotate_request(kr: &KeyraftCluster) -> Option<String> {
    kr.metadata.annotations.as_ref()?.get(ROTATE_CA_ANNOTATION).filter(|v| !v.is_empty()).cloned()
}

/// Why the CA must roll over now, if it must: not while one is under way.
fn rollover_due(
    kr: &KeyraftCluster,
    ca_secret: &BTreeMap<String, Vec<u8>>,
    ca_pem: &str,
    now: SystemTime,
) -> Option<String> {
    if ca_secret.contains_key(CA_NEXT_CRT) || ca_secret.contains_key(CA_PREVIOUS_CRT) {
        return None;
    }
    if let Some(want) = rotate_request(kr) {
        if text(Some(ca_secret), ROTATION).as_deref() != Some(want.as_str()) {
            return Some(format!("{ROTATE_CA_ANNOTATION}: {want}"));
        }
    }
    let info = cert_info_pem(ca_pem.as_bytes()).ok()?;
    let left = info.not_after - unix(now);
    let lifetime = info.not_after - info.not_before;
    (left < lifetime / 3).then(|| "the CA has less than a third of its validity left".to_string())
}

/// What a node reports of its TLS, by pod name (`None`: it did not answer).
pub type NodeTls<'a> = Vec<(&'a str, Option<&'a Fingerprints>)>;

/// A step of a CA roll-over, with the Event reason and action that report
/// it (distinct per step: Events of one reason and action fold into one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotationStep {
    /// The next CA signs; the old one is still trusted.
    Switched,
    /// The previous CA left the trust bundles.
    Retired,
}

impl RotationStep {
    pub fn reason(self) -> &'static str {
        match self {
            RotationStep::Switched => "CASwitched",
            RotationStep::Retired => "CARetired",
        }
    }
    pub fn action(self) -> &'static str {
        match self {
            RotationStep::Switched => "SwitchCA",
            RotationStep::Retired => "RetireCA",
        }
    }
}

/// The next step of a CA roll-over under way, once every node is ready for
/// it: the CA Secret's new data and what happened, for an Event. `pods` are
/// all the cluster's pods; one that did not answer holds the step back.
pub fn rotation_step(
    ca_secret: &BTreeMap<String, Vec<u8>>,
    node_secret: Option<&BTreeMap<String, Vec<u8>>>,
    pods: &NodeTls,
) -> Option<(BTreeMap<String, Vec<u8>>, RotationStep, String)> {
    let fp = |pem: &str| keyraft_api::tls::fingerprints_pem(pem.as_bytes()).into_iter().next();
    let current = text(Some(ca_secret), CA_CRT)?;
    if let (Some(next), Some(next_key)) = (text(Some(ca_secret), CA_NEXT_CRT), text(Some(ca_secret), CA_NEXT_KEY)) {
        let want = fp(&next)?;
        if !pods.iter().all(|(_, t)| t.is_some_and(|t| t.trusted_cas.contains(&want))) {
            return None;
        }
        let mut d = ca_secret.clone();
        d.remove(CA_NEXT_CRT);
        d.remove(CA_NEXT_KEY);
        d.insert(CA_CRT.into(), next.into_bytes());
        d.insert(CA_KEY.into(), next_key.into_bytes());
        d.insert(CA_PREVIOUS_CRT.into(), current.into_bytes());
        let what = "every node trusts the next CA: it now signs, and every certificate is issued again from it";
        return Some((d, RotationStep::Switched, what.into()));
    }
    if ca_secret.contains_key(CA_PREVIOUS_CRT) {
        let serves_new = |pod: &str, t: Option<&Fingerprints>| {
            let issued = text(node_secret, &format!("{pod}.crt"));
            let Some(issued) = issued.filter(|c| keyraft_api::tls::signed_by(c.as_bytes(), current.as_bytes())) else {
                return false;
            };
            t.is_some_and(|t| t.own.is_some() && t.own == fp(&issued))
        };
        if !pods.iter().all(|(pod, t)| serves_new(pod, *t)) {
            return None;
        }
        let mut d = ca_secret.clone();
        d.remove(CA_PREVIOUS_CRT);
        let what = "every node serves a certificate of the new CA: the previous CA leaves the trust bundles";
        return Some((d, RotationStep::Retired, what.into()));
    }
    None
}

/// A Secret of the cluster holding `data`.
pub fn secret(kr: &KeyraftCluster, names: &Names, name: &str, data: BTreeMap<String, Vec<u8>>) -> Result<Secret> {
    let type_ = if data.contains_key(TLS_CRT) { "kubernetes.io/tls" } else { "Opaque" };
    Ok(Secret {
        metadata: crate::builders::object_meta(kr, names, name)?,
        type_: Some(type_.into()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::KeyraftClusterSpec;
    use keyraft_api::tls::Principal;

    fn cluster(validity: Option<&str>) -> (KeyraftCluster, Names) {
        let mut kr = KeyraftCluster::new("basic", serde_yaml::from_str::<KeyraftClusterSpec>("replicas: 3").unwrap());
        kr.metadata.namespace = Some("db".into());
        kr.metadata.uid = Some("u1".into());
        kr.spec.tls.certificate_validity = validity.map(str::to_string);
        let names = Names::of(&kr).unwrap();
        (kr, names)
    }

    fn apply(current: &mut SecretsData, i: &Issuance) {
        for (k, v) in &i.writes {
            current.insert(k.clone(), v.clone());
        }
    }

    #[test]
    fn first_pass_issues_everything_and_the_second_nothing() {
        let (kr, names) = cluster(None);
        let mut cur = SecretsData::new();
        let first = plan(&kr, &names, 3, &cur, SystemTime::now()).unwrap();
        assert!(first.new_ca);
        assert_eq!(
            first.writes.keys().cloned().collect::<Vec<_>>(),
            ["basic-admin-tls", "basic-ca", "basic-client-tls", "basic-node-tls"]
        );
        let node = &first.writes["basic-node-tls"];
        assert_eq!(node.len(), 1 + 3 * 2, "ca.crt and a pair per pod");
        let info = cert_info_pem(&node["basic-1.crt"]).unwrap();
        assert_eq!(info.principal, Some(Principal::Member("basic-1".into())));
        let admin = cert_info_pem(&first.writes["basic-admin-tls"][TLS_CRT]).unwrap();
        assert_eq!(admin.principal.and_then(|p| p.role()), Some(Role::Admin));
        let client = cert_info_pem(&first.writes["basic-client-tls"][TLS_CRT]).unwrap();
        assert_eq!(client.principal.and_then(|p| p.role()), Some(Role::Client));
        apply(&mut cur, &first);
        let second = plan(&kr, &names, 3, &cur, SystemTime::now()).unwrap();
        assert!(second.writes.is_empty() && !second.new_ca, "{:?}", second.issued);
    }

    #[test]
    fn scale_out_issues_only_the_new_pod_and_scale_in_drops_the_old() {
        let (kr, names) = cluster(None);
        let mut cur = SecretsData::new();
        let first = plan(&kr, &names, 3, &cur, SystemTime::now()).unwrap();
        apply(&mut cur, &first);
        let before = cur["basic-node-tls"].clone();
        let out = plan(&kr, &names, 4, &cur, SystemTime::now()).unwrap();
        assert_eq!(out.issued, ["basic-3 (new)"]);
        let node = &out.writes["basic-node-tls"];
        assert_eq!(node["basic-0.crt"], before["basic-0.crt"], "kept");
        apply(&mut cur, &out);
        let out = plan(&kr, &names, 2, &cur, SystemTime::now()).unwrap();
        assert!(out.issued.is_empty());
        let node = &out.writes["basic-node-tls"];
        assert!(!node.contains_key("basic-2.crt") && !node.contains_key("basic-3.key"));
        assert!(node.contains_key("basic-1.key"));
    }

    #[test]
    fn certificates_are_renewed_when_a_third_of_their_validity_is_left() {
        let (kr, names) = cluster(Some("3h"));
        let mut cur = SecretsData::new();
        let t0 = SystemTime::now();
        let first = plan(&kr, &names, 1, &cur, t0).unwrap();
        apply(&mut cur, &first);
        let early = plan(&kr, &names, 1, &cur, t0 + Duration::from_secs(3600)).unwrap();
        assert!(early.writes.is_empty(), "{:?}", early.issued);
        let late = plan(&kr, &names, 1, &cur, t0 + Duration::from_secs(2 * 3600 + 60)).unwrap();
        assert!(!late.new_ca);
        assert_eq!(late.issued, ["basic-0 (renewal)", "admin certificate (renewal)", "client certificate (renewal)"]);
    }

    #[test]
    fn a_new_ca_reissues_every_certificate() {
        let (kr, names) = cluster(None);
        let mut cur = SecretsData::new();
        let first = plan(&kr, &names, 2, &cur, SystemTime::now()).unwrap();
        apply(&mut cur, &first);
        cur.remove("basic-ca");
        let out = plan(&kr, &names, 2, &cur, SystemTime::now()).unwrap();
        assert!(out.new_ca);
        assert_eq!(out.issued.len(), 4, "{:?}", out.issued);
    }

    fn certs_in(pem: &[u8]) -> Vec<String> {
        keyraft_api::tls::fingerprints_pem(pem)
    }

    /// What a node reports after loading `pod`'s files from the Secrets.
    fn loaded(cur: &SecretsData, pod: &str) -> Fingerprints {
        let node = &cur["basic-node-tls"];
        Fingerprints {
            trusted_cas: certs_in(&node[CA_CRT]),
            own: certs_in(&node[&format!("{pod}.crt")]).into_iter().next(),
        }
    }

    #[test]
    fn a_ca_roll_over_trusts_the_next_ca_everywhere_then_signs_with_it_then_drops_the_old() {
        let (mut kr, names) = cluster(None);
        let mut cur = SecretsData::new();
        let first = plan(&kr, &names, 2, &cur, SystemTime::now()).unwrap();
        apply(&mut cur, &first);
        let old_ca = certs_in(&cur["basic-ca"][CA_CRT]);
        let old_leaf = cur["basic-node-tls"]["basic-0.crt"].clone();
        let before: Vec<Fingerprints> = ["basic-0", "basic-1"].iter().map(|p| loaded(&cur, p)).collect();

        // 1. Asked for: a next CA joins every bundle; nothing is issued yet.
        kr.metadata.annotations = Some([(ROTATE_CA_ANNOTATION.to_string(), "2026-12-01".to_string())].into());
        let start = plan(&kr, &names, 2, &cur, SystemTime::now()).unwrap();
        assert!(start.issued.is_empty(), "{:?}", start.issued);
        assert_eq!(start.rollover.as_deref(), Some("keyraft.io/rotate-ca: 2026-12-01"));
        apply(&mut cur, &start);
        let next_ca = certs_in(&cur["basic-ca"][CA_NEXT_CRT]);
        for secret in ["basic-node-tls", "basic-admin-tls", "basic-client-tls"] {
            assert_eq!(certs_in(&cur[secret][CA_CRT]), [old_ca.clone(), next_ca.clone()].concat(), "{secret}");
        }
        assert_eq!(cur["basic-node-tls"]["basic-0.crt"], old_leaf, "the old CA still signs");
        assert!(plan(&kr, &names, 2, &cur, SystemTime::now()).unwrap().writes.is_empty(), "one roll-over at a time");

        // 2. Not before every node trusts the next CA; one that did not
        // answer holds it back too.
        let node = cur.get("basic-node-tls");
        let stale = vec![("basic-0", Some(&before[0])), ("basic-1", Some(&before[1]))];
        assert!(rotation_step(&cur["basic-ca"], node, &stale).is_none());
        let fresh: Vec<Fingerprints> = ["basic-0", "basic-1"].iter().map(|p| loaded(&cur, p)).collect();
        assert!(rotation_step(&cur["basic-ca"], node, &vec![("basic-0", Some(&fresh[0])), ("basic-1", None)]).is_none());
        let pods = vec![("basic-0", Some(&fresh[0])), ("basic-1", Some(&fresh[1]))];
        let (ca, step, what) = rotation_step(&cur["basic-ca"], node, &pods).unwrap();
        assert_eq!(step, RotationStep::Switched, "{what}");
        cur.insert("basic-ca".into(), ca);
        assert_eq!(certs_in(&cur["basic-ca"][CA_CRT]), next_ca);
        assert_eq!(certs_in(&cur["basic-ca"][CA_PREVIOUS_CRT]), old_ca);
        // Every certificate is issued again from the new CA; both CAs stay trusted.
        let reissue = plan(&kr, &names, 2, &cur, SystemTime::now()).unwrap();
        assert_eq!(reissue.issued.len(), 4, "{:?}", reissue.issued);
        assert!(reissue.issued.iter().all(|i| i.contains("new CA")), "{:?}", reissue.issued);
        apply(&mut cur, &reissue);
        assert_eq!(certs_in(&cur["basic-admin-tls"][CA_CRT]), [next_ca.clone(), old_ca.clone()].concat());

        // 3. Not before every node serves its new certificate.
        let node = cur.get("basic-node-tls");
        assert!(rotation_step(&cur["basic-ca"], node, &pods).is_none(), "nodes still serve the old certificates");
        let renewed: Vec<Fingerprints> = ["basic-0", "basic-1"].iter().map(|p| loaded(&cur, p)).collect();
        let pods = vec![("basic-0", Some(&renewed[0])), ("basic-1", Some(&renewed[1]))];
        let (ca, step, what) = rotation_step(&cur["basic-ca"], node, &pods).unwrap();
        assert_eq!(step, RotationStep::Retired, "{what}");
        cur.insert("basic-ca".into(), ca);
        let done = plan(&kr, &names, 2, &cur, SystemTime::now()).unwrap();
        assert!(done.issued.is_empty(), "{:?}", done.issued);
        apply(&mut cur, &done);
        for secret in ["basic-node-tls", "basic-admin-tls", "basic-client-tls"] {
            assert_eq!(certs_in(&cur[secret][CA_CRT]), next_ca, "{secret}");
        }
        assert!(rotation_step(&cur["basic-ca"], cur.get("basic-node-tls"), &pods).is_none(), "done");
        assert!(plan(&kr, &names, 2, &cur, SystemTime::now()).unwrap().writes.is_empty(), "the same annotation again");
    }

    #[test]
    fn a_ca_with_less_than_a_third_of_its_validity_left_rolls_over() {
        let (kr, names) = cluster(None);
        let mut cur = SecretsData::new();
        let t0 = SystemTime::now();
        let first = plan(&kr, &names, 1, &cur, t0).unwrap();
        apply(&mut cur, &first);
        let year = Duration::from_secs(365 * 24 * 3600);
        // Leaves renew on their own schedule; only the CA's age matters here.
        let early = plan(&kr, &names, 1, &cur, t0 + 6 * year).unwrap();
        assert!(!early.writes.contains_key("basic-ca"), "{:?}", early.issued);
        let late = plan(&kr, &names, 1, &cur, t0 + 7 * year).unwrap();
        assert!(late.writes["basic-ca"].contains_key(CA_NEXT_CRT), "{:?}", late.issued);
        assert!(late.rollover.is_some_and(|why| why.contains("less than a third")));
    }

    #[test]
    fn provided_mode_names_the_users_secrets_and_issues_nothing() {
        let (mut kr, names) = cluster(None);
        kr.spec.tls.mode = TlsMode::Provided;
        kr.spec.tls.provided =
            Some(crate::crd::ProvidedTls { node_secret: "mine".into(), operator_secret: "ops".into() });
        let s = TlsSecrets::of(&kr, &names);
        assert_eq!((s.node.as_str(), s.operator.as_str(), s.ca, s.client), ("mine", "ops", None, None));
        assert!(plan(&kr, &names, 3, &SecretsData::new(), SystemTime::now()).unwrap().writes.is_empty());
    }

    #[test]
    fn node_certificates_name_the_addresses_nodes_are_dialled_by() {
        let (_, names) = cluster(None);
        let hosts = node_hosts(&names, "basic-0");
        assert!(hosts.contains(&"basic-0.basic-headless.db.svc".to_string()));
        assert!(hosts.contains(&"basic.db.svc".to_string()));
        assert_eq!(names.pod_address("basic-0"), format!("{}:7000", hosts[0]));
    }
}
