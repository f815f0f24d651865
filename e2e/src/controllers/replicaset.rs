//! Deployments and ReplicaSets. A Deployment owns one ReplicaSet per pod
//! template (`<deployment>-<hash>`, label `pod-template-hash`); the current
//! one is scaled to `replicas` and older ones to 0 once the current one's
//! pods are all ready (a rolling update with 100% surge). A ReplicaSet
//! keeps `replicas` pods `<replicaset>-<random>`, removing not-ready pods
//! first when scaling down.

use serde_json::{json, Value};

use super::statefulset::template_hash;
use super::{controlled_by, controller_ref, name, namespace, patch_status, pod_ready, rt, terminating, uid};
use crate::objects::{DeleteOpts, Objects, Part, PatchType, WriteOpts};
use crate::selector::LabelSelector;
use crate::time;

/// Deployment controller pass.
pub fn deployments(objects: &Objects) {
    let d_rt = rt(objects, "apps", "deployments");
    let rs_rt = rt(objects, "apps", "replicasets");
    let (all, _) = objects.store.list(&d_rt.key(), None);
    for d in all.iter().filter(|d| !terminating(d)) {
        let ns = namespace(d).to_string();
        let d_name = name(d).to_string();
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let hash = template_hash(&d["spec"]["template"]);
        let rs_name = format!("{d_name}-{hash}");
        let owned: Vec<Value> = objects
            .store
            .list(&rs_rt.key(), Some(&ns))
            .0
            .iter()
            .filter(|r| controlled_by(r, uid(d)))
            .map(|r| (**r).clone())
            .collect();
        let current = owned.iter().find(|r| name(r) == rs_name);
        match current {
            None => {
                let mut template = d["spec"]["template"].clone();
                template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                let mut selector = d["spec"]["selector"].clone();
                selector["matchLabels"]["pod-template-hash"] = json!(hash);
                let mut labels = d["spec"]["template"]["metadata"]["labels"].clone();
                labels["pod-template-hash"] = json!(hash);
                let _ = objects.create(
                    &rs_rt,
                    &ns,
                    json!({
                        "metadata": {"name": rs_name, "labels": labels, "ownerReferences": [controller_ref(d)]},
                        "spec": {"replicas": replicas, "selector": selector, "template": template},
                    }),
                    &WriteOpts::default(),
                );
            }
            Some(rs) if rs["spec"]["replicas"].as_i64() != Some(replicas) => {
                let _ = objects.patch(
                    &rs_rt,
                    &ns,
                    &rs_name,
                    PatchType::Merge,
                    &json!({"spec": {"replicas": replicas}}),
                    Part::Main,
                    &WriteOpts::default(),
                );
            }
            _ => {}
        }
        let current_ready = current.is_some_and(|rs| rs["status"]["readyReplicas"].as_i64().unwrap_or(0) >= replicas);
        if current_ready {
            for old in owned.iter().filter(|r| name(r) != rs_name && r["spec"]["replicas"] != 0) {
                let _ = objects.patch(
                    &rs_rt,
                    &ns,
                    name(old),
                    PatchType::Merge,
                    &json!({"spec": {"replicas": 0}}),
                    Part::Main,
                    &WriteOpts::default(),
                );
            }
        }
        let sum = |f: &str| owned.iter().map(|r| r["status"][f].as_i64().unwrap_or(0)).sum::<i64>();
        let updated = current.map(|r| r["status"]["replicas"].as_i64().unwrap_or(0)).unwrap_or(0);
        let ready = sum("readyReplicas");
        let available = ready >= replicas;
        let prev_available =
            d["status"]["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Available")).cloned();
        let available_status = if available { "True" } else { "False" };
        let available_cond = match prev_available {
            Some(c) if c["status"] == available_status => c,
            _ => json!({
                "type": "Available", "status": available_status,
                "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                "message": if available { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
                "lastUpdateTime": time::now(), "lastTransitionTime": time::now(),
            }),
        };
        let progressing = d["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Progressing"))
            .cloned()
            .unwrap_or_else(|| {
                json!({
                    "type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                    "message": format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                    "lastUpdateTime": time::now(), "lastTransitionTime": time::now(),
                })
            });
        let _ = patch_status(
            objects,
            &d_rt,
            &ns,
            &d_name,
            json!({
                "observedGeneration": d["metadata"]["generation"],
                "replicas": sum("replicas"),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "updatedReplicas": updated,
                "unavailableReplicas": (replicas - ready).max(0),
                "conditions": [available_cond, progressing],
            }),
        );
    }
}

/// ReplicaSet controller pass.
pub fn replicasets(objects: &Objects) {
    let rs_rt = rt(objects, "apps", "replicasets");
    let pods_rt = rt(objects, "", "pods");
    let (all, _) = objects.store.list(&rs_rt.key(), None);
    for rs in all.iter().filter(|r| !terminating(r)) {
        let ns = namespace(rs).to_string();
        let Some(selector) = LabelSelector::from_object(&rs["spec"]["selector"]) else { continue };
        let replicas = rs["spec"]["replicas"].as_i64().unwrap_or(1);
        let mut pods: Vec<Value> = objects
            .store
            .list(&pods_rt.key(), Some(&ns))
            .0
            .iter()
            .filter(|p| controlled_by(p, uid(rs)) && selector.matches_object(p) && !terminating(p))
            .map(|p| (**p).clone())
            .collect();
        for p in pods.iter().filter(|p| p["status"]["phase"] == "Failed") {
            let _ = objects.delete(&pods_rt, &ns, name(p), &DeleteOpts::default());
        }
        pods.retain(|p| p["status"]["phase"] != "Failed");
        let have = pods.len() as i64;
        if have < replicas {
            for _ in have..replicas {
                let mut pod = json!({
                    "metadata": rs["spec"]["template"]["metadata"].clone(),
                    "spec": rs["spec"]["template"]["spec"].clone(),
                });
                if !pod["metadata"].is_object() {
                    pod["metadata"] = json!({});
                }
                pod["metadata"]["generateName"] = json!(format!("{}-", name(rs)));
                pod["metadata"]["ownerReferences"] = json!([controller_ref(rs)]);
                let _ = objects.create(&pods_rt, &ns, pod, &WriteOpts::default());
            }
        } else if have > replicas {
            pods.sort_by_key(pod_ready);
            for p in pods.iter().take((have - replicas) as usize) {
                let _ = objects.delete(&pods_rt, &ns, name(p), &DeleteOpts::default());
            }
        }
        let ready = pods.iter().filter(|p| pod_ready(p)).count();
        let _ = patch_status(
            objects,
            &rs_rt,
            &ns,
            name(rs),
            json!({
                "observedGeneration": rs["metadata"]["generation"],
                "replicas": pods.len(),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "fullyLabeledReplicas": pods.len(),
            }),
        );
    }
}
