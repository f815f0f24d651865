//! Mode certManager (`spec.tls.mode: certManager`): cert-manager issues
//! and renews the cluster's certificates; the operator says what to issue
//! and gathers the result. Pure: the controller applies [`certificates`],
//! reads the Secrets cert-manager writes and writes [`node_secret`].
//!
//! - one `Certificate` per pod, `<pod>` -> Secret `<pod>-tls`, with the URI
//!   SAN `keyraft-member:<pod>` and the pod's DNS names (as in mode
//!   operator: see crate::tls::node_hosts);
//! - `<name>-admin` -> `<name>-admin-tls` (`keyraft-role:admin`, the
//!   operator's identity) and `<name>-client` -> `<name>-client-tls`
//!   (`keyraft-role:client`, for applications).
//!
//! A StatefulSet's pods share one template, so they cannot each mount
//! their own Secret: the operator copies every pod's `tls.crt` / `tls.key`
//! into `<name>-node-tls` as `<pod>.crt` / `<pod>.key`, with `ca.crt` the
//! union of the CAs cert-manager reported. When the issuer's CA changes,
//! the bundle holds the old and the new CA until every certificate is
//! issued again, so nodes keep trusting each other on the way.
//!
//! The operator neither watches nor requires cert-manager's API unless a
//! cluster uses this mode; it reads the Secrets again on every pass (at
//! most 30 s apart), which is how renewals reach the nodes.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use crate::builders::{labels, Names};
use crate::crd::{KeyraftCluster, TlsMode};
use crate::tls::{node_hosts, SecretsData, CA_CRT, OPERATOR_CN, TLS_CRT, TLS_KEY};
use crate::{Error, Result};

/// cert-manager's Certificate kind.
pub fn certificate_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"), "certificates")
}

/// Label on every Certificate the operator creates: the pod it is for, or
/// `admin` / `client`.
pub const HOLDER_LABEL: &str = "keyraft.io/certificate-holder";

/// Secret cert-manager writes a pod's certificate to.
pub fn pod_secret(pod: &str) -> String {
    format!("{pod}-tls")
}

/// The Certificates of a cluster with `members` pods, each an object to
/// server-side apply. `None` unless the cluster is in mode certManager.
pub fn certificates(kr: &KeyraftCluster, names: &Names, members: u32) -> Result<Option<Vec<DynamicObject>>> {
    let tls = &kr.spec.tls;
    let Some(cm) = tls.cert_manager.as_ref().filter(|_| tls.mode == TlsMode::CertManager) else {
        return Ok(None);
    };
    let validity = crate::tls::validity(kr);
    let issuer = json!({ "name": cm.issuer_ref.name, "kind": cm.issuer_ref.kind, "group": cm.issuer_ref.group });
    let c = &names.cluster;
    let mut out = Vec::new();
    let mut add = |name: String, holder: &str, spec: serde_json::Value| -> Result<()> {
        let mut meta = crate::builders::object_meta(kr, names, &name)?;
        meta.labels.get_or_insert_with(BTreeMap::new).insert(HOLDER_LABEL.into(), holder.into());
        let mut obj = DynamicObject::new(&name, &certificate_resource()).within(&names.namespace);
        obj.metadata = meta;
        let mut spec = spec;
        let common = json!({
            "issuerRef": issuer,
            "duration": format!("{}s", validity.as_secs()),
            // Renewed once a third of the validity remains, as in mode operator.
            "renewBefore": format!("{}s", validity.as_secs() / 3),
            "privateKey": { "algorithm": "ECDSA", "size": 256, "encoding": "PKCS8", "rotationPolicy": "Always" },
            "secretTemplate": { "labels": labels(kr) },
        });
        for (k, v) in common.as_object().expect("an object") {
            spec[k] = v.clone();
        }
        obj.data = json!({ "spec": spec });
        out.push(obj);
        Ok(())
    };
    for ordinal in 0..members {
        let pod = names.pod(ordinal);
        let hosts = node_hosts(names, &pod);
        let (ips, dns): (Vec<&String>, Vec<&String>) =
            hosts.iter().partition(|h| h.parse::<std::net::IpAddr>().is_ok());
        add(
            pod.clone(),
            &pod,
            json!({
                "secretName": pod_secret(&pod),
                "commonName": pod,
                "dnsNames": dns,
                "ipAddresses": ips,
                "uris": [format!("{}{pod}", keyraft_api::tls::MEMBER_URI_PREFIX)],
                "usages": ["digital signature", "key encipherment", "server auth", "client auth"],
            }),
        )?;
    }
    for (role, cn) in [("admin", OPERATOR_CN.to_string()), ("client", format!("{c}-client"))] {
        add(
            format!("{c}-{role}"),
            role,
            json!({
                "secretName": format!("{c}-{role}-tls"),
                "commonName": cn,
                "uris": [format!("{}{role}", keyraft_api::tls::ROLE_URI_PREFIX)],
                "usages": ["digital signature", "key encipherment", "client auth"],
            }),
        )?;
    }
    Ok(Some(out))
}

