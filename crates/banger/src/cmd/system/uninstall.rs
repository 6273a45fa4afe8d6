//! `banger system uninstall`: undo an install.
//!
//! Order, each step only once the one before it succeeded (or `--force`):
//! 1. make sure both services run, then ask bangerd for its VMs: running
//!    ones refuse the uninstall, or with `--force` are stopped (killed if a
//!    stop fails);
//! 2. ask bangerd for `host teardown` (taps, bridge, nft tables, resolver
//!    routing, loop/dm devices), while the helper that made them still runs;
//! 3. stop both units, then kill whatever is left in the helper's cgroup
//!    tree and in the VMs' holder's (`banger-vms.service`: the helper's
//!    `KillMode=process` leaves VMM processes running on a plain stop, see
//!    ARCHITECTURE.md), remove their child cgroups, stop the holder, and
//!    disable all three;
//! 4. remove the unit files, the binaries, the udev rule and banger's block
//!    in `lvmlocal.conf` (issue #13 finding 8; the rest of that file and the
//!    rules directory stay), and the install metadata (last, so an
//!    interrupted uninstall can be run again), reload systemd and udev;
//! 5. with `--purge`, the owner's state (store, images, kernels, VMs) and
//!    the helper's journal; without it they stay, and are listed as kept.
//!
//! With `--root DIR` only step 4 (and 5) run, on the files under DIR.

use std::io;
use std::path::{Path, PathBuf};

use banger_proto::ErrorCode;
use banger_proto::install::{DEFAULT_INSTALL_FILE, InstallMeta, InstallPaths};
use banger_proto::net::TeardownReport;
use banger_proto::rpc::{Request, Response};
use banger_proto::vm::{VmInfo, VmRequest, VmResponse};

use super::apply::on_disk;
use super::guard;
use super::plan::{BINARIES, UNIT_DIR};
use super::systemd::{self, QUICK_TIMEOUT, START_TIMEOUT, Systemd, SystemdError};
use super::units::{HELPER_UNIT, OWNER_UNIT, VMS_UNIT};
use crate::client::{Client, ClientError, response_name};

/// How long a VM gets to power off when `--force` stops it.
const VM_STOP_SECS: u32 = 30;

/// The daemon calls the uninstall makes; a recording fake stands in for
/// [`Client`] in unit tests.
pub trait Daemon {
    fn vms(&mut self) -> Result<Vec<VmInfo>, ClientError>;
    fn stop_vm(&mut self, name: &str) -> Result<(), ClientError>;
    fn kill_vm(&mut self, name: &str) -> Result<(), ClientError>;
    fn teardown(&mut self) -> Result<TeardownReport, ClientError>;
}

impl Daemon for Client {
    fn vms(&mut self) -> Result<Vec<VmInfo>, ClientError> {
        match self.call(&Request::Vm(VmRequest::List), |_| {})? {
            Response::Vm(VmResponse::List(vms)) => Ok(vms),
            other => Err(self.unexpected("a VM list", response_name(&other))),
        }
    }

    fn stop_vm(&mut self, name: &str) -> Result<(), ClientError> {
        let req = Request::Vm(VmRequest::Stop {
            name: name.to_string(),
            timeout_secs: Some(VM_STOP_SECS),
            save: false,
        });
        self.call(&req, |_| {}).map(drop)
    }

    fn kill_vm(&mut self, name: &str) -> Result<(), ClientError> {
        let req = Request::Vm(VmRequest::Kill {
            name: name.to_string(),
        });
        self.call(&req, |_| {}).map(drop)
    }

    fn teardown(&mut self) -> Result<TeardownReport, ClientError> {
        match self.call(&Request::HostTeardown, |_| {})? {
            Response::HostTeardown(r) => Ok(r),
            other => Err(self.unexpected("a teardown report", response_name(&other))),
        }
    }
}

/// Reaches bangerd at the socket the install's paths name.
pub type Connect<'a> = dyn FnMut(&InstallPaths) -> Result<Box<dyn Daemon>, ClientError> + 'a;

/// What to uninstall.
#[derive(Debug, Clone)]
pub struct UninstallRequest {
    /// `/`, or the `--root` directory.
    pub root: PathBuf,
    /// Talk to systemd and the daemon (false with `--root`).
    pub live: bool,
    pub purge: bool,
    pub force: bool,
}

