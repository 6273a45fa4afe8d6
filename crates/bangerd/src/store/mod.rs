//! The owner daemon's SQLite store: kernels, images, VMs, IP leases,
//! asynchronous operations and VM snapshots.
//!
//! All access goes through [`Store`]. Its methods are **blocking** (SQLite
//! I/O under a mutex); the daemon calls them from
//! `tokio::task::spawn_blocking`, never directly on an async worker.
//!
//! Every logical change is one transaction. The convenience methods on
//! [`Store`] each run one; code that must combine several writes atomically
//! uses [`Store::transaction`] and the same typed methods on [`Tx`]. There is
//! no raw SQL outside this module.

mod catalog;
mod error;
mod model;
mod operations;
mod pool;
mod schema;
mod snapshots;
mod vms;

#[cfg(test)]
mod tests;

use std::fs::DirBuilder;
use std::io::Read as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql, TransactionBehavior};

pub use error::StoreError;

/// A store error as the RPC answers it: a name taken, a row not found, a
/// state conflict or a row in use keep their meaning; anything else is
/// `internal`.
pub fn rpc_err(e: StoreError) -> banger_proto::RpcError {
    use banger_proto::ErrorCode;
    let code = match &e {
        StoreError::NameTaken { .. } => ErrorCode::AlreadyExists,
        StoreError::NotFound { .. } => ErrorCode::NotFound,
        StoreError::VmStateConflict { .. } | StoreError::InUse { .. } => ErrorCode::InvalidState,
        _ => ErrorCode::Internal,
    };
    banger_proto::RpcError::from_error(code, &e)
}
pub use model::{
    ImageRow, ImageSource, KernelRow, KernelSource, LeaseRow, NewImage, NewKernel, NewLease,
    NewOperation, NewVm, OpKind, OperationOutcome, OperationRow, OperationState, UnknownValue,
    VmConfigUpdate, VmRow, VmState, Vmm,
};
pub use pool::{PoolVmRow, PoolWant};
pub use schema::SCHEMA_VERSION;
pub use snapshots::SnapshotRow;

/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Handle to an open store. Cheap to share behind an `Arc`; calls are
/// serialized on one connection and block the calling thread.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

/// The typed operations of the store, bound to one open transaction.
/// Obtained from [`Store::transaction`] or [`Store::read`].
#[derive(Debug)]
pub struct Tx<'a> {
    conn: &'a Connection,
}

