//! VMs and their IP leases.

use std::net::Ipv4Addr;

use rusqlite::{OptionalExtension as _, Row, named_params};

use super::error::{is_foreign_key_violation, unique_violation};
use super::{
    LeaseRow, NewLease, NewVm, Store, StoreError, Tx, VmConfigUpdate, VmRow, VmState, get_u64,
    get_word, int, new_id, unix_now,
};

const VM_COLUMNS: &str = "id, name, image_id, state, state_reason, vmm, vcpus, memory_mib, \
                          disk_bytes, nat, created_at, updated_at";
const LEASE_COLUMNS: &str = "ip, vm_id, mac, leased_at";

fn vm_from_row(row: &Row<'_>) -> rusqlite::Result<VmRow> {
    Ok(VmRow {
        id: row.get(0)?,
        name: row.get(1)?,
        image_id: row.get(2)?,
        state: get_word(row, 3)?,
        state_reason: row.get(4)?,
        vmm: get_word(row, 5)?,
        vcpus: row.get(6)?,
        memory_mib: row.get(7)?,
        disk_bytes: get_u64(row, 8)?,
        nat: row.get(9)?,
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
    })
}

fn lease_from_row(row: &Row<'_>) -> rusqlite::Result<LeaseRow> {
    let ip: String = row.get(0)?;
    let ip = ip.parse::<Ipv4Addr>().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(LeaseRow {
        ip,
        vm_id: row.get(1)?,
        mac: row.get(2)?,
        leased_at: row.get(3)?,
    })
}

