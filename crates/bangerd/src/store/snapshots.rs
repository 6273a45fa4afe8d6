//! VM snapshots (`banger vm snapshot`, `banger snapshot …`): one row per
//! snapshot directory `snapshots/<id>/`, which holds its files; and the
//! saved states of VMs suspended to disk (`vm stop --save`), one
//! memory-only snapshot directory each.

use rusqlite::{OptionalExtension as _, Row, named_params};

use super::error::{is_foreign_key_violation, unique_violation};
use super::{Store, StoreError, Tx, Vmm, get_u64, get_word, int, unix_now};

const COLUMNS: &str = "id, name, source_vm, image_id, kernel_id, vmm, vcpus, memory_mib, \
                       disk_bytes, memory_bytes, created_at";

/// A snapshot as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    pub id: String,
    pub name: String,
    /// The VM's name when it was taken.
    pub source_vm: String,
    pub image_id: String,
    pub kernel_id: String,
    pub vmm: Vmm,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// The work disk's size.
    pub disk_bytes: u64,
    pub memory_bytes: u64,
    pub created_at: i64,
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<SnapshotRow> {
    Ok(SnapshotRow {
        id: row.get(0)?,
        name: row.get(1)?,
        source_vm: row.get(2)?,
        image_id: row.get(3)?,
        kernel_id: row.get(4)?,
        vmm: get_word(row, 5)?,
        vcpus: row.get(6)?,
        memory_mib: row.get(7)?,
        disk_bytes: get_u64(row, 8)?,
        memory_bytes: get_u64(row, 9)?,
        created_at: row.get(10)?,
    })
}

