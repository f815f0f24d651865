//! A CRD version's `openAPIV3Schema` applied to custom objects as the API
//! server does: defaults filled in, unknown fields pruned (or rejected under
//! `fieldValidation=Strict`), structural validation (type, required, enum,
//! minimum/maximum, pattern, lengths) with a JSON-schema validator, and the
//! `x-kubernetes-validations` CEL rules with kube's evaluator.

use jsonschema::error::ValidationErrorKind;
use serde_json::{Map, Value};

/// A compiled CRD schema.
pub struct CrdSchema {
    raw: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for CrdSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrdSchema").finish_non_exhaustive()
    }
}

impl CrdSchema {
    /// Compiles `openAPIV3Schema`; an uncompilable schema is an error
    /// message for the CRD's creator.
    pub fn new(raw: Value) -> Result<Self, String> {
        let json_schema = to_json_schema(&raw);
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .should_validate_formats(false)
            .build(&json_schema)
            .map_err(|e| format!("spec.versions[].schema.openAPIV3Schema: Invalid value: {e}"))?;
        Ok(CrdSchema { raw, validator })
    }

    /// The schema as written in the CRD.
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// `obj` with the schema's defaults filled in.
    pub fn default(&self, obj: &Value) -> Value {
        kube::core::cel::apply_defaults(&self.raw, obj)
    }

    /// Removes fields the schema does not declare (outside
    /// `x-kubernetes-preserve-unknown-fields` and `metadata`) and returns
    /// their paths.
    pub fn prune(&self, obj: &mut Value) -> Vec<String> {
        let mut removed = Vec::new();
        prune(&self.raw, obj, "", &mut removed, true);
        removed
    }

    /// Every violation of the schema and its CEL rules as (field, message).
    pub fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self.validator.iter_errors(obj).map(|e| describe(&e)).collect();
        if out.is_empty() {
            if let Err(errors) = kube::core::cel::Validator::new().validate(&self.raw, obj, old) {
                for e in errors.iter() {
                    let field = e.field_path.trim_start_matches('.').to_string();
                    let value =
                        lookup(obj, &field).map(|v| format!("Invalid value: {}: ", short(v))).unwrap_or_default();
                    out.push((field, format!("{value}{}", e.message)));
                }
            }
        }
        out
    }
}

/// The value at a dotted path (`spec.replicas`).
fn lookup<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return None;
    }
    path.split('.').try_fold(obj, |v, k| v.get(k))
}

/// A value as messages quote it: scalars as JSON, objects as `"object"`.
fn short(v: &Value) -> String {
    match v {
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

/// `/spec/zones/0` -> `spec.zones[0]`.
fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').filter(|s| !s.is_empty()) {
        if seg.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg.replace("~1", "/").replace("~0", "~"));
        }
    }
    out
}

/// One JSON-schema error as the API server words it.
fn describe(e: &jsonschema::ValidationError<'_>) -> (String, String) {
    let path = field_path(&e.instance_path().to_string());
    let value = short(e.instance());
    match e.kind() {
        ValidationErrorKind::Required { property } => {
            let prop = property.as_str().unwrap_or_default();
            let field = if path.is_empty() { prop.to_string() } else { format!("{path}.{prop}") };
            (field, "Required value".into())
        }
        ValidationErrorKind::Enum { options } => {
            let supported: Vec<String> =
                options.as_array().map(|a| a.iter().map(|o| o.to_string()).collect()).unwrap_or_default();
            (path, format!("Unsupported value: {value}: supported values: {}", supported.join(", ")))
        }
        ValidationErrorKind::Type { kind } => {
            let want = format!("{kind:?}").to_lowercase();
            let want = want.trim_start_matches("single(").trim_end_matches(')').to_string();
            (path.clone(), format!("Invalid value: {value}: {path} in body must be of type {want}"))
        }
        ValidationErrorKind::Minimum { limit } => {
            (path.clone(), format!("Invalid value: {value}: {path} in body should be greater than or equal to {limit}"))
        }
        ValidationErrorKind::Maximum { limit } => {
            (path.clone(), format!("Invalid value: {value}: {path} in body should be less than or equal to {limit}"))
        }
        ValidationErrorKind::Pattern { pattern } => {
            (path.clone(), format!("Invalid value: {value}: {path} in body should match '{pattern}'"))
        }
        ValidationErrorKind::MaxLength { limit } => {
            (path.clone(), format!("Too long: may not be more than {limit} bytes"))
        }
        _ => (path, format!("Invalid value: {value}: {e}")),
    }
}

