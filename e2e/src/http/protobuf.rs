//! Decoding of Kubernetes protobuf request bodies into JSON, for the kinds
//! clients send that way: client-go typed clients (Helm's release storage)
//! POST and PUT Secrets and ConfigMaps as `application/vnd.kubernetes.protobuf`,
//! `kubectl create namespace` POSTs a Namespace that way.
//! Responses are always JSON, which those clients also accept.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};

/// One field of a protobuf message.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> ApiResult<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or_else(|| bad("truncated varint"))?;
        *pos += 1;
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(bad("varint too long"))
}

fn bad(what: &str) -> ApiError {
    ApiError::bad_request(format!("invalid protobuf body: {what}"))
}

fn fields(buf: &[u8]) -> ApiResult<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (num, wire) = (key >> 3, key & 7);
        let f = match wire {
            0 => Field::Varint(varint(buf, &mut pos)?),
            2 => {
                let len = varint(buf, &mut pos)? as usize;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len()).ok_or_else(|| bad("truncated field"))?;
                let b = &buf[pos..end];
                pos = end;
                Field::Bytes(b)
            }
            1 => {
                pos += 8;
                Field::Varint(0)
            }
            5 => {
                pos += 4;
                Field::Varint(0)
            }
            _ => return Err(bad("unsupported wire type")),
        };
        out.push((num, f));
    }
    Ok(out)
}

fn string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// A `map<string, string|bytes>` entry.
fn map_entry(b: &[u8]) -> ApiResult<(String, Vec<u8>)> {
    let (mut k, mut v) = (String::new(), Vec::new());
    for (n, f) in fields(b)? {
        if let Field::Bytes(b) = f {
            match n {
                1 => k = string(b),
                2 => v = b.to_vec(),
                _ => {}
            }
        }
    }
    Ok((k, v))
}

fn object_meta(b: &[u8]) -> ApiResult<Value> {
    let mut m = Map::new();
    let mut labels = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    let mut finalizers = Vec::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(b)) => {
                m.insert("name".into(), json!(string(b)));
            }
            (2, Field::Bytes(b)) => {
                m.insert("generateName".into(), json!(string(b)));
            }
            (3, Field::Bytes(b)) => {
                m.insert("namespace".into(), json!(string(b)));
            }
            (5, Field::Bytes(b)) => {
                m.insert("uid".into(), json!(string(b)));
            }
            (6, Field::Bytes(b)) => {
                m.insert("resourceVersion".into(), json!(string(b)));
            }
            (11, Field::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                labels.insert(k, string(&v));
            }
            (12, Field::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                annotations.insert(k, string(&v));
            }
            (14, Field::Bytes(b)) => finalizers.push(string(b)),
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), json!(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), json!(annotations));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), json!(finalizers));
    }
    Ok(Value::Object(m))
}

