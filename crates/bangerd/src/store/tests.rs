//! Store tests on real SQLite files in temp dirs.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use banger_proto::error::chain;

use super::*;

fn temp_store() -> (tempfile::TempDir, PathBuf, Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state").join("store.db");
    let store = Store::open(&path).unwrap();
    (dir, path, store)
}

fn render(err: &StoreError) -> String {
    chain(err).join(": ")
}

fn new_kernel(name: &str) -> NewKernel {
    NewKernel {
        name: name.into(),
        arch: "x86_64".into(),
        kernel_path: format!("/var/lib/banger/kernels/{name}/vmlinux").into(),
        initrd_path: None,
        sha256: "ab".repeat(32),
        source: KernelSource::Import,
    }
}

fn new_image(name: &str, kernel_id: &str) -> NewImage {
    NewImage {
        name: name.into(),
        rootfs_path: format!("/var/lib/banger/images/{name}/rootfs.ext4").into(),
        kernel_id: kernel_id.into(),
        size_bytes: 1 << 30,
        source: ImageSource::Register,
        source_ref: None,
        work_seed_path: None,
    }
}

fn new_vm(name: &str, image_id: &str) -> NewVm {
    NewVm {
        name: name.into(),
        image_id: image_id.into(),
        vmm: Vmm::Firecracker,
        vcpus: 2,
        memory_mib: 1024,
        disk_bytes: 8 << 30,
        nat: true,
    }
}

fn lease(last: u8) -> NewLease {
    NewLease {
        ip: Ipv4Addr::new(172, 30, 0, last),
        mac: format!("02:00:ac:1e:00:{last:02x}"),
    }
}

/// A store with one kernel and one image.
fn seeded() -> (tempfile::TempDir, PathBuf, Store, ImageRow) {
    let (dir, path, store) = temp_store();
    let kernel = store.insert_kernel(&new_kernel("k1")).unwrap();
    let image = store
        .insert_image(&new_image("debian", &kernel.id))
        .unwrap();
    (dir, path, store, image)
}

fn raw_user_version(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn open_migrates_an_empty_file_and_sets_user_version() {
    let (dir, path, store) = temp_store();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.path(), path);
    let mode = std::fs::metadata(dir.path().join("state"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    drop(store);
    assert_eq!(raw_user_version(&path), SCHEMA_VERSION as i64);
}

#[test]
fn reopening_is_idempotent_and_keeps_data() {
    let (_dir, path, store, image) = seeded();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.get_image_by_name("debian").unwrap(), Some(image));
    assert_eq!(store.list_kernels().unwrap().len(), 1);
}

#[test]
fn wal_and_foreign_keys_are_on() {
    let (_dir, path, store) = temp_store();
    {
        let conn = store.lock();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
    }
    store.insert_kernel(&new_kernel("k")).unwrap();
    let wal = path.with_file_name("store.db-wal");
    assert!(wal.exists(), "{} missing after a write", wal.display());
}

#[test]
fn garbage_file_is_refused_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let garbage = b"this is not an SQLite database, just some bytes\n".repeat(100);
    std::fs::write(&path, &garbage).unwrap();
    let err = Store::open(&path).unwrap_err();
    let text = render(&err);
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{text}");
    assert_eq!(
        text,
        format!("opening store {}: file is not a database", path.display())
    );
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
}

#[test]
fn newer_schema_is_refused_and_left_untouched() {
    let (_dir, path, store) = temp_store();
    drop(store);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 7).unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { found: 7, .. }));
    assert_eq!(
        render(&err),
        format!(
            "store {} has schema version 7, this bangerd knows up to {SCHEMA_VERSION}; \
             upgrade banger",
            path.display()
        )
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(raw_user_version(&path), 7);
}

#[test]
fn foreign_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE notes (body TEXT)")
            .unwrap();
    }
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::Foreign { .. }),
        "{}",
        render(&err)
    );
}

