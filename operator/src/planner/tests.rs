use super::*;
use crate::builders::Names;
use crate::crd::{KeyraftCluster, KeyraftClusterSpec};

fn names() -> Names {
    let mut kr = KeyraftCluster::new("kv", serde_yaml::from_str("replicas: 3").unwrap());
    kr.metadata.namespace = Some("ns".into());
    Names::of(&kr).unwrap()
}

fn spec(yaml: &str) -> KeyraftClusterSpec {
    serde_yaml::from_str(yaml).unwrap()
}

fn node(id: u64, joined: bool) -> NodeObservation {
    NodeObservation::Reachable(NodeReport {
        node_id: id,
        joined,
        cluster_id: if joined { "c1".into() } else { String::new() },
        ready: joined,
        version: "0.1.0".into(),
        ..NodeReport::default()
    })
}

fn pod(ordinal: u32, node: NodeObservation) -> PodObservation {
    PodObservation {
        name: format!("kv-{ordinal}"),
        ordinal,
        version: "0.1.0".into(),
        zone: None,
        revision: None,
        ready: matches!(&node, NodeObservation::Reachable(r) if r.ready),
        unready_for: None,
        terminating: false,
        node,
    }
}

/// A bootstrapped cluster of `n` joined pods, whose node 1 reports a meta
/// view with `members` (name, state) and the placement given.
fn running(n: u32, members: &[(&str, &str)], placement: Vec<(u32, Vec<u64>)>) -> Observation {
    let view = ClusterViewReport {
        meta_applied_index: 10,
        members: members
            .iter()
            .enumerate()
            .map(|(i, (name, state))| MemberReport {
                id: i as u64 + 1,
                name: name.to_string(),
                state: MemberState::parse(state).unwrap(),
                zone: String::new(),
            })
            .collect(),
        // The first replica leads.
        preferred_leaders: placement.iter().map(|(p, r)| (*p, r[0])).collect(),
        placement,
        default_read: Some(ReadConsistency::Linearizable),
    };
    let mut pods: Vec<PodObservation> = (0..n).map(|o| pod(o, node(o as u64 + 1, true))).collect();
    // Settled: each partition's first replica leads it with the placed
    // voters, and every replica has applied all the leader committed.
    for (p, replicas) in &view.placement {
        let leader = (replicas[0] as usize).checked_sub(1).filter(|i| *i < n as usize).unwrap_or(0);
        if let NodeObservation::Reachable(r) = &mut pods[leader].node {
            r.led_voters.push((*p, replicas.clone()));
            r.led_partitions.push(*p);
        }
        for (i, pod) in pods.iter_mut().enumerate() {
            if let NodeObservation::Reachable(r) = &mut pod.node {
                if replicas.contains(&r.node_id) || i == leader {
                    let role = if i == leader { Role::Leader } else { Role::Follower };
                    let g = GroupReport { role, term: 1, commit_index: 1000, applied_index: 1000 };
                    r.partitions.insert(*p, g);
                }
            }
        }
    }
    if let NodeObservation::Reachable(r) = &mut pods[0].node {
        r.view = Some(view);
    }
    Observation {
        names: names(),
        spec: spec(&format!("replicas: {n}")),
        paused: false,
        cluster_id: Some("c1".into()),
        statefulset_replicas: Some(n as i32),
        pods,
        pvcs: (0..n).map(|o| format!("data-kv-{o}")).collect(),
        update_revision: None,
        waits: BTreeMap::new(),
        certified: 99,
    }
}

fn active(n: u32) -> Vec<(String, String)> {
    (0..n).map(|o| (format!("kv-{o}"), "active".to_string())).collect()
}

fn members(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

fn fresh(pods: Vec<PodObservation>, replicas: i32) -> Observation {
    Observation {
        names: names(),
        spec: spec(&format!("replicas: {replicas}")),
        paused: false,
        cluster_id: None,
        statefulset_replicas: Some(replicas),
        pods,
        pvcs: vec![],
        update_revision: None,
        waits: BTreeMap::new(),
        certified: 99,
    }
}

fn bootstraps(actions: &[Action]) -> Vec<&Action> {
    actions.iter().filter(|a| matches!(a, Action::Bootstrap { .. })).collect()
}

fn sts_replicas(actions: &[Action]) -> i32 {
    match actions.iter().find(|a| matches!(a, Action::Apply { .. })) {
        Some(Action::Apply { statefulset_replicas }) => *statefulset_replicas,
        _ => panic!("no Apply in {actions:?}"),
    }
}

/// The condition of `type_` the status ends with (the last one set).
fn condition_of<'a>(actions: &'a [Action], type_: &str) -> Option<&'a ConditionUpdate> {
    actions.iter().rev().find_map(|a| match a {
        Action::SetCondition(c) if c.type_ == type_ => Some(c),
        _ => None,
    })
}

#[test]
fn bootstrap_table() {
    let unreachable = || NodeObservation::Unreachable("connection refused".into());
    // (case, pods, bootstrap expected)
    let table: Vec<(&str, Vec<PodObservation>, bool)> = vec![
        ("no pods yet", vec![], false),
        ("one of three pods exists", vec![pod(0, node(1, false))], false),
        (
            "all pods exist, one unreachable",
            vec![pod(0, node(1, false)), pod(1, unreachable()), pod(2, node(3, false))],
            false,
        ),
        (
            "all pods reachable and unjoined",
            vec![pod(0, node(1, false)), pod(1, node(2, false)), pod(2, node(3, false))],
            true,
        ),
        (
            "a node already reports joined",
            vec![pod(0, node(1, true)), pod(1, node(2, false)), pod(2, node(3, false))],
            false,
        ),
    ];
    for (case, pods, want) in table {
        let actions = plan(&fresh(pods, 3));
        assert_eq!(sts_replicas(&actions), 3, "{case}");
        assert_eq!(bootstraps(&actions).len(), usize::from(want), "{case}: {actions:?}");
    }
}

#[test]
fn bootstrap_names_every_initial_peer_once_with_the_zones_known() {
    let mut pods: Vec<PodObservation> = (0..3).map(|o| pod(o, node(o as u64 + 1, false))).collect();
    pods[0].zone = Some("zone-a".into());
    pods[2].zone = Some("zone-c".into());
    let actions = plan(&fresh(pods, 3));
    assert_eq!(
        bootstraps(&actions)[0],
        &Action::Bootstrap {
            pod: "kv-0".into(),
            peers: vec![
                "kv-0.kv-headless.ns.svc:7000".into(),
                "kv-1.kv-headless.ns.svc:7000".into(),
                "kv-2.kv-headless.ns.svc:7000".into(),
            ],
            partitions: 16,
            replication_factor: 3,
            zones: [
                ("kv-0.kv-headless.ns.svc:7000".to_string(), "zone-a".to_string()),
                ("kv-2.kv-headless.ns.svc:7000".to_string(), "zone-c".to_string()),
            ]
            .into(),
        }
    );
}

#[test]
fn waiting_for_pods_names_them() {
    let actions = plan(&fresh(vec![pod(0, node(1, false))], 3));
    let c = condition_of(&actions, cond::PROGRESSING).unwrap();
    assert_eq!(c.reason, "WaitingForPods");
    assert!(c.message.contains("kv-1, kv-2"), "{}", c.message);
}

