//! Authentication and RBAC authorization.
//!
//! Two kinds of bearer token: the administrator's (written into the
//! kubeconfig the simulator hands out; everything is allowed) and
//! service-account tokens `sa:<namespace>:<name>` (given to pods). Requests
//! with a service-account token are checked against the stored Roles,
//! ClusterRoles and their bindings as the RBAC authorizer does, so a
//! chart whose RBAC misses a rule fails here as on a real cluster.
//! Requests without a token are treated as the administrator's (the
//! simulator listens on loopback only).

use std::collections::HashMap;

use axum::http::{HeaderMap, Method};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::http::route::ObjectPath;
use crate::objects::Objects;
use crate::registry::{GroupResource, ResourceType};

/// The service-account token of `namespace/name`.
pub fn service_account_token(namespace: &str, name: &str) -> String {
    format!("sa:{namespace}:{name}")
}

/// Checks requests against RBAC objects.
#[derive(Clone)]
pub struct Authorizer {
    objects: Objects,
    admin_token: String,
}

/// The verb of a request, as RBAC names it.
fn verb(method: &Method, p: &ObjectPath, q: &HashMap<String, String>) -> &'static str {
    match *method {
        Method::GET if p.name.is_none() && q.get("watch").is_some_and(|w| w == "true" || w == "1") => "watch",
        Method::GET if p.name.is_none() => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if p.name.is_none() => "deletecollection",
        Method::DELETE => "delete",
        _ => "unknown",
    }
}

fn contains(list: &Value, want: &str) -> bool {
    list.as_array().is_some_and(|l| l.iter().any(|v| v == "*" || v.as_str() == Some(want)))
}

fn rule_allows(rule: &Value, group: &str, resource: &str, verb: &str, name: Option<&str>) -> bool {
    let names_ok = match rule["resourceNames"].as_array() {
        Some(n) if !n.is_empty() => name.is_some_and(|name| n.iter().any(|v| v.as_str() == Some(name))),
        _ => true,
    };
    contains(&rule["apiGroups"], group)
        && contains(&rule["resources"], resource)
        && contains(&rule["verbs"], verb)
        && names_ok
}

impl Authorizer {
    /// An authorizer admitting `admin_token` without checks.
    pub fn new(objects: Objects, admin_token: String) -> Self {
        Authorizer { objects, admin_token }
    }

    fn subject_matches(binding: &Value, ns: &str, sa: &str) -> bool {
        binding["subjects"].as_array().is_some_and(|subjects| {
            subjects.iter().any(|s| {
                (s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == ns)
                    || (s["kind"] == "Group"
                        && (s["name"] == "system:serviceaccounts"
                            || s["name"].as_str() == Some(&format!("system:serviceaccounts:{ns}"))))
            })
        })
    }

    fn role_rules(&self, role_ref: &Value, binding_ns: &str) -> Vec<Value> {
        let name = role_ref["name"].as_str().unwrap_or_default();
        let (key, ns) = match role_ref["kind"].as_str() {
            Some("ClusterRole") => (GroupResource::new("rbac.authorization.k8s.io", "clusterroles"), ""),
            _ => (GroupResource::new("rbac.authorization.k8s.io", "roles"), binding_ns),
        };
        self.objects.store.get(&key, ns, name).and_then(|r| r["rules"].as_array().cloned()).unwrap_or_default()
    }

    /// Admits or refuses (403) a request.
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        method: &Method,
        q: &HashMap<String, String>,
        rt: &ResourceType,
        p: &ObjectPath,
    ) -> ApiResult<()> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(token) = token.filter(|t| *t != self.admin_token) else {
            return Ok(());
        };
        let Some((sa_ns, sa)) = token.strip_prefix("sa:").and_then(|t| t.split_once(':')) else {
            return Err(ApiError { code: 401, reason: "Unauthorized", message: "Unauthorized".into(), details: None });
        };
        let verb = verb(method, p, q);
        let resource = match &p.subresource {
            Some(s) => format!("{}/{s}", rt.plural),
            None => rt.plural.clone(),
        };
        let ns = p.namespace.as_deref().filter(|_| rt.namespaced);
        let rbac = |r: &str| GroupResource::new("rbac.authorization.k8s.io", r);
        let mut rules = Vec::new();
        for b in self.objects.store.list(&rbac("clusterrolebindings"), None).0 {
            if Self::subject_matches(&b, sa_ns, sa) {
                rules.extend(self.role_rules(&b["roleRef"], ""));
            }
        }
        if let Some(ns) = ns {
            for b in self.objects.store.list(&rbac("rolebindings"), Some(ns)).0 {
                if Self::subject_matches(&b, sa_ns, sa) {
                    rules.extend(self.role_rules(&b["roleRef"], ns));
                }
            }
        }
        if rules.iter().any(|r| rule_allows(r, &rt.group, &resource, verb, p.name.as_deref())) {
            return Ok(());
        }
        let scope = match ns {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".into(),
        };
        Err(ApiError::forbidden(format!(
            "{} is forbidden: User \"system:serviceaccount:{sa_ns}:{sa}\" cannot {verb} resource \"{resource}\" in API group \"{}\" {scope}",
            rt.qualified(),
            rt.group
        )))
    }
}
