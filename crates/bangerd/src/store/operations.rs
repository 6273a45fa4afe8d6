//! Asynchronous operations (VM create and friends) and their progress.

use rusqlite::{OptionalExtension as _, Row, named_params};

use super::error::is_foreign_key_violation;
use super::{
    NewOperation, OperationOutcome, OperationRow, OperationState, Store, StoreError, Tx,
    get_opt_u64, get_u64, get_word, int, new_id, unix_now,
};

const OP_COLUMNS: &str = "id, kind, vm_id, state, stage, done, total, error_code, \
                          error_messages, created_at, updated_at, finished_at";

fn op_from_row(row: &Row<'_>) -> rusqlite::Result<OperationRow> {
    let messages: Option<String> = row.get(8)?;
    let error_messages = messages
        .map(|m| {
            serde_json::from_str::<Vec<String>>(&m).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    8,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })
        })
        .transpose()?;
    Ok(OperationRow {
        id: row.get(0)?,
        kind: get_word(row, 1)?,
        vm_id: row.get(2)?,
        state: get_word(row, 3)?,
        stage: row.get(4)?,
        done: get_u64(row, 5)?,
        total: get_opt_u64(row, 6)?,
        error_code: row.get(7)?,
        error_messages,
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
        finished_at: row.get(11)?,
    })
}

impl Tx<'_> {
    /// Record a new operation in state `running`, with no progress yet.
    pub fn insert_operation(&self, op: &NewOperation) -> Result<OperationRow, StoreError> {
        let now = unix_now();
        let row = OperationRow {
            id: new_id()?,
            kind: op.kind,
            vm_id: op.vm_id.clone(),
            state: OperationState::Running,
            stage: op.stage.clone(),
            done: 0,
            total: op.total,
            error_code: None,
            error_messages: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
        };
        let total = op.total.map(|t| int("operation total", t)).transpose()?;
        self.conn
            .execute(
                "INSERT INTO operations (id, kind, vm_id, state, stage, done, total, \
                 created_at, updated_at) \
                 VALUES (:id, :kind, :vm_id, :state, :stage, 0, :total, :now, :now)",
                named_params! {
                    ":id": row.id,
                    ":kind": row.kind.as_str(),
                    ":vm_id": row.vm_id,
                    ":state": row.state.as_str(),
                    ":stage": row.stage,
                    ":total": total,
                    ":now": now,
                },
            )
            .map_err(|source| {
                if is_foreign_key_violation(&source) {
                    StoreError::MissingReference {
                        kind: "operation",
                        target_kind: "vm",
                        id: op.vm_id.clone().unwrap_or_default(),
                    }
                } else {
                    StoreError::Write {
                        what: format!("{} operation", op.kind),
                        source,
                    }
                }
            })?;
        Ok(row)
    }

    /// Record progress of a running operation: `stage` and `total` replace
    /// the stored values (`None` clears them). Refused with
    /// [`StoreError::OperationFinished`] once the operation has finished.
    pub fn update_operation_progress(
        &self,
        id: &str,
        stage: Option<&str>,
        done: u64,
        total: Option<u64>,
    ) -> Result<(), StoreError> {
        let changed = self
            .conn
            .execute(
                "UPDATE operations SET stage = :stage, done = :done, total = :total, \
                 updated_at = :now WHERE id = :id AND state = 'running'",
                named_params! {
                    ":stage": stage,
                    ":done": int("operation progress", done)?,
                    ":total": total.map(|t| int("operation total", t)).transpose()?,
                    ":now": unix_now(),
                    ":id": id,
                },
            )
            .map_err(|source| StoreError::Write {
                what: format!("progress of operation {id}"),
                source,
            })?;
        if changed == 0 {
            return Err(self.not_running(id)?);
        }
        Ok(())
    }

    /// Mark a running operation finished and return its final row.
    pub fn finish_operation(
        &self,
        id: &str,
        outcome: &OperationOutcome,
    ) -> Result<OperationRow, StoreError> {
        let (state, code, messages) = match outcome {
            OperationOutcome::Succeeded => (OperationState::Succeeded, None, None),
            OperationOutcome::Failed { code, messages } => (
                OperationState::Failed,
                Some(code.as_str()),
                Some(serde_json::Value::from(messages.clone()).to_string()),
            ),
        };
        let now = unix_now();
        let changed = self
            .conn
            .execute(
                "UPDATE operations SET state = :state, error_code = :code, \
                 error_messages = :messages, updated_at = :now, finished_at = :now \
                 WHERE id = :id AND state = 'running'",
                named_params! {
                    ":state": state.as_str(),
                    ":code": code,
                    ":messages": messages,
                    ":now": now,
                    ":id": id,
                },
            )
            .map_err(|source| StoreError::Write {
                what: format!("outcome of operation {id}"),
                source,
            })?;
        if changed == 0 {
            return Err(self.not_running(id)?);
        }
        self.get_operation(id)?.ok_or_else(|| StoreError::NotFound {
            kind: "operation",
            key: id.to_owned(),
        })
    }

    /// Fail every operation still marked running: at startup these are the
    /// ones a previous daemon was running when it died. Returns how many.
    pub fn fail_interrupted_operations(
        &self,
        code: &str,
        messages: &[String],
    ) -> Result<usize, StoreError> {
        let now = unix_now();
        self.conn
            .execute(
                "UPDATE operations SET state = 'failed', error_code = :code, \
                 error_messages = :messages, updated_at = :now, finished_at = :now \
                 WHERE state = 'running'",
                named_params! {
                    ":code": code,
                    ":messages": serde_json::Value::from(messages.to_vec()).to_string(),
                    ":now": now,
                },
            )
            .map_err(|source| StoreError::Write {
                what: "interrupted operations".into(),
                source,
            })
    }

    pub fn get_operation(&self, id: &str) -> Result<Option<OperationRow>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {OP_COLUMNS} FROM operations WHERE id = ?1"),
                [id],
                op_from_row,
            )
            .optional()
            .map_err(|source| StoreError::Read {
                what: format!("operation {id}"),
                source,
            })
    }

    /// All operations, newest first.
    pub fn list_operations(&self) -> Result<Vec<OperationRow>, StoreError> {
        let read_err = |source| StoreError::Read {
            what: "operations".into(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {OP_COLUMNS} FROM operations ORDER BY created_at DESC, rowid DESC"
            ))
            .map_err(read_err)?;
        let rows = stmt
            .query_map([], op_from_row)
            .and_then(|rows| rows.collect())
            .map_err(read_err)?;
        Ok(rows)
    }

    /// Delete operations that finished before `older_than` (unix seconds).
    /// Running operations are never pruned. Returns how many were deleted.
    pub fn prune_finished_operations(&self, older_than: i64) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM operations WHERE finished_at IS NOT NULL AND finished_at < ?1",
                [older_than],
            )
            .map_err(|source| StoreError::Write {
                what: "pruning of finished operations".into(),
                source,
            })
    }

    /// The error for an update that matched no running operation.
    fn not_running(&self, id: &str) -> Result<StoreError, StoreError> {
        Ok(match self.get_operation(id)? {
            None => StoreError::NotFound {
                kind: "operation",
                key: id.to_owned(),
            },
            Some(op) => StoreError::OperationFinished {
                id: id.to_owned(),
                state: op.state,
            },
        })
    }
}

