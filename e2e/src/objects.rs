//! API semantics on top of the store, shared by the HTTP handlers and the
//! in-process controllers: create/update/patch/delete with metadata
//! bookkeeping (uid, generation, resourceVersion preconditions), the status
//! subresource split, defaulting and validation (CRD schemas), finalizers
//! and deletionTimestamp, graceful pod deletion, namespaces that must exist,
//! and CRDs that register their kind.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::patch;
use crate::registry::{GroupResource, Registry, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Op, Store};
use crate::strict::Strictness;
use crate::time;

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The object (status changes are ignored when it has a status subresource).
    Main,
    /// `/status`: only status changes are taken.
    Status,
}

/// How unknown fields of custom objects are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Pruned silently.
    Ignore,
    /// Pruned (the API server would add a warning).
    #[default]
    Warn,
    /// Rejected with 400.
    Strict,
}

/// Options of a write.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    /// `dryRun=All`: everything but the write.
    pub dry_run: bool,
    /// `fieldManager`.
    pub field_manager: Option<String>,
    /// `force` (server-side apply).
    pub force: bool,
    pub field_validation: FieldValidation,
}

/// The PATCH body formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Strategic,
    Json,
    Apply,
}

impl PatchType {
    /// From a Content-Type header.
    pub fn from_content_type(ct: &str) -> ApiResult<Self> {
        let ct = ct.split(';').next().unwrap_or_default().trim();
        match ct {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
            other => Err(ApiError::unsupported_media(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
            ))),
        }
    }
}

/// Options of a delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub grace_period_seconds: Option<i64>,
    /// `Orphan` removes this object's owner references from its dependents
    /// instead of letting garbage collection delete them.
    pub propagation_policy: Option<String>,
    pub dry_run: bool,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

/// The API's object operations. Cheap to clone.
#[derive(Clone)]
pub struct Objects {
    pub registry: Registry,
    pub store: Store,
    uid: Arc<AtomicU64>,
    service_ips: Arc<AtomicU64>,
    /// First three octets of ClusterIPs (`127.101.255.`).
    service_ip_prefix: Arc<str>,
    /// Which of a real cluster's rules are enforced.
    pub strict: Arc<Strictness>,
}

/// An events.k8s.io/v1 Event in its core v1 form (the API server's conversion).
pub fn core_event(ev: &Value) -> Value {
    let series = &ev["series"];
    let mut out = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": ev["metadata"],
        "involvedObject": ev["regarding"],
        "reason": ev["reason"],
        "message": ev["note"],
        "type": ev["type"],
        "action": ev["action"],
        "eventTime": ev["eventTime"],
        "reportingComponent": ev["reportingController"],
        "reportingInstance": ev["reportingInstance"],
        "source": {"component": ev["reportingController"]},
        "count": if series.is_object() { series["count"].clone() } else { ev.get("deprecatedCount").cloned().unwrap_or(json!(1)) },
        "firstTimestamp": ev["deprecatedFirstTimestamp"],
        "lastTimestamp": if series.is_object() { series["lastObservedTime"].clone() } else { ev["deprecatedLastTimestamp"].clone() },
    });
    if let Some(related) = ev.get("related") {
        out["related"] = related.clone();
    }
    if series.is_object() {
        out["series"] = json!({"count": series["count"], "lastObservedTime": series["lastObservedTime"]});
    }
    let obj = out.as_object_mut().expect("object");
    obj.retain(|_, v| !v.is_null());
    out
}

fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj["metadata"][field].as_str()
}

/// Everything but metadata and status: what a generation bump tracks.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

/// The object without volatile metadata: equal means a write is a no-op.
fn comparable(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    v
}

