//! Leader election through a coordination.k8s.io Lease (kube 5 ships no
//! helper). One replica holds the Lease and runs the controller; the others
//! wait.
//!
//! Safety rules: another holder's Lease counts as expired only once this
//! replica has seen it unchanged for a whole lease duration on its own
//! monotonic clock (never comparing another replica's wall clock); every
//! Lease call is bounded by a timeout; the holder steps down once it has
//! not renewed within the renew deadline, which is shorter than the lease
//! duration, so it stops acting before anyone else may take over.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use tokio::sync::watch;

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity: its pod name (downward API).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub duration: Duration,
    /// The holder steps down when it could not renew for this long; shorter
    /// than `duration`.
    pub renew_deadline: Duration,
    /// Pause between attempts.
    pub retry: Duration,
    /// Bound of every Lease call.
    pub call_timeout: Duration,
}

impl LeaseConfig {
    /// Deadline and retry derived from the duration: renew within 2/3 of
    /// it, try every 1/5, each call bounded by the retry period.
    pub fn new(namespace: String, name: String, identity: String, duration: Duration) -> LeaseConfig {
        let retry = duration / 5;
        LeaseConfig {
            namespace,
            name,
            identity,
            duration,
            renew_deadline: duration * 2 / 3,
            retry,
            call_timeout: retry,
        }
    }
}

/// The Lease record last seen and since when (local monotonic clock) it
/// has not changed.
#[derive(Debug, Default)]
pub struct Observed {
    record: Option<(String, Option<String>, i32)>,
    since: Option<Instant>,
}

impl Observed {
    /// Whether this replica may take the Lease at `now`: nobody holds it,
    /// we do, or its holder has not changed it for a whole lease duration
    /// as measured here.
    pub fn can_acquire(&mut self, spec: &LeaseSpec, identity: &str, now: Instant) -> bool {
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder.is_empty() || holder == identity {
            return true;
        }
        let renew = spec.renew_time.as_ref().map(|MicroTime(t)| t.to_string());
        let record = (holder, renew, spec.lease_transitions.unwrap_or(0));
        if self.record.as_ref() != Some(&record) {
            self.record = Some(record);
            self.since = Some(now);
            return false;
        }
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64);
        self.since.is_some_and(|since| now.saturating_duration_since(since) > duration)
    }
}

/// Runs forever, publishing whether this replica leads.
pub async fn run(client: Client, cfg: LeaseConfig, tx: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut observed = Observed::default();
    let mut last_renew: Option<Instant> = None;
    loop {
        let attempt = tokio::time::timeout(cfg.call_timeout, try_acquire_or_renew(&api, &cfg, &mut observed)).await;
        let leading = match attempt {
            Ok(Ok(true)) => {
                last_renew = Some(Instant::now());
                true
            }
            Ok(Ok(false)) => {
                last_renew = None;
                false
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "lease renewal failed");
                still_leading(last_renew, cfg.renew_deadline, Instant::now())
            }
            Err(_) => {
                tracing::warn!(timeout = ?cfg.call_timeout, "lease call timed out");
                still_leading(last_renew, cfg.renew_deadline, Instant::now())
            }
        };
        if *tx.borrow() != leading {
            tracing::info!(leading, identity = %cfg.identity, "leadership changed");
        }
        let _ = tx.send(leading);
        tokio::time::sleep(cfg.retry).await;
    }
}

/// A holder that could not renew keeps leading only within the renew
/// deadline since its last renewal (local clock).
pub fn still_leading(last_renew: Option<Instant>, renew_deadline: Duration, now: Instant) -> bool {
    last_renew.is_some_and(|t| now.saturating_duration_since(t) < renew_deadline)
}

async fn try_acquire_or_renew(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    observed: &mut Observed,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let spec = |acquire: Option<MicroTime>, transitions: i32| LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.duration.as_secs() as i32),
        acquire_time: acquire,
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec(Some(MicroTime(now)), 0)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                // Another replica created it first.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let current = lease.spec.clone().unwrap_or_default();
            if !observed.can_acquire(&current, &cfg.identity, Instant::now()) {
                return Ok(false);
            }
            let ours = current.holder_identity.as_deref() == Some(cfg.identity.as_str());
            let transitions = current.lease_transitions.unwrap_or(0) + i32::from(!ours);
            let acquire = if ours { current.acquire_time.clone() } else { Some(MicroTime(now)) };
            lease.spec = Some(spec(acquire, transitions));
            // replace carries resourceVersion: a concurrent writer makes this 409.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn expiry_is_judged_on_the_local_clock_since_the_last_change() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut seen = Observed::default();
        assert!(seen.can_acquire(&LeaseSpec::default(), "a", t0), "nobody holds it");
        assert!(seen.can_acquire(&lease("a", 1, 15), "a", t0), "we hold it");
        // b's renew time is far in the past by the wall clock: that alone
        // proves nothing (clocks differ); only our own clock counts.
        assert!(!seen.can_acquire(&lease("b", 1, 15), "a", t0), "first sight");
        assert!(!seen.can_acquire(&lease("b", 1, 15), "a", t0 + s(10)), "unchanged for 10s of 15");
        // b renews: the count starts again.
        assert!(!seen.can_acquire(&lease("b", 2, 15), "a", t0 + s(16)));
        assert!(!seen.can_acquire(&lease("b", 2, 15), "a", t0 + s(30)), "unchanged for 14s");
        assert!(seen.can_acquire(&lease("b", 2, 15), "a", t0 + s(32)), "unchanged for 16s: expired");
    }

    #[test]
    fn the_holder_steps_down_within_the_renew_deadline() {
        let cfg = LeaseConfig::new("ns".into(), "l".into(), "pod-a".into(), Duration::from_secs(15));
        assert!(cfg.renew_deadline < cfg.duration);
        assert!(cfg.call_timeout < cfg.renew_deadline);
        let t0 = Instant::now();
        assert!(still_leading(Some(t0), cfg.renew_deadline, t0 + Duration::from_secs(9)));
        assert!(!still_leading(Some(t0), cfg.renew_deadline, t0 + Duration::from_secs(10)));
        assert!(!still_leading(None, cfg.renew_deadline, t0));
    }
}
