//! Server-side printing (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`),
//! which `kubectl get` asks for: CRD printer columns, and a few columns per
//! built-in kind.

use serde_json::{json, Value};

use crate::registry::ResourceType;
use crate::time::human_age;

/// Does an Accept header ask for a Table?
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|first| first.contains("as=Table"))
}

/// Evaluates the JSONPath subset printer columns use: `.a.b`, `[0]`,
/// `[?(@.type=="Ready")]`.
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            if !key.is_empty() {
                cur = cur.get(key)?;
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (k, v) = filter.split_once("==")?;
                let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
                cur = cur.as_array()?.iter().find(|e| e.get(k.trim()).and_then(Value::as_str) == Some(v))?;
            } else {
                cur = cur.get(inner.parse::<usize>().ok()?)?;
            }
        } else {
            return None;
        }
    }
    Some(cur)
}

fn column(name: &str, type_: &str, description: &str, priority: i64) -> Value {
    let mut c = json!({"name": name, "type": type_, "format": "", "description": description, "priority": priority});
    if name == "Name" {
        c["format"] = json!("name");
    }
    c
}

fn cell(v: Option<&Value>, type_: &str) -> Value {
    match (v, type_) {
        (None | Some(Value::Null), _) => Value::Null,
        (Some(Value::String(s)), "date") => json!(human_age(s)),
        (Some(v), _) => v.clone(),
    }
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let statuses = o["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
    let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
    let ready = statuses.iter().filter(|s| s["ready"] == true).count();
    let restarts: i64 = statuses.iter().filter_map(|s| s["restartCount"].as_i64()).sum();
    let mut status = o["status"]["phase"].as_str().unwrap_or("Pending").to_string();
    if let Some(reason) = statuses.iter().find_map(|s| s["state"]["waiting"]["reason"].as_str()) {
        status = reason.to_string();
    }
    if o["metadata"].get("deletionTimestamp").is_some() {
        status = "Terminating".into();
    }
    vec![
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts),
        json!(human_age(o["metadata"]["creationTimestamp"].as_str().unwrap_or_default())),
        o["status"]["podIP"].clone(),
        o["spec"]["nodeName"].clone(),
    ]
}

/// Columns (after Name) and a function computing a row's cells.
/// Computes a row's cells (after Name).
type Cells<'a> = Box<dyn Fn(&Value) -> Vec<Value> + 'a>;

fn columns(rt: &ResourceType) -> (Vec<Value>, Cells<'_>) {
    let age = |o: &Value| json!(human_age(o["metadata"]["creationTimestamp"].as_str().unwrap_or_default()));
    if rt.custom && !rt.printer_columns.is_empty() {
        let cols = rt.printer_columns.iter().map(|c| column(&c.name, &c.type_, &c.description, c.priority)).collect();
        return (
            cols,
            Box::new(move |o| rt.printer_columns.iter().map(|c| cell(json_path(o, &c.json_path), &c.type_)).collect()),
        );
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => (
            vec![
                column("Ready", "string", "", 0),
                column("Status", "string", "", 0),
                column("Restarts", "integer", "", 0),
                column("Age", "string", "", 0),
                column("IP", "string", "", 1),
                column("Node", "string", "", 1),
            ],
            Box::new(pod_cells),
        ),
        ("", "nodes") => (
            vec![column("Status", "string", "", 0), column("Zone", "string", "", 0), column("Age", "string", "", 0)],
            Box::new(move |o| {
                let ready = json_path(o, ".status.conditions[?(@.type==\"Ready\")].status");
                let status = if ready.and_then(Value::as_str) == Some("True") { "Ready" } else { "NotReady" };
                vec![json!(status), o["metadata"]["labels"]["topology.kubernetes.io/zone"].clone(), age(o)]
            }),
        ),
        ("apps", "statefulsets") | ("apps", "deployments") | ("apps", "replicasets") => (
            vec![column("Ready", "string", "", 0), column("Age", "string", "", 0)],
            Box::new(move |o| {
                let ready = o["status"]["readyReplicas"].as_i64().unwrap_or(0);
                let want = o["spec"]["replicas"].as_i64().unwrap_or(0);
                vec![json!(format!("{ready}/{want}")), age(o)]
            }),
        ),
        ("", "persistentvolumeclaims") | ("", "namespaces") => (
            vec![column("Status", "string", "", 0), column("Age", "string", "", 0)],
            Box::new(move |o| vec![o["status"]["phase"].clone(), age(o)]),
        ),
        ("", "services") => (
            vec![
                column("Type", "string", "", 0),
                column("Cluster-IP", "string", "", 0),
                column("Age", "string", "", 0),
            ],
            Box::new(move |o| vec![o["spec"]["type"].clone(), o["spec"]["clusterIP"].clone(), age(o)]),
        ),
        _ => (vec![column("Age", "string", "", 0)], Box::new(move |o| vec![age(o)])),
    }
}

/// A Table of objects. `include_object` is the `includeObject` parameter
/// (`Object`, `Metadata` (default) or `None`).
pub fn table(rt: &ResourceType, items: &[Value], rv: u64, include_object: Option<&str>) -> Value {
    let (cols, cells) = columns(rt);
    let mut defs = vec![column("Name", "string", "Name must be unique within a namespace.", 0)];
    defs.extend(cols);
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut c = vec![o["metadata"]["name"].clone()];
            c.extend(cells(o));
            let object = match include_object {
                Some("Object") => o.clone(),
                Some("None") => Value::Null,
                _ => {
                    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]})
                }
            };
            json!({"cells": c, "object": object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_subset() {
        let o = json!({"status": {"phase": "Ready", "conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(json_path(&o, ".status.phase"), Some(&json!("Ready")));
        assert_eq!(json_path(&o, ".status.conditions[1].type"), Some(&json!("Ready")));
        assert_eq!(json_path(&o, ".status.conditions[?(@.type==\"Ready\")].status"), Some(&json!("True")));
        assert_eq!(json_path(&o, ".spec.replicas"), None);
    }
}
