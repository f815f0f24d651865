//! Leader election through a coordination.k8s.io Lease (kube 5 ships no
//! helper). One replica holds the Lease and runs the controller; the others
//! wait. A holder that cannot renew within the lease duration steps down.

use std::time::Duration;

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
    /// This replica's identity (its pod name).
    pub identity: String,
    pub duration: Duration,
}

/// Whether `holder` may be displaced: nobody holds it, we do, or the
/// holder has not renewed within the lease duration.
pub fn can_acquire(spec: &LeaseSpec, identity: &str, now: Timestamp) -> bool {
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == identity {
        return true;
    }
    let secs = spec.lease_duration_seconds.unwrap_or(15) as i64;
    match &spec.renew_time {
        Some(MicroTime(t)) => t.as_second() + secs < now.as_second(),
        None => true,
    }
}

/// Runs forever, publishing whether this replica leads.
pub async fn run(client: Client, cfg: LeaseConfig, tx: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let retry = cfg.duration / 3;
    let mut last_renew = std::time::Instant::now() - cfg.duration;
    loop {
        let leading = match try_acquire_or_renew(&api, &cfg).await {
            Ok(true) => {
                last_renew = std::time::Instant::now();
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(error = %e, "lease renewal failed");
                // Keep leading only while the lease we last wrote is still valid.
                last_renew.elapsed() < cfg.duration
            }
        };
        if *tx.borrow() != leading {
            tracing::info!(leading, identity = %cfg.identity, "leadership changed");
        }
        let _ = tx.send(leading);
        tokio::time::sleep(retry).await;
    }
}

async fn try_acquire_or_renew(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
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
            if !can_acquire(&current, &cfg.identity, now) {
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

    fn lease(holder: &str, renewed_secs_ago: i64, duration: i32) -> LeaseSpec {
        let now = Timestamp::now();
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(Timestamp::from_second(now.as_second() - renewed_secs_ago).unwrap())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn acquisition_rules() {
        let now = Timestamp::now();
        assert!(can_acquire(&LeaseSpec::default(), "a", now));
        assert!(can_acquire(&lease("a", 1, 15), "a", now));
        assert!(!can_acquire(&lease("b", 1, 15), "a", now), "b renewed recently");
        assert!(can_acquire(&lease("b", 60, 15), "a", now), "b expired");
    }
}
