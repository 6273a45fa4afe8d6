//! Per-VM cgroups (docs/firecracker-jail-design.md section 3): each jailed
//! VMM runs in `vm-<id>`, a cgroup2 directory root makes beneath the one
//! cgroup delegated to the executor, held as a directory descriptor
//! ([`VmCgroups`]):
//!
//! * system mode: the cgroup of the holder unit `banger-vms.service`
//!   (`banger_proto::install::VMS_UNIT`: `Delegate=pids memory cpu`, runs
//!   nothing, never restarted by banger), the sibling of the helper unit's
//!   own cgroup, which the helper's `ReadWritePaths=` names. The helper
//!   enables the wanted controllers the holder has for its children there;
//!   its own unit's cgroup is left alone (no `Delegate=`, no child cgroup,
//!   an empty `cgroup.subtree_control`), so systemd can always put a
//!   restarted helper's new main process in it;
//! * dev mode (always), and a helper not running as its unit: `banger-<16 hex>`
//!   beneath the daemon's own cgroup, named after its journal's path
//!   ([`dev_name`]): one per journal, so daemons of other state
//!   directories never sweep each other's VMs, and a restarted daemon
//!   finds the cgroups its journal records. Made when that cgroup can be
//!   written.
//!
//! Each VM's cgroup is journaled before its `mkdirat`, gets the limits
//! its controllers allow, and its `cgroup.procs` goes to the jail
//! (`Jail::cgroup`: the child joins it before it drops its ids). Once the
//! VMM is seen gone: `cgroup.kill`, `populated 0` in `cgroup.events`
//! (bounded), `rmdir`, then the journal record goes; a failure keeps the
//! record for the next start, whose sweep kills and removes every `vm-*`
//! no re-adopted VMM runs in. Without a delegated cgroup or without
//! controllers a VMM is bounded by its rlimits only, as before.

use std::io::Read as _;
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::VmHost;
use super::error::{VmOpError, journal_err};
use crate::journal::Txn;

/// The prefix of a VM's cgroup: `vm-` and its 32-hex id.
pub const VM_PREFIX: &str = "vm-";
/// The child the previous layout moved the helper into, beneath the
/// helper unit's own cgroup (reported at start when found, see
/// [`VmCgroups::system`]).
const OLD_HELPER: &str = "helper";
/// The controllers a VM's cgroup is given, where the delegated cgroup has them.
pub const CONTROLLERS: [&str; 3] = VmCgroups::CONTROLLERS;
/// How long a killed cgroup gets to empty before `rmdir`.
pub(super) const EMPTY_WAIT: Duration = Duration::from_secs(2);
/// `cpu.max`'s period, in microseconds.
const CPU_PERIOD: u64 = 100_000;

