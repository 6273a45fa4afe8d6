//! The warm pool (issue #15 item 2, `vm::pool`): which VMs are pooled
//! clones (hidden from the owner until a create takes one) and each
//! image's pool snapshot (hidden from `snapshot ls`).

use rusqlite::{OptionalExtension as _, named_params};

use super::{SnapshotRow, Store, StoreError, Tx, VmRow, VmState, unix_now};

/// A pooled clone as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolVmRow {
    pub vm_id: String,
    pub image_id: String,
    /// Restored, personalised and paused: a create may take it.
    pub ready: bool,
    pub created_at: i64,
}

/// What a create asks of the clone it takes: the VM it would have made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolWant<'a> {
    pub image_id: &'a str,
    pub vmm: super::Vmm,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub disk_bytes: u64,
    pub nat: bool,
}

impl PoolWant<'_> {
    /// Whether VM `vm` is the VM this describes.
    pub fn is(&self, vm: &VmRow) -> bool {
        vm.image_id == self.image_id
            && vm.vmm == self.vmm
            && vm.vcpus == self.vcpus
            && vm.memory_mib == self.memory_mib
            && vm.disk_bytes == self.disk_bytes
            && vm.nat == self.nat
    }
}

fn read_err(what: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Read {
        what: what.to_string(),
        source,
    }
}

fn write_err(what: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Write {
        what: what.to_string(),
        source,
    }
}