impl Store {
    /// Open (creating if missing) the store at `path` and migrate it to
    /// [`SCHEMA_VERSION`].
    ///
    /// The parent directory is created with mode 0700 if missing. A file
    /// that is not an SQLite database, a database banger did not create, or
    /// one from a newer banger is refused before anything is written to it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.exists()
        {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|source| StoreError::CreateDir {
                    path: parent.to_path_buf(),
                    source,
                })?;
        }
        let open_err = |source: rusqlite::Error| {
            if source.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) {
                StoreError::NotADatabase {
                    path: path.to_path_buf(),
                }
            } else {
                StoreError::Open {
                    path: path.to_path_buf(),
                    source,
                }
            }
        };
        let pragma_err = |pragma| {
            move |source| StoreError::Pragma {
                path: path.to_path_buf(),
                pragma,
                source,
            }
        };

        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(pragma_err("busy_timeout"))?;

        // Read-only checks first: nothing below may write to a file we are
        // going to refuse. A non-database fails here.
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(open_err)?;
        let found = usize::try_from(found).map_err(|_| StoreError::Foreign {
            path: path.to_path_buf(),
        })?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                path: path.to_path_buf(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        if found == 0 {
            let objects: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
                .map_err(open_err)?;
            if objects > 0 {
                return Err(StoreError::Foreign {
                    path: path.to_path_buf(),
                });
            }
        }

        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(pragma_err("journal_mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::WalUnavailable {
                path: path.to_path_buf(),
                mode,
            });
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(pragma_err("synchronous"))?;

        // Foreign keys off while migrating (a no-op inside the migration's
        // transaction, so it is set here): a migration that rebuilds a
        // table (schema::V2) must not cascade its drop. Each migration
        // ends with `foreign_key_check`, which fails it when a reference
        // broke.
        conn.pragma_update(None, "foreign_keys", "OFF")
            .map_err(pragma_err("foreign_keys"))?;
        schema::MIGRATIONS
            .to_latest(&mut conn)
            .map_err(|source| StoreError::Migrate {
                path: path.to_path_buf(),
                from: found,
                to: SCHEMA_VERSION,
                source: Box::new(source),
            })?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(pragma_err("foreign_keys"))?;

        Ok(Store {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    /// Where the database file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<usize, StoreError> {
        let v: i64 = self
            .lock()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|source| StoreError::Read {
                what: "the schema version".into(),
                source,
            })?;
        Ok(usize::try_from(v).unwrap_or(0))
    }

    /// Run `f` in one write transaction: committed if `f` returns `Ok`,
    /// rolled back otherwise. The write lock is taken up front (`BEGIN
    /// IMMEDIATE`), so `f` never fails half-way on lock upgrade.
    pub fn transaction<T, E>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        self.run(TransactionBehavior::Immediate, f)
    }

    /// Run `f` in one read transaction: every query in it sees the same
    /// snapshot. Writes inside are possible but belong in
    /// [`Store::transaction`].
    pub fn read<T, E>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        self.run(TransactionBehavior::Deferred, f)
    }

    fn run<T, E>(
        &self,
        behavior: TransactionBehavior,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(behavior)
            .map_err(|source| StoreError::Begin { source })?;
        let out = f(&Tx { conn: &tx })?;
        tx.commit()
            .map_err(|source| StoreError::Commit { source })?;
        Ok(out)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock dropped its transaction, which rolls
        // back: the connection is still consistent.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A fresh random id: 128 bits from `/dev/urandom` as 32 lowercase hex
/// characters.
pub fn new_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; banger_proto::ids::ID_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| StoreError::GenerateId { source })?;
    Ok(banger_proto::ids::id_of(bytes))
}

/// Now, in unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(0)
}

/// A path as stored: UTF-8 text.
fn path_text<'p>(what: &'static str, path: &'p Path) -> Result<&'p str, StoreError> {
    path.to_str().ok_or_else(|| StoreError::Unstorable {
        what,
        value: path.display().to_string(),
        reason: "the path is not valid UTF-8",
    })
}

fn opt_path_text<'p>(
    what: &'static str,
    path: Option<&'p Path>,
) -> Result<Option<&'p str>, StoreError> {
    path.map(|p| path_text(what, p)).transpose()
}

/// A size as stored: SQLite integers are i64.
fn int(what: &'static str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Unstorable {
        what,
        value: v.to_string(),
        reason: "it exceeds the largest storable integer",
    })
}

/// Read a non-negative integer column as u64.
fn get_u64(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(idx)?;
    u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, v))
}

fn get_opt_u64(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Option<u64>> {
    let v: Option<i64> = row.get(idx)?;
    v.map(|v| u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, v)))
        .transpose()
}

fn get_path(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<PathBuf> {
    row.get::<_, String>(idx).map(PathBuf::from)
}

fn get_opt_path(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Option<PathBuf>> {
    row.get::<_, Option<String>>(idx)
        .map(|p| p.map(PathBuf::from))
}

/// A closed set of proto's in column `idx`, stored as its wire word (a VM's
/// state, the VMM kind, an operation's kind and state: the proto types
/// cannot implement rusqlite's traits here, so they are bound with
/// `as_str()` and read back with this).
pub(super) fn get_word<T: std::str::FromStr<Err = String>>(
    row: &rusqlite::Row<'_>,
    idx: usize,
) -> rusqlite::Result<T> {
    row.get::<_, String>(idx)?.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, e.into())
    })
}

macro_rules! sql_text_enum {
    ($($name:ty),+) => {$(
        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e: UnknownValue| FromSqlError::Other(Box::new(e)))
            }
        }
    )+};
}

sql_text_enum!(KernelSource, ImageSource);
