//! The store schema, as an append-only list of migrations.
//!
//! Never edit a migration that has shipped: add a new one. The schema version
//! is SQLite's `user_version`, which equals the number of applied migrations.
//!
//! Conventions: STRICT tables; ids are 32 lowercase hex characters; times are
//! unix seconds; paths are absolute; closed value sets are spelled as in
//! `store::model` and guarded by CHECK constraints.

use rusqlite_migration::{M, Migrations};

pub(crate) const V1: &str = r#"
CREATE TABLE kernels (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
    arch        TEXT    NOT NULL CHECK (arch <> ''),
    kernel_path TEXT    NOT NULL CHECK (substr(kernel_path, 1, 1) = '/'),
    initrd_path TEXT    CHECK (initrd_path IS NULL OR substr(initrd_path, 1, 1) = '/'),
    sha256      TEXT    NOT NULL CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
    source      TEXT    NOT NULL CHECK (source IN ('import', 'pull', 'bundle')),
    created_at  INTEGER NOT NULL CHECK (created_at >= 0)
) STRICT;

CREATE TABLE images (
    id             TEXT    NOT NULL PRIMARY KEY,
    name           TEXT    NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
    rootfs_path    TEXT    NOT NULL CHECK (substr(rootfs_path, 1, 1) = '/'),
    kernel_id      TEXT    NOT NULL REFERENCES kernels (id) ON DELETE RESTRICT,
    size_bytes     INTEGER NOT NULL CHECK (size_bytes > 0),
    source         TEXT    NOT NULL
                   CHECK (source IN ('register', 'oci', 'bundle', 'build', 'promote')),
    source_ref     TEXT,
    work_seed_path TEXT    CHECK (work_seed_path IS NULL OR substr(work_seed_path, 1, 1) = '/'),
    created_at     INTEGER NOT NULL CHECK (created_at >= 0)
) STRICT;
-- Kernel deletion checks for referencing images.
CREATE INDEX images_kernel_id ON images (kernel_id);

CREATE TABLE vms (
    id           TEXT    NOT NULL PRIMARY KEY,
    -- A VM name is a DNS label under .vm.
    name         TEXT    NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 63),
    image_id     TEXT    NOT NULL REFERENCES images (id) ON DELETE RESTRICT,
    state        TEXT    NOT NULL CHECK (state IN
                     ('created', 'starting', 'running', 'stopping', 'stopped', 'failed')),
    state_reason TEXT,
    vmm          TEXT    NOT NULL CHECK (vmm IN ('firecracker', 'qemu')),
    vcpus        INTEGER NOT NULL CHECK (vcpus BETWEEN 1 AND 256),
    memory_mib   INTEGER NOT NULL CHECK (memory_mib > 0),
    disk_bytes   INTEGER NOT NULL CHECK (disk_bytes > 0),
    nat          INTEGER NOT NULL CHECK (nat IN (0, 1)),
    created_at   INTEGER NOT NULL CHECK (created_at >= 0),
    updated_at   INTEGER NOT NULL CHECK (updated_at >= 0)
) STRICT;
-- Image deletion checks for referencing VMs; reconcile scans by state.
CREATE INDEX vms_image_id ON vms (image_id);
CREATE INDEX vms_state ON vms (state);

CREATE TABLE ip_leases (
    ip        TEXT    NOT NULL PRIMARY KEY
              CHECK (ip GLOB '[0-9]*.[0-9]*.[0-9]*.[0-9]*' AND ip NOT GLOB '*[^0-9.]*'),
    vm_id     TEXT    NOT NULL UNIQUE REFERENCES vms (id) ON DELETE CASCADE,
    mac       TEXT    NOT NULL UNIQUE CHECK (length(mac) = 17 AND mac GLOB
                  '[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]'),
    leased_at INTEGER NOT NULL CHECK (leased_at >= 0)
) STRICT;