/// Decodes a `k8s\0`-prefixed `runtime.Unknown` holding a v1 Secret,
/// ConfigMap, Namespace or DeleteOptions into its JSON form.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let inner = body.strip_prefix(b"k8s\0").ok_or_else(|| bad("missing k8s magic prefix"))?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(inner)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (n, f) in fields(tm)? {
                    if let Field::Bytes(b) = f {
                        match n {
                            1 => api_version = string(b),
                            2 => kind = string(b),
                            _ => {}
                        }
                    }
                }
            }
            (2, Field::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let mut obj = json!({"apiVersion": api_version, "kind": kind});
    match (api_version.as_str(), kind.as_str()) {
        (_, "DeleteOptions") => {
            let mut dry_run = Vec::new();
            for (n, f) in fields(raw)? {
                match (n, f) {
                    (1, Field::Varint(v)) => obj["gracePeriodSeconds"] = json!(v as i64),
                    (3, Field::Varint(v)) if v != 0 => obj["propagationPolicy"] = json!("Orphan"),
                    (4, Field::Bytes(b)) => obj["propagationPolicy"] = json!(string(b)),
                    (5, Field::Bytes(b)) => dry_run.push(string(b)),
                    _ => {}
                }
            }
            if !dry_run.is_empty() {
                obj["dryRun"] = json!(dry_run);
            }
        }
        ("v1", "Secret") => {
            let mut data = Map::new();
            for (n, f) in fields(raw)? {
                match (n, f) {
                    (1, Field::Bytes(b)) => obj["metadata"] = object_meta(b)?,
                    (2, Field::Bytes(b)) => {
                        let (k, v) = map_entry(b)?;
                        data.insert(k, json!(base64::engine::general_purpose::STANDARD.encode(v)));
                    }
                    (3, Field::Bytes(b)) => obj["type"] = json!(string(b)),
                    (5, Field::Varint(v)) => obj["immutable"] = json!(v != 0),
                    _ => {}
                }
            }
            obj["data"] = Value::Object(data);
        }
        ("v1", "ConfigMap") => {
            let mut data = Map::new();
            for (n, f) in fields(raw)? {
                match (n, f) {
                    (1, Field::Bytes(b)) => obj["metadata"] = object_meta(b)?,
                    (2, Field::Bytes(b)) => {
                        let (k, v) = map_entry(b)?;
                        data.insert(k, json!(string(&v)));
                    }
                    _ => {}
                }
            }
            obj["data"] = Value::Object(data);
        }
        // `kubectl create namespace NAME`
        ("v1", "Namespace") => {
            for (n, f) in fields(raw)? {
                match (n, f) {
                    (1, Field::Bytes(b)) => obj["metadata"] = object_meta(b)?,
                    (2, Field::Bytes(b)) => {
                        let finalizers: Vec<String> = fields(b)?
                            .into_iter()
                            .filter_map(|(n, f)| match (n, f) {
                                (1, Field::Bytes(b)) => Some(string(b)),
                                _ => None,
                            })
                            .collect();
                        if !finalizers.is_empty() {
                            obj["spec"] = json!({"finalizers": finalizers});
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {
            return Err(ApiError::unsupported_media(format!(
                "the simulator decodes protobuf only for v1 Secret, ConfigMap, Namespace and DeleteOptions (got {api_version} {kind}); send JSON"
            )))
        }
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(num << 3 | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn decodes_a_secret() {
        let mut meta = field(1, b"sh.helm.release.v1.op.v1");
        meta.extend(field(3, b"ns"));
        let mut label = field(1, b"owner");
        label.extend(field(2, b"helm"));
        meta.extend(field(11, &label));
        let mut entry = field(1, b"release");
        entry.extend(field(2, b"abc"));
        let mut secret = field(1, &meta);
        secret.extend(field(2, &entry));
        secret.extend(field(3, b"helm.sh/release.v1"));
        let mut tm = field(1, b"v1");
        tm.extend(field(2, b"Secret"));
        let mut body = b"k8s\0".to_vec();
        body.extend(field(1, &tm));
        body.extend(field(2, &secret));
        let v = decode(&body).unwrap();
        assert_eq!(v["metadata"]["name"], "sh.helm.release.v1.op.v1");
        assert_eq!(v["metadata"]["labels"]["owner"], "helm");
        assert_eq!(v["data"]["release"], "YWJj");
        assert_eq!(v["type"], "helm.sh/release.v1");
    }

    #[test]
    fn decodes_a_namespace() {
        let meta = field(1, b"apps");
        let spec = field(1, b"kubernetes");
        let mut ns = field(1, &meta);
        ns.extend(field(2, &spec));
        let mut tm = field(1, b"v1");
        tm.extend(field(2, b"Namespace"));
        let mut body = b"k8s\0".to_vec();
        body.extend(field(1, &tm));
        body.extend(field(2, &ns));
        let v = decode(&body).unwrap();
        assert_eq!(v["kind"], "Namespace");
        assert_eq!(v["metadata"]["name"], "apps");
        assert_eq!(v["spec"]["finalizers"][0], "kubernetes");
    }
}
