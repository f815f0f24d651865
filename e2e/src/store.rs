//! In-memory object storage: JSON objects per resource, a global
//! resourceVersion counter, and a bounded history of changes that watches
//! replay from and then follow live.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::broadcast;

use crate::registry::GroupResource;

/// How many changes are kept for watches that start from an older version.
const HISTORY: usize = 20_000;

/// Kind of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// Wire name (`ADDED`, `MODIFIED`, `DELETED`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub key: GroupResource,
    pub namespace: String,
    pub name: String,
    pub kind: EventType,
    /// The object after the change (the last state for deletions).
    pub object: Arc<Value>,
    /// The object before the change (`None` for additions).
    pub old: Option<Arc<Value>>,
}

/// What a [`Store::write`] closure decides.
#[derive(Debug)]
pub enum Op {
    /// Store this object (create or replace).
    Put(Value),
    /// Remove the object.
    Delete,
    /// Change nothing: no new resourceVersion, no event.
    Keep,
}

/// (namespace, name); namespace is "" for cluster-scoped objects.
pub type ObjectKey = (String, String);

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<GroupResource, BTreeMap<ObjectKey, Arc<Value>>>,
    history: VecDeque<Change>,
}

/// The object store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    state: Arc<Mutex<State>>,
    tx: broadcast::Sender<Change>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

/// A watch subscription: the replayed backlog, then the live receiver.
pub struct Subscription {
    pub backlog: Vec<Change>,
    pub live: broadcast::Receiver<Change>,
}

impl Store {
    /// An empty store at resourceVersion 1.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(65_536);
        Store { state: Arc::new(Mutex::new(State { rv: 1, ..State::default() })), tx }
    }

    /// The current resourceVersion.
    pub fn rv(&self) -> u64 {
        self.state.lock().unwrap().rv
    }

    /// One object.
    pub fn get(&self, key: &GroupResource, ns: &str, name: &str) -> Option<Arc<Value>> {
        let st = self.state.lock().unwrap();
        st.objects.get(key)?.get(&(ns.to_string(), name.to_string())).cloned()
    }

    /// Every object of a resource (in one namespace when `ns` is given),
    /// with the resourceVersion of the snapshot.
    pub fn list(&self, key: &GroupResource, ns: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let st = self.state.lock().unwrap();
        let items = st
            .objects
            .get(key)
            .map(|m| m.iter().filter(|((n, _), _)| ns.is_none_or(|want| n == want)).map(|(_, v)| v.clone()).collect())
            .unwrap_or_default();
        (items, st.rv)
    }

    /// Every stored resource key.
    pub fn keys(&self) -> Vec<GroupResource> {
        self.state.lock().unwrap().objects.keys().cloned().collect()
    }

    /// Writes an object through `f`, which sees the current object (if
    /// any) and decides an [`Op`], or fails. The new resourceVersion is set
    /// in the stored object's metadata. Runs under the store lock, so
    /// read-modify-write is atomic. Returns the stored object (the last
    /// state for a delete, the current one for `Keep`).
    pub fn write<E>(
        &self,
        key: &GroupResource,
        ns: &str,
        name: &str,
        f: impl FnOnce(Option<&Value>) -> Result<Op, E>,
    ) -> Result<Option<Arc<Value>>, E> {
        let mut st = self.state.lock().unwrap();
        let okey = (ns.to_string(), name.to_string());
        let current = st.objects.get(key).and_then(|m| m.get(&okey)).cloned();
        let next = match f(current.as_deref())? {
            Op::Put(v) => Some(v),
            Op::Delete => None,
            Op::Keep => return Ok(current),
        };
        let kind = match (&current, &next) {
            (None, None) => return Ok(None),
            (None, Some(_)) => EventType::Added,
            (Some(_), Some(_)) => EventType::Modified,
            (Some(_), None) => EventType::Deleted,
        };
        st.rv += 1;
        let rv = st.rv;
        let stored = match next {
            Some(mut obj) => {
                obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
                let obj = Arc::new(obj);
                st.objects.entry(key.clone()).or_default().insert(okey.clone(), obj.clone());
                obj
            }
            None => {
                st.objects.get_mut(key).unwrap().remove(&okey);
                let mut last = (**current.as_ref().unwrap()).clone();
                last["metadata"]["resourceVersion"] = Value::String(rv.to_string());
                Arc::new(last)
            }
        };
        let change = Change {
            rv,
            key: key.clone(),
            namespace: ns.to_string(),
            name: name.to_string(),
            kind,
            object: stored.clone(),
            old: current.clone(),
        };
        st.history.push_back(change.clone());
        if st.history.len() > HISTORY {
            st.history.pop_front();
        }
        let _ = self.tx.send(change);
        Ok(Some(stored))
    }

    /// Subscribes to changes after `since` (`None`: from now). `Err` when
    /// `since` is older than the kept history (the client must re-list).
    pub fn subscribe(&self, since: Option<u64>) -> Result<Subscription, u64> {
        let st = self.state.lock().unwrap();
        let live = self.tx.subscribe();
        let backlog = match since {
            None => Vec::new(),
            Some(rv) => {
                let oldest = st.history.front().map(|c| c.rv).unwrap_or(st.rv + 1);
                if rv + 1 < oldest && rv < st.rv {
                    return Err(oldest);
                }
                st.history.iter().filter(|c| c.rv > rv).cloned().collect()
            }
        };
        Ok(Subscription { backlog, live })
    }

    /// A receiver of every change from now on (for controllers).
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_bump_rv_and_replay_from_history() {
        let s = Store::new();
        let key = GroupResource::new("", "configmaps");
        let put = |name: &str| {
            s.write::<()>(&key, "ns", name, |_| Ok(Op::Put(json!({"metadata": {"name": name}})))).unwrap().unwrap()
        };
        let a = put("a");
        let rv_a: u64 = a["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
        put("b");
        s.write::<()>(&key, "ns", "a", |_| Ok(Op::Delete)).unwrap();
        let before = s.rv();
        s.write::<()>(&key, "ns", "b", |_| Ok(Op::Keep)).unwrap();
        assert_eq!(s.rv(), before, "Keep writes nothing");
        let sub = s.subscribe(Some(rv_a)).unwrap();
        let kinds: Vec<_> = sub.backlog.iter().map(|c| (c.name.as_str(), c.kind)).collect();
        assert_eq!(kinds, vec![("b", EventType::Added), ("a", EventType::Deleted)]);
        assert_eq!(s.list(&key, Some("ns")).0.len(), 1);
        assert_eq!(s.list(&key, Some("other")).0.len(), 0);
    }
}