#[test]
fn pods_without_a_certificate_are_not_created_and_the_wait_is_bounded() {
    // Bootstrap: the node Secret holds kv-0's certificate only.
    let mut obs = fresh(vec![], 3);
    obs.statefulset_replicas = None;
    obs.certified = 1;
    let actions = plan(&obs);
    assert_eq!(sts_replicas(&actions), 1);
    assert!(actions.contains(&Action::Wait(Wait { kind: WaitKind::Certificate, subject: "kv-1".into() })));
    let c = condition_of(&actions, cond::PROGRESSING).unwrap();
    assert_eq!(c.reason, "WaitingForCertificates");
    assert!(c.message.contains("kv-1"), "{}", c.message);
    assert!(condition_of(&actions, cond::DEGRADED).is_none());
    // Past spec.timeouts.ready the cluster turns Degraded, naming the pod.
    obs.waits.insert(Wait { kind: WaitKind::Certificate, subject: "kv-1".into() }, Duration::from_secs(3600));
    let c = condition_of(&plan(&obs), cond::DEGRADED).cloned().unwrap();
    assert_eq!(c.reason, "CertificateTimedOut");
    assert!(c.message.contains("kv-1") && c.message.contains("spec.timeouts.ready"), "{}", c.message);

    // Scale-out: held at the pods that have one; never shrunk for it.
    let m = active(3);
    let mut obs = running(3, &members(&m), vec![(0, vec![1, 2, 3])]);
    obs.spec.replicas = 5;
    for (certified, want) in [(3, 3), (4, 4), (5, 5), (0, 3)] {
        obs.certified = certified;
        assert_eq!(sts_replicas(&plan(&obs)), want, "certified {certified}");
    }
}

#[test]
fn no_second_bootstrap_once_status_has_a_cluster_id() {
    // Every node unreachable (e.g. all restarting), but status remembers.
    let mut obs = fresh((0..3).map(|o| pod(o, node(o as u64 + 1, false))).collect(), 3);
    obs.cluster_id = Some("c1".into());
    assert!(bootstraps(&plan(&obs)).is_empty());
}

#[test]
fn scale_out_grows_the_statefulset_and_adds_new_nodes() {
    let m = active(3);
    let mut obs = running(3, &members(&m), vec![(0, vec![1, 2, 3])]);
    obs.spec.replicas = 5;
    let actions = plan(&obs);
    assert_eq!(sts_replicas(&actions), 5);
    // The new pods come up unjoined: they are added, never bootstrapped.
    obs.pods.push(pod(3, node(4, false)));
    obs.pods.push(pod(4, node(5, false)));
    obs.statefulset_replicas = Some(5);
    let actions = plan(&obs);
    assert!(bootstraps(&actions).is_empty());
    // They join by themselves (KEYRAFT_JOIN): the operator waits for them.
    let c = condition_of(&actions, cond::PROGRESSING).unwrap();
    assert_eq!(c.reason, "WaitingForJoin");
    assert!(c.message.contains("kv-3, kv-4"), "{}", c.message);
    assert!(!actions.iter().any(|a| matches!(a, Action::Rebalance { .. })), "{actions:?}");
    // Once both are members, the wait ends and the rebalance starts.
    let m = active(5);
    let mut joined = running(5, &members(&m), vec![(0, vec![1, 2, 3]), (1, vec![1, 2, 3]), (2, vec![1, 2, 3])]);
    joined.spec.replicas = 5;
    let actions = plan(&joined);
    assert_ne!(condition_of(&actions, cond::PROGRESSING).map(|c| c.reason.as_str()), Some("WaitingForJoin"));
    assert!(actions.contains(&Action::Rebalance { via: "kv-0".into(), max_moves: 2 }), "{actions:?}");
}

#[test]
fn scale_out_rebalances_onto_empty_members() {
    let m = active(4);
    let obs = running(4, &members(&m), vec![(0, vec![1, 2, 3]), (1, vec![1, 2, 3])]);
    let actions = plan(&obs);
    assert!(actions.contains(&Action::Rebalance { via: "kv-0".into(), max_moves: 2 }));
    assert!(condition_of(&actions, cond::REBALANCING).unwrap().status);
    // Disabled rebalancing plans no move.
    let mut obs = obs;
    obs.spec.rebalance.enabled = false;
    assert!(!plan(&obs).iter().any(|a| matches!(a, Action::Rebalance { .. })));
}

#[test]
fn scale_in_table() {
    // (case, state of kv-4 in meta (None = not a member), placement, sts replicas after, action expected)
    let placement_with_5_again = || vec![(0, vec![1, 2, 5]), (1, vec![2, 3, 4])];
    let placement_with_5 = placement_with_5_again();
    let placement_without_5 = vec![(0, vec![1, 2, 3]), (1, vec![2, 3, 4])];
    type Case<'a> = (&'a str, Option<&'a str>, Vec<(u32, Vec<u64>)>, i32, Option<Action>);
    let table: Vec<Case> = vec![
        (
            "active member holding data is decommissioned first",
            Some("active"),
            placement_with_5.clone(),
            5,
            Some(Action::Decommission { via: "kv-0".into(), pod: "kv-4".into(), node_id: 5 }),
        ),
        ("decommissioning, replicas left: wait", Some("decommissioning"), placement_with_5, 5, None),
        ("decommissioning and empty: shrink", Some("decommissioning"), placement_without_5.clone(), 4, None),
        ("removed from meta: shrink", Some("removed"), placement_without_5.clone(), 4, None),
        ("failed, replicas left: wait", Some("failed"), placement_with_5_again(), 5, None),
        ("failed and empty: shrink", Some("failed"), placement_without_5.clone(), 4, None),
        ("never joined: shrink", None, placement_without_5, 4, None),
    ];
    for (case, state, placement, want_replicas, want_action) in table {
        let mut m = active(4);
        if let Some(s) = state {
            m.push(("kv-4".into(), s.into()));
        }
        let mut obs = running(5, &members(&m), placement);
        obs.spec.replicas = 4;
        if state.is_none() {
            // Its node says it never joined: no join in flight.
            obs.pods[4].node = node(5, false);
        }
        let actions = plan(&obs);
        assert_eq!(sts_replicas(&actions), want_replicas, "{case}: {actions:?}");
        let decommissions: Vec<_> = actions.iter().filter(|a| matches!(a, Action::Decommission { .. })).collect();
        assert_eq!(decommissions.first().copied(), want_action.as_ref(), "{case}");
        // The PVC stays while the pod exists.
        assert!(!actions.iter().any(|a| matches!(a, Action::DeletePvc { .. })), "{case}");
    }
}

#[test]
fn scale_in_waits_until_no_partition_still_counts_the_member_as_a_voter() {
    let mut m = active(4);
    m.push(("kv-4".into(), "decommissioning".into()));
    let placement = vec![(0, vec![1, 2, 3]), (1, vec![2, 3, 4])];
    let mut obs = running(5, &members(&m), placement);
    obs.spec.replicas = 4;
    assert_eq!(sts_replicas(&plan(&obs)), 4, "placement and voters agree: shrink");
    // Partition 1's leader still runs a joint configuration with kv-4 (id 5).
    if let NodeObservation::Reachable(r) = &mut obs.pods[1].node {
        r.led_voters = vec![(0, vec![1, 2, 3]), (1, vec![2, 3, 4, 5])];
    }
    let actions = plan(&obs);
    assert_eq!(sts_replicas(&actions), 5, "{actions:?}");
    let c = condition_of(&actions, cond::PROGRESSING).unwrap();
    assert!(c.message.contains("partitions 1 still count it as a voter"), "{c:?}");
    // A partition without a reporting leader: wait too.
    if let NodeObservation::Reachable(r) = &mut obs.pods[1].node {
        r.led_voters = vec![(0, vec![1, 2, 3])];
    }
    assert_eq!(sts_replicas(&plan(&obs)), 5);
}