#[test]
fn failed_lease_leaves_no_vm_row() {
    let (_dir, _path, store, image) = seeded();
    store
        .create_vm_with_lease(&new_vm("a", &image.id), &lease(2))
        .unwrap();

    let mut dup_ip = lease(2);
    dup_ip.mac = lease(9).mac;
    let err = store
        .create_vm_with_lease(&new_vm("b", &image.id), &dup_ip)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::IpTaken { ip } if ip == Ipv4Addr::new(172, 30, 0, 2)),
        "{}",
        render(&err)
    );
    assert_eq!(render(&err), "IP address 172.30.0.2 is already leased");
    assert_eq!(store.get_vm_by_name("b").unwrap(), None);

    let mut dup_mac = lease(3);
    dup_mac.mac = lease(2).mac;
    let err = store
        .create_vm_with_lease(&new_vm("c", &image.id), &dup_mac)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::MacTaken { .. }),
        "{}",
        render(&err)
    );
    assert_eq!(store.get_vm_by_name("c").unwrap(), None);
    assert_eq!(store.list_vms().unwrap().len(), 1);
    assert_eq!(
        store.leased_ips().unwrap(),
        vec![Ipv4Addr::new(172, 30, 0, 2)]
    );
}

#[test]
fn transaction_rolls_back_on_error() {
    let (_dir, _path, store) = temp_store();
    let result: Result<(), StoreError> = store.transaction(|tx| {
        tx.insert_kernel(&new_kernel("k1"))?;
        tx.insert_kernel(&new_kernel("k1"))?;
        Ok(())
    });
    assert!(matches!(result, Err(StoreError::NameTaken { .. })));
    assert!(store.list_kernels().unwrap().is_empty());
}

#[test]
fn state_change_is_compare_and_set() {
    let (_dir, _path, store, image) = seeded();
    let (vm, _) = store
        .create_vm_with_lease(&new_vm("dev", &image.id), &lease(2))
        .unwrap();
    assert_eq!(vm.state, VmState::Created);

    let vm = store
        .set_vm_state(&vm.id, VmState::Created, VmState::Starting, None)
        .unwrap();
    assert_eq!(vm.state, VmState::Starting);

    let err = store
        .set_vm_state(&vm.id, VmState::Created, VmState::Running, None)
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::VmStateConflict {
            current: VmState::Starting,
            ..
        }
    ));
    assert_eq!(render(&err), "vm \"dev\" is starting, not created");

    let vm = store
        .set_vm_state(
            &vm.id,
            VmState::Starting,
            VmState::Failed,
            Some("boot timed out"),
        )
        .unwrap();
    assert_eq!(vm.state_reason.as_deref(), Some("boot timed out"));
    assert_eq!(store.get_vm(&vm.id).unwrap(), Some(vm));

    let err = store
        .set_vm_state("nope", VmState::Created, VmState::Starting, None)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { kind: "vm", .. }));
}

#[test]
fn duplicate_names_are_typed_errors() {
    let (_dir, _path, store, image) = seeded();
    let err = store.insert_kernel(&new_kernel("k1")).unwrap_err();
    assert!(matches!(err, StoreError::NameTaken { kind: "kernel", .. }));
    assert_eq!(render(&err), "a kernel named \"k1\" already exists");

    let err = store
        .insert_image(&new_image("debian", &image.kernel_id))
        .unwrap_err();
    assert!(matches!(err, StoreError::NameTaken { kind: "image", .. }));

    store
        .create_vm_with_lease(&new_vm("dev", &image.id), &lease(2))
        .unwrap();
    let err = store
        .create_vm_with_lease(&new_vm("dev", &image.id), &lease(3))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NameTaken { kind: "vm", name } if name == "dev"),
        "{}",
        render(&err)
    );
}

#[test]
fn missing_references_are_typed_errors() {
    let (_dir, _path, store) = temp_store();
    let err = store
        .insert_image(&new_image("x", "no-such-kernel"))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::MissingReference { target_kind: "kernel", id, .. } if id == "no-such-kernel"),
        "{}",
        render(&err)
    );
    let err = store
        .create_vm_with_lease(&new_vm("dev", "no-such-image"), &lease(2))
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::MissingReference {
            target_kind: "image",
            ..
        }
    ));
}

