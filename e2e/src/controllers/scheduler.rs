//! The scheduler: pods without a node go to a Ready, schedulable Node that passes the
//! filters of the real default scheduler that matter here: untolerated
//! taints, nodeSelector, required node affinity, required pod
//! anti-affinity (the pod's terms and those of pods already placed) and
//! topology spread constraints with `DoNotSchedule`. Among feasible Nodes
//! the one with the fewest matching pods in its domains for the pod's soft
//! preferences (`ScheduleAnyway` spread, preferred anti-affinity by weight)
//! wins, then the fewest pods of the same owner, then the fewest pods (the
//! default scheduler's spreading by hostname). A pod no Node
//! fits stays Pending with PodScheduled=False (Unschedulable) and a
//! FailedScheduling Event naming why each Node was refused.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use super::{name, namespace, rt, terminating};
use crate::objects::{Objects, Part, PatchType, WriteOpts};
use crate::selector::LabelSelector;
use crate::time;

fn owner_uid(o: &Value) -> Option<&str> {
    o["metadata"]["ownerReferences"].as_array()?.iter().find(|r| r["controller"] == true)?["uid"].as_str()
}

fn label<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    o["metadata"]["labels"][key].as_str()
}

/// One nodeSelectorTerm's matchExpressions against a Node's labels.
fn term_matches(term: &Value, node: &Value) -> bool {
    term["matchExpressions"].as_array().into_iter().flatten().all(|e| {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let have = label(node, key);
        let num = |s: &str| s.parse::<i64>().ok();
        match e["operator"].as_str().unwrap_or_default() {
            "In" => have.is_some_and(|h| values.contains(&h)),
            "NotIn" => have.is_none_or(|h| !values.contains(&h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            "Gt" => have.and_then(num).zip(values.first().and_then(|v| num(v))).is_some_and(|(h, v)| h > v),
            "Lt" => have.and_then(num).zip(values.first().and_then(|v| num(v))).is_some_and(|(h, v)| h < v),
            _ => false,
        }
    })
}

/// nodeSelector and (when strict) required node affinity.
fn node_affinity_ok(pod: &Value, node: &Value, strict: bool) -> bool {
    let selector_ok = pod["spec"]["nodeSelector"]
        .as_object()
        .is_none_or(|sel| sel.iter().all(|(k, v)| node["metadata"]["labels"][k] == *v));
    let terms =
        &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    let affinity_ok = !strict || terms.as_array().is_none_or(|t| t.iter().any(|t| term_matches(t, node)));
    selector_ok && affinity_ok
}

/// Does `pod` tolerate a taint?
fn tolerates(pod: &Value, taint: &Value) -> bool {
    pod["spec"]["tolerations"].as_array().into_iter().flatten().any(|t| {
        let key_ok = t["key"].as_str().is_none_or(|k| k.is_empty() || taint["key"] == k);
        let effect_ok = t["effect"].as_str().is_none_or(|e| e.is_empty() || taint["effect"] == e);
        let value_ok =
            t["operator"] == "Exists" || t["value"].as_str().unwrap_or("") == taint["value"].as_str().unwrap_or("");
        key_ok && effect_ok && value_ok
    })
}

fn untolerated_taint(pod: &Value, node: &Value) -> Option<String> {
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["effect"] == "NoSchedule" || t["effect"] == "NoExecute")
        .find(|t| !tolerates(pod, t))
        .map(|t| format!("{{{}: {}}}", t["key"].as_str().unwrap_or_default(), t["value"].as_str().unwrap_or_default()))
}

/// A pod affinity term's selector over pods (namespaces: the term's list,
/// or the pod's own).
fn term_selects(term: &Value, term_ns: &str, other: &Value) -> bool {
    let in_ns = match term["namespaces"].as_array().filter(|n| !n.is_empty()) {
        Some(list) => list.iter().any(|n| n == namespace(other)),
        None => namespace(other) == term_ns,
    };
    in_ns && LabelSelector::from_object(&term["labelSelector"]).is_some_and(|s| s.matches_object(other))
}

fn anti_affinity_terms(pod: &Value) -> Vec<Value> {
    pod["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Pods on Nodes, with their Node, as this pass sees them.
struct Placed<'a> {
    pods: Vec<(Value, &'a Value)>,
}

impl Placed<'_> {
    /// Why `node` fails the anti-affinity of `pod` or of pods already placed.
    fn anti_affinity(&self, pod: &Value, node: &Value) -> Option<&'static str> {
        let same_domain =
            |key: &str, other_node: &Value| label(node, key).is_some_and(|v| label(other_node, key) == Some(v));
        for term in anti_affinity_terms(pod) {
            let key = term["topologyKey"].as_str().unwrap_or_default();
            if self.pods.iter().any(|(p, n)| same_domain(key, n) && term_selects(&term, namespace(pod), p)) {
                return Some("node(s) didn't match pod anti-affinity rules");
            }
        }
        for (p, n) in &self.pods {
            for term in anti_affinity_terms(p) {
                let key = term["topologyKey"].as_str().unwrap_or_default();
                if same_domain(key, n) && term_selects(&term, namespace(p), pod) {
                    return Some("node(s) didn't satisfy existing pods anti-affinity rules");
                }
            }
        }
        None
    }

    /// Pods matching `pod`'s soft preferences in `node`'s domains: its
    /// `ScheduleAnyway` spread constraints and preferred anti-affinity
    /// terms (weighted). Lower is better, as in the default scheduler's
    /// scoring.
    fn soft_score(&self, pod: &Value, node: &Value) -> i64 {
        let in_domain = |key: &str, n: &Value| label(node, key).is_some_and(|v| label(n, key) == Some(v));
        let mut score = 0;
        for c in pod["spec"]["topologySpreadConstraints"].as_array().into_iter().flatten() {
            if c["whenUnsatisfiable"] != "ScheduleAnyway" {
                continue;
            }
            let key = c["topologyKey"].as_str().unwrap_or_default();
            let Some(selector) = LabelSelector::from_object(&c["labelSelector"]) else { continue };
            score += self
                .pods
                .iter()
                .filter(|(p, n)| namespace(p) == namespace(pod) && selector.matches_object(p) && in_domain(key, n))
                .count() as i64;
        }
        let preferred = &pod["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"];
        for w in preferred.as_array().into_iter().flatten() {
            let term = &w["podAffinityTerm"];
            let key = term["topologyKey"].as_str().unwrap_or_default();
            let weight = w["weight"].as_i64().unwrap_or(1);
            let hits =
                self.pods.iter().filter(|(p, n)| in_domain(key, n) && term_selects(term, namespace(pod), p)).count();
            score += weight * hits as i64;
        }
        score
    }

    /// Does `node` keep every DoNotSchedule spread constraint of `pod`
    /// within its maxSkew? Domains are the values of the topology key on
    /// Nodes that pass the pod's node affinity (taints do not matter: the
    /// default nodeTaintsPolicy is Ignore).
    fn spread_ok(&self, pod: &Value, node: &Value, nodes: &[&Value]) -> bool {
        for c in pod["spec"]["topologySpreadConstraints"].as_array().into_iter().flatten() {
            if c["whenUnsatisfiable"] != "DoNotSchedule" {
                continue;
            }
            let key = c["topologyKey"].as_str().unwrap_or_default();
            let max_skew = c["maxSkew"].as_i64().unwrap_or(1);
            let Some(selector) = LabelSelector::from_object(&c["labelSelector"]) else { continue };
            let Some(domain) = label(node, key) else { return false };
            let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
            for n in nodes.iter().filter(|n| node_affinity_ok(pod, n, true)) {
                if let Some(d) = label(n, key) {
                    counts.entry(d).or_default();
                }
            }
            for (p, n) in &self.pods {
                if namespace(p) == namespace(pod) && selector.matches_object(p) && node_affinity_ok(pod, n, true) {
                    if let Some(d) = label(n, key) {
                        *counts.entry(d).or_default() += 1;
                    }
                }
            }
            let min = counts.values().copied().min().unwrap_or(0);
            let self_match = i64::from(selector.matches_object(pod));
            if counts.get(domain).copied().unwrap_or(0) + self_match - min > max_skew {
                return false;
            }
        }
        true
    }
}

/// Scheduler pass.
pub fn reconcile(objects: &Objects) {
    let pods_rt = rt(objects, "", "pods");
    let nodes_rt = rt(objects, "", "nodes");
    let strict = objects.strict.scheduling_constraints;
    let (pods, _) = objects.store.list(&pods_rt.key(), None);
    let (nodes, _) = objects.store.list(&nodes_rt.key(), None);
    let nodes: Vec<&Value> = nodes.iter().map(|n| n.as_ref()).collect();
    let node_by_name: HashMap<&str, &Value> = nodes.iter().map(|n| (name(n), *n)).collect();
    let mut placed = Placed { pods: Vec::new() };
    let mut load: HashMap<String, usize> = HashMap::new();
    let mut owner_load: HashMap<(String, String), usize> = HashMap::new();
    for p in &pods {
        if let Some(n) = p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            *load.entry(n.to_string()).or_default() += 1;
            if let Some(o) = owner_uid(p) {
                *owner_load.entry((n.to_string(), o.to_string())).or_default() += 1;
            }
            if let Some(node) = node_by_name.get(n) {
                placed.pods.push(((**p).clone(), node));
            }
        }
    }
    for pod in pods.iter().filter(|p| p["spec"]["nodeName"].as_str().is_none_or(str::is_empty) && !terminating(p)) {
        let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
        let mut candidates = Vec::new();
        for n in &nodes {
            let why = if !super::nodes::is_ready(n) {
                Some("node(s) were not ready".to_string())
            } else if n["spec"]["unschedulable"] == true {
                Some("node(s) were unschedulable".to_string())
            } else if let Some(t) = untolerated_taint(pod, n) {
                Some(format!("node(s) had untolerated taint {t}"))
            } else if !node_affinity_ok(pod, n, strict) {
                Some("node(s) didn't match Pod's node affinity/selector".into())
            } else if let Some(why) = strict.then(|| placed.anti_affinity(pod, n)).flatten() {
                Some(why.into())
            } else if strict && !placed.spread_ok(pod, n, &nodes) {
                Some("node(s) didn't match pod topology spread constraints".into())
            } else {
                None
            };
            match why {
                Some(w) => *refusals.entry(w).or_default() += 1,
                None => candidates.push(*n),
            }
        }
        let owner = owner_uid(pod).unwrap_or_default().to_string();
        let best = candidates.iter().min_by_key(|n| {
            let nn = name(n).to_string();
            (
                if strict { placed.soft_score(pod, n) } else { 0 },
                owner_load.get(&(nn.clone(), owner.clone())).copied().unwrap_or(0),
                load.get(&nn).copied().unwrap_or(0),
                nn,
            )
        });
        let (ns, pn) = (namespace(pod).to_string(), name(pod).to_string());
        match best {
            Some(node) => {
                let nn = name(node).to_string();
                *load.entry(nn.clone()).or_default() += 1;
                *owner_load.entry((nn.clone(), owner.clone())).or_default() += 1;
                let mut bound = (**pod).clone();
                bound["spec"]["nodeName"] = json!(nn);
                placed.pods.push((bound, node));
                let _ = objects.patch(
                    &pods_rt,
                    &ns,
                    &pn,
                    PatchType::Merge,
                    &json!({"spec": {"nodeName": nn}}),
                    Part::Main,
                    &WriteOpts::default(),
                );
                let _ = super::patch_status(
                    objects,
                    &pods_rt,
                    &ns,
                    &pn,
                    json!({"conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": time::now()}]}),
                );
            }
            None => {
                let mut reasons: Vec<String> = refusals.iter().map(|(why, n)| format!("{n} {why}")).collect();
                reasons.sort();
                let message = format!("0/{} nodes are available: {}.", nodes.len(), reasons.join(", "));
                let already = pod["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter().any(|c| c["type"] == "PodScheduled" && c["status"] == "False" && c["message"] == message)
                });
                if !already {
                    let _ = super::patch_status(
                        objects,
                        &pods_rt,
                        &ns,
                        &pn,
                        json!({"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": message, "lastTransitionTime": time::now()}]}),
                    );
                    super::record_event(objects, pod, "Warning", "FailedScheduling", &message, "default-scheduler");
                }
            }
        }
    }
}
