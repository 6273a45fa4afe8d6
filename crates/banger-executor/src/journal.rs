//! The executor's journal: every host object banger created (network
//! objects, VMM processes, the loop and dm devices of dm-snapshot root
//! disks), so it only ever changes what it made and can remove all of it
//! again.
//!
//! The journal is a JSON file (`root-journal.json` in the dev state dir,
//! `journal.json` in the helper's root state dir) holding the bridges
//! (name, address, prefix, whether its MAC was written), taps (name,
//! bridge, the tun owner made with, ifindex), whether banger's nft tables were
//! installed (and which guests they masquerade), the links
//! whose resolver settings banger changed, VMM processes, dm-snapshot
//! devices, the disk tools' outstanding ACL grants, and whether banger
//! turned IPv4 forwarding on. It is written atomically: a
//! temporary file in the same directory, fsync, rename, fsync of the
//! directory; mode 0600. An entry is written *before* the object is created,
//! so a crash leaves a record rather than an orphan.
//!
//! The serde types below live in the executor, not in `banger-proto`. That is
//! a deliberate, documented exception to "only the protocol crate defines
//! serializable types": the journal is the executor's private state on the
//! root-owned disk and never crosses a socket.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use banger_host::net::Ipv4Cidr;
use serde::{Deserialize, Serialize};

/// Format version of the journal file; a newer file is refused untouched.
/// 2: taps carry their `ifindex` (issue #13 F3). A version-1 file is read
/// (its taps without one fall back to the tun-owner check) and written
/// back as 2, so a helper from before the field says "newer version"
/// rather than failing to parse it.
/// 3: `grants`, the disk tools' outstanding ACL grants;
/// `ip_forward_enabled`; bridges' `ifindex`; and a VMM entry's jail uid
/// (`VmmEntry::uid`, issue #13 finding 11). Older files are read (no
/// grants, forwarding not banger's, a VMM with no uid ran as the owner).
/// 4: `dm_origins`, the image each dm disk is a snapshot of (final review
/// finding 1: no longer read from the owner's `root.origin`). Older files
/// are read (their VMs' image ids taken once from the checked marker) and
/// written back as 4.
/// 5: two shapes, from two branches that each took 5: a VMM entry's `tap`,
/// the tap handed to the VMM's uid for its launch (Firecracker jail design,
/// part 2 step 2), given back to root when the VMM is gone, taps journaled
/// from then on with `owner_uid` 0; or `vm_cgroups`, the per-VM cgroups
/// root made (each journaled before its `mkdirat`, removed after its
/// `rmdir`), and a VMM entry's `cgroup` (the one it runs in: what the
/// start-up sweep spares).
/// 6: both. Every field the two 5s added has a default, so a file of
/// either shape (or older) reads: no handed tap (the start-up sweep gives
/// back any idle tap), no cgroup (the sweep removes any `vm-*` beneath the
/// executor's cgroup that no re-adoptable VMM names); it is written back
/// as 6.
/// 7: a VMM entry's `console_offset` (the console's length at its launch,
/// where a re-adoption watches for the guest's ready line). Older files
/// read with none (adopted unwatched) and are written back as 7.
pub const JOURNAL_VERSION: u32 = 7;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} has journal version {version}; this build knows up to {JOURNAL_VERSION}")]
    NewerVersion { path: PathBuf, version: u32 },
    #[error("creating directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeEntry {
    pub name: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// `EnsureBridge` has written the bridge's MAC (item 18), so a MAC
    /// that matches is its own, not one it follows from a port. Absent
    /// (false) in entries from before: the MAC is then written once even
    /// when it matches (item 19).
    #[serde(default)]
    pub mac_set: bool,
    /// The bridge's interface index, recorded once it exists: what makes
    /// a link of this name banger's bridge (threat-model item 14, as for
    /// taps). `None` between the entry and the creation, and in entries
    /// written before it was kept: then name and kind decide, as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifindex: Option<u32>,
}