#[test]
fn deleting_a_vm_frees_its_lease() {
    let (_dir, _path, store, image) = seeded();
    let (vm, l) = store
        .create_vm_with_lease(&new_vm("dev", &image.id), &lease(2))
        .unwrap();
    assert_eq!(store.get_lease(&vm.id).unwrap(), Some(l));
    assert_eq!(store.delete_vm(&vm.id).unwrap().name, "dev");
    assert!(store.leased_ips().unwrap().is_empty());
    assert_eq!(store.get_lease(&vm.id).unwrap(), None);
    // The address and the name are free again.
    store
        .create_vm_with_lease(&new_vm("dev", &image.id), &lease(2))
        .unwrap();
    let err = store.delete_vm(&vm.id).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { kind: "vm", .. }));
}

#[test]
fn images_and_kernels_in_use_cannot_be_deleted() {
    let (_dir, _path, store, image) = seeded();
    for (name, last) in [("web", 3), ("db", 2)] {
        store
            .create_vm_with_lease(&new_vm(name, &image.id), &lease(last))
            .unwrap();
    }
    let err = store.delete_image(&image.id).unwrap_err();
    assert!(
        matches!(&err, StoreError::InUse { used_by, .. } if used_by == &["db", "web"]),
        "{}",
        render(&err)
    );
    assert_eq!(
        render(&err),
        "image \"debian\" is still used by vms db, web"
    );

    let err = store.delete_kernel(&image.kernel_id).unwrap_err();
    assert_eq!(render(&err), "kernel \"k1\" is still used by image debian");

    for vm in store.list_vms().unwrap() {
        store.delete_vm(&vm.id).unwrap();
    }
    store.delete_image(&image.id).unwrap();
    store.delete_kernel(&image.kernel_id).unwrap();
    assert!(store.list_images().unwrap().is_empty());
    assert!(store.list_kernels().unwrap().is_empty());
}

#[test]
fn operations_track_progress_and_outcome() {
    let (_dir, _path, store, image) = seeded();
    let (vm, _) = store
        .create_vm_with_lease(&new_vm("dev", &image.id), &lease(2))
        .unwrap();
    let op = store
        .insert_operation(&NewOperation {
            kind: OpKind::VmCreate,
            vm_id: Some(vm.id.clone()),
            stage: Some("preparing".into()),
            total: None,
        })
        .unwrap();
    assert_eq!(op.state, OperationState::Running);
    assert_eq!(store.get_operation(&op.id).unwrap(), Some(op.clone()));

    store
        .update_operation_progress(&op.id, Some("copying disk"), 10, Some(100))
        .unwrap();
    let row = store.get_operation(&op.id).unwrap().unwrap();
    assert_eq!(
        (row.stage.as_deref(), row.done, row.total),
        (Some("copying disk"), 10, Some(100))
    );

    let outcome = OperationOutcome::Failed {
        code: "internal".into(),
        messages: vec!["starting vm dev".into(), "boot timed out".into()],
    };
    let done = store.finish_operation(&op.id, &outcome).unwrap();
    assert_eq!(done.state, OperationState::Failed);
    assert_eq!(done.error_code.as_deref(), Some("internal"));
    assert_eq!(
        done.error_messages,
        Some(vec![
            "starting vm dev".to_string(),
            "boot timed out".to_string()
        ])
    );
    assert!(done.finished_at.is_some());

    let err = store
        .update_operation_progress(&op.id, None, 11, None)
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::OperationFinished {
            state: OperationState::Failed,
            ..
        }
    ));
    let err = store
        .finish_operation("nope", &OperationOutcome::Succeeded)
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::NotFound {
            kind: "operation",
            ..
        }
    ));

    // Deleting the VM keeps the operation's history.
    store.delete_vm(&vm.id).unwrap();
    assert_eq!(store.get_operation(&op.id).unwrap().unwrap().vm_id, None);
}

