//! Controllers and the kubelet through a kube-rs client: StatefulSet
//! ordinals, PVC directories that outlive pods, OnDelete updates, owner
//! garbage collection, and watches.

mod common;

use std::time::Duration;

use common::{client, start, wait_for};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

async fn namespace(c: &kube::Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(c.clone()).create(&PostParams::default(), &ns).await.unwrap();
}

fn sleeper_set(name: &str, arg: &str) -> StatefulSet {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 3,
            "serviceName": name,
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "OnDelete"},
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{"name": "main", "image": "busybox", "command": ["sleep", arg],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                },
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
        }
    }))
    .unwrap()
}

async fn running_pods(pods: &Api<Pod>) -> Option<Vec<Pod>> {
    let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
    let ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            && p.metadata.deletion_timestamp.is_none()
    };
    (list.items.len() == 3 && list.items.iter().all(ready)).then_some(list.items)
}

/// The host directory of a pod's `data` volume, from the simulator's /sim hook.
async fn data_dir(sim: &keyraft_e2e::Simulator, ns: &str, pod: &str) -> std::path::PathBuf {
    let k = &sim.kubelet;
    let info = wait_for("the pod's worker", Duration::from_secs(10), || async { k.pod_info(ns, pod).ok() }).await;
    std::path::PathBuf::from(info["volumes"]["data"].as_str().expect("data volume"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_pods_have_ordinals_and_durable_claims_and_wait_for_deletion_to_update() {
    let (sim, _dir) = start(false).await;
    let c = client(&sim);
    namespace(&c, "sts").await;
    let sets: Api<StatefulSet> = Api::namespaced(c.clone(), "sts");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "sts");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), "sts");
    sets.create(&PostParams::default(), &sleeper_set("web", "3600")).await.unwrap();

    let ready = wait_for("3 ready pods", Duration::from_secs(20), || running_pods(&pods)).await;
    let mut names: Vec<String> = ready.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["web-0", "web-1", "web-2"]);
    for p in &ready {
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), p.metadata.name.as_deref());
        assert_eq!(spec.subdomain.as_deref(), Some("web"));
        assert!(p.status.as_ref().unwrap().pod_ip.as_deref().unwrap().starts_with("127."));
    }
    let claims = pvcs.list(&ListParams::default()).await.unwrap();
    assert_eq!(claims.items.len(), 3);

    // A file on web-1's volume survives the pod.
    let dir = data_dir(&sim, "sts", "web-1").await;
    std::fs::write(dir.join("marker"), "kept").unwrap();
    let old_uid = pods.get("web-1").await.unwrap().metadata.uid;
    pods.delete("web-1", &DeleteParams::default()).await.unwrap();
    wait_for("web-1 recreated", Duration::from_secs(30), || async {
        let p = pods.get("web-1").await.ok()?;
        (p.metadata.uid != old_uid && p.metadata.deletion_timestamp.is_none()).then_some(())
    })
    .await;
    wait_for("3 ready pods again", Duration::from_secs(20), || running_pods(&pods)).await;
    assert_eq!(data_dir(&sim, "sts", "web-1").await, dir, "same claim, same directory");
    assert_eq!(std::fs::read_to_string(dir.join("marker")).unwrap(), "kept");

    // OnDelete: a template change replaces nothing until a pod is deleted.
    let before = sets.get("web").await.unwrap().status.unwrap().update_revision.unwrap();
    let hash_of = |p: &Pod| p.metadata.labels.as_ref().unwrap()["controller-revision-hash"].clone();
    assert_eq!(hash_of(&pods.get("web-0").await.unwrap()), before);
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3601"],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}}}});
    sets.patch("web", &PatchParams::default(), &Patch::Strategic(&patch)).await.unwrap();
    let after = wait_for("a new update revision", Duration::from_secs(10), || async {
        let s = sets.get("web").await.ok()?.status?;
        (s.update_revision.as_deref() != Some(before.as_str())).then_some(s.update_revision.unwrap())
    })
    .await;
    assert_eq!(hash_of(&pods.get("web-0").await.unwrap()), before, "OnDelete must not replace pods");
    pods.delete("web-0", &DeleteParams::default()).await.unwrap();
    wait_for("web-0 at the new revision", Duration::from_secs(30), || async {
        let p = pods.get("web-0").await.ok()?;
        (hash_of(&p) == after).then_some(())
    })
    .await;

    // Scaling down keeps the claims (retention policy Retain by default).
    sets.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1}}))).await.unwrap();
    wait_for("one pod left", Duration::from_secs(30), || async {
        (pods.list(&ListParams::default()).await.ok()?.items.len() == 1).then_some(())
    })
    .await;
    assert_eq!(pvcs.list(&ListParams::default()).await.unwrap().items.len(), 3);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_deletion_collects_dependents_and_watches_see_it() {
    let (sim, _dir) = start(false).await;
    let c = client(&sim);
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");

    // A watch started now sees the dependent come and go. The objects are
    // made once its initial list is done: one listed by it would come as
    // InitApply, not as the Apply of a watch event.
    let stream = watcher(cms.clone(), watcher::Config::default().labels("role=dependent"));
    let (listed_tx, listed) = tokio::sync::oneshot::channel();
    let events = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut listed_tx = Some(listed_tx);
        let mut s = std::pin::pin!(stream);
        while let Ok(Some(ev)) = s.try_next().await {
            match ev {
                watcher::Event::InitDone => {
                    if let Some(tx) = listed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                watcher::Event::Apply(cm) => seen.push(format!("apply {}", cm.metadata.name.unwrap())),
                watcher::Event::Delete(cm) => {
                    seen.push(format!("delete {}", cm.metadata.name.unwrap()));
                    return seen;
                }
                _ => {}
            }
        }
        seen
    });

    tokio::time::timeout(Duration::from_secs(10), listed).await.expect("the watch listed").unwrap();
    let owner: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap();
    let owner = cms.create(&PostParams::default(), &owner).await.unwrap();
    let dependent: ConfigMap = serde_json::from_value(json!({"metadata": {
        "name": "dependent",
        "labels": {"role": "dependent"},
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid.unwrap()}],
    }}))
    .unwrap();
    cms.create(&PostParams::default(), &dependent).await.unwrap();
    cms.delete("owner", &DeleteParams::background()).await.unwrap();
    wait_for("the dependent collected", Duration::from_secs(10), || async {
        cms.get_opt("dependent").await.ok()?.is_none().then_some(())
    })
    .await;
    let seen = tokio::time::timeout(Duration::from_secs(10), events).await.expect("watch delivered").unwrap();
    assert_eq!(seen, ["apply dependent", "delete dependent"]);

    // Finalizers hold a deletion until they are removed.
    let held: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})).unwrap();
    cms.create(&PostParams::default(), &held).await.unwrap();
    cms.delete("held", &DeleteParams::default()).await.unwrap();
    let still = cms.get("held").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());
    cms.patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    assert!(cms.get_opt("held").await.unwrap().is_none());

    // Server-side apply drops the fields a manager stops applying.
    let apply = |data: serde_json::Value| {
        let cms = cms.clone();
        async move {
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": data});
            cms.patch("applied", &PatchParams::apply("test").force(), &Patch::Apply(cm)).await.unwrap()
        }
    };
    apply(json!({"a": "1", "b": "2"})).await;
    let cm = apply(json!({"a": "1"})).await;
    assert_eq!(cm.data.unwrap().keys().collect::<Vec<_>>(), ["a"]);
    let _ = futures::stream::iter(0..0).collect::<Vec<i32>>().await;
    sim.shutdown().await;
}