#[test]
fn scale_in_takes_the_highest_ordinal_first() {
    let m = active(5);
    let mut obs = running(5, &members(&m), vec![(0, vec![1, 4, 5])]);
    obs.spec.replicas = 3;
    let actions = plan(&obs);
    assert_eq!(sts_replicas(&actions), 5);
    let d: Vec<_> = actions.iter().filter(|a| matches!(a, Action::Decommission { .. })).collect();
    assert_eq!(d, [&Action::Decommission { via: "kv-0".into(), pod: "kv-4".into(), node_id: 5 }]);
}

#[test]
fn scale_in_refuses_to_go_below_replication_factor() {
    let m = active(3);
    let mut obs = running(3, &members(&m), vec![(0, vec![1, 2, 3])]);
    obs.spec.replicas = 2;
    let actions = plan(&obs);
    assert_eq!(sts_replicas(&actions), 3);
    assert!(!actions.iter().any(|a| matches!(a, Action::Decommission { .. })));
    let c = condition_of(&actions, cond::DEGRADED).unwrap();
    assert_eq!(c.reason, "ScaleInRefused");
    assert!(c.message.contains("replicationFactor=3") && c.message.contains("replicas=2"), "{}", c.message);
}

#[test]
fn scale_in_deletes_pvcs_of_removed_pods_per_reclaim_policy() {
    let m = active(4);
    let mut obs = running(4, &members(&m), vec![(0, vec![1, 2, 3])]);
    obs.pvcs.push("data-kv-4".into());
    let actions = plan(&obs);
    assert!(actions.contains(&Action::DeletePvc { name: "data-kv-4".into() }));
    // Live members' PVCs are never touched.
    assert_eq!(actions.iter().filter(|a| matches!(a, Action::DeletePvc { .. })).count(), 1);
    obs.spec.storage.reclaim_policy = crate::crd::ReclaimPolicy::Retain;
    assert!(!plan(&obs).iter().any(|a| matches!(a, Action::DeletePvc { .. })));
}

#[test]
fn scale_in_waits_without_any_view() {
    let mut obs = running(4, &[], vec![]);
    for p in &mut obs.pods {
        p.node = NodeObservation::Unreachable("timeout".into());
    }
    obs.spec.replicas = 3;
    let actions = plan(&obs);
    assert_eq!(sts_replicas(&actions), 4);
    assert_eq!(condition_of(&actions, cond::PROGRESSING).unwrap().reason, "WaitingForNodes");
}

#[test]
fn unreachable_nodes_are_observations() {
    let m = active(3);
    let mut obs = running(3, &members(&m), vec![(0, vec![1, 2, 3])]);
    obs.pods[2].node = NodeObservation::Unreachable("deadline exceeded".into());
    obs.pods[2].ready = false;
    obs.pods[2].unready_for = Some(Duration::from_secs(10));
    let actions = plan(&obs);
    assert_eq!(sts_replicas(&actions), 3);
    assert!(bootstraps(&actions).is_empty());
    let a = condition_of(&actions, cond::AVAILABLE).unwrap();
    assert!(a.status, "one of three down keeps quorum");
    assert!(!actions.iter().any(|a| matches!(a, Action::ReplaceMember { .. })));
    // Past failover.timeout, but three members for replicationFactor 3:
    // no spare to re-create its replicas on, so it is not failed.
    obs.pods[2].unready_for = Some(Duration::from_secs(301));
    let actions = plan(&obs);
    assert!(!actions.iter().any(|a| matches!(a, Action::ReplaceMember { .. })));
    let c = condition_of(&actions, cond::DEGRADED).unwrap();
    assert_eq!(c.reason, "MemberUnready");
    assert!(c.message.contains("no spare member"), "{}", c.message);
    // Two of three down: quorum at risk.
    obs.pods[1].ready = false;
    assert!(!condition_of(&plan(&obs), cond::AVAILABLE).unwrap().status);
}

#[test]
fn pause_annotation_yields_no_actions() {
    let mut obs = fresh((0..3).map(|o| pod(o, node(o as u64 + 1, false))).collect(), 3);
    obs.paused = true;
    assert!(plan(&obs).is_empty());
    let m = active(5);
    let mut obs = running(5, &members(&m), vec![]);
    obs.spec.replicas = 3;
    obs.paused = true;
    assert!(plan(&obs).is_empty());
}

fn set_leaders(obs: &mut Observation, ordinal: usize, leaders: u32) {
    if let NodeObservation::Reachable(r) = &mut obs.pods[ordinal].node {
        r.leaders = leaders;
    }
}

fn set_state(obs: &mut Observation, pod: &str, state: &str) {
    if let NodeObservation::Reachable(r) = &mut obs.pods[0].node {
        r.view.as_mut().unwrap().members.iter_mut().find(|m| m.name == pod).unwrap().state =
            MemberState::parse(state).unwrap();
    }
}

fn of_kind(actions: &[Action], f: fn(&Action) -> bool) -> Vec<&Action> {
    actions.iter().filter(|a| f(a)).collect()
}

fn member_actions(actions: &[Action]) -> Vec<&Action> {
    of_kind(actions, |a| {
        matches!(
            a,
            Action::DrainLeaders { .. }
                | Action::ActivateMember { .. }
                | Action::RestartPod { .. }
                | Action::Decommission { .. }
                | Action::ReplaceMember { .. }
        )
    })
}

