use super::*;

#[test]
fn storage_changes_keep_the_existing_claim_templates() {
    let mut kr = cluster();
    let old = builders::statefulset(&kr, 1).unwrap().spec.unwrap().volume_claim_templates;
    kr.spec.storage.size = "5Gi".into();
    let mut sts = builders::statefulset(&kr, 1).unwrap();
    let cond = keep_claim_templates(&mut sts, old.as_ref()).unwrap();
    assert_eq!(cond.reason, "StorageChangeNotApplied");
    assert!(cond.message.contains("5Gi") && cond.message.contains("1Gi"), "{}", cond.message);
    assert_eq!(sts.spec.unwrap().volume_claim_templates, old);
    // Unchanged storage: no condition.
    let mut same = builders::statefulset(&kr, 1).unwrap();
    let now = same.spec.as_ref().unwrap().volume_claim_templates.clone();
    assert!(keep_claim_templates(&mut same, now.as_ref()).is_none());
}

#[test]
fn a_pod_with_no_ready_condition_counts_as_unready_since_creation() {
    let now = Timestamp::now();
    let created = Timestamp::from_second(now.as_second() - 400).unwrap();
    let mut pod = Pod::default();
    pod.metadata.creation_timestamp = Some(Time(created));
    // Pending (e.g. unschedulable after its Node was lost): no conditions at all.
    assert_eq!(pod_ready(&pod, now), (false, Some(Duration::from_secs(400))));
    // Ready Unknown (its Node stopped reporting) counts from the transition.
    let since = Timestamp::from_second(now.as_second() - 30).unwrap();
    pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
        conditions: Some(vec![k8s_openapi::api::core::v1::PodCondition {
            type_: "Ready".into(),
            status: "Unknown".into(),
            last_transition_time: Some(Time(since)),
            ..Default::default()
        }]),
        ..Default::default()
    });
    assert_eq!(pod_ready(&pod, now), (false, Some(Duration::from_secs(30))));
}

#[test]
fn event_actions_stay_within_128_characters() {
    let long = "p1 [1,2,3] -> [1,2,4]; ".repeat(20);
    assert_eq!(event_action("Rebalance", &long).len(), 128);
    assert_eq!(event_action("SetZone", "kv-1-zone-a"), "SetZone-kv-1-zone-a");
}

#[test]
fn backoff_grows_and_caps() {
    assert_eq!(backoff(1), Duration::from_secs(5));
    assert_eq!(backoff(2), Duration::from_secs(10));
    assert_eq!(backoff(4), Duration::from_secs(40));
    assert_eq!(backoff(30), Duration::from_secs(300));
}

fn cluster() -> KeyraftCluster {
    let mut kr = KeyraftCluster::new("kv", serde_yaml::from_str("replicas: 1\nreplicationFactor: 1").unwrap());
    kr.metadata.namespace = Some("ns".into());
    kr.metadata.generation = Some(4);
    kr.metadata.uid = Some("u".into());
    kr
}

fn obs(kr: &KeyraftCluster, ready: bool) -> Observation {
    Observation {
        names: Names::of(kr).unwrap(),
        spec: kr.spec.clone(),
        paused: false,
        cluster_id: Some("c".into()),
        statefulset_replicas: Some(1),
        update_revision: None,
        waits: BTreeMap::new(),
        certified: 99,
        pods: vec![PodObservation {
            name: "kv-0".into(),
            ordinal: 0,
            version: "0.1.0".into(),
            zone: None,
            revision: None,
            ready,
            unready_for: None,
            terminating: false,
            node: NodeObservation::Unreachable("x".into()),
        }],
        pvcs: vec![],
    }
}

