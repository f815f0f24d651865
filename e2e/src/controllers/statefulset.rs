//! The StatefulSet controller: pods `<set>-<ordinal>` with stable
//! hostnames under the governing Service, a PVC per volumeClaimTemplate and
//! ordinal that outlives its pod, `controller-revision-hash` labels and
//! ControllerRevisions, OrderedReady or Parallel pod management,
//! RollingUpdate (highest ordinal first, one at a time) or OnDelete
//! updates, the PVC retention policy, and status.

use serde_json::{json, Value};

use super::{controlled_by, controller_ref, name, patch_status, pod_ready, rt, terminating, uid};
use crate::objects::{DeleteOpts, Objects, WriteOpts};
use crate::selector::LabelSelector;

/// FNV-1a of a value's JSON: the revision hash of a pod template.
pub fn template_hash(template: &Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in template.to_string().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10).map(|i| alphabet[((h >> (i * 6)) % alphabet.len() as u64) as usize] as char).collect()
}

fn ordinal(set: &str, pod: &str) -> Option<i64> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

fn pod_for(set: &Value, ord: i64, revision: &str) -> Value {
    let set_name = name(set);
    let pod_name = format!("{set_name}-{ord}");
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": set["spec"]["template"]["metadata"].clone(),
        "spec": set["spec"]["template"]["spec"].clone(),
    });
    if !pod["metadata"].is_object() {
        pod["metadata"] = json!({});
    }
    let m = &mut pod["metadata"];
    m["name"] = json!(pod_name);
    m["namespace"] = set["metadata"]["namespace"].clone();
    m["ownerReferences"] = json!([controller_ref(set)]);
    m["labels"]["controller-revision-hash"] = json!(revision);
    m["labels"]["statefulset.kubernetes.io/pod-name"] = json!(pod_name);
    m["labels"]["apps.kubernetes.io/pod-index"] = json!(ord.to_string());
    pod["spec"]["hostname"] = json!(pod_name);
    if let Some(svc) = set["spec"]["serviceName"].as_str() {
        pod["spec"]["subdomain"] = json!(svc);
    }
    let mut volumes: Vec<Value> = pod["spec"]["volumes"].as_array().cloned().unwrap_or_default();
    for t in set["spec"]["volumeClaimTemplates"].as_array().into_iter().flatten() {
        let claim = name(t);
        volumes.retain(|v| v["name"] != claim);
        volumes.push(json!({"name": claim, "persistentVolumeClaim": {"claimName": format!("{claim}-{pod_name}")}}));
    }
    pod["spec"]["volumes"] = json!(volumes);
    pod
}