/// Whether a Certificate of the cluster belongs to an ordinal at or past
/// `members` (scale-in): its holder label names such a pod.
pub fn is_past(names: &Names, holder: &str, members: u32) -> bool {
    let prefix = format!("{}-", names.statefulset);
    holder.strip_prefix(&prefix).and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n >= members)
}

/// What [`node_secret`] gathered.
#[derive(Debug, PartialEq, Eq)]
pub struct Gathered {
    /// The data of `<name>-node-tls`: `ca.crt` and each issued pod's
    /// `<pod>.crt` / `<pod>.key`.
    pub data: BTreeMap<String, Vec<u8>>,
    /// Pods whose Secret cert-manager has not written yet.
    pub waiting: Vec<String>,
}

/// The node Secret's data from the pods' Secrets in `current` (by name),
/// plus the admin and client Secrets' CAs. A Secret without `ca.crt` is an
/// error naming it: mutual TLS needs the issuer's CA.
pub fn node_secret(names: &Names, members: u32, current: &SecretsData) -> Result<Gathered> {
    let mut cas = BTreeSet::new();
    let mut data = BTreeMap::new();
    let mut waiting = Vec::new();
    let c = &names.cluster;
    let mut take_ca = |secret: &str, d: &BTreeMap<String, Vec<u8>>| -> Result<()> {
        let ca = d.get(CA_CRT).filter(|v| !v.is_empty()).ok_or_else(|| {
            Error::Invalid(format!(
                "Secret {secret} has no {CA_CRT}: the cert-manager issuer in spec.tls.certManager.issuerRef must report \
                 its CA (a CA, Vault or private-CA issuer; ACME issuers do not), since nodes and clients trust each \
                 other through it"
            ))
        })?;
        for block in pem_blocks(ca) {
            cas.insert(block);
        }
        Ok(())
    };
    for ordinal in 0..members {
        let pod = names.pod(ordinal);
        let secret = pod_secret(&pod);
        match current.get(&secret) {
            Some(d)
                if d.get(TLS_CRT).is_some_and(|v| !v.is_empty()) && d.get(TLS_KEY).is_some_and(|v| !v.is_empty()) =>
            {
                take_ca(&secret, d)?;
                data.insert(format!("{pod}.crt"), d[TLS_CRT].clone());
                data.insert(format!("{pod}.key"), d[TLS_KEY].clone());
            }
            _ => waiting.push(pod),
        }
    }
    for role in ["admin", "client"] {
        let secret = format!("{c}-{role}-tls");
        if let Some(d) = current.get(&secret) {
            take_ca(&secret, d)?;
        }
    }
    if !cas.is_empty() {
        data.insert(CA_CRT.into(), cas.into_iter().collect::<Vec<_>>().concat().into_bytes());
    }
    Ok(Gathered { data, waiting })
}

