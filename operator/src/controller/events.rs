//! Events on the KeyraftCluster. kube's Recorder folds Events with the
//! same type, reason and action into a series that keeps the first note,
//! so every kind of change carries its own action (naming its subject):
//! each Event's note is that occurrence's note.

use super::*;

pub(super) async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    kr: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let ev = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
    if let Err(e) = ctx.recorder.publish(&ev, &kr.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}

/// An Event action naming its subject, within the 128 characters allowed.
pub(super) fn event_action(kind: &str, subject: &str) -> String {
    let mut a = format!("{kind}-{subject}");
    if a.len() > 128 {
        let mut cut = 128;
        while !a.is_char_boundary(cut) {
            cut -= 1;
        }
        a.truncate(cut);
    }
    a
}
