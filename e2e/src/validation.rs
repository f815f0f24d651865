//! Validation of built-in kinds as the API server does it (the subset that
//! catches operator bugs): object names per kind, label keys and values,
//! annotation keys and total size, label selectors, and StatefulSet spec
//! immutability. Messages are the API server's, so `kubectl` prints the
//! same text as against a real cluster.

use serde_json::Value;

use crate::registry::ResourceType;

/// A field error: (field path, message starting with the error type).
pub type Cause = (String, String);

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// Longest label value and name part of a qualified name.
pub const MAX_LABEL_LEN: usize = 63;
/// Longest DNS-1123 subdomain.
pub const MAX_SUBDOMAIN_LEN: usize = 253;
/// Largest total size of an object's annotations (keys plus values).
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// The StatefulSet spec fields an update may change.
const STS_MUTABLE: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

fn too_long(max: usize) -> String {
    format!("must be no more than {max} characters")
}

fn alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_dns1123_label_chars(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| alnum_lower(c) || c == '-')
        && s.starts_with(alnum_lower)
        && s.ends_with(alnum_lower)
}

/// Errors of a DNS-1123 label (at most 63 characters).
pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > MAX_LABEL_LEN {
        errs.push(too_long(MAX_LABEL_LEN));
    }
    if !is_dns1123_label_chars(s) {
        errs.push(DNS1123_LABEL_MSG.into());
    }
    errs
}

/// Errors of a DNS-1123 subdomain (at most 253 characters).
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > MAX_SUBDOMAIN_LEN {
        errs.push(too_long(MAX_SUBDOMAIN_LEN));
    }
    if !s.split('.').all(is_dns1123_label_chars) {
        errs.push(DNS1123_SUBDOMAIN_MSG.into());
    }
    errs
}

/// Errors of a DNS-1035 label (Service names).
pub fn dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > MAX_LABEL_LEN {
        errs.push(too_long(MAX_LABEL_LEN));
    }
    if !(is_dns1123_label_chars(s) && s.starts_with(|c: char| c.is_ascii_lowercase())) {
        errs.push(DNS1035_LABEL_MSG.into());
    }
    errs
}

fn path_segment(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    ["/", "%"].iter().filter(|bad| s.contains(*bad)).map(|bad| format!("may not contain '{bad}'")).collect()
}

fn label_chars(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.')) && s.starts_with(alnum) && s.ends_with(alnum)
}

/// Errors of a qualified name (label and annotation keys): `[prefix/]name`.
pub fn qualified_name(s: &str) -> Vec<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let mut errs = Vec::new();
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".into());
        } else {
            errs.extend(dns1123_subdomain(p).into_iter().map(|m| format!("prefix part {m}")));
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > MAX_LABEL_LEN {
        errs.push(format!("name part {}", too_long(MAX_LABEL_LEN)));
    }
    if !name.is_empty() && !label_chars(name) {
        errs.push(QUALIFIED_NAME_MSG.into());
    }
    errs
}

/// Errors of a label value.
pub fn label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > MAX_LABEL_LEN {
        errs.push(too_long(MAX_LABEL_LEN));
    }
    if !s.is_empty() && !label_chars(s) {
        errs.push(LABEL_VALUE_MSG.into());
    }
    errs
}

fn invalid(field: &str, value: &str, msg: &str) -> Cause {
    (field.to_string(), format!("Invalid value: \"{value}\": {msg}"))
}

/// Errors of a label map at `field`.
pub fn labels(map: &Value, field: &str) -> Vec<Cause> {
    let mut out = Vec::new();
    for (k, v) in map.as_object().into_iter().flatten() {
        out.extend(qualified_name(k).iter().map(|m| invalid(field, k, m)));
        let v = v.as_str().unwrap_or_default();
        out.extend(label_value(v).iter().map(|m| invalid(field, v, m)));
    }
    out
}

fn annotations(map: &Value, field: &str) -> Vec<Cause> {
    let mut out = Vec::new();
    let mut size = 0;
    for (k, v) in map.as_object().into_iter().flatten() {
        out.extend(qualified_name(&k.to_lowercase()).iter().map(|m| invalid(field, k, m)));
        size += k.len() + v.as_str().map_or(0, str::len);
    }
    if size > MAX_ANNOTATIONS_BYTES {
        out.push((field.to_string(), format!("Too long: may not be more than {MAX_ANNOTATIONS_BYTES} bytes")));
    }
    out
}

/// The name rule of a kind: which validation `metadata.name` gets.
fn name_errors(rt: &ResourceType, name: &str) -> Vec<String> {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces") => dns1123_label(name),
        ("", "services") => dns1035_label(name),
        ("rbac.authorization.k8s.io", _) => path_segment(name),
        _ => dns1123_subdomain(name),
    }
}

/// Validates a built-in or custom object about to be stored; `old` is the
/// stored object on an update.
pub fn validate(rt: &ResourceType, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let meta = &obj["metadata"];
    let mut out = Vec::new();
    let name = meta["name"].as_str().unwrap_or_default();
    if old.is_none() {
        out.extend(name_errors(rt, name).iter().map(|m| invalid("metadata.name", name, m)));
    }
    out.extend(labels(&meta["labels"], "metadata.labels"));
    out.extend(annotations(&meta["annotations"], "metadata.annotations"));
    if rt.custom {
        return out;
    }
    let spec = &obj["spec"];
    if matches!((rt.group.as_str(), rt.plural.as_str()), ("apps", _) | ("policy", "poddisruptionbudgets")) {
        out.extend(labels(&spec["selector"]["matchLabels"], "spec.selector.matchLabels"));
        out.extend(labels(&spec["template"]["metadata"]["labels"], "spec.template.metadata.labels"));
        out.extend(annotations(&spec["template"]["metadata"]["annotations"], "spec.template.metadata.annotations"));
    }
    if rt.group == "apps" && rt.plural == "statefulsets" {
        if let Some(old) = old {
            let frozen = |v: &Value| {
                let mut s = v["spec"].clone();
                if let Some(m) = s.as_object_mut() {
                    m.retain(|k, _| !STS_MUTABLE.contains(&k.as_str()));
                }
                s
            };
            if frozen(obj) != frozen(old) {
                out.push((
                    "spec".into(),
                    "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden".into(),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        assert!(dns1123_label("kv-0").is_empty());
        assert_eq!(dns1123_label(&"a".repeat(64)), vec![too_long(63)]);
        assert_eq!(dns1123_label("Kv").len(), 1);
        assert!(dns1123_subdomain("sh.helm.release.v1.op.v1").is_empty());
        assert_eq!(dns1123_subdomain("a..b").len(), 1);
        assert_eq!(dns1035_label("1kv").len(), 1);
        assert!(dns1035_label("kv-headless").is_empty());
        assert!(qualified_name("app.kubernetes.io/name").is_empty());
        assert!(qualified_name("Bad Key").len() == 1);
        assert_eq!(qualified_name("example.com/").len(), 1);
        assert!(label_value("").is_empty());
        assert!(label_value("v1.2.3_rc-1").is_empty());
        assert_eq!(label_value(&"v".repeat(64)), vec![too_long(63)]);
        assert_eq!(label_value("-x").len(), 1);
        assert!(path_segment("system:controller:x").is_empty());
        assert_eq!(path_segment("a/b").len(), 1);
    }
}