/// Structural schema -> JSON schema: `nullable: true` admits null.
fn to_json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let v = match k.as_str() {
                    "properties" | "patternProperties" | "definitions" => match v {
                        Value::Object(props) => {
                            Value::Object(props.iter().map(|(p, s)| (p.clone(), to_json_schema(s))).collect())
                        }
                        other => other.clone(),
                    },
                    "items" | "additionalProperties" | "not" => to_json_schema(v),
                    "allOf" | "anyOf" | "oneOf" => match v {
                        Value::Array(a) => Value::Array(a.iter().map(to_json_schema).collect()),
                        other => other.clone(),
                    },
                    // Not validation keywords here (defaults are applied
                    // before validating; CEL rules run separately).
                    "default" | "x-kubernetes-validations" => continue,
                    _ => v.clone(),
                };
                out.insert(k.clone(), v);
            }
            if map.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(t)) = map.get("type") {
                    out.insert("type".into(), serde_json::json!([t, "null"]));
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

fn prune(schema: &Value, obj: &mut Value, path: &str, removed: &mut Vec<String>, root: bool) {
    if schema["x-kubernetes-preserve-unknown-fields"] == true && schema.get("properties").is_none() {
        return;
    }
    match obj {
        Value::Object(map) => {
            if let Some(props) = schema["properties"].as_object() {
                let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
                let keys: Vec<String> = map.keys().cloned().collect();
                for k in keys {
                    let child_path = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                        continue;
                    }
                    match props.get(&k) {
                        Some(s) => prune(s, map.get_mut(&k).unwrap(), &child_path, removed, false),
                        None if !preserve => {
                            map.remove(&k);
                            removed.push(child_path);
                        }
                        None => {}
                    }
                }
            } else if let Some(add) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, v) in map.iter_mut() {
                    prune(add, v, &format!("{path}.{k}"), removed, false);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter_mut().enumerate() {
                    prune(s, v, &format!("{path}[{i}]"), removed, false);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> CrdSchema {
        CrdSchema::new(json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["replicas"],
                    "properties": {
                        "replicas": {"type": "integer", "minimum": 1, "maximum": 9},
                        "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                        "name": {"type": "string", "pattern": "^[a-z]+$", "nullable": true},
                    },
                    "x-kubernetes-validations": [{"rule": "self.replicas != 4", "message": "four is unlucky"}],
                }
            }
        }))
        .unwrap()
    }

    #[test]
    fn defaults_then_validates_naming_the_field() {
        let s = schema();
        let obj = s.default(&json!({"spec": {"replicas": 3}}));
        assert_eq!(obj["spec"]["mode"], "a");
        assert!(s.validate(&obj, None).is_empty());
        let errs = s.validate(&json!({"spec": {"replicas": 0}}), None);
        assert_eq!(errs[0].0, "spec.replicas", "{errs:?}");
        assert!(errs[0].1.contains("greater than or equal to 1"), "{errs:?}");
        let errs = s.validate(&json!({"spec": {}}), None);
        assert_eq!(errs, vec![("spec.replicas".to_string(), "Required value".to_string())]);
        let errs = s.validate(&json!({"spec": {"replicas": 2, "mode": "c"}}), None);
        assert_eq!(errs[0].0, "spec.mode");
        assert!(s.validate(&json!({"spec": {"replicas": 2, "name": null}}), None).is_empty());
    }

    #[test]
    fn cel_rules_run_after_structural_rules() {
        let errs = schema().validate(&json!({"spec": {"replicas": 4}}), None);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "spec");
        assert!(errs[0].1.contains("four is unlucky"));
    }

    #[test]
    fn prunes_unknown_fields_but_not_metadata() {
        let mut obj = json!({"metadata": {"name": "x"}, "spec": {"replicas": 1, "bogus": 1}, "other": 2});
        let removed = schema().prune(&mut obj);
        assert_eq!(removed, vec!["other".to_string(), "spec.bogus".to_string()]);
        assert_eq!(obj["metadata"]["name"], "x");
    }
}
