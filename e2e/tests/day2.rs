//! Day-2 operator scenarios on the simulator: rolling upgrades, failover,
//! zone-aware placement and the default read level. Each runs a client
//! workload throughout and ends by reading back every acknowledged write.
//!
//! Like tests/scenarios.rs, every scenario has its own namespace suffixed
//! with the process id (cluster DNS names go into the shared /etc/hosts).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::cluster::{
    assert_all_readable, assert_status_truthful, client, condition, manifest, member, members, namespace, new_id,
    node_id, node_status, pod_endpoint, pod_endpoints, service_endpoint, settled, Env, Workload,
};
use common::wait_for;
use keyraft_chaos::workload::Recording;
use keyraft_client::ConsistencyLevel;
use serde_json::{json, Value};

/// Bound on a cluster going from `kubectl apply` to Running.
const CREATE: Duration = Duration::from_secs(180);
/// Bound on the workload making progress at a checkpoint.
const PROGRESS: Duration = Duration::from_secs(60);
/// Bound on a rollout, failover or rebalance settling (2 cores, debug builds).
const SETTLE: Duration = Duration::from_secs(300);

/// Besides the writers: two clients whose every operation (put, get at each
/// level, delete, compare-and-swap, batch on six keys) is recorded, and the
/// history checked for linearizability at the end (keyraft-chaos).
async fn record(endpoints: Vec<String>, prefix: &str) -> Recording {
    let mut opts = common::cluster::client_options(endpoints);
    opts.timeout = Duration::from_secs(20);
    Recording::start(opts, 2, 3, prefix, 14, Duration::from_millis(20)).await.expect("start the recorded clients")
}

