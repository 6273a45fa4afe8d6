//! The host guard of issue #13 finding 8 (`banger_host::devguard`) at
//! install, uninstall and status time: the udev rule is an ordinary file of
//! the plan; the LVM block is an edit of `lvmlocal.conf`, planned only where
//! lvm2 is installed (`lvmconfig` on the path and an `/etc/lvm` under the
//! root), merged with the admin's `global_filter`, and checked with
//! `lvmconfig` once written.

use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use banger_host::devguard::{self, DevGuardError, GuardState};
use banger_host::runner::{Cmd, Runner};
use banger_proto::install::InstallPaths;
use banger_proto::vmops::DM_NAME_PREFIX;

use super::apply::on_disk;
use super::plan::{Content, FileSpec};

const FILE_MODE: u32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("banger's LVM filter in {}", path.display())]
    Filter {
        path: PathBuf,
        #[source]
        source: DevGuardError,
    },
    #[error(
        "after writing {}, lvmconfig reports global_filter {found:?}, which does not start \
         with banger's patterns; another LVM configuration overrides lvmlocal.conf here",
        path.display()
    )]
    NotInEffect { path: PathBuf, found: Vec<String> },
}

fn lvm_dir(root: &Path) -> PathBuf {
    on_disk(root, Path::new(devguard::LVM_DIR))
}

fn local_conf(root: &Path) -> PathBuf {
    on_disk(root, Path::new(devguard::LVM_LOCAL_CONF))
}

fn read_local(path: &Path) -> Result<Option<(String, u32)>, GuardError> {
    devguard::read_nofollow(path).map_err(|source| GuardError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn effective_filter(runner: &Runner, root: &Path) -> Result<Vec<String>, GuardError> {
    devguard::effective_filter(runner, &lvm_dir(root)).map_err(|source| GuardError::Filter {
        path: local_conf(root),
        source,
    })
}

/// The new `lvmlocal.conf` with banger's block, where lvm2 is installed.
pub fn lvm_file(runner: &Runner, root: &Path) -> Result<Option<FileSpec>, GuardError> {
    if !devguard::lvm_present(&lvm_dir(root)) {
        return Ok(None);
    }
    let path = local_conf(root);
    let filter_err = |source| GuardError::Filter {
        path: path.clone(),
        source,
    };
    let (text, mode) = read_local(&path)?.unwrap_or((String::new(), FILE_MODE));
    let name = path.display().to_string();
    let (rest, block) = devguard::split_block(&text, &name).map_err(filter_err)?;
    let current = effective_filter(runner, root)?;
    if devguard::sets_global_filter(&rest) {
        // The admin's own filter in this file already starts with banger's
        // patterns: nothing to add. Otherwise two settings in one file
        // would not combine.
        if block.is_none() && devguard::filter_guards(&current) {
            return Ok(None);
        }
        return Err(filter_err(DevGuardError::FilterInLocal { path: name }));
    }
    let filter = devguard::merged_filter(&current).map_err(filter_err)?;
    Ok(Some(FileSpec {
        what: "LVM filter",
        target: devguard::LVM_LOCAL_CONF.into(),
        content: Content::Bytes(devguard::with_block(&rest, &devguard::lvm_block(&filter)).into()),
        mode,
    }))
}

/// After the write: the filter LVM now uses starts with banger's patterns.
pub fn check_lvm(runner: &Runner, root: &Path) -> Result<(), GuardError> {
    let found = effective_filter(runner, root)?;
    if devguard::filter_guards(&found) {
        Ok(())
    } else {
        Err(GuardError::NotInEffect {
            path: local_conf(root),
            found,
        })
    }
}

/// Remove banger's block from `lvmlocal.conf`, keeping everything else (and
/// the file). `Ok(false)`: there was none.
pub fn remove_lvm_block(root: &Path) -> Result<bool, String> {
    let path = local_conf(root);
    let Some((text, mode)) = read_local(&path).map_err(|e| chain(&e))? else {
        return Ok(false);
    };
    let (rest, block) =
        devguard::split_block(&text, &path.display().to_string()).map_err(|e| chain(&e))?;
    if block.is_none() {
        return Ok(false);
    }
    let tmp = path.with_file_name(".lvmlocal.conf.banger-new");
    let write = || -> io::Result<()> {
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        io::Write::write_all(&mut f, rest.as_bytes())?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    };
    write().map(|()| true).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("removing banger's block from {}: {e}", path.display())
    })
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    banger_proto::error::chain(e).join(": ")
}