/// No symlink, nothing above the held directory, no mount crossed.
const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("finding this process's cgroup2 directory")]
    Own(#[source] std::io::Error),
    #[error("opening the cgroup {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a root-owned cgroup2 directory: {why}")]
    NotDelegated { path: PathBuf, why: String },
    #[error("making the cgroup {name} in {path}")]
    Make {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {file} = {value} in the cgroup {name}")]
    Limit {
        name: String,
        file: &'static str,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} the cgroup {name}")]
    Vm {
        what: &'static str,
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the cgroup {name} still has processes {} s after cgroup.kill", EMPTY_WAIT.as_secs())]
    StillPopulated { name: String },
    /// The helper in its unit found the holder unit's cgroup unusable
    /// (not started, failed, stopped since): [`CgroupError::is_holder`].
    #[error(
        "the VM cgroup holder {} is not usable (is it running? `systemctl start {}`, then `banger system restart`; \
         if it is running or fails to start, the cgroup2 layout or the units' slice changed since install: \
         run `sudo banger system install` again)",
        banger_proto::install::VMS_UNIT,
        banger_proto::install::VMS_UNIT
    )]
    Holder(#[source] Box<CgroupError>),
}

impl CgroupError {
    /// The helper in the helper unit could not hold the holder unit's
    /// cgroup: it must not start, or its VMMs would run without cgroups
    /// until its next restart while everything looked healthy (hostile
    /// read of the holder, L2). Any other error (no cgroup2, a dev
    /// daemon's cgroup) leaves VMMs their rlimits only, with a warning.
    pub fn is_holder(&self) -> bool {
        matches!(self, CgroupError::Holder(_))
    }
}

/// The limits of one VM's cgroup, from the same numbers as its VMM's
/// rlimits (`banger_vmm::qemu::memory_limit`, `process_limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmLimits {
    /// `memory.max`: guest memory plus the VMM's overhead.
    pub memory: u64,
    /// `pids.max`: the VMM's `RLIMIT_NPROC`.
    pub processes: u32,
    /// `cpu.max`: one CPU more than the guest's vCPUs.
    pub vcpus: u32,
}

impl VmLimits {
    /// (controller, file, value) of every limit: `memory.oom.group` 1 (an
    /// OOM kill takes the whole VMM), `memory.swap.max` 0, `cpu.max`
    /// `(vcpus + 1) × period`.
    pub fn files(&self) -> [(&'static str, &'static str, String); 5] {
        [
            ("memory", "memory.max", self.memory.to_string()),
            ("memory", "memory.swap.max", "0".into()),
            ("memory", "memory.oom.group", "1".into()),
            ("pids", "pids.max", self.processes.to_string()),
            (
                "cpu",
                "cpu.max",
                format!("{} {CPU_PERIOD}", (u64::from(self.vcpus) + 1) * CPU_PERIOD),
            ),
        ]
    }
}

/// The cgroup the executor makes VMs' cgroups in, held open.
#[derive(Debug)]
pub struct VmCgroups {
    dir: OwnedFd,
    path: PathBuf,
    /// Of [`CONTROLLERS`], those enabled for its children.
    controllers: Vec<String>,
}

/// The dev-mode cgroup of the executor whose journal is `journal`:
/// `banger-` and the 64-bit FNV-1a hash of the path's bytes, in hex.
pub fn dev_name(journal: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    let hash = journal
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("banger-{hash:016x}")
}

/// A VM's cgroup name, `vm-<id>`, for a checked 32-hex VM id.
pub fn name_of(vm_id: &str) -> String {
    format!("{VM_PREFIX}{vm_id}")
}

/// Whether `name` is a VM cgroup's name: `vm-` and 32 lowercase hex.
pub fn is_vm_name(name: &str) -> bool {
    name.strip_prefix(VM_PREFIX)
        .is_some_and(banger_proto::ids::is_id)
}

/// Which daemon holds the executor, and so which placement it may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// `bangerd-root`: the holder's cgroup when it runs as the helper unit.
    Helper,
    /// `bangerd --dev`: always beneath its own cgroup.
    Dev,
}

/// Where an executor's VM cgroups go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The holder unit's cgroup, beside the helper unit's ([`VmCgroups::system`]).
    System,
    /// [`dev_name`] beneath the process's own cgroup ([`VmCgroups::dev`]).
    Dev,
}

/// The placement for a process whose own cgroup2 directory is `own`: the
/// holder's cgroup only for the helper, and only when `own` is the helper
/// unit's (`banger_proto::install::HELPER_UNIT`); no other unit's cgroup
/// (a CI runner's, a dev daemon's own service), nor its siblings, is ever
/// taken over.
pub fn placement(own: &Path, holder: Holder) -> Placement {
    let helper_unit = own
        .file_name()
        .is_some_and(|n| n == std::ffi::OsStr::new(banger_proto::install::HELPER_UNIT));
    match holder {
        Holder::Helper if helper_unit => Placement::System,
        Holder::Helper | Holder::Dev => Placement::Dev,
    }
}