impl Store {
    pub fn insert_operation(&self, op: &NewOperation) -> Result<OperationRow, StoreError> {
        self.transaction(|tx| tx.insert_operation(op))
    }

    pub fn update_operation_progress(
        &self,
        id: &str,
        stage: Option<&str>,
        done: u64,
        total: Option<u64>,
    ) -> Result<(), StoreError> {
        self.transaction(|tx| tx.update_operation_progress(id, stage, done, total))
    }

    pub fn finish_operation(
        &self,
        id: &str,
        outcome: &OperationOutcome,
    ) -> Result<OperationRow, StoreError> {
        self.transaction(|tx| tx.finish_operation(id, outcome))
    }

    pub fn fail_interrupted_operations(
        &self,
        code: &str,
        messages: &[String],
    ) -> Result<usize, StoreError> {
        self.transaction(|tx| tx.fail_interrupted_operations(code, messages))
    }

    pub fn get_operation(&self, id: &str) -> Result<Option<OperationRow>, StoreError> {
        self.read(|tx| tx.get_operation(id))
    }

    pub fn list_operations(&self) -> Result<Vec<OperationRow>, StoreError> {
        self.read(|tx| tx.list_operations())
    }

    pub fn prune_finished_operations(&self, older_than: i64) -> Result<usize, StoreError> {
        self.transaction(|tx| tx.prune_finished_operations(older_than))
    }
}
