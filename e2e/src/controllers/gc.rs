//! Garbage collection: objects whose owners (every ownerReference) are
//! gone are deleted in the background. Owners of an unknown kind are
//! assumed to exist.

use super::{name, namespace};
use crate::objects::{DeleteOpts, Objects};

/// One pass over every object with owner references.
pub fn reconcile(objects: &Objects) {
    for key in objects.store.keys() {
        let Some(rt) = objects.registry.get(&key) else { continue };
        let (items, _) = objects.store.list(&key, None);
        for o in items {
            let Some(refs) = o["metadata"]["ownerReferences"].as_array().filter(|r| !r.is_empty()) else {
                continue;
            };
            let ns = namespace(&o);
            let all_gone = refs.iter().all(|r| {
                let (Some(api), Some(kind)) = (r["apiVersion"].as_str(), r["kind"].as_str()) else {
                    return false;
                };
                let Some(owner_rt) = objects.registry.by_kind(api, kind) else {
                    return false;
                };
                let owner_ns = if owner_rt.namespaced { ns } else { "" };
                let owner = objects.store.get(&owner_rt.key(), owner_ns, r["name"].as_str().unwrap_or_default());
                owner.is_none_or(|ow| ow["metadata"]["uid"] != r["uid"])
            });
            if all_gone && !super::terminating(&o) {
                tracing::debug!(resource = %rt.qualified(), ns, name = name(&o), "garbage-collecting");
                let _ = objects.delete(&rt, ns, name(&o), &DeleteOpts::default());
            }
        }
    }
}
