//! `banger system install`: the orchestration. Decide everything first
//! (owner, metadata, plan, checks), then write with a record of each change,
//! then hand the units to systemd; any failure after the first write undoes
//! what this run did.

use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use banger_host::devguard::DevGuardError;
use banger_host::runner::Runner;
use banger_proto::ErrorCode;
use banger_proto::cidr::Ipv4Cidr;
use banger_proto::install::{
    DEFAULT_INSTALL_FILE, InstallJail, InstallMeta, InstallMetaError, InstallNetwork,
    InstallNetworkError,
};

use super::apply::{self, Action, ApplyError, Txn, Written};
use super::guard::{self, GuardError};
use super::plan::{self, OwnerAccount, PlanError};
use super::systemd::{self, Activation, Systemd, SystemdError};
use super::units::{HELPER_UNIT, OWNER_UNIT, VMS_UNIT};
use super::vmm_bins::{self, VmmBinError};

/// What the command line asked for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub owner: Option<String>,
    pub sudo_user: Option<String>,
    /// Write under this directory and leave the running system alone.
    pub root: Option<PathBuf>,
    pub force: bool,
    /// Where `bangerd`, `bangerd-root` and `banger` are copied from.
    pub bin_source: PathBuf,
    /// The uid running the install.
    pub euid: u32,
    /// `--qemu-bin` / `--firecracker-bin`.
    pub vmm: vmm_bins::Given,
    /// `--bridge` / `--subnet`.
    pub bridge: Option<String>,
    pub subnet: Option<Ipv4Cidr>,
    /// `--jail-uids`.
    pub jail: Option<InstallJail>,
}

