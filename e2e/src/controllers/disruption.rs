//! PodDisruptionBudgets: the disruption controller's status
//! (expectedPods, desiredHealthy, currentHealthy, disruptionsAllowed,
//! disruptedPods, the DisruptionAllowed condition) and the Eviction
//! subresource's check-and-decrement, as the real API server does them:
//! an eviction that would leave fewer healthy pods than the budget wants
//! gets 429 TooManyRequests.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use super::{name, patch_status, pod_ready, rt, terminating, uid};
use crate::error::{ApiError, ApiResult};
use crate::objects::{DeleteOpts, Objects, Part, WriteOpts};
use crate::selector::LabelSelector;
use crate::time;

/// How long an evicted pod counts as disrupted while it has not been
/// deleted yet (the real controller's DeletionTimeout).
const DELETION_TIMEOUT_SECS: i64 = 120;

/// The message of the 429 (the API server's words).
pub const VIOLATION: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// An IntOrString budget value: a count, or a percentage of `total`
/// rounded up.
fn scaled(v: &Value, total: i64) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => match s.strip_suffix('%') {
            Some(p) => p.parse::<i64>().ok().map(|p| (p * total + 99) / 100),
            None => s.parse().ok(),
        },
        _ => None,
    }
}

/// Pods a budget selects: same namespace; an empty selector selects all,
/// a missing one none.
fn selected(pdb: &Value, pods: &[std::sync::Arc<Value>]) -> Vec<Value> {
    let ns = super::namespace(pdb);
    let sel = &pdb["spec"]["selector"];
    if sel.is_null() {
        return Vec::new();
    }
    let Some(selector) = LabelSelector::from_object(sel) else { return Vec::new() };
    pods.iter().filter(|p| super::namespace(p) == ns && selector.matches_object(p)).map(|p| (**p).clone()).collect()
}

/// The scale of the pods' controllers (StatefulSet, Deployment via its
/// ReplicaSet, ReplicaSet), each counted once; `None` when a pod has no
/// controller with a scale (the real controller then allows nothing).
fn expected_scale(objects: &Objects, ns: &str, pods: &[Value]) -> Option<i64> {
    let mut seen = HashSet::new();
    let mut total = 0;
    for p in pods {
        let owner = p["metadata"]["ownerReferences"].as_array()?.iter().find(|r| r["controller"] == true)?;
        let (kind, oname) = (owner["kind"].as_str()?, owner["name"].as_str()?);
        let mut ctrl = match kind {
            "StatefulSet" => objects.store.get(&rt(objects, "apps", "statefulsets").key(), ns, oname)?,
            "ReplicaSet" => objects.store.get(&rt(objects, "apps", "replicasets").key(), ns, oname)?,
            _ => return None,
        };
        if kind == "ReplicaSet" {
            let dep = ctrl["metadata"]["ownerReferences"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["controller"] == true && r["kind"] == "Deployment").cloned());
            if let Some(d) = dep {
                ctrl = objects.store.get(&rt(objects, "apps", "deployments").key(), ns, d["name"].as_str()?)?;
            }
        }
        if seen.insert(uid(&ctrl).to_string()) {
            total += ctrl["spec"]["replicas"].as_i64().unwrap_or(1);
        }
    }
    Some(total)
}

