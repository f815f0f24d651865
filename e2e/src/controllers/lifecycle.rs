//! Namespaces (a `default` ServiceAccount in each; terminating namespaces
//! are emptied, then removed) and CRDs (a deleted CRD's objects are
//! deleted, then the CRD is removed and its kind stops being served).

use serde_json::json;

use super::{name, rt, terminating};
use crate::objects::{DeleteOpts, Objects, WriteOpts};
use crate::registry::{GroupResource, Registry};

/// Namespace controller pass.
pub fn namespaces(objects: &Objects) {
    let ns_rt = rt(objects, "", "namespaces");
    let sa_rt = rt(objects, "", "serviceaccounts");
    let (all, _) = objects.store.list(&ns_rt.key(), None);
    for ns in all {
        let ns_name = name(&ns).to_string();
        if !terminating(&ns) {
            if objects.store.get(&sa_rt.key(), &ns_name, "default").is_none() {
                let _ =
                    objects.create(&sa_rt, &ns_name, json!({"metadata": {"name": "default"}}), &WriteOpts::default());
            }
            continue;
        }
        let mut remaining = 0;
        for key in objects.store.keys() {
            let Some(t) = objects.registry.get(&key) else { continue };
            if !t.namespaced {
                continue;
            }
            let (items, _) = objects.store.list(&key, Some(&ns_name));
            remaining += items.len();
            for o in items.iter().filter(|o| !terminating(o)) {
                let _ = objects.delete(&t, &ns_name, name(o), &DeleteOpts::default());
            }
        }
        if remaining == 0 {
            objects.remove(&ns_rt.key(), "", &ns_name);
        }
    }
}

/// CRD controller pass.
pub fn crds(objects: &Objects) {
    let crd_key = GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions");
    let (all, _) = objects.store.list(&crd_key, None);
    for crd in all.iter().filter(|c| terminating(c)) {
        let Ok(t) = Registry::from_crd(crd) else {
            objects.remove(&crd_key, "", name(crd));
            continue;
        };
        let (items, _) = objects.store.list(&t.key(), None);
        if items.is_empty() {
            objects.remove(&crd_key, "", name(crd));
            continue;
        }
        if let Some(served) = objects.registry.get(&t.key()) {
            for o in items.iter().filter(|o| !terminating(o)) {
                let ns = super::namespace(o).to_string();
                let _ = objects.delete(&served, &ns, name(o), &DeleteOpts::default());
            }
        }
    }
}
