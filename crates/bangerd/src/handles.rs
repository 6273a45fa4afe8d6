//! `vms/<id>/handles.json`: what only the daemon knows about a VM's host
//! objects, kept beside its disks so the network reconcile finds it after a
//! daemon crash: the tap it assigned.
//!
//! Nothing about the VMM is kept here: the executor's journal is the
//! authority for VMM facts (pid, start time, kind, sockets, the devices
//! behind the root disk), and the daemon asks it (`VmmStatus`) rather than
//! keeping a copy (its in-memory view is `vm::handles_cache`). Files from
//! before that still carry `vmm` and `snapshot_devices`: they load, those
//! two are ignored, and the next store writes the file without them.
//!
//! This is bangerd's private on-disk state (never sent over a socket), so its
//! serde type lives here rather than in `banger-proto`.

use std::io::Write;
use std::path::{Path, PathBuf};

use banger_proto::layout::HANDLES as FILE;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

/// What a VM holds on the host that only the daemon knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Stored")]
pub struct VmHandles {
    /// The tap the VM is attached to, while it has one.
    pub tap: Option<String>,
}

/// `handles.json` as read: the current field, plus the two an older daemon
/// wrote (read and dropped). Unknown fields are refused so a newer file is
/// not silently misread.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    tap: Option<String>,
    /// The VMM as an older daemon copied it from the executor's answer.
    #[serde(default, rename = "vmm")]
    _vmm: Option<IgnoredAny>,
    /// The root disk's devices, likewise.
    #[serde(default, rename = "snapshot_devices")]
    _snapshot_devices: Option<IgnoredAny>,
}

impl From<Stored> for VmHandles {
    fn from(s: Stored) -> VmHandles {
        VmHandles { tap: s.tap }
    }
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

/// Load, change and store a VM's handles.
pub fn update(vm_dir: &Path, change: impl FnOnce(&mut VmHandles)) -> Result<(), HandlesError> {
    let mut h = load(vm_dir)?;
    change(&mut h);
    store(vm_dir, &h)
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
        let text = std::fs::read_to_string(d.path().join(FILE)).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            serde_json::json!({ "tap": "bangertap3" })
        );
    }

    #[test]
    fn old_files_with_only_a_tap_still_load() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE), r#"{ "tap": "bangertap7" }"#).unwrap();
        assert_eq!(
            load(d.path()).unwrap(),
            VmHandles {
                tap: Some("bangertap7".into()),
            }
        );
        // Unknown fields are still refused.
        std::fs::write(d.path().join(FILE), r#"{ "tap": null, "future": 1 }"#).unwrap();
        assert!(load(d.path()).is_err());
    }

    /// What a daemon that copied the executor's VMM answer wrote.
    const WITH_A_VMM_COPY: &str = r#"{
  "tap": "bangertap0",
  "vmm": {
    "kind": "qemu",
    "pid": 42,
    "start_time": 777,
    "sockets": ["/var/lib/banger/vms/x/run/qmp.sock"]
  },
  "snapshot_devices": ["banger-x", "loop0", "loop1"]
}"#;

    #[test]
    fn an_old_file_with_a_vmm_copy_loads_and_is_rewritten_without_it() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE), WITH_A_VMM_COPY).unwrap();
        assert_eq!(
            load(d.path()).unwrap(),
            VmHandles {
                tap: Some("bangertap0".into()),
            }
        );
        // A VMM that was recorded as gone, and no devices.
        std::fs::write(
            d.path().join(FILE),
            r#"{ "tap": null, "vmm": null, "snapshot_devices": [] }"#,
        )
        .unwrap();
        assert_eq!(load(d.path()).unwrap(), VmHandles::default());

        std::fs::write(d.path().join(FILE), WITH_A_VMM_COPY).unwrap();
        update(d.path(), |h| {
            assert_eq!(h.tap.as_deref(), Some("bangertap0"))
        })
        .unwrap();
        let text = std::fs::read_to_string(d.path().join(FILE)).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            serde_json::json!({ "tap": "bangertap0" }),
            "{text}"
        );
    }

    #[test]
    fn garbage_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE), "{nope").unwrap();
        let err = load(d.path()).unwrap_err();
        assert!(err.to_string().contains("handles.json"), "{err}");
    }
}
