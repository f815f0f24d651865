//! Checks a recorded history.
//!
//! * Linearizability, porcupine-style: the Wing & Gong search with Lowe's
//!   memoisation (a set of (linearized ops, state) pairs already explored),
//!   over each *key group*: keys that a batch ever wrote together form one
//!   group (connected components over batches), and the model of a group is
//!   the map from its keys to values. Every operation touches exactly one
//!   group, so by locality (Herlihy & Wing) the history is linearizable iff
//!   every group's sub-history is. Projecting a batch onto each key
//!   separately would be sound for the violations it reports but blind to a
//!   batch seen half-applied (one key new, the other still old), hence the
//!   combined model.
//! * Outcomes: failed operations are left out (they had no effect); unknown
//!   writes get a completion time of infinity, so they may take effect at
//!   any point after their invocation, and taking effect last is the same as
//!   never for everything observed; reads with an unknown outcome observed
//!   nothing and are left out.
//! * Session reads join the search with one more constraint: a session read
//!   must take effect after the previous acknowledged operation its client
//!   ran on the same group (read-your-writes, monotonic reads: "never goes
//!   back"), and may take effect any time before it returns, even before
//!   it was sent (a replica may be behind).
//! * Eventual reads: each returns nothing or a value some write that was not
//!   refused tried to give that key, invoked before the read returned.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::history::{Level, Op, Outcome, Record, Ret};

/// How many (linearized set, state) pairs one group's search may visit
/// before it gives up without a verdict.
pub const DEFAULT_STATE_BUDGET: usize = 3_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// No order of the linearizable operations explains what they returned.
    NotLinearizable { keys: Vec<String>, blocked_op: u64, excerpt: Vec<u64> },
    /// The linearizable operations are fine, but a session read went back
    /// behind what its own session had seen or written.
    SessionWentBack { keys: Vec<String>, blocked_op: u64, excerpt: Vec<u64> },
    /// An eventual read returned a value nobody wrote to that key.
    UnwrittenValue { op: u64, key: String, value: String },
    /// The search ran out of budget: no verdict for these keys.
    Inconclusive { keys: Vec<String>, states: usize },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::NotLinearizable { keys, blocked_op, excerpt } => write!(
                f,
                "not linearizable on keys {keys:?}: no order places op {blocked_op} (ops around it: {excerpt:?})"
            ),
            Violation::SessionWentBack { keys, blocked_op, excerpt } => write!(
                f,
                "session read went back on keys {keys:?}: op {blocked_op} cannot be placed after its session's \
                 previous operation (ops around it: {excerpt:?})"
            ),
            Violation::UnwrittenValue { op, key, value } => {
                write!(f, "eventual read op {op} of {key:?} returned {value:?}, which no write gave that key")
            }
            Violation::Inconclusive { keys, states } => {
                write!(f, "no verdict for keys {keys:?}: search budget of {states} states exhausted")
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub groups: usize,
    pub ops_checked: usize,
    pub states: usize,
    pub violations: Vec<Violation>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

pub fn check(history: &[Record]) -> Report {
    check_with_budget(history, DEFAULT_STATE_BUDGET)
}

pub fn check_with_budget(history: &[Record], budget: usize) -> Report {
    let mut report = Report::default();
    report.violations.extend(check_eventual(history));
    for keys in key_groups(history) {
        report.groups += 1;
        let in_group: Vec<&Record> =
            history.iter().filter(|r| r.op.keys().first().is_some_and(|k| keys.iter().any(|x| x == k))).collect();
        let mut values = Interner::default();
        let lin = compile(&in_group, &keys, &mut values, false);
        report.ops_checked += lin.len();
        let (res, states) = search(&lin, keys.len(), budget);
        report.states += states;
        match res {
            Search::Ok => {}
            Search::Blocked(i) => {
                report.violations.push(Violation::NotLinearizable {
                    keys: keys.clone(),
                    blocked_op: lin[i].id,
                    excerpt: excerpt(&lin, i),
                });
                continue;
            }
            Search::Budget => {
                report.violations.push(Violation::Inconclusive { keys: keys.clone(), states });
                continue;
            }
        }
        let with_sessions = compile(&in_group, &keys, &mut values, true);
        if with_sessions.len() == lin.len() {
            continue;
        }
        report.ops_checked += with_sessions.len() - lin.len();
        let (res, states) = search(&with_sessions, keys.len(), budget);
        report.states += states;
        match res {
            Search::Ok => {}
            Search::Blocked(i) => report.violations.push(Violation::SessionWentBack {
                keys: keys.clone(),
                blocked_op: with_sessions[i].id,
                excerpt: excerpt(&with_sessions, i),
            }),
            Search::Budget => report.violations.push(Violation::Inconclusive { keys, states }),
        }
    }
    report
}

/// Keys joined by batches, each group sorted.
fn key_groups(history: &[Record]) -> Vec<Vec<String>> {
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    fn root<'a>(p: &mut BTreeMap<&'a str, &'a str>, k: &'a str) -> &'a str {
        let mut k = k;
        while let Some(&up) = p.get(k).filter(|&&up| up != k) {
            k = up;
        }
        k
    }
    for r in history {
        let keys = r.op.keys();
        for k in &keys {
            parent.entry(k).or_insert(k);
        }
        for w in keys.windows(2) {
            let (a, b) = (root(&mut parent, w[0]), root(&mut parent, w[1]));
            if a != b {
                parent.insert(a, b);
            }
        }
    }
    let mut groups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let keys: Vec<&str> = parent.keys().copied().collect();
    for k in keys {
        let r = root(&mut parent, k);
        groups.entry(r).or_default().push(k.to_string());
    }
    groups.into_values().collect()
}