/// What an uninstall did.
#[derive(Debug, Default)]
pub struct Report {
    pub root: PathBuf,
    /// The owner the metadata named, if it was readable.
    pub owner: Option<String>,
    /// VMs `--force` stopped (or killed).
    pub vms_stopped: Vec<String>,
    /// Host objects `host teardown` removed.
    pub host_objects: Vec<String>,
    /// Processes left in the helper's or the holder's cgroup tree after the helper stopped, killed.
    pub leftover_processes: Vec<u32>,
    /// Paths removed (on disk, under the root).
    pub removed: Vec<PathBuf>,
    /// Paths kept on purpose, with why.
    pub kept: Vec<(PathBuf, &'static str)>,
    /// Units stopped and disabled (empty with `--root`).
    pub units: Vec<&'static str>,
    /// What went wrong but did not stop the uninstall (`--force`).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UninstallError {
    #[error("banger system uninstall must run as root (try `sudo banger system uninstall`)")]
    NotRoot,
    #[error("--root {}: no such directory", path.display())]
    RootMissing { path: PathBuf },
    #[error("banger is not installed: no {} and no banger units", path.display())]
    NotInstalled { path: PathBuf },
    #[error(transparent)]
    Systemd(SystemdError),
    #[error(
        "cannot reach bangerd to stop VMs and remove the host objects it made; \
         fix it (`banger system status`) or pass --force to uninstall anyway, \
         leaving them behind"
    )]
    DaemonUnreachable(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    #[error(
        "{} VM(s) still running: {}; stop them (`banger vm stop NAME`) or pass --force to stop them",
        names.len(), names.join(", ")
    )]
    VmsRunning { names: Vec<String> },
    #[error(
        "host teardown could not remove everything: {}; fix that and run uninstall again, \
         or pass --force to uninstall anyway",
        errors.join("; ")
    )]
    Teardown { errors: Vec<String> },
    #[error("uninstall incomplete: {}", errors.join("; "))]
    Incomplete {
        errors: Vec<String>,
        report: Box<Report>,
    },
}