impl BridgeEntry {
    pub fn cidr(&self) -> Ipv4Cidr {
        Ipv4Cidr::new(self.address, self.prefix_len)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapEntry {
    pub name: String,
    pub bridge: String,
    /// The tun owner the tap was made with: 0 (root) for taps made since
    /// version 5, whose idle taps are root's; the owner's uid in older
    /// entries, which keep it (the identity fallback below compares it).
    pub owner_uid: u32,
    /// The tap's interface index, recorded once it exists: what makes a
    /// link of this name banger's tap (issue #13 F3: its tun owner is not,
    /// as whoever may attach to the tap can change it). `None` between the
    /// entry and the creation, and in journals written before it was kept:
    /// then the tun owner is checked instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifindex: Option<u32>,
}

/// The journal's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    pub version: u32,
    pub bridges: Vec<BridgeEntry>,
    pub taps: Vec<TapEntry>,
    /// banger's nft tables (`inet banger`, `bridge banger`) were installed.
    pub firewall: bool,
    /// Guests the installed firewall masquerades.
    pub nat_guests: Vec<Ipv4Addr>,
    /// Links whose systemd-resolved settings banger changed.
    pub resolver_links: Vec<String>,
    /// VMM processes the executor launched and has not seen exit.
    #[serde(default)]
    pub vmms: Vec<VmmEntry>,
    /// The devices of dm-snapshot root disks, one entry per VM.
    #[serde(default)]
    pub snapshots: Vec<SnapshotEntry>,
    /// VMs whose root disk is a dm-snapshot (a COW file the executor made),
    /// from `CreateVmDisks` to `DeleteVmDisks`, whether or not its devices
    /// exist right now. Which backend serves a VM is decided from this and
    /// `snapshots`, never from files in the owner-writable VM directory.
    #[serde(default)]
    pub dm_disks: Vec<String>,
    /// The image each of `dm_disks` is a snapshot of (VM id → image id),
    /// recorded when root creates the disk: what attach rebuilds the
    /// devices from. The owner's `root.origin` marker is read only for a
    /// VM from before this record (then recorded), and only as the owner's
    /// single-link file.
    #[serde(default)]
    pub dm_origins: BTreeMap<String, String>,
    /// Disk-tool grants made and not yet revoked (one entry per grant),
    /// each written before its ACL is set: what the executor puts back at
    /// start after a crash.
    #[serde(default)]
    pub grants: Vec<GrantEntry>,
    /// `EnsureBridge` turned IPv4 forwarding on (it was off): teardown
    /// turns it back off once no bridge is left, if it is still on.
    #[serde(default)]
    pub ip_forward_enabled: bool,
    /// Per-VM cgroups (`vm-<id>`, beneath the executor's delegated
    /// cgroup: `vm::cgroup`) made and not yet removed, each written before
    /// its `mkdirat`; one whose removal failed stays for the next start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vm_cgroups: Vec<String>,
}

/// One outstanding grant of a disk to the tool uid (`vm::jailed`): the
/// disk, the inode granted and what it had before any grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantEntry {
    pub vm_id: String,
    /// A file of the VM directory (`root.ext4`, `work.ext4`) or the VM's
    /// dm-snapshot device (`banger-<vm_id>`).
    pub disk: String,
    pub dev: u64,
    pub ino: u64,
    /// Permission bits before the first grant.
    pub mode: u32,
    /// The exact `system.posix_acl_access` bytes before the first grant;
    /// `None`: there was no access ACL.
    pub acl: Option<Vec<u8>>,
    /// The disk's owner and group at the grant: a restore puts `mode` back
    /// only while both still match. `None` (an entry from before they were
    /// journaled): the set-id bits are not put back.
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
    /// Starts that failed to put this grant back (`vm::jailed`): dropped
    /// after the last allowed one.
    #[serde(default)]
    pub failed_starts: u32,
}

/// The kernel devices of one VM's dm-snapshot root disk. Each field is set
/// (and the journal saved) before the device is created, and cleared only
/// once it is gone; teardown removes them in reverse order: `dm`, `cow`,
/// `origin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotEntry {
    pub vm_id: String,
    /// The image's root filesystem on a read-only loop device: the origin.
    pub origin: Option<LoopEntry>,
    /// The VM's copy-on-write file on a loop device.
    pub cow: Option<LoopEntry>,
    /// The dm-snapshot device, `banger-<vm_id>`.
    pub dm: Option<String>,
}

impl SnapshotEntry {
    pub fn is_empty(&self) -> bool {
        self.origin.is_none() && self.cow.is_none() && self.dm.is_none()
    }
}

