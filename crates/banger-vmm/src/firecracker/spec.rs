//! What the Firecracker driver accepts in a [`LaunchSpec`], checked before
//! anything is created, and the per-VM files it prepares in `run_dir`.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::VMM;
use super::paths::{self, LOG, Paths};
use crate::dir::OwnerDir;
use crate::{API_SOCKET, LaunchSpec, VSOCK_SOCKET, VmmError};

/// Firecracker's limit on vCPUs (`MachineConfiguration.vcpu_count`): the
/// one banger's preflight and the executor check first.
pub const MAX_VCPUS: u8 = banger_proto::vmops::VmmKind::Firecracker.max_vcpus();
/// Longest kernel command line Firecracker takes on x86_64 (bytes, with the
/// terminating NUL).
pub const MAX_CMDLINE: usize = 2048;
/// `sun_path` holds 108 bytes including the NUL.
const MAX_SOCKET_PATH: usize = 107;
/// `_4294967295`: the longest suffix a guest port adds to the vsock path.
const MAX_PORT_SUFFIX: usize = 11;

fn invalid(what: String) -> VmmError {
    VmmError::InvalidSpec { vmm: VMM, what }
}

/// Refuse a spec Firecracker would reject or the driver cannot express,
/// naming the field, the value and what would be accepted, for a launch
/// unjailed as the VM's owner ([`Paths::host`]: its sockets' host paths
/// must fit a socket address). Looks at no file: `run_dir` is checked
/// when it is opened (see [`OwnerDir`]). Test support only, with the
/// unjailed launch.
#[cfg(any(test, feature = "test-support"))]
pub fn validate_spec(spec: &LaunchSpec) -> Result<(), VmmError> {
    validate_common(spec)?;
    sockets(&Paths::host(spec))
}

/// The spec checks of a jailed launch (the executor's): the sockets' paths are the
/// jail's ([`Paths::jailed`]; root reaches them through its descriptor of
/// `run/`, so the host path's length does not matter), the VMM needs its
/// own ids (`run_as`, never root), and each drive's bind name
/// (`drive-<id>`) must be one the jail takes.
pub fn validate_jailed(spec: &LaunchSpec) -> Result<(), VmmError> {
    validate_common(spec)?;
    match spec.run_as {
        Some((uid, gid)) if uid != 0 && gid != 0 => {}
        other => {
            return Err(invalid(format!(
                "run_as {other:?}: a jailed Firecracker needs its VM's jail uid and gid (not root)"
            )));
        }
    }
    for d in &spec.drives {
        let max = paths::MAX_BIND_NAME - paths::DRIVE_PREFIX.len();
        if d.id.len() > max {
            return Err(invalid(format!(
                "drive id {:?}: a jailed drive's id has at most {max} characters",
                d.id
            )));
        }
    }
    sockets(&Paths::jailed(spec))
}

/// The API and vsock sockets' paths, as Firecracker binds them, fit a
/// Unix socket address (the vsock one with a guest port's suffix).
fn sockets(paths: &Paths) -> Result<(), VmmError> {
    socket_path("API socket", Path::new(&paths.api_socket), 0)?;
    socket_path("vsock socket", Path::new(&paths.vsock), MAX_PORT_SUFFIX)
}