/// The status the disruption controller computes for `pdb` over `pods`.
fn compute(objects: &Objects, pdb: &Value, pods: &[Value]) -> Value {
    let ns = super::namespace(pdb);
    let spec = &pdb["spec"];
    // Evicted pods not yet deleted stay out of the healthy count for a while.
    let mut disrupted = Map::new();
    for (pod, at) in pdb["status"]["disruptedPods"].as_object().into_iter().flatten() {
        let live = pods.iter().any(|p| name(p) == pod && !terminating(p));
        if live && at.as_str().is_some_and(|t| time::age_secs(t) < DELETION_TIMEOUT_SECS) {
            disrupted.insert(pod.clone(), at.clone());
        }
    }
    let healthy =
        pods.iter().filter(|p| !terminating(p) && !disrupted.contains_key(name(p)) && pod_ready(p)).count() as i64;
    let budget = if let Some(min) = spec.get("minAvailable").filter(|v| !v.is_null()) {
        match min {
            Value::Number(n) => Some((pods.len() as i64, n.as_i64().unwrap_or(0))),
            _ => expected_scale(objects, ns, pods).map(|total| (total, scaled(min, total).unwrap_or(total))),
        }
    } else {
        let max = spec.get("maxUnavailable").filter(|v| !v.is_null()).cloned().unwrap_or(json!(0));
        expected_scale(objects, ns, pods).map(|total| (total, (total - scaled(&max, total).unwrap_or(0)).max(0)))
    };
    let (expected, desired, allowed) = match budget {
        Some((expected, desired)) => (expected, desired, (healthy - desired).max(0)),
        None => (pods.len() as i64, 0, 0),
    };
    let allowed_now = allowed > 0;
    let old_cond =
        pdb["status"]["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "DisruptionAllowed"));
    let status = if allowed_now { "True" } else { "False" };
    let condition = match old_cond {
        Some(c) if c["status"] == status => c.clone(),
        _ => json!({
            "type": "DisruptionAllowed",
            "status": status,
            "reason": if budget.is_none() { "SyncFailed" } else if allowed_now { "SufficientPods" } else { "InsufficientPods" },
            "message": "",
            "lastTransitionTime": time::now(),
            "observedGeneration": pdb["metadata"]["generation"],
        }),
    };
    // A merge patch: pods no longer disrupted are removed with null.
    let mut disrupted_patch = disrupted.clone();
    for k in pdb["status"]["disruptedPods"].as_object().into_iter().flatten().map(|(k, _)| k) {
        if !disrupted.contains_key(k) {
            disrupted_patch.insert(k.clone(), Value::Null);
        }
    }
    json!({
        "observedGeneration": pdb["metadata"]["generation"],
        "expectedPods": expected,
        "desiredHealthy": desired,
        "currentHealthy": healthy,
        "disruptionsAllowed": allowed,
        "disruptedPods": disrupted_patch,
        "conditions": [condition],
    })
}

/// Disruption controller pass: every budget's status.
pub fn reconcile(objects: &Objects) {
    let pdb_rt = rt(objects, "policy", "poddisruptionbudgets");
    let (pdbs, _) = objects.store.list(&pdb_rt.key(), None);
    if pdbs.is_empty() {
        return;
    }
    let (pods, _) = objects.store.list(&rt(objects, "", "pods").key(), None);
    for pdb in &pdbs {
        let status = compute(objects, pdb, &selected(pdb, &pods));
        let _ = patch_status(objects, &pdb_rt, super::namespace(pdb), name(pdb), status);
    }
}

/// Pods the eviction API deletes without asking a budget.
fn can_ignore_budget(pod: &Value) -> bool {
    terminating(pod) || matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed" | "Pending") | None)
}

/// `POST pods/NAME/eviction` with a policy/v1 Eviction body.
pub fn evict(objects: &Objects, ns: &str, pod_name: &str, eviction: &Value) -> ApiResult<()> {
    let pods_rt = rt(objects, "", "pods");
    let pdb_rt = rt(objects, "policy", "poddisruptionbudgets");
    let d = &eviction["deleteOptions"];
    let delete = DeleteOpts {
        grace_period_seconds: d["gracePeriodSeconds"].as_i64(),
        dry_run: d["dryRun"].as_array().is_some_and(|v| v.iter().any(|v| v == "All")),
        precondition_uid: d["preconditions"]["uid"].as_str().map(String::from),
        precondition_rv: d["preconditions"]["resourceVersion"].as_str().map(String::from),
        ..DeleteOpts::default()
    };
    let pod = objects.get(&pods_rt, ns, pod_name)?;
    if !objects.strict.pdb_eviction || can_ignore_budget(&pod) {
        objects.delete(&pods_rt, ns, pod_name, &delete)?;
        return Ok(());
    }
    for _attempt in 0..10 {
        let (pdbs, _) = objects.store.list(&pdb_rt.key(), Some(ns));
        let pod_arc = std::sync::Arc::new(pod.clone());
        let mine: Vec<_> = pdbs.iter().filter(|b| !selected(b, std::slice::from_ref(&pod_arc)).is_empty()).collect();
        let pdb =
            match mine.as_slice() {
                [] => {
                    objects.delete(&pods_rt, ns, pod_name, &delete)?;
                    return Ok(());
                }
                [one] => (***one).clone(),
                _ => return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                )),
            };
        let st = &pdb["status"];
        let (healthy, desired) =
            (st["currentHealthy"].as_i64().unwrap_or(0), st["desiredHealthy"].as_i64().unwrap_or(0));
        if !pod_ready(&pod) {
            let always = pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
            if always || (healthy >= desired && desired > 0) {
                objects.delete(&pods_rt, ns, pod_name, &delete)?;
                return Ok(());
            }
        }
        let pdb_name = name(&pdb).to_string();
        if st["observedGeneration"].as_i64() < pdb["metadata"]["generation"].as_i64() {
            return Err(ApiError::too_many_requests(
                VIOLATION,
                Some(format!("The disruption budget {pdb_name} is still being processed by the server.")),
            ));
        }
        let allowed = st["disruptionsAllowed"].as_i64().unwrap_or(0);
        if allowed < 0 {
            return Err(ApiError::forbidden(format!(
                "poddisruptionbudgets.policy \"{pdb_name}\" is forbidden: pdb disruptions allowed is negative"
            )));
        }
        if allowed == 0 {
            return Err(ApiError::too_many_requests(
                VIOLATION,
                Some(format!(
                    "The disruption budget {pdb_name} needs {desired} healthy pods and has {healthy} currently"
                )),
            ));
        }
        if delete.dry_run {
            return Ok(());
        }
        let mut updated = pdb.clone();
        updated["status"]["disruptionsAllowed"] = json!(allowed - 1);
        updated["status"]["disruptedPods"][pod_name] = json!(time::now());
        match objects.update(&pdb_rt, ns, &pdb_name, updated, Part::Status, &WriteOpts::default()) {
            Ok(_) => {
                objects.delete(&pods_rt, ns, pod_name, &delete)?;
                return Ok(());
            }
            Err(e) if e.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::too_many_requests(VIOLATION, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&json!("50%"), 3), Some(2));
        assert_eq!(scaled(&json!(1), 3), Some(1));
        assert_eq!(scaled(&json!("2"), 3), Some(2));
    }
}