impl Tx<'_> {
    /// Record the snapshot `row` (its id chosen by the caller, who made
    /// its directory; `created_at` set here).
    pub fn insert_snapshot(&self, row: &SnapshotRow) -> Result<SnapshotRow, StoreError> {
        let row = SnapshotRow {
            created_at: unix_now(),
            ..row.clone()
        };
        self.conn
            .execute(
                &format!(
                    "INSERT INTO snapshots ({COLUMNS}) VALUES (:id, :name, :source_vm, \
                     :image_id, :kernel_id, :vmm, :vcpus, :memory_mib, :disk_bytes, \
                     :memory_bytes, :created_at)"
                ),
                named_params! {
                    ":id": row.id,
                    ":name": row.name,
                    ":source_vm": row.source_vm,
                    ":image_id": row.image_id,
                    ":kernel_id": row.kernel_id,
                    ":vmm": row.vmm.as_str(),
                    ":vcpus": row.vcpus,
                    ":memory_mib": row.memory_mib,
                    ":disk_bytes": int("disk size", row.disk_bytes)?,
                    ":memory_bytes": int("memory size", row.memory_bytes)?,
                    ":created_at": row.created_at,
                },
            )
            .map_err(|source| match unique_violation(&source) {
                Some("snapshots.name") => StoreError::NameTaken {
                    kind: "snapshot",
                    name: row.name.clone(),
                },
                _ if is_foreign_key_violation(&source) => StoreError::MissingReference {
                    kind: "snapshot",
                    target_kind: "image",
                    id: row.image_id.clone(),
                },
                _ => StoreError::Write {
                    what: format!("snapshot {:?}", row.name),
                    source,
                },
            })?;
        Ok(row)
    }

    pub fn get_snapshot_by_name(&self, name: &str) -> Result<Option<SnapshotRow>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM snapshots WHERE name = ?1"),
                [name],
                from_row,
            )
            .optional()
            .map_err(|source| StoreError::Read {
                what: format!("snapshot {name:?}"),
                source,
            })
    }

    pub fn get_snapshot(&self, id: &str) -> Result<Option<SnapshotRow>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM snapshots WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()
            .map_err(|source| StoreError::Read {
                what: format!("snapshot id {id:?}"),
                source,
            })
    }

    /// All snapshots, by name.
    pub fn list_snapshots(&self) -> Result<Vec<SnapshotRow>, StoreError> {
        let read_err = |source| StoreError::Read {
            what: "snapshots".into(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM snapshots ORDER BY name"))
            .map_err(read_err)?;
        let rows = stmt
            .query_map([], from_row)
            .and_then(|rows| rows.collect())
            .map_err(read_err)?;
        Ok(rows)
    }

    /// Delete a snapshot by id and return its row.
    pub fn delete_snapshot(&self, id: &str) -> Result<SnapshotRow, StoreError> {
        let row = self.get_snapshot(id)?.ok_or_else(|| StoreError::NotFound {
            kind: "snapshot",
            key: id.to_owned(),
        })?;
        self.conn
            .execute("DELETE FROM snapshots WHERE id = ?1", [id])
            .map_err(|source| StoreError::Write {
                what: format!("deletion of snapshot {:?}", row.name),
                source,
            })?;
        Ok(row)
    }
}

impl Tx<'_> {
    /// Record that VM `vm_id` was suspended to disk into snapshot
    /// directory `snapshot_id` (`vm stop --save`), replacing an earlier
    /// record (whose id is returned: its directory is the caller's to
    /// remove).
    pub fn set_saved_state(
        &self,
        vm_id: &str,
        snapshot_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let old = self.saved_state(vm_id)?;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO saved_vms (vm_id, snapshot_id, saved_at) \
                 VALUES (?1, ?2, ?3)",
                (vm_id, snapshot_id, unix_now()),
            )
            .map_err(|source| StoreError::Write {
                what: format!("the saved state of vm {vm_id}"),
                source,
            })?;
        Ok(old)
    }

    /// The snapshot directory of VM `vm_id`'s saved state, if it has one.
    pub fn saved_state(&self, vm_id: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT snapshot_id FROM saved_vms WHERE vm_id = ?1",
                [vm_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|source| StoreError::Read {
                what: format!("the saved state of vm {vm_id}"),
                source,
            })
    }

    /// Forget VM `vm_id`'s saved state and return its directory's id.
    pub fn take_saved_state(&self, vm_id: &str) -> Result<Option<String>, StoreError> {
        let id = self.saved_state(vm_id)?;
        if id.is_some() {
            self.conn
                .execute("DELETE FROM saved_vms WHERE vm_id = ?1", [vm_id])
                .map_err(|source| StoreError::Write {
                    what: format!("the saved state of vm {vm_id}"),
                    source,
                })?;
        }
        Ok(id)
    }

    /// Every saved state's directory id.
    pub fn saved_state_ids(&self) -> Result<Vec<String>, StoreError> {
        let read_err = |source| StoreError::Read {
            what: "saved VM states".into(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare_cached("SELECT snapshot_id FROM saved_vms")
            .map_err(read_err)?;
        let ids = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(read_err)?;
        Ok(ids)
    }
}

impl Store {
    pub fn set_saved_state(
        &self,
        vm_id: &str,
        snapshot_id: &str,
    ) -> Result<Option<String>, StoreError> {
        self.transaction(|tx| tx.set_saved_state(vm_id, snapshot_id))
    }

    pub fn saved_state(&self, vm_id: &str) -> Result<Option<String>, StoreError> {
        self.read(|tx| tx.saved_state(vm_id))
    }

    pub fn take_saved_state(&self, vm_id: &str) -> Result<Option<String>, StoreError> {
        self.transaction(|tx| tx.take_saved_state(vm_id))
    }

    pub fn saved_state_ids(&self) -> Result<Vec<String>, StoreError> {
        self.read(|tx| tx.saved_state_ids())
    }

    pub fn insert_snapshot(&self, row: &SnapshotRow) -> Result<SnapshotRow, StoreError> {
        self.transaction(|tx| tx.insert_snapshot(row))
    }

    pub fn get_snapshot_by_name(&self, name: &str) -> Result<Option<SnapshotRow>, StoreError> {
        self.read(|tx| tx.get_snapshot_by_name(name))
    }

    pub fn list_snapshots(&self) -> Result<Vec<SnapshotRow>, StoreError> {
        self.read(|tx| tx.list_snapshots())
    }

    pub fn delete_snapshot(&self, id: &str) -> Result<SnapshotRow, StoreError> {
        self.transaction(|tx| tx.delete_snapshot(id))
    }
}