#[test]
fn status_tracks_generation_phase_and_transitions() {
    let mut kr = cluster();
    let s = build_status(&kr, &obs(&kr, true), Some("c".into()), vec![]);
    assert_eq!(s.observed_generation, Some(4));
    assert_eq!(s.phase, Some(Phase::Running));
    assert_eq!(s.current_version.as_deref(), Some("0.1.0"));
    let degraded = s.conditions.iter().find(|c| c.type_ == "Degraded").unwrap().clone();
    assert_eq!(degraded.status, "False");
    // Same status again: the transition time does not move.
    kr.status = Some(s);
    std::thread::sleep(Duration::from_millis(1100));
    let s2 = build_status(&kr, &obs(&kr, true), Some("c".into()), vec![]);
    let d2 = s2.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(d2.last_transition_time, degraded.last_transition_time);
    // A flip moves it, and the phase follows.
    let s3 = build_status(
        &kr,
        &obs(&kr, true),
        Some("c".into()),
        vec![ConditionUpdate { type_: cond::DEGRADED, status: true, reason: "X".into(), message: "m".into() }],
    );
    let d3 = s3.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_ne!(d3.last_transition_time, degraded.last_transition_time);
    assert_eq!(s3.phase, Some(Phase::Degraded));
    // Unbootstrapped clusters are Bootstrapping.
    let s4 = build_status(&cluster(), &obs(&kr, false), None, vec![]);
    assert_eq!(s4.phase, Some(Phase::Bootstrapping));
}

#[test]
fn every_pod_ready_is_not_running_while_replicas_still_have_to_move() {
    // Right after a scale-out the new pods are ready before they hold any
    // replica: the phase says so until Rebalancing turns False.
    let kr = cluster();
    let rebalancing = |status: bool, reason: &str| ConditionUpdate {
        type_: cond::REBALANCING,
        status,
        reason: reason.into(),
        message: String::new(),
    };
    for reason in ["WaitingForMembers", "MovingReplicas", "Repairing"] {
        let s = build_status(&kr, &obs(&kr, true), Some("c".into()), vec![rebalancing(true, reason)]);
        assert_eq!(s.phase, Some(Phase::Scaling), "Rebalancing=True {reason}");
    }
    let s = build_status(&kr, &obs(&kr, true), Some("c".into()), vec![rebalancing(false, "Balanced")]);
    assert_eq!(s.phase, Some(Phase::Running));
    // A pod not ready still reads Pending.
    let s = build_status(&kr, &obs(&kr, false), Some("c".into()), vec![rebalancing(true, "MovingReplicas")]);
    assert_eq!(s.phase, Some(Phase::Pending));
}

/// One pass of `apply` against a fake API server on loopback that records
/// every request: checks what the act phase sends, not only what it plans.
mod act_tests {
    use super::*;
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::IntoResponse;

    #[derive(Clone, Debug)]
    struct Request {
        method: Method,
        path: String,
        query: String,
        content_type: String,
        body: Value,
    }
    use serde_json::Value;

    type Log = Arc<Mutex<Vec<Request>>>;