impl UninstallError {
    pub fn code(&self) -> ErrorCode {
        match self {
            UninstallError::NotRoot => ErrorCode::PermissionDenied,
            UninstallError::RootMissing { .. } | UninstallError::NotInstalled { .. } => {
                ErrorCode::NotFound
            }
            UninstallError::Systemd(SystemdError::Missing | SystemdError::NotBooted) => {
                ErrorCode::Unavailable
            }
            UninstallError::Systemd(_) => ErrorCode::Internal,
            UninstallError::DaemonUnreachable(_) => ErrorCode::Unavailable,
            UninstallError::VmsRunning { .. } => ErrorCode::InvalidState,
            UninstallError::Teardown { .. } | UninstallError::Incomplete { .. } => {
                ErrorCode::Internal
            }
        }
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    banger_proto::error::chain(e).join(": ")
}

/// A VM whose VMM may be running.
fn is_live(vm: &VmInfo) -> bool {
    vm.state.vmm_may_run() || vm.pid.is_some()
}

/// Run an uninstall. `connect` reaches bangerd (only called when `live`).
pub fn uninstall(
    req: &UninstallRequest,
    sd: &dyn Systemd,
    connect: &mut Connect<'_>,
) -> Result<Report, UninstallError> {
    let root = &req.root;
    let meta_path = on_disk(root, Path::new(DEFAULT_INSTALL_FILE));
    let meta = InstallMeta::load(&meta_path).ok();
    let paths = meta
        .as_ref()
        .map(|m| m.paths.clone())
        .unwrap_or_else(super::plan::default_paths);
    let unit_paths: Vec<PathBuf> = [HELPER_UNIT, OWNER_UNIT, VMS_UNIT]
        .iter()
        .map(|u| on_disk(root, &Path::new(UNIT_DIR).join(u)))
        .collect();
    let anything = std::fs::symlink_metadata(&meta_path).is_ok()
        || unit_paths
            .iter()
            .any(|p| std::fs::symlink_metadata(p).is_ok());
    if !anything {
        return Err(UninstallError::NotInstalled { path: meta_path });
    }
    let mut report = Report {
        root: root.clone(),
        owner: meta.as_ref().map(|m| m.owner.name.clone()),
        ..Report::default()
    };
    if req.live {
        stop_vms_and_teardown(req, sd, connect, &paths, &mut report)?;
        stop_units(sd, &mut report);
    }

    let mut errors = Vec::new();
    match guard::remove_lvm_block(root) {
        Ok(true) => report.kept.push((
            on_disk(root, Path::new(banger_host::devguard::LVM_LOCAL_CONF)),
            "banger's block removed; the rest is the admin's",
        )),
        Ok(false) => {}
        Err(e) => errors.push(e),
    }
    let mut remove = |path: PathBuf, report: &mut Report| match remove_file(&path) {
        Ok(true) => report.removed.push(path),
        Ok(false) => {}
        Err(e) => errors.push(format!("removing {}: {e}", path.display())),
    };
    for p in unit_paths {
        remove(p, &mut report);
    }
    for b in BINARIES {
        remove(on_disk(root, &paths.bin_dir.join(b)), &mut report);
    }
    remove(
        on_disk(root, Path::new(banger_host::devguard::UDEV_RULE_FILE)),
        &mut report,
    );
    remove(meta_path.clone(), &mut report);
    if let Some(dir) = meta_path.parent() {
        match std::fs::remove_dir(dir) {
            Ok(()) => report.removed.push(dir.to_path_buf()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => report.kept.push((
                dir.to_path_buf(),
                "not empty: holds files banger did not write",
            )),
            Err(e) => errors.push(format!("removing {}: {e}", dir.display())),
        }
    }
    if req.live {
        if let Err(e) = sd.run(&["daemon-reload"], QUICK_TIMEOUT) {
            errors.push(chain(&e));
        }
        // Forget a failed state, so the units vanish from `systemctl`.
        let _ = sd.run(
            &["reset-failed", HELPER_UNIT, OWNER_UNIT, VMS_UNIT],
            QUICK_TIMEOUT,
        );
        report
            .warnings
            .extend(guard::reload_udev(&banger_host::runner::Runner, None));
        // Runtime directories go with their units; a socket of a daemon
        // that crashed could stay behind.
        for s in [
            paths.runtime_dir.join("bangerd.sock"),
            paths.root_socket.clone(),
        ] {
            let s = on_disk(root, &s);
            if std::fs::symlink_metadata(&s).is_ok() {
                match banger_host::socket::remove_socket(&s) {
                    Ok(()) => report.removed.push(s),
                    Err(e) => errors.push(format!("removing {}: {e}", s.display())),
                }
            }
        }
    }
    for (dir, why) in [
        (
            &paths.state_dir,
            "images, kernels and VM data (remove with --purge)",
        ),
        (
            &paths.root_state_dir,
            "the helper's journal of host objects (remove with --purge)",
        ),
    ] {
        let dir = on_disk(root, dir);
        if std::fs::symlink_metadata(&dir).is_err() {
            continue;
        }
        if !req.purge {
            report.kept.push((dir, why));
            continue;
        }
        match remove_tree(&dir) {
            Ok(()) => report.removed.push(dir),
            Err(e) => errors.push(format!("removing {}: {e}", dir.display())),
        }
    }
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(UninstallError::Incomplete {
            errors,
            report: Box::new(report),
        })
    }
}

/// Steps 1 and 2.
fn stop_vms_and_teardown(
    req: &UninstallRequest,
    sd: &dyn Systemd,
    connect: &mut Connect<'_>,
    paths: &InstallPaths,
    report: &mut Report,
) -> Result<(), UninstallError> {
    let unreachable = |e: Box<dyn std::error::Error + Send + Sync + 'static>,
                       report: &mut Report|
     -> Result<(), UninstallError> {
        if req.force {
            report.warnings.push(format!(
                "bangerd was not reachable ({}); VMs and host objects may remain",
                chain(e.as_ref())
            ));
            Ok(())
        } else {
            Err(UninstallError::DaemonUnreachable(e))
        }
    };
    // The daemon is needed to find VMs and undo host objects: start the
    // services if they are down (a no-op when they run).
    if let Err(e) = sd.run(&["start", HELPER_UNIT, OWNER_UNIT], START_TIMEOUT) {
        return unreachable(Box::new(e), report);
    }
    let mut daemon = match connect(paths) {
        Ok(d) => d,
        Err(e) => return unreachable(Box::new(e), report),
    };
    let vms = match daemon.vms() {
        Ok(v) => v,
        Err(e) => return unreachable(Box::new(e), report),
    };
    let live: Vec<String> = vms
        .iter()
        .filter(|v| is_live(v))
        .map(|v| v.name.clone())
        .collect();
    if !live.is_empty() && !req.force {
        return Err(UninstallError::VmsRunning { names: live });
    }
    for name in live {
        match daemon.stop_vm(&name) {
            Ok(()) => report.vms_stopped.push(name),
            Err(stop) => match daemon.kill_vm(&name) {
                Ok(()) => {
                    report.warnings.push(format!(
                        "VM {name} did not stop ({}); killed it",
                        chain(&stop)
                    ));
                    report.vms_stopped.push(name);
                }
                Err(kill) => report.warnings.push(format!(
                    "VM {name} could neither be stopped ({}) nor killed ({}); its VMM goes with the VMs' cgroups",
                    chain(&stop),
                    chain(&kill)
                )),
            },
        }
    }
    match daemon.teardown() {
        Ok(t) if t.errors.is_empty() || req.force => {
            report.warnings.extend(
                t.errors
                    .iter()
                    .map(|e| format!("host teardown: {e} (left behind)")),
            );
            report.host_objects = t.removed;
            Ok(())
        }
        Ok(t) => Err(UninstallError::Teardown { errors: t.errors }),
        Err(e) if req.force => {
            report.warnings.push(format!(
                "host teardown failed ({}); host objects may remain",
                chain(&e)
            ));
            Ok(())
        }
        Err(e) => Err(UninstallError::Teardown {
            errors: vec![chain(&e)],
        }),
    }
}

/// Step 3: stop the daemons, empty the helper's cgroup tree and the VMs'
/// holder's, stop the holder, disable all three. Failures are warnings:
/// the files go either way, and a reload then forgets the units.
fn stop_units(sd: &dyn Systemd, report: &mut Report) {
    let cgroup_of = |unit| systemd::show(sd, unit).ok().and_then(|s| s.cgroup);
    let helper = cgroup_of(HELPER_UNIT);
    let holder = cgroup_of(VMS_UNIT);
    warn(sd.run(&["stop", OWNER_UNIT], START_TIMEOUT), report);
    warn(sd.run(&["stop", HELPER_UNIT], START_TIMEOUT), report);
    // KillMode=process: a stop ends only the helper itself. Anything still
    // in its cgroup tree (a VMM of a layout that kept the VMs' cgroups
    // beneath the helper's unit) or in a VM's `vm-<id>/` beneath the
    // holder's is a VMM the daemon could not stop; kill it now, before the
    // holder's stop would wait for it. The holder's own process (in its
    // `keep/`) goes with its stop, which kills whatever is left there.
    if let Some(dir) = helper.as_deref().and_then(cgroup_dir) {
        empty_tree(sd, HELPER_UNIT, &dir, report);
    }
    if let Some(dir) = holder.as_deref().and_then(cgroup_dir) {
        for vm in child_cgroups(&dir).iter().filter(|c| is_vm_cgroup(c)) {
            empty_tree(sd, VMS_UNIT, vm, report);
            if let Err(e) = std::fs::remove_dir(vm) {
                report
                    .warnings
                    .push(format!("removing the cgroup {}: {e}", vm.display()));
            }
        }
    }
    warn(sd.run(&["stop", VMS_UNIT], START_TIMEOUT), report);
    warn(
        sd.run(
            &["disable", HELPER_UNIT, OWNER_UNIT, VMS_UNIT],
            QUICK_TIMEOUT,
        ),
        report,
    );
    report.units = vec![HELPER_UNIT, OWNER_UNIT, VMS_UNIT];
}

fn warn(r: Result<(), SystemdError>, report: &mut Report) {
    if let Err(e) = r {
        report.warnings.push(chain(&e));
    }
}

/// A VM's cgroup (`vm-…`) beneath the holder's: the VMs', not the
/// holder's own `keep/`.
fn is_vm_cgroup(dir: &Path) -> bool {
    dir.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("vm-"))
}

