//! One group's view of the node's Raft logs, as openraft's log storage.

use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};

use super::wal::Wal;
use crate::types::{Entry, GroupId, LogId, StorageError, TypeConfig, Vote};

#[derive(Clone)]
pub struct LogStore {
    group: GroupId,
    wal: Wal,
}

impl LogStore {
    pub fn new(group: GroupId, wal: Wal) -> Self {
        Self { group, wal }
    }
}

fn write_err(subject: ErrorSubject<u64>, e: io::Error) -> StorageError {
    StorageError::from_io_error(subject, ErrorVerb::Write, e)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.wal
            .entries(self.group, range)
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Read, e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        Ok(self.wal.with_group(self.group, |g| LogState { last_purged_log_id: g.purged, last_log_id: g.last_log_id() }))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.wal.save_vote(self.group, *vote).await.map_err(|e| write_err(ErrorSubject::Vote, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.wal.with_group(self.group, |g| g.vote))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.wal.save_committed(self.group, committed).await.map_err(|e| write_err(ErrorSubject::Store, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.wal.with_group(self.group, |g| g.committed))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            callback.log_io_completed(Ok(()));
        } else {
            self.wal.append(self.group, entries, callback);
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.wal.truncate(self.group, log_id.index).await.map_err(|e| write_err(ErrorSubject::Logs, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.wal.purge(self.group, log_id).map_err(|e| write_err(ErrorSubject::Logs, e))
    }
}