fn check_eventual(history: &[Record]) -> Vec<Violation> {
    // Earliest invocation of a write (not refused) of each (key, value).
    let mut first_write: HashMap<(&str, &str), u64> = HashMap::new();
    for r in history.iter().filter(|r| r.outcome != Outcome::Failed) {
        for (k, v) in r.op.written() {
            let e = first_write.entry((k, v)).or_insert(u64::MAX);
            *e = (*e).min(r.invoke_ns);
        }
    }
    history
        .iter()
        .filter_map(|r| match (&r.op, r.outcome, &r.ret) {
            (Op::Get { key, level: Level::Eventual }, Outcome::Ok, Some(Ret::Read { value: Some(v) })) => {
                let written = first_write.get(&(key.as_str(), v.as_str())).is_some_and(|&t| t < r.complete_ns);
                (!written).then(|| Violation::UnwrittenValue { op: r.id, key: key.clone(), value: v.clone() })
            }
            _ => None,
        })
        .collect()
}

#[derive(Default)]
struct Interner(HashMap<String, u32>);

impl Interner {
    fn id(&mut self, v: &str) -> u32 {
        let n = self.0.len() as u32;
        *self.0.entry(v.to_string()).or_insert(n)
    }
    fn opt(&mut self, v: &Option<String>) -> Option<u32> {
        v.as_deref().map(|v| self.id(v))
    }
}

type Val = Option<u32>;

/// An operation as the search sees it; `k` is the key's index in its group.
#[derive(Debug, Clone)]
enum Step {
    Put {
        k: usize,
        v: Val,
    },
    Read {
        k: usize,
        v: Val,
    },
    /// `existed` is `None` when the outcome is unknown.
    Delete {
        k: usize,
        existed: Option<bool>,
    },
    Cas {
        k: usize,
        expected: Val,
        new: Val,
        result: Option<(bool, Val)>,
    },
    Batch {
        writes: Vec<(usize, Val)>,
    },
}

#[derive(Debug, Clone)]
struct COp {
    id: u64,
    call: u64,
    ret: u64,
    step: Step,
    /// Index (in the compiled list) of an op that must take effect first.
    after: Option<usize>,
}