/// What an install did.
#[derive(Debug)]
pub struct Report {
    /// `/`, or the `--root` directory.
    pub root: PathBuf,
    pub owner: OwnerAccount,
    pub meta: InstallMeta,
    pub written: Vec<Written>,
    /// `None` with `--root`: the running system was not touched.
    pub services: Option<Activation>,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("jail uids {}:{} are in use (choose another range with --jail-uids BASE:COUNT)", jail.uid_base, jail.count)]
    JailInUse {
        jail: InstallJail,
        #[source]
        source: banger_host::jail::RangeInUse,
    },
    #[error("choose another range with --jail-uids BASE:COUNT")]
    JailRange(#[source] banger_proto::install::InstallJailError),
    #[error("banger system install must run as root (try `sudo banger system install`)")]
    NotRoot,
    #[error("--root {}: no such directory", path.display())]
    RootMissing { path: PathBuf },
    #[error("--root {} is not a directory", path.display())]
    RootNotADir { path: PathBuf },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Vmm(#[from] VmmBinError),
    #[error("--bridge/--subnet")]
    Network(#[source] InstallNetworkError),
    #[error(
        "banger is installed for {name} (uid {uid}) according to {}; refusing to install for {wanted} (pass --force to replace the owner)",
        path.display()
    )]
    OtherOwner {
        path: PathBuf,
        name: String,
        uid: u32,
        wanted: String,
    },
    #[error("existing install metadata is unusable (pass --force to replace it)")]
    BadMeta(#[source] InstallMetaError),
    #[error(
        "existing install metadata {} is a symlink; remove it (banger never follows links it writes through)",
        path.display()
    )]
    MetaSymlink { path: PathBuf },
    #[error("refusing the state directory {}: {reason}", path.display())]
    StateDir { path: PathBuf, reason: String },
    #[error(transparent)]
    Refused(ApplyError),
    #[error(transparent)]
    Guard(GuardError),
    #[error(transparent)]
    Systemd(SystemdError),
    #[error("{step} failed; {}", rollback_note(.undo_errors))]
    RolledBack {
        step: &'static str,
        code: ErrorCode,
        undo_errors: Vec<String>,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

fn rollback_note(errors: &[String]) -> String {
    if errors.is_empty() {
        "everything this run wrote was rolled back".to_string()
    } else {
        format!(
            "the rollback was incomplete ({}); check these paths by hand",
            errors.join("; ")
        )
    }
}

impl InstallError {
    /// The error class, which decides the exit status.
    pub fn code(&self) -> ErrorCode {
        match self {
            InstallError::NotRoot => ErrorCode::PermissionDenied,
            InstallError::RootMissing { .. } => ErrorCode::NotFound,
            InstallError::RootNotADir { .. } => ErrorCode::InvalidState,
            InstallError::Plan(e) => match e {
                PlanError::OwnerRequired
                | PlanError::OwnerUnknown { .. }
                | PlanError::BinaryMissing { .. } => ErrorCode::NotFound,
                PlanError::OwnerIsRoot { .. } | PlanError::OwnerGroupIsRoot { .. } => {
                    ErrorCode::PermissionDenied
                }
                PlanError::Unit(_) | PlanError::UdevRule(_) => ErrorCode::InvalidState,
                PlanError::Lookup { .. }
                | PlanError::BadEntry { .. }
                | PlanError::CurrentExe(_) => ErrorCode::Internal,
            },
            InstallError::Vmm(e) => match e {
                VmmBinError::Inspect { .. } => ErrorCode::NotFound,
                VmmBinError::Relative { .. } => ErrorCode::BadRequest,
                VmmBinError::NotExecutable { .. }
                | VmmBinError::Unsafe { .. }
                | VmmBinError::Hidden { .. } => ErrorCode::InvalidState,
            },
            InstallError::Network(_) => ErrorCode::BadRequest,
            InstallError::JailInUse { .. } => ErrorCode::InvalidState,
            InstallError::JailRange(_) => ErrorCode::BadRequest,
            InstallError::OtherOwner { .. } => ErrorCode::AlreadyExists,
            InstallError::BadMeta(_)
            | InstallError::MetaSymlink { .. }
            | InstallError::StateDir { .. } => ErrorCode::InvalidState,
            InstallError::Refused(e) => apply_code(e),
            InstallError::Guard(e) => guard_code(e),
            InstallError::Systemd(e) => systemd_code(e),
            InstallError::RolledBack { code, .. } => *code,
        }
    }
}

fn apply_code(e: &ApplyError) -> ErrorCode {
    match e {
        ApplyError::Symlink { .. }
        | ApplyError::WrongType { .. }
        | ApplyError::WrongOwner { .. }
        | ApplyError::TooOpen { .. }
        | ApplyError::UnsafeParent { .. }
        | ApplyError::Replaced { .. } => ErrorCode::InvalidState,
        ApplyError::Inspect { .. }
        | ApplyError::CreateDir { .. }
        | ApplyError::WriteFile { .. }
        | ApplyError::ReadSource { .. } => ErrorCode::Internal,
    }
}

fn guard_code(e: &GuardError) -> ErrorCode {
    match e {
        GuardError::Filter {
            source: DevGuardError::Lvmconfig(_),
            ..
        }
        | GuardError::Read { .. } => ErrorCode::Internal,
        GuardError::Filter { .. } | GuardError::NotInEffect { .. } => ErrorCode::InvalidState,
    }
}

fn systemd_code(e: &SystemdError) -> ErrorCode {
    match e {
        SystemdError::Missing | SystemdError::NotBooted => ErrorCode::Unavailable,
        SystemdError::Command(_) | SystemdError::NotReady { .. } => ErrorCode::Internal,
    }
}

fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    plan::rfc3339_utc(secs)
}

/// The metadata already there, if any. A symlink is refused before it is
/// read; an unreadable file is an error unless `force`.
fn existing_meta(path: &Path, force: bool) -> Result<Option<InstallMeta>, InstallError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(InstallError::MetaSymlink {
                path: path.to_path_buf(),
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(InstallError::BadMeta(InstallMetaError::Read {
                path: path.to_path_buf(),
                source,
            }));
        }
    }
    match InstallMeta::load(path) {
        Ok(m) => Ok(Some(m)),
        Err(_) if force => Ok(None),
        Err(e) => Err(InstallError::BadMeta(e)),
    }
}

/// The bridge and guest subnet to record: what the command line gave, else
/// what the install already records (a reinstall or upgrade never moves the
/// guests' network), else banger's defaults.
fn choose_network(
    req: &Request,
    existing: Option<&InstallMeta>,
) -> Result<InstallNetwork, InstallError> {
    let current = existing.map(|m| m.network.clone()).unwrap_or_default();
    let network = InstallNetwork {
        bridge: req.bridge.clone().unwrap_or(current.bridge),
        subnet: req.subnet.unwrap_or(current.subnet),
    };
    network.check().map_err(InstallError::Network)?;
    Ok(network)
}