impl Tx<'_> {
    /// Record a new VM (state `created`) and its IP lease. Within one
    /// transaction: if the lease cannot be taken, no VM row remains.
    pub fn create_vm_with_lease(
        &self,
        vm: &NewVm,
        lease: &NewLease,
    ) -> Result<(VmRow, LeaseRow), StoreError> {
        let now = unix_now();
        let row = VmRow {
            id: new_id()?,
            name: vm.name.clone(),
            image_id: vm.image_id.clone(),
            state: VmState::Created,
            state_reason: None,
            vmm: vm.vmm,
            vcpus: vm.vcpus,
            memory_mib: vm.memory_mib,
            disk_bytes: vm.disk_bytes,
            nat: vm.nat,
            created_at: now,
            updated_at: now,
        };
        self.conn
            .execute(
                &format!(
                    "INSERT INTO vms ({VM_COLUMNS}) VALUES (:id, :name, :image_id, :state, \
                     :state_reason, :vmm, :vcpus, :memory_mib, :disk_bytes, :nat, :created_at, \
                     :updated_at)"
                ),
                named_params! {
                    ":id": row.id,
                    ":name": row.name,
                    ":image_id": row.image_id,
                    ":state": row.state.as_str(),
                    ":state_reason": row.state_reason,
                    ":vmm": row.vmm.as_str(),
                    ":vcpus": row.vcpus,
                    ":memory_mib": row.memory_mib,
                    ":disk_bytes": int("disk size", row.disk_bytes)?,
                    ":nat": row.nat,
                    ":created_at": row.created_at,
                    ":updated_at": row.updated_at,
                },
            )
            .map_err(|source| match unique_violation(&source) {
                Some("vms.name") => StoreError::NameTaken {
                    kind: "vm",
                    name: vm.name.clone(),
                },
                _ if is_foreign_key_violation(&source) => StoreError::MissingReference {
                    kind: "vm",
                    target_kind: "image",
                    id: vm.image_id.clone(),
                },
                _ => StoreError::Write {
                    what: format!("vm {:?}", vm.name),
                    source,
                },
            })?;

        let lease = LeaseRow {
            ip: lease.ip,
            vm_id: row.id.clone(),
            mac: lease.mac.clone(),
            leased_at: now,
        };
        self.conn
            .execute(
                &format!("INSERT INTO ip_leases ({LEASE_COLUMNS}) VALUES (?1, ?2, ?3, ?4)"),
                (
                    lease.ip.to_string(),
                    &lease.vm_id,
                    &lease.mac,
                    lease.leased_at,
                ),
            )
            .map_err(|source| match unique_violation(&source) {
                Some("ip_leases.ip") => StoreError::IpTaken { ip: lease.ip },
                Some("ip_leases.mac") => StoreError::MacTaken {
                    mac: lease.mac.clone(),
                },
                _ => StoreError::Write {
                    what: format!("IP lease {} for vm {:?}", lease.ip, vm.name),
                    source,
                },
            })?;
        Ok((row, lease))
    }

    pub fn get_vm(&self, id: &str) -> Result<Option<VmRow>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {VM_COLUMNS} FROM vms WHERE id = ?1"),
                [id],
                vm_from_row,
            )
            .optional()
            .map_err(|source| StoreError::Read {
                what: format!("vm id {id:?}"),
                source,
            })
    }

    pub fn get_vm_by_name(&self, name: &str) -> Result<Option<VmRow>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {VM_COLUMNS} FROM vms WHERE name = ?1"),
                [name],
                vm_from_row,
            )
            .optional()
            .map_err(|source| StoreError::Read {
                what: format!("vm {name:?}"),
                source,
            })
    }

    /// All VMs, by name.
    pub fn list_vms(&self) -> Result<Vec<VmRow>, StoreError> {
        let read_err = |source| StoreError::Read {
            what: "vms".into(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {VM_COLUMNS} FROM vms ORDER BY name"))
            .map_err(read_err)?;
        let rows = stmt
            .query_map([], vm_from_row)
            .and_then(|rows| rows.collect())
            .map_err(read_err)?;
        Ok(rows)
    }

    /// Compare-and-set of a VM's state: moves it from `from` to `to` (with
    /// `reason`, which replaces any previous one) and returns the updated row.
    /// If the VM is not in `from`, nothing changes and the error names the
    /// state it is in. Which transitions are legal is the VM service's
    /// business, not the store's.
    pub fn set_vm_state(
        &self,
        id: &str,
        from: VmState,
        to: VmState,
        reason: Option<&str>,
    ) -> Result<VmRow, StoreError> {
        let changed = self
            .conn
            .execute(
                "UPDATE vms SET state = :to, state_reason = :reason, updated_at = :now \
                 WHERE id = :id AND state = :from",
                named_params! {
                    ":to": to.as_str(),
                    ":reason": reason,
                    ":now": unix_now(),
                    ":id": id,
                    ":from": from.as_str(),
                },
            )
            .map_err(|source| StoreError::Write {
                what: format!("state {to} of vm id {id:?}"),
                source,
            })?;
        self.guarded_result(id, changed, from)
    }

    /// Change a VM's resources and NAT (only while it is in `state`, which
    /// the caller read under the VM's lock).
    pub fn update_vm_config(
        &self,
        id: &str,
        state: VmState,
        cfg: &VmConfigUpdate,
    ) -> Result<VmRow, StoreError> {
        let changed = self
            .conn
            .execute(
                "UPDATE vms SET vcpus = :vcpus, memory_mib = :memory_mib, disk_bytes = :disk, \
                 nat = :nat, updated_at = :now WHERE id = :id AND state = :state",
                named_params! {
                    ":vcpus": cfg.vcpus,
                    ":memory_mib": cfg.memory_mib,
                    ":disk": int("disk size", cfg.disk_bytes)?,
                    ":nat": cfg.nat,
                    ":now": unix_now(),
                    ":id": id,
                    ":state": state.as_str(),
                },
            )
            .map_err(|source| StoreError::Write {
                what: format!("settings of vm id {id:?}"),
                source,
            })?;
        self.guarded_result(id, changed, state)
    }

    /// The row after an `UPDATE … WHERE id = ? AND state = expected` that
    /// changed `changed` rows: the updated VM, or the state it is really in.
    fn guarded_result(
        &self,
        id: &str,
        changed: usize,
        expected: VmState,
    ) -> Result<VmRow, StoreError> {
        let vm = self.get_vm(id)?.ok_or_else(|| StoreError::NotFound {
            kind: "vm",
            key: id.to_owned(),
        })?;
        if changed == 0 {
            return Err(StoreError::VmStateConflict {
                name: vm.name,
                expected,
                current: vm.state,
            });
        }
        Ok(vm)
    }

    /// Delete a VM by id and return its row; its IP lease goes with it and
    /// its operations keep their history with the VM reference cleared.
    pub fn delete_vm(&self, id: &str) -> Result<VmRow, StoreError> {
        let vm = self.get_vm(id)?.ok_or_else(|| StoreError::NotFound {
            kind: "vm",
            key: id.to_owned(),
        })?;
        self.conn
            .execute("DELETE FROM vms WHERE id = ?1", [id])
            .map_err(|source| StoreError::Write {
                what: format!("deletion of vm {:?}", vm.name),
                source,
            })?;
        Ok(vm)
    }

    pub fn get_lease(&self, vm_id: &str) -> Result<Option<LeaseRow>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {LEASE_COLUMNS} FROM ip_leases WHERE vm_id = ?1"),
                [vm_id],
                lease_from_row,
            )
            .optional()
            .map_err(|source| StoreError::Read {
                what: format!("IP lease of vm id {vm_id:?}"),
                source,
            })
    }

    /// All leases, by address.
    pub fn leases(&self) -> Result<Vec<LeaseRow>, StoreError> {
        let read_err = |source| StoreError::Read {
            what: "IP leases".into(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {LEASE_COLUMNS} FROM ip_leases"))
            .map_err(read_err)?;
        let mut rows: Vec<LeaseRow> = stmt
            .query_map([], lease_from_row)
            .and_then(|rows| rows.collect())
            .map_err(read_err)?;
        rows.sort_by_key(|l| l.ip);
        Ok(rows)
    }

    /// Every leased address, ascending.
    pub fn leased_ips(&self) -> Result<Vec<Ipv4Addr>, StoreError> {
        Ok(self.leases()?.into_iter().map(|l| l.ip).collect())
    }
}

impl Store {
    pub fn create_vm_with_lease(
        &self,
        vm: &NewVm,
        lease: &NewLease,
    ) -> Result<(VmRow, LeaseRow), StoreError> {
        self.transaction(|tx| tx.create_vm_with_lease(vm, lease))
    }

    pub fn get_vm(&self, id: &str) -> Result<Option<VmRow>, StoreError> {
        self.read(|tx| tx.get_vm(id))
    }

    pub fn get_vm_by_name(&self, name: &str) -> Result<Option<VmRow>, StoreError> {
        self.read(|tx| tx.get_vm_by_name(name))
    }

    pub fn list_vms(&self) -> Result<Vec<VmRow>, StoreError> {
        self.read(|tx| tx.list_vms())
    }

    pub fn set_vm_state(
        &self,
        id: &str,
        from: VmState,
        to: VmState,
        reason: Option<&str>,
    ) -> Result<VmRow, StoreError> {
        self.transaction(|tx| tx.set_vm_state(id, from, to, reason))
    }

    pub fn delete_vm(&self, id: &str) -> Result<VmRow, StoreError> {
        self.transaction(|tx| tx.delete_vm(id))
    }

    pub fn update_vm_config(
        &self,
        id: &str,
        state: VmState,
        cfg: &VmConfigUpdate,
    ) -> Result<VmRow, StoreError> {
        self.transaction(|tx| tx.update_vm_config(id, state, cfg))
    }

    pub fn get_lease(&self, vm_id: &str) -> Result<Option<LeaseRow>, StoreError> {
        self.read(|tx| tx.get_lease(vm_id))
    }

    pub fn leases(&self) -> Result<Vec<LeaseRow>, StoreError> {
        self.read(|tx| tx.leases())
    }

    pub fn leased_ips(&self) -> Result<Vec<Ipv4Addr>, StoreError> {
        self.read(|tx| tx.leased_ips())
    }
}
