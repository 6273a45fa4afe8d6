//! `vms/<id>/handles.json`: the host objects a VM holds, kept beside its
//! disks so reconcile can find them after a daemon crash.
//!
//! This is bangerd's private on-disk state (never sent over a socket), so its
//! serde type lives here rather than in `banger-proto`.

use std::io::Write;
use std::path::{Path, PathBuf};

use banger_proto::layout::HANDLES as FILE;
use banger_proto::vmops::{VmmKind, VmmState};
use serde::{Deserialize, Serialize};

/// What a VM holds on the host. Fields added later default when absent (a
/// file with only `tap` still loads); unknown fields are refused so a newer
/// file is not silently misread.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmHandles {
    /// The tap the VM is attached to, while it has one.
    pub tap: Option<String>,
    /// The VMM process, from launch until stop, kill or its exit is seen.
    #[serde(default)]
    pub vmm: Option<VmmHandle>,
    /// Kernel devices behind the root disk as of the last start (dm name
    /// and loop devices with dm-snapshot; empty for a file).
    #[serde(default)]
    pub snapshot_devices: Vec<String>,
}

/// A running VMM as the executor reported it at launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmmHandle {
    pub kind: VmmKind,
    pub pid: u32,
    /// `/proc/<pid>/stat` start time, when known: pid + start time name
    /// the process exactly.
    #[serde(default)]
    pub start_time: Option<u64>,
    /// Its sockets, as paths below the VM directory.
    #[serde(default)]
    pub sockets: Vec<PathBuf>,
}

impl VmHandles {
    /// Record a VMM the executor reports running.
    pub fn set_vmm(&mut self, vm_dir: &Path, s: &VmmState) {
        self.vmm = match (s.running, s.vmm, s.pid) {
            (true, Some(kind), Some(pid)) => Some(VmmHandle {
                kind,
                pid,
                start_time: s.start_time,
                sockets: s.sockets.iter().map(|rel| vm_dir.join(rel)).collect(),
            }),
            _ => None,
        };
        self.snapshot_devices = s.root_devices.clone();
    }

    /// How the recorded VMM differs from what the executor reports now;
    /// `None` when they agree.
    pub fn vmm_mismatch(&self, s: &VmmState) -> Option<String> {
        let recorded = self.vmm.as_ref();
        match (recorded, s.running) {
            (None, false) => None,
            (None, true) => Some(format!(
                "handles.json has no VMM, the executor reports pid {}",
                s.pid.map_or("?".into(), |p| p.to_string())
            )),
            (Some(h), false) => Some(format!("the recorded VMM (pid {}) is gone", h.pid)),
            (Some(h), true) => {
                let same = Some(h.pid) == s.pid
                    && Some(h.kind) == s.vmm
                    && (h.start_time.is_none()
                        || s.start_time.is_none()
                        || h.start_time == s.start_time);
                (!same).then(|| {
                    format!(
                        "handles.json records {} pid {}, the executor reports {} pid {}",
                        h.kind,
                        h.pid,
                        s.vmm.map_or("?".into(), |k| k.to_string()),
                        s.pid.map_or("?".into(), |p| p.to_string())
                    )
                })
            }
        }
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
            ..VmHandles::default()
        };
        store(d.path(), &h).unwrap();
        assert_eq!(load(d.path()).unwrap(), h);
    }

    fn running(pid: u32) -> VmmState {
        VmmState {
            vm_id: "0".repeat(32),
            running: true,
            pid: Some(pid),
            vmm: Some(VmmKind::Qemu),
            adopted: false,
            ready: None,
            start_time: Some(777),
            sockets: vec!["run/qmp.sock".into()],
            root_devices: vec!["banger-x".into(), "loop0".into(), "loop1".into()],
        }
    }

    #[test]
    fn full_handles_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let mut h = VmHandles {
            tap: Some("bangertap0".into()),
            ..VmHandles::default()
        };
        h.set_vmm(d.path(), &running(42));
        assert_eq!(
            h.vmm,
            Some(VmmHandle {
                kind: VmmKind::Qemu,
                pid: 42,
                start_time: Some(777),
                sockets: vec![d.path().join("run/qmp.sock")],
            })
        );
        assert_eq!(h.snapshot_devices, ["banger-x", "loop0", "loop1"]);
        store(d.path(), &h).unwrap();
        assert_eq!(load(d.path()).unwrap(), h);
        let text = std::fs::read_to_string(d.path().join(FILE)).unwrap();
        assert!(text.contains("\"start_time\": 777"), "{text}");

        update(d.path(), |h| h.vmm = None).unwrap();
        let back = load(d.path()).unwrap();
        assert_eq!(back.vmm, None);
        assert_eq!(back.tap.as_deref(), Some("bangertap0"));
    }

    #[test]
    fn old_files_with_only_a_tap_still_load() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE), r#"{ "tap": "bangertap7" }"#).unwrap();
        assert_eq!(
            load(d.path()).unwrap(),
            VmHandles {
                tap: Some("bangertap7".into()),
                vmm: None,
                snapshot_devices: Vec::new(),
            }
        );
        // Unknown fields are still refused.
        std::fs::write(d.path().join(FILE), r#"{ "tap": null, "future": 1 }"#).unwrap();
        assert!(load(d.path()).is_err());
    }

    #[test]
    fn mismatches_against_the_executor_are_named() {
        let d = tempfile::tempdir().unwrap();
        let mut h = VmHandles::default();
        let stopped = VmmState {
            running: false,
            ..running(42)
        };
        assert_eq!(h.vmm_mismatch(&stopped), None);
        assert!(h.vmm_mismatch(&running(42)).unwrap().contains("no VMM"));
        h.set_vmm(d.path(), &running(42));
        assert_eq!(h.vmm_mismatch(&running(42)), None);
        assert!(h.vmm_mismatch(&running(43)).unwrap().contains("pid 43"));
        let recycled = VmmState {
            start_time: Some(1),
            ..running(42)
        };
        assert!(h.vmm_mismatch(&recycled).is_some());
        assert!(h.vmm_mismatch(&stopped).unwrap().contains("gone"));
        // A stopped report clears the VMM but keeps the devices it names.
        h.set_vmm(d.path(), &stopped);
        assert_eq!(h.vmm, None);
    }

    #[test]
    fn garbage_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE), "{nope").unwrap();
        let err = load(d.path()).unwrap_err();
        assert!(err.to_string().contains("handles.json"), "{err}");
    }
}
