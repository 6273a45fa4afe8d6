//! `vms/<id>/handles.json`: the host objects a VM holds, kept beside its
//! disks so reconcile can find them after a daemon crash.
//!
//! This is bangerd's private on-disk state (never sent over a socket), so its
//! serde type lives here rather than in `banger-proto`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a VM holds on the host. Later capabilities add fields (VMM pid,
/// sockets, snapshot devices); unknown fields are refused so a newer file is
/// not silently misread.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmHandles {
    /// The tap the VM is attached to, while it has one.
    pub tap: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HandlesError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid handles JSON")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

const FILE: &str = "handles.json";

/// Load a VM's handles; a missing file means "holds nothing".
pub fn load(vm_dir: &Path) -> Result<VmHandles, HandlesError> {
    let path = vm_dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|source| HandlesError::Parse { path, source })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(VmHandles::default()),
        Err(source) => Err(HandlesError::Read { path, source }),
    }
}

/// Replace a VM's handles atomically (temp file, fsync, rename).
pub fn store(vm_dir: &Path, handles: &VmHandles) -> Result<(), HandlesError> {
    let path = vm_dir.join(FILE);
    let write_err = |source| HandlesError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(vm_dir).map_err(write_err)?;
    let tmp = vm_dir.join(format!(".{FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(write_err)?;
    let body = serde_json::to_vec_pretty(handles).expect("handles serialize");
    f.write_all(&body)
        .and_then(|()| f.sync_all())
        .map_err(write_err)?;
    std::fs::rename(&tmp, &path).map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file_is_empty() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load(d.path()).unwrap(), VmHandles::default());
        let h = VmHandles {
            tap: Some("bangertap3".into()),
        };
        store(d.path(), &h).unwrap();
        assert_eq!(load(d.path()).unwrap(), h);
    }

    #[test]
    fn garbage_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE), "{nope").unwrap();
        let err = load(d.path()).unwrap_err();
        assert!(err.to_string().contains("handles.json"), "{err}");
    }
}