CREATE TABLE operations (
    id             TEXT    NOT NULL PRIMARY KEY,
    kind           TEXT    NOT NULL CHECK (kind <> ''),
    vm_id          TEXT    REFERENCES vms (id) ON DELETE SET NULL,
    state          TEXT    NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
    stage          TEXT,
    done           INTEGER NOT NULL DEFAULT 0 CHECK (done >= 0),
    total          INTEGER CHECK (total IS NULL OR total >= 0),
    error_code     TEXT    CHECK (error_code IS NULL OR error_code <> ''),
    -- JSON array of messages, outermost context first.
    error_messages TEXT    CHECK (error_messages IS NULL OR
                       (json_valid(error_messages) AND json_type(error_messages) = 'array')),
    created_at     INTEGER NOT NULL CHECK (created_at >= 0),
    updated_at     INTEGER NOT NULL CHECK (updated_at >= 0),
    finished_at    INTEGER CHECK (finished_at IS NULL OR finished_at >= 0),
    CHECK ((state = 'running') = (finished_at IS NULL)),
    CHECK ((state = 'failed') = (error_code IS NOT NULL)),
    CHECK (error_messages IS NULL OR error_code IS NOT NULL)
) STRICT;
-- ON DELETE SET NULL from vms, and "operations of this VM".
CREATE INDEX operations_vm_id ON operations (vm_id);
-- Listing newest first.
CREATE INDEX operations_created_at ON operations (created_at);
-- Pruning finished operations.
CREATE INDEX operations_finished_at ON operations (finished_at) WHERE finished_at IS NOT NULL;
"#;

/// A VM may be `paused` (issue #15: `vm pause` / `vm resume`). SQLite cannot
/// change a CHECK in place, so `vms` is rebuilt (SQLite's "make other kinds
/// of table schema changes" procedure): the store opens with foreign keys
/// off while migrating, so dropping the old table neither cascades to
/// `ip_leases` nor nulls `operations.vm_id`; the other tables' `REFERENCES
/// vms` then name the new table; `foreign_key_check` proves they still hold.
const V2: &str = r#"
CREATE TABLE vms_v2 (
    id           TEXT    NOT NULL PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 63),
    image_id     TEXT    NOT NULL REFERENCES images (id) ON DELETE RESTRICT,
    state        TEXT    NOT NULL CHECK (state IN
                     ('created', 'starting', 'running', 'paused', 'stopping', 'stopped', 'failed')),
    state_reason TEXT,
    vmm          TEXT    NOT NULL CHECK (vmm IN ('firecracker', 'qemu')),
    vcpus        INTEGER NOT NULL CHECK (vcpus BETWEEN 1 AND 256),
    memory_mib   INTEGER NOT NULL CHECK (memory_mib > 0),
    disk_bytes   INTEGER NOT NULL CHECK (disk_bytes > 0),
    nat          INTEGER NOT NULL CHECK (nat IN (0, 1)),
    created_at   INTEGER NOT NULL CHECK (created_at >= 0),
    updated_at   INTEGER NOT NULL CHECK (updated_at >= 0)
) STRICT;
INSERT INTO vms_v2 (id, name, image_id, state, state_reason, vmm, vcpus, memory_mib,
                    disk_bytes, nat, created_at, updated_at)
    SELECT id, name, image_id, state, state_reason, vmm, vcpus, memory_mib,
           disk_bytes, nat, created_at, updated_at FROM vms;
DROP TABLE vms;
ALTER TABLE vms_v2 RENAME TO vms;
CREATE INDEX vms_image_id ON vms (image_id);
CREATE INDEX vms_state ON vms (state);
"#;

/// VM snapshots (issue #15: `vm snapshot`, `vm create --from`). A snapshot
/// keeps its image (and the image's kernel): a clone's VMM is given the
/// same machine, with the image's kernel and initrd.
const V3: &str = r#"
CREATE TABLE snapshots (
    id           TEXT    NOT NULL PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 63),
    source_vm    TEXT    NOT NULL CHECK (length(source_vm) BETWEEN 1 AND 63),
    image_id     TEXT    NOT NULL REFERENCES images (id) ON DELETE RESTRICT,
    kernel_id    TEXT    NOT NULL REFERENCES kernels (id) ON DELETE RESTRICT,
    vmm          TEXT    NOT NULL CHECK (vmm IN ('firecracker', 'qemu')),
    vcpus        INTEGER NOT NULL CHECK (vcpus BETWEEN 1 AND 256),
    memory_mib   INTEGER NOT NULL CHECK (memory_mib > 0),
    disk_bytes   INTEGER NOT NULL CHECK (disk_bytes > 0),
    memory_bytes INTEGER NOT NULL CHECK (memory_bytes >= 0),
    created_at   INTEGER NOT NULL CHECK (created_at >= 0)
) STRICT;
-- Image and kernel deletion check for referencing snapshots.
CREATE INDEX snapshots_image_id ON snapshots (image_id);
CREATE INDEX snapshots_kernel_id ON snapshots (kernel_id);
"#;

