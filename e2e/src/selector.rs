//! Label selectors (`a=b,c!=d,e in (f,g),!h,i`) and field selectors
//! (`metadata.name=x`, `metadata.namespace`, `spec.nodeName`, `status.phase`,
//! `involvedObject.*` and any other dotted path, compared as strings).

use serde_json::Value;

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Req>);

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

fn set(values: &str) -> ApiResult<Vec<String>> {
    let inner = values
        .trim()
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| ApiError::bad_request(format!("unable to parse requirement: bad set {values:?}")))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter syntax.
    pub fn parse(s: &str) -> ApiResult<Self> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Req::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once(" notin ") {
                Req::NotIn(k.trim().into(), set(v)?)
            } else if let Some((k, v)) = part.split_once(" in ") {
                Req::In(k.trim().into(), set(v)?)
            } else if let Some(k) = part.strip_prefix('!') {
                Req::NotExists(k.trim().into())
            } else if part.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) {
                Req::Exists(part.into())
            } else {
                return Err(ApiError::bad_request(format!("unable to parse requirement: {part:?}")));
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// The selector of a `metav1.LabelSelector` object (`matchLabels` and
    /// `matchExpressions`). `None` for an absent selector.
    pub fn from_object(sel: &Value) -> Option<Self> {
        if sel.is_null() {
            return None;
        }
        let mut reqs = Vec::new();
        if let Some(m) = sel["matchLabels"].as_object() {
            for (k, v) in m {
                reqs.push(Req::Eq(k.clone(), v.as_str().unwrap_or_default().into()));
            }
        }
        if let Some(exprs) = sel["matchExpressions"].as_array() {
            for e in exprs {
                let key = e["key"].as_str().unwrap_or_default().to_string();
                let values: Vec<String> = e["values"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                reqs.push(match e["operator"].as_str().unwrap_or_default() {
                    "In" => Req::In(key, values),
                    "NotIn" => Req::NotIn(key, values),
                    "Exists" => Req::Exists(key),
                    _ => Req::NotExists(key),
                });
            }
        }
        Some(LabelSelector(reqs))
    }

    /// Does a label map match?
    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Req::NotIn(k, vs) => !get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }

    /// Does an object's `metadata.labels` match?
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(&obj["metadata"]["labels"])
    }

    /// The selector in query-parameter syntax (as the scale subresource reports it).
    pub fn to_query(&self) -> String {
        self.0
            .iter()
            .map(|r| match r {
                Req::Eq(k, v) => format!("{k}={v}"),
                Req::NotEq(k, v) => format!("{k}!={v}"),
                Req::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Req::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Req::Exists(k) => k.clone(),
                Req::NotExists(k) => format!("!{k}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Matches nothing when empty? (`true` for the empty selector).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A parsed field selector: `path=value` / `path!=value` terms.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter.
    pub fn parse(s: &str) -> ApiResult<Self> {
        let mut terms = Vec::new();
        for part in split_top(s) {
            let (k, eq, v) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!("invalid field selector: {part:?}")));
            };
            terms.push((k.trim().to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    /// Does an object match every term? Missing fields compare as "".
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, eq, want)| {
            let have = path
                .split('.')
                .try_fold(obj, |v, k| v.get(k))
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                })
                .unwrap_or_default();
            (have == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_forms() {
        let labels = json!({"app": "x", "tier": "db"});
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&labels);
        assert!(m(""));
        assert!(m("app=x"));
        assert!(m("app==x,tier"));
        assert!(!m("app!=x"));
        assert!(m("tier in (db, web)"));
        assert!(!m("tier notin (db)"));
        assert!(m("!missing"));
        assert!(!m("missing"));
        assert!(LabelSelector::parse("a b c").is_err());
    }

    #[test]
    fn label_selector_object_round_trips_to_query() {
        let sel = LabelSelector::from_object(&json!({"matchLabels": {"app": "x"}})).unwrap();
        assert_eq!(sel.to_query(), "app=x");
        assert!(sel.matches(&json!({"app": "x"})));
        assert!(!sel.matches(&json!({})));
    }

    #[test]
    fn field_selector_on_name_and_nested_paths() {
        let obj = json!({"metadata": {"name": "a"}, "spec": {"nodeName": "n1"}});
        assert!(FieldSelector::parse("metadata.name=a").unwrap().matches(&obj));
        assert!(!FieldSelector::parse("metadata.name=b").unwrap().matches(&obj));
        assert!(FieldSelector::parse("spec.nodeName!=n2,metadata.name=a").unwrap().matches(&obj));
        assert!(FieldSelector::parse("spec.missing=").unwrap().matches(&obj));
    }
}