#[test]
fn upgrade_table() {
    // (case, setup, actions expected, Upgrading reason)
    type Setup = fn(&mut Observation);
    let drain = |pod: &str, id| Action::DrainLeaders { via: "kv-0".into(), pod: pod.into(), node_id: id };
    let restart = |pod: &str| Action::RestartPod { pod: pod.into() };
    let activate = |pod: &str, id| Action::ActivateMember { via: "kv-0".into(), pod: pod.into(), node_id: id };
    let table: Vec<(&str, Setup, Vec<Action>, &str)> = vec![
        ("up to date: nothing", |_| {}, vec![], "UpToDate"),
        (
            "outdated, active: drain the highest pod without leaders first",
            |o| {
                o.spec.version = "0.2.0".into();
                set_leaders(o, 2, 4);
            },
            vec![drain("kv-1", 2)],
            "DrainingLeaders",
        ),
        (
            "draining and still leading: wait",
            |o| {
                o.spec.version = "0.2.0".into();
                set_state(o, "kv-1", "draining");
                set_leaders(o, 1, 2);
            },
            vec![],
            "DrainingLeaders",
        ),
        (
            "draining and leading nothing: restart it, even if another pod leads less",
            |o| {
                o.spec.version = "0.2.0".into();
                set_state(o, "kv-0", "draining");
                set_leaders(o, 1, 1);
                set_leaders(o, 2, 1);
            },
            vec![restart("kv-0")],
            "RollingUpdate",
        ),
        (
            "restarted, not ready yet: wait before it leads again",
            |o| {
                o.spec.version = "0.2.0".into();
                set_state(o, "kv-2", "draining");
                o.pods[2].version = "0.2.0".into();
                o.pods[2].ready = false;
            },
            vec![],
            "WaitingForCatchUp",
        ),
        (
            "restarted, ready but the node not caught up: wait",
            |o| {
                o.spec.version = "0.2.0".into();
                set_state(o, "kv-2", "draining");
                o.pods[2].version = "0.2.0".into();
                if let NodeObservation::Reachable(r) = &mut o.pods[2].node {
                    r.ready = false;
                }
            },
            vec![],
            "WaitingForCatchUp",
        ),
        (
            "back, ready and caught up: active again before the next pod",
            |o| {
                o.spec.version = "0.2.0".into();
                set_state(o, "kv-2", "draining");
                o.pods[2].version = "0.2.0".into();
            },
            vec![activate("kv-2", 3)],
            "Reactivating",
        ),
        (
            "the last pod back: active again, rollout done next pass",
            |o| {
                set_state(o, "kv-1", "draining");
            },
            vec![activate("kv-1", 2)],
            "Reactivating",
        ),
        (
            "an unready pod on the new version holds the rollout",
            |o| {
                o.spec.version = "0.2.0".into();
                o.pods[0].version = "0.2.0".into();
                o.pods[0].ready = false;
            },
            vec![],
            "WaitingForReady",
        ),
        (
            "an outdated pod that is not ready goes next, drained first like any other",
            |o| {
                o.spec.version = "0.2.0".into();
                o.pods[0].ready = false;
            },
            vec![Action::DrainLeaders { via: "kv-1".into(), pod: "kv-0".into(), node_id: 1 }],
            "DrainingLeaders",
        ),
        (
            "rollback: the pod stuck on the reverted version restarts on the old one",
            |o| {
                o.pods[2].version = "0.2.0-broken".into();
                o.pods[2].ready = false;
                o.pods[2].node = NodeObservation::Unreachable("connection refused".into());
                set_state(o, "kv-2", "draining");
            },
            vec![restart("kv-2")],
            "RollingUpdate",
        ),
        (
            "a partition would lose its majority: halt",
            |o| {
                o.spec.version = "0.2.0".into();
                if let NodeObservation::Reachable(r) = &mut o.pods[0].node {
                    r.ready = false;
                }
            },
            vec![],
            "Halted",
        ),
        (
            "updateStrategy.paused restarts nothing",
            |o| {
                o.spec.version = "0.2.0".into();
                o.spec.update_strategy.paused = true;
            },
            vec![],
            "Paused",
        ),
        (
            "replicationFactor 1: no other voter can take a leadership over, restart without draining",
            |o| {
                o.spec.version = "0.2.0".into();
                o.spec.replication_factor = 1;
                set_leaders(o, 2, 4);
            },
            vec![restart("kv-1")],
            "RollingUpdate",
        ),
        (
            "replicationFactor 1, a member left draining (by an earlier operator): restart it",
            |o| {
                o.spec.version = "0.2.0".into();
                o.spec.replication_factor = 1;
                set_state(o, "kv-1", "draining");
                set_leaders(o, 1, 2);
            },
            vec![restart("kv-1")],
            "RollingUpdate",
        ),
        (
            "no other member may lead: restart without draining",
            |o| {
                o.spec.version = "0.2.0".into();
                o.pods[0].version = "0.2.0".into();
                o.pods[1].version = "0.2.0".into();
                set_state(o, "kv-0", "decommissioning");
                set_state(o, "kv-1", "decommissioning");
            },
            vec![restart("kv-2")],
            "RollingUpdate",
        ),
    ];
    for (case, setup, want, reason) in table {
        let m = active(3);
        let mut obs = running(3, &members(&m), vec![(0, vec![1, 2, 3])]);
        setup(&mut obs);
        let actions = plan(&obs);
        assert_eq!(member_actions(&actions), want.iter().collect::<Vec<_>>(), "{case}");
        let upgrading = condition_of(&actions, cond::UPGRADING).unwrap();
        assert_eq!(upgrading.reason, reason, "{case}: {actions:?}");
        let degraded = condition_of(&actions, cond::DEGRADED).map(|c| c.reason.as_str());
        assert_eq!(degraded == Some("QuorumAtRisk"), reason == "Halted", "{case}: {actions:?}");
    }
}

#[test]
fn upgrade_reports_progress_and_names_partitions_at_risk() {
    let m = active(3);
    let mut obs = running(3, &members(&m), vec![(0, vec![1, 2, 3]), (1, vec![1, 2, 4])]);
    obs.spec.version = "0.2.0".into();
    obs.pods[2].version = "0.2.0".into();
    let actions = plan(&obs);
    let msg = &condition_of(&actions, cond::UPGRADING).unwrap().message;
    assert!(msg.contains("1/3 pods updated"), "{msg}");
    if let NodeObservation::Reachable(r) = &mut obs.pods[1].node {
        r.ready = false;
    }
    let msg = condition_of(&plan(&obs), cond::DEGRADED).unwrap().message.clone();
    assert!(msg.contains("restarting kv-1: partitions 1 would lack a majority"), "{msg}");
    // Replication factor 1 has no majority to keep: restarts go ahead.
    obs.spec.replication_factor = 1;
    assert!(condition_of(&plan(&obs), cond::DEGRADED).is_none_or(|c| c.reason != "QuorumAtRisk"));
}

#[test]
pub(super) fn availability_is_judged_per_partition() {
    // Six members, every partition on one member of each "zone" (1/4, 2/5, 3/6).
    let placement = vec![(0, vec![1, 2, 3]), (1, vec![4, 5, 6]), (2, vec![1, 5, 3])];
    let mut obs = running(6, &members(&active(6)), placement);
    // A whole zone down (members 1 and 4): every partition keeps two of three.
    for o in [0, 3] {
        obs.pods[o].ready = false;
    }
    let a = condition_of(&plan(&obs), cond::AVAILABLE).unwrap().clone();
    assert!(a.status && a.reason == "QuorumAvailable", "{a:?}");
    assert!(a.message.contains("kv-0, kv-3"), "{a:?}");
    // Member 3 too: partitions 0 and 2 are down to one replica.
    obs.pods[2].ready = false;
    let a = condition_of(&plan(&obs), cond::AVAILABLE).unwrap().clone();
    assert!(!a.status && a.reason == "QuorumLost", "{a:?}");
    assert!(a.message.contains("partitions 0, 2 lack a live leader or a majority"), "{a:?}");
}

#[test]
fn zones_of_the_pods_nodes_are_recorded_once() {
    let m = active(3);
    let mut obs = running(3, &members(&m), vec![(0, vec![1, 2, 3])]);
    obs.pods[1].zone = Some("zone-b".into());
    let set = |a: &Action| matches!(a, Action::SetZone { .. });
    let actions = plan(&obs);
    let expected = Action::SetZone { via: "kv-0".into(), pod: "kv-1".into(), node_id: 2, zone: "zone-b".into() };
    assert_eq!(of_kind(&actions, set), vec![&expected]);
    // Recorded: nothing more to do.
    if let NodeObservation::Reachable(r) = &mut obs.pods[0].node {
        r.view.as_mut().unwrap().members[1].zone = "zone-b".into();
    }
    assert!(of_kind(&plan(&obs), set).is_empty());
}

#[test]
fn a_member_back_before_removal_is_reactivated_and_one_back_after_is_reclaimed() {
    let mut m = active(4);
    m[2].1 = "failed".into();
    let obs = running(4, &members(&m), vec![(0, vec![1, 2, 4])]);
    let actions = plan(&obs);
    let back = Action::ActivateMember { via: "kv-0".into(), pod: "kv-2".into(), node_id: 3 };
    assert_eq!(member_actions(&actions), vec![&back]);

    m[2].1 = "removed".into();
    let obs = running(4, &members(&m), vec![(0, vec![1, 2, 4])]);
    let actions = plan(&obs);
    let reclaim = Action::ReclaimMember { pod: "kv-2".into(), pvc: "data-kv-2".into() };
    assert_eq!(of_kind(&actions, |a| matches!(a, Action::ReclaimMember { .. })), vec![&reclaim]);
    assert!(member_actions(&actions).is_empty(), "{actions:?}");
    // Not while its node cannot be reached (its Node lost): only once it
    // answers as the removed member.
    let mut away = running(4, &members(&m), vec![(0, vec![1, 2, 4])]);
    away.pods[2].ready = false;
    away.pods[2].node = NodeObservation::Unreachable("connection refused".into());
    assert!(of_kind(&plan(&away), |a| matches!(a, Action::ReclaimMember { .. })).is_empty());
    // Answering but unready: a member removed before it heard of its removal
    // campaigns in a meta group it left and is never ready again.
    let mut unready = running(4, &members(&m), vec![(0, vec![1, 2, 4])]);
    unready.pods[2].ready = false;
    assert_eq!(of_kind(&plan(&unready), |a| matches!(a, Action::ReclaimMember { .. })), vec![&reclaim]);

    // A new incarnation (new id) under the same name is not reclaimed.
    let mut obs = running(4, &members(&m), vec![(0, vec![1, 2, 4])]);
    if let NodeObservation::Reachable(r) = &mut obs.pods[2].node {
        r.node_id = 9;
    }
    assert!(of_kind(&plan(&obs), |a| matches!(a, Action::ReclaimMember { .. })).is_empty());
}