    /// `gets`: answers to GETs whose path ends with the given suffix; other
    /// GETs see an empty list, the StatefulSet none.
    async fn fake_api(log: Log, kr: Value, gets: Vec<(&'static str, Value)>) -> String {
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let log = log.clone();
            let kr = kr.clone();
            let gets = gets.clone();
            async move {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                log.lock().unwrap().push(Request {
                    method: method.clone(),
                    path: uri.path().to_string(),
                    query: uri.query().unwrap_or_default().to_string(),
                    content_type: headers
                        .get("content-type")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default(),
                    body: body.clone(),
                });
                let path = uri.path();
                let json = |code: StatusCode, v: Value| {
                    (code, [("content-type", "application/json")], v.to_string()).into_response()
                };
                if method == Method::GET {
                    if let Some((_, v)) = gets.iter().find(|(suffix, _)| path.ends_with(suffix)) {
                        return json(StatusCode::OK, v.clone());
                    }
                }
                match method {
                    Method::GET if path.ends_with("/statefulsets/kv") || path.contains("/secrets/") => json(
                        StatusCode::NOT_FOUND,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "reason": "NotFound", "code": 404, "message": "not found"}),
                    ),
                    Method::GET => {
                        json(StatusCode::OK, json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []}))
                    }
                    Method::PATCH if path.ends_with("/status") => {
                        let mut obj = kr.clone();
                        obj["status"] = body["status"].clone();
                        json(StatusCode::OK, obj)
                    }
                    Method::PATCH => json(StatusCode::OK, body),
                    Method::POST => json(StatusCode::CREATED, body),
                    _ => json(StatusCode::METHOD_NOT_ALLOWED, Value::Null),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn fresh_cluster_applies_every_object_and_reports_waiting() {
        let mut kr = KeyraftCluster::new("kv", serde_yaml::from_str("replicas: 3").unwrap());
        kr.metadata.namespace = Some("ns".into());
        kr.metadata.uid = Some("uid-1".into());
        kr.metadata.generation = Some(2);
        let log: Log = Arc::default();
        let url = fake_api(log.clone(), serde_json::to_value(&kr).unwrap(), vec![]).await;
        let client = Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let ctx = Context::new(client, Admin::new(Duration::from_millis(200)), Arc::new(Metrics::new()), "test".into());

        let requeue = apply(&kr, &ctx).await.unwrap();
        assert_eq!(requeue, Requeue::requeue(Duration::from_secs(5)), "not settled yet");

        let log = log.lock().unwrap().clone();
        let applied: Vec<&str> = log
            .iter()
            .filter(|r| r.method == Method::PATCH && !r.path.ends_with("/status"))
            .map(|r| r.path.as_str())
            .collect();
        assert_eq!(
            applied,
            [
                // Certificates before the pods that need them (the CA
                // Secret is created, not applied).
                "/api/v1/namespaces/ns/secrets/kv-admin-tls",
                "/api/v1/namespaces/ns/secrets/kv-client-tls",
                "/api/v1/namespaces/ns/secrets/kv-node-tls",
                "/api/v1/namespaces/ns/configmaps/kv-config",
                "/api/v1/namespaces/ns/services/kv-headless",
                "/api/v1/namespaces/ns/services/kv",
                "/apis/policy/v1/namespaces/ns/poddisruptionbudgets/kv",
                "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/kv-nodes",
                "/apis/apps/v1/namespaces/ns/statefulsets/kv",
            ]
        );
        for r in log.iter().filter(|r| r.method == Method::PATCH && !r.path.ends_with("/status")) {
            assert_eq!(r.content_type, "application/apply-patch+yaml", "{}", r.path);
            assert!(r.query.contains("fieldManager=keyraft-operator"), "{}: {}", r.path, r.query);
            assert!(r.query.contains("force=true"), "{}: {}", r.path, r.query);
        }
        let sts = log.iter().find(|r| r.path.ends_with("/statefulsets/kv") && r.method == Method::PATCH).unwrap();
        assert_eq!(sts.body["spec"]["replicas"], 3);

        let status = log.iter().find(|r| r.path.ends_with("/keyraftclusters/kv/status")).unwrap();
        // The status is replaced in full by server-side apply.
        assert_eq!(status.content_type, "application/apply-patch+yaml");
        assert!(status.query.contains("fieldManager=keyraft-operator"), "{}", status.query);
        let s = &status.body["status"];
        assert_eq!(s["observedGeneration"], 2);
        assert_eq!(s["phase"], "Pending");
        let progressing = s["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Progressing").unwrap();
        assert_eq!(progressing["reason"], "WaitingForPods");
        assert!(progressing["message"].as_str().unwrap().contains("kv-0, kv-1, kv-2"));

        // A person sees the scale-up as an Event on the cluster.
        let events: Vec<&Request> = log
            .iter()
            .filter(|r| r.method == Method::POST && r.path == "/apis/events.k8s.io/v1/namespaces/ns/events")
            .collect();
        let reasons: Vec<&str> = events.iter().map(|e| e.body["reason"].as_str().unwrap()).collect();
        assert_eq!(reasons, ["CertificatesIssued", "Scaled"]);
        let event = events[1];
        assert_eq!(event.body["regarding"]["kind"], "KeyraftCluster");
    }

