//! Batched ReadIndex: linearizable reads of one group share the leader's
//! quorum round instead of each running its own.
//!
//! A round confirms leadership with heartbeats to a quorum and reads the
//! commit index when it starts. A read may take the answer of a round only
//! if that round started after the read arrived, so reads arriving while a
//! round is in flight wait for the next one; that round starts as soon as
//! the current one ends and answers every read waiting for it.

use std::future::Future;
use std::sync::{Arc, Mutex};

use openraft::error::{CheckIsLeaderError, Fatal, RaftError};
use openraft::BasicNode;
use tokio::sync::oneshot;

use crate::types::{NodeId, Raft};

pub type ReadError = RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>;

/// One group's pending linearizable reads.
#[derive(Default)]
pub struct ReadIndex {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// A round is in flight or about to start.
    running: bool,
    /// Reads for the next round.
    waiting: Vec<oneshot::Sender<Result<(), ReadError>>>,
}

impl ReadIndex {
    /// Returns once this node was confirmed leader by a quorum after the
    /// call began and its state machine applied everything committed when
    /// that confirmation started: a read served now is linearizable.
    pub async fn barrier(self: &Arc<Self>, raft: &Raft) -> Result<(), ReadError> {
        let raft = raft.clone();
        self.join(move || {
            let raft = raft.clone();
            async move { raft.ensure_linearizable().await.map(|_| ()) }
        })
        .await
    }

    /// Waits for the answer of a `round` that starts after this call.
    async fn join<F, Fut>(self: &Arc<Self>, round: F) -> Result<(), ReadError>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), ReadError>> + Send,
    {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.waiting.push(tx);
            !std::mem::replace(&mut s.running, true)
        };
        if start {
            let this = self.clone();
            tokio::spawn(async move { this.drive(round).await });
        }
        rx.await.unwrap_or(Err(RaftError::Fatal(Fatal::Stopped)))
    }

    /// Runs rounds while reads wait for one. Each round answers the reads
    /// taken before it started.
    async fn drive<F, Fut>(&self, round: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), ReadError>>,
    {
        loop {
            let batch = {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if s.waiting.is_empty() {
                    s.running = false;
                    return;
                }
                std::mem::take(&mut s.waiting)
            };
            crate::metrics::observe_read_index_batch(batch.len());
            let res = round().await;
            for tx in batch {
                let _ = tx.send(res.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A round that starts when called and ends when the test says so.
    struct Rounds {
        started: AtomicUsize,
        release: tokio::sync::Semaphore,
    }

    fn rounds() -> Arc<Rounds> {
        Arc::new(Rounds { started: AtomicUsize::new(0), release: tokio::sync::Semaphore::new(0) })
    }

    fn round(r: &Arc<Rounds>) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<(), ReadError>> + Send>> {
        let r = r.clone();
        move || {
            let r = r.clone();
            Box::pin(async move {
                r.started.fetch_add(1, Ordering::SeqCst);
                r.release.acquire().await.unwrap().forget();
                Ok(())
            })
        }
    }

    async fn until(what: &str, f: impl Fn() -> bool) {
        for _ in 0..200 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{what}");
    }

    #[tokio::test]
    async fn a_read_arriving_during_a_round_waits_for_the_next_one_and_waiting_reads_share_it() {
        let ri = Arc::new(ReadIndex::default());
        let r = rounds();
        let first = tokio::spawn({
            let (ri, f) = (ri.clone(), round(&r));
            async move { ri.join(f).await }
        });
        until("the first round starts", || r.started.load(Ordering::SeqCst) == 1).await;
        // Three reads arrive while round 1 is in flight.
        let late: Vec<_> = (0..3)
            .map(|_| {
                let (ri, f) = (ri.clone(), round(&r));
                tokio::spawn(async move { ri.join(f).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        r.release.add_permits(1);
        first.await.unwrap().unwrap();
        // Round 1 answered only the read that came before it.
        until("round 2 starts", || r.started.load(Ordering::SeqCst) == 2).await;
        assert!(late.iter().all(|h| !h.is_finished()), "a read was answered by a round that started before it");
        r.release.add_permits(1);
        for h in late {
            h.await.unwrap().unwrap();
        }
        // One round served all three.
        assert_eq!(r.started.load(Ordering::SeqCst), 2);
        assert!(!ri.state.lock().unwrap().running);
    }

    #[tokio::test]
    async fn a_failed_round_fails_every_read_it_answers() {
        let ri = Arc::new(ReadIndex::default());
        let fail = || async { Err(RaftError::Fatal(Fatal::Stopped)) };
        assert!(ri.join(fail).await.is_err());
        // The next read starts a new round.
        assert!(ri.join(|| async { Ok(()) }).await.is_ok());
    }
}
