//! `spec.backup`: scheduled backups and their retention. A due backup is a
//! new `KeyraftBackup` named after its scheduled time (so creating it twice
//! is harmless); retention deletes a backup from the store, then its object.
//! The schedule and the retention rule are pure functions, tested below.

use chrono::{DateTime, SubsecRound, Utc};
use croner::Cron;
use kube::api::PostParams;

use super::backup::{open_destination, CLUSTER_LABEL};
use super::*;
use crate::crd::{BackupPhase, ClusterBackupSpec, KeyraftBackup, KeyraftBackupSpec, RetentionSpec};

/// Label on the backups the schedule created.
pub const SCHEDULED_LABEL: &str = "keyraft.io/scheduled";
/// Annotation with the scheduled time a backup was taken for (RFC 3339).
pub const SCHEDULED_AT: &str = "keyraft.io/scheduled-at";

/// Parses a schedule: five cron fields, or six with seconds first.
pub fn parse_schedule(s: &str) -> Result<Cron, String> {
    croner::parser::CronParser::new().parse(s).map_err(|e| {
        format!("spec.backup.schedule {s:?} is not a cron schedule ({e}); e.g. \"0 3 * * *\" for 03:00 UTC every day")
    })
}

/// The scheduled time a backup is due for at `now`: the latest time of the
/// schedule at or before `now` and after `last` (missed times collapse into
/// the latest one). None when nothing is due.
pub fn due(schedule: &Cron, last: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Whole seconds: croner keeps the start's fraction in what it finds.
    let prev = schedule.find_previous_occurrence(&now.trunc_subsecs(0), true).ok()?;
    (prev > last).then_some(prev)
}

/// How long until the schedule's next time after `now`.
pub fn until_next(schedule: &Cron, now: DateTime<Utc>) -> Option<Duration> {
    let next = schedule.find_next_occurrence(&now.trunc_subsecs(0), false).ok()?;
    (next - now).to_std().ok()
}

/// `<cluster>-<YYYYMMDDHHMMSS>`: the backup for scheduled time `at`.
pub fn scheduled_name(cluster: &str, at: DateTime<Utc>) -> String {
    format!("{cluster}-{}", at.format("%Y%m%d%H%M%S"))
}

/// A scheduled backup, as retention sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Kept {
    pub name: String,
    pub at: DateTime<Utc>,
    pub phase: Option<BackupPhase>,
}

/// The scheduled backups retention deletes: completed ones past `count`
/// (newest first) or older than `max_age`, never the newest completed one;
/// failed ones once a later backup completed (they hold no data).
pub fn expired(backups: &[Kept], retention: &RetentionSpec, now: DateTime<Utc>) -> Vec<String> {
    let mut completed: Vec<&Kept> = backups.iter().filter(|b| b.phase == Some(BackupPhase::Completed)).collect();
    completed.sort_by(|a, b| b.at.cmp(&a.at).then(b.name.cmp(&a.name)));
    let max_age = retention.max_age.as_deref().and_then(crate::crd::parse_duration);
    let mut out = Vec::new();
    for (i, b) in completed.iter().enumerate().skip(1) {
        let too_many = retention.count.is_some_and(|c| i >= c as usize);
        let too_old = max_age.is_some_and(|age| (now - b.at).to_std().is_ok_and(|d| d > age));
        if too_many || too_old {
            out.push(b.name.clone());
        }
    }
    if let Some(newest) = completed.first() {
        out.extend(
            backups.iter().filter(|b| b.phase == Some(BackupPhase::Failed) && b.at < newest.at).map(|b| b.name.clone()),
        );
    }
    out
}