/// A loop device and the file it was set up on. A loop device whose
/// backing file (by device and inode) is not this one is no longer ours and
/// is never detached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopEntry {
    /// `/dev/loop<N>`.
    pub device: String,
    /// The file's path when it was attached; for people and logs only.
    pub backing: PathBuf,
    /// The backing file's filesystem device, as `LOOP_GET_STATUS64`
    /// reports it (`lo_device`).
    pub backing_dev: u64,
    /// The backing file's inode (`lo_inode`).
    pub backing_ino: u64,
}

/// A VMM process: re-adopted after a restart only if `pid` still has
/// `start_time` (so a recycled pid is never mistaken for it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmmEntry {
    pub vm_id: String,
    pub pid: u32,
    /// `/proc/<pid>/stat` field 22 (clock ticks since boot).
    pub start_time: u64,
    pub vmm: banger_proto::vmops::VmmKind,
    /// The jail uid (and gid) the VMM runs as: its VM's slot of the
    /// install's range, held while this entry is. `None` for a VMM that
    /// runs as the owner (Firecracker; any VMM journaled by version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The per-VM cgroup it runs in (`vm-<id>`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The journaled tap handed to the VMM's uid for its launch
    /// (`vm::taps`): given back to root once this VMM is gone. `None`: no
    /// tap was handed (QEMU gets its tap as root's descriptor; entries
    /// journaled by version 4 or older).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    /// The serial console's length at the launch: a re-adopted VMM's
    /// guest readiness is watched from there (`banger_vmm::driver::Found`).
    /// `None`: not watched (entries journaled before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_offset: Option<u64>,
}

impl Default for Journal {
    fn default() -> Self {
        Journal {
            version: JOURNAL_VERSION,
            bridges: Vec::new(),
            taps: Vec::new(),
            firewall: false,
            nat_guests: Vec::new(),
            resolver_links: Vec::new(),
            vmms: Vec::new(),
            snapshots: Vec::new(),
            dm_disks: Vec::new(),
            dm_origins: BTreeMap::new(),
            grants: Vec::new(),
            ip_forward_enabled: false,
            vm_cgroups: Vec::new(),
        }
    }
}

impl Journal {
    pub fn bridge(&self, name: &str) -> Option<&BridgeEntry> {
        self.bridges.iter().find(|b| b.name == name)
    }

    pub fn tap(&self, name: &str) -> Option<&TapEntry> {
        self.taps.iter().find(|t| t.name == name)
    }

    pub fn upsert_bridge(&mut self, entry: BridgeEntry) {
        match self.bridges.iter_mut().find(|b| b.name == entry.name) {
            Some(b) => *b = entry,
            None => self.bridges.push(entry),
        }
    }

    pub fn upsert_tap(&mut self, entry: TapEntry) {
        match self.taps.iter_mut().find(|t| t.name == entry.name) {
            Some(t) => *t = entry,
            None => self.taps.push(entry),
        }
    }

    pub fn remove_bridge(&mut self, name: &str) {
        self.bridges.retain(|b| b.name != name);
    }

    pub fn remove_tap(&mut self, name: &str) {
        self.taps.retain(|t| t.name != name);
    }

    pub fn snapshot(&self, vm_id: &str) -> Option<&SnapshotEntry> {
        self.snapshots.iter().find(|e| e.vm_id == vm_id)
    }

    /// The VM's snapshot entry, added (empty) when there is none.
    pub fn snapshot_mut(&mut self, vm_id: &str) -> &mut SnapshotEntry {
        let i = match self.snapshots.iter().position(|e| e.vm_id == vm_id) {
            Some(i) => i,
            None => {
                self.snapshots.push(SnapshotEntry {
                    vm_id: vm_id.to_string(),
                    origin: None,
                    cow: None,
                    dm: None,
                });
                self.snapshots.len() - 1
            }
        };
        &mut self.snapshots[i]
    }

    /// Whether the root disk of `vm_id` is a dm-snapshot: it is listed in
    /// `dm_disks` or has journaled devices.
    pub fn is_dm_disk(&self, vm_id: &str) -> bool {
        self.dm_disks.iter().any(|v| v == vm_id) || self.snapshot(vm_id).is_some()
    }

    /// Drop the entries whose devices are all gone.
    pub fn prune_snapshots(&mut self) {
        self.snapshots.retain(|e| !e.is_empty());
    }
}

