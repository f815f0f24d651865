//! Partition math. A key belongs to partition `hash(key) % partitions`; the
//! hash is fixed forever because it decides where data lives on disk.

use xxhash_rust::xxh3::xxh3_64;

/// A Raft group: 0 is the meta group, partition `p` is group `p + 1`.
pub type GroupId = u64;

/// The meta group's id.
pub const META_GROUP: GroupId = 0;

/// The partition that owns `key` in a cluster of `partitions` partitions.
///
/// # Panics
/// Never for `partitions > 0`; callers validate the partition count first.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "partition count must be positive");
    (xxh3_64(key) % u64::from(partitions)) as u32
}

/// The Raft group id of partition `p`.
pub fn group_of_partition(p: u32) -> GroupId {
    u64::from(p) + 1
}

/// The partition of a group, `None` for the meta group.
pub fn partition_of_group(g: GroupId) -> Option<u32> {
    g.checked_sub(1).and_then(|p| u32::try_from(p).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_across_releases() {
        // Data placement depends on these exact values: changing the hash
        // would strand every existing key on the wrong partition.
        assert_eq!(partition_for_key(b"", 8), (xxh3_64(b"") % 8) as u32);
        assert_eq!(xxh3_64(b"hello"), 0x9555e8555c62dcfd);
        assert_eq!(partition_for_key(b"hello", 16), (0x9555e8555c62dcfdu64 % 16) as u32);
    }

    #[test]
    fn keys_spread_evenly_over_partitions() {
        let parts = 8u32;
        let mut counts = vec![0u32; parts as usize];
        for i in 0..80_000 {
            counts[partition_for_key(format!("key-{i}").as_bytes(), parts) as usize] += 1;
        }
        let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
        // 10,000 expected per partition; allow 5% skew.
        assert!(min > 9_500 && max < 10_500, "uneven spread: {counts:?}");
    }

    #[test]
    fn group_numbering_round_trips() {
        assert_eq!(partition_of_group(META_GROUP), None);
        for p in [0u32, 1, 7, 1023] {
            assert_eq!(partition_of_group(group_of_partition(p)), Some(p));
        }
    }
}
