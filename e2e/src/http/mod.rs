//! The API server: one handler that routes Kubernetes REST paths to
//! discovery, OpenAPI, object operations, watches, subresources (status,
//! scale, pod log, eviction) and the simulator's `/sim` fault hooks.

pub mod discovery;
pub mod openapi;
pub mod protobuf;
pub mod route;
pub mod table;
pub mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::auth::Authorizer;
use crate::error::{ApiError, ApiResult};
use crate::objects::{DeleteOpts, FieldValidation, Objects, Part, PatchType, WriteOpts};
use crate::registry::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use route::{ObjectPath, Route};

/// Largest request body accepted.
const MAX_BODY: usize = 16 << 20;

/// The simulator's `/sim/...` endpoints (fault hooks), provided by the
/// part of the simulator that owns processes.
pub trait SimHooks: Send + Sync {
    /// Handles `METHOD /sim/<segments>`; the query parameters are given.
    fn handle(
        &self,
        method: Method,
        segments: Vec<String>,
        query: HashMap<String, String>,
    ) -> BoxFuture<'static, ApiResult<Value>>;
}

/// What the handler needs.
#[derive(Clone)]
pub struct AppState {
    pub objects: Objects,
    /// `host:port` clients reach the server at.
    pub server_address: String,
    /// Pod logs: `<pods_dir>/<namespace>/<pod>/<container>.log`.
    pub pods_dir: PathBuf,
    pub sim: Option<Arc<dyn SimHooks>>,
    pub auth: Authorizer,
}

/// The axum router of the API server.
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(state)
}

fn json_response(code: u16, v: &Value) -> Response {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(v.to_string()))
        .expect("valid response")
}

async fn handle(State(st): State<AppState>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query: HashMap<String, String> =
        req.uri().query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let headers = req.headers().clone();
    let body = match to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return ApiError::bad_request(format!("reading the body: {e}")).into_response(),
    };
    let result = dispatch(&st, method.clone(), &path, &query, &headers, &body).await;
    match result {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(%method, %path, code = e.code, message = %e.message, "request failed");
            e.into_response()
        }
    }
}

fn parse_body(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct.starts_with("application/vnd.kubernetes.protobuf") {
        return protobuf::decode(body);
    }
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(json_err) => {
            if ct.contains("yaml") {
                serde_yaml::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("the body is not valid YAML: {e}")))
            } else {
                Err(ApiError::bad_request(format!("the body is not valid JSON: {json_err}")))
            }
        }
    }
}

fn write_opts(q: &HashMap<String, String>) -> WriteOpts {
    WriteOpts {
        dry_run: q.get("dryRun").is_some_and(|v| v == "All"),
        field_manager: q.get("fieldManager").cloned(),
        force: q.get("force").is_some_and(|v| v == "true"),
        field_validation: match q.get("fieldValidation").map(String::as_str) {
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            _ => FieldValidation::Warn,
        },
    }
}

async fn dispatch(
    st: &AppState,
    method: Method,
    path: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let reg = &st.objects.registry;
    let ok = |v: Value| Ok(json_response(200, &v));
    match route::parse(path) {
        Route::Health => Ok("ok".into_response()),
        Route::Version => ok(discovery::version()),
        Route::CoreVersions => ok(discovery::core_versions(&st.server_address)),
        Route::Groups => ok(discovery::group_list(reg)),
        Route::Group(g) => {
            discovery::group(reg, &g).map(|v| json_response(200, &v)).ok_or_else(|| ApiError::no_route(path))
        }
        Route::Resources { group, version } => discovery::resource_list(reg, &group, &version)
            .map(|v| json_response(200, &v))
            .ok_or_else(|| ApiError::no_route(path)),
        Route::OpenApiV2 => Err(ApiError::no_route(path)),
        Route::OpenApiV3 => ok(openapi::v3_index(reg)),
        Route::OpenApiV3Gv { group, version } => openapi::v3_group_version(reg, &group, &version)
            .map(|v| json_response(200, &v))
            .ok_or_else(|| ApiError::no_route(path)),
        Route::Sim(segments) => match &st.sim {
            Some(hooks) => ok(hooks.handle(method, segments, q.clone()).await?),
            None => Err(ApiError::no_route(path)),
        },
        Route::NotFound => Err(ApiError::no_route(path)),
        Route::Object(p) => {
            let rt = reg.lookup(&p.group, &p.version, &p.resource).ok_or_else(|| ApiError::no_route(path))?;
            st.auth.authorize(headers, &method, q, &rt, &p)?;
            object_request(st, method, rt, p, q, headers, body).await
        }
    }
}

