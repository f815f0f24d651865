//! The rate at which a node sends snapshot data to new replicas
//! (`--snapshot-send-bytes-per-sec`), shared by every partition it leads:
//! the moves of a rebalance or a repair together never take more than that.
//! Only learners are paced (see `network::GroupNetwork::full_snapshot`).
//!
//! openraft reads a chunk from [`super::snapshot::SnapshotData`], then sends
//! it under a per-chunk timeout. The wait is paid while reading the next
//! chunk, outside that timeout, so a slow rate never makes a chunk time out.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A pacer: each reservation of `n` bytes moves the earliest time of the
/// next one `n / rate` later. Idle time is not saved up, so a burst after a
/// pause is one reservation long.
#[derive(Debug)]
pub struct SendThrottle {
    bytes_per_sec: u64,
    next: Mutex<Instant>,
}

impl SendThrottle {
    /// `None` for 0 (unlimited).
    pub fn new(bytes_per_sec: u64) -> Option<Self> {
        (bytes_per_sec > 0).then(|| Self { bytes_per_sec, next: Mutex::new(Instant::now()) })
    }

    /// Accounts for `bytes` just read and returns when the next read may
    /// start.
    pub fn reserve(&self, bytes: u64) -> Instant {
        self.reserve_at(Instant::now(), bytes)
    }

    fn reserve_at(&self, now: Instant, bytes: u64) -> Instant {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let start = (*next).max(now);
        *next = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        *next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_unlimited() {
        assert!(SendThrottle::new(0).is_none());
    }

    #[test]
    fn reservations_are_paced_at_the_rate_and_idle_time_is_not_saved() {
        let t = SendThrottle::new(1 << 20).unwrap();
        let t0 = Instant::now();
        // Two 1 MiB reads back to back: the next read may start 2 s on.
        t.reserve_at(t0, 1 << 20);
        assert_eq!(t.reserve_at(t0, 1 << 20) - t0, Duration::from_secs(2));
        // After a long pause, one reservation's worth, not the pause's.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(t.reserve_at(later, 512 << 10) - later, Duration::from_millis(500));
    }
}