/// Run an install: `sd` is consulted only without `--root`.
pub fn install(req: &Request, runner: &Runner, sd: &dyn Systemd) -> Result<Report, InstallError> {
    if req.euid != 0 {
        return Err(InstallError::NotRoot);
    }
    let root = match &req.root {
        Some(dir) => {
            let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
            match std::fs::metadata(&dir) {
                Ok(m) if m.is_dir() => dir,
                Ok(_) => return Err(InstallError::RootNotADir { path: dir }),
                Err(_) => return Err(InstallError::RootMissing { path: dir }),
            }
        }
        None => PathBuf::from("/"),
    };
    let state_fd = check_state_dir(&root)?;
    let state_path = apply::on_disk(&root, &plan::default_paths().state_dir);
    // The checked state directory, looked at through its descriptor only.
    let pinned = state_fd.as_ref().map(|fd| apply::Pinned {
        path: &state_path,
        fd: fd.as_fd(),
    });
    let name = plan::choose_owner(req.owner.as_deref(), req.sudo_user.as_deref())?;
    let owner = plan::lookup_owner(runner, &name)?;

    let meta_path = apply::on_disk(&root, Path::new(DEFAULT_INSTALL_FILE));
    let existing = existing_meta(&meta_path, req.force)?;
    if let Some(current) = &existing
        && (current.owner.name != owner.name || current.owner.uid != owner.uid)
        && !req.force
    {
        return Err(InstallError::OtherOwner {
            path: meta_path,
            name: current.owner.name.clone(),
            uid: current.owner.uid,
            wanted: owner.name.clone(),
        });
    }
    // Reinstalling the same thing keeps the original install time, so the
    // metadata file stays byte-for-byte the same.
    let (vmm, vmm_warnings) = vmm_bins::choose(&req.vmm, &vmm_bins::on_path)?;
    let network = choose_network(req, existing.as_ref())?;
    // The jail range: given, else the installed one, else the default;
    // refused while anything on the host uses one of its ids.
    let jail = req
        .jail
        .or(existing.as_ref().map(|m| m.jail))
        .unwrap_or_default();
    jail.check_owner(owner.uid)
        .map_err(InstallError::JailRange)?;
    banger_host::jail::check_unused(jail.uid_base, jail.count, true)
        .map_err(|source| InstallError::JailInUse { jail, source })?;
    let mut meta = plan::metadata(&owner, now_rfc3339());
    meta.vmm = vmm;
    meta.network = network;
    meta.jail = jail;
    if let Some(current) = existing
        && (InstallMeta {
            installed_at: current.installed_at.clone(),
            ..meta.clone()
        }) == current
    {
        meta.installed_at = current.installed_at;
    }
    let mut plan = plan::build(meta, &owner.home, &req.bin_source)?;
    // Where lvm2 is installed, banger's LVM filter goes in before the
    // metadata (which stays last).
    let lvm = guard::lvm_file(runner, &root).map_err(InstallError::Guard)?;
    let lvm_planned = lvm.is_some();
    if let Some(f) = lvm {
        let at = plan.files.len().saturating_sub(1);
        plan.files.insert(at, f);
    }
    if req.root.is_none() {
        systemd::check_available().map_err(InstallError::Systemd)?;
    }
    apply::preflight(&root, &plan, req.euid, pinned).map_err(InstallError::Refused)?;

    let mut txn = Txn::new();
    let written = match write_all(&root, &plan, &mut txn, pinned) {
        Ok(w) => w,
        Err(e) => {
            let code = apply_code(&e);
            return Err(InstallError::RolledBack {
                step: "writing the install",
                code,
                undo_errors: txn.rollback(),
                source: Box::new(e),
            });
        }
    };
    if lvm_planned && let Err(e) = guard::check_lvm(runner, &root) {
        return Err(InstallError::RolledBack {
            step: "checking banger's LVM filter",
            code: guard_code(&e),
            undo_errors: txn.rollback(),
            source: Box::new(e),
        });
    }
    let mut warnings = vmm_warnings;
    if req.root.is_none() {
        warnings.extend(guard::reload_udev(runner, Some(&plan.meta.paths)));
    }
    let services = if req.root.is_none() {
        let mut a = activation(txn.changed());
        if let Err(e) = systemd::activate(sd, &mut a) {
            let code = systemd_code(&e);
            let undo_errors = systemd::undo(sd, &a, || txn.rollback());
            return Err(InstallError::RolledBack {
                step: "starting the services",
                code,
                undo_errors,
                source: Box::new(e),
            });
        }
        Some(a)
    } else {
        None
    };
    warnings.extend(txn.commit());
    Ok(Report {
        root,
        owner,
        meta: plan.meta,
        written,
        services,
        warnings,
    })
}

