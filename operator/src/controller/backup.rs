//! `KeyraftBackup`: the operator takes the backup itself, streaming every
//! partition from its leader to the object store (bounded memory: chunks,
//! not partitions, are held), and records the result in status.
//!
//! A backup runs once. Completed and Failed are final; a backup that was
//! running when the operator restarted is started again from the start
//! (its partial objects are overwritten; the manifest is written last).

use k8s_openapi::api::core::v1::Secret;
use keyraft_client::backup::{self as kb, Credentials, Destination};

use super::jobs::JobState;
use super::*;
use crate::crd::{BackupDestination, BackupPhase, KeyraftBackup, KeyraftBackupStatus};

/// How long a request to the object store is retried.
const STORE_RETRY: Duration = Duration::from_secs(60);
/// Label on every backup with the name of its cluster.
pub const CLUSTER_LABEL: &str = "keyraft.io/cluster";

/// Runs the KeyraftBackup controller until `shutdown`.
pub(super) async fn run(
    ctx: Arc<Context>,
    api: Api<KeyraftBackup>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::warn!(error = %e, "backup reconcile failed");
            }
        })
        .await;
}

fn error_policy(b: Arc<KeyraftBackup>, err: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.errors.with_label_values(&[&b.namespace().unwrap_or_default()]).inc();
    tracing::warn!(backup = %b.name_any(), error = %err, "backup reconcile error");
    Requeue::requeue(Duration::from_secs(15))
}

fn backup_key(b: &KeyraftBackup) -> String {
    format!("{}/{}", b.namespace().unwrap_or_default(), b.name_any())
}

async fn reconcile(b: Arc<KeyraftBackup>, ctx: Arc<Context>) -> Result<Requeue> {
    let ns = b.namespace().unwrap_or_default();
    let name = b.name_any();
    let key = backup_key(&b);
    let mut status = b.status.clone().unwrap_or_default();
    if status.phase.is_some_and(BackupPhase::is_final) {
        return Ok(Requeue::await_change());
    }
    if b.metadata.deletion_timestamp.is_some() {
        ctx.backups.cancel(&key);
        return Ok(Requeue::await_change());
    }
    match ctx.backups.state(&key) {
        JobState::Running => return Ok(Requeue::requeue(Duration::from_secs(5))),
        JobState::Done(Ok(m)) => {
            status.phase = Some(BackupPhase::Completed);
            status.completed_at = Some(m.completed_at.clone());
            status.size_bytes = Some(m.size_bytes);
            status.records = Some(m.records);
            status.partitions = Some(m.partitions);
            status.message = None;
            let msg = format!(
                "{} keys of {} partitions, {} bytes, in {}",
                m.records,
                m.partitions,
                m.size_bytes,
                status.destination.clone().unwrap_or_default()
            );
            set_complete(&mut status, b.metadata.generation, true, "Completed", msg);
            write_backup_status(&ctx, &b, &status).await?;
            let note = format!("backup {name} completed: {} keys, {} bytes", m.records, m.size_bytes);
            publish(&ctx, b.as_ref(), EventType::Normal, "BackupCompleted", "Backup", note).await;
            return Ok(Requeue::await_change());
        }
        JobState::Done(Err(e)) => return fail(&ctx, &b, status, e).await,
        JobState::Absent => {}
    }

    // Not running here: start it (again, after an operator restart). The
    // cached object may be older than this operator's last status write: a
    // backup that completed a pass ago must not run again (it would fail on
    // its own manifest), so the API server's phase decides.
    let backups: Api<KeyraftBackup> = Api::namespaced(ctx.client.clone(), &ns);
    match backups.get_opt(&name).await? {
        Some(f) if !f.status.as_ref().and_then(|s| s.phase).is_some_and(BackupPhase::is_final) => {}
        _ => return Ok(Requeue::await_change()),
    }
    let clusters: Api<KeyraftCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(kr) = clusters.get_opt(&b.spec.cluster).await? else {
        let msg = format!("no KeyraftCluster {} in namespace {ns}", b.spec.cluster);
        return fail(&ctx, &b, status, msg).await;
    };
    let Some(destination) =
        b.spec.destination.clone().or_else(|| kr.spec.backup.as_ref().map(|s| s.destination.clone()))
    else {
        let msg = format!(
            "no destination: set spec.destination, or spec.backup.destination on KeyraftCluster {}",
            b.spec.cluster
        );
        return fail(&ctx, &b, status, msg).await;
    };
    let cluster_id = kr.status.as_ref().and_then(|s| s.cluster_id.clone());
    let client = match (cluster_id.as_ref(), cluster_client(&ctx, &kr)) {
        (Some(_), Some(client)) => client?,
        _ => {
            let msg = format!("waiting for KeyraftCluster {} to be bootstrapped and reachable", b.spec.cluster);
            if status.message.as_deref() != Some(msg.as_str()) {
                status.phase = Some(BackupPhase::Pending);
                status.message = Some(msg.clone());
                set_complete(&mut status, b.metadata.generation, false, "WaitingForCluster", msg);
                write_backup_status(&ctx, &b, &status).await?;
            }
            return Ok(Requeue::requeue(Duration::from_secs(10)));
        }
    };
    let dest = match open_destination(&ctx, &ns, &destination, true).await {
        Ok(d) => d,
        Err(e) => return fail(&ctx, &b, status, e).await,
    };
    let job_name = name.clone();
    ctx.backups.start(&key, move || async move {
        kb::create(&client, &dest, &job_name, &kb::CreateOptions::default()).await.map_err(|e| format!("{e:#}"))
    });
    status.phase = Some(BackupPhase::Running);
    status.destination = Some(destination.url.clone());
    status.cluster_id = cluster_id;
    status.started_at = Some(Timestamp::now().to_string());
    status.message = None;
    let msg = format!("streaming every partition of {} to {}", b.spec.cluster, destination.url);
    set_complete(&mut status, b.metadata.generation, false, "Running", msg);
    write_backup_status(&ctx, &b, &status).await?;
    tracing::info!(backup = %key, to = %destination.url, "backup started");
    Ok(Requeue::requeue(Duration::from_secs(5)))
}

