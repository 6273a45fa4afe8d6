//! Kernels and images.

use rusqlite::{OptionalExtension as _, Row, named_params};

use super::error::{is_foreign_key_violation, unique_violation};
use super::{
    ImageRow, KernelRow, NewImage, NewKernel, Store, StoreError, Tx, get_opt_path, get_path,
    get_u64, int, new_id, opt_path_text, path_text, unix_now,
};

const KERNEL_COLUMNS: &str = "id, name, arch, kernel_path, initrd_path, sha256, source, created_at";
const IMAGE_COLUMNS: &str = "id, name, rootfs_path, kernel_id, size_bytes, source, source_ref, \
                             work_seed_path, created_at";

fn kernel_from_row(row: &Row<'_>) -> rusqlite::Result<KernelRow> {
    Ok(KernelRow {
        id: row.get(0)?,
        name: row.get(1)?,
        arch: row.get(2)?,
        kernel_path: get_path(row, 3)?,
        initrd_path: get_opt_path(row, 4)?,
        sha256: row.get(5)?,
        source: row.get(6)?,
        created_at: row.get(7)?,
    })
}

fn image_from_row(row: &Row<'_>) -> rusqlite::Result<ImageRow> {
    Ok(ImageRow {
        id: row.get(0)?,
        name: row.get(1)?,
        rootfs_path: get_path(row, 2)?,
        kernel_id: row.get(3)?,
        size_bytes: get_u64(row, 4)?,
        source: row.get(5)?,
        source_ref: row.get(6)?,
        work_seed_path: get_opt_path(row, 7)?,
        created_at: row.get(8)?,
    })
}