impl Tx<'_> {
    /// Mark VM `vm_id` (just created, in this transaction) a pooled clone
    /// of image `image_id`, not yet ready.
    pub fn add_pool_vm(&self, vm_id: &str, image_id: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO pool_vms (vm_id, image_id, ready, created_at) VALUES (?1, ?2, 0, ?3)",
                (vm_id, image_id, unix_now()),
            )
            .map_err(write_err("a pooled VM"))?;
        Ok(())
    }

    /// Every pooled clone, oldest first.
    pub fn pool_vms(&self) -> Result<Vec<PoolVmRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT vm_id, image_id, ready, created_at FROM pool_vms ORDER BY created_at, vm_id",
            )
            .map_err(read_err("pooled VMs"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(PoolVmRow {
                    vm_id: r.get(0)?,
                    image_id: r.get(1)?,
                    ready: r.get(2)?,
                    created_at: r.get(3)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(read_err("pooled VMs"))?;
        Ok(rows)
    }

    /// Whether VM `vm_id` is a pooled clone (not the owner's yet).
    pub fn is_pooled(&self, vm_id: &str) -> Result<bool, StoreError> {
        self.conn
            .query_row("SELECT 1 FROM pool_vms WHERE vm_id = ?1", [vm_id], |_| {
                Ok(())
            })
            .optional()
            .map(|r| r.is_some())
            .map_err(read_err("a pooled VM"))
    }

    pub fn set_pool_vm_ready(&self, vm_id: &str) -> Result<(), StoreError> {
        let n = self
            .conn
            .execute("UPDATE pool_vms SET ready = 1 WHERE vm_id = ?1", [vm_id])
            .map_err(write_err("a pooled VM"))?;
        if n == 0 {
            return Err(StoreError::NotFound {
                kind: "pooled vm",
                key: vm_id.to_string(),
            });
        }
        Ok(())
    }

    /// The ready, paused clones that are the VM `want` describes, oldest
    /// first.
    pub fn pool_candidates(&self, want: &PoolWant<'_>) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT p.vm_id FROM pool_vms p JOIN vms v ON v.id = p.vm_id \
                 WHERE p.ready = 1 AND p.image_id = :image AND v.state = :paused \
                 AND v.vmm = :vmm AND v.vcpus = :vcpus AND v.memory_mib = :mem \
                 AND v.disk_bytes = :disk AND v.nat = :nat \
                 ORDER BY p.created_at, p.vm_id",
            )
            .map_err(read_err("pooled VMs"))?;
        let ids = stmt
            .query_map(
                named_params! {
                    ":image": want.image_id,
                    ":paused": VmState::Paused.as_str(),
                    ":vmm": want.vmm.as_str(),
                    ":vcpus": want.vcpus,
                    ":mem": want.memory_mib,
                    ":disk": super::int("disk size", want.disk_bytes)?,
                    ":nat": want.nat,
                },
                |r| r.get(0),
            )
            .and_then(|rows| rows.collect())
            .map_err(read_err("pooled VMs"))?;
        Ok(ids)
    }

    /// Take pooled clone `vm_id` if it is still ready and paused: out of
    /// the pool and renamed `name`, in one step. Its old name and its row;
    /// `None` when it is not (or `name` is taken).
    pub fn take_pooled(
        &self,
        vm_id: &str,
        name: &str,
    ) -> Result<Option<(String, VmRow)>, StoreError> {
        let ready: Option<bool> = self
            .conn
            .query_row(
                "SELECT ready FROM pool_vms WHERE vm_id = ?1",
                [vm_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(read_err("a pooled VM"))?;
        let Some(old) = self.get_vm(vm_id)? else {
            return Ok(None);
        };
        if ready != Some(true)
            || old.state != VmState::Paused
            || self.get_vm_by_name(name)?.is_some()
        {
            return Ok(None);
        }
        self.conn
            .execute("DELETE FROM pool_vms WHERE vm_id = ?1", [vm_id])
            .map_err(write_err("a pooled VM"))?;
        self.conn
            .execute(
                "UPDATE vms SET name = ?1, updated_at = ?2 WHERE id = ?3",
                (name, unix_now(), vm_id),
            )
            .map_err(write_err("a pooled VM's new name"))?;
        Ok(self.get_vm(vm_id)?.map(|row| (old.name, row)))
    }

    /// Image `image_id`'s pool snapshot, if it has one.
    pub fn pool_base(&self, image_id: &str) -> Result<Option<SnapshotRow>, StoreError> {
        let id: Option<String> = self
            .conn
            .query_row(
                "SELECT snapshot_id FROM pool_bases WHERE image_id = ?1",
                [image_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(read_err("a pool snapshot"))?;
        match id {
            Some(id) => self.get_snapshot(&id),
            None => Ok(None),
        }
    }

    /// The ids of every pool snapshot.
    pub fn pool_base_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT snapshot_id FROM pool_bases")
            .map_err(read_err("pool snapshots"))?;
        let ids = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(read_err("pool snapshots"))?;
        Ok(ids)
    }

    /// Record snapshot `row` as its image's pool snapshot.
    pub fn insert_pool_base(&self, row: &SnapshotRow) -> Result<SnapshotRow, StoreError> {
        let row = self.insert_snapshot(row)?;
        self.conn
            .execute(
                "INSERT INTO pool_bases (image_id, snapshot_id) VALUES (?1, ?2)",
                (&row.image_id, &row.id),
            )
            .map_err(write_err("a pool snapshot"))?;
        Ok(row)
    }
}

impl Store {
    /// Create pooled clone `vm` with its lease, in one transaction.
    pub fn create_pool_vm(
        &self,
        vm: &super::NewVm,
        lease: &super::NewLease,
    ) -> Result<VmRow, StoreError> {
        self.transaction(|tx| {
            let (row, _) = tx.create_vm_with_lease(vm, lease)?;
            tx.add_pool_vm(&row.id, &vm.image_id)?;
            Ok(row)
        })
    }

    pub fn pool_vms(&self) -> Result<Vec<PoolVmRow>, StoreError> {
        self.read(|tx| tx.pool_vms())
    }

    pub fn is_pooled(&self, vm_id: &str) -> Result<bool, StoreError> {
        self.read(|tx| tx.is_pooled(vm_id))
    }

    pub fn set_pool_vm_ready(&self, vm_id: &str) -> Result<(), StoreError> {
        self.transaction(|tx| tx.set_pool_vm_ready(vm_id))
    }

    pub fn pool_candidates(&self, want: &PoolWant<'_>) -> Result<Vec<String>, StoreError> {
        self.read(|tx| tx.pool_candidates(want))
    }

    pub fn take_pooled(
        &self,
        vm_id: &str,
        name: &str,
    ) -> Result<Option<(String, VmRow)>, StoreError> {
        self.transaction(|tx| tx.take_pooled(vm_id, name))
    }

    pub fn pool_base(&self, image_id: &str) -> Result<Option<SnapshotRow>, StoreError> {
        self.read(|tx| tx.pool_base(image_id))
    }

    pub fn pool_base_ids(&self) -> Result<Vec<String>, StoreError> {
        self.read(|tx| tx.pool_base_ids())
    }

    pub fn insert_pool_base(&self, row: &SnapshotRow) -> Result<SnapshotRow, StoreError> {
        self.transaction(|tx| tx.insert_pool_base(row))
    }
}