fn namespace_of(rt: &ResourceType, p: &ObjectPath) -> ApiResult<String> {
    match (&p.namespace, rt.namespaced) {
        (Some(ns), true) => Ok(ns.clone()),
        (None, false) => Ok(String::new()),
        (Some(_), false) => Err(ApiError::no_route(&format!("{} is not namespaced", rt.qualified()))),
        (None, true) if p.name.is_some() => {
            Err(ApiError::no_route(&format!("{} is namespaced: use /namespaces/{{ns}}/{}", rt.qualified(), rt.plural)))
        }
        (None, true) => Ok(String::new()),
    }
}

/// Sets the apiVersion a client asked for.
fn as_version(rt: &ResourceType, version: &str, mut v: Value) -> Value {
    if v.is_object() {
        v["apiVersion"] = json!(rt.api_version(version));
    }
    v
}

#[allow(clippy::too_many_arguments)]
async fn object_request(
    st: &AppState,
    method: Method,
    rt: Arc<ResourceType>,
    p: ObjectPath,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let objects = &st.objects;
    let ns = namespace_of(&rt, &p)?;
    let accept = headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
    let table = table::wants_table(accept);
    let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))?;
    let out = |v: Value| -> ApiResult<Response> { Ok(json_response(200, &as_version(&rt, &p.version, v))) };
    let created = |v: Value| -> ApiResult<Response> { Ok(json_response(201, &as_version(&rt, &p.version, v))) };
    let opts = write_opts(q);
    let ns_filter = (!ns.is_empty()).then_some(ns.as_str());
    match (method.clone(), p.name.as_deref(), p.subresource.as_deref()) {
        (Method::GET, None, None) => {
            let watching = q.get("watch").is_some_and(|w| w == "true" || w == "1");
            if watching {
                return Ok(watch::watch(
                    objects.clone(),
                    rt.clone(),
                    watch::WatchParams {
                        namespace: ns_filter.map(String::from),
                        version: p.version.clone(),
                        labels,
                        fields,
                        resource_version: q.get("resourceVersion").cloned(),
                        bookmarks: q.get("allowWatchBookmarks").is_some_and(|v| v == "true"),
                        send_initial_events: q.get("sendInitialEvents").is_some_and(|v| v == "true"),
                        timeout: q.get("timeoutSeconds").and_then(|t| t.parse().ok()).map(Duration::from_secs),
                        table,
                    },
                ));
            }
            let (items, rv) = objects.list(&rt, ns_filter, &labels, &fields);
            let items: Vec<Value> = items.into_iter().map(|o| as_version(&rt, &p.version, o)).collect();
            if table {
                return Ok(json_response(
                    200,
                    &table::table(&rt, &items, rv, q.get("includeObject").map(String::as_str)),
                ));
            }
            Ok(json_response(
                200,
                &json!({
                    "kind": format!("{}List", rt.kind),
                    "apiVersion": rt.api_version(&p.version),
                    "metadata": {"resourceVersion": rv.to_string()},
                    "items": items,
                }),
            ))
        }
        (Method::GET, Some(name), None | Some("status")) => {
            let obj = objects.get(&rt, &ns, name)?;
            if table {
                let rv = obj["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
                let obj = as_version(&rt, &p.version, obj);
                return Ok(json_response(
                    200,
                    &table::table(&rt, &[obj], rv, q.get("includeObject").map(String::as_str)),
                ));
            }
            out(obj)
        }
        (Method::GET, Some(name), Some("scale")) => {
            let obj = objects.get(&rt, &ns, name)?;
            Ok(json_response(200, &scale_of(&rt, &obj)?))
        }
        (Method::GET, Some(name), Some("log")) if rt.plural == "pods" && rt.group.is_empty() => {
            pod_log(st, &ns, name, q).await
        }
        (Method::POST, None, None) => {
            let obj = parse_body(headers, body)?;
            created(objects.create(&rt, &ns, obj, &opts)?)
        }
        (Method::POST, Some(name), Some("eviction")) if rt.plural == "pods" => {
            let eviction = parse_body(headers, body)?;
            crate::controllers::disruption::evict(objects, &ns, name, &eviction)?;
            Ok(json_response(201, &json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201})))
        }
        (Method::PUT, Some(name), sub @ (None | Some("status"))) => {
            let obj = parse_body(headers, body)?;
            let part = if sub.is_some() { Part::Status } else { Part::Main };
            out(objects.update(&rt, &ns, name, obj, part, &opts)?)
        }
        (Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
            let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
            let ptype = PatchType::from_content_type(ct)?;
            let patch = parse_body(headers, body)?;
            let part = if sub.is_some() { Part::Status } else { Part::Main };
            let existed = ptype != PatchType::Apply || objects.get(&rt, &ns, name).is_ok();
            let v = objects.patch(&rt, &ns, name, ptype, &patch, part, &opts)?;
            if existed {
                out(v)
            } else {
                created(v)
            }
        }
        (Method::PUT | Method::PATCH, Some(name), Some("scale")) => {
            let obj = objects.get(&rt, &ns, name)?;
            let mut scale = scale_of(&rt, &obj)?;
            let body = parse_body(headers, body)?;
            if method == Method::PUT {
                scale = body;
            } else {
                let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
                match PatchType::from_content_type(ct)? {
                    PatchType::Merge | PatchType::Apply => crate::patch::merge_patch(&mut scale, &body),
                    PatchType::Strategic => crate::patch::strategic_merge(&mut scale, &body),
                    PatchType::Json => crate::patch::json_patch(&mut scale, &body)?,
                }
            }
            let replicas = scale["spec"]["replicas"]
                .as_i64()
                .ok_or_else(|| ApiError::bad_request("Scale.spec.replicas: Required value"))?;
            let paths = rt.scale.as_ref().expect("checked by scale_of");
            let mut patch = json!({});
            set_path(&mut patch, &paths.spec_replicas, json!(replicas));
            let updated = objects.patch(&rt, &ns, name, PatchType::Merge, &patch, Part::Main, &opts)?;
            Ok(json_response(200, &scale_of(&rt, &updated)?))
        }
        (Method::DELETE, Some(name), None) => {
            let d = delete_opts(q, headers, body)?;
            out(objects.delete(&rt, &ns, name, &d)?)
        }
        (Method::DELETE, None, None) => {
            let d = delete_opts(q, headers, body)?;
            let (items, rv) = objects.list(&rt, ns_filter, &labels, &fields);
            let mut deleted = Vec::new();
            for o in items {
                let ons = o["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
                let name = o["metadata"]["name"].as_str().unwrap_or_default().to_string();
                if let Ok(v) = objects.delete(&rt, &ons, &name, &d) {
                    deleted.push(v);
                }
            }
            Ok(json_response(
                200,
                &json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(&p.version), "metadata": {"resourceVersion": rv.to_string()}, "items": deleted}),
            ))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on {}{}",
            rt.qualified(),
            p.subresource.as_deref().map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    }
}