/// The checks both launches make.
fn validate_common(spec: &LaunchSpec) -> Result<(), VmmError> {
    // Firecracker's `--id`: 1-64 characters, alphanumeric or '-'.
    if spec.vm_id.is_empty()
        || spec.vm_id.len() > 64
        || !spec
            .vm_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(invalid(format!(
            "vm_id {:?}: need 1-64 ASCII letters, digits or '-'",
            spec.vm_id
        )));
    }
    if !spec.kvm {
        return Err(invalid(
            "kvm false: Firecracker runs guests only under a usable KVM; use the QEMU backend"
                .into(),
        ));
    }
    if spec.vcpus == 0 || spec.vcpus > MAX_VCPUS {
        return Err(invalid(format!("vcpus {}: need 1-{MAX_VCPUS}", spec.vcpus)));
    }
    if spec.memory_mib == 0 {
        return Err(invalid("memory_mib 0: need at least 1 MiB".into()));
    }
    host_path("kernel", &spec.kernel)?;
    if let Some(initrd) = &spec.initrd {
        host_path("initrd", initrd)?;
    }
    if spec.cmdline.len() >= MAX_CMDLINE || spec.cmdline.contains('\0') {
        return Err(invalid(format!(
            "cmdline of {} bytes: need fewer than {MAX_CMDLINE} bytes and no NUL",
            spec.cmdline.len()
        )));
    }
    if spec.drives.is_empty() {
        return Err(invalid(
            "drives: empty; the first drive is the root device and must be given".into(),
        ));
    }
    for (i, d) in spec.drives.iter().enumerate() {
        // Firecracker's drive ids: 1-64 characters, alphanumeric or '_'.
        if d.id.is_empty()
            || d.id.len() > 64
            || !d.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(invalid(format!(
                "drive id {:?}: need 1-64 ASCII letters, digits or '_'",
                d.id
            )));
        }
        if spec.drives[..i].iter().any(|other| other.id == d.id) {
            return Err(invalid(format!(
                "drive id {:?} appears twice; ids must be unique",
                d.id
            )));
        }
        host_path(&format!("drive {}", d.id), &d.path)?;
    }
    if spec.tap.is_empty()
        || spec.tap.len() > 15
        || spec
            .tap
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c == ':' || !c.is_ascii())
    {
        return Err(invalid(format!(
            "tap {:?}: need an interface name of 1-15 ASCII characters without '/', ':' or spaces",
            spec.tap
        )));
    }
    if !is_mac(&spec.mac) {
        return Err(invalid(format!(
            "mac {:?}: need six two-digit hex octets separated by ':'",
            spec.mac
        )));
    }
    if spec.vsock_cid < 3 {
        return Err(invalid(format!(
            "vsock_cid {}: need 3 or more (0-2 are reserved)",
            spec.vsock_cid
        )));
    }
    host_path("run_dir", &spec.run_dir)
}

/// Paths go into JSON strings, so they must be UTF-8; relative paths would
/// resolve against Firecracker's working directory, so they must be absolute.
fn host_path(field: &str, p: &Path) -> Result<(), VmmError> {
    if p.to_str().is_none() || !p.is_absolute() {
        return Err(invalid(format!(
            "{field} path {}: need an absolute UTF-8 path",
            p.display()
        )));
    }
    Ok(())
}