/// The group's operations the search must place. With `sessions`, session
/// reads too, each after its client's previous acknowledged op in the group.
fn compile(recs: &[&Record], keys: &[String], values: &mut Interner, sessions: bool) -> Vec<COp> {
    let kidx = |k: &str| keys.iter().position(|x| x == k).expect("key in its group");
    let mut out: Vec<COp> = Vec::new();
    let mut sorted: Vec<&Record> = recs.to_vec();
    sorted.sort_by_key(|r| (r.invoke_ns, r.id));
    // Per client: its acknowledged ops in the search, by completion time.
    let mut done_by_client: HashMap<u32, Vec<(u64, usize)>> = HashMap::new();
    for r in sorted {
        let known = r.outcome == Outcome::Ok;
        if r.outcome == Outcome::Failed {
            continue;
        }
        let mut after = None;
        let step = match (&r.op, &r.ret) {
            (Op::Get { key, level }, Some(Ret::Read { value })) if known => match level {
                Level::Linearizable => Step::Read { k: kidx(key), v: values.opt(value) },
                Level::Session if sessions => {
                    after = done_by_client
                        .get(&r.client)
                        .and_then(|d| d.iter().filter(|(t, _)| *t < r.invoke_ns).max_by_key(|(t, _)| *t))
                        .map(|(_, i)| *i);
                    Step::Read { k: kidx(key), v: values.opt(value) }
                }
                _ => continue,
            },
            (Op::Get { .. }, _) => continue,
            (Op::Put { key, value }, _) => Step::Put { k: kidx(key), v: Some(values.id(value)) },
            (Op::Delete { key }, ret) => Step::Delete {
                k: kidx(key),
                existed: match ret {
                    Some(Ret::Deleted { existed }) if known => Some(*existed),
                    _ => None,
                },
            },
            (Op::Cas { key, expected, new }, ret) => Step::Cas {
                k: kidx(key),
                expected: values.opt(expected),
                new: values.opt(new),
                result: match ret {
                    Some(Ret::Cas { succeeded, current }) if known => Some((*succeeded, values.opt(current))),
                    _ => None,
                },
            },
            (Op::Batch { writes }, _) => {
                Step::Batch { writes: writes.iter().map(|(k, v)| (kidx(k), values.opt(v))).collect() }
            }
        };
        let call = match after {
            // May be served by a replica that is behind: from its floor on.
            Some(f) => out[f].call,
            None if matches!(r.op, Op::Get { level: Level::Session, .. }) => 0,
            None => r.invoke_ns,
        };
        let ret = if known { r.complete_ns } else { u64::MAX };
        if known {
            done_by_client.entry(r.client).or_default().push((r.complete_ns, out.len()));
        }
        out.push(COp { id: r.id, call, ret, step, after });
    }
    out
}

/// The state after `op`, or `None` if `op` cannot take effect in `s`.
fn apply(s: &[Val], op: &Step) -> Option<Vec<Val>> {
    let mut n = s.to_vec();
    match op {
        Step::Put { k, v } => n[*k] = *v,
        Step::Read { k, v } => {
            if s[*k] != *v {
                return None;
            }
        }
        Step::Delete { k, existed } => {
            if existed.is_some_and(|e| e != s[*k].is_some()) {
                return None;
            }
            n[*k] = None;
        }
        Step::Cas { k, expected, new, result } => {
            let swaps = s[*k] == *expected;
            match result {
                Some((true, _)) if !swaps => return None,
                Some((false, current)) if swaps || *current != s[*k] => return None,
                _ => {}
            }
            if swaps {
                n[*k] = *new;
            }
        }
        Step::Batch { writes } => {
            for (k, v) in writes {
                n[*k] = *v;
            }
        }
    }
    Some(n)
}

enum Search {
    Ok,
    /// The op (compiled index) whose completion no order could reach.
    Blocked(usize),
    Budget,
}

