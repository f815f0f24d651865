//! PersistentVolumeClaims: bound at once to a simulated volume (a
//! directory `<state>/volumes/<pvc uid>`), protected by the
//! `kubernetes.io/pvc-protection` finalizer while a pod uses them, and
//! their directory removed once the claim is gone (reclaim policy Delete).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{name, namespace, patch_status, rt, terminating, uid};
use crate::objects::{Objects, Part, PatchType, WriteOpts};

/// Finalizer that keeps a claim while pods use it.
pub const PROTECTION: &str = "kubernetes.io/pvc-protection";

/// The directory of a claim's volume.
pub fn volume_dir(state_dir: &Path, pvc: &Value) -> PathBuf {
    state_dir.join("volumes").join(uid(pvc))
}

fn used_by_pod(objects: &Objects, ns: &str, claim: &str) -> bool {
    let pods = rt(objects, "", "pods");
    objects.store.list(&pods.key(), Some(ns)).0.iter().any(|p| {
        p["spec"]["volumes"]
            .as_array()
            .is_some_and(|vols| vols.iter().any(|v| v["persistentVolumeClaim"]["claimName"] == claim))
    })
}

/// Volumes pass.
pub fn reconcile(objects: &Objects) {
    let pvc_rt = rt(objects, "", "persistentvolumeclaims");
    let (claims, _) = objects.store.list(&pvc_rt.key(), None);
    for c in &claims {
        let (ns, n) = (namespace(c).to_string(), name(c).to_string());
        let finalizers: Vec<Value> = c["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
        let protected = finalizers.iter().any(|f| f == PROTECTION);
        if terminating(c) {
            if protected && !used_by_pod(objects, &ns, &n) {
                let rest: Vec<Value> = finalizers.into_iter().filter(|f| f != PROTECTION).collect();
                let _ = objects.patch(
                    &pvc_rt,
                    &ns,
                    &n,
                    PatchType::Merge,
                    &json!({"metadata": {"finalizers": rest}}),
                    Part::Main,
                    &WriteOpts::default(),
                );
            }
            continue;
        }
        if !protected {
            let mut f = finalizers.clone();
            f.push(json!(PROTECTION));
            let _ = objects.patch(
                &pvc_rt,
                &ns,
                &n,
                PatchType::Merge,
                &json!({"metadata": {"finalizers": f}}),
                Part::Main,
                &WriteOpts::default(),
            );
        }
        if c["status"]["phase"] != "Bound" {
            let volume = format!("pvc-{}", uid(c));
            let _ = objects.patch(
                &pvc_rt,
                &ns,
                &n,
                PatchType::Merge,
                &json!({"spec": {"volumeName": volume}}),
                Part::Main,
                &WriteOpts::default(),
            );
            let capacity = c["spec"]["resources"]["requests"].clone();
            let _ = patch_status(
                objects,
                &pvc_rt,
                &ns,
                &n,
                json!({"phase": "Bound", "accessModes": c["spec"]["accessModes"], "capacity": capacity}),
            );
        }
    }
}