/// SIGKILL every process in the cgroup tree at `dir` (of `unit`, for
/// `systemctl kill` where there is no `cgroup.kill`) and remove its
/// emptied child cgroups; `dir` itself is left to its owner.
fn empty_tree(sd: &dyn Systemd, unit: &str, dir: &Path, report: &mut Report) {
    let left = cgroup_tree_procs(dir);
    if !left.is_empty() {
        report.leftover_processes.extend(&left);
        match kill_tree(dir) {
            Ok(true) => {}
            // No cgroup.kill (before Linux 5.14, or the v1 systemd
            // hierarchy): systemd signals the unit's processes.
            Ok(false) => warn(
                sd.run(
                    &["kill", "--kill-whom=all", "--signal=SIGKILL", unit],
                    QUICK_TIMEOUT,
                ),
                report,
            ),
            Err(e) => report
                .warnings
                .push(format!("cgroup.kill in {}: {e}", dir.display())),
        }
        let still = wait_empty(dir);
        if !still.is_empty() {
            report.warnings.push(format!(
                "processes {still:?} are still in {} after SIGKILL",
                dir.display()
            ));
        }
    }
    report.warnings.extend(remove_children(dir));
}

/// The directory of cgroup `cg` (systemd's `ControlGroup=`): on the
/// cgroup2 hierarchy (unified, or the hybrid layout's `unified/`) where it
/// is there, else on the hybrid layout's named systemd hierarchy.
fn cgroup_dir(cg: &str) -> Option<PathBuf> {
    let rel = cg.trim_start_matches('/');
    [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/systemd",
    ]
    .iter()
    .map(|base| Path::new(base).join(rel))
    .find(|dir| dir.join("cgroup.procs").is_file())
}