/// Wing & Gong / Lowe search over a doubly linked list of call and return
/// events (index `2 * ops.len()` is the head sentinel).
fn search(ops: &[COp], nkeys: usize, budget: usize) -> (Search, usize) {
    let n = ops.len();
    if n == 0 {
        return (Search::Ok, 0);
    }
    // Events: (time, is_return, op). Calls sort before returns at equal times.
    let mut events: Vec<(u64, bool, usize)> =
        ops.iter().enumerate().flat_map(|(i, o)| [(o.call, false, i), (o.ret, true, i)]).collect();
    events.sort();
    let head = events.len();
    let mut next = vec![0usize; head + 1];
    let mut prev = vec![0usize; head + 1];
    let mut call_ev = vec![0usize; n];
    let mut ret_ev = vec![0usize; n];
    for (e, &(_, is_ret, i)) in events.iter().enumerate() {
        if is_ret {
            ret_ev[i] = e;
        } else {
            call_ev[i] = e;
        }
        next[e] = if e + 1 == head { head } else { e + 1 };
        prev[e] = if e == 0 { head } else { e - 1 };
    }
    next[head] = 0;
    prev[head] = head - 1;
    let unlink = |next: &mut [usize], prev: &mut [usize], e: usize| {
        next[prev[e]] = next[e];
        prev[next[e]] = prev[e];
    };
    let relink = |next: &mut [usize], prev: &mut [usize], e: usize| {
        next[prev[e]] = e;
        prev[next[e]] = e;
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let is_lin = |l: &[u64], i: usize| l[i / 64] & (1 << (i % 64)) != 0;
    let mut state: Vec<Val> = vec![None; nkeys];
    let mut seen: HashSet<(Vec<u64>, Vec<Val>)> = HashSet::new();
    let mut stack: Vec<(usize, Vec<Val>)> = Vec::new();
    // The deepest point reached, for the report.
    let (mut deepest, mut blocked) = (0usize, 0usize);
    let mut e = next[head];
    loop {
        if next[head] == head {
            return (Search::Ok, seen.len());
        }
        if seen.len() > budget {
            return (Search::Budget, seen.len());
        }
        let (_, is_ret, i) = events[e];
        if !is_ret {
            let ready = ops[i].after.is_none_or(|f| is_lin(&linearized, f));
            if let Some(s2) = ready.then(|| apply(&state, &ops[i].step)).flatten() {
                let mut l2 = linearized.clone();
                l2[i / 64] |= 1 << (i % 64);
                if seen.insert((l2.clone(), s2.clone())) {
                    stack.push((i, std::mem::replace(&mut state, s2)));
                    linearized = l2;
                    unlink(&mut next, &mut prev, call_ev[i]);
                    unlink(&mut next, &mut prev, ret_ev[i]);
                    e = next[head];
                    continue;
                }
            }
            e = next[e];
        } else {
            // The return of an op not yet placed: back up.
            if stack.len() >= deepest {
                deepest = stack.len();
                blocked = i;
            }
            let Some((j, s)) = stack.pop() else {
                return (Search::Blocked(blocked), seen.len());
            };
            state = s;
            linearized[j / 64] &= !(1 << (j % 64));
            relink(&mut next, &mut prev, ret_ev[j]);
            relink(&mut next, &mut prev, call_ev[j]);
            e = next[call_ev[j]];
        }
    }
}

/// Record ids of the ops whose intervals overlap op `i`'s (at most 20).
fn excerpt(ops: &[COp], i: usize) -> Vec<u64> {
    let (c, r) = (ops[i].call, ops[i].ret);
    let mut ids: Vec<u64> =
        ops.iter().filter(|o| o.call <= r && o.ret.max(o.call) >= c).map(|o| o.id).take(20).collect();
    ids.sort_unstable();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Level, Op, Outcome, Record, Ret};

    struct H(Vec<Record>);

    impl H {
        fn new() -> Self {
            H(Vec::new())
        }
        fn add(&mut self, client: u32, op: Op, t: (u64, u64), outcome: Outcome, ret: Option<Ret>) -> &mut Self {
            let id = self.0.len() as u64;
            self.0.push(Record { id, client, op, invoke_ns: t.0, complete_ns: t.1, outcome, ret, error: None });
            self
        }
        fn put(&mut self, c: u32, k: &str, v: &str, t: (u64, u64)) -> &mut Self {
            self.add(c, Op::Put { key: k.into(), value: v.into() }, t, Outcome::Ok, Some(Ret::Written))
        }
        fn put_with(&mut self, c: u32, k: &str, v: &str, t: (u64, u64), outcome: Outcome) -> &mut Self {
            self.add(c, Op::Put { key: k.into(), value: v.into() }, t, outcome, None)
        }
        fn get_at(&mut self, c: u32, k: &str, level: Level, v: Option<&str>, t: (u64, u64)) -> &mut Self {
            let ret = Some(Ret::Read { value: v.map(String::from) });
            self.add(c, Op::Get { key: k.into(), level }, t, Outcome::Ok, ret)
        }
        fn get(&mut self, c: u32, k: &str, v: Option<&str>, t: (u64, u64)) -> &mut Self {
            self.get_at(c, k, Level::Linearizable, v, t)
        }
        fn report(&self) -> Report {
            check(&self.0)
        }
    }

    fn assert_ok(h: &H) {
        let r = h.report();
        assert!(r.ok(), "expected a pass, got {:?}", r.violations);
    }

    fn assert_not_linearizable(h: &H) {
        let r = h.report();
        assert!(
            r.violations.iter().any(|v| matches!(v, Violation::NotLinearizable { .. })),
            "expected a violation, got {:?}",
            r.violations
        );
    }

    #[test]
    fn a_sequential_history_passes() {
        let mut h = H::new();
        h.get(0, "a", None, (0, 1)).put(0, "a", "1", (2, 3)).get(1, "a", Some("1"), (4, 5));
        h.add(1, Op::Delete { key: "a".into() }, (6, 7), Outcome::Ok, Some(Ret::Deleted { existed: true }));
        h.get(0, "a", None, (8, 9));
        assert_ok(&h);
    }

    #[test]
    fn a_stale_read_fails() {
        let mut h = H::new();
        h.put(0, "a", "1", (0, 1)).put(0, "a", "2", (2, 3)).get(1, "a", Some("1"), (4, 5));
        assert_not_linearizable(&h);
    }

    #[test]
    fn a_lost_acknowledged_write_fails() {
        let mut h = H::new();
        h.put(0, "a", "1", (0, 1)).get(1, "a", None, (10, 11));
        assert_not_linearizable(&h);
    }

    #[test]
    fn a_read_of_a_never_written_value_fails() {
        let mut h = H::new();
        h.put(0, "a", "1", (0, 1)).get(1, "a", Some("7"), (2, 3));
        assert_not_linearizable(&h);
        let mut h = H::new();
        h.put(0, "a", "1", (0, 1)).get_at(1, "a", Level::Eventual, Some("7"), (2, 3));
        assert!(matches!(h.report().violations[..], [Violation::UnwrittenValue { op: 1, .. }]));
    }

    #[test]
    fn a_value_flipping_back_fails_though_every_read_alone_is_explained() {
        // Each read returns a value a concurrent write wrote, and no read sees
        // a value older than a write finished before it began: every simple
        // pairwise check passes, but 1 -> 2 -> 1 needs a write to apply twice.
        let mut h = H::new();
        h.put(0, "a", "1", (0, 100)).put(1, "a", "2", (0, 100));
        h.get(2, "a", Some("1"), (10, 20)).get(2, "a", Some("2"), (30, 40)).get(3, "a", Some("1"), (50, 60));
        assert_not_linearizable(&h);
        // Two readers seeing the two orders of concurrent writes is fine
        // while the writes are still running.
        let mut h = H::new();
        h.put(0, "a", "1", (0, 100)).put(1, "a", "2", (0, 100));
        h.get(2, "a", Some("1"), (10, 20)).get(3, "a", Some("2"), (30, 40)).get(2, "a", Some("2"), (110, 120));
        assert_ok(&h);
    }

    #[test]
    fn an_unknown_write_may_apply_late_or_never_but_not_flicker() {
        let mut h = H::new();
        h.put(0, "a", "1", (0, 1)).put_with(1, "a", "2", (2, 3), Outcome::Unknown);
        h.get(2, "a", Some("1"), (10, 11)).get(2, "a", Some("2"), (50, 51));
        assert_ok(&h);
        let mut h = H::new();
        h.put(0, "a", "1", (0, 1)).put_with(1, "a", "2", (2, 3), Outcome::Unknown);
        h.get(2, "a", Some("1"), (10, 11));
        assert_ok(&h);
        let mut h = H::new();
        h.put(0, "a", "1", (0, 1)).put_with(1, "a", "2", (2, 3), Outcome::Unknown);
        h.get(2, "a", Some("2"), (10, 11)).get(2, "a", Some("1"), (20, 21));
        assert_not_linearizable(&h);
    }

    #[test]
    fn a_failed_write_must_not_be_seen() {
        let mut h = H::new();
        h.put_with(0, "a", "1", (0, 1), Outcome::Failed).get(1, "a", Some("1"), (2, 3));
        assert_not_linearizable(&h);
    }

    #[test]
    fn two_swaps_from_the_same_value_cannot_both_succeed() {
        let cas = |exp: Option<&str>, new: &str| Op::Cas {
            key: "a".into(),
            expected: exp.map(String::from),
            new: Some(new.into()),
        };
        let won = Some(Ret::Cas { succeeded: true, current: None });
        let mut h = H::new();
        h.put(0, "a", "0", (0, 1));
        h.add(1, cas(Some("0"), "x"), (2, 10), Outcome::Ok, won.clone());
        h.add(2, cas(Some("0"), "y"), (2, 10), Outcome::Ok, won.clone());
        assert_not_linearizable(&h);
        // One wins, the other reports what it found.
        let mut h = H::new();
        h.put(0, "a", "0", (0, 1));
        h.add(1, cas(Some("0"), "x"), (2, 10), Outcome::Ok, won);
        h.add(
            2,
            cas(Some("0"), "y"),
            (2, 10),
            Outcome::Ok,
            Some(Ret::Cas { succeeded: false, current: Some("x".into()) }),
        );
        h.get(0, "a", Some("x"), (11, 12));
        assert_ok(&h);
    }

    #[test]
    fn a_delete_must_report_what_it_found() {
        let mut h = H::new();
        h.put(0, "a", "1", (0, 1));
        h.add(1, Op::Delete { key: "a".into() }, (2, 3), Outcome::Ok, Some(Ret::Deleted { existed: false }));
        assert_not_linearizable(&h);
    }

    #[test]
    fn a_batch_seen_half_applied_fails() {
        let batch = Op::Batch { writes: vec![("a".into(), Some("1".into())), ("b".into(), Some("1".into()))] };
        let mut h = H::new();
        h.add(0, batch.clone(), (0, 100), Outcome::Ok, Some(Ret::Written));
        // a is new, then (later) b is still old: one key's check alone passes.
        h.get(1, "a", Some("1"), (10, 20)).get(1, "b", None, (30, 40));
        assert_not_linearizable(&h);
        let mut h = H::new();
        h.add(0, batch, (0, 100), Outcome::Unknown, None);
        h.get(1, "b", None, (10, 20)).get(1, "a", Some("1"), (30, 40)).get(1, "b", Some("1"), (50, 60));
        assert_ok(&h);
    }

    #[test]
    fn session_reads_may_lag_but_never_go_back() {
        // Client 1 reads the old value with no history of its own: allowed.
        let mut h = H::new();
        h.put(0, "a", "1", (0, 1)).put(0, "a", "2", (2, 3));
        h.get_at(1, "a", Level::Session, Some("1"), (4, 5));
        assert_ok(&h);
        // Client 1 saw 2, then 1: it went back.
        let mut h = H::new();
        h.put(0, "a", "1", (0, 1)).put(0, "a", "2", (2, 3));
        h.get_at(1, "a", Level::Session, Some("2"), (4, 5)).get_at(1, "a", Level::Session, Some("1"), (6, 7));
        let r = h.report();
        assert!(matches!(r.violations[..], [Violation::SessionWentBack { blocked_op: 3, .. }]), "{:?}", r.violations);
        // Client 1 wrote 2 and does not read its own write.
        let mut h = H::new();
        h.put(0, "a", "1", (0, 1)).put(1, "a", "2", (2, 3)).get_at(1, "a", Level::Session, Some("1"), (4, 5));
        assert!(matches!(h.report().violations[..], [Violation::SessionWentBack { .. }]));
    }

    #[test]
    fn eventual_reads_may_be_stale() {
        let mut h = H::new();
        h.put(0, "a", "1", (0, 1)).put(0, "a", "2", (2, 3));
        h.get_at(1, "a", Level::Eventual, Some("1"), (4, 5)).get_at(1, "a", Level::Eventual, None, (6, 7));
        assert_ok(&h);
    }

    #[test]
    fn a_run_out_of_budget_is_no_verdict() {
        let mut h = H::new();
        for i in 0..12 {
            h.put_with(i, "a", &i.to_string(), (0, 1), Outcome::Unknown);
        }
        h.get(99, "a", Some("nope"), (5, 6));
        let r = check_with_budget(&h.0, 100);
        assert!(matches!(r.violations[..], [Violation::Inconclusive { .. }]), "{:?}", r.violations);
    }
}
