//! PATCH bodies: JSON merge patch (RFC 7386), strategic merge patch (merge
//! patch plus keyed merging of the lists Kubernetes merges by key), JSON
//! patch (RFC 6902) and server-side apply with a field-manager model.
//!
//! Server-side apply model: each `Apply` manager's field set (FieldsV1) is
//! recorded in `metadata.managedFields`. Applying merges the applied
//! configuration into the object (maps merge, lists and scalars are replaced
//! whole) and removes the fields this manager applied last time but no
//! longer does, unless another Apply manager also owns them. Non-apply
//! writes with a field manager take ownership of the fields they change.
//! A non-forced apply that changes a field another manager owns fails with
//! 409 Conflict naming the fields and managers; a forced one takes them.

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The key a strategic merge patch merges a list of objects by, from the
/// field name and the elements (the subset of Kubernetes' patchMergeKeys
/// the operator, Helm and kubectl touch).
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let has = |k: &str| items.iter().all(|i| i.get(k).is_some());
    let key = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "volumeClaimTemplates" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "ports" if has("containerPort") => "containerPort",
        "ports" => "port",
        _ => return None,
    };
    has(key).then_some(key)
}

/// Strategic merge patch: a merge patch in which lists of objects with a
/// known merge key are merged element-wise, `$patch: delete|replace`
/// directives are honoured, `$deleteFromPrimitiveList/<f>` removes values,
/// `metadata.finalizers` merges as a set, and other `$` directives are
/// dropped.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    strategic(target, patch, "")
}

fn strategic(target: &mut Value, patch: &Value, field: &str) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut clean = p.clone();
            clean.remove("$patch");
            *target = Value::Object(clean);
            return;
        }
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if let Some(list_field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(have)), Value::Array(del)) = (t.get_mut(list_field), v) {
                have.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match (t.get_mut(k), v) {
            (Some(Value::Array(have)), Value::Array(want)) if k == "finalizers" => {
                for w in want {
                    if !have.contains(w) {
                        have.push(w.clone());
                    }
                }
            }
            (Some(Value::Array(have)), Value::Array(want)) => {
                let all: Vec<Value> = have.iter().chain(want.iter()).cloned().collect();
                if let Some(key) = merge_key(k, &all) {
                    merge_keyed(have, want, key);
                } else {
                    *have = want.iter().map(strip_directives).collect();
                }
            }
            (Some(existing), _) => strategic(existing, v, k),
            (None, _) => {
                let mut fresh = Value::Null;
                strategic(&mut fresh, v, k);
                if !fresh.is_null() {
                    t.insert(k.clone(), fresh);
                }
            }
        }
    }
    let _ = field;
}

fn merge_keyed(have: &mut Vec<Value>, want: &[Value], key: &str) {
    for w in want {
        let id = w.get(key).cloned();
        let delete = w.get("$patch").and_then(Value::as_str) == Some("delete");
        match have.iter().position(|h| h.get(key) == id.as_ref()) {
            Some(i) if delete => {
                have.remove(i);
            }
            Some(i) => strategic(&mut have[i], w, ""),
            None if delete => {}
            None => have.push(strip_directives(w)),
        }
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), strip_directives(v))).collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn parent_and_key<'a>(doc: &'a mut Value, path: &str) -> ApiResult<(&'a mut Value, String)> {
    let (parent, last) =
        path.rsplit_once('/').ok_or_else(|| ApiError::bad_request(format!("invalid JSON pointer {path:?}")))?;
    let parent_val = if parent.is_empty() {
        doc
    } else {
        doc.pointer_mut(parent).ok_or_else(|| invalid_patch(format!("doc is missing path: {parent:?}")))?
    };
    Ok((parent_val, unescape(last)))
}

fn invalid_patch(msg: String) -> ApiError {
    ApiError { code: 422, reason: "Invalid", message: msg, details: None }
}