/// VMs suspended to disk (issue #15: `vm stop --save`): the snapshot
/// directory holding a stopped VM's saved memory (its own disks are the
/// state's), resumed and dropped by its next `vm start`, dropped with the
/// VM.
const V4: &str = r#"
CREATE TABLE saved_vms (
    vm_id       TEXT    NOT NULL PRIMARY KEY REFERENCES vms (id) ON DELETE CASCADE,
    snapshot_id TEXT    NOT NULL UNIQUE
                CHECK (length(snapshot_id) = 32 AND snapshot_id NOT GLOB '*[^0-9a-f]*'),
    saved_at    INTEGER NOT NULL CHECK (saved_at >= 0)
) STRICT;
"#;

/// The warm pool (issue #15 item 2): VMs restored from an image's pool
/// snapshot and left paused, hidden from the owner until `vm create` takes
/// one (`ready` once restored, personalised and paused); and each image's
/// pool snapshot, a snapshot row of its own that `snapshot ls` does not
/// show. Both go with their VM, snapshot or image.
const V5: &str = r#"
CREATE TABLE pool_vms (
    vm_id      TEXT    NOT NULL PRIMARY KEY REFERENCES vms (id) ON DELETE CASCADE,
    image_id   TEXT    NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    ready      INTEGER NOT NULL CHECK (ready IN (0, 1)),
    created_at INTEGER NOT NULL CHECK (created_at >= 0)
) STRICT;
CREATE INDEX pool_vms_image_id ON pool_vms (image_id);

CREATE TABLE pool_bases (
    image_id    TEXT NOT NULL PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    snapshot_id TEXT NOT NULL UNIQUE REFERENCES snapshots (id) ON DELETE CASCADE
) STRICT;
"#;

const MIGRATION_LIST: &[M<'static>] = &[
    M::up(V1).foreign_key_check(),
    M::up(V2).foreign_key_check(),
    M::up(V3).foreign_key_check(),
    M::up(V4).foreign_key_check(),
    M::up(V5).foreign_key_check(),
];

/// Every migration, in order.
pub(crate) const MIGRATIONS: Migrations<'static> = Migrations::from_slice(MIGRATION_LIST);

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: usize = MIGRATION_LIST.len();

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::{ImageSource, KernelSource, OperationState, VmState, Vmm};

    #[test]
    fn migrations_are_valid() {
        MIGRATIONS.validate().unwrap();
    }

    /// The CHECK lists in SQL and the Rust enums must spell the same values.
    #[test]
    fn check_constraints_match_the_enums() {
        let sets: [(&str, Vec<&str>); 4] = [
            (
                "kernel",
                KernelSource::ALL.iter().map(|v| v.as_str()).collect(),
            ),
            (
                "image",
                ImageSource::ALL.iter().map(|v| v.as_str()).collect(),
            ),
            ("vmm", Vmm::ALL.iter().map(|v| v.as_str()).collect()),
            (
                "op",
                OperationState::ALL.iter().map(|v| v.as_str()).collect(),
            ),
        ];
        let compact = V1.split_whitespace().collect::<Vec<_>>().join(" ");
        // The VM states' list is V2's (the table it rebuilt is the latest).
        let v2 = V2.split_whitespace().collect::<Vec<_>>().join(" ");
        let states = VmState::ALL
            .iter()
            .map(|v| format!("'{}'", v.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(
            v2.contains(&format!("state IN ({states}))")),
            "VM states: no CHECK (... IN ({states})) in V2"
        );
        for (what, values) in sets {
            let list = values
                .iter()
                .map(|v| format!("'{v}'"))
                .collect::<Vec<_>>()
                .join(", ");
            let check = format!("IN ({list}))");
            assert!(
                compact.contains(&check),
                "{what}: no CHECK (... {check} in the schema"
            );
        }
    }
}