async fn assert_linearizable(history: Recording) {
    match history.finish_and_check(Duration::from_secs(60)).await {
        Ok(r) => eprintln!("history linearizable: {} key groups, {} operations placed", r.groups, r.ops_checked),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_upgrade_of_five_nodes_fails_no_request_and_a_bad_version_stops_at_one_pod_until_reverted() {
    let bins = tempfile::tempdir().unwrap();
    let v2 = common::tag_bin_dir(bins.path(), "0.2.0", "keyraft-node", "--reported-version 0.2.0");
    let broken = common::tag_bin_dir(bins.path(), "0.3.0-broken", "keyraft-node", "--no-such-flag");
    let Some(env) = Env::with_operator_on(|cfg| {
        cfg.tag_bin_dirs.insert("0.2.0".into(), v2);
        cfg.tag_bin_dirs.insert("0.3.0-broken".into(), broken);
    })
    .await
    else {
        return;
    };
    let ns = &namespace("upgrade");
    env.create_namespace(ns).await;
    env.apply(ns, &manifest("kv", json!({"replicas": 5}))).await;
    env.wait_running(ns, "kv", 5, CREATE).await;
    let work = Workload::start(pod_endpoints(ns, "kv", 5), 3, "upgrade");
    let history = record(pod_endpoints(ns, "kv", 5), "upgrade-h/").await;
    work.progresses(100, PROGRESS).await;

    // 0.1.0 -> 0.2.0 under load: one pod at a time, progress in status.
    let t = Instant::now();
    env.patch_spec(ns, "kv", json!({"version": "0.2.0"})).await;
    let mut progress = BTreeSet::new();
    let done = env
        .wait_status(ns, "kv", "every pod on 0.2.0", SETTLE, |kr| {
            if let Some(c) = condition(kr, "Upgrading").filter(|c| c["status"] == "True") {
                let msg = c["message"].as_str().unwrap_or_default();
                if let Some(i) = msg.find(" pods updated") {
                    progress.insert(msg[..i].rsplit(' ').next().unwrap().to_string());
                }
            }
            settled(kr, 5) && kr["status"]["currentVersion"] == "0.2.0" && kr["status"]["updatedReplicas"] == 5
        })
        .await;
    let took = t.elapsed();
    work.progresses(100, PROGRESS).await;
    eprintln!("rolling upgrade of 5 pods took {took:?}; progress seen: {progress:?}");
    assert!(progress.contains("0/5") && progress.len() >= 3, "Upgrading reports progress pod by pod: {progress:?}");
    assert_status_truthful(&env, ns, &done).await;
    for i in 0..5 {
        let info = node_status(&pod_endpoint(ns, "kv", i)).await.node.unwrap();
        assert_eq!(info.version, "0.2.0", "kv-{i} runs the new build");
    }
    let events = env.event_reasons(ns, "kv").await;
    for reason in ["DrainingLeaders", "RestartingPod", "MemberActive"] {
        assert!(events.iter().any(|e| e == reason), "Event {reason} recorded: {events:?}");
    }

    // A version whose pods cannot start: the rollout stops at its first pod.
    env.patch_spec(ns, "kv", json!({"version": "0.3.0-broken"})).await;
    let stuck = env
        .wait_status(ns, "kv", "the rollout waiting on a pod that is not ready", SETTLE, |kr| {
            let bad: Vec<&Value> = members(kr).iter().filter(|m| m["version"] == "0.3.0-broken").collect();
            bad.len() == 1
                && bad[0]["ready"] == false
                && condition(kr, "Upgrading").is_some_and(|c| {
                    let msg = c["message"].as_str().unwrap_or_default();
                    c["status"] == "True"
                        && msg.contains(bad[0]["pod"].as_str().unwrap())
                        && msg.contains("ready on 0.3.0-broken")
                })
        })
        .await;
    let bad_pod = members(&stuck).iter().find(|m| m["version"] == "0.3.0-broken").unwrap()["pod"].as_str().unwrap();
    let bad_pod = bad_pod.to_string();
    // The other four keep serving while it stays stuck.
    work.progresses(200, PROGRESS).await;
    let still = env.cluster(ns, "kv").await.unwrap();
    let on_bad = members(&still).iter().filter(|m| m["version"] == "0.3.0-broken").count();
    assert_eq!(on_bad, 1, "the rollout went no further than {bad_pod}");
    assert_eq!(member(&still, &bad_pod)["ready"], false);

    // Reverting the spec recovers: the stuck pod comes back on 0.2.0.
    let t = Instant::now();
    env.patch_spec(ns, "kv", json!({"version": "0.2.0"})).await;
    let back = env
        .wait_status(ns, "kv", "every pod back on 0.2.0", SETTLE, |kr| {
            settled(kr, 5) && kr["status"]["currentVersion"] == "0.2.0"
        })
        .await;
    eprintln!("revert recovered {bad_pod} in {:?}", t.elapsed());
    assert_status_truthful(&env, ns, &back).await;
    work.progresses(100, PROGRESS).await;

    let tally = work.stop().await;
    assert_linearizable(history).await;
    eprintln!(
        "{} writes acknowledged, {} failed, {} client retries during upgrade, stuck rollout and revert",
        tally.acked.len(),
        tally.failed.len(),
        tally.retries
    );
    assert!(tally.failed.is_empty(), "requests failed during the rolling upgrade: {:?}", tally.failed);
    assert!(tally.wrong_reads.is_empty(), "read-your-writes: {:?}", tally.wrong_reads);
    assert_all_readable(vec![service_endpoint(ns, "kv")], &tally.acked).await;
    env.shutdown().await;
}

/// The pod of the member with the most leaderships.
fn busiest(kr: &Value) -> String {
    let m = members(kr).iter().max_by_key(|m| m["leaders"].as_u64().unwrap_or(0)).unwrap();
    m["pod"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_through_a_leader_kill_a_node_outage_and_a_lost_volume_keeps_every_acknowledged_write() {
    let Some(env) = Env::with_operator().await else { return };
    if env.faults("killing pod processes, NotReady nodes and losing volumes").is_none() {
        return;
    }
    let ns = &namespace("failover");
    env.create_namespace(ns).await;
    env.apply(
        ns,
        &manifest("kv", json!({"replicas": 4, "failover": {"timeout": "30s"}, "timeouts": {"startup": "20s"}})),
    )
    .await;
    let kr = env.wait_running(ns, "kv", 4, CREATE).await;
    let work = Workload::start(pod_endpoints(ns, "kv", 4), 3, "failover");
    let history = record(pod_endpoints(ns, "kv", 4), "failover-h/").await;
    work.progresses(100, PROGRESS).await;

    // 1. kill -9 of the pod leading the most partitions: Raft elects new
    // leaders by itself; the pod restarts with its data and rejoins.
    let leader = busiest(&kr);
    let leader_id = node_id(&kr, &leader);
    let killed = Instant::now();
    env.signal(ns, &leader, libc::SIGKILL);
    work.progresses(200, PROGRESS).await;
    let back = env.wait_running(ns, "kv", 4, SETTLE).await;
    let after_kill = Instant::now();
    assert_eq!(node_id(&back, &leader), leader_id, "{leader} rejoined with its data (same node id)");
    eprintln!(
        "killed {leader} ({} leaderships); back and settled after {:?}",
        member(&kr, &leader)["leaders"],
        killed.elapsed()
    );

    // 2. A Node NotReady past failover.timeout: its member is failed, its
    // replicas re-created elsewhere, then it is removed. When the Node
    // returns, the pod (a removed member) is reclaimed and joins anew.
    let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..4 {
        let pod = format!("kv-{i}");
        by_node.entry(env.pod_node(ns, &pod).await).or_default().push(pod);
    }
    let (node, pods) = by_node.iter().find(|(_, p)| p.len() == 1).expect("a Node with exactly one pod");
    let lonely = pods[0].clone();
    let lonely_id = node_id(&back, &lonely);
    let outage = Instant::now();
    env.set_node_ready(node, false);
    let removed = env
        .wait_status(ns, "kv", &format!("{lonely} failed over and removed"), SETTLE, |kr| {
            members(kr).iter().any(|m| m["pod"] == lonely.as_str() && m["state"] == "removed")
                && kr["status"]["partitions"].as_array().is_some_and(|ps| {
                    ps.iter().all(|p| p["replicas"].as_array().unwrap().iter().all(|r| r.as_u64() != Some(lonely_id)))
                })
        })
        .await;
    eprintln!("{lonely} ({node} NotReady) failed over and removed after {:?}", outage.elapsed());
    assert!(condition(&removed, "Available").is_some_and(|c| c["status"] == "True"), "still Available");
    work.progresses(100, PROGRESS).await;
    env.set_node_ready(node, true);
    let rejoined = env
        .wait_status(ns, "kv", &format!("{lonely} back as a new member"), SETTLE, |kr| {
            settled(kr, 4) && new_id(kr, &lonely, lonely_id)
        })
        .await;
    eprintln!("{lonely} rejoined as a new member {:?} after the outage began", outage.elapsed());
    assert_status_truthful(&env, ns, &rejoined).await;

    // 3. A lost volume: the pod restarts empty, joins as a new incarnation
    // and the old member is replaced.
    let victim = (0..4).map(|i| format!("kv-{i}")).find(|p| *p != lonely && *p != leader).unwrap();
    let victim_id = node_id(&rejoined, &victim);
    let lost = Instant::now();
    env.lose_volume(ns, &format!("data-{victim}"));
    let replaced = env
        .wait_status(ns, "kv", &format!("{victim} back as a new incarnation"), SETTLE, |kr| {
            settled(kr, 4) && new_id(kr, &victim, victim_id)
        })
        .await;
    eprintln!("{victim} lost its volume; replaced and settled after {:?}", lost.elapsed());
    assert_status_truthful(&env, ns, &replaced).await;
    let events = env.event_reasons(ns, "kv").await;
    for reason in ["MemberFailed", "MemberReclaimed"] {
        assert!(events.iter().any(|e| e == reason), "Event {reason} recorded: {events:?}");
    }
    work.progresses(100, PROGRESS).await;

    let tally = work.stop().await;
    assert_linearizable(history).await;
    eprintln!(
        "write unavailability after the leader kill: {:?} (longest wait of any writer); {} writes acknowledged, {} failed, {} retries",
        tally.longest_gap(killed, after_kill),
        tally.acked.len(),
        tally.failed.len(),
        tally.retries
    );
    assert!(tally.failed.is_empty(), "writes failed during failover: {:?}", tally.failed);
    assert!(tally.wrong_reads.is_empty(), "read-your-writes: {:?}", tally.wrong_reads);
    assert_all_readable(vec![service_endpoint(ns, "kv")], &tally.acked).await;
    env.shutdown().await;
}

/// Zone of each member's node id, from status.members.
fn zones(kr: &Value) -> BTreeMap<u64, String> {
    members(kr).iter().filter_map(|m| Some((m["nodeId"].as_u64()?, m["zone"].as_str()?.to_string()))).collect()
}

/// Every partition's replicas lie in distinct zones, and replicas and
/// leaders are spread evenly (max - min <= 1) over the members.
fn spread_over_zones(kr: &Value) -> bool {
    let zones = zones(kr);
    let partitions = kr["status"]["partitions"].as_array().unwrap();
    let distinct = partitions.iter().all(|p| {
        let z: BTreeSet<&String> =
            p["replicas"].as_array().unwrap().iter().filter_map(|r| zones.get(&r.as_u64()?)).collect();
        z.len() == 3
    });
    let mut held: BTreeMap<u64, usize> = zones.keys().map(|id| (*id, 0)).collect();
    for r in partitions.iter().flat_map(|p| p["replicas"].as_array().unwrap()) {
        *held.entry(r.as_u64().unwrap()).or_default() += 1;
    }
    let leaders: Vec<u64> = members(kr).iter().map(|m| m["leaders"].as_u64().unwrap_or(0)).collect();
    let even = |v: Vec<u64>| v.iter().max().unwrap() - v.iter().min().unwrap() <= 1;
    distinct && even(held.values().map(|n| *n as u64).collect()) && even(leaders)
}

/// A key of each partition.
fn key_per_partition(partitions: u32, prefix: &str) -> Vec<String> {
    let mut keys: Vec<Option<String>> = vec![None; partitions as usize];
    for i in 0.. {
        let k = format!("{prefix}-{i}");
        let p = keyraft_api::partition_for_key(k.as_bytes(), partitions) as usize;
        keys[p].get_or_insert(k);
        if keys.iter().all(Option::is_some) {
            break;
        }
    }
    keys.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_three_to_six_over_three_zones_spreads_every_partition_and_a_lost_zone_keeps_all_available() {
    let Some(env) = Env::with_operator().await else { return };
    if env.faults("pausing a zone's pods").is_none() {
        return;
    }
    let ns = &namespace("zones");
    env.create_namespace(ns).await;
    env.apply(ns, &manifest("kv", json!({"replicas": 3}))).await;
    let three = env.wait_running(ns, "kv", 3, CREATE).await;
    assert_eq!(
        zones(&three).values().collect::<BTreeSet<_>>().len(),
        3,
        "three pods in three zones: {:?}",
        zones(&three)
    );
    let work = Workload::start(pod_endpoints(ns, "kv", 3), 3, "zones");
    let history = record(pod_endpoints(ns, "kv", 3), "zones-h/").await;
    work.progresses(100, PROGRESS).await;

    // 3 -> 6: the new members join, Rebalancing shows while data moves.
    let t = Instant::now();
    env.kubectl_ok(&["scale", "kr/kv", "-n", ns, "--replicas=6"]).await;
    let mut rebalancing = None;
    let six = env
        .wait_status(ns, "kv", "6 members spread over 3 zones", SETTLE, |kr| {
            if let Some(c) = condition(kr, "Rebalancing").filter(|c| c["status"] == "True") {
                rebalancing.get_or_insert(c["message"].as_str().unwrap_or_default().to_string());
            }
            settled(kr, 6) && spread_over_zones(kr)
        })
        .await;
    eprintln!("3 -> 6 settled and spread over zones after {:?}; Rebalancing said: {rebalancing:?}", t.elapsed());
    assert!(rebalancing.is_some(), "the Rebalancing condition was True while replicas moved");
    assert_status_truthful(&env, ns, &six).await;
    assert!(env.event_reasons(ns, "kv").await.iter().any(|e| e == "ZoneRecorded"));
    work.progresses(100, PROGRESS).await;

    // Lose zone-a: stop both of its pods. Every partition keeps a majority.
    let lost: Vec<String> = members(&six)
        .iter()
        .filter(|m| m["zone"] == "zone-a")
        .map(|m| m["pod"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(lost.len(), 2, "two pods per zone");
    for p in &lost {
        env.signal(ns, p, libc::SIGSTOP);
    }
    let survivors: Vec<String> =
        (0..6).filter(|i| !lost.contains(&format!("kv-{i}"))).map(|i| pod_endpoint(ns, "kv", i)).collect();
    let c = client(survivors);
    for k in key_per_partition(8, "zone-loss") {
        c.put(k.clone(), "still here").await.unwrap_or_else(|e| panic!("write to {k} with zone-a down: {e}"));
        let got = c.get(k.clone(), Some(ConsistencyLevel::Linearizable)).await;
        assert_eq!(got.unwrap().as_deref(), Some(&b"still here"[..]), "linearizable read of {k} with zone-a down");
    }
    work.progresses(200, PROGRESS).await;
    let during = env
        .wait_status(ns, "kv", "the lost pods seen unready", PROGRESS, |kr| {
            lost.iter().all(|p| member(kr, p)["ready"] == false)
        })
        .await;
    let available = condition(&during, "Available").unwrap();
    assert_eq!(available["status"], "True", "every partition keeps a majority: {available}");
    for p in &lost {
        env.signal(ns, p, libc::SIGCONT);
    }
    let back = env.wait_running(ns, "kv", 6, SETTLE).await;
    assert_status_truthful(&env, ns, &back).await;

    let tally = work.stop().await;
    assert_linearizable(history).await;
    eprintln!("{} writes acknowledged, {} failed, {} retries", tally.acked.len(), tally.failed.len(), tally.retries);
    assert!(tally.failed.is_empty(), "writes failed: {:?}", tally.failed);
    assert!(tally.wrong_reads.is_empty(), "read-your-writes: {:?}", tally.wrong_reads);
    assert_all_readable(vec![service_endpoint(ns, "kv")], &tally.acked).await;
    env.shutdown().await;
}

/// Every node reports `level` as the cluster's default read level.
async fn nodes_report_default(ns: &str, n: usize, level: keyraft_client::pb::Consistency) -> Option<()> {
    for i in 0..n {
        let s = node_status(&pod_endpoint(ns, "kv", i)).await;
        if s.cluster.is_none_or(|c| c.default_read != level as i32) {
            return None;
        }
    }
    Some(())
}

/// A Get naming no consistency level, sent to exactly one node.
async fn get_default(addr: &str, key: &str) -> Result<keyraft_client::pb::GetResponse, String> {
    let c = client(vec![addr.to_string()]);
    let mut kv = c.kv_client(addr).map_err(|e| e.to_string())?;
    let req = keyraft_client::pb::GetRequest { key: key.as_bytes().to_vec(), ..Default::default() };
    match tokio::time::timeout(Duration::from_secs(3), kv.get(req)).await {
        Ok(r) => r.map(|r| r.into_inner()).map_err(|s| s.to_string()),
        Err(_) => Err("no answer in 3 s".into()),
    }
}

/// The pod index leading `partition`, from the nodes' own status.
async fn leader_of(ns: &str, n: usize, partition: u32) -> Option<usize> {
    for i in 0..n {
        let s = node_status(&pod_endpoint(ns, "kv", i)).await;
        if s.groups.iter().any(|g| g.group == u64::from(partition) + 1 && g.role == "leader") {
            return Some(i);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_read_level_follows_the_spec_eventual_reads_a_follower_and_linearizable_is_never_stale() {
    use keyraft_client::pb::Consistency;
    let Some(env) = Env::with_operator().await else { return };
    if env.faults("pausing a partition leader").is_none() {
        return;
    }
    let ns = &namespace("consistency");
    env.create_namespace(ns).await;
    env.apply(ns, &manifest("kv", json!({"replicas": 3, "consistency": {"defaultRead": "eventual"}}))).await;
    let kr = env.wait_running(ns, "kv", 3, CREATE).await;
    wait_for("every node to default to eventual", PROGRESS, || nodes_report_default(ns, 3, Consistency::Eventual))
        .await;
    assert!(env.event_reasons(ns, "kv").await.iter().any(|e| e == "DefaultReadChanged"));

    let c = client(pod_endpoints(ns, "kv", 3));
    let key = "consistency-key";
    let partition = keyraft_api::partition_for_key(key.as_bytes(), 8);
    c.put(key, "v0").await.expect("first write");
    let leader = wait_for("a leader of the key's partition", PROGRESS, || leader_of(ns, 3, partition)).await;
    let follower = (leader + 1) % 3;
    let f_addr = pod_endpoint(ns, "kv", follower);
    let f_id = node_id(&kr, &format!("kv-{follower}"));
    wait_for("the follower to apply v0", PROGRESS, || async {
        get_default(&f_addr, key).await.ok().filter(|r| r.found && r.value == b"v0").map(|_| ())
    })
    .await;

    // Eventual, the leader stopped: the follower answers from its own replica.
    env.signal(ns, &format!("kv-{leader}"), libc::SIGSTOP);
    let r = get_default(&f_addr, key).await.expect("an eventual read with the leader stopped");
    assert_eq!((r.found, r.value.as_slice()), (true, &b"v0"[..]));
    assert_eq!(r.header.unwrap().served_by, f_id, "served by the follower itself");

    env.signal(ns, &format!("kv-{leader}"), libc::SIGCONT);

    // Back to linearizable, live: same pods, same processes. A node learns
    // the default through the meta group, so wait until every node has it.
    let uids = env.kubectl_ok(&["get", "pods", "-n", ns, "-o", "jsonpath={.items[*].metadata.uid}"]).await;
    env.patch_spec(ns, "kv", json!({"consistency": {"defaultRead": "linearizable"}})).await;
    wait_for("every node to default to linearizable", PROGRESS, || {
        nodes_report_default(ns, 3, Consistency::Linearizable)
    })
    .await;

    // A leader change: stop the partition's leader, write on under the new one.
    let leader = wait_for("a leader of the key's partition", PROGRESS, || leader_of(ns, 3, partition)).await;
    let others: Vec<String> = (0..3).filter(|i| *i != leader).map(|i| pod_endpoint(ns, "kv", i)).collect();
    let l_addr = pod_endpoint(ns, "kv", leader);
    env.signal(ns, &format!("kv-{leader}"), libc::SIGSTOP);
    let c = client(others.clone());
    let mut acked = 0u64;
    for n in 1..=20u64 {
        c.put(key, format!("v{n}")).await.unwrap_or_else(|e| panic!("write v{n} under the new leader: {e}"));
        acked = n;
    }
    // The old leader resumes still believing it leads: reads naming no level
    // never return a value older than the last acknowledged write, from any
    // node, while leadership settles.
    env.signal(ns, &format!("kv-{leader}"), libc::SIGCONT);
    let until = Instant::now() + Duration::from_secs(4);
    let (mut answered, mut refused) = (0, 0);
    while Instant::now() < until {
        for addr in std::iter::once(&l_addr).chain(&others) {
            let floor = acked;
            match get_default(addr, key).await {
                Ok(r) => {
                    let v = String::from_utf8(r.value).unwrap();
                    let n: u64 = v.trim_start_matches('v').parse().unwrap();
                    assert!(n >= floor, "stale read from {addr}: {v} after v{floor} was acknowledged");
                    answered += 1;
                }
                Err(_) => refused += 1,
            }
        }
        acked += 1;
        c.put(key, format!("v{acked}")).await.expect("write while leadership settles");
    }
    eprintln!("reads during the leader change: {answered} answered (none stale), {refused} refused");
    assert!(answered > 0, "some reads were answered");
    let after = env.kubectl_ok(&["get", "pods", "-n", ns, "-o", "jsonpath={.items[*].metadata.uid}"]).await;
    assert_eq!(uids, after, "changing the default read level restarted no pod");
    env.wait_running(ns, "kv", 3, SETTLE).await;
    env.shutdown().await;
}