#[test]
fn upgrade_walks_drain_restart_activate_for_each_pod() {
    // Plays the nodes' part between passes: every pod ends on the new
    // version and active, one pod at a time, leaders last.
    let m = active(3);
    let mut obs = running(3, &members(&m), vec![(0, vec![1, 2, 3])]);
    obs.spec.version = "0.2.0".into();
    set_leaders(&mut obs, 0, 3);
    let mut order = Vec::new();
    for _ in 0..20 {
        let actions = plan(&obs);
        for a in member_actions(&actions) {
            match a {
                Action::DrainLeaders { pod, .. } => {
                    let o = obs.pods.iter().position(|p| &p.name == pod).unwrap();
                    set_state(&mut obs, pod, "draining");
                    set_leaders(&mut obs, o, 0);
                }
                Action::RestartPod { pod } => {
                    let p = obs.pods.iter_mut().find(|p| &p.name == pod).unwrap();
                    p.version = "0.2.0".into();
                    order.push(pod.clone());
                }
                Action::ActivateMember { pod, .. } => set_state(&mut obs, pod, "active"),
                other => panic!("unexpected {other:?}"),
            }
        }
        if condition_of(&actions, cond::UPGRADING).unwrap().reason == "UpToDate" {
            break;
        }
    }
    assert_eq!(order, ["kv-2", "kv-1", "kv-0"]);
    let view = obs.pods[0].report().unwrap().view.as_ref().unwrap();
    assert!(view.members.iter().all(|m| m.state == MemberState::Active), "{:?}", view.members);
    assert!(obs.pods.iter().all(|p| p.version == "0.2.0"));
}

#[test]
fn failover_table() {
    // (case, members, pod kv-2 unready for (s), ReplaceMember expected, Degraded message part)
    let spare = |n: u32| active(n);
    type Case = (&'static str, Vec<(String, String)>, u64, bool, &'static str);
    let mut failed = spare(4);
    failed[2].1 = "failed".into();
    let table: Vec<Case> = vec![
        ("unready below the timeout", spare(4), 120, false, ""),
        ("past the timeout with a spare member", spare(4), 301, true, "marked failed"),
        ("past the timeout without a spare", spare(3), 301, false, "no spare member"),
        ("already failed: not again", failed, 301, false, "being re-created"),
    ];
    for (case, m, unready_s, want, msg) in table {
        let n = m.len() as u32;
        let mut obs = running(n, &members(&m), vec![(0, vec![1, 2, 3])]);
        obs.pods[2].node = NodeObservation::Unreachable("connection refused".into());
        obs.pods[2].ready = false;
        obs.pods[2].unready_for = Some(Duration::from_secs(unready_s));
        let actions = plan(&obs);
        let replaced = of_kind(&actions, |a| matches!(a, Action::ReplaceMember { .. }));
        let expected = Action::ReplaceMember { via: "kv-0".into(), pod: "kv-2".into(), node_id: 3 };
        assert_eq!(replaced, if want { vec![&expected] } else { vec![] }, "{case}");
        match condition_of(&actions, cond::DEGRADED) {
            Some(c) if !msg.is_empty() => assert!(c.message.contains(msg), "{case}: {}", c.message),
            Some(c) => panic!("{case}: unexpected {c:?}"),
            None => assert!(msg.is_empty(), "{case}: no Degraded condition"),
        }
    }
    // Two unready members with one spare: only one is failed over.
    let m = active(4);
    let mut obs = running(4, &members(&m), vec![(0, vec![1, 2, 3])]);
    for o in [2, 3] {
        obs.pods[o].node = NodeObservation::Unreachable("timeout".into());
        obs.pods[o].ready = false;
        obs.pods[o].unready_for = Some(Duration::from_secs(400));
    }
    assert_eq!(of_kind(&plan(&obs), |a| matches!(a, Action::ReplaceMember { .. })).len(), 1);
}

#[test]
fn rebalance_table() {
    // (case, members, placement, moving partition (leader kv-0 reports voters), enabled, Rebalance expected, reason)
    type Case = (&'static str, Vec<(String, String)>, Vec<(u32, Vec<u64>)>, Option<Vec<u64>>, bool, bool, &'static str);
    let skewed = vec![(0, vec![1, 2, 3]), (1, vec![1, 2, 3]), (2, vec![1, 2, 3])];
    let even = vec![(0, vec![1, 2, 3]), (1, vec![4, 1, 2]), (2, vec![3, 4, 1])];
    let mut draining = active(4);
    draining[1].1 = "draining".into();
    let table: Vec<Case> = vec![
        ("balanced", active(4), even.clone(), None, true, false, "Balanced"),
        ("a new member holds nothing", active(4), skewed.clone(), None, true, true, "MovingReplicas"),
        ("disabled", active(4), skewed.clone(), None, false, false, "Disabled"),
        (
            "a move is in flight: wait for it",
            active(4),
            skewed.clone(),
            Some(vec![1, 2, 4]),
            true,
            false,
            "MovingReplicas",
        ),
        ("a member is draining: wait", draining, skewed.clone(), None, true, false, "WaitingForMembers"),
        (
            "leader voters match the placement: no move in flight",
            active(4),
            skewed,
            Some(vec![3, 2, 1]),
            true,
            true,
            "MovingReplicas",
        ),
    ];
    for (case, m, placement, voters, enabled, want, reason) in table {
        let mut obs = running(4, &members(&m), placement);
        obs.spec.rebalance.enabled = enabled;
        obs.spec.rebalance.max_concurrent_moves = 3;
        if let (Some(v), NodeObservation::Reachable(r)) = (voters, &mut obs.pods[0].node) {
            r.led_voters.iter_mut().find(|(p, _)| *p == 0).unwrap().1 = v;
        }
        let actions = plan(&obs);
        let rebalances = of_kind(&actions, |a| matches!(a, Action::Rebalance { .. }));
        let expected = Action::Rebalance { via: "kv-0".into(), max_moves: 3 };
        assert_eq!(rebalances, if want { vec![&expected] } else { vec![] }, "{case}");
        let c = condition_of(&actions, cond::REBALANCING).unwrap();
        assert_eq!(c.reason, reason, "{case}");
        // Only a balanced (or disabled) cluster says it is not rebalancing.
        assert_eq!(c.status, !matches!(reason, "Balanced" | "Disabled"), "{case}");
    }
}

#[test]
fn replicas_on_a_failed_member_show_as_repairing() {
    let mut m = active(4);
    m[3].1 = "failed".into();
    let obs = running(4, &members(&m), vec![(0, vec![1, 2, 3]), (1, vec![4, 1, 2])]);
    let c = condition_of(&plan(&obs), cond::REBALANCING).unwrap().clone();
    assert!(c.status && c.reason == "Repairing" && c.message.contains("partitions 1 "), "{c:?}");
}

