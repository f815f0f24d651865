//! The scheduler: pods without a node go to Ready, untainted Nodes that
//! match their nodeSelector, round-robin (the node with the fewest pods of
//! the same owner first, then the fewest pods overall, so replicas spread
//! over zones). Affinity, topology spread and resources are not evaluated.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{name, namespace, rt, terminating};
use crate::objects::{Objects, Part, PatchType, WriteOpts};
use crate::time;

fn selector_matches(pod: &Value, node: &Value) -> bool {
    match pod["spec"]["nodeSelector"].as_object() {
        None => true,
        Some(sel) => sel.iter().all(|(k, v)| node["metadata"]["labels"][k] == *v),
    }
}

fn owner_uid(o: &Value) -> Option<&str> {
    o["metadata"]["ownerReferences"].as_array()?.iter().find(|r| r["controller"] == true)?["uid"].as_str()
}

/// Scheduler pass.
pub fn reconcile(objects: &Objects) {
    let pods_rt = rt(objects, "", "pods");
    let nodes_rt = rt(objects, "", "nodes");
    let (pods, _) = objects.store.list(&pods_rt.key(), None);
    let (nodes, _) = objects.store.list(&nodes_rt.key(), None);
    let mut load: HashMap<String, usize> = HashMap::new();
    let mut owner_load: HashMap<(String, String), usize> = HashMap::new();
    for p in &pods {
        if let Some(n) = p["spec"]["nodeName"].as_str() {
            *load.entry(n.to_string()).or_default() += 1;
            if let Some(o) = owner_uid(p) {
                *owner_load.entry((n.to_string(), o.to_string())).or_default() += 1;
            }
        }
    }
    for pod in pods.iter().filter(|p| p["spec"]["nodeName"].as_str().is_none_or(str::is_empty) && !terminating(p)) {
        let candidates: Vec<&Value> = nodes
            .iter()
            .map(|n| n.as_ref())
            .filter(|n| super::nodes::is_ready(n) && n["spec"]["taints"].is_null() && selector_matches(pod, n))
            .collect();
        let owner = owner_uid(pod).unwrap_or_default().to_string();
        let best = candidates.iter().min_by_key(|n| {
            let nn = name(n).to_string();
            (
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
                let already = pod["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "PodScheduled" && c["status"] == "False"));
                if !already {
                    let _ = super::patch_status(
                        objects,
                        &pods_rt,
                        &ns,
                        &pn,
                        json!({"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": format!("0/{} nodes are available: no Ready node matches the pod's nodeSelector", nodes.len()),
                            "lastTransitionTime": time::now()}]}),
                    );
                }
            }
        }
    }
}