    fn pod_json(ordinal: u32) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("kv-{ordinal}"), "namespace": "ns",
                         "labels": {"app.kubernetes.io/name": "keyraft", "app.kubernetes.io/instance": "kv"}},
            "spec": {"containers": [{"name": "keyraft-node", "image": "keyraft/keyraft-node:0.1.0"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        })
    }

    #[tokio::test]
    async fn scale_in_decommissions_the_highest_member_through_a_ready_node() {
        use crate::admin::fake::{serve, FakeNode};
        use keyraft_api::pb;

        // spec.replicas 4 while the StatefulSet has 5 pods, all members.
        let mut kr = KeyraftCluster::new("kv", serde_yaml::from_str("replicas: 4").unwrap());
        kr.metadata.namespace = Some("ns".into());
        kr.metadata.uid = Some("uid-1".into());
        kr.status = Some(KeyraftClusterStatus { cluster_id: Some("c1".into()), ..Default::default() });
        let node = Arc::new(FakeNode::default());
        *node.status.lock().unwrap() = pb::StatusResponse {
            node: Some(pb::NodeInfo {
                id: 1,
                joined: true,
                ready: true,
                cluster_id: "c1".into(),
                version: "0.1.0".into(),
                ..Default::default()
            }),
            groups: vec![],
            cluster: Some(pb::ClusterView {
                cluster_id: "c1".into(),
                members: (0..5)
                    .map(|o| pb::MemberRecord {
                        id: o + 1,
                        name: format!("kv-{o}"),
                        state: "active".into(),
                        ..Default::default()
                    })
                    .collect(),
                placement: vec![pb::PartitionPlacement { partition: 0, replicas: vec![1, 2, 5], preferred_leader: 1 }],
                meta_applied_index: 10,
                default_read: pb::Consistency::Linearizable as i32,
                ..Default::default()
            }),
        };
        let node_addr = serve(node.clone()).await;
        let log: Log = Arc::default();
        let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                         "metadata": {"name": "kv", "namespace": "ns"},
                         "spec": {"replicas": 5, "selector": {}, "template": {}}});
        let pods = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {},
                          "items": (0..5).map(pod_json).collect::<Vec<_>>()});
        let url =
            fake_api(log.clone(), serde_json::to_value(&kr).unwrap(), vec![("/statefulsets/kv", sts), ("/pods", pods)])
                .await;
        let client = Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let admin = Admin { redirect: Some(node_addr), ..Admin::new(Duration::from_secs(2)) };
        let ctx = Context::new(client, admin, Arc::new(Metrics::new()), "test".into());

        apply(&kr, &ctx).await.unwrap();

        // The member is set decommissioning by id, its pod name along.
        let calls = node.member_states.lock().unwrap().clone();
        let sent: Vec<(u64, &str, &str)> = calls.iter().map(|r| (r.id, r.name.as_str(), r.state.as_str())).collect();
        assert_eq!(sent, [(5, "kv-4", "decommissioning")]);
        assert!(node.rebalances.lock().unwrap().is_empty(), "balanced: no Rebalance");
        let log = log.lock().unwrap().clone();
        // The StatefulSet keeps its 5 pods until kv-4 is empty.
        let sts = log.iter().find(|r| r.path.ends_with("/statefulsets/kv") && r.method == Method::PATCH).unwrap();
        assert_eq!(sts.body["spec"]["replicas"], 5);
        let event = log
            .iter()
            .find(|r| r.method == Method::POST && r.path.ends_with("/events") && r.body["reason"] == "Decommissioning")
            .expect("a Decommissioning Event");
        assert!(
            event.body["note"].as_str().unwrap().contains("kv-4 (node 5) is now decommissioning"),
            "{}",
            event.body
        );
        let status = log.iter().find(|r| r.path.ends_with("/keyraftclusters/kv/status")).unwrap();
        let members = status.body["status"]["members"].as_array().unwrap();
        assert_eq!(members.len(), 5);
        assert_eq!(members[4]["state"], "active");
    }
}