async fn fail(ctx: &Context, b: &KeyraftBackup, mut status: KeyraftBackupStatus, msg: String) -> Result<Requeue> {
    tracing::warn!(backup = %backup_key(b), error = %msg, "backup failed");
    status.phase = Some(BackupPhase::Failed);
    status.message = Some(msg.clone());
    set_complete(&mut status, b.metadata.generation, false, "Failed", msg.clone());
    write_backup_status(ctx, b, &status).await?;
    publish(ctx, b, EventType::Warning, "BackupFailed", "Backup", msg).await;
    Ok(Requeue::await_change())
}

fn set_complete(status: &mut KeyraftBackupStatus, generation: Option<i64>, done: bool, reason: &str, msg: String) {
    let update = ConditionUpdate { type_: "Complete", status: done, reason: reason.into(), message: msg };
    merge_conditions(&mut status.conditions, vec![update], generation);
}

async fn write_backup_status(ctx: &Context, b: &KeyraftBackup, status: &KeyraftBackupStatus) -> Result<()> {
    apply_status(ctx, b, status).await
}

/// Opens `dest` with the settings in its credentials Secret (never the
/// operator's own environment).
pub(super) async fn open_destination(
    ctx: &Context,
    ns: &str,
    dest: &BackupDestination,
    create: bool,
) -> Result<Destination, String> {
    let mut settings = BTreeMap::new();
    if let Some(secret) = &dest.credentials_secret {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        let s = api
            .get_opt(secret)
            .await
            .map_err(|e| format!("cannot read Secret {ns}/{secret}: {e}"))?
            .ok_or_else(|| format!("credentials Secret {ns}/{secret} does not exist"))?;
        for (k, v) in s.data.unwrap_or_default() {
            let v = String::from_utf8(v.0).map_err(|_| format!("Secret {ns}/{secret}: key {k} is not UTF-8"))?;
            settings.insert(k, v.trim_end_matches('\n').to_string());
        }
        for (k, v) in s.string_data.unwrap_or_default() {
            settings.insert(k, v);
        }
    }
    // file:// in the operator's pod needs no credentials.
    kb::open_with(&dest.url, STORE_RETRY, create, &Credentials::Settings(settings)).map_err(|e| format!("{e:#}"))
}

/// A client of `kr`'s nodes with the operator's admin certificate, once the
/// cluster's TLS is set up; None before.
pub(super) fn cluster_client(ctx: &Context, kr: &KeyraftCluster) -> Option<Result<keyraft_client::Client>> {
    let names = Names::of(kr).ok()?;
    let connector = ctx.tls.lock().unwrap().get(&key(kr)).map(|(_, c)| c.clone())?;
    let pods: Vec<String> = kr.status.as_ref()?.members.iter().map(|m| names.pod_address(&m.pod)).collect();
    if pods.is_empty() {
        return None;
    }
    let opts = kb::restore_client_options(keyraft_client::ClientOptions::new(pods));
    Some(keyraft_client::Client::with_connector(opts, connector).map_err(|e| Error::Invalid(e.to_string())))
}