fn socket_path(field: &str, p: &Path, suffix: usize) -> Result<(), VmmError> {
    let len = p.as_os_str().len() + suffix;
    if len > MAX_SOCKET_PATH {
        return Err(invalid(format!(
            "{field} {}: {len} bytes with suffixes, a Unix socket path holds at most {MAX_SOCKET_PATH}",
            p.display()
        )));
    }
    Ok(())
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Firecracker's own log file, on the host.
pub fn log_path(spec: &LaunchSpec) -> PathBuf {
    spec.run_dir.join(LOG)
}

/// Prepared before spawning, all relative to `run` (a descriptor of
/// `run_dir`, which `run_as` can write; this runs as root): stale sockets
/// removed, and the log file created anew with `O_EXCL` (Firecracker
/// would create it itself) and handed to `run_as`.
/// Returns root's own descriptor of the log, for error tails.
pub(super) fn prepare_run_dir(run: &OwnerDir, spec: &LaunchSpec) -> Result<File, VmmError> {
    run.remove_stale_socket(API_SOCKET)?;
    run.remove_stale_socket(VSOCK_SOCKET)?;
    run.recreate(LOG, 0o600, spec.run_as)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Drive;

    fn spec(dir: &Path) -> LaunchSpec {
        LaunchSpec {
            vm_id: "0123456789abcdef0123456789abcdef".into(),
            vcpus: 2,
            memory_mib: 512,
            kernel: "/k/vmlinux".into(),
            initrd: None,
            cmdline: "console=ttyS0 reboot=k panic=1".into(),
            drives: vec![
                Drive {
                    id: "root".into(),
                    path: "/d/root.ext4".into(),
                    read_only: false,
                },
                Drive {
                    id: "work".into(),
                    path: "/d/work.ext4".into(),
                    read_only: false,
                },
            ],
            tap: "bangertap0".into(),
            mac: "02:ba:0a:00:00:02".into(),
            run_dir: dir.to_path_buf(),
            serial_log: dir.join("serial.log"),
            vsock_cid: 3,
            run_as: None,
            kvm: true,
        }
    }

    /// `mutate` must make validation fail with an error naming `needle`.
    fn check_refused(mutate: impl FnOnce(&mut LaunchSpec), needle: &str) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path());
        mutate(&mut s);
        let err = validate_spec(&s).unwrap_err();
        assert!(matches!(err, VmmError::InvalidSpec { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
    }

    #[test]
    fn a_good_spec_passes() {
        let dir = tempfile::tempdir().unwrap();
        validate_spec(&spec(dir.path())).unwrap();
    }

    #[test]
    fn bad_fields_are_named() {
        check_refused(|s| s.vm_id = "no spaces".into(), "vm_id \"no spaces\"");
        check_refused(|s| s.vm_id = "x".repeat(65), "vm_id");
        check_refused(|s| s.kvm = false, "kvm false");
        check_refused(|s| s.vcpus = 0, "vcpus 0");
        check_refused(|s| s.vcpus = 33, "vcpus 33: need 1-32");
        check_refused(|s| s.memory_mib = 0, "memory_mib 0");
        check_refused(
            |s| s.kernel = "rel/vmlinux".into(),
            "kernel path rel/vmlinux",
        );
        check_refused(|s| s.initrd = Some("initrd.img".into()), "initrd path");
        check_refused(
            |s| s.cmdline = "a".repeat(MAX_CMDLINE),
            "cmdline of 2048 bytes",
        );
        check_refused(|s| s.drives.clear(), "drives: empty");
        check_refused(
            |s| s.drives[1].id = "work-disk".into(),
            "drive id \"work-disk\"",
        );
        check_refused(|s| s.drives[1].id = "root".into(), "appears twice");
        check_refused(|s| s.drives[1].path = "work.ext4".into(), "drive work path");
        check_refused(
            |s| s.tap = "a-very-long-tap-name".into(),
            "tap \"a-very-long",
        );
        check_refused(
            |s| s.mac = "02:ba:0a:00:00".into(),
            "mac \"02:ba:0a:00:00\"",
        );
        check_refused(|s| s.mac = "02:ba:0a:00:00:zz".into(), "mac");
        check_refused(|s| s.vsock_cid = 2, "vsock_cid 2");
        check_refused(
            |s| s.run_dir = PathBuf::from("/").join("d".repeat(100)),
            "a Unix socket path holds at most 107",
        );
    }

    /// Jailed, the sockets are bound at the jail's short paths (a long
    /// host `run_dir` does not matter), the VMM needs ids of its own, and
    /// a drive's bind name `drive-<id>` must fit the jail's 64 bytes.
    #[test]
    fn a_jailed_spec_is_checked_against_the_jails_paths() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path());
        s.run_dir = PathBuf::from("/").join("d".repeat(100));
        s.run_as = Some((4242, 4242));
        assert!(validate_spec(&s).is_err());
        validate_jailed(&s).unwrap();
        let refused = |mutate: fn(&mut LaunchSpec), needle: &str| {
            let mut t = s.clone();
            mutate(&mut t);
            let msg = validate_jailed(&t).unwrap_err().to_string();
            assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
        };
        refused(|t| t.run_as = None, "run_as None");
        refused(|t| t.run_as = Some((0, 4242)), "not root");
        refused(|t| t.run_as = Some((4242, 0)), "not root");
        refused(|t| t.drives[1].id = "w".repeat(59), "at most 58");
        refused(|t| t.vcpus = 0, "vcpus 0");
        let mut t = s.clone();
        t.drives[1].id = "w".repeat(58);
        validate_jailed(&t).unwrap();
    }

    #[test]
    fn log_files_are_not_opened_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "precious").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("firecracker.log")).unwrap();
        let run = OwnerDir::open(dir.path(), "run directory").unwrap();
        let err = prepare_run_dir(&run, &spec(dir.path())).unwrap_err();
        assert!(err.to_string().contains("firecracker.log"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    }
}