/// The PEM blocks of a bundle, each normalised to end in a newline.
fn pem_blocks(bundle: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bundle);
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.starts_with("-----BEGIN ") {
            cur.clear();
        }
        cur.push_str(line);
        cur.push('\n');
        if line.starts_with("-----END ") {
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::KeyraftClusterSpec;

    fn cluster() -> (KeyraftCluster, Names) {
        let spec = "replicas: 3\ntls:\n  mode: certManager\n  certificateValidity: 720h\n  certManager:\n    issuerRef:\n      name: ca-issuer\n";
        let mut kr = KeyraftCluster::new("basic", serde_yaml::from_str::<KeyraftClusterSpec>(spec).unwrap());
        kr.metadata.namespace = Some("db".into());
        kr.metadata.uid = Some("u1".into());
        let names = Names::of(&kr).unwrap();
        (kr, names)
    }

    #[test]
    fn one_certificate_per_pod_and_one_per_role_each_naming_its_identity_and_the_issuer() {
        let (kr, names) = cluster();
        let certs = certificates(&kr, &names, 3).unwrap().unwrap();
        let by_name: BTreeMap<_, _> = certs.iter().map(|c| (c.metadata.name.clone().unwrap(), c)).collect();
        assert_eq!(
            by_name.keys().cloned().collect::<Vec<_>>(),
            ["basic-0", "basic-1", "basic-2", "basic-admin", "basic-client"]
        );
        let pod = &by_name["basic-1"].data["spec"];
        assert_eq!(pod["secretName"], "basic-1-tls");
        assert_eq!(pod["uris"], json!(["keyraft-member:basic-1"]));
        assert_eq!(pod["ipAddresses"], json!(["127.0.0.1"]));
        assert!(pod["dnsNames"].as_array().unwrap().contains(&json!("basic-1.basic-headless.db.svc")));
        assert!(pod["usages"].as_array().unwrap().contains(&json!("server auth")));
        assert_eq!(pod["issuerRef"], json!({"name": "ca-issuer", "kind": "Issuer", "group": "cert-manager.io"}));
        assert_eq!(pod["duration"], "2592000s");
        assert_eq!(pod["renewBefore"], "864000s");
        assert_eq!(by_name["basic-1"].metadata.labels.as_ref().unwrap()[HOLDER_LABEL], "basic-1");
        assert!(by_name["basic-1"].metadata.owner_references.as_ref().is_some_and(|o| o[0].uid == "u1"));
        let admin = &by_name["basic-admin"].data["spec"];
        assert_eq!(admin["uris"], json!(["keyraft-role:admin"]));
        assert_eq!(admin["secretName"], "basic-admin-tls");
        assert!(!admin["usages"].as_array().unwrap().contains(&json!("server auth")));
        assert_eq!(by_name["basic-client"].data["spec"]["uris"], json!(["keyraft-role:client"]));
    }

    #[test]
    fn other_modes_ask_cert_manager_for_nothing() {
        let (mut kr, names) = cluster();
        kr.spec.tls.mode = TlsMode::Operator;
        assert!(certificates(&kr, &names, 3).unwrap().is_none());
    }

    #[test]
    fn only_ordinals_past_the_members_are_past() {
        let (_, names) = cluster();
        assert!(is_past(&names, "basic-3", 3));
        assert!(!is_past(&names, "basic-2", 3));
        assert!(!is_past(&names, "admin", 3));
        assert!(!is_past(&names, "client", 0));
    }

    fn issued(ca: &str, cert: &str) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            (CA_CRT.to_string(), ca.as_bytes().to_vec()),
            (TLS_CRT.to_string(), cert.as_bytes().to_vec()),
            (TLS_KEY.to_string(), format!("key of {cert}").into_bytes()),
        ])
    }

    const CA1: &str = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n";
    const CA2: &str = "-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----";

    #[test]
    fn the_node_secret_gathers_issued_pods_names_the_waiting_ones_and_trusts_every_ca_reported() {
        let (_, names) = cluster();
        let current = SecretsData::from([
            ("basic-0-tls".to_string(), issued(CA1, "c0")),
            ("basic-1-tls".to_string(), issued(&format!("{CA2}\n{CA1}"), "c1")),
            ("basic-admin-tls".to_string(), issued(CA1, "a")),
        ]);
        let g = node_secret(&names, 3, &current).unwrap();
        assert_eq!(g.waiting, ["basic-2"]);
        assert_eq!(g.data["basic-1.crt"], b"c1");
        assert_eq!(g.data["basic-1.key"], b"key of c1");
        assert!(!g.data.contains_key("basic-2.crt"));
        let bundle = String::from_utf8(g.data[CA_CRT].clone()).unwrap();
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2, "{bundle}");
        assert!(bundle.contains("AAA") && bundle.contains("BBB"));
    }

    #[test]
    fn an_issuer_that_reports_no_ca_is_an_error_naming_the_secret() {
        let (_, names) = cluster();
        let current = SecretsData::from([("basic-0-tls".to_string(), issued("", "c0"))]);
        let e = node_secret(&names, 1, &current).unwrap_err().to_string();
        assert!(e.contains("basic-0-tls") && e.contains("ca.crt") && e.contains("issuerRef"), "{e}");
    }
}