/// The block devices under `sys_block` the rule matches: loop devices
/// backed by a file under one of `dirs`, dm devices with banger's names.
pub fn banger_devices(sys_block: &Path, dirs: &[&Path]) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let attr = |a: &str| fs::read_to_string(e.path().join(a)).unwrap_or_default();
            if name.starts_with("loop") {
                let backing = attr("loop/backing_file");
                dirs.iter()
                    .any(|d| backing.starts_with(&format!("{}/", d.display())))
            } else if name.starts_with("dm-") {
                attr("dm/name").starts_with(DM_NAME_PREFIX)
            } else {
                false
            }
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Where a udevd runs: reload its rules and replay a change event for each
/// device banger already has, so the rule applies to them too. Failures are
/// warnings: the files stand, and udevd reads them at its next start.
pub fn reload_udev(runner: &Runner, paths: Option<&InstallPaths>) -> Vec<String> {
    if !Path::new(devguard::UDEV_CONTROL).exists() {
        return Vec::new();
    }
    let mut warnings = Vec::new();
    if let Err(e) = runner.run(&Cmd::new("udevadm").args(["control", "--reload"])) {
        warnings.push(format!("reloading udev's rules: {}", chain(&e)));
        return warnings;
    }
    let Some(p) = paths else {
        return warnings;
    };
    let devices = banger_devices(
        Path::new("/sys/block"),
        &[p.state_dir.as_path(), p.root_state_dir.as_path()],
    );
    if !devices.is_empty() {
        let cmd = Cmd::new("udevadm")
            .args(["trigger", "--action=change"])
            .args(&devices);
        if let Err(e) = runner.run(&cmd) {
            warnings.push(format!("replaying udev events: {}", chain(&e)));
        }
    }
    warnings
}

/// The udev rule under `root` against what `paths` render.
pub fn udev_state(root: &Path, paths: &InstallPaths) -> GuardState {
    devguard::udev_rule_state(
        &on_disk(root, Path::new(devguard::UDEV_RULE_FILE)),
        &[&paths.state_dir, &paths.root_state_dir],
    )
}

/// banger's LVM filter under `root` (`None`: no lvm2 here).
pub fn lvm_state(runner: &Runner, root: &Path) -> Option<GuardState> {
    devguard::lvm_filter_state(runner, &lvm_dir(root))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn banger_devices_are_found_by_backing_file_and_dm_name() {
        let sys = tempfile::tempdir().unwrap();
        let dev = |name: &str, attr: &str, value: &str| {
            let p = sys.path().join(name).join(attr);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, format!("{value}\n")).unwrap();
        };
        dev(
            "loop0",
            "loop/backing_file",
            "/var/lib/banger/vms/a/root.cow",
        );
        dev("loop1", "loop/backing_file", "/var/lib/banger-dev/x");
        dev("loop2", "loop/backing_file", "/var/lib/banger-root/y");
        dev("loop3", "loop/backing_file", "/home/dev/disk.img");
        dev("dm-0", "dm/name", "banger-0123");
        dev("dm-1", "dm/name", "vg0-root");
        fs::create_dir_all(sys.path().join("sda")).unwrap();
        let found = banger_devices(
            sys.path(),
            &[
                Path::new("/var/lib/banger"),
                Path::new("/var/lib/banger-root"),
            ],
        );
        let names: Vec<_> = found
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["dm-0", "loop0", "loop2"]);
    }

    #[test]
    fn removing_the_block_keeps_the_admins_lines_and_mode() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("etc/lvm");
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("lvmlocal.conf");
        let admin = "local {\n\tsystem_id = \"x\"\n}\n";
        let block = devguard::lvm_block(&devguard::banger_patterns());
        fs::write(&file, devguard::with_block(admin, &block)).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(remove_lvm_block(root.path()), Ok(true));
        assert_eq!(fs::read_to_string(&file).unwrap(), admin);
        assert_eq!(fs::metadata(&file).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(remove_lvm_block(root.path()), Ok(false));
        fs::remove_file(&file).unwrap();
        assert_eq!(remove_lvm_block(root.path()), Ok(false));
    }
}
