//! The nemesis: faults at random moments from a seeded RNG, one at a time,
//! each undone (and the cluster back to ready) before the next.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cluster::Cluster;
use crate::error::ChaosError;
use crate::net::Net;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Family {
    /// kill -9 and restart, SIGSTOP and SIGCONT, of leaders and followers.
    Process,
    /// iptables cuts between network namespaces (root only).
    Network,
    /// Storage failpoints through the node's HTTP port (`failpoints` builds
    /// only), and a full disk (root only: data directories on small tmpfs).
    Disk,
    /// Drain, decommission and re-admit (empty volume), rebalance, through
    /// the Admin API, with a process fault on another node half of the time.
    Membership,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Process => "process",
            Family::Network => "network",
            Family::Disk => "disk",
            Family::Membership => "membership",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// One node cut off from the others, both ways.
    Minority,
    /// The node leading most partitions cut off from the other nodes; clients
    /// still reach it.
    IsolatedLeader,
    /// Two sides that cannot talk, and a node in the middle that talks to both.
    Bridge,
    /// Packets from one node to the others dropped, the reverse kept.
    OneWayOut,
    /// Packets from the others to one node dropped, the reverse kept.
    OneWayIn,
}

#[derive(Debug, Clone)]
pub enum Fault {
    Kill {
        nodes: Vec<usize>,
    },
    Pause {
        nodes: Vec<usize>,
    },
    /// Directed cuts: packets from `.0` to `.1` are dropped.
    Partition {
        kind: Cut,
        cuts: Vec<(usize, usize)>,
    },
    /// Clients cannot reach the node; nodes still can.
    ClientCut {
        node: usize,
    },
    Failpoint {
        node: usize,
        name: &'static str,
        action: &'static str,
    },
    /// The node's volume filled to the last byte.
    DiskFull {
        node: usize,
    },
    /// A change of member `id` (node `node`) through the Admin API.
    Member {
        action: MemberAction,
        node: usize,
        id: u64,
    },
    /// Several faults at once.
    Combined(Vec<Fault>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberAction {
    /// Hand its leaderships over; `active` again on heal.
    Drain,
    /// Move its replicas away until it is `removed`; on heal it comes back
    /// with an empty data directory as a new member and a rebalance moves
    /// replicas onto it.
    Decommission,
    /// Apply a balanced placement (at most two moves).
    Rebalance,
}

impl Fault {
    fn parts(&self) -> Vec<&Fault> {
        match self {
            Fault::Combined(fs) => fs.iter().collect(),
            f => vec![f],
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill { nodes } => write!(f, "kill -9 {nodes:?} (restart on heal)"),
            Fault::Pause { nodes } => write!(f, "SIGSTOP {nodes:?} (SIGCONT on heal)"),
            Fault::Partition { kind, cuts } => write!(f, "partition {kind:?}, dropped from->to {cuts:?}"),
            Fault::ClientCut { node } => write!(f, "clients cut from node {node}"),
            Fault::Failpoint { node, name, action } => write!(f, "failpoint {name}={action} on node {node}"),
            Fault::DiskFull { node } => write!(f, "disk full on node {node} (freed on heal)"),
            Fault::Member { action, node, id } => write!(f, "{action:?} node {node} (member {id})"),
            Fault::Combined(fs) => {
                let parts: Vec<String> = fs.iter().map(|f| f.to_string()).collect();
                write!(f, "{}", parts.join(" + "))
            }
        }
    }
}

/// One fault of the schedule, in seconds since the run began.
#[derive(Debug, Clone)]
pub struct Event {
    pub family: Family,
    pub fault: String,
    pub start: f64,
    pub healed: f64,
    /// When the cluster was ready again after the heal.
    pub ready: f64,
}

/// Storage failpoints the node declares (`node/src/storage/mod.rs`), and
/// actions from the `fail` crate. A failed write or fsync stops the node
/// (fail-stop: a panic in a `failpoints` build aborts), so `panic` is a disk
/// that fails under a write; `delay` is a slow disk. The heal restarts it.
const DISK_FAILPOINTS: [&str; 2] = ["storage::log_write", "storage::fsync"];
const DISK_ACTIONS: [&str; 3] = ["panic", "delay(300)", "20%delay(1000)"];
/// The node's outgoing Raft messages (`node/src/network.rs`): a share of them
/// fails as unreachable, a lossy link (the kernel here has no `tc netem`).
const NETWORK_FAILPOINT: &str = "network::send";
const NETWORK_LOSS: &str = "30%return";
/// The same messages held back (milliseconds, without blocking the node).
const NETWORK_DELAY_FAILPOINT: &str = "network::delay";
const NETWORK_DELAY: &str = "return(150)";

pub struct Nemesis {
    pub rng: StdRng,
    pub families: Vec<Family>,
    /// Healthy time between faults, and how long a fault holds (seconds).
    pub quiet: (f64, f64),
    pub hold: (f64, f64),
    /// How long the cluster may take to be ready again after a heal.
    pub recovery: Duration,
    /// Whether the nodes serve `/debug/failpoints` (a `failpoints` build).
    pub failpoints: bool,
}

impl Nemesis {
    /// Runs faults until `until`, adding each to `events`; `t0` is the
    /// run's start (for the schedule).
    pub async fn run(
        &mut self,
        cluster: &mut Cluster,
        mut net: Option<&mut Net>,
        t0: Instant,
        until: Instant,
        events: &mut Vec<Event>,
    ) -> Result<(), ChaosError> {
        let secs = |t: Instant| t.duration_since(t0).as_secs_f64();
        loop {
            let quiet = Duration::from_secs_f64(self.rng.random_range(self.quiet.0..self.quiet.1));
            let hold = Duration::from_secs_f64(self.rng.random_range(self.hold.0..self.hold.1));
            if Instant::now() + quiet + hold > until {
                break;
            }
            tokio::time::sleep(quiet).await;
            let family = *self.families.choose(&mut self.rng).expect("at least one family");
            let fault = self.pick(family, cluster).await;
            let start = Instant::now();
            eprintln!("[{:7.1}s] nemesis: {fault}", secs(start));
            let applied = self.apply(&fault, cluster, net.as_deref_mut()).await;
            if applied.is_ok() {
                tokio::time::sleep(hold).await;
            }
            let healed = Instant::now();
            let heal = heal(cluster, net.as_deref_mut(), self.failpoints).await;
            applied.and(heal)?;
            self.settle(&fault, cluster).await?;
            eprintln!("[{:7.1}s] nemesis: healed", secs(healed));
            cluster.wait_ready(self.recovery).await.map_err(|e| {
                ChaosError::Cluster(format!("after healing `{fault}` the cluster did not recover: {e}"))
            })?;
            let ready = Instant::now();
            events.push(Event {
                family,
                fault: fault.to_string(),
                start: secs(start),
                healed: secs(healed),
                ready: secs(ready),
            });
        }
        Ok(())
    }

    /// A random fault of `family`, aimed at the node leading most
    /// partitions half of the time.
    async fn pick(&mut self, family: Family, cluster: &Cluster) -> Fault {
        let n = cluster.nodes.len();
        let counts = cluster.leader_counts().await;
        let leader = (0..n).max_by_key(|&i| counts[i]).unwrap_or(0);
        let mut others: Vec<usize> = (0..n).filter(|&i| i != leader).collect();
        others.shuffle(&mut self.rng);
        let target = if self.rng.random_bool(0.5) { leader } else { others[0] };
        let rest = |x: usize| (0..n).filter(move |&i| i != x);
        match family {
            Family::Process => {
                // Several nodes: a target and one more (a majority of three).
                let nodes = if self.rng.random_bool(0.3) {
                    vec![target, if target == leader { others[0] } else { leader }]
                } else {
                    vec![target]
                };
                if self.rng.random_bool(0.5) {
                    Fault::Kill { nodes }
                } else {
                    Fault::Pause { nodes }
                }
            }
            Family::Network if self.failpoints && self.rng.random_bool(0.25) => {
                if self.rng.random_bool(0.5) {
                    Fault::Failpoint { node: target, name: NETWORK_FAILPOINT, action: NETWORK_LOSS }
                } else {
                    Fault::Failpoint { node: target, name: NETWORK_DELAY_FAILPOINT, action: NETWORK_DELAY }
                }
            }
            Family::Network => match self.rng.random_range(0..6) {
                0 => Fault::Partition {
                    kind: Cut::IsolatedLeader,
                    cuts: rest(leader).flat_map(|o| [(leader, o), (o, leader)]).collect(),
                },
                1 => Fault::Partition {
                    kind: Cut::Minority,
                    cuts: rest(target).flat_map(|o| [(target, o), (o, target)]).collect(),
                },
                2 => {
                    // The middle talks to both sides; the sides not to each other.
                    let sides: Vec<usize> = rest(target).collect();
                    let left: Vec<usize> = sides.iter().copied().step_by(2).collect();
                    let right: Vec<usize> = sides.iter().copied().skip(1).step_by(2).collect();
                    let cuts = left.iter().flat_map(|&a| right.iter().flat_map(move |&b| [(a, b), (b, a)])).collect();
                    Fault::Partition { kind: Cut::Bridge, cuts }
                }
                3 => Fault::Partition { kind: Cut::OneWayOut, cuts: rest(target).map(|o| (target, o)).collect() },
                4 => Fault::Partition { kind: Cut::OneWayIn, cuts: rest(target).map(|o| (o, target)).collect() },
                _ => Fault::ClientCut { node: target },
            },
            Family::Membership => {
                let action = match self.rng.random_range(0..3) {
                    0 => MemberAction::Drain,
                    1 => MemberAction::Decommission,
                    _ => MemberAction::Rebalance,
                };
                let id = cluster.node_id(target).await.unwrap_or(0);
                let member = Fault::Member { action, node: target, id };
                if self.rng.random_bool(0.5) {
                    let other = *rest(target).collect::<Vec<_>>().choose(&mut self.rng).expect("more than one node");
                    let process = if self.rng.random_bool(0.5) {
                        Fault::Kill { nodes: vec![other] }
                    } else {
                        Fault::Pause { nodes: vec![other] }
                    };
                    Fault::Combined(vec![member, process])
                } else {
                    member
                }
            }
            Family::Disk if cluster.nodes[target].volume.is_some() && self.rng.random_bool(0.4) => {
                Fault::DiskFull { node: target }
            }
            Family::Disk => Fault::Failpoint {
                node: target,
                name: DISK_FAILPOINTS[self.rng.random_range(0..DISK_FAILPOINTS.len())],
                action: DISK_ACTIONS[self.rng.random_range(0..DISK_ACTIONS.len())],
            },
        }
    }

    async fn apply(&self, fault: &Fault, cluster: &mut Cluster, mut net: Option<&mut Net>) -> Result<(), ChaosError> {
        for part in fault.parts() {
            self.apply_one(part, cluster, net.as_deref_mut()).await?;
        }
        Ok(())
    }

    /// What a membership change needs after the general heal.
    async fn settle(&self, fault: &Fault, cluster: &mut Cluster) -> Result<(), ChaosError> {
        for part in fault.parts() {
            let &Fault::Member { action, node, id } = part else { continue };
            match action {
                MemberAction::Drain => cluster.set_member_state(id, "active").await?,
                MemberAction::Rebalance => {}
                MemberAction::Decommission => {
                    let deadline = Instant::now() + self.recovery;
                    loop {
                        match cluster.member_state(id).await.as_deref() {
                            Some("removed") => break,
                            state if Instant::now() >= deadline => {
                                return Err(ChaosError::Cluster(format!(
                                "decommission of node {node} (member {id}) did not finish within {:?}: state {state:?}",
                                self.recovery
                            )))
                            }
                            _ => tokio::time::sleep(Duration::from_millis(500)).await,
                        }
                    }
                    cluster.kill(node);
                    cluster.wipe(node)?;
                    cluster.nodes[node].join = cluster
                        .endpoints()
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| *i != node)
                        .map(|(_, e)| e)
                        .collect();
                    cluster.start(node)?;
                    cluster.wait_ready(self.recovery).await?;
                    cluster.rebalance(4).await?;
                }
            }
        }
        Ok(())
    }

    async fn apply_one(&self, fault: &Fault, cluster: &mut Cluster, net: Option<&mut Net>) -> Result<(), ChaosError> {
        match fault {
            Fault::Member { action, id, .. } => match action {
                MemberAction::Drain => cluster.set_member_state(*id, "draining").await?,
                MemberAction::Decommission => cluster.set_member_state(*id, "decommissioning").await?,
                MemberAction::Rebalance => drop(cluster.rebalance(2).await?),
            },
            Fault::Combined(_) => unreachable!("parts() flattens combined faults"),
            Fault::Kill { nodes } => nodes.iter().for_each(|&i| cluster.kill(i)),
            Fault::Pause { nodes } => nodes.iter().for_each(|&i| cluster.pause(i)),
            Fault::Partition { cuts, .. } => {
                let net = net.ok_or_else(|| ChaosError::Cluster("network fault without namespaces".into()))?;
                for &(from, to) in cuts {
                    net.cut(from, to)?;
                }
            }
            Fault::ClientCut { node } => {
                net.ok_or_else(|| ChaosError::Cluster("network fault without namespaces".into()))?.cut_clients(*node)?
            }
            Fault::DiskFull { node } => cluster.fill_disk(*node)?,
            Fault::Failpoint { node, name, action } => {
                let code = failpoint(cluster.nodes[*node].http, "PUT", name, action).await?;
                if !(200..300).contains(&code) {
                    return Err(ChaosError::Cluster(format!("setting failpoint {name} answered HTTP {code}")));
                }
            }
        }
        Ok(())
    }
}

/// Undoes every fault: cuts removed, failpoints cleared, paused nodes
/// resumed, dead ones restarted.
pub async fn heal(cluster: &mut Cluster, net: Option<&mut Net>, failpoints: bool) -> Result<(), ChaosError> {
    if let Some(net) = net {
        net.heal()?;
    }
    // Space first: a node stopped by a full disk must be able to start.
    cluster.free_disks();
    cluster.revive_all()?;
    if failpoints {
        clear_failpoints(cluster).await;
    }
    Ok(())
}

/// Clears the nemesis's failpoints on every node that runs (best effort: a
/// node that crashed on one starts clean).
pub async fn clear_failpoints(cluster: &Cluster) {
    for n in &cluster.nodes {
        for name in DISK_FAILPOINTS.into_iter().chain([NETWORK_FAILPOINT, NETWORK_DELAY_FAILPOINT]) {
            let _ = failpoint(n.http, "DELETE", name, "").await;
        }
    }
}

/// Whether the node serves the failpoint route (built with `failpoints`):
/// sets a failpoint nobody evaluates to `off`.
pub async fn failpoints_available(http: SocketAddr) -> Result<bool, ChaosError> {
    let code = failpoint(http, "PUT", "chaos::probe", "off").await?;
    let _ = failpoint(http, "DELETE", "chaos::probe", "").await;
    Ok((200..300).contains(&code))
}

/// One HTTP/1.1 request to `/debug/failpoints/<name>`; returns the status.
async fn failpoint(http: SocketAddr, method: &str, name: &str, body: &str) -> Result<u16, ChaosError> {
    let io = |what: &str| ChaosError::io(format!("{method} /debug/failpoints/{name} on {http}: {what}"));
    let fut = async {
        let mut s = TcpStream::connect(http).await.map_err(io("connect"))?;
        let req = format!(
            "{method} /debug/failpoints/{name} HTTP/1.1\r\nHost: {http}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.map_err(io("write"))?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.map_err(io("read"))?;
        let line = String::from_utf8_lossy(&resp).lines().next().unwrap_or_default().to_string();
        line.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| ChaosError::Cluster(format!("{method} /debug/failpoints/{name}: bad answer {line:?}")))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| ChaosError::Cluster(format!("{method} /debug/failpoints/{name} on {http}: no answer in 5 s")))?
}