/// Creates the backup that is due and applies retention. Returns how long
/// until the next scheduled time, and a condition when the schedule is
/// broken.
pub(super) async fn step(
    ctx: &Context,
    kr: &KeyraftCluster,
    bootstrapped: bool,
) -> (Option<Duration>, Option<ConditionUpdate>) {
    let Some(spec) = &kr.spec.backup else { return (None, None) };
    let ns = kr.namespace().unwrap_or_default();
    let api: Api<KeyraftBackup> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!("{CLUSTER_LABEL}={},{SCHEDULED_LABEL}=true", kr.name_any());
    let backups = match api.list(&ListParams::default().labels(&selector)).await {
        Ok(l) => l.items,
        Err(e) => return (Some(Duration::from_secs(30)), Some(problem(format!("cannot list backups: {e}")))),
    };
    let now = Utc::now();
    let kept: Vec<Kept> = backups
        .iter()
        .map(|b| Kept {
            name: b.name_any(),
            at: scheduled_at(b).unwrap_or(now),
            phase: b.status.as_ref().and_then(|s| s.phase),
        })
        .collect();
    let mut problems = Vec::new();
    if ctx.leading() {
        for name in expired(&kept, &spec.retention, now) {
            if let Err(e) = remove(ctx, &ns, spec, &api, &name).await {
                problems.push(e);
            }
        }
    }
    let Some(schedule) = &spec.schedule else { return (None, problems.pop().map(problem)) };
    let cron = match parse_schedule(schedule) {
        Ok(c) => c,
        Err(e) => return (None, Some(problem(e))),
    };
    let created = kr.metadata.creation_timestamp.as_ref().map(|t| t.0.as_millisecond());
    let created = created.and_then(DateTime::<Utc>::from_timestamp_millis).unwrap_or(now);
    let last = kept.iter().map(|k| k.at).max().unwrap_or(created).max(created);
    if let Some(at) = due(&cron, last, now).filter(|_| bootstrapped && !spec.suspend && ctx.leading()) {
        if let Err(e) = create(ctx, kr, &api, at).await {
            problems.push(e);
        }
    }
    (until_next(&cron, now), problems.pop().map(problem))
}

fn problem(message: String) -> ConditionUpdate {
    ConditionUpdate { type_: cond::DEGRADED, status: true, reason: "BackupScheduleFailed".into(), message }
}

fn scheduled_at(b: &KeyraftBackup) -> Option<DateTime<Utc>> {
    let at = b.annotations().get(SCHEDULED_AT)?;
    DateTime::parse_from_rfc3339(at).ok().map(|t| t.with_timezone(&Utc))
}