impl VmCgroups {
    /// The controllers per-VM limits use (the holder unit's `Delegate=`).
    pub const CONTROLLERS: [&'static str; 3] = ["memory", "pids", "cpu"];

    /// The executor's cgroup, where [`placement`] puts it for `holder`:
    /// the holder unit's ([`VmCgroups::system`]), or [`dev_name`]`(journal)`
    /// beneath this process's own cgroup ([`VmCgroups::dev`]: a daemon
    /// started by hand, by a test or by another unit never takes over, or
    /// sweeps, the cgroup it was started in).
    pub fn delegated(journal: &Path, holder: Holder) -> Result<VmCgroups, CgroupError> {
        let own = banger_host::probe::own_cgroup2_dir().map_err(CgroupError::Own)?;
        match placement(&own, holder) {
            Placement::System => {
                VmCgroups::system(&own).map_err(|e| CgroupError::Holder(Box::new(e)))
            }
            Placement::Dev => VmCgroups::dev(journal),
        }
    }

    /// System mode: the holder's cgroup (`banger_proto::install::VMS_UNIT`),
    /// the sibling of `own` (the helper unit's cgroup, this process's):
    /// their parent (the slice, root's) held first, the holder opened
    /// beneath it without links, both checked to be root-owned cgroup2
    /// directories of one hierarchy (same device); then the controllers
    /// are enabled there. The one mount crossed is the helper unit's
    /// `ReadWritePaths=` bind of the holder's own directory (writable
    /// beneath the read-only `ProtectControlGroups=`), so this open, unlike
    /// every other beneath a held cgroup, allows crossing a mount. Nothing
    /// is moved and nothing is made in `own`: it stays a leaf, so systemd
    /// can put a restarted helper in it. Child cgroups found in `own` (the
    /// previous layout's `helper/` and `vm-*`, which this helper can no
    /// longer write) are reported, never touched.
    pub fn system(own: &Path) -> Result<VmCgroups, CgroupError> {
        let not_under = || CgroupError::NotDelegated {
            path: own.to_path_buf(),
            why: "a cgroup without a parent".into(),
        };
        let slice = own.parent().ok_or_else(not_under)?;
        let slice_dir = hold(slice)?;
        let path = slice.join(banger_proto::install::VMS_UNIT);
        let dir = rustix::fs::openat2(
            &slice_dir,
            banger_proto::install::VMS_UNIT,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| CgroupError::Open {
            path: path.clone(),
            source: e.into(),
        })?;
        check_delegated(dir.as_fd(), &path)?;
        let stat = |fd: BorrowedFd<'_>| {
            rustix::fs::fstat(fd).map_err(|e| CgroupError::Open {
                path: path.clone(),
                source: e.into(),
            })
        };
        let (holder_dev, slice_dev) = (stat(dir.as_fd())?.st_dev, stat(slice_dir.as_fd())?.st_dev);
        if holder_dev != slice_dev {
            return Err(CgroupError::NotDelegated {
                path,
                why: format!("device {holder_dev:#x}, not its slice's {slice_dev:#x}"),
            });
        }
        let left = old_layout(own);
        if !left.is_empty() {
            tracing::warn!(
                cgroup = %own.display(),
                children = ?left,
                "child cgroups of the helper's own unit (a previous layout's helper/ and vm-*): \
                 left alone; their VMMs are re-adopted but keep those cgroups, and a restart of \
                 the helper can fail with EBUSY where controllers are enabled there; stop those \
                 VMs, or run `banger system uninstall`"
            );
        }
        Ok(VmCgroups::with_controllers(dir, path))
    }

    /// Dev mode: [`dev_name`]`(journal)` beneath this process's cgroup,
    /// made when missing.
    pub fn dev(journal: &Path) -> Result<VmCgroups, CgroupError> {
        let own = banger_host::probe::own_cgroup2_dir().map_err(CgroupError::Own)?;
        let name = dev_name(journal);
        let own_dir = hold(&own)?;
        make_dir(&own_dir, &name, &own)?;
        let path = own.join(&name);
        let dir = open_beneath(&own_dir, &name, OFlags::DIRECTORY | OFlags::RDONLY).map_err(
            |source| CgroupError::Open {
                path: path.clone(),
                source,
            },
        )?;
        check_delegated(dir.as_fd(), &path)?;
        Ok(VmCgroups::with_controllers(dir, path))
    }

    /// Hold `dir` (tests: a cgroup they made) with the controllers it can
    /// give its children enabled.
    pub fn at(path: &Path) -> Result<VmCgroups, CgroupError> {
        Ok(VmCgroups::with_controllers(hold(path)?, path.to_path_buf()))
    }