#[test]
fn unbalanced_partitions_follow_the_node_planner() {
    let m = active(4);
    let obs = running(4, &members(&m), vec![(0, vec![1, 2, 3]), (1, vec![1, 2, 3])]);
    let view = obs.view().unwrap();
    assert!(!unbalanced_partitions(view, 3).is_empty());
    let obs = running(3, &members(&active(3)), vec![(0, vec![1, 2, 3]), (1, vec![2, 3, 1]), (2, vec![3, 1, 2])]);
    assert_eq!(unbalanced_partitions(obs.view().unwrap(), 3), Vec::<u32>::new());
}

#[test]
fn a_pod_that_rejoined_is_found_by_its_live_record() {
    // kv-4 came back with a new identity: its old record (id 5) is
    // removed, the live one (id 6) holds data. Scale-in must not take
    // the removed record for "empty".
    let mut m = active(4);
    m.push(("kv-4".into(), "removed".into()));
    m.push(("kv-4".into(), "active".into()));
    let mut obs = running(5, &members(&m), vec![(0, vec![1, 2, 6]), (1, vec![2, 3, 4])]);
    if let NodeObservation::Reachable(r) = &mut obs.pods[4].node {
        r.node_id = 6;
    }
    obs.spec.replicas = 4;
    let actions = plan(&obs);
    assert_eq!(sts_replicas(&actions), 5);
    assert_eq!(
        member_actions(&actions),
        [&Action::Decommission { via: "kv-0".into(), pod: "kv-4".into(), node_id: 6 }]
    );
}

#[test]
fn the_live_record_of_a_name_wins_over_an_old_failed_one_with_a_higher_id() {
    let view = ClusterViewReport {
        members: vec![
            MemberReport { id: 9, name: "kv-1".into(), state: MemberState::Failed, zone: String::new() },
            MemberReport { id: 3, name: "kv-1".into(), state: MemberState::Active, zone: String::new() },
            MemberReport { id: 12, name: "kv-1".into(), state: MemberState::Removed, zone: String::new() },
        ],
        ..ClusterViewReport::default()
    };
    assert_eq!(view.member("kv-1").map(|m| m.id), Some(3));
}

#[test]
fn default_read_follows_the_spec() {
    let m = active(3);
    let mut obs = running(3, &members(&m), vec![(0, vec![1, 2, 3])]);
    assert!(!plan(&obs).iter().any(|a| matches!(a, Action::SetDefaultRead { .. })));
    obs.spec.consistency.default_read = ReadConsistency::Session;
    assert!(plan(&obs).contains(&Action::SetDefaultRead { pod: "kv-0".into(), level: ReadConsistency::Session }));
}

fn waited(obs: &mut Observation, kind: WaitKind, subject: &str, secs: u64) {
    obs.waits.insert(Wait { kind, subject: subject.into() }, Duration::from_secs(secs));
}

fn set_applied(obs: &mut Observation, ordinal: usize, partition: u32, applied: u64) {
    if let NodeObservation::Reachable(r) = &mut obs.pods[ordinal].node {
        r.partitions.get_mut(&partition).unwrap().applied_index = applied;
    }
}

fn waits(actions: &[Action]) -> Vec<&Wait> {
    actions.iter().filter_map(|a| if let Action::Wait(w) = a { Some(w) } else { None }).collect()
}

#[test]
fn upgrade_gates_on_the_data_table() {
    // (case, setup, member actions expected, Upgrading reason, message part)
    type Setup = fn(&mut Observation);
    let upgrading = |o: &mut Observation| {
        o.spec.version = "0.2.0".into();
        set_state(o, "kv-2", "draining");
        o.pods[2].version = "0.2.0".into();
    };
    let _ = upgrading;
    let table: Vec<(&str, Setup, Vec<Action>, &str, &str)> = vec![
        (
            "restarted, ready, one partition behind by more than maxCatchUpLag: wait, naming it",
            |o| {
                o.spec.version = "0.2.0".into();
                set_state(o, "kv-2", "draining");
                o.pods[2].version = "0.2.0".into();
                set_applied(o, 2, 1, 10);
            },
            vec![],
            "WaitingForCatchUp",
            "kv-2 has not caught up on partitions 1",
        ),
        (
            "restarted, behind by no more than the lag: active again",
            |o| {
                o.spec.version = "0.2.0".into();
                set_state(o, "kv-2", "draining");
                o.pods[2].version = "0.2.0".into();
                set_applied(o, 2, 1, 950);
            },
            vec![Action::ActivateMember { via: "kv-0".into(), pod: "kv-2".into(), node_id: 3 }],
            "Reactivating",
            "kv-2",
        ),
        (
            "restarted, a partition it holds has no reporting leader: wait",
            |o| {
                o.spec.version = "0.2.0".into();
                set_state(o, "kv-2", "draining");
                o.pods[2].version = "0.2.0".into();
                if let NodeObservation::Reachable(r) = &mut o.pods[1].node {
                    r.partitions.get_mut(&1).unwrap().role = Role::Follower;
                }
            },
            vec![],
            "WaitingForCatchUp",
            "partitions 1",
        ),
        (
            "a ready pod whose status call failed is not 'zero leaderships': wait",
            |o| {
                o.spec.version = "0.2.0".into();
                for i in [0, 1] {
                    o.pods[i].version = "0.2.0".into();
                }
                // kv-2 cannot be asked, and no other pod reports leading
                // partition 1: kv-2 may lead it. (With replicationFactor 3
                // the quorum check halts first; with 1 it has no majority
                // to check, and the leadership check must still hold.)
                o.spec.replication_factor = 1;
                o.pods[2].node = NodeObservation::Unreachable("deadline exceeded".into());
                if let NodeObservation::Reachable(r) = &mut o.pods[1].node {
                    r.led_partitions.clear();
                    r.led_voters.clear();
                }
            },
            vec![],
            "WaitingForStatus",
            "kv-2 did not answer its status call",
        ),
        (
            "a follower lagging elsewhere does not count toward a majority: halt",
            |o| {
                o.spec.version = "0.2.0".into();
                // kv-1 is far behind on partition 0; restarting kv-2 leaves only kv-0.
                set_applied(o, 1, 0, 1);
            },
            vec![],
            "Halted",
            "partitions 0 would lack a majority",
        ),
        (
            "a move in flight: the leader's actual voters count too",
            |o| {
                o.spec.version = "0.2.0".into();
                // Partition 0 is moving from {1,2,3} to {1,2,4}: node 4 has no pod,
                // so without kv-1 (restarted next) the new set lacks a majority.
                if let NodeObservation::Reachable(r) = &mut o.pods[0].node {
                    r.led_voters = vec![(0, vec![1, 2, 4])];
                }
                o.pods[2].version = "0.2.0".into();
                o.pods[0].version = "0.2.0".into();
            },
            vec![],
            "Halted",
            "partitions 0 would lack a majority",
        ),
    ];
    for (case, setup, want, reason, part) in table {
        let m = active(3);
        let mut obs = running(3, &members(&m), vec![(0, vec![1, 2, 3]), (1, vec![2, 3, 1])]);
        setup(&mut obs);
        let actions = plan(&obs);
        assert_eq!(member_actions(&actions), want.iter().collect::<Vec<_>>(), "{case}: {actions:?}");
        let c = condition_of(&actions, cond::UPGRADING).unwrap();
        assert_eq!(c.reason, reason, "{case}: {actions:?}");
        let degraded = condition_of(&actions, cond::DEGRADED).map(|c| c.message.clone()).unwrap_or_default();
        assert!(c.message.contains(part) || degraded.contains(part), "{case}: {c:?} / {degraded}");
    }
}

