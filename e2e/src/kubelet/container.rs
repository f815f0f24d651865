//! One container as a local process: started in its own process group
//! with output appended to the pod's log file, probed, restarted after it
//! exits or fails its liveness probe (backoff 1 s doubling to 10 s), and
//! stopped with SIGTERM, then SIGKILL after the grace period.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use super::env::Launch;
use super::probe::{self, Timing};
use crate::time;

/// What the pod worker reports about a container.
#[derive(Debug, Clone, Default)]
pub struct ContainerState {
    pub name: String,
    pub image: String,
    pub pid: Option<i32>,
    pub started_at: Option<String>,
    pub started: bool,
    pub ready: bool,
    pub restart_count: u32,
    /// (reason, message) while not running.
    pub waiting: Option<(String, String)>,
    /// Final state when the container will not be restarted.
    pub terminated: Option<Value>,
    pub last_terminated: Option<Value>,
}

impl ContainerState {
    /// The `containerStatuses[]` entry.
    pub fn status(&self) -> Value {
        let state = if let Some(t) = &self.terminated {
            json!({"terminated": t})
        } else if let (Some(_), Some(at)) = (self.pid, &self.started_at) {
            json!({"running": {"startedAt": at}})
        } else {
            let (reason, message) = self.waiting.clone().unwrap_or(("ContainerCreating".into(), String::new()));
            json!({"waiting": {"reason": reason, "message": message}})
        };
        let mut s = json!({
            "name": self.name,
            "image": self.image,
            "imageID": format!("sim://{}", self.image),
            "containerID": self.pid.map(|p| format!("sim://{p}")),
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": state,
        });
        if let Some(t) = &self.last_terminated {
            s["lastState"] = json!({"terminated": t});
        }
        s
    }
}

/// Everything a container task needs.
pub struct ContainerSpec {
    pub index: usize,
    pub spec: Value,
    pub launch: Launch,
    /// Environment every process gets (PATH, HOME, KUBECONFIG, ...).
    pub base_env: Vec<(String, String)>,
    pub workdir: PathBuf,
    pub log: PathBuf,
    pub ip: Ipv4Addr,
    pub restart_policy: String,
    /// terminationGracePeriodSeconds, for liveness restarts.
    pub grace: Duration,
    pub states: Arc<Mutex<Vec<ContainerState>>>,
    pub changed: Arc<Notify>,
}

/// Sends a signal to a process group.
pub fn signal_group(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group we created.
    unsafe {
        libc::kill(-pid, sig);
    }
}

impl ContainerSpec {
    fn update(&self, f: impl FnOnce(&mut ContainerState)) {
        f(&mut self.states.lock().unwrap()[self.index]);
        self.changed.notify_one();
    }

    fn spawn(&self) -> std::io::Result<tokio::process::Child> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = tokio::process::Command::new(&self.launch.program);
        cmd.args(&self.launch.args)
            .env_clear()
            .envs(self.base_env.iter().cloned())
            .envs(self.launch.env.iter().cloned())
            .current_dir(&self.workdir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        cmd.spawn()
    }

    /// Runs the container until `stop` carries a grace period.
    pub async fn run(self, mut stop: watch::Receiver<Option<Duration>>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            if stop.borrow().is_some() {
                return;
            }
            let mut child = match self.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let msg = format!("starting {}: {e}", self.launch.program.display());
                    tracing::warn!(container = %self.spec["name"], "{msg}");
                    self.update(|s| s.waiting = Some(("RunContainerError".into(), msg)));
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            let pid = child.id().map(|p| p as i32).unwrap_or(0);
            let started_at = time::now();
            let began = Instant::now();
            self.update(|s| {
                s.pid = Some(pid);
                s.started_at = Some(started_at.clone());
                s.waiting = None;
                s.ready = false;
                s.started = false;
            });
            let (kill_tx, mut kill_rx) = mpsc::channel::<String>(1);
            let prober = tokio::spawn(probe_loop(
                self.spec.clone(),
                self.ip,
                self.launch.env.clone(),
                self.states.clone(),
                self.index,
                self.changed.clone(),
                kill_tx,
            ));
            let (exit, reason) = tokio::select! {
                status = child.wait() => (status.ok().and_then(|s| s.code()).unwrap_or(137), "Error"),
                why = kill_rx.recv() => {
                    tracing::info!(container = %self.spec["name"], "restarting: {}", why.unwrap_or_default());
                    (terminate(&mut child, pid, self.grace).await, "Error")
                }
                _ = stop.changed() => {
                    prober.abort();
                    let grace = stop.borrow().unwrap_or_default();
                    let code = terminate(&mut child, pid, grace).await;
                    self.update(|s| {
                        s.ready = false;
                        s.terminated = Some(json!({"exitCode": code, "reason": "Completed", "startedAt": started_at, "finishedAt": time::now()}));
                        s.pid = None;
                    });
                    return;
                }
            };
            prober.abort();
            // The group may hold children of the process.
            signal_group(pid, libc::SIGKILL);
            let reason = if exit == 0 { "Completed" } else { reason };
            let terminated =
                json!({"exitCode": exit, "reason": reason, "startedAt": started_at, "finishedAt": time::now()});
            let restart = match self.restart_policy.as_str() {
                "Never" => false,
                "OnFailure" => exit != 0,
                _ => true,
            };
            if !restart {
                self.update(|s| {
                    s.pid = None;
                    s.ready = false;
                    s.terminated = Some(terminated);
                });
                return;
            }
            if began.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_secs(1);
            }
            self.update(|s| {
                s.pid = None;
                s.ready = false;
                s.started = false;
                s.restart_count += 1;
                s.last_terminated = Some(terminated);
                s.waiting = Some((
                    "CrashLoopBackOff".into(),
                    format!("back-off {}s restarting failed container", backoff.as_secs()),
                ));
            });
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}