fn ensure_claims(objects: &Objects, set: &Value, pod_name: &str) -> bool {
    let pvc_rt = rt(objects, "", "persistentvolumeclaims");
    let ns = super::namespace(set);
    let mut ready = true;
    for t in set["spec"]["volumeClaimTemplates"].as_array().into_iter().flatten() {
        let claim = format!("{}-{pod_name}", name(t));
        match objects.store.get(&pvc_rt.key(), ns, &claim) {
            Some(existing) if terminating(&existing) => ready = false,
            Some(_) => {}
            None => {
                let mut pvc = json!({
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": claim, "namespace": ns, "labels": t["metadata"]["labels"]},
                    "spec": t["spec"],
                });
                if pvc["metadata"]["labels"].is_null() {
                    pvc["metadata"]["labels"] = set["spec"]["selector"]["matchLabels"].clone();
                }
                if set["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete" {
                    pvc["metadata"]["ownerReferences"] = json!([{
                        "apiVersion": "apps/v1", "kind": "StatefulSet", "name": name(set), "uid": uid(set),
                        "blockOwnerDeletion": true,
                    }]);
                }
                if let Err(e) = objects.create(&pvc_rt, ns, pvc, &WriteOpts::default()) {
                    let msg = format!(
                        "create Claim {claim} for Pod {pod_name} in StatefulSet {} failed error: {}",
                        name(set),
                        e.message
                    );
                    super::record_event(objects, set, "Warning", "FailedCreate", &msg, "statefulset-controller");
                    ready = false;
                }
            }
        }
    }
    ready
}

fn ensure_revision(objects: &Objects, set: &Value, revision: &str) {
    let cr_rt = rt(objects, "apps", "controllerrevisions");
    let ns = super::namespace(set);
    let cr_name = format!("{}-{revision}", name(set));
    if objects.store.get(&cr_rt.key(), ns, &cr_name).is_some() {
        return;
    }
    let (existing, _) = objects.store.list(&cr_rt.key(), Some(ns));
    let number = existing.iter().filter(|c| controlled_by(c, uid(set))).count() + 1;
    let mut labels = set["spec"]["selector"]["matchLabels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels["controller.kubernetes.io/hash"] = json!(revision);
    let _ = objects.create(
        &cr_rt,
        ns,
        json!({
            "metadata": {"name": cr_name, "labels": labels, "ownerReferences": [controller_ref(set)]},
            "data": {"spec": {"template": set["spec"]["template"]}},
            "revision": number,
        }),
        &WriteOpts::default(),
    );
}

/// `whenDeleted`: claims of the set carry an owner reference to it when
/// the policy is Delete (garbage collection removes them with the set) and
/// none when it is Retain, updated when the policy changes.
fn sync_claim_owners(objects: &Objects, set: &Value) {
    let pvc_rt = rt(objects, "", "persistentvolumeclaims");
    let ns = super::namespace(set);
    let want = set["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete";
    for t in set["spec"]["volumeClaimTemplates"].as_array().into_iter().flatten() {
        let prefix = format!("{}-{}-", name(t), name(set));
        for c in objects.store.list(&pvc_rt.key(), Some(ns)).0 {
            let is_ours = name(&c).strip_prefix(&prefix).is_some_and(|o| o.parse::<i64>().is_ok());
            if !is_ours || terminating(&c) {
                continue;
            }
            let mut refs: Vec<Value> = c["metadata"]["ownerReferences"].as_array().cloned().unwrap_or_default();
            let has = refs.iter().any(|r| r["uid"] == uid(set));
            if has == want {
                continue;
            }
            if want {
                refs.push(json!({
                    "apiVersion": "apps/v1", "kind": "StatefulSet", "name": name(set), "uid": uid(set),
                    "blockOwnerDeletion": true,
                }));
            } else {
                refs.retain(|r| r["uid"] != uid(set));
            }
            let _ = objects.patch(
                &pvc_rt,
                ns,
                name(&c),
                crate::objects::PatchType::Merge,
                &json!({"metadata": {"ownerReferences": refs}}),
                crate::objects::Part::Main,
                &WriteOpts::default(),
            );
        }
    }
}

/// StatefulSet controller pass.
pub fn reconcile(objects: &Objects) {
    let sts_rt = rt(objects, "apps", "statefulsets");
    let (sets, _) = objects.store.list(&sts_rt.key(), None);
    for set in sets.iter().filter(|s| !terminating(s)) {
        reconcile_one(objects, set);
    }
}

fn reconcile_one(objects: &Objects, set: &Value) {
    let pods_rt = rt(objects, "", "pods");
    let pvc_rt = rt(objects, "", "persistentvolumeclaims");
    let sts_rt = rt(objects, "apps", "statefulsets");
    let ns = super::namespace(set).to_string();
    let set_name = name(set).to_string();
    let replicas = set["spec"]["replicas"].as_i64().unwrap_or(1);
    let parallel = set["spec"]["podManagementPolicy"] == "Parallel";
    let on_delete = set["spec"]["updateStrategy"]["type"] == "OnDelete";
    // Revision names (and the label) are `<set>-<hash>`, as Kubernetes writes them.
    let hash = template_hash(&set["spec"]["template"]);
    let revision = format!("{set_name}-{hash}");
    ensure_revision(objects, set, &hash);
    let Some(selector) = LabelSelector::from_object(&set["spec"]["selector"]) else { return };

    let (all_pods, _) = objects.store.list(&pods_rt.key(), Some(&ns));
    let mut pods: Vec<(i64, Value)> = all_pods
        .iter()
        .filter(|p| controlled_by(p, uid(set)) && selector.matches_object(p))
        .filter_map(|p| ordinal(&set_name, name(p)).map(|o| (o, (**p).clone())))
        .collect();
    pods.sort_by_key(|(o, _)| *o);

    // Failed pods are replaced.
    for (_, p) in pods.iter().filter(|(_, p)| p["status"]["phase"] == "Failed" && !terminating(p)) {
        let _ = objects.delete(&pods_rt, &ns, name(p), &DeleteOpts::default());
    }

    // Create missing pods.
    for ord in 0..replicas {
        if pods.iter().any(|(o, _)| *o == ord) {
            continue;
        }
        if !parallel {
            let predecessors_ready =
                pods.iter().filter(|(o, _)| *o < ord).all(|(_, p)| pod_ready(p) && !terminating(p))
                    && pods.iter().filter(|(o, _)| *o < ord).count() as i64 == ord;
            if !predecessors_ready {
                break;
            }
        }
        let pod_name = format!("{set_name}-{ord}");
        if !ensure_claims(objects, set, &pod_name) {
            continue;
        }
        if let Err(e) = objects.create(&pods_rt, &ns, pod_for(set, ord, &revision), &WriteOpts::default()) {
            let msg = format!("create Pod {pod_name} in StatefulSet {set_name} failed error: {}", e.message);
            super::record_event(objects, set, "Warning", "FailedCreate", &msg, "statefulset-controller");
        }
        if !parallel {
            break;
        }
    }

    // Scale down: highest ordinals first (all at once when Parallel).
    let mut condemned: Vec<&(i64, Value)> = pods.iter().filter(|(o, _)| *o >= replicas).collect();
    condemned.sort_by_key(|(o, _)| -*o);
    for (_, p) in condemned.iter().take(if parallel { usize::MAX } else { 1 }) {
        if !terminating(p) {
            let _ = objects.delete(&pods_rt, &ns, name(p), &DeleteOpts::default());
        }
    }
    sync_claim_owners(objects, set);
    // PVCs of removed ordinals, when the retention policy says Delete.
    if set["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Delete" {
        for t in set["spec"]["volumeClaimTemplates"].as_array().into_iter().flatten() {
            let prefix = format!("{}-{set_name}-", name(t));
            for c in objects.store.list(&pvc_rt.key(), Some(&ns)).0 {
                let ord = name(&c).strip_prefix(&prefix).and_then(|o| o.parse::<i64>().ok());
                let pod_gone = ord.is_some_and(|o| !pods.iter().any(|(po, _)| *po == o));
                if ord.is_some_and(|o| o >= replicas) && pod_gone && !terminating(&c) {
                    let _ = objects.delete(&pvc_rt, &ns, name(&c), &DeleteOpts::default());
                }
            }
        }
    }

    // Rolling update: one out-of-date pod at a time, highest first, when all are ready.
    if !on_delete && set["spec"]["updateStrategy"]["type"] != "OnDelete" {
        let all_ready = pods.iter().all(|(_, p)| pod_ready(p) && !terminating(p)) && pods.len() as i64 == replicas;
        if all_ready {
            if let Some((_, p)) = pods
                .iter()
                .rev()
                .find(|(_, p)| p["metadata"]["labels"]["controller-revision-hash"] != revision.as_str())
            {
                let _ = objects.delete(&pods_rt, &ns, name(p), &DeleteOpts::default());
            }
        }
    }

    // Status.
    let live: Vec<&Value> = pods.iter().map(|(_, p)| p).filter(|p| !terminating(p)).collect();
    let ready = live.iter().filter(|p| pod_ready(p)).count();
    let updated =
        live.iter().filter(|p| p["metadata"]["labels"]["controller-revision-hash"] == revision.as_str()).count();
    let current_revision = if updated == live.len() {
        revision.clone()
    } else {
        set["status"]["currentRevision"].as_str().map(String::from).unwrap_or_else(|| {
            live.iter()
                .find_map(|p| p["metadata"]["labels"]["controller-revision-hash"].as_str().map(String::from))
                .unwrap_or_else(|| revision.clone())
        })
    };
    let current = live
        .iter()
        .filter(|p| p["metadata"]["labels"]["controller-revision-hash"] == current_revision.as_str())
        .count();
    let _ = patch_status(
        objects,
        &sts_rt,
        &ns,
        &set_name,
        json!({
            "observedGeneration": set["metadata"]["generation"],
            "replicas": live.len(),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": current,
            "updatedReplicas": updated,
            "currentRevision": current_revision,
            "updateRevision": revision,
            "collisionCount": 0,
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_sensitive() {
        let a = json!({"spec": {"containers": [{"image": "a"}]}});
        let b = json!({"spec": {"containers": [{"image": "b"}]}});
        assert_eq!(template_hash(&a), template_hash(&a.clone()));
        assert_ne!(template_hash(&a), template_hash(&b));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "webx-1"), None);
    }
}