#[test]
fn listing_interrupting_and_pruning_operations() {
    let (_dir, _path, store) = temp_store();
    let new = |kind: OpKind| NewOperation {
        kind,
        vm_id: None,
        stage: None,
        total: None,
    };
    let first = store.insert_operation(&new(OpKind::VmCreate)).unwrap();
    let second = store.insert_operation(&new(OpKind::VmStart)).unwrap();
    let ids: Vec<_> = store
        .list_operations()
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(ids, vec![second.id.clone(), first.id.clone()]);

    store
        .finish_operation(&first.id, &OperationOutcome::Succeeded)
        .unwrap();
    let n = store
        .fail_interrupted_operations("internal", &["bangerd restarted".into()])
        .unwrap();
    assert_eq!(n, 1);
    let second = store.get_operation(&second.id).unwrap().unwrap();
    assert_eq!(second.state, OperationState::Failed);

    let running = store.insert_operation(&new(OpKind::VmCreate)).unwrap();
    // Nothing finished before the epoch; everything finished before tomorrow.
    assert_eq!(store.prune_finished_operations(0).unwrap(), 0);
    assert_eq!(
        store
            .prune_finished_operations(unix_now() + 86_400)
            .unwrap(),
        2
    );
    let left: Vec<_> = store
        .list_operations()
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(left, vec![running.id]);
}

#[test]
fn ids_are_random_hex() {
    let a = new_id().unwrap();
    let b = new_id().unwrap();
    assert_eq!(a.len(), 32);
    assert!(
        a.bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_ne!(a, b);
}

/// A store made by the first release (schema V1, one VM with a lease and
/// an operation) opened by this one: the `vms` rebuild of V2 keeps every
/// row and reference, foreign keys are on again afterwards, and a VM may
/// then be `paused`.
#[test]
fn a_v1_store_migrates_keeping_leases_and_operations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let vm = "ab".repeat(16);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(super::schema::V1).unwrap();
        conn.execute_batch(&format!(
            "INSERT INTO kernels VALUES ('{k}', 'k', 'x86_64', '/k', NULL, '{sha}', 'import', 1);
             INSERT INTO images (id, name, rootfs_path, kernel_id, size_bytes, source, created_at)
                 VALUES ('{i}', 'img', '/r', '{k}', 1, 'build', 1);
             INSERT INTO vms VALUES ('{vm}', 'dev', '{i}', 'running', NULL, 'qemu', 1, 512, 1024, 1, 1, 2);
             INSERT INTO ip_leases VALUES ('172.30.0.2', '{vm}', '02:ba:ac:1e:00:02', 1);
             INSERT INTO operations (id, kind, vm_id, state, created_at, updated_at)
                 VALUES ('{op}', 'vm_create', '{vm}', 'running', 1, 1);
             PRAGMA user_version = 1;",
            k = "cd".repeat(16),
            i = "ef".repeat(16),
            op = "01".repeat(16),
            sha = "ab".repeat(32),
        ))
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let row = store.get_vm(&vm).unwrap().expect("the VM survived");
    assert_eq!((row.name.as_str(), row.state), ("dev", VmState::Running));
    let lease = store.get_lease(&vm).unwrap().expect("the lease survived");
    assert_eq!(lease.ip, Ipv4Addr::new(172, 30, 0, 2));
    {
        let conn = store.lock();
        let op_vm: Option<String> = conn
            .query_row("SELECT vm_id FROM operations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(op_vm.as_deref(), Some(vm.as_str()), "operation unlinked");
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1, "foreign keys are off after the migration");
        let indexes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'vms' \
                 AND name IN ('vms_image_id', 'vms_state')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 2);
        conn.execute("UPDATE vms SET state = 'paused'", []).unwrap();
        // The leases' reference names the rebuilt table: deleting the VM
        // cascades to its lease.
        conn.execute("DELETE FROM vms", []).unwrap();
        let leases: i64 = conn
            .query_row("SELECT count(*) FROM ip_leases", [], |r| r.get(0))
            .unwrap();
        assert_eq!(leases, 0);
    }
}

