//! The store's error type and the mapping of SQLite constraint failures to
//! errors that name the object involved.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use rusqlite::ErrorCode;

use super::model::{OperationState, VmState};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating store directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file exists but is not an SQLite database.
    #[error("opening store {path}: file is not a database")]
    NotADatabase { path: PathBuf },
    #[error("opening store {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store {path} is an SQLite database that banger did not create; refusing to touch it")]
    Foreign { path: PathBuf },
    #[error(
        "store {path} has schema version {found}, this bangerd knows up to {known}; upgrade banger"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: usize,
        known: usize,
    },
    #[error("configuring store {path}: setting {pragma}")]
    Pragma {
        path: PathBuf,
        pragma: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "store {path}: SQLite refused write-ahead logging (journal mode stayed {mode:?}); \
         put the state directory on a local filesystem"
    )]
    WalUnavailable { path: PathBuf, mode: String },
    #[error("migrating store {path} from schema version {from} to {to}")]
    Migrate {
        path: PathBuf,
        from: usize,
        to: usize,
        #[source]
        source: Box<rusqlite_migration::Error>,
    },
    #[error("beginning a store transaction")]
    Begin {
        #[source]
        source: rusqlite::Error,
    },
    #[error("committing a store transaction")]
    Commit {
        #[source]
        source: rusqlite::Error,
    },
    /// A query failed; `what` says what was being read.
    #[error("reading {what} from the store")]
    Read {
        what: String,
        #[source]
        source: rusqlite::Error,
    },
    /// A statement failed; `what` says what was being written.
    #[error("writing {what} to the store")]
    Write {
        what: String,
        #[source]
        source: rusqlite::Error,
    },
    /// A stored value that this build cannot interpret.
    #[error("store {table}.{column} holds {value:?}, which this bangerd cannot interpret")]
    Decode {
        table: &'static str,
        column: &'static str,
        value: String,
    },
    /// A value that cannot be stored (a non-UTF-8 path, a size past i64).
    #[error("{what} {value} cannot be stored: {reason}")]
    Unstorable {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("a {kind} named {name:?} already exists")]
    NameTaken { kind: &'static str, name: String },
    #[error("IP address {ip} is already leased")]
    IpTaken { ip: Ipv4Addr },
    #[error("MAC address {mac} is already leased")]
    MacTaken { mac: String },
    /// `key` is a name or an id, as the caller gave it.
    #[error("no {kind} {key:?}")]
    NotFound { kind: &'static str, key: String },
    /// An insert refers to an object that does not exist.
    #[error("{kind} refers to {target_kind} id {id:?}, which does not exist")]
    MissingReference {
        kind: &'static str,
        target_kind: &'static str,
        id: String,
    },
    #[error("{kind} {name:?} is still used by {} {}", plural(used_by_kind, used_by.len()), used_by.join(", "))]
    InUse {
        kind: &'static str,
        name: String,
        used_by_kind: &'static str,
        used_by: Vec<String>,
    },
    #[error("vm {name:?} is {current}, not {expected}")]
    VmStateConflict {
        name: String,
        expected: VmState,
        current: VmState,
    },
    #[error("operation {id} already finished ({state})")]
    OperationFinished { id: String, state: OperationState },
    #[error("generating an id from /dev/urandom")]
    GenerateId {
        #[source]
        source: std::io::Error,
    },
}

fn plural(kind: &str, n: usize) -> String {
    if n == 1 {
        kind.to_owned()
    } else {
        format!("{kind}s")
    }
}

/// The `table.column` of a UNIQUE or PRIMARY KEY violation, if `err` is one.
///
/// SQLite reports these as "UNIQUE constraint failed: vms.name"; the message
/// format is stable and the only place SQLite names the column.
pub(crate) fn unique_violation(err: &rusqlite::Error) -> Option<&str> {
    match err {
        rusqlite::Error::SqliteFailure(e, Some(msg))
            if e.code == ErrorCode::ConstraintViolation
                && (e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY) =>
        {
            msg.split_once("constraint failed: ")
                .map(|(_, col)| col.trim())
        }
        _ => None,
    }
}

/// Whether `err` is a FOREIGN KEY violation.
pub(crate) fn is_foreign_key_violation(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
    )
}