fn add(doc: &mut Value, path: &str, value: Value) -> ApiResult<()> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, key) = parent_and_key(doc, path)?;
    match parent {
        Value::Object(m) => {
            m.insert(key, value);
        }
        Value::Array(a) => {
            if key == "-" {
                a.push(value);
            } else {
                let i: usize = key.parse().map_err(|_| invalid_patch(format!("invalid array index {key:?}")))?;
                if i > a.len() {
                    return Err(invalid_patch(format!("add operation index {i} out of bounds")));
                }
                a.insert(i, value);
            }
        }
        _ => return Err(invalid_patch(format!("cannot add at {path:?}: parent is not a container"))),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> ApiResult<Value> {
    let (parent, key) = parent_and_key(doc, path)?;
    let missing = || invalid_patch(format!("remove operation does not apply: doc is missing path: {path:?}"));
    match parent {
        Value::Object(m) => m.remove(&key).ok_or_else(missing),
        Value::Array(a) => {
            let i: usize = key.parse().map_err(|_| missing())?;
            if i >= a.len() {
                return Err(missing());
            }
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

/// RFC 6902 JSON patch (add, remove, replace, move, copy, test).
pub fn json_patch(doc: &mut Value, ops: &Value) -> ApiResult<()> {
    let ops = ops.as_array().ok_or_else(|| ApiError::bad_request("a JSON patch must be an array of operations"))?;
    for op in ops {
        let path = op["path"].as_str().unwrap_or_default();
        match op["op"].as_str().unwrap_or_default() {
            "add" => add(doc, path, op["value"].clone())?,
            "remove" => {
                remove(doc, path)?;
            }
            "replace" => {
                if doc.pointer(path).is_none() {
                    return Err(invalid_patch(format!("replace operation does not apply: doc is missing key: {path}")));
                }
                *doc.pointer_mut(path).unwrap() = op["value"].clone();
            }
            "move" => {
                let from = op["from"].as_str().unwrap_or_default();
                let v = remove(doc, from)?;
                add(doc, path, v)?;
            }
            "copy" => {
                let from = op["from"].as_str().unwrap_or_default();
                let v = doc
                    .pointer(from)
                    .cloned()
                    .ok_or_else(|| invalid_patch(format!("copy from missing path {from:?}")))?;
                add(doc, path, v)?;
            }
            "test" => {
                // A missing path tests equal to null (as the API server's
                // json-patch does; kube-runtime's finalizer helper relies on it).
                if doc.pointer(path).unwrap_or(&Value::Null) != &op["value"] {
                    return Err(invalid_patch(format!(
                        "the server rejected our request due to an error in our request: testing value {path} failed"
                    )));
                }
            }
            other => return Err(ApiError::bad_request(format!("unknown JSON patch op {other:?}"))),
        }
    }
    Ok(())
}

/// Fields never owned by a manager.
fn unowned(path: &[&str]) -> bool {
    matches!(
        path,
        ["apiVersion"]
            | ["kind"]
            | ["metadata", "name"]
            | ["metadata", "namespace"]
            | ["metadata", "resourceVersion"]
            | ["metadata", "uid"]
            | ["metadata", "managedFields"]
            | ["metadata", "creationTimestamp"]
            | ["metadata", "generation"]
    )
}

/// The FieldsV1 set of an applied configuration: `{"f:spec": {"f:replicas": {}}}`.
/// Lists are atomic (owned whole).
pub fn fields_of(applied: &Value) -> Value {
    fn walk(v: &Value, path: &mut Vec<String>) -> Value {
        let mut out = Map::new();
        if let Value::Object(m) = v {
            for (k, child) in m {
                path.push(k.clone());
                let p: Vec<&str> = path.iter().map(String::as_str).collect();
                if !unowned(&p) {
                    let sub = match child {
                        Value::Object(_) => walk(child, path),
                        _ => Value::Object(Map::new()),
                    };
                    // A map the applier wrote empty is still owned.
                    if !(child.is_object() && sub.as_object().unwrap().is_empty())
                        || child.as_object().is_some_and(Map::is_empty)
                    {
                        out.insert(format!("f:{k}"), sub);
                    }
                }
                path.pop();
            }
        }
        Value::Object(out)
    }
    walk(applied, &mut Vec::new())
}

/// Leaf paths of a FieldsV1 set.
fn leaves(fields: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if let Value::Object(m) = fields {
        if m.is_empty() && !prefix.is_empty() {
            out.push(prefix.clone());
        }
        for (k, v) in m {
            if let Some(name) = k.strip_prefix("f:") {
                prefix.push(name.to_string());
                leaves(v, prefix, out);
                prefix.pop();
            }
        }
    }
}

fn contains_path(fields: &Value, path: &[String]) -> bool {
    let mut cur = fields;
    for p in path {
        match cur.get(format!("f:{p}")) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    true
}

fn remove_path(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for p in parents {
        match cur.get_mut(p) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Value::Object(m) = cur {
        m.remove(last);
    }
}

/// Merges an applied configuration: maps recursively, everything else replaced.
fn merge_applied(target: &mut Value, applied: &Value) {
    match (target.as_object_mut(), applied) {
        (Some(t), Value::Object(a)) => {
            for (k, v) in a {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge_applied(existing, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => *target = applied.clone(),
    }
}

/// Builds a FieldsV1 set from leaf paths.
fn build(paths: &[Vec<String>]) -> Value {
    let mut out = Value::Object(Map::new());
    for p in paths {
        let mut cur = &mut out;
        for k in p {
            cur =
                cur.as_object_mut().expect("map").entry(format!("f:{k}")).or_insert_with(|| Value::Object(Map::new()));
        }
    }
    out
}

fn leaf_paths(fields: &Value) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    leaves(fields, &mut Vec::new(), &mut out);
    out
}

/// Does one path contain the other (an atomic parent owns its children)?
fn related(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |cur, k| cur.get(k))
}

/// A field path as the API server prints it: `.spec.replicas`.
fn dotted(path: &[String]) -> String {
    path.iter().map(|p| format!(".{p}")).collect()
}

/// A manager as a conflict message names it.
fn printed_manager(e: &Value) -> String {
    let mut s = format!("{:?}", e["manager"].as_str().unwrap_or_default());
    if let Some(sub) = e.get("subresource").and_then(Value::as_str) {
        s.push_str(&format!(" with subresource {sub:?}"));
    }
    if e["operation"] == "Update" {
        s.push_str(&format!(" using {}", e["apiVersion"].as_str().unwrap_or_default()));
        if let Some(t) = e["time"].as_str() {
            s.push_str(&format!(" at {t}"));
        }
    }
    s
}

/// Removes `paths` (and whatever contains or is contained in them) from
/// every entry but `keep`; entries left owning nothing are dropped.
fn disown(entries: &mut Vec<Value>, paths: &[Vec<String>], keep: impl Fn(&Value) -> bool) {
    for e in entries.iter_mut().filter(|e| !keep(e)) {
        let owned = leaf_paths(&e["fieldsV1"]);
        let left: Vec<Vec<String>> = owned.iter().filter(|l| !paths.iter().any(|p| related(l, p))).cloned().collect();
        if left.len() != owned.len() {
            e["fieldsV1"] = build(&left);
        }
    }
    entries
        .retain(|e| keep(e) || e["fieldsV1"].as_object().is_some_and(|m| !m.is_empty()) || e["operation"] == "Update");
}

/// Leaf paths whose values differ between `old` and `new` (maps are
/// walked, anything else is a leaf), skipping fields no manager owns.
pub fn changed_paths(old: &Value, new: &Value) -> Vec<Vec<String>> {
    fn walk(old: Option<&Value>, new: Option<&Value>, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        if unowned(&p) || (path.len() == 1 && path[0] == "status") {
            return;
        }
        match (old, new) {
            (Some(Value::Object(a)), Some(Value::Object(b))) => {
                let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for k in keys {
                    path.push(k.clone());
                    walk(a.get(k), b.get(k), path, out);
                    path.pop();
                }
            }
            (a, b) if a != b && !path.is_empty() => out.push(path.clone()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(Some(old), Some(new), &mut Vec::new(), &mut out);
    out
}

/// Field ownership after a non-apply write by `manager`: it takes the
/// fields it changed from every other manager (as on a real API server).
pub fn record_update(old: &Value, new: &mut Value, manager: &str, subresource: Option<&str>, now: &str) {
    let mut changed = changed_paths(old, new);
    if subresource == Some("status") {
        changed = changed_paths(&serde_json::json!({"s": old["status"]}), &serde_json::json!({"s": new["status"]}))
            .into_iter()
            .map(|mut p| {
                p[0] = "status".into();
                p
            })
            .collect();
    }
    let is_mine = |e: &Value| {
        e["manager"] == manager
            && e["operation"] == "Update"
            && e.get("subresource").and_then(Value::as_str) == subresource
    };
    let mut entries: Vec<Value> = new["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
    disown(&mut entries, &changed, is_mine);
    let mut mine: Vec<Vec<String>> =
        entries.iter().find(|e| is_mine(e)).map(|e| leaf_paths(&e["fieldsV1"])).unwrap_or_default();
    entries.retain(|e| !is_mine(e));
    // Fields it removed are owned by nobody.
    mine.retain(|p| !changed.iter().any(|c| related(p, c)));
    mine.extend(changed.into_iter().filter(|p| value_at(new, p).is_some()));
    let mut entry = serde_json::json!({
        "manager": manager,
        "operation": "Update",
        "apiVersion": new["apiVersion"],
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": build(&mine),
    });
    if let Some(s) = subresource {
        entry["subresource"] = Value::String(s.into());
    }
    entries.push(entry);
    new["metadata"]["managedFields"] = Value::Array(entries);
}

/// How an apply treats fields other managers own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// A change to another manager's field is a 409 Conflict.
    Conflicts,
    /// `force=true` (or conflicts not enforced): the applier takes them.
    Force,
}

/// Server-side apply of `applied` by `manager` onto `existing` (the
/// current object, or an empty object for a create). `subresource` is
/// recorded in the managedFields entry. Returns the new object, or a 409
/// naming each field another manager owns whose value the apply changes
/// (unless `ownership` is [`Ownership::Force`], which takes them over).
pub fn apply(
    existing: &Value,
    applied: &Value,
    manager: &str,
    subresource: Option<&str>,
    now: &str,
    ownership: Ownership,
) -> ApiResult<Value> {
    let mut obj = existing.clone();
    let mut managed: Vec<Value> = existing["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
    let is_mine = |e: &Value| {
        e["manager"] == manager
            && e["operation"] == "Apply"
            && e.get("subresource").and_then(Value::as_str) == subresource
    };
    let new_fields = fields_of(applied);
    let mine = leaf_paths(&new_fields);
    // Fields of others whose value this apply changes.
    let mut merged = existing.clone();
    merge_applied(&mut merged, applied);
    let mut conflicts = Vec::new();
    let mut taken = Vec::new();
    for e in managed.iter().filter(|e| !is_mine(e)) {
        for l in leaf_paths(&e["fieldsV1"]) {
            if mine.iter().any(|p| related(p, &l)) && value_at(existing, &l) != value_at(&merged, &l) {
                conflicts.push((dotted(&l), printed_manager(e)));
                taken.push(l);
            }
        }
    }
    if !conflicts.is_empty() && ownership == Ownership::Conflicts {
        return Err(ApiError::apply_conflict(&conflicts));
    }
    disown(&mut managed, &taken, is_mine);
    if let Some(prev) = managed.iter().find(|e| is_mine(e)) {
        for path in leaf_paths(&prev["fieldsV1"]) {
            let owned_elsewhere = managed
                .iter()
                .filter(|e| !is_mine(e) && e["operation"] == "Apply")
                .any(|e| contains_path(&e["fieldsV1"], &path));
            if !contains_path(&new_fields, &path) && !owned_elsewhere {
                remove_path(&mut obj, &path);
            }
        }
    }
    merge_applied(&mut obj, applied);
    let mut entry = serde_json::json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": applied["apiVersion"],
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": new_fields,
    });
    if let Some(s) = subresource {
        entry["subresource"] = Value::String(s.into());
    }
    let mut entries: Vec<Value> = managed.into_iter().filter(|e| !is_mine(e)).collect();
    entries.push(entry);
    obj["metadata"]["managedFields"] = Value::Array(entries);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_removes_nulls() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut t, &json!({"a": null, "b": {"c": 5}}));
        assert_eq!(t, json!({"b": {"c": 5, "d": 3}}));
    }

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let mut t = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        strategic_merge(
            &mut t,
            &json!({"spec": {"containers": [{"name": "b", "image": "z"}, {"name": "a", "$patch": "delete"}],
                     "$setElementOrder/containers": [{"name": "b"}]}}),
        );
        assert_eq!(t, json!({"spec": {"containers": [{"name": "b", "image": "z"}]}}));
    }

    #[test]
    fn json_patch_test_op_fails_on_mismatch() {
        let mut t = json!({"metadata": {"finalizers": ["a"]}});
        json_patch(&mut t, &json!([{"op": "add", "path": "/metadata/finalizers/-", "value": "b"}])).unwrap();
        assert_eq!(t["metadata"]["finalizers"], json!(["a", "b"]));
        let err = json_patch(&mut t, &json!([{"op": "test", "path": "/metadata/finalizers", "value": ["a"]}]));
        assert_eq!(err.unwrap_err().code, 422);
        json_patch(&mut t, &json!([{"op": "remove", "path": "/metadata/finalizers/0"}])).unwrap();
        json_patch(&mut t, &json!([{"op": "test", "path": "/metadata/missing", "value": null}])).unwrap();
        assert_eq!(t["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_applying() {
        let now = "2024-01-01T00:00:00Z";
        let first = apply(
            &json!({}),
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"x": "1", "y": "2"}}),
            "m",
            None,
            now,
            Ownership::Conflicts,
        )
        .unwrap();
        assert_eq!(first["data"], json!({"x": "1", "y": "2"}));
        // Another manager's field survives; "y" is dropped by its owner.
        let mut edited = first.clone();
        edited["data"]["z"] = json!("3");
        let second = apply(
            &edited,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "9"}}),
            "m",
            None,
            now,
            Ownership::Conflicts,
        )
        .unwrap();
        assert_eq!(second["data"], json!({"x": "9", "z": "3"}));
        assert!(second["metadata"].get("labels").is_none_or(|l| l.get("a").is_none()));
        let managed = second["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(managed.len(), 1);
        assert_eq!(managed[0]["fieldsV1"], json!({"f:data": {"f:x": {}}}));
    }

    #[test]
    fn apply_conflicts_with_another_manager_unless_forced() {
        let now = "2024-01-01T00:00:00Z";
        let cm =
            |x: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": x}});
        let first = apply(&json!({}), &cm("1"), "a", None, now, Ownership::Conflicts).unwrap();
        // The same value: shared ownership, no conflict.
        let shared = apply(&first, &cm("1"), "b", None, now, Ownership::Conflicts).unwrap();
        assert_eq!(shared["metadata"]["managedFields"].as_array().unwrap().len(), 2);
        let err = apply(&first, &cm("2"), "b", None, now, Ownership::Conflicts).unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(err.message, "Apply failed with 1 conflict: conflict with \"a\": .data.x");
        let forced = apply(&first, &cm("2"), "b", None, now, Ownership::Force).unwrap();
        assert_eq!(forced["data"]["x"], "2");
        let managers: Vec<&str> = forced["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, vec!["b"]);
        // An update takes the fields it changes from the applier.
        let mut edited = first.clone();
        edited["data"]["x"] = json!("3");
        record_update(&first, &mut edited, "kubectl-edit", None, now);
        let err = apply(&edited, &cm("1"), "a", None, now, Ownership::Conflicts).unwrap_err();
        assert!(
            err.message.contains("conflict with \"kubectl-edit\" using v1 at 2024-01-01T00:00:00Z: .data.x"),
            "{}",
            err.message
        );
    }
}
