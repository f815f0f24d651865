//! OpenAPI v3 documents for `kubectl explain`: one document per served
//! group/version, with the schemas of custom resources (built-in kinds have
//! no schema here). `/openapi/v2` is answered 404, which Helm and kubectl
//! accept as "no client-side schema validation".

use serde_json::{json, Map, Value};

use crate::registry::Registry;

/// Schema name of a kind: `keyraft.io` `v1alpha1` `KeyraftCluster` ->
/// `io.keyraft.v1alpha1.KeyraftCluster`.
fn schema_name(group: &str, version: &str, kind: &str) -> String {
    let rev: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", rev.join("."))
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: where each group/version's document is.
pub fn v3_index(reg: &Registry) -> Value {
    let mut paths = Map::new();
    for t in reg.all() {
        for v in &t.versions {
            let p = gv_path(&t.group, v);
            paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=0")}));
        }
    }
    json!({"paths": paths})
}

/// `/openapi/v3/apis/{group}/{version}`.
pub fn v3_group_version(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let types: Vec<_> =
        reg.all().into_iter().filter(|t| t.group == group && t.versions.iter().any(|v| v == version)).collect();
    if types.is_empty() {
        return None;
    }
    let mut schemas = Map::new();
    let mut paths = Map::new();
    for t in &types {
        let name = schema_name(&t.group, version, &t.kind);
        let mut schema = t.schemas.get(version).map(|s| s.raw().clone()).unwrap_or_else(
            || json!({"type": "object", "description": format!("{} (no schema in the simulator)", t.kind)}),
        );
        schema["x-kubernetes-group-version-kind"] = json!([{"group": t.group, "version": version, "kind": t.kind}]);
        schemas.insert(name.clone(), schema);
        let prefix = format!("/{}", gv_path(&t.group, version));
        let path = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
        } else {
            format!("{prefix}/{}/{{name}}", t.plural)
        };
        let reference = json!({"$ref": format!("#/components/schemas/{name}")});
        let gvk = json!({"group": t.group, "version": version, "kind": t.kind});
        // kubectl looks for the fieldValidation parameter on the PATCH
        // operation of a kind to decide that the server validates fields
        // (otherwise it falls back to client-side validation with /openapi/v2).
        let params: Vec<Value> = ["fieldValidation", "fieldManager", "dryRun", "force"]
            .iter()
            .map(|p| json!({"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
            .collect();
        let op = |action: &str| {
            json!({
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
            })
        };
        paths.insert(
            path,
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete"), "parameters": params}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.35.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