impl Tx<'_> {
    /// Record a kernel. Fails with [`StoreError::NameTaken`] if the name is
    /// in use.
    pub fn insert_kernel(&self, k: &NewKernel) -> Result<KernelRow, StoreError> {
        self.insert_kernel_with_id(new_id()?, k)
    }

    /// [`Tx::insert_kernel`] with an id the caller chose (from
    /// [`new_id`](super::new_id)): the image service names a kernel's
    /// directory after its id before the row exists.
    pub fn insert_kernel_with_id(
        &self,
        id: String,
        k: &NewKernel,
    ) -> Result<KernelRow, StoreError> {
        let row = KernelRow {
            id,
            name: k.name.clone(),
            arch: k.arch.clone(),
            kernel_path: k.kernel_path.clone(),
            initrd_path: k.initrd_path.clone(),
            sha256: k.sha256.clone(),
            source: k.source,
            created_at: unix_now(),
        };
        self.conn
            .execute(
                &format!(
                    "INSERT INTO kernels ({KERNEL_COLUMNS}) VALUES \
                     (:id, :name, :arch, :kernel_path, :initrd_path, :sha256, :source, :created_at)"
                ),
                named_params! {
                    ":id": row.id,
                    ":name": row.name,
                    ":arch": row.arch,
                    ":kernel_path": path_text("kernel path", &row.kernel_path)?,
                    ":initrd_path": opt_path_text("initrd path", row.initrd_path.as_deref())?,
                    ":sha256": row.sha256,
                    ":source": row.source,
                    ":created_at": row.created_at,
                },
            )
            .map_err(|source| match unique_violation(&source) {
                Some("kernels.name") => StoreError::NameTaken {
                    kind: "kernel",
                    name: k.name.clone(),
                },
                _ => StoreError::Write {
                    what: format!("kernel {:?}", k.name),
                    source,
                },
            })?;
        Ok(row)
    }

    pub fn get_kernel(&self, id: &str) -> Result<Option<KernelRow>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {KERNEL_COLUMNS} FROM kernels WHERE id = ?1"),
                [id],
                kernel_from_row,
            )
            .optional()
            .map_err(|source| StoreError::Read {
                what: format!("kernel id {id:?}"),
                source,
            })
    }

    pub fn get_kernel_by_name(&self, name: &str) -> Result<Option<KernelRow>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {KERNEL_COLUMNS} FROM kernels WHERE name = ?1"),
                [name],
                kernel_from_row,
            )
            .optional()
            .map_err(|source| StoreError::Read {
                what: format!("kernel {name:?}"),
                source,
            })
    }

    /// All kernels, by name.
    pub fn list_kernels(&self) -> Result<Vec<KernelRow>, StoreError> {
        let read_err = |source| StoreError::Read {
            what: "kernels".into(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {KERNEL_COLUMNS} FROM kernels ORDER BY name"
            ))
            .map_err(read_err)?;
        let rows = stmt
            .query_map([], kernel_from_row)
            .and_then(|rows| rows.collect())
            .map_err(read_err)?;
        Ok(rows)
    }

    /// Delete a kernel by id and return its row. Refused with
    /// [`StoreError::InUse`] naming the images that still use it.
    pub fn delete_kernel(&self, id: &str) -> Result<KernelRow, StoreError> {
        let kernel = self.get_kernel(id)?.ok_or_else(|| StoreError::NotFound {
            kind: "kernel",
            key: id.to_owned(),
        })?;
        let users = self.names_where("images", "kernel_id", id)?;
        if !users.is_empty() {
            return Err(StoreError::InUse {
                kind: "kernel",
                name: kernel.name,
                used_by_kind: "image",
                used_by: users,
            });
        }
        self.conn
            .execute("DELETE FROM kernels WHERE id = ?1", [id])
            .map_err(|source| StoreError::Write {
                what: format!("deletion of kernel {:?}", kernel.name),
                source,
            })?;
        Ok(kernel)
    }

    /// Record an image. Fails with [`StoreError::NameTaken`] if the name is
    /// in use, [`StoreError::MissingReference`] if the kernel does not exist.
    pub fn insert_image(&self, i: &NewImage) -> Result<ImageRow, StoreError> {
        self.insert_image_with_id(new_id()?, i)
    }

    /// [`Tx::insert_image`] with an id the caller chose (from
    /// [`new_id`](super::new_id)): the image service names an image's
    /// directory after its id before the row exists.
    pub fn insert_image_with_id(&self, id: String, i: &NewImage) -> Result<ImageRow, StoreError> {
        let row = ImageRow {
            id,
            name: i.name.clone(),
            rootfs_path: i.rootfs_path.clone(),
            kernel_id: i.kernel_id.clone(),
            size_bytes: i.size_bytes,
            source: i.source,
            source_ref: i.source_ref.clone(),
            work_seed_path: i.work_seed_path.clone(),
            created_at: unix_now(),
        };
        self.conn
            .execute(
                &format!(
                    "INSERT INTO images ({IMAGE_COLUMNS}) VALUES (:id, :name, :rootfs_path, \
                     :kernel_id, :size_bytes, :source, :source_ref, :work_seed_path, :created_at)"
                ),
                named_params! {
                    ":id": row.id,
                    ":name": row.name,
                    ":rootfs_path": path_text("rootfs path", &row.rootfs_path)?,
                    ":kernel_id": row.kernel_id,
                    ":size_bytes": int("image size", row.size_bytes)?,
                    ":source": row.source,
                    ":source_ref": row.source_ref,
                    ":work_seed_path":
                        opt_path_text("work seed path", row.work_seed_path.as_deref())?,
                    ":created_at": row.created_at,
                },
            )
            .map_err(|source| match unique_violation(&source) {
                Some("images.name") => StoreError::NameTaken {
                    kind: "image",
                    name: i.name.clone(),
                },
                _ if is_foreign_key_violation(&source) => StoreError::MissingReference {
                    kind: "image",
                    target_kind: "kernel",
                    id: i.kernel_id.clone(),
                },
                _ => StoreError::Write {
                    what: format!("image {:?}", i.name),
                    source,
                },
            })?;
        Ok(row)
    }

    pub fn get_image(&self, id: &str) -> Result<Option<ImageRow>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {IMAGE_COLUMNS} FROM images WHERE id = ?1"),
                [id],
                image_from_row,
            )
            .optional()
            .map_err(|source| StoreError::Read {
                what: format!("image id {id:?}"),
                source,
            })
    }

    pub fn get_image_by_name(&self, name: &str) -> Result<Option<ImageRow>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {IMAGE_COLUMNS} FROM images WHERE name = ?1"),
                [name],
                image_from_row,
            )
            .optional()
            .map_err(|source| StoreError::Read {
                what: format!("image {name:?}"),
                source,
            })
    }

    /// All images, by name.
    pub fn list_images(&self) -> Result<Vec<ImageRow>, StoreError> {
        let read_err = |source| StoreError::Read {
            what: "images".into(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {IMAGE_COLUMNS} FROM images ORDER BY name"))
            .map_err(read_err)?;
        let rows = stmt
            .query_map([], image_from_row)
            .and_then(|rows| rows.collect())
            .map_err(read_err)?;
        Ok(rows)
    }

    /// Delete an image by id and return its row. Refused with
    /// [`StoreError::InUse`] naming the VMs (else the snapshots) that
    /// still use it.
    pub fn delete_image(&self, id: &str) -> Result<ImageRow, StoreError> {
        let image = self.get_image(id)?.ok_or_else(|| StoreError::NotFound {
            kind: "image",
            key: id.to_owned(),
        })?;
        for (table, used_by_kind) in [("vms", "vm"), ("snapshots", "snapshot")] {
            let users = self.names_where(table, "image_id", id)?;
            if !users.is_empty() {
                return Err(StoreError::InUse {
                    kind: "image",
                    name: image.name.clone(),
                    used_by_kind,
                    used_by: users,
                });
            }
        }
        self.conn
            .execute("DELETE FROM images WHERE id = ?1", [id])
            .map_err(|source| StoreError::Write {
                what: format!("deletion of image {:?}", image.name),
                source,
            })?;
        Ok(image)
    }

    /// Names of the rows of `table` whose `column` equals `value`, sorted.
    /// `table` and `column` are compile-time constants of this module.
    fn names_where(
        &self,
        table: &'static str,
        column: &'static str,
        value: &str,
    ) -> Result<Vec<String>, StoreError> {
        let read_err = |source| StoreError::Read {
            what: format!("{table} referring to {value:?}"),
            source,
        };
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT name FROM {table} WHERE {column} = ?1 ORDER BY name"
            ))
            .map_err(read_err)?;
        let names = stmt
            .query_map([value], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(read_err)?;
        Ok(names)
    }
}

