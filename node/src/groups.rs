//! The one place that owns the lifecycle of this node's Raft groups: opening
//! a group (from its log and state machine in the storage engine), looking
//! groups up, and shutting them down.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock, RwLock};

use tokio::sync::{watch, Mutex};

use crate::error::NodeError;
use crate::meta::ClusterMeta;
use crate::network::NetworkFactory;
use crate::peers::Peers;
use crate::read_index::ReadIndex;
use crate::storage::sm_store::SmReader;
use crate::storage::{LogStore, StateMachine, Wal};
use crate::types::{GroupId, NodeId, Raft};

/// Highest group id a peer may make this node open.
pub const MAX_GROUP: GroupId = 1 << 16;

pub struct Group {
    pub id: GroupId,
    pub raft: Raft,
    pub sm: SmReader,
    pub snapshots_built: Arc<AtomicU64>,
    /// Linearizable reads waiting for a leadership confirmation.
    pub reads: Arc<ReadIndex>,
}

pub struct Groups {
    node_id: NodeId,
    tmp_dir: PathBuf,
    wal: Wal,
    peers: Peers,
    cluster: String,
    raft_config: Arc<openraft::Config>,
    meta_tx: watch::Sender<Option<Arc<ClusterMeta>>>,
    map: RwLock<HashMap<GroupId, Arc<Group>>>,
    opening: Mutex<()>,
}

impl Groups {
    pub fn new(
        node_id: NodeId,
        tmp_dir: PathBuf,
        wal: Wal,
        peers: Peers,
        cluster: String,
        raft_config: openraft::Config,
        meta_tx: watch::Sender<Option<Arc<ClusterMeta>>>,
    ) -> Result<Self, NodeError> {
        let raft_config =
            raft_config.validate().map_err(|e| NodeError::Internal(format!("raft configuration: {e}")))?;
        Ok(Self {
            node_id,
            tmp_dir,
            wal,
            peers,
            cluster,
            raft_config: Arc::new(raft_config),
            meta_tx,
            map: RwLock::new(HashMap::new()),
            opening: Mutex::new(()),
        })
    }

    pub fn get(&self, id: GroupId) -> Option<Arc<Group>> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
    }

    /// Every open group, in id order.
    pub fn all(&self) -> Vec<Arc<Group>> {
        let mut v: Vec<_> = self.map.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        v.sort_by_key(|g| g.id);
        v
    }

    /// Groups that have state on disk from an earlier run.
    pub fn on_disk(&self) -> Result<Vec<GroupId>, NodeError> {
        let mut ids = self.wal.groups();
        ids.extend(self.wal.sm_store().groups().map_err(|e| NodeError::Internal(format!("list state machines: {e}")))?);
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Returns the group, opening it first if needed. Idempotent.
    pub async fn open(&self, id: GroupId) -> Result<Arc<Group>, NodeError> {
        if let Some(g) = self.get(id) {
            return Ok(g);
        }
        if id > MAX_GROUP {
            return Err(NodeError::invalid("group", format!("group {id} exceeds the largest group id {MAX_GROUP}")));
        }
        let _guard = self.opening.lock().await;
        if let Some(g) = self.get(id) {
            return Ok(g);
        }
        let meta_tx = (id == keyraft_api::META_GROUP).then(|| self.meta_tx.clone());
        let sm = StateMachine::open(id, self.wal.clone(), &self.tmp_dir, meta_tx)
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        let reader = sm.reader();
        let snapshots_built = sm.snapshots_built();
        let raft_metrics = Arc::new(OnceLock::new());
        let network = NetworkFactory {
            group: id,
            cluster: self.cluster.clone(),
            peers: self.peers.clone(),
            meta: self.meta_tx.subscribe(),
            raft_metrics: raft_metrics.clone(),
        };
        let raft = Raft::new(self.node_id, self.raft_config.clone(), network, LogStore::new(id, self.wal.clone()), sm)
            .await
            .map_err(|e| NodeError::Internal(format!("cannot start raft group {id}: {e}")))?;
        let _ = raft_metrics.set(raft.metrics());
        crate::metrics::watch_leader(id, raft.metrics());
        let g = Arc::new(Group { id, raft, sm: reader, snapshots_built, reads: Default::default() });
        self.map.write().unwrap_or_else(|e| e.into_inner()).insert(id, g.clone());
        tracing::debug!(group = id, "opened raft group");
        Ok(g)
    }

    /// Stops a group and deletes its local state (its replica moved away).
    pub async fn remove(&self, id: GroupId) -> Result<(), NodeError> {
        let _guard = self.opening.lock().await;
        let g = self.map.write().unwrap_or_else(|e| e.into_inner()).remove(&id);
        if let Some(g) = g {
            let _ = g.raft.shutdown().await;
        }
        // The log goes first: a state without a log opens as a group whose
        // log was purged up to its state; a log purged without its state
        // could not be replayed.
        self.wal.drop_group(id).await.map_err(|e| NodeError::Internal(format!("forget group {id}: {e}")))?;
        let store = self.wal.sm_store();
        tokio::task::spawn_blocking(move || store.drop_group(id))
            .await
            .map_err(|e| NodeError::Internal(format!("delete group {id}: {e}")))?
            .map_err(|e| NodeError::Internal(format!("delete group {id}: {e}")))
    }

    pub async fn shutdown(&self) {
        for g in self.all() {
            let _ = g.raft.shutdown().await;
        }
    }
}