/// A create's take: the first candidate `take_pooled` takes.
fn take(store: &Store, want: &PoolWant<'_>, name: &str) -> Option<(String, VmRow)> {
    store
        .pool_candidates(want)
        .unwrap()
        .iter()
        .find_map(|id| store.take_pooled(id, name).unwrap())
}

/// The warm pool's rows: a clone is taken only when ready, paused and the
/// VM asked for; taking renames it and takes it out of the pool in one
/// step; a taken name is refused; clones and the pool snapshot go with
/// their VM, snapshot and image.
#[test]
fn a_pooled_clone_is_taken_once_and_only_when_it_matches() {
    let (_dir, _path, store, image) = seeded();
    let clone = store
        .create_pool_vm(&new_vm("pool-0123456789ab", &image.id), &lease(10))
        .unwrap();
    let want = PoolWant {
        image_id: &image.id,
        vmm: Vmm::Firecracker,
        vcpus: 2,
        memory_mib: 1024,
        disk_bytes: 8 << 30,
        nat: true,
    };
    assert!(store.is_pooled(&clone.id).unwrap());
    // Not ready, then ready but not paused: nothing to take.
    assert_eq!(take(&store, &want, "dev"), None);
    store.set_pool_vm_ready(&clone.id).unwrap();
    assert_eq!(take(&store, &want, "dev"), None);
    for (from, to) in [
        (VmState::Created, VmState::Starting),
        (VmState::Starting, VmState::Running),
        (VmState::Running, VmState::Paused),
    ] {
        store.set_vm_state(&clone.id, from, to, None).unwrap();
    }
    // Another VM's sizes, or a name that is taken: not this one.
    let bigger = PoolWant {
        memory_mib: 2048,
        ..want.clone()
    };
    assert_eq!(take(&store, &bigger, "dev"), None);
    let mine = store
        .create_vm_with_lease(&new_vm("mine", &image.id), &lease(11))
        .unwrap()
        .0;
    assert!(!store.is_pooled(&mine.id).unwrap());
    assert_eq!(take(&store, &want, "mine"), None);

    assert_eq!(
        store.pool_candidates(&want).unwrap(),
        vec![clone.id.clone()]
    );
    let (old, taken) = take(&store, &want, "dev").unwrap();
    assert_eq!(old, "pool-0123456789ab");
    assert_eq!(taken.id, clone.id);
    assert_eq!(taken.name, "dev");
    assert!(!store.is_pooled(&clone.id).unwrap());
    assert_eq!(
        store.get_lease(&clone.id).unwrap().unwrap().ip,
        lease(10).ip
    );
    assert_eq!(take(&store, &want, "dev2"), None);

    // A second clone goes with its VM.
    let other = store
        .create_pool_vm(&new_vm("pool-ba9876543210", &image.id), &lease(12))
        .unwrap();
    assert_eq!(store.pool_vms().unwrap().len(), 1);
    store.delete_vm(&other.id).unwrap();
    assert!(store.pool_vms().unwrap().is_empty());

    // The pool snapshot: found by image, listed by id, gone with its row.
    let base = store
        .insert_pool_base(&SnapshotRow {
            id: "ab".repeat(16),
            name: "pool-abababababab".into(),
            source_vm: "pool-0123456789ab".into(),
            image_id: image.id.clone(),
            kernel_id: image.kernel_id.clone(),
            vmm: Vmm::Qemu,
            vcpus: 2,
            memory_mib: 1024,
            disk_bytes: 8 << 30,
            memory_bytes: 1 << 20,
            created_at: 0,
        })
        .unwrap();
    assert_eq!(store.pool_base(&image.id).unwrap(), Some(base.clone()));
    assert_eq!(store.pool_base_ids().unwrap(), vec![base.id.clone()]);
    store.delete_snapshot(&base.id).unwrap();
    assert_eq!(store.pool_base(&image.id).unwrap(), None);
}