impl Store {
    pub fn insert_kernel(&self, k: &NewKernel) -> Result<KernelRow, StoreError> {
        self.transaction(|tx| tx.insert_kernel(k))
    }

    pub fn get_kernel(&self, id: &str) -> Result<Option<KernelRow>, StoreError> {
        self.read(|tx| tx.get_kernel(id))
    }

    pub fn get_kernel_by_name(&self, name: &str) -> Result<Option<KernelRow>, StoreError> {
        self.read(|tx| tx.get_kernel_by_name(name))
    }

    pub fn list_kernels(&self) -> Result<Vec<KernelRow>, StoreError> {
        self.read(|tx| tx.list_kernels())
    }

    pub fn delete_kernel(&self, id: &str) -> Result<KernelRow, StoreError> {
        self.transaction(|tx| tx.delete_kernel(id))
    }

    pub fn insert_image(&self, i: &NewImage) -> Result<ImageRow, StoreError> {
        self.transaction(|tx| tx.insert_image(i))
    }

    pub fn get_image(&self, id: &str) -> Result<Option<ImageRow>, StoreError> {
        self.read(|tx| tx.get_image(id))
    }

    pub fn get_image_by_name(&self, name: &str) -> Result<Option<ImageRow>, StoreError> {
        self.read(|tx| tx.get_image_by_name(name))
    }

    pub fn list_images(&self) -> Result<Vec<ImageRow>, StoreError> {
        self.read(|tx| tx.list_images())
    }

    pub fn delete_image(&self, id: &str) -> Result<ImageRow, StoreError> {
        self.transaction(|tx| tx.delete_image(id))
    }
}
