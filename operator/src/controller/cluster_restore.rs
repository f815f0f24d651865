//! `spec.bootstrap.fromBackup`: once the new cluster is bootstrapped and
//! every pod is ready, the operator writes the backup's keys into it. Until
//! the last key is in, the phase is `Restoring` and `Available` is False, so
//! nothing half-restored is presented as a cluster.

use keyraft_client::backup as kb;

use super::backup::{cluster_client, open_destination};
use super::jobs::JobState;
use super::*;
use crate::crd::{RestorePhase, RestoreStatus};

/// What a finished restore reports: the source cluster's id, the counts,
/// and when this run started (kept here too: a pass that read a cached
/// object older than the status that recorded it would drop it).
pub type Restored = (String, kb::RestoreReport, String);

/// What the restore adds to a pass's status.
#[derive(Default)]
pub(super) struct RestoreStep {
    /// Replace the planner's conditions of the same type.
    pub conditions: Vec<ConditionUpdate>,
    pub status: Option<RestoreStatus>,
    /// Overrides the phase the observation gives.
    pub phase: Option<Phase>,
    /// The restore still runs: look again soon.
    pub busy: bool,
}

/// Moves the restore of `kr` on by one step. `bootstrapped`: the cluster
/// has an id; `all_ready`: every pod is ready.
pub(super) async fn step(ctx: &Context, kr: &KeyraftCluster, bootstrapped: bool, all_ready: bool) -> RestoreStep {
    let was = kr.status.as_ref().and_then(|s| s.restore.clone());
    let Some(from) = &kr.spec.bootstrap.from_backup else { return RestoreStep::default() };
    let mut restore = was.clone().unwrap_or_else(|| RestoreStatus {
        backup: from.backup.clone(),
        destination: from.destination.url.clone(),
        ..Default::default()
    });
    let ckey = key(kr);
    match (restore.phase, ctx.restores.state(&ckey)) {
        (RestorePhase::Completed, _) => return RestoreStep { status: Some(restore), ..Default::default() },
        (_, JobState::Done(Ok((source, report, started_at)))) => {
            restore.phase = RestorePhase::Completed;
            restore.started_at = Some(started_at);
            restore.source_cluster_id = Some(source);
            restore.records = Some(report.records);
            restore.completed_at = Some(Timestamp::now().to_string());
            restore.message = None;
            let note = format!(
                "restored {} keys of {} partitions from backup {} at {}",
                report.records, report.partitions, restore.backup, restore.destination
            );
            publish(ctx, kr, EventType::Normal, "Restored", "Restore", note).await;
        }
        (_, JobState::Done(Err(e))) => {
            restore.phase = RestorePhase::Failed;
            restore.message = Some(e.clone());
            publish(ctx, kr, EventType::Warning, "RestoreFailed", "Restore", e).await;
        }
        (RestorePhase::Failed, _) | (_, JobState::Running) => {}
        (RestorePhase::Running, JobState::Absent) => {
            // Every pod ready first: the restore writes to every partition.
            if bootstrapped && all_ready && ctx.leading() {
                // The cached object may be older than this operator's last
                // status write: a restore that completed a pass ago must
                // not run again (over keys written since), so the API
                // server's status decides.
                let api: Api<KeyraftCluster> = Api::namespaced(ctx.client.clone(), &kr.namespace().unwrap_or_default());
                match api.get(&kr.name_any()).await {
                    Err(e) => tracing::warn!(cluster = %ckey, error = %e, "cannot read the restore status; next pass"),
                    Ok(fresh) => {
                        let fresh = fresh.status.and_then(|s| s.restore);
                        // A restore that had started was cut off by an
                        // operator restart: the keys it wrote are written again.
                        let resume = fresh.as_ref().is_some_and(|r| r.started_at.is_some());
                        match fresh.filter(|r| r.phase != RestorePhase::Running) {
                            Some(done) => restore = done,
                            None => match start(ctx, kr, from, resume).await {
                                Ok(Some(started_at)) => restore.started_at = Some(started_at),
                                // Not reachable yet (the pass that bootstrapped
                                // it has no members in the cached status): a
                                // wait, not a failure.
                                Ok(None) => {}
                                Err(e) => {
                                    restore.phase = RestorePhase::Failed;
                                    restore.message = Some(e.clone());
                                    publish(ctx, kr, EventType::Warning, "RestoreFailed", "Restore", e).await;
                                }
                            },
                        }
                    }
                }
            }
        }
    }
    let (available, reason, message) = match restore.phase {
        RestorePhase::Completed => (None, "", String::new()),
        RestorePhase::Running => (
            Some(false),
            "Restoring",
            format!("writing the keys of backup {} from {}; not available until every key is in", restore.backup, restore.destination),
        ),
        RestorePhase::Failed => (
            Some(false),
            "RestoreFailed",
            format!(
                "restore of backup {} from {} failed: {}; delete this cluster and create it again once the cause is fixed",
                restore.backup,
                restore.destination,
                restore.message.clone().unwrap_or_default()
            ),
        ),
    };
    let busy = restore.phase == RestorePhase::Running;
    let mut out = RestoreStep { busy, ..Default::default() };
    if let Some(a) = available {
        out.conditions.push(ConditionUpdate {
            type_: cond::AVAILABLE,
            status: a,
            reason: reason.into(),
            message: message.clone(),
        });
        if restore.phase == RestorePhase::Failed {
            out.conditions.push(ConditionUpdate {
                type_: cond::DEGRADED,
                status: true,
                reason: reason.into(),
                message,
            });
            out.phase = Some(Phase::Degraded);
        } else if bootstrapped && !kr.is_paused() {
            out.phase = Some(Phase::Restoring);
        }
    }
    out.status = Some(restore);
    out
}

/// Starts the restore task; returns when it started (RFC 3339), or None
/// when the operator cannot reach the cluster's nodes yet.
async fn start(
    ctx: &Context,
    kr: &KeyraftCluster,
    from: &crate::crd::FromBackup,
    resume: bool,
) -> Result<Option<String>, String> {
    let ns = kr.namespace().unwrap_or_default();
    let client = match cluster_client(ctx, kr) {
        Some(c) => c.map_err(|e| e.to_string())?,
        None => return Ok(None),
    };
    let dest = open_destination(ctx, &ns, &from.destination, false).await?;
    let name = from.backup.clone();
    let partitions = kr.spec.partitions;
    tracing::info!(cluster = %key(kr), backup = %name, from = %dest.url, resume, "restore started");
    let started_at = Timestamp::now().to_string();
    let started = started_at.clone();
    ctx.restores.start(&key(kr), move || async move {
        let m = kb::read_manifest(&dest, &name).await.map_err(|e| format!("{e:#}"))?;
        if m.partitions != partitions {
            return Err(format!(
                "backup {name} has {} partitions but spec.partitions is {partitions}; create the cluster with partitions: {}",
                m.partitions, m.partitions
            ));
        }
        let opts = kb::RestoreOptions { resume, ..Default::default() };
        let report = kb::restore(&client, &dest, &name, &opts).await.map_err(|e| format!("{e:#}"))?;
        Ok((m.cluster_id, report, started))
    });
    Ok(Some(started_at))
}