fn delete_opts(q: &HashMap<String, String>, headers: &HeaderMap, body: &[u8]) -> ApiResult<DeleteOpts> {
    let b = parse_body(headers, body)?;
    Ok(DeleteOpts {
        grace_period_seconds: q
            .get("gracePeriodSeconds")
            .and_then(|g| g.parse().ok())
            .or_else(|| b["gracePeriodSeconds"].as_i64()),
        propagation_policy: q
            .get("propagationPolicy")
            .cloned()
            .or_else(|| b["propagationPolicy"].as_str().map(String::from)),
        dry_run: q.get("dryRun").is_some_and(|v| v == "All")
            || b["dryRun"].as_array().is_some_and(|d| d.iter().any(|v| v == "All")),
        precondition_uid: b["preconditions"]["uid"].as_str().map(String::from),
        precondition_rv: b["preconditions"]["resourceVersion"].as_str().map(String::from),
    })
}

/// Sets the value at a `.a.b` path, creating maps on the way.
pub fn set_path(obj: &mut Value, path: &str, value: Value) {
    let keys: Vec<&str> = path.split('.').filter(|k| !k.is_empty()).collect();
    let mut cur = obj;
    for k in &keys[..keys.len() - 1] {
        if !cur[*k].is_object() {
            cur[*k] = json!({});
        }
        cur = &mut cur[*k];
    }
    cur[keys[keys.len() - 1]] = value;
}

