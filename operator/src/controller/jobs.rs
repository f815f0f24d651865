//! Long operations (a backup, a restore) run as tasks beside the reconcile
//! loop; each reconcile pass asks how its task is doing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use futures::future::{AbortHandle, Abortable};
use futures::FutureExt;
use tokio::task::JoinHandle;

/// How the task under one key is doing.
#[derive(Debug)]
pub enum JobState<T> {
    /// No task under this key in this process (never started, or started
    /// by a process that is gone).
    Absent,
    Running,
    /// Finished; the task is forgotten once this is returned.
    Done(Result<T, String>),
}

/// A running task and the handle that stops it.
type Task<T> = (JoinHandle<Result<T, String>>, AbortHandle);

/// Tasks by key (`namespace/name`).
pub struct Jobs<T> {
    tasks: Mutex<HashMap<String, Task<T>>>,
}

impl<T> Default for Jobs<T> {
    fn default() -> Self {
        Jobs { tasks: Mutex::default() }
    }
}

impl<T: Send + 'static> Jobs<T> {
    pub fn state(&self, key: &str) -> JobState<T> {
        let mut tasks = self.tasks.lock().unwrap();
        let Some((handle, _)) = tasks.get_mut(key) else { return JobState::Absent };
        if !handle.is_finished() {
            return JobState::Running;
        }
        let out = match handle.now_or_never() {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(format!("the task stopped: {e}")),
            None => return JobState::Running,
        };
        tasks.remove(key);
        JobState::Done(out)
    }

    /// Starts the future `work` makes under `key` unless a task already
    /// runs there. It runs on a blocking-pool thread driving the runtime:
    /// the client's streams of borrowed futures are not provably `Send`.
    pub fn start<F, Fut>(&self, key: &str, work: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, String>> + 'static,
    {
        let mut tasks = self.tasks.lock().unwrap();
        tasks.entry(key.to_string()).or_insert_with(|| {
            let (abort, registration) = AbortHandle::new_pair();
            let rt = tokio::runtime::Handle::current();
            let handle = tokio::task::spawn_blocking(move || {
                rt.block_on(Abortable::new(work(), registration)).unwrap_or_else(|_| Err("stopped".into()))
            });
            (handle, abort)
        });
    }

    /// Stops the task under `key` (its object was deleted).
    pub fn cancel(&self, key: &str) {
        if let Some((_, abort)) = self.tasks.lock().unwrap().remove(key) {
            abort.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_finished_task_is_reported_once_then_forgotten() {
        let jobs: Jobs<u32> = Jobs::default();
        assert!(matches!(jobs.state("a"), JobState::Absent));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        jobs.start("a", move || async move {
            rx.await.ok();
            Ok(7)
        });
        assert!(matches!(jobs.state("a"), JobState::Running));
        // A second start while it runs changes nothing.
        jobs.start("a", || async { Ok(8) });
        tx.send(()).unwrap();
        let out = loop {
            match jobs.state("a") {
                JobState::Running => tokio::task::yield_now().await,
                other => break other,
            }
        };
        assert!(matches!(out, JobState::Done(Ok(7))), "{out:?}");
        assert!(matches!(jobs.state("a"), JobState::Absent));
    }
}
