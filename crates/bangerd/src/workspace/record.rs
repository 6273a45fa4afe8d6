//! `vms/<id>/workspace.json` and `vms/<id>/workspace.files`: what the last
//! prepare copied, so the next one can be incremental (and delete what the
//! host no longer has) and export knows its base commit.
//!
//! bangerd's private on-disk state, like `handles.json`; never sent over a
//! socket. The file list is NUL-separated raw paths (paths need not be
//! UTF-8).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use banger_proto::RpcError;
use serde::{Deserialize, Serialize};

use super::internal;

const RECORD: &str = "workspace.json";
const FILES: &str = "workspace.files";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Host working-tree root.
    pub repo: PathBuf,
    /// Directory name below the guest user's home.
    pub guest_dir: String,
    /// Host `HEAD` when prepared: the base of an export.
    pub head: Option<String>,
    pub branch: Option<String>,
    /// The guest's `HEAD` at the last export: commits up to it are safe on
    /// the host, so a prepare may replace them.
    #[serde(default)]
    pub exported_head: Option<String>,
}

pub fn load(vm_dir: &Path) -> Result<Option<Record>, RpcError> {
    let path = vm_dir.join(RECORD);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            internal(format!(
                "{} is not a valid workspace record: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(internal(format!("reading {}: {e}", path.display()))),
    }
}

pub fn load_files(vm_dir: &Path) -> Result<Vec<Vec<u8>>, RpcError> {
    let path = vm_dir.join(FILES);
    match std::fs::read(&path) {
        Ok(b) => Ok(b
            .split(|c| *c == 0)
            .filter(|s| !s.is_empty())
            .map(<[u8]>::to_vec)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(internal(format!("reading {}: {e}", path.display()))),
    }
}

fn replace(vm_dir: &Path, name: &str, body: &[u8]) -> Result<(), RpcError> {
    let path = vm_dir.join(name);
    let err = |e: std::io::Error| internal(format!("writing {}: {e}", path.display()));
    let mut tmp = tempfile::NamedTempFile::new_in(vm_dir).map_err(err)?;
    tmp.write_all(body)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(err)?;
    tmp.persist(&path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Replace only the record (after an export).
pub fn store_record(vm_dir: &Path, record: &Record) -> Result<(), RpcError> {
    let body = serde_json::to_vec_pretty(record).expect("record serializes");
    replace(vm_dir, RECORD, &body)
}

/// Replace both files (the list first: a record never names a list it
/// does not have).
pub fn store(vm_dir: &Path, record: &Record, files: &[Vec<u8>]) -> Result<(), RpcError> {
    let mut list = Vec::new();
    for f in files {
        list.extend_from_slice(f);
        list.push(0);
    }
    replace(vm_dir, FILES, &list)?;
    let body = serde_json::to_vec_pretty(record).expect("record serializes");
    replace(vm_dir, RECORD, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_raw_paths() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load(d.path()).unwrap(), None);
        assert!(load_files(d.path()).unwrap().is_empty());
        let r = Record {
            repo: "/src/x".into(),
            guest_dir: "x".into(),
            head: Some("abc".into()),
            branch: None,
            exported_head: None,
        };
        let files = vec![b"a".to_vec(), b"dir/\xff name".to_vec()];
        store(d.path(), &r, &files).unwrap();
        assert_eq!(load(d.path()).unwrap(), Some(r));
        assert_eq!(load_files(d.path()).unwrap(), files);
    }
}
