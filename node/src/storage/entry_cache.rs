//! The newest log entries of every group, bounded in bytes across groups.
//!
//! openraft reads each entry back from the log twice moments after it was
//! appended: to send it to the followers and to apply it. Served from the
//! engine, each read is a range scan of the memtable and a decode; from
//! here it is a clone. Entries leave in the order they came once the
//! budget is reached, and with the truncates and purges of their group, so
//! for every group the cache holds a contiguous run ending at its last
//! entry (or nothing): a read that starts inside the run is answered in
//! full here, any other goes to the engine.

use std::collections::{HashMap, VecDeque};

use crate::types::{Entry, GroupId};

/// Bytes counted per entry beside its encoded size.
const OVERHEAD: usize = 64;
/// Larger entries are not kept: their reads cost mostly the copy of the
/// value, which a cache does not save, and a few would fill it.
pub const MAX_ENTRY_BYTES: usize = 64 << 10;

#[derive(Debug)]
pub struct EntryCache {
    budget: usize,
    bytes: usize,
    entries: usize,
    groups: HashMap<GroupId, VecDeque<(Entry, usize)>>,
    /// (group, index) in insertion order: what leaves first. Records of
    /// entries already gone (truncated, purged) are skipped.
    order: VecDeque<(GroupId, u64)>,
}