impl Objects {
    /// Objects over `store`, serving `registry`. ClusterIPs are taken
    /// from `service_ip_prefix` + 1..=254.
    pub fn new(registry: Registry, store: Store, service_ip_prefix: &str) -> Self {
        Objects {
            registry,
            store,
            uid: Arc::new(AtomicU64::new(1)),
            service_ips: Arc::new(AtomicU64::new(1)),
            service_ip_prefix: service_ip_prefix.into(),
            strict: Arc::new(Strictness::default()),
        }
    }

    /// The same objects with other strictness settings.
    pub fn with_strictness(mut self, strict: Strictness) -> Self {
        self.strict = Arc::new(strict);
        self
    }

    fn new_uid(&self) -> String {
        let n = self.uid.fetch_add(1, Ordering::Relaxed);
        let r: u64 = rand::random::<u64>() & 0xffff_ffff_ffff;
        format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{r:012x}", n as u32, (n >> 32) as u16, n & 0xfff, (r >> 8) & 0xfff)
    }

    /// The resource type of a storage key, or 404.
    pub fn resource(&self, key: &GroupResource) -> ApiResult<Arc<ResourceType>> {
        self.registry.get(key).ok_or_else(|| ApiError::no_route(&format!("{}.{}", key.resource, key.group)))
    }

    /// One object.
    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> ApiResult<Value> {
        self.store
            .get(&rt.key(), ns, name)
            .map(|v| (*v).clone())
            .ok_or_else(|| ApiError::not_found(&rt.qualified(), name))
    }

    /// Matching objects and the list's resourceVersion.
    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> (Vec<Value>, u64) {
        let (items, rv) = self.store.list(&rt.key(), ns);
        let mut items: Vec<Value> =
            items.into_iter().filter(|o| labels.matches_object(o) && fields.matches(o)).map(|o| (*o).clone()).collect();
        if rt.key() == GroupResource::new("", "events") {
            // One storage on a real cluster: events.k8s.io/v1 Events (what
            // kube-rs' Recorder writes) are core v1 Events too, which is
            // what `kubectl describe` lists.
            let (more, _) = self.store.list(&GroupResource::new("events.k8s.io", "events"), ns);
            let seen: std::collections::BTreeSet<(String, String)> =
                items.iter().map(|o| (meta_str(o, "namespace").unwrap_or("").into(), name_of(o).to_string())).collect();
            items.extend(
                more.iter()
                    .filter(|o| {
                        !seen.contains(&(meta_str(o, "namespace").unwrap_or("").into(), name_of(o).to_string()))
                    })
                    .map(|o| core_event(o))
                    .filter(|o| labels.matches_object(o) && fields.matches(o)),
            );
        }
        (items, rv)
    }

