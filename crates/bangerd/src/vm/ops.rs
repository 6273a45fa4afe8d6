//! Asynchronous operations (VM create): a row in the store for history and
//! `banger op ls/show`, plus an in-memory watch channel per running
//! operation so `--wait` and `banger op wait` stream its progress.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use banger_proto::rpc::Progress;
use banger_proto::vm::{OpInfo, OpKind, OpRequest, OpResponse};
use banger_proto::{ErrorCode, RpcError};
use tokio::sync::watch;

use super::{internal, store_err};
use crate::server::ProgressSink;
use crate::store::{NewOperation, OperationOutcome, OperationRow, Store};

#[derive(Debug, Clone, Default)]
pub struct OpSnapshot {
    pub progress: Option<Progress>,
    /// Set once: how the operation ended.
    pub finished: Option<Result<(), RpcError>>,
}

#[derive(Debug)]
pub struct OpRegistry {
    store: Arc<Store>,
    live: Mutex<HashMap<String, watch::Receiver<OpSnapshot>>>,
}

/// The running side of one operation.
#[derive(Debug)]
pub struct OpHandle {
    pub id: String,
    store: Arc<Store>,
    tx: watch::Sender<OpSnapshot>,
}

impl OpRegistry {
    pub fn new(store: Arc<Store>) -> OpRegistry {
        OpRegistry {
            store,
            live: Mutex::new(HashMap::new()),
        }
    }

    pub fn begin(&self, kind: OpKind, vm_id: Option<&str>) -> Result<OpHandle, RpcError> {
        let row = self
            .store
            .insert_operation(&NewOperation {
                kind,
                vm_id: vm_id.map(str::to_string),
                stage: Some("queued".into()),
                total: None,
            })
            .map_err(store_err)?;
        let (tx, rx) = watch::channel(OpSnapshot::default());
        let mut live = self.live.lock().expect("ops poisoned");
        // Finished operations need no channel; their row says everything.
        live.retain(|_, rx| rx.borrow().finished.is_none());
        live.insert(row.id.clone(), rx);
        Ok(OpHandle {
            id: row.id,
            store: Arc::clone(&self.store),
            tx,
        })
    }

    pub fn subscribe(&self, id: &str) -> Option<watch::Receiver<OpSnapshot>> {
        self.live.lock().expect("ops poisoned").get(id).cloned()
    }

    /// Forward an operation's progress to `sink` until it finishes.
    pub async fn follow(
        mut rx: watch::Receiver<OpSnapshot>,
        sink: &ProgressSink,
    ) -> Result<(), RpcError> {
        loop {
            let snap = rx.borrow_and_update().clone();
            if let Some(p) = snap.progress {
                sink.emit(p).await;
            }
            if let Some(done) = snap.finished {
                return done;
            }
            if rx.changed().await.is_err() {
                return Err(internal("the operation ended without a result"));
            }
        }
    }

    pub async fn handle(&self, req: OpRequest, sink: ProgressSink) -> Result<OpResponse, RpcError> {
        match req {
            OpRequest::List => {
                let rows = self.store.list_operations().map_err(store_err)?;
                Ok(OpResponse::List(
                    rows.iter().map(|r| self.info(r)).collect(),
                ))
            }
            OpRequest::Show { id } => Ok(OpResponse::Op(self.info(&self.row(&id)?))),
            OpRequest::Wait { id } => {
                let row = self.row(&id)?;
                if let Some(rx) = self.subscribe(&id) {
                    // The operation's own error is the answer's content, not
                    // a failure of `op wait`.
                    let _ = Self::follow(rx, &sink).await;
                }
                let row = self.row(&row.id)?;
                Ok(OpResponse::Op(self.info(&row)))
            }
        }
    }

    fn row(&self, id: &str) -> Result<OperationRow, RpcError> {
        self.store
            .get_operation(id)
            .map_err(store_err)?
            .ok_or_else(|| {
                RpcError::new(
                    ErrorCode::NotFound,
                    format!("no operation {id:?} (see `banger op ls`)"),
                )
            })
    }

    fn info(&self, r: &OperationRow) -> OpInfo {
        let vm = r
            .vm_id
            .as_deref()
            .and_then(|id| self.store.get_vm(id).ok().flatten())
            .map(|v| v.name);
        OpInfo {
            id: r.id.clone(),
            kind: r.kind,
            vm,
            state: r.state,
            stage: r.stage.clone(),
            done: r.done,
            total: r.total,
            error: r.error_messages.clone(),
            created_at: r.created_at,
            finished_at: r.finished_at,
        }
    }
}

impl OpHandle {
    pub fn progress(&self, p: Progress) {
        if let Err(e) =
            self.store
                .update_operation_progress(&self.id, Some(&p.stage), p.done, p.total)
        {
            tracing::warn!(op = %self.id, error = %e, "recording progress");
        }
        self.tx.send_modify(|s| s.progress = Some(p));
    }

    pub fn finish(&self, result: Result<(), RpcError>) {
        let outcome = match &result {
            Ok(()) => OperationOutcome::Succeeded,
            Err(e) => OperationOutcome::Failed {
                code: e.code.as_str().to_string(),
                messages: e.messages.clone(),
            },
        };
        if let Err(e) = self.store.finish_operation(&self.id, &outcome) {
            tracing::warn!(op = %self.id, error = %e, "recording the end of an operation");
        }
        self.tx.send_modify(|s| {
            s.progress = None;
            s.finished = Some(result);
        });
    }
}