/// The services an install hands to systemd: the helper and the owner
/// daemon, (re)started; the holder of the VMs' cgroups only enabled and
/// started (`enable --now`), never restarted, for a restart would kill
/// every VM (hostile read of the cgroup branch, finding 1).
fn activation(changed: bool) -> Activation {
    Activation::new(&[HELPER_UNIT, OWNER_UNIT], changed).holding(&[VMS_UNIT])
}

/// Refuse an existing state directory on FUSE before anything looks at it
/// by path (the preflight's `lstat` of it, on a FUSE mount, is a request
/// its owner's daemon answers, or never does): reached with `O_PATH`
/// without following a link, which asks its file system nothing, and its
/// mount found without asking either (`banger_host::mounts`). A missing
/// one is made later. The descriptor of an existing one is what the install
/// looks at from then on (issue #13 item 16): a mount or a directory put at
/// its name after this check is never reached.
fn check_state_dir(root: &Path) -> Result<Option<OwnedFd>, InstallError> {
    use rustix::fs::{Mode, OFlags};
    let path = apply::on_disk(root, &plan::default_paths().state_dir);
    let refused = |reason: String| InstallError::StateDir {
        path: path.clone(),
        reason,
    };
    let fd = match rustix::fs::open(
        &path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(refused(format!("opening it: {e}"))),
    };
    banger_host::mounts::check_state_dir(&fd).map_err(|r| refused(r.to_string()))?;
    Ok(Some(fd))
}

fn write_all(
    root: &Path,
    plan: &plan::Plan,
    txn: &mut Txn,
    pinned: Option<apply::Pinned<'_>>,
) -> Result<Vec<Written>, ApplyError> {
    let mut written = Vec::new();
    for d in &plan.dirs {
        let path = apply::on_disk(root, &d.target);
        // Parents that do not exist yet are created too (root, 0755); list
        // them, outermost first.
        let mut parents: Vec<PathBuf> = path
            .ancestors()
            .skip(1)
            .take_while(|p| {
                p.starts_with(root) && *p != root && std::fs::symlink_metadata(p).is_err()
            })
            .map(Path::to_path_buf)
            .collect();
        parents.reverse();
        let (action, fd) = txn.ensure_dir_at(&path, d, pinned)?;
        for p in parents {
            let target = Path::new("/").join(p.strip_prefix(root).unwrap_or(&p));
            written.push(describe(
                p,
                &target,
                ("dir", "parent directory"),
                Action::Created,
                None,
            )?);
        }
        written.push(describe(
            path,
            &d.target,
            ("dir", d.what),
            action,
            Some(fd.as_fd()),
        )?);
    }
    for f in &plan.files {
        let path = apply::on_disk(root, &f.target);
        let action = txn.put_file(&path, &f.content, f.mode, (0, 0))?;
        written.push(describe(path, &f.target, ("file", f.what), action, None)?);
    }
    Ok(written)
}

/// The entry for one path as it now is on disk (an existing directory keeps
/// its own mode, which may be stricter than the one banger creates): seen
/// through `fd` when given (a directory the install holds), else by `lstat`.
fn describe(
    path: PathBuf,
    target: &Path,
    (kind, what): (&'static str, &'static str),
    action: Action,
    fd: Option<BorrowedFd<'_>>,
) -> Result<Written, ApplyError> {
    let st = match fd {
        Some(fd) => rustix::fs::fstat(fd),
        None => rustix::fs::lstat(&path),
    }
    .map_err(|e| ApplyError::Inspect {
        path: path.clone(),
        source: e.into(),
    })?;
    Ok(Written {
        target: target.to_path_buf(),
        kind,
        what,
        action,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile read of the cgroup branch, finding 1: the holder is never
    /// among the units an install restarts, and always among those it
    /// starts; the helper and the owner daemon are restarted on new files.
    #[test]
    fn the_holder_is_held_never_restarted() {
        for changed in [true, false] {
            let a = activation(changed);
            assert_eq!(a.units, [HELPER_UNIT, OWNER_UNIT]);
            assert_eq!(a.held, [VMS_UNIT]);
        }
        assert_eq!(activation(true).action, "restarted");
    }
}