/// The journal file plus the lock that serializes every operation that
/// reads or changes it (one network op at a time per executor).
#[derive(Debug)]
pub struct JournalFile {
    path: PathBuf,
    lock: Mutex<()>,
}

/// A locked, loaded journal. Changes are kept by [`Txn::save`].
#[derive(Debug)]
pub struct Txn<'a> {
    _guard: MutexGuard<'a, ()>,
    path: &'a Path,
    pub state: Journal,
}

impl JournalFile {
    pub fn new(path: PathBuf) -> JournalFile {
        JournalFile {
            path,
            lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lock and load. A missing file is an empty journal.
    pub fn open(&self) -> Result<Txn<'_>, JournalError> {
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let state = load(&self.path)?;
        Ok(Txn {
            _guard: guard,
            path: &self.path,
            state,
        })
    }
}

impl Txn<'_> {
    pub fn save(&self) -> Result<(), JournalError> {
        store(self.path, &self.state)
    }
}

/// The journaled VMMs that run as a jail uid, as the start-up sweep
/// (`banger_host::jail::kill_range`) spares them: the executor re-adopts
/// them once it runs. Read without the lock: the executor is not running
/// yet.
pub fn jailed_vmms(path: &Path) -> Result<Vec<banger_host::jail::Spare>, JournalError> {
    Ok(load(path)?
        .vmms
        .iter()
        .filter_map(|e| {
            Some(banger_host::jail::Spare {
                pid: e.pid,
                start_time: e.start_time,
                uid: e.uid?,
            })
        })
        .collect())
}