    /// Enable those of [`CONTROLLERS`] that `dir` has for its children; what
    /// could not be enabled is logged, and limits are then written only
    /// for the controllers each VM's cgroup lists.
    fn with_controllers(dir: OwnedFd, path: PathBuf) -> VmCgroups {
        let have = read_words(&dir, "cgroup.controllers").unwrap_or_default();
        let wanted: Vec<String> = CONTROLLERS
            .iter()
            .filter(|c| have.iter().any(|h| h == *c))
            .map(|c| format!("+{c}"))
            .collect();
        if !wanted.is_empty() {
            let written = open_beneath(&dir, "cgroup.subtree_control", OFlags::WRONLY)
                .and_then(|f| write_all(f.as_fd(), wanted.join(" ").as_bytes()));
            if let Err(e) = written {
                tracing::warn!(cgroup = %path.display(), error = %e, "enabling cgroup controllers for VMs");
            }
        }
        let controllers = read_words(&dir, "cgroup.subtree_control")
            .unwrap_or_default()
            .into_iter()
            .filter(|c| CONTROLLERS.contains(&c.as_str()))
            .collect();
        VmCgroups {
            dir,
            path,
            controllers,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Of [`CONTROLLERS`], those its children get: empty where limits are
    /// unavailable.
    pub fn controllers(&self) -> &[String] {
        &self.controllers
    }

    /// Why per-VM limits are unavailable here, or `None` when all three
    /// controllers are there.
    pub fn limits_unavailable(&self) -> Option<String> {
        let missing: Vec<&str> = CONTROLLERS
            .iter()
            .copied()
            .filter(|c| !self.controllers.iter().any(|h| h == c))
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "the cgroup {} has no {} controller for its children (not delegated, or bound to cgroup v1 on a hybrid host); VMMs are bounded by their rlimits only",
                self.path.display(),
                missing.join("/")
            )
        })
    }

    /// Make `name` (0700, root's) beneath the held cgroup, write `limits`
    /// where its controllers allow, and open its `cgroup.procs` for
    /// writing: with the directory's, the descriptors a jail joins it
    /// through (`Jail::cgroup`). The caller has journaled `name`.
    pub fn create(&self, name: &str, limits: &VmLimits) -> Result<(OwnedFd, OwnedFd), CgroupError> {
        // One left by a removal that failed (its record kept) goes first:
        // a VM's cgroup holds only its current VMM.
        self.remove(name)?;
        make_dir(&self.dir, name, &self.path)?;
        let vm = self.open_vm(name)?;
        let controllers = read_words(&vm, "cgroup.controllers").map_err(vm_err("reading", name))?;
        for (controller, file, value) in limits.files() {
            if !controllers.iter().any(|c| c == controller) {
                continue;
            }
            let written = open_beneath(&vm, file, OFlags::WRONLY)
                .and_then(|f| write_all(f.as_fd(), value.as_bytes()));
            match written {
                // No swap accounting: no memory.swap.max, and no swap to limit.
                Err(e) if file == "memory.swap.max" && e.kind() == std::io::ErrorKind::NotFound => {
                }
                Err(source) => {
                    return Err(CgroupError::Limit {
                        name: name.to_string(),
                        file,
                        value,
                        source,
                    });
                }
                Ok(()) => {}
            }
        }
        let procs = open_beneath(&vm, "cgroup.procs", OFlags::WRONLY)
            .map_err(vm_err("opening cgroup.procs of", name))?;
        Ok((vm, procs))
    }

    /// Kill everything in `name`, wait for it to empty ([`EMPTY_WAIT`])
    /// and remove it. A cgroup already gone is removed.
    pub fn remove(&self, name: &str) -> Result<(), CgroupError> {
        let vm = match self.open_vm(name) {
            Err(CgroupError::Vm { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(());
            }
            r => r?,
        };
        let kill = open_beneath(&vm, "cgroup.kill", OFlags::WRONLY)
            .and_then(|f| write_all(f.as_fd(), b"1"));
        kill.map_err(vm_err("killing", name))?;
        wait_empty(&vm)
            .map_err(vm_err("watching", name))?
            .then_some(())
            .ok_or_else(|| CgroupError::StillPopulated {
                name: name.to_string(),
            })?;
        drop(vm);
        match rustix::fs::unlinkat(&self.dir, name, rustix::fs::AtFlags::REMOVEDIR) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(vm_err("removing", name)(e.into())),
        }
    }

    /// The VM cgroups (`vm-<32 hex>`) beneath the held cgroup.
    pub fn vm_names(&self) -> Result<Vec<String>, CgroupError> {
        let dir = open_beneath(&self.dir, ".", OFlags::DIRECTORY | OFlags::RDONLY)
            .map_err(vm_err("listing", "."))?;
        let mut names = Vec::new();
        for e in rustix::fs::Dir::read_from(&dir).map_err(|e| vm_err("listing", ".")(e.into()))? {
            let e = e.map_err(|e| vm_err("listing", ".")(e.into()))?;
            let name = e.file_name().to_string_lossy();
            if is_vm_name(&name) && e.file_type() == rustix::fs::FileType::Directory {
                names.push(name.into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn open_vm(&self, name: &str) -> Result<OwnedFd, CgroupError> {
        open_beneath(&self.dir, name, OFlags::DIRECTORY | OFlags::RDONLY)
            .map_err(vm_err("opening", name))
    }
}

/// A VM's cgroup made for a launch in flight, removed (killed, emptied,
/// `rmdir`, unjournaled) when dropped unless [`Made::keep`] was called
/// (its VMM is journaled with it).
pub(super) struct Made<'a> {
    host: &'a VmHost,
    pub(super) name: String,
    kept: bool,
}

impl Made<'_> {
    pub(super) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.host.drop_vm_cgroup(&self.name);
        }
    }
}