/// Every process in the cgroup tree at `dir`, its child cgroups' too.
fn cgroup_tree_procs(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default();
    for child in child_cgroups(dir) {
        pids.extend(cgroup_tree_procs(&child));
    }
    pids
}

/// The child cgroups of `dir` (its subdirectories; no link is followed).
fn child_cgroups(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILL everything in the cgroup tree at `dir` by `cgroup.kill`
/// (cgroup2, Linux 5.14+: the kernel kills the whole subtree). `Ok(false)`:
/// no `cgroup.kill` there.
fn kill_tree(dir: &Path) -> io::Result<bool> {
    let kill = dir.join("cgroup.kill");
    if !kill.is_file() {
        return Ok(false);
    }
    std::fs::write(kill, "1")?;
    Ok(true)
}

fn wait_empty(dir: &Path) -> Vec<u32> {
    for _ in 0..50 {
        let left = cgroup_tree_procs(dir);
        if left.is_empty() {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    cgroup_tree_procs(dir)
}

/// Remove every child cgroup beneath `dir`, deepest first (`rmdir`: only
/// an empty cgroup goes); what could not be removed, as warnings.
fn remove_children(dir: &Path) -> Vec<String> {
    let mut warnings = Vec::new();
    for child in child_cgroups(dir) {
        warnings.extend(remove_children(&child));
        if let Err(e) = std::fs::remove_dir(&child) {
            warnings.push(format!("removing the cgroup {}: {e}", child.display()));
        }
    }
    warnings
}

/// Remove a file (or a symlink, never what it points at). `Ok(false)`: it
/// was not there. A directory is refused.
fn remove_file(path: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "is a directory; banger installed a file here",
        )),
        Ok(_) => std::fs::remove_file(path).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Remove a state directory and everything in it. A symlink in its place
/// is refused (it was never banger's to follow); links inside are removed,
/// not followed.
fn remove_tree(dir: &Path) -> io::Result<()> {
    let m = std::fs::symlink_metadata(dir)?;
    if m.file_type().is_symlink() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a symlink; remove it by hand",
        ));
    }
    std::fs::remove_dir_all(dir)
}

/// The `--json` document.
pub fn to_json(r: &Report) -> serde_json::Value {
    serde_json::json!({
        "root": r.root,
        "owner": r.owner,
        "units": r.units,
        "vms_stopped": r.vms_stopped,
        "host_objects_removed": r.host_objects,
        "leftover_processes_killed": r.leftover_processes,
        "removed": r.removed,
        "kept": r.kept.iter().map(|(p, why)| serde_json::json!({"path": p, "why": why})).collect::<Vec<_>>(),
        "warnings": r.warnings,
    })
}

/// The human summary.
pub fn to_text(r: &Report) -> String {
    let mut out = format!(
        "banger uninstalled{}{}\n",
        r.owner
            .as_ref()
            .map(|o| format!(" (owner was {o})"))
            .unwrap_or_default(),
        if r.root == Path::new("/") {
            String::new()
        } else {
            format!(" from {}", r.root.display())
        }
    );
    if !r.units.is_empty() {
        out.push_str(&format!(
            "services   {} stopped and disabled\n",
            r.units.join(" ")
        ));
    }
    for vm in &r.vms_stopped {
        out.push_str(&format!("vm         {vm} stopped\n"));
    }
    for o in &r.host_objects {
        out.push_str(&format!("host       removed {o}\n"));
    }
    if !r.leftover_processes.is_empty() {
        out.push_str(&format!(
            "processes  killed {:?} left in the cgroups of bangerd-root and banger-vms\n",
            r.leftover_processes
        ));
    }
    for p in &r.removed {
        out.push_str(&format!("removed    {}\n", p.display()));
    }
    for (p, why) in &r.kept {
        out.push_str(&format!("kept       {}: {why}\n", p.display()));
    }
    for w in &r.warnings {
        out.push_str(&format!("warning    {w}\n"));
    }
    out
}

#[cfg(test)]
#[path = "uninstall_tests.rs"]
mod tests;