/// The autoscaling/v1 Scale of an object.
fn scale_of(rt: &ResourceType, obj: &Value) -> ApiResult<Value> {
    let paths =
        rt.scale.as_ref().ok_or_else(|| ApiError::no_route(&format!("{} has no scale subresource", rt.qualified())))?;
    let spec = table::json_path(obj, &paths.spec_replicas).and_then(Value::as_i64).unwrap_or(0);
    let status = table::json_path(obj, &paths.status_replicas).and_then(Value::as_i64).unwrap_or(0);
    let selector = match &paths.label_selector {
        Some(p) => table::json_path(obj, p).and_then(Value::as_str).unwrap_or_default().to_string(),
        None => LabelSelector::from_object(&obj["spec"]["selector"]).map(|s| s.to_query()).unwrap_or_default(),
    };
    let m = &obj["metadata"];
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
        },
        "spec": {"replicas": spec},
        "status": {"replicas": status, "selector": selector},
    }))
}

async fn pod_log(st: &AppState, ns: &str, name: &str, q: &HashMap<String, String>) -> ApiResult<Response> {
    let rt = st.objects.resource(&crate::registry::GroupResource::new("", "pods"))?;
    let pod = st.objects.get(&rt, ns, name)?;
    let container = match q.get("container") {
        Some(c) => c.clone(),
        None => pod["spec"]["containers"][0]["name"].as_str().unwrap_or_default().to_string(),
    };
    let file = st.pods_dir.join(ns).join(name).join(format!("{container}.log"));
    let text = tokio::fs::read(&file).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).to_string();
    let text = match q.get("tailLines").and_then(|t| t.parse::<usize>().ok()) {
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            lines[start..].iter().map(|l| format!("{l}\n")).collect()
        }
        None => text,
    };
    if q.get("follow").is_some_and(|f| f == "true") {
        return Ok(follow_log(st.clone(), ns.to_string(), name.to_string(), file, text));
    }
    Ok(Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(Body::from(text))
        .expect("valid response"))
}

/// Streams a log file as it grows, until the pod is gone or the client leaves.
fn follow_log(st: AppState, ns: String, name: String, file: PathBuf, initial: String) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
    tokio::spawn(async move {
        let mut offset = tokio::fs::metadata(&file).await.map(|m| m.len()).unwrap_or(0);
        if tx.send(initial.into()).await.is_err() {
            return;
        }
        let pods = crate::registry::GroupResource::new("", "pods");
        while st.objects.store.get(&pods, &ns, &name).is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Ok(data) = tokio::fs::read(&file).await else { continue };
            if (data.len() as u64) > offset {
                let chunk = bytes::Bytes::copy_from_slice(&data[offset as usize..]);
                offset = data.len() as u64;
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx)) });
    Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(Body::from_stream(stream))
        .expect("valid response")
}