    fn check_namespace(&self, rt: &ResourceType, ns: &str) -> ApiResult<()> {
        if !rt.namespaced {
            return Ok(());
        }
        let nskey = GroupResource::new("", "namespaces");
        match self.store.get(&nskey, "", ns) {
            None => Err(ApiError::not_found("namespaces", ns)),
            Some(n) if n["metadata"].get("deletionTimestamp").is_some() => Err(ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                rt.qualified(),
                ns
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Checks apiVersion/kind and the namespace of a request body.
    fn check_identity(&self, rt: &ResourceType, ns: &str, obj: &mut Value) -> ApiResult<()> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the request body must be a JSON or YAML object"));
        }
        let kind = obj["kind"].as_str().unwrap_or(&rt.kind).to_string();
        if kind != rt.kind {
            return Err(ApiError::bad_request(format!(
                "the kind of the object ({kind}) does not match the resource ({})",
                rt.qualified()
            )));
        }
        let version = obj["apiVersion"]
            .as_str()
            .map(|a| crate::registry::split_api_version(a).1.to_string())
            .unwrap_or_else(|| rt.versions[0].clone());
        obj["kind"] = json!(rt.kind);
        obj["apiVersion"] = json!(rt.api_version(&version));
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        if rt.namespaced {
            match meta_str(obj, "namespace") {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                _ => obj["metadata"]["namespace"] = json!(ns),
            }
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        Ok(())
    }

    /// Creates an object.
    pub fn create(&self, rt: &ResourceType, ns: &str, mut obj: Value, opts: &WriteOpts) -> ApiResult<Value> {
        self.check_identity(rt, ns, &mut obj)?;
        self.check_namespace(rt, ns)?;
        if name_of(&obj).is_empty() {
            match meta_str(&obj, "generateName") {
                Some(prefix) if !prefix.is_empty() => {
                    let suffix: String = (0..5)
                        .map(|_| {
                            let c = b"bcdfghjklmnpqrstvwxz2456789";
                            c[rand::random_range(0..c.len())] as char
                        })
                        .collect();
                    obj["metadata"]["name"] = json!(format!("{prefix}{suffix}"));
                }
                _ => {
                    return Err(ApiError::invalid(
                        &rt.kind_group(),
                        "",
                        vec![("metadata.name".into(), "Required value: name or generateName is required".into())],
                    ))
                }
            }
        }
        let name = name_of(&obj).to_string();
        let meta = obj["metadata"].as_object_mut().unwrap();
        for f in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"] {
            meta.remove(f);
        }
        meta.insert("uid".into(), json!(self.new_uid()));
        meta.insert("creationTimestamp".into(), json!(time::now()));
        meta.insert("generation".into(), json!(1));
        if rt.status {
            if let Some(m) = obj.as_object_mut() {
                // Pods and Namespaces start with a status the server sets.
                m.remove("status");
            }
        }
        self.admit(rt, &mut obj, None, opts)?;
        if let Some(manager) = &opts.field_manager {
            patch::record_update(&json!({}), &mut obj, manager, None, &time::now());
        }
        if opts.dry_run {
            return Ok(obj);
        }
        let key = rt.key();
        let stored = self
            .store
            .write(&key, ns_of(rt, ns), &name, |cur| match cur {
                Some(_) => Err(ApiError::already_exists(&rt.qualified(), &name)),
                None => Ok(Op::Put(obj)),
            })?
            .expect("created");
        self.after_write(rt, &stored);
        Ok((*stored).clone())
    }

    /// Replaces an object (PUT), or its status.
    pub fn update(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut obj: Value,
        part: Part,
        opts: &WriteOpts,
    ) -> ApiResult<Value> {
        self.check_identity(rt, ns, &mut obj)?;
        if !name_of(&obj).is_empty() && name_of(&obj) != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                name_of(&obj)
            )));
        }
        obj["metadata"]["name"] = json!(name);
        let want_rv = meta_str(&obj, "resourceVersion").filter(|s| !s.is_empty()).map(String::from);
        self.write_existing(rt, ns, name, part, opts, want_rv, move |_| Ok(obj))
    }

    /// Applies a PATCH body of any supported type. An apply patch creates
    /// the object when it does not exist.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        ptype: PatchType,
        body: &Value,
        part: Part,
        opts: &WriteOpts,
    ) -> ApiResult<Value> {
        if ptype == PatchType::Apply {
            let manager = opts
                .field_manager
                .clone()
                .ok_or_else(|| ApiError::bad_request("PATCH with apply requires a fieldManager parameter"))?;
            let mut applied = body.clone();
            self.check_identity(rt, ns, &mut applied)?;
            if !name_of(&applied).is_empty() && name_of(&applied) != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    name_of(&applied)
                )));
            }
            applied["metadata"]["name"] = json!(name);
            if self.store.get(&rt.key(), ns_of(rt, ns), name).is_none() {
                if part == Part::Status {
                    return Err(ApiError::not_found(&rt.qualified(), name));
                }
                let obj = patch::apply(&json!({}), &applied, &manager, None, &time::now(), patch::Ownership::Force)?;
                let mut create_opts = opts.clone();
                create_opts.field_manager = None;
                return self.create(rt, ns, obj, &create_opts);
            }
            let sub = (part == Part::Status).then_some("status");
            let want_rv = meta_str(&applied, "resourceVersion").map(String::from);
            let ownership = if opts.force || !self.strict.apply_conflicts {
                patch::Ownership::Force
            } else {
                patch::Ownership::Conflicts
            };
            let mut apply_opts = opts.clone();
            // The Apply entry is the manager's record; no Update entry.
            apply_opts.field_manager = None;
            return self.write_existing(rt, ns, name, part, &apply_opts, want_rv, move |cur| {
                patch::apply(cur, &applied, &manager, sub, &time::now(), ownership)
            });
        }
        let want_rv = body["metadata"]["resourceVersion"].as_str().map(String::from);
        let body = body.clone();
        self.write_existing(rt, ns, name, part, opts, want_rv, move |cur| {
            let mut obj = cur.clone();
            match ptype {
                PatchType::Merge => patch::merge_patch(&mut obj, &body),
                PatchType::Strategic => patch::strategic_merge(&mut obj, &body),
                PatchType::Json => patch::json_patch(&mut obj, &body)?,
                PatchType::Apply => unreachable!(),
            }
            Ok(obj)
        })
    }

    /// Read-modify-write of an existing object with the update semantics.
    #[allow(clippy::too_many_arguments)]
    fn write_existing(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        part: Part,
        opts: &WriteOpts,
        want_rv: Option<String>,
        modify: impl FnOnce(&Value) -> ApiResult<Value>,
    ) -> ApiResult<Value> {
        let key = rt.key();
        let mut result: Option<Value> = None;
        let mut deleted = false;
        let mut unchanged = false;
        let out = self.store.write(&key, ns_of(rt, ns), name, |cur| {
            let cur = cur.ok_or_else(|| ApiError::not_found(&rt.qualified(), name))?;
            if let Some(rv) = &want_rv {
                if meta_str(cur, "resourceVersion") != Some(rv.as_str()) {
                    return Err(ApiError::conflict(&rt.qualified(), name));
                }
            }
            let mut new = modify(cur)?;
            self.check_identity(rt, ns, &mut new)?;
            // Immutable metadata comes from the stored object.
            for f in
                ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "name"]
            {
                match cur["metadata"].get(f) {
                    Some(v) => new["metadata"][f] = v.clone(),
                    None => {
                        new["metadata"].as_object_mut().unwrap().remove(f);
                    }
                }
            }
            if rt.status || part == Part::Status {
                match part {
                    Part::Main => match cur.get("status") {
                        Some(s) => new["status"] = s.clone(),
                        None => {
                            new.as_object_mut().unwrap().remove("status");
                        }
                    },
                    Part::Status => {
                        let status = new.get("status").cloned();
                        let managed = new["metadata"].get("managedFields").cloned();
                        new = cur.clone();
                        match status {
                            Some(s) => new["status"] = s,
                            None => {
                                new.as_object_mut().unwrap().remove("status");
                            }
                        }
                        if let Some(m) = managed {
                            new["metadata"]["managedFields"] = m;
                        }
                    }
                }
            }
            self.admit(rt, &mut new, Some(cur), opts)?;
            if spec_part(&new) != spec_part(cur) {
                let g = cur["metadata"]["generation"].as_i64().unwrap_or(1);
                new["metadata"]["generation"] = json!(g + 1);
            }
            if comparable(&new) == comparable(cur) {
                // Unchanged: no new resourceVersion, no event.
                unchanged = true;
                return Ok(Op::Keep);
            }
            if let Some(manager) = &opts.field_manager {
                patch::record_update(cur, &mut new, manager, (part == Part::Status).then_some("status"), &time::now());
            }
            let finalizers_empty = new["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty());
            if new["metadata"].get("deletionTimestamp").is_some() && finalizers_empty && !graceful_pending(rt, &new) {
                deleted = true;
                result = Some(new);
                return Ok(if opts.dry_run { Op::Keep } else { Op::Delete });
            }
            if opts.dry_run {
                result = Some(new);
                return Ok(Op::Keep);
            }
            Ok(Op::Put(new))
        })?;
        if deleted || opts.dry_run {
            if deleted && !opts.dry_run {
                self.after_delete(rt, result.as_ref().expect("set"));
            }
            return Ok(result.expect("set"));
        }
        let stored = out.expect("written");
        if !unchanged {
            self.after_write(rt, &stored);
        }
        Ok((*stored).clone())
    }

    /// Deletes an object: removed at once, or marked with a
    /// deletionTimestamp while finalizers remain or a scheduled pod
    /// terminates gracefully.
    pub fn delete(&self, rt: &ResourceType, ns: &str, name: &str, opts: &DeleteOpts) -> ApiResult<Value> {
        let key = rt.key();
        let ns = ns_of(rt, ns);
        let cur = self.store.get(&key, ns, name).ok_or_else(|| ApiError::not_found(&rt.qualified(), name))?;
        if let Some(uid) = &opts.precondition_uid {
            if meta_str(&cur, "uid") != Some(uid) {
                return Err(ApiError::conflict(&rt.qualified(), name));
            }
        }
        if let Some(rv) = &opts.precondition_rv {
            if meta_str(&cur, "resourceVersion") != Some(rv) {
                return Err(ApiError::conflict(&rt.qualified(), name));
            }
        }
        if opts.dry_run {
            return Ok((*cur).clone());
        }
        if opts.propagation_policy.as_deref() == Some("Orphan") {
            self.orphan_dependents(meta_str(&cur, "uid").unwrap_or_default());
        }
        let is_pod = key == GroupResource::new("", "pods");
        let scheduled = is_pod && cur["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
        let grace =
            opts.grace_period_seconds.or_else(|| cur["spec"]["terminationGracePeriodSeconds"].as_i64()).unwrap_or(30);
        let mut removed = false;
        let out = self.store.write(&key, ns, name, |cur| {
            let Some(cur) = cur else {
                return Err(ApiError::not_found(&rt.qualified(), name));
            };
            let mut obj = cur.clone();
            let has_finalizers = cur["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
            // Namespaces and CRDs terminate through their controllers,
            // which delete the contents first.
            let lifecycle = key == GroupResource::new("", "namespaces")
                || key == GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions");
            let marked = cur["metadata"].get("deletionTimestamp").is_some();
            if scheduled && grace > 0 || has_finalizers || lifecycle {
                if marked && !(scheduled && grace == 0) {
                    return Ok(Op::Keep);
                }
                if !(scheduled && grace == 0 && !has_finalizers) {
                    obj["metadata"]["deletionTimestamp"] = json!(time::after(if scheduled { grace } else { 0 }));
                    if scheduled {
                        obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                    }
                    if key.resource == "namespaces" {
                        obj["status"]["phase"] = json!("Terminating");
                    }
                    return Ok(Op::Put(obj));
                }
            }
            removed = true;
            Ok(Op::Delete)
        })?;
        let obj = out.map(|o| (*o).clone()).unwrap_or_else(|| (*cur).clone());
        if removed {
            self.after_delete(rt, &obj);
        }
        Ok(obj)
    }

    /// Removes an object now, whatever its finalizers (used by the
    /// kubelet after a pod terminated, and by lifecycle controllers).
    pub fn remove(&self, key: &GroupResource, ns: &str, name: &str) {
        if let Ok(Some(last)) =
            self.store.write::<ApiError>(key, ns, name, |cur| Ok(if cur.is_some() { Op::Delete } else { Op::Keep }))
        {
            if let Some(rt) = self.registry.get(key) {
                self.after_delete(&rt, &last);
            }
        }
    }

    fn orphan_dependents(&self, owner_uid: &str) {
        for key in self.store.keys() {
            let (items, _) = self.store.list(&key, None);
            for o in items {
                let refs = o["metadata"]["ownerReferences"].as_array();
                if refs.is_some_and(|r| r.iter().any(|r| r["uid"] == owner_uid)) {
                    let ns = meta_str(&o, "namespace").unwrap_or_default().to_string();
                    let _ = self.store.write::<ApiError>(&key, &ns, name_of(&o), |cur| {
                        Ok(match cur {
                            Some(c) => {
                                let mut c = c.clone();
                                if let Some(r) = c["metadata"]["ownerReferences"].as_array_mut() {
                                    r.retain(|r| r["uid"] != owner_uid);
                                }
                                Op::Put(c)
                            }
                            None => Op::Keep,
                        })
                    });
                }
            }
        }
    }

    /// Defaulting and validation of a create or update.
    fn admit(&self, rt: &ResourceType, obj: &mut Value, old: Option<&Value>, opts: &WriteOpts) -> ApiResult<()> {
        self.default_and_check(rt, obj, old, opts)?;
        if self.strict.builtin_validation {
            let errors = crate::validation::validate(rt, obj, old);
            if !errors.is_empty() {
                return Err(ApiError::invalid(&rt.kind_group(), name_of(obj), errors));
            }
        }
        Ok(())
    }

    fn default_and_check(
        &self,
        rt: &ResourceType,
        obj: &mut Value,
        old: Option<&Value>,
        opts: &WriteOpts,
    ) -> ApiResult<()> {
        if rt.custom {
            let version =
                crate::registry::split_api_version(obj["apiVersion"].as_str().unwrap_or_default()).1.to_string();
            if let Some(schema) = rt.schemas.get(&version) {
                let removed = schema.prune(obj);
                if !removed.is_empty() && opts.field_validation == FieldValidation::Strict {
                    let fields: Vec<String> = removed.iter().map(|f| format!("unknown field \"{f}\"")).collect();
                    return Err(ApiError::bad_request(format!(
                        "{} in version \"{version}\" cannot be handled as a {}: strict decoding error: {}",
                        rt.kind,
                        rt.kind,
                        fields.join(", ")
                    )));
                }
                *obj = schema.default(obj);
                let errors = schema.validate(obj, old);
                if !errors.is_empty() {
                    return Err(ApiError::invalid(&rt.kind_group(), name_of(obj), errors));
                }
            }
            return Ok(());
        }
        let key = (rt.group.as_str(), rt.plural.as_str());
        match key {
            ("", "pods") => default_pod(obj),
            ("", "namespaces") => {
                if obj["status"]["phase"].is_null() {
                    obj["status"]["phase"] = json!("Active");
                }
                obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name_of(obj));
            }
            ("", "services") => {
                let headless = obj["spec"]["clusterIP"] == "None";
                if obj["spec"]["type"].is_null() {
                    obj["spec"]["type"] = json!("ClusterIP");
                }
                if !headless {
                    match old.and_then(|o| o["spec"]["clusterIP"].as_str()) {
                        Some(ip) => obj["spec"]["clusterIP"] = json!(ip),
                        None if obj["spec"]["clusterIP"].as_str().is_none_or(str::is_empty) => {
                            let n = self.service_ips.fetch_add(1, Ordering::Relaxed);
                            if n > 254 {
                                return Err(ApiError::internal("ClusterIP range exhausted"));
                            }
                            let ip = format!("{}{n}", self.service_ip_prefix);
                            obj["spec"]["clusterIP"] = json!(ip);
                            obj["spec"]["clusterIPs"] = json!([ip]);
                        }
                        None => {}
                    }
                }
            }
            ("", "secrets") if obj["type"].is_null() => obj["type"] = json!("Opaque"),
            ("", "persistentvolumeclaims") if obj["status"]["phase"].is_null() => {
                obj["status"]["phase"] = json!("Pending")
            }
            ("apps", "statefulsets") | ("apps", "deployments") | ("apps", "replicasets") => {
                if obj["spec"]["replicas"].is_null() {
                    obj["spec"]["replicas"] = json!(1);
                }
                if rt.plural == "statefulsets" {
                    if obj["spec"]["podManagementPolicy"].is_null() {
                        obj["spec"]["podManagementPolicy"] = json!("OrderedReady");
                    }
                    if obj["spec"]["updateStrategy"]["type"].is_null() {
                        obj["spec"]["updateStrategy"]["type"] = json!("RollingUpdate");
                    }
                }
                let sel = crate::selector::LabelSelector::from_object(&obj["spec"]["selector"]);
                let labels = &obj["spec"]["template"]["metadata"]["labels"];
                if sel.as_ref().is_none_or(|s| s.is_empty() || !s.matches(labels)) {
                    return Err(ApiError::invalid(
                        &rt.kind_group(),
                        name_of(obj),
                        vec![(
                            "spec.template.metadata.labels".into(),
                            "Invalid value: `selector` does not match template `labels`".into(),
                        )],
                    ));
                }
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                let t = Registry::from_crd(obj).map_err(|e| {
                    let (f, m) = e.split_once(": ").unwrap_or(("spec", &e));
                    ApiError::invalid(&rt.kind_group(), name_of(obj), vec![(f.to_string(), m.to_string())])
                })?;
                let want = format!("{}.{}", t.plural, t.group);
                if name_of(obj) != want {
                    return Err(ApiError::invalid(
                        &rt.kind_group(),
                        name_of(obj),
                        vec![(
                            "metadata.name".into(),
                            format!("Invalid value: \"{}\": must be spec.names.plural+\".\"+spec.group", name_of(obj)),
                        )],
                    ));
                }
                let names = &obj["spec"]["names"];
                let mut accepted = names.clone();
                if accepted["singular"].is_null() {
                    accepted["singular"] = json!(t.singular);
                }
                if accepted["listKind"].is_null() {
                    accepted["listKind"] = json!(format!("{}List", t.kind));
                }
                obj["status"] = json!({
                    "acceptedNames": accepted,
                    "storedVersions": [t.versions[0]],
                    "conditions": [
                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": time::now()},
                        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": time::now()},
                    ],
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// Side effects of a removal (a deleted CRD stops being served).
    fn after_delete(&self, rt: &ResourceType, obj: &Value) {
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            if let Ok(t) = Registry::from_crd(obj) {
                self.registry.remove(&t.key());
            }
        }
    }

    /// Side effects of a stored write (CRDs register their kind).
    fn after_write(&self, rt: &ResourceType, obj: &Value) {
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            if let Ok(t) = Registry::from_crd(obj) {
                self.registry.insert(t);
            }
        }
    }
}

/// Pods whose graceful termination is still running stay until the kubelet removes them.
fn graceful_pending(rt: &ResourceType, obj: &Value) -> bool {
    rt.group.is_empty()
        && rt.plural == "pods"
        && obj["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty())
        && obj["metadata"]["deletionGracePeriodSeconds"].as_i64().is_some_and(|g| g > 0)
}

fn ns_of<'a>(rt: &ResourceType, ns: &'a str) -> &'a str {
    if rt.namespaced {
        ns
    } else {
        ""
    }
}

/// Pod defaults the API server fills in.
fn default_pod(obj: &mut Value) {
    let spec = &mut obj["spec"];
    if spec["restartPolicy"].is_null() {
        spec["restartPolicy"] = json!("Always");
    }
    if spec["terminationGracePeriodSeconds"].is_null() {
        spec["terminationGracePeriodSeconds"] = json!(30);
    }
    if spec["serviceAccountName"].is_null() {
        spec["serviceAccountName"] = json!("default");
    }
    if spec["schedulerName"].is_null() {
        spec["schedulerName"] = json!("default-scheduler");
    }
    if spec["dnsPolicy"].is_null() {
        spec["dnsPolicy"] = json!("ClusterFirst");
    }
    if obj["status"]["phase"].is_null() {
        obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
    }
}