/// SIGTERM to the group, SIGKILL after `grace`; the exit code.
pub async fn terminate(child: &mut tokio::process::Child, pid: i32, grace: Duration) -> i32 {
    signal_group(pid, libc::SIGTERM);
    // A stopped (paused) process must run to handle SIGTERM.
    signal_group(pid, libc::SIGCONT);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(s) => s.ok(),
        Err(_) => {
            signal_group(pid, libc::SIGKILL);
            child.wait().await.ok()
        }
    };
    signal_group(pid, libc::SIGKILL);
    status.and_then(|s| s.code()).unwrap_or(137)
}

struct Schedule {
    probe: Value,
    timing: Timing,
    next: Instant,
    successes: u32,
    failures: u32,
    ever_succeeded: bool,
}

impl Schedule {
    fn new(probe: &Value, now: Instant) -> Option<Self> {
        if probe.is_null() {
            return None;
        }
        let timing = Timing::of(probe);
        Some(Schedule {
            probe: probe.clone(),
            timing,
            next: now + timing.initial_delay,
            successes: 0,
            failures: 0,
            ever_succeeded: false,
        })
    }

    /// Runs the probe if due; `Some(passing)` when its verdict changed.
    async fn tick(&mut self, container: &Value, ip: Ipv4Addr, env: &[(String, String)]) -> Option<bool> {
        let now = Instant::now();
        if now < self.next {
            return None;
        }
        let ok = probe::run(&self.probe, container, ip, env).await;
        // Until the first success, probe at least every second.
        let period =
            if self.ever_succeeded { self.timing.period } else { self.timing.period.min(Duration::from_secs(1)) };
        self.next = Instant::now() + period.max(Duration::from_millis(100));
        if ok {
            self.ever_succeeded = true;
            self.failures = 0;
            self.successes += 1;
            (self.successes == self.timing.success_threshold).then_some(true)
        } else {
            self.successes = 0;
            self.failures += 1;
            (self.failures == self.timing.failure_threshold).then_some(false)
        }
    }
}

/// Probes a running container, updating started/ready and asking for a
/// restart on startup or liveness failure.
async fn probe_loop(
    spec: Value,
    ip: Ipv4Addr,
    env: Vec<(String, String)>,
    states: Arc<Mutex<Vec<ContainerState>>>,
    index: usize,
    changed: Arc<Notify>,
    kill: mpsc::Sender<String>,
) {
    let now = Instant::now();
    let mut startup = Schedule::new(&spec["startupProbe"], now);
    let mut readiness = Schedule::new(&spec["readinessProbe"], now);
    let mut liveness = Schedule::new(&spec["livenessProbe"], now);
    let set = |f: &dyn Fn(&mut ContainerState)| {
        f(&mut states.lock().unwrap()[index]);
        changed.notify_one();
    };
    let mut started = startup.is_none();
    if started {
        set(&|s| {
            s.started = true;
            if readiness.is_none() {
                s.ready = true;
            }
        });
    }
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !started {
            if let Some(s) = startup.as_mut() {
                match s.tick(&spec, ip, &env).await {
                    Some(true) => {
                        started = true;
                        let no_readiness = readiness.is_none();
                        set(&|s| {
                            s.started = true;
                            if no_readiness {
                                s.ready = true;
                            }
                        });
                        let now = Instant::now();
                        for p in [readiness.as_mut(), liveness.as_mut()].into_iter().flatten() {
                            p.next = now + p.timing.initial_delay;
                        }
                    }
                    Some(false) => {
                        let _ = kill.send("startup probe failed".into()).await;
                        return;
                    }
                    None => {}
                }
            }
            continue;
        }
        if let Some(r) = readiness.as_mut() {
            if let Some(v) = r.tick(&spec, ip, &env).await {
                set(&|s| s.ready = v);
            }
        }
        if let Some(l) = liveness.as_mut() {
            if l.tick(&spec, ip, &env).await == Some(false) {
                let _ = kill.send("liveness probe failed".into()).await;
                return;
            }
        }
    }
}