impl EntryCache {
    pub fn new(budget: usize) -> Self {
        EntryCache { budget, bytes: 0, entries: 0, groups: HashMap::new(), order: VecDeque::new() }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries just appended to `group`, with their encoded sizes.
    pub fn append(&mut self, group: GroupId, new: impl IntoIterator<Item = (Entry, usize)>) {
        if self.budget == 0 {
            return;
        }
        for (e, size) in new {
            let index = e.log_id.index;
            let q = self.groups.entry(group).or_default();
            if size > MAX_ENTRY_BYTES || q.back().is_some_and(|(b, _)| b.log_id.index + 1 != index) {
                // Too large to keep, or not contiguous (cannot happen
                // through the log's own calls): the run ends here.
                let dropped = std::mem::take(q);
                self.bytes -= dropped.iter().map(|(_, s)| s).sum::<usize>();
                self.entries -= dropped.len();
                if size > MAX_ENTRY_BYTES {
                    self.groups.remove(&group);
                    continue;
                }
            }
            let size = size + OVERHEAD;
            let q = self.groups.entry(group).or_default();
            q.push_back((e, size));
            self.bytes += size;
            self.entries += 1;
            self.order.push_back((group, index));
        }
        while self.bytes > self.budget && self.evict_oldest() {}
        // Records of entries that left through truncates and purges.
        if self.order.len() > 2 * self.entries + 1024 {
            let groups = &self.groups;
            self.order.retain(|(g, i)| {
                groups.get(g).is_some_and(|q| {
                    q.front().is_some_and(|(f, _)| f.log_id.index <= *i)
                        && q.back().is_some_and(|(b, _)| b.log_id.index >= *i)
                })
            });
        }
    }

    fn evict_oldest(&mut self) -> bool {
        while let Some((g, index)) = self.order.pop_front() {
            let Some(q) = self.groups.get_mut(&g) else { continue };
            if q.front().is_some_and(|(f, _)| f.log_id.index == index) {
                let (_, size) = q.pop_front().expect("checked");
                self.bytes -= size;
                self.entries -= 1;
                if q.is_empty() {
                    self.groups.remove(&g);
                }
                return true;
            }
        }
        false
    }

    /// Entries with index >= `since` left the log.
    pub fn truncate(&mut self, group: GroupId, since: u64) {
        let Some(q) = self.groups.get_mut(&group) else { return };
        while q.back().is_some_and(|(b, _)| b.log_id.index >= since) {
            let (_, size) = q.pop_back().expect("checked");
            self.bytes -= size;
            self.entries -= 1;
        }
        if q.is_empty() {
            self.groups.remove(&group);
        }
    }

    /// Entries with index <= `upto` left the log.
    pub fn purge(&mut self, group: GroupId, upto: u64) {
        let Some(q) = self.groups.get_mut(&group) else { return };
        while q.front().is_some_and(|(f, _)| f.log_id.index <= upto) {
            let (_, size) = q.pop_front().expect("checked");
            self.bytes -= size;
            self.entries -= 1;
        }
        if q.is_empty() {
            self.groups.remove(&group);
        }
    }

    pub fn remove_group(&mut self, group: GroupId) {
        if let Some(q) = self.groups.remove(&group) {
            self.bytes -= q.iter().map(|(_, s)| s).sum::<usize>();
            self.entries -= q.len();
        }
    }

    /// Entries `start..end` of `group` (fewer if the log ends sooner), if
    /// the cached run holds `start`.
    pub fn get(&self, group: GroupId, start: u64, end: u64) -> Option<Vec<Entry>> {
        let q = self.groups.get(&group)?;
        let first = q.front()?.0.log_id.index;
        if start < first {
            return None;
        }
        let from = usize::try_from(start - first).ok()?;
        let n = usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX);
        Some(q.iter().skip(from).take(n).map(|(e, _)| e.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{LogId, TypeConfig};
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> (Entry, usize) {
        let e = openraft::Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        };
        (e, 100)
    }

    fn indexes(v: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn a_read_inside_the_cached_run_is_answered_and_one_before_it_is_not() {
        let mut c = EntryCache::new(1 << 20);
        c.append(1, (5..10).map(entry));
        assert_eq!(indexes(c.get(1, 6, 8)), Some(vec![6, 7]));
        assert_eq!(indexes(c.get(1, 8, u64::MAX)), Some(vec![8, 9]));
        assert_eq!(indexes(c.get(1, 10, 20)), Some(vec![]), "past the end of the log: nothing, as the engine");
        assert_eq!(indexes(c.get(1, 4, 8)), None, "starts before the run: the engine answers");
        assert_eq!(indexes(c.get(2, 5, 8)), None);
    }

    #[test]
    fn truncate_and_purge_remove_what_left_the_log() {
        let mut c = EntryCache::new(1 << 20);
        c.append(1, (1..=10).map(entry));
        c.truncate(1, 8);
        assert_eq!(indexes(c.get(1, 1, 100)), Some((1..8).collect()));
        c.append(1, (8..=9).map(entry));
        c.purge(1, 3);
        assert_eq!(indexes(c.get(1, 3, 100)), None);
        assert_eq!(indexes(c.get(1, 4, 100)), Some((4..=9).collect()));
        c.purge(1, 9);
        assert_eq!(indexes(c.get(1, 9, 100)), None);
        assert_eq!(c.bytes(), 0);
        c.append(2, (1..=3).map(entry));
        c.remove_group(2);
        assert_eq!((c.bytes(), c.entries), (0, 0));
    }

    #[test]
    fn the_budget_holds_across_groups_and_the_oldest_leave_first() {
        let per = 100 + OVERHEAD;
        let mut c = EntryCache::new(10 * per);
        c.append(1, (1..=6).map(entry));
        c.append(2, (1..=6).map(entry));
        assert!(c.bytes() <= 10 * per, "{}", c.bytes());
        // Group 1's two oldest left; every read of what remains is whole.
        assert_eq!(indexes(c.get(1, 2, 100)), None);
        assert_eq!(indexes(c.get(1, 3, 100)), Some((3..=6).collect()));
        assert_eq!(indexes(c.get(2, 1, 100)), Some((1..=6).collect()));
        // A run that is not contiguous starts again.
        c.append(2, [entry(9)]);
        assert_eq!(indexes(c.get(2, 6, 100)), None);
        assert_eq!(indexes(c.get(2, 9, 100)), Some(vec![9]));
    }

    #[test]
    fn a_large_entry_ends_the_run_and_is_read_from_the_engine() {
        let mut c = EntryCache::new(1 << 30);
        c.append(1, (1..=3).map(entry));
        let (big, _) = entry(4);
        c.append(1, [(big, MAX_ENTRY_BYTES + 1)]);
        assert_eq!(indexes(c.get(1, 1, 100)), None);
        assert_eq!(indexes(c.get(1, 4, 100)), None);
        assert_eq!(c.bytes(), 0);
        c.append(1, [entry(5)]);
        assert_eq!(indexes(c.get(1, 5, 100)), Some(vec![5]));
    }

    #[test]
    fn eviction_records_stay_bounded_under_purges() {
        let mut c = EntryCache::new(1 << 30);
        for i in 1..=100_000u64 {
            c.append(1, [entry(i)]);
            c.purge(1, i - 1);
        }
        assert!(c.order.len() <= 2 * c.entries + 1024, "{}", c.order.len());
        assert_eq!(c.bytes(), 100 + OVERHEAD);
    }

    #[test]
    fn a_zero_budget_caches_nothing() {
        let mut c = EntryCache::new(0);
        c.append(1, (1..=3).map(entry));
        assert_eq!(indexes(c.get(1, 1, 3)), None);
    }
}