#[test]
fn every_wait_is_bounded_and_degraded_names_the_blocker() {
    // (case, setup making the wait, wait kind, subject, Degraded reason, message part)
    type Setup = fn(&mut Observation);
    let table: Vec<(&str, Setup, WaitKind, &str, &str, &str)> = vec![
        (
            "a drain that does not finish",
            |o| {
                o.spec.version = "0.2.0".into();
                set_state(o, "kv-1", "draining");
                set_leaders(o, 1, 2);
            },
            WaitKind::Drain,
            "kv-1",
            "DrainTimedOut",
            "kv-1 still leads 2 partitions",
        ),
        (
            "a restarted member that does not catch up",
            |o| {
                o.spec.version = "0.2.0".into();
                set_state(o, "kv-2", "draining");
                o.pods[2].version = "0.2.0".into();
                set_applied(o, 2, 0, 1);
            },
            WaitKind::CatchUp,
            "kv-2",
            "CatchUpTimedOut",
            "kv-2 has not caught up on partitions 0",
        ),
        (
            "a pod that does not become ready before the next restart",
            |o| {
                o.spec.version = "0.2.0".into();
                o.pods[1].version = "0.2.0".into();
                o.pods[1].ready = false;
            },
            WaitKind::Ready,
            "kv-1",
            "ReadyTimedOut",
            "kv-1 is not ready on 0.2.0",
        ),
        (
            "a scale-in whose member keeps its replicas",
            |o| {
                o.spec.replicas = 2;
                o.spec.replication_factor = 1;
                set_state(o, "kv-2", "decommissioning");
            },
            WaitKind::ScaleIn,
            "kv-2",
            "ScaleInTimedOut",
            "decommissioning kv-2: 1 partition replicas left to move",
        ),
        (
            "a new pod that does not join",
            |o| {
                o.spec.replicas = 4;
                o.statefulset_replicas = Some(4);
                o.pods.push(pod(3, node(4, false)));
            },
            WaitKind::Join,
            "kv-3",
            "JoinTimedOut",
            "kv-3 has not joined",
        ),
    ];
    for (case, setup, kind, subject, reason, part) in table {
        let mut obs = running(3, &members(&active(3)), vec![(0, vec![1, 2, 3])]);
        obs.spec.timeouts.drain = "1m".into();
        setup(&mut obs);
        let actions = plan(&obs);
        let w = Wait { kind, subject: subject.into() };
        assert!(waits(&actions).contains(&&w), "{case}: the wait is reported: {actions:?}");
        assert!(condition_of(&actions, cond::DEGRADED).is_none_or(|c| c.reason != reason), "{case}: not yet");
        // Just below the bound: still not Degraded.
        let bound = obs.bound(kind).as_secs();
        waited(&mut obs, kind, subject, bound - 1);
        assert!(condition_of(&plan(&obs), cond::DEGRADED).is_none_or(|c| c.reason != reason), "{case}");
        // Past it: Degraded names the blocker and the setting, and the
        // message does not change while the state does not.
        waited(&mut obs, kind, subject, bound);
        let first = condition_of(&plan(&obs), cond::DEGRADED).cloned().unwrap();
        assert_eq!(first.reason, reason, "{case}: {first:?}");
        assert!(first.message.contains(part) && first.message.contains(kind.setting()), "{case}: {first:?}");
        waited(&mut obs, kind, subject, bound * 3);
        assert_eq!(condition_of(&plan(&obs), cond::DEGRADED), Some(&first), "{case}: stable message");
    }
}

#[test]
fn one_plan_per_pass_in_priority_order() {
    // Failover and scale-in: kv-4 is back (failed, holds nothing) while
    // spec.replicas asks to remove it. Failover does not reactivate a
    // member on its way out, so the pod goes and nothing flips back.
    let mut m = active(4);
    m.push(("kv-4".into(), "failed".into()));
    let mut obs = running(5, &members(&m), vec![(0, vec![1, 2, 3])]);
    obs.spec.replicas = 4;
    let actions = plan(&obs);
    assert!(member_actions(&actions).is_empty(), "{actions:?}");
    assert_eq!(sts_replicas(&actions), 4);
    // Within spec.replicas the same member is reactivated.
    obs.spec.replicas = 5;
    let actions = plan(&obs);
    assert_eq!(
        member_actions(&actions),
        [&Action::ActivateMember { via: "kv-0".into(), pod: "kv-4".into(), node_id: 5 }],
        "{actions:?}"
    );

    // A step on a pod past spec.replicas keeps it in the StatefulSet: kv-4
    // came back as a removed member and is reclaimed (failover group)
    // while scale-in would drop it.
    let mut m = active(4);
    m.push(("kv-4".into(), "removed".into()));
    let mut obs = running(5, &members(&m), vec![(0, vec![1, 2, 3])]);
    obs.spec.replicas = 5;
    let actions = plan(&obs);
    assert!(actions.iter().any(|a| matches!(a, Action::ReclaimMember { .. })), "{actions:?}");

    // Upgrade over scale-in: a rollout step and a decommission never share a pass.
    let m = active(5);
    let mut obs = running(5, &members(&m), vec![(0, vec![1, 2, 3])]);
    obs.spec.replicas = 4;
    obs.spec.version = "0.2.0".into();
    let actions = plan(&obs);
    let steps: Vec<&Action> = actions.iter().filter(|a| a.is_step()).collect();
    assert_eq!(steps.len(), 1, "{actions:?}");
    assert!(matches!(steps[0], Action::DrainLeaders { .. }), "{actions:?}");
    // The upgrade leaves kv-4 alone: it is on its way out.
    assert_ne!(steps[0].pod(), Some("kv-4"));

    // Failover over upgrade: an unready member past the timeout is failed
    // over; the rollout waits.
    let m = active(4);
    let mut obs = running(4, &members(&m), vec![(0, vec![1, 2, 3])]);
    obs.spec.version = "0.2.0".into();
    obs.pods[3].ready = false;
    obs.pods[3].node = NodeObservation::Unreachable("timeout".into());
    obs.pods[3].unready_for = Some(Duration::from_secs(400));
    let actions = plan(&obs);
    let steps: Vec<&Action> = actions.iter().filter(|a| a.is_step()).collect();
    assert_eq!(steps, [&Action::ReplaceMember { via: "kv-0".into(), pod: "kv-3".into(), node_id: 4 }]);

    // Safety hold: with a partition lost, no restart and no rebalance.
    let m = active(4);
    let mut obs = running(4, &members(&m), vec![(0, vec![1, 2, 3]), (1, vec![1, 2, 3])]);
    obs.spec.version = "0.2.0".into();
    for i in [1, 2] {
        obs.pods[i].ready = false;
    }
    let actions = plan(&obs);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::RestartPod { .. } | Action::DrainLeaders { .. } | Action::Rebalance { .. })),
        "{actions:?}"
    );
}

#[test]
fn a_pod_whose_join_may_be_in_flight_is_not_dropped() {
    // kv-4 is no member in the view, but its node says it joined (the view
    // is behind): scale-in waits instead of removing it.
    let mut obs = running(5, &members(&active(4)), vec![(0, vec![1, 2, 3])]);
    obs.spec.replicas = 4;
    assert_eq!(sts_replicas(&plan(&obs)), 5);
    obs.pods[4].node = NodeObservation::Unreachable("timeout".into());
    assert_eq!(sts_replicas(&plan(&obs)), 5, "unknown is wait");
    obs.pods[4].node = node(5, false);
    assert_eq!(sts_replicas(&plan(&obs)), 4, "never joined: removed");
}