impl VmHost {
    /// The VM's cgroup for a VMM about to launch, with `limits`, and the
    /// descriptor of its `cgroup.procs`: journaled first (`vm_cgroups`),
    /// then made. `None` without a delegated cgroup.
    pub(super) fn make_vm_cgroup(
        &self,
        vm_id: &str,
        limits: &VmLimits,
    ) -> Result<Option<(Made<'_>, banger_vmm::qemu::CgroupFds)>, VmOpError> {
        let Some(cgroups) = &self.cgroups else {
            return Ok(None);
        };
        let name = name_of(vm_id);
        {
            let mut txn = self.journal.open().map_err(journal_err)?;
            if !txn.state.vm_cgroups.contains(&name) {
                txn.state.vm_cgroups.push(name.clone());
                txn.save().map_err(journal_err)?;
            }
        }
        let made = Made {
            host: self,
            name: name.clone(),
            kept: false,
        };
        let (dir, procs) = cgroups
            .create(&name, limits)
            .map_err(|source| VmOpError::Cgroup {
                vm_id: vm_id.to_string(),
                source,
            })?;
        Ok(Some((made, banger_vmm::qemu::CgroupFds { dir, procs })))
    }

    /// Remove the cgroup `name` and its journal record; a failure is
    /// logged and keeps the record for the next start's sweep.
    pub(super) fn drop_vm_cgroup(&self, name: &str) {
        match self.journal.open() {
            Ok(mut txn) => self.remove_vm_cgroup_in(&mut txn, name),
            Err(e) => {
                tracing::warn!(cgroup = name, error = %e, "not removing a VM cgroup: the journal")
            }
        }
    }

    /// [`VmCgroups::remove`] `name`, then drop its record from `txn`
    /// (saved): called with the journal locked, so no launch journals the
    /// same cgroup meanwhile.
    pub(super) fn remove_vm_cgroup_in(&self, txn: &mut Txn<'_>, name: &str) {
        let Some(cgroups) = &self.cgroups else {
            return;
        };
        if let Err(e) = cgroups.remove(name) {
            tracing::warn!(cgroup = name, error = %banger_proto::error::chain(&e).join(": "), "removing a VM cgroup failed; kept for the next start");
            return;
        }
        if txn.state.vm_cgroups.iter().any(|n| n == name) {
            txn.state.vm_cgroups.retain(|n| n != name);
            if let Err(e) = txn.save() {
                tracing::warn!(cgroup = name, error = %e, "unjournaling a removed VM cgroup");
            }
        }
    }

    /// Start-up sweep, after `kill_range`: every VM cgroup (beneath the
    /// held cgroup, or journaled) that no re-adoptable journaled VMM runs
    /// in is killed and removed. Returns the names removed.
    pub(crate) fn sweep_vm_cgroups(&self) -> Result<Vec<String>, VmOpError> {
        let Some(cgroups) = &self.cgroups else {
            return Ok(Vec::new());
        };
        let mut txn = self.journal.open().map_err(journal_err)?;
        let mut spared = Vec::new();
        for e in &txn.state.vmms {
            let Some(name) = &e.cgroup else { continue };
            // An error reading the process says nothing: it is spared.
            if banger_host::jail::is_journaled(e.pid, e.start_time, e.uid).unwrap_or(true) {
                spared.push(name.clone());
            }
        }
        let mut names = cgroups.vm_names().map_err(|source| VmOpError::Cgroup {
            vm_id: String::new(),
            source,
        })?;
        for n in &txn.state.vm_cgroups {
            if !names.contains(n) && is_vm_name(n) {
                names.push(n.clone());
            }
        }
        let mut removed = Vec::new();
        let journaled = txn.state.vm_cgroups.clone();
        for name in names.iter().filter(|n| !spared.contains(n)) {
            self.remove_vm_cgroup_in(&mut txn, name);
            if !txn.state.vm_cgroups.contains(name) {
                removed.push(name.clone());
            }
        }
        // Saved only when the record changed: a start with nothing to
        // sweep writes no journal (a helper that was asked nothing has
        // changed nothing).
        if txn.state.vm_cgroups != journaled {
            txn.save().map_err(journal_err)?;
        }
        Ok(removed)
    }
}