fn load(path: &Path) -> Result<Journal, JournalError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Journal::default()),
        Err(source) => {
            return Err(JournalError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    // Check the version before the shape, so a newer file is reported as
    // newer rather than as unparseable.
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let parse = |source| JournalError::Parse {
        path: path.to_path_buf(),
        source,
    };
    let Version { version } = serde_json::from_str(&text).map_err(parse)?;
    if version > JOURNAL_VERSION {
        return Err(JournalError::NewerVersion {
            path: path.to_path_buf(),
            version,
        });
    }
    let mut journal: Journal = serde_json::from_str(&text).map_err(parse)?;
    // Every older version reads as this one (each later field has a
    // default); what is saved is this version.
    journal.version = JOURNAL_VERSION;
    Ok(journal)
}

fn store(path: &Path, journal: &Journal) -> Result<(), JournalError> {
    let write_err = |source| JournalError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| JournalError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    let mut text = serde_json::to_string_pretty(journal).expect("the journal always serializes");
    text.push('\n');
    // NamedTempFile creates the file 0600 in the same directory, so the
    // rename below is atomic and the journal is never world-readable.
    let mut tmp = tempfile::Builder::new()
        .prefix(".journal.")
        .tempfile_in(dir)
        .map_err(write_err)?;
    tmp.write_all(text.as_bytes()).map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trips_atomically_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/journal.json");
        let file = JournalFile::new(path.clone());
        let mut txn = file.open().unwrap();
        assert_eq!(txn.state, Journal::default());
        txn.state.upsert_bridge(BridgeEntry {
            name: "banger0".into(),
            address: Ipv4Addr::new(10, 0, 0, 1),
            prefix_len: 24,
            mac_set: true,
            ifindex: None,
        });
        txn.save().unwrap();
        drop(txn);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        let txn = file.open().unwrap();
        assert_eq!(txn.state.bridges.len(), 1);
        // No temporary files are left beside it.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["journal.json"]);
    }

    /// Item 18: the tap `ifindex` field came without a version bump, so a
    /// helper from before it refused the newer journal as unparseable
    /// instead of as newer. Version 2 has the field; a version-1 journal
    /// (none, or the field written before the bump) is read, and written
    /// back as the current version.
    #[test]
    fn a_version_1_journal_is_read_and_written_back_as_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        std::fs::write(
            &path,
            r#"{"version": 1, "bridges": [], "firewall": false, "nat_guests": [],
                "resolver_links": [],
                "taps": [{"name": "bangertap0", "bridge": "banger0", "owner_uid": 4242},
                         {"name": "bangertap1", "bridge": "banger0", "owner_uid": 4242,
                          "ifindex": 7}]}"#,
        )
        .unwrap();
        let file = JournalFile::new(path.clone());
        let txn = file.open().unwrap();
        assert_eq!(txn.state.taps[0].ifindex, None);
        assert_eq!(txn.state.taps[1].ifindex, Some(7));
        txn.save().unwrap();
        drop(txn);
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(written["version"], JOURNAL_VERSION, "{written}");
        assert_eq!(written["taps"][1]["ifindex"], 7, "{written}");
        assert_eq!(written["grants"], serde_json::json!([]), "{written}");
        assert_eq!(written["dm_origins"], serde_json::json!({}), "{written}");
        assert_eq!(Journal::default().version, JOURNAL_VERSION);
    }

    /// Finding 11: a VMM entry records its jail uid (version 3). A
    /// version-2 entry (a VMM running as the owner) reads with none and is
    /// written back at this version unchanged; a version-3 one keeps its uid.
    #[test]
    fn a_version_2_vmm_entry_reads_without_a_jail_uid_and_a_version_3_one_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        std::fs::write(
            &path,
            r#"{"version": 2, "bridges": [], "taps": [], "firewall": false,
                "nat_guests": [], "resolver_links": [],
                "vmms": [{"vm_id": "a", "pid": 10, "start_time": 5, "vmm": "firecracker"}]}"#,
        )
        .unwrap();
        let file = JournalFile::new(path.clone());
        let mut txn = file.open().unwrap();
        assert_eq!(txn.state.vmms[0].uid, None);
        txn.state.vmms.push(VmmEntry {
            vm_id: "b".into(),
            pid: 11,
            start_time: 6,
            vmm: banger_proto::vmops::VmmKind::Qemu,
            uid: Some(1_990_000_001),
            cgroup: None,
            tap: None,
            console_offset: None,
        });
        txn.save().unwrap();
        drop(txn);
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(written["version"], JOURNAL_VERSION, "{written}");
        assert!(written["vmms"][0].get("uid").is_none(), "{written}");
        assert_eq!(written["vmms"][1]["uid"], 1_990_000_001u32, "{written}");
        let txn = file.open().unwrap();
        assert_eq!(txn.state.vmms[1].uid, Some(1_990_000_001));
    }

    /// Firecracker jail design, part 2 step 2: a VMM entry names the tap
    /// handed to its uid (main's version 5). A version-4 entry reads with
    /// none, its tap entry keeps the owner's uid it was made for, and both
    /// are written back at this version; a new entry keeps its tap.
    #[test]
    fn a_version_4_vmm_entry_reads_without_a_handed_tap_and_a_new_one_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        std::fs::write(
            &path,
            r#"{"version": 4, "bridges": [], "firewall": false, "nat_guests": [],
                "resolver_links": [],
                "taps": [{"name": "bangertap0", "bridge": "banger0", "owner_uid": 4242,
                          "ifindex": 7}],
                "vmms": [{"vm_id": "a", "pid": 10, "start_time": 5, "vmm": "firecracker"}]}"#,
        )
        .unwrap();
        let file = JournalFile::new(path.clone());
        let mut txn = file.open().unwrap();
        assert_eq!(txn.state.vmms[0].tap, None);
        assert_eq!(txn.state.vmms[0].cgroup, None);
        assert!(txn.state.vm_cgroups.is_empty());
        assert_eq!(txn.state.taps[0].owner_uid, 4242);
        txn.state.vmms.push(VmmEntry {
            vm_id: "b".into(),
            pid: 11,
            start_time: 6,
            vmm: banger_proto::vmops::VmmKind::Firecracker,
            uid: None,
            cgroup: None,
            tap: Some("bangertap1".into()),
            console_offset: None,
        });
        txn.save().unwrap();
        drop(txn);
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(written["version"], JOURNAL_VERSION, "{written}");
        assert!(written["vmms"][0].get("tap").is_none(), "{written}");
        assert!(written["vmms"][0].get("cgroup").is_none(), "{written}");
        assert!(written.get("vm_cgroups").is_none(), "{written}");
        assert_eq!(written["vmms"][1]["tap"], "bangertap1", "{written}");
        assert_eq!(written["taps"][0]["owner_uid"], 4242, "{written}");
        let txn = file.open().unwrap();
        assert_eq!(txn.state.vmms[1].tap.as_deref(), Some("bangertap1"));
    }

    /// Design part 3: per-VM cgroups (version 5's cgroup shape, see
    /// `JOURNAL_VERSION`). A journal of that shape — `vm_cgroups` and a
    /// VMM's `cgroup`, no handed tap — reads with its cgroups kept and no
    /// tap handed, and is written back at this version with both records.
    #[test]
    fn a_version_5_journal_with_cgroups_reads_and_keeps_them_at_this_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        std::fs::write(
            &path,
            r#"{"version": 5, "bridges": [], "firewall": false, "nat_guests": [],
                "resolver_links": [], "dm_origins": {},
                "taps": [{"name": "bangertap0", "bridge": "banger0", "owner_uid": 4242,
                          "ifindex": 7}],
                "vm_cgroups": ["vm-a"],
                "vmms": [{"vm_id": "a", "pid": 10, "start_time": 5, "vmm": "qemu",
                          "uid": 1990000001, "cgroup": "vm-a"}]}"#,
        )
        .unwrap();
        let file = JournalFile::new(path.clone());
        let txn = file.open().unwrap();
        assert_eq!(txn.state.vm_cgroups, ["vm-a"]);
        assert_eq!(txn.state.vmms[0].cgroup.as_deref(), Some("vm-a"));
        assert_eq!(txn.state.vmms[0].tap, None);
        assert_eq!(txn.state.taps[0].owner_uid, 4242);
        txn.save().unwrap();
        drop(txn);
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(written["version"], JOURNAL_VERSION, "{written}");
        assert_eq!(
            written["vm_cgroups"],
            serde_json::json!(["vm-a"]),
            "{written}"
        );
        assert_eq!(written["vmms"][0]["cgroup"], "vm-a", "{written}");
        assert!(written["vmms"][0].get("tap").is_none(), "{written}");
    }

    /// Main's version 5 (a handed tap, no cgroups) reads with its tap kept
    /// and no cgroup anywhere, and is written back at this version; its
    /// VMM has no console offset (adopted unwatched).
    #[test]
    fn a_version_5_journal_with_a_handed_tap_reads_and_keeps_it_at_this_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        std::fs::write(
            &path,
            r#"{"version": 5, "bridges": [], "firewall": false, "nat_guests": [],
                "resolver_links": [], "dm_origins": {},
                "taps": [{"name": "bangertap0", "bridge": "banger0", "owner_uid": 0,
                          "ifindex": 7}],
                "vmms": [{"vm_id": "a", "pid": 10, "start_time": 5, "vmm": "firecracker",
                          "tap": "bangertap0"}]}"#,
        )
        .unwrap();
        let file = JournalFile::new(path.clone());
        let mut txn = file.open().unwrap();
        assert_eq!(txn.state.vmms[0].tap.as_deref(), Some("bangertap0"));
        assert_eq!(txn.state.vmms[0].cgroup, None);
        assert_eq!(txn.state.vmms[0].console_offset, None);
        assert!(txn.state.vm_cgroups.is_empty());
        txn.state.vm_cgroups.push("vm-b".into());
        txn.save().unwrap();
        drop(txn);
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(written["version"], JOURNAL_VERSION, "{written}");
        assert_eq!(written["vmms"][0]["tap"], "bangertap0", "{written}");
        assert!(written["vmms"][0].get("cgroup").is_none(), "{written}");
        let txn = file.open().unwrap();
        assert_eq!(txn.state.vm_cgroups, ["vm-b"]);
    }

    #[test]
    fn a_journal_newer_than_this_version_is_refused_as_newer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        let v8 = r#"{"version": 8, "bridges": [], "taps": [], "firewall": false,
                     "nat_guests": [], "resolver_links": [], "later": []}"#;
        std::fs::write(&path, v8).unwrap();
        let err = JournalFile::new(path.clone()).open().unwrap_err();
        assert!(
            matches!(err, JournalError::NewerVersion { version: 8, .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{} has journal version 8; this build knows up to 7",
                path.display()
            )
        );
        // Refused untouched.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), v8);
    }

    #[test]
    fn newer_and_corrupt_journals_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        std::fs::write(&path, r#"{"version": 99, "whatever": true}"#).unwrap();
        let err = JournalFile::new(path.clone()).open().unwrap_err();
        assert!(
            matches!(err, JournalError::NewerVersion { version: 99, .. }),
            "{err}"
        );
        std::fs::write(&path, "{not json").unwrap();
        let err = JournalFile::new(path).open().unwrap_err();
        assert!(matches!(err, JournalError::Parse { .. }), "{err}");
    }
}