#[test]
fn an_active_member_without_a_pod_is_failed_over_past_the_bound() {
    // kv-4 is an active member but the StatefulSet has 4 pods (someone
    // scaled it by hand, or the pod went before its member).
    let mut obs = running(4, &members(&active(5)), vec![(0, vec![1, 2, 5]), (1, vec![1, 2, 3])]);
    let actions = plan(&obs);
    let w = Wait { kind: WaitKind::Orphan, subject: "kv-4".into() };
    assert!(waits(&actions).contains(&&w), "{actions:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::ReplaceMember { .. })));
    // Rebalancing does not move replicas onto it meanwhile.
    assert!(!actions.iter().any(|a| matches!(a, Action::Rebalance { .. })), "{actions:?}");
    waited(&mut obs, WaitKind::Orphan, "kv-4", 301);
    let actions = plan(&obs);
    assert!(actions.contains(&Action::ReplaceMember { via: "kv-0".into(), pod: "kv-4".into(), node_id: 5 }));
    let c = condition_of(&actions, cond::DEGRADED).unwrap();
    assert_eq!(c.reason, "MemberWithoutPod");
    assert!(c.message.contains("member kv-4 (node 5) is active but has no pod"), "{c:?}");
}

#[test]
fn claims_go_only_once_their_member_left() {
    // The StatefulSet was scaled by hand to 3: kv-3's pod is gone but its
    // member is active: its claim stays.
    let mut obs = running(3, &members(&active(4)), vec![(0, vec![1, 2, 4])]);
    obs.pvcs.push("data-kv-3".into());
    assert!(!plan(&obs).iter().any(|a| matches!(a, Action::DeletePvc { .. })));
    set_state(&mut obs, "kv-3", "removed");
    assert!(plan(&obs).contains(&Action::DeletePvc { name: "data-kv-3".into() }));
}

#[test]
fn the_template_revision_counts_as_outdated() {
    let mut obs = running(3, &members(&active(3)), vec![(0, vec![1, 2, 3])]);
    obs.update_revision = Some("kv-new".into());
    for p in &mut obs.pods {
        p.revision = Some("kv-new".into());
    }
    obs.pods[1].revision = Some("kv-old".into());
    let c = condition_of(&plan(&obs), cond::UPGRADING).cloned().unwrap();
    assert!(c.status && c.message.contains("left: kv-1"), "{c:?}");
}

/// The meta view the `running` helper puts on kv-0.
fn view_mut(obs: &mut Observation) -> &mut ClusterViewReport {
    match &mut obs.pods[0].node {
        NodeObservation::Reachable(r) => r.view.as_mut().unwrap(),
        NodeObservation::Unreachable(_) => panic!("kv-0 reports no view"),
    }
}

/// 3 -> 5 over three zones, stage by stage from `kubectl scale` to the first
/// Rebalance: eight partitions on kv-0..2 (zones a, b, c), kv-3 and kv-4 on
/// Nodes of zones a and b. The base is the last stage: both new members
/// joined, zones recorded, nothing moved yet.
fn scaled_out_to_five() -> Observation {
    let zones = ["zone-a", "zone-b", "zone-c", "zone-a", "zone-b"];
    let placement = (0..8u32).map(|p| (p, (0..3).map(|i| (p as u64 + i) % 3 + 1).collect())).collect();
    let mut obs = running(5, &members(&active(5)), placement);
    obs.spec.replicas = 5;
    obs.spec.partitions = 8;
    obs.spec.rebalance.max_concurrent_moves = 4;
    for (p, zone) in obs.pods.iter_mut().zip(zones) {
        p.zone = Some(zone.into());
    }
    for (m, zone) in view_mut(&mut obs).members.iter_mut().zip(zones) {
        m.zone = zone.into();
    }
    obs
}

/// A pod whose node has started but not joined yet.
fn unjoined(obs: &mut Observation, ordinal: usize) {
    obs.pods[ordinal].node = node(ordinal as u64 + 1, false);
    obs.pods[ordinal].ready = false;
}

#[test]
fn scale_out_shows_rebalancing_from_the_request_until_the_new_members_hold_replicas() {
    type Stage = fn(&mut Observation);
    // (stage, how it differs from both members joined with zones recorded,
    // Rebalancing reason, a Rebalance this pass)
    let table: Vec<(&str, Stage, &str, bool)> = vec![
        (
            "kubectl scale: the StatefulSet still has 3 pods",
            |obs| {
                obs.statefulset_replicas = Some(3);
                obs.pods.truncate(3);
                view_mut(obs).members.truncate(3);
            },
            "WaitingForMembers",
            false,
        ),
        (
            "the new pods run, neither joined",
            |obs| {
                unjoined(obs, 3);
                unjoined(obs, 4);
                view_mut(obs).members.truncate(3);
            },
            "WaitingForMembers",
            false,
        ),
        (
            "kv-3 joined (zone not recorded yet), kv-4 not",
            |obs| {
                unjoined(obs, 4);
                let view = view_mut(obs);
                view.members.truncate(4);
                view.members[3].zone = String::new();
            },
            "WaitingForMembers",
            false,
        ),
        (
            // The window: every pod ready, every member active, but the
            // new members have no zone yet, so a placement over zones
            // cannot use them and looks balanced.
            "the last member joined, zones not recorded yet",
            |obs| {
                let view = view_mut(obs);
                view.members[3].zone = String::new();
                view.members[4].zone = String::new();
            },
            "WaitingForMembers",
            false,
        ),
        (
            "one new member's zone recorded, the other's not",
            |obs| view_mut(obs).members[4].zone = String::new(),
            "WaitingForMembers",
            false,
        ),
        ("zones recorded, before the first Rebalance", |_| {}, "MovingReplicas", true),
    ];
    // Every stage is checked, and every one that fails is reported.
    let mut wrong = Vec::new();
    for (case, stage, reason, rebalances) in table {
        let mut obs = scaled_out_to_five();
        stage(&mut obs);
        let actions = plan(&obs);
        let Some(c) = condition_of(&actions, cond::REBALANCING) else {
            wrong.push(format!("{case}: no Rebalancing condition in {actions:?}"));
            continue;
        };
        // Rebalancing is True until the new members hold replicas, with
        // the reason, and a WaitingForMembers message names what it waits for.
        let names_one = c.message.contains("kv-3") || c.message.contains("kv-4");
        if !c.status || c.reason != reason || (reason == "WaitingForMembers" && !names_one) {
            wrong.push(format!("{case}: want True {reason}, got {c:?}"));
        }
        let expected = Action::Rebalance { via: "kv-0".into(), max_moves: 4 };
        let got = of_kind(&actions, |a| matches!(a, Action::Rebalance { .. }));
        if got != if rebalances { vec![&expected] } else { vec![] } {
            wrong.push(format!("{case}: Rebalance actions {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn rebalancing_is_judged_without_a_member_to_call_through() {
    // No node is ready to take an admin call: no Rebalance, but the
    // condition is still set this pass, never left at an earlier value.
    let mut obs = scaled_out_to_five();
    for p in &mut obs.pods {
        p.ready = false;
        if let NodeObservation::Reachable(r) = &mut p.node {
            r.ready = false;
        }
    }
    let actions = plan(&obs);
    let c = condition_of(&actions, cond::REBALANCING).expect("a Rebalancing condition");
    assert!(c.status && c.reason == "WaitingForMembers" && c.message.contains("ready member"), "{c:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::Rebalance { .. })), "{actions:?}");
}