async fn create(ctx: &Context, kr: &KeyraftCluster, api: &Api<KeyraftBackup>, at: DateTime<Utc>) -> Result<(), String> {
    let name = scheduled_name(&kr.name_any(), at);
    let mut b = KeyraftBackup::new(&name, KeyraftBackupSpec { cluster: kr.name_any(), destination: None });
    b.metadata.labels =
        Some(BTreeMap::from([(CLUSTER_LABEL.into(), kr.name_any()), (SCHEDULED_LABEL.into(), "true".into())]));
    b.metadata.annotations = Some(BTreeMap::from([(SCHEDULED_AT.into(), at.to_rfc3339())]));
    match api.create(&PostParams::default(), &b).await {
        Ok(_) => {
            let note = format!("scheduled backup {name} created for {}", at.to_rfc3339());
            publish(ctx, kr, EventType::Normal, "BackupScheduled", &event_action("Backup", &name), note).await;
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(format!("cannot create scheduled backup {name}: {e}")),
    }
}

/// Deletes backup `name` from its store, then its object.
async fn remove(
    ctx: &Context,
    ns: &str,
    spec: &ClusterBackupSpec,
    api: &Api<KeyraftBackup>,
    name: &str,
) -> Result<(), String> {
    let b = api.get_opt(name).await.map_err(|e| e.to_string())?;
    let url = b.as_ref().and_then(|b| b.status.as_ref()?.destination.clone());
    if let Some(url) = url {
        let mut dest = spec.destination.clone();
        dest.url = url;
        let store = open_destination(ctx, ns, &dest, false).await?;
        keyraft_client::backup::delete(&store, name)
            .await
            .map_err(|e| format!("retention cannot delete backup {name}: {e:#}"))?;
    }
    delete_if_present(api, name).await.map_err(|e| format!("cannot delete KeyraftBackup {name}: {e}"))?;
    tracing::info!(backup = %name, "retention deleted a backup");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_and_six_field_schedules_parse_and_nonsense_is_named() {
        assert!(parse_schedule("0 3 * * *").is_ok());
        assert!(parse_schedule("*/10 * * * * *").is_ok());
        let e = parse_schedule("every day").unwrap_err();
        assert!(e.contains("spec.backup.schedule \"every day\" is not a cron schedule"), "{e}");
    }

    #[test]
    fn a_due_time_is_the_latest_one_missed() {
        let daily = parse_schedule("0 3 * * *").unwrap();
        // Nothing due between two times.
        assert_eq!(due(&daily, t("2026-12-01T03:00:00Z"), t("2026-12-01T10:00:00Z")), None);
        // Three days missed: one backup, for the latest.
        assert_eq!(due(&daily, t("2026-11-28T03:00:00Z"), t("2026-12-01T10:00:00Z")), Some(t("2026-12-01T03:00:00Z")));
        // Exactly at the time.
        assert_eq!(due(&daily, t("2026-11-30T03:00:00Z"), t("2026-12-01T03:00:00Z")), Some(t("2026-12-01T03:00:00Z")));
        assert_eq!(until_next(&daily, t("2026-12-01T02:59:00Z")), Some(Duration::from_secs(60)));
        let name = scheduled_name("basic", t("2026-12-01T03:00:00Z"));
        assert_eq!(name, "basic-20261201030000");
    }

    #[test]
    fn due_times_are_the_schedules_whole_seconds() {
        let every15 = parse_schedule("*/15 * * * * *").unwrap();
        let now = t("2026-12-01T11:24:07.822Z");
        assert_eq!(due(&every15, t("2026-12-01T11:23:45Z"), now), Some(t("2026-12-01T11:24:00Z")));
        assert_eq!(due(&every15, t("2026-12-01T11:24:00Z"), now), None);
        // A time taken by an earlier version, with a fraction, is not due again.
        assert_eq!(due(&every15, t("2026-12-01T11:24:00.5Z"), now), None);
        assert_eq!(until_next(&every15, now), Some(Duration::from_millis(7178)));
        assert_eq!(until_next(&every15, t("2026-12-01T11:24:15Z")), Some(Duration::from_secs(15)));
        let daily = parse_schedule("0 3 * * *").unwrap();
        let at = due(&daily, t("2026-11-30T03:00:00Z"), t("2026-12-01T10:00:00.25Z"));
        assert_eq!(at, Some(t("2026-12-01T03:00:00Z")));
    }

    fn kept(name: &str, at: &str, phase: BackupPhase) -> Kept {
        Kept { name: name.into(), at: t(at), phase: Some(phase) }
    }

    #[test]
    fn retention_by_count_keeps_the_newest_completed() {
        use BackupPhase::*;
        let b = vec![
            kept("a", "2026-12-01T01:00:00Z", Completed),
            kept("b", "2026-12-01T02:00:00Z", Completed),
            kept("c", "2026-12-01T03:00:00Z", Failed),
            kept("d", "2026-12-01T04:00:00Z", Completed),
            kept("e", "2026-12-01T05:00:00Z", Running),
        ];
        let two = RetentionSpec { count: Some(2), max_age: None };
        let now = t("2026-12-01T06:00:00Z");
        // a is the third completed; c failed before d completed; e runs.
        assert_eq!(expired(&b, &two, now), vec!["a".to_string(), "c".to_string()]);
        assert!(expired(&b, &RetentionSpec::default(), now) == vec!["c".to_string()]);
    }

    #[test]
    fn retention_by_age_never_deletes_the_newest_completed() {
        use BackupPhase::*;
        let b = vec![kept("old", "2026-11-01T00:00:00Z", Completed), kept("older", "2026-10-01T00:00:00Z", Completed)];
        let week = RetentionSpec { count: None, max_age: Some("168h".into()) };
        assert_eq!(expired(&b, &week, t("2026-12-01T00:00:00Z")), vec!["older".to_string()]);
        // A failure before any completed backup is kept: it is all there is to see.
        let f = vec![kept("f", "2026-11-01T00:00:00Z", Failed)];
        assert!(expired(&f, &week, t("2026-12-01T00:00:00Z")).is_empty());
    }
}