/// The child cgroups of `own` that the previous layout made there
/// ([`OLD_HELPER`] and `vm-*`): read-only, for the warning at start.
fn old_layout(own: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(own) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n == OLD_HELPER || is_vm_name(n))
        .collect();
    names.sort();
    names
}

fn vm_err(what: &'static str, name: &str) -> impl FnOnce(std::io::Error) -> CgroupError {
    let name = name.to_string();
    move |source| CgroupError::Vm { what, name, source }
}

/// Open `path`, refused unless it is a cgroup2 directory this process's
/// uid owns.
fn hold(path: &Path) -> Result<OwnedFd, CgroupError> {
    let dir = rustix::fs::open(
        path,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| CgroupError::Open {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    check_delegated(dir.as_fd(), path)?;
    Ok(dir)
}

/// `dir` is on cgroup2 and this process's uid owns it.
fn check_delegated(dir: BorrowedFd<'_>, path: &Path) -> Result<(), CgroupError> {
    let not = |why: String| CgroupError::NotDelegated {
        path: path.to_path_buf(),
        why,
    };
    let open = |e: rustix::io::Errno| CgroupError::Open {
        path: path.to_path_buf(),
        source: e.into(),
    };
    let magic = rustix::fs::fstatfs(dir).map_err(open)?.f_type as u64;
    if magic != banger_host::probe::CGROUP2_SUPER_MAGIC {
        return Err(not(format!("f_type {magic:#x}")));
    }
    let st = rustix::fs::fstat(dir).map_err(open)?;
    let me = rustix::process::geteuid().as_raw();
    if st.st_uid != me {
        return Err(not(format!("owned by uid {}, not {me}", st.st_uid)));
    }
    Ok(())
}

/// `mkdirat(dir, name, 0700)`: root's alone whatever the umask (the
/// helper's `UMask=0077`, a dev daemon's 022); nothing but root reads a
/// VM's cgroup (a jail joins it through root's `cgroup.procs`
/// descriptor). One already there is taken (the caller checks what it
/// opens beneath it).
fn make_dir(dir: &OwnedFd, name: &str, path: &Path) -> Result<(), CgroupError> {
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(CgroupError::Make {
            name: name.to_string(),
            path: path.to_path_buf(),
            source: e.into(),
        }),
    }
}

fn open_beneath(dir: &OwnedFd, rel: &str, flags: OFlags) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::openat2(
        dir,
        rel,
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        BENEATH,
    )?)
}

/// One `write` of all of `bytes` (a cgroup file takes a value per write).
fn write_all(fd: BorrowedFd<'_>, bytes: &[u8]) -> std::io::Result<()> {
    let n = rustix::io::write(fd, bytes)?;
    if n != bytes.len() {
        return Err(std::io::Error::other(format!(
            "a short write ({n} of {} bytes)",
            bytes.len()
        )));
    }
    Ok(())
}

/// The words of a cgroup file beneath `dir`.
fn read_words(dir: &OwnedFd, file: &str) -> std::io::Result<Vec<String>> {
    let mut text = String::new();
    std::fs::File::from(open_beneath(dir, file, OFlags::RDONLY)?).read_to_string(&mut text)?;
    Ok(text.split_whitespace().map(str::to_string).collect())
}

/// Wait up to [`EMPTY_WAIT`] for `populated 0` in `vm`'s `cgroup.events`
/// (the kernel signals each change with `POLLPRI`): whether it emptied.
fn wait_empty(vm: &OwnedFd) -> std::io::Result<bool> {
    let events = open_beneath(vm, "cgroup.events", OFlags::RDONLY)?;
    let deadline = Instant::now() + EMPTY_WAIT;
    loop {
        let mut buf = [0u8; 256];
        let n = rustix::io::pread(&events, &mut buf, 0)?;
        let text = String::from_utf8_lossy(&buf[..n]);
        if text.lines().any(|l| l == "populated 0") {
            return Ok(true);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut fds = [rustix::event::PollFd::new(
            &events,
            rustix::event::PollFlags::PRI,
        )];
        // At most 100 ms at a time: a change between the read and the
        // poll is seen at the next read.
        let wait = left.min(Duration::from_millis(100));
        let ts = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: wait.as_nanos() as i64,
        };
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests;
