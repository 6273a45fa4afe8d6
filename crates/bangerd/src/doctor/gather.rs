//! The facts the owner daemon gathers itself, without privilege.

use std::path::Path;

use banger_host::probe::{
    CgroupProbe, ReflinkProbe, ResolvedProbe, locate_tool, probe_cgroup_v2, probe_reflink,
    probe_resolved, probe_tool,
};
use banger_host::runner::Runner;
use banger_proto::privops::ToolProbe;

/// How QEMU is probed: the sandbox option the driver launches it with,
/// then `-version`.
pub const QEMU_ARGS: [&str; 3] = ["-sandbox", banger_executor::QEMU_SANDBOX, "-version"];

/// Host facts that need no privilege: tools (e2fsprogs, VMMs, dmsetup),
/// cgroups, resolver, reflink.
#[derive(Debug, Clone)]
pub struct UnprivilegedFacts {
    pub mkfs_ext4: ToolProbe,
    pub e2fsck: ToolProbe,
    pub firecracker: ToolProbe,
    pub qemu: ToolProbe,
    pub cgroup_v2: CgroupProbe,
    pub resolved: ResolvedProbe,
    /// Probed in the state dir, where VM disks are copied.
    pub reflink: ReflinkProbe,
    /// dm-snapshot root disks need it (loop devices are attached by
    /// ioctl: no `losetup`).
    pub dmsetup: ToolProbe,
    pub host_guard: super::HostGuard,
}

/// Probe the tools (the VMM binaries at their configured paths or bare names),
/// cgroups, systemd-resolved, reflink support in `state_dir`, and the udev
/// rule and LVM filter (`root_state_dir`: the helper's, `None` in dev mode).
///
/// Runs a handful of `--version` commands and writes two scratch files to
/// `state_dir` (removed again); takes well under a second on a normal host.
///
/// A VMM binary that is `None` (a system install that recorded none) is
/// reported missing with that reason.
pub fn gather_unprivileged(
    runner: &Runner,
    firecracker_bin: Option<&Path>,
    qemu_bin: Option<&Path>,
    state_dir: &Path,
    root_state_dir: Option<&Path>,
) -> UnprivilegedFacts {
    let vmm = |tool: &str, bin: Option<&Path>, args: &[&str], flag: &str| match bin {
        Some(b) => probe_tool(runner, tool, b, args),
        None => ToolProbe {
            tool: tool.to_string(),
            path: None,
            version: None,
            works: false,
            error: Some(format!(
                "none is recorded in the install metadata (re-run `sudo banger system install {flag} PATH`)"
            )),
        },
    };
    UnprivilegedFacts {
        mkfs_ext4: probe_tool(runner, "mkfs.ext4", "mkfs.ext4", &["-V"]),
        e2fsck: probe_tool(runner, "e2fsck", "e2fsck", &["-V"]),
        firecracker: vmm(
            "firecracker",
            firecracker_bin,
            &["--version"],
            "--firecracker-bin",
        ),
        // QEMU parses `-sandbox` before it prints its version and exits, so
        // one that cannot sandbox itself fails here in its own words.
        qemu: vmm("qemu", qemu_bin, &QEMU_ARGS, "--qemu-bin"),
        cgroup_v2: probe_cgroup_v2(),
        resolved: probe_resolved(),
        reflink: probe_reflink(state_dir),
        // Not run: dmsetup creates /dev/mapper/control when it starts.
        dmsetup: locate_tool("dmsetup", "dmsetup"),
        host_guard: super::host_guard::gather(runner, state_dir, root_state_dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_host::probe::ReflinkSupport;
    use banger_host::runner::resolve;

    #[test]
    fn gathers_what_the_host_has() {
        let state = tempfile::tempdir().unwrap();
        let f = gather_unprivileged(
            &Runner,
            Some(Path::new("firecracker")),
            Some(Path::new("qemu-system-x86_64")),
            state.path(),
            None,
        );
        for (probe, program) in [
            (&f.mkfs_ext4, "mkfs.ext4"),
            (&f.e2fsck, "e2fsck"),
            (&f.firecracker, "firecracker"),
            (&f.qemu, "qemu-system-x86_64"),
        ] {
            let found = resolve(program.as_ref());
            assert_eq!(
                probe.path,
                found.map(|p| p.display().to_string()),
                "{program}"
            );
        }
        assert!(
            f.mkfs_ext4.works && f.e2fsck.works,
            "this test needs e2fsprogs: apt-get install e2fsprogs"
        );
        assert_eq!(f.reflink.dir, state.path());
        assert!(
            !matches!(f.reflink.support, ReflinkSupport::Failed { .. }),
            "{:?}",
            f.reflink
        );
        assert_eq!(
            std::fs::read_dir(state.path()).unwrap().count(),
            0,
            "scratch files left"
        );
    }

    /// Debian's QEMU accepts the sandbox the driver launches it with.
    #[test]
    fn the_hosts_qemu_accepts_the_sandbox() {
        let state = tempfile::tempdir().unwrap();
        let qemu = Path::new("qemu-system-x86_64");
        assert!(
            resolve(qemu.as_ref()).is_some(),
            "this test needs QEMU: apt-get install qemu-system-x86"
        );
        let f = gather_unprivileged(&Runner, None, Some(qemu), state.path(), None);
        assert!(f.qemu.works, "{:?}", f.qemu);
        assert!(
            f.qemu
                .version
                .as_deref()
                .unwrap()
                .starts_with("QEMU emulator version"),
            "{:?}",
            f.qemu
        );
    }

    /// A QEMU that cannot install a seccomp filter (built without it, or
    /// where the system call is filtered) has no `-sandbox` option and
    /// says so while parsing its arguments (Debian's 7.2 under a unit that
    /// denied `seccomp`: the words below); the probe fails with them.
    #[test]
    fn a_qemu_without_seccomp_is_broken_in_its_own_words() {
        use std::os::unix::fs::PermissionsExt as _;
        let state = tempfile::tempdir().unwrap();
        let bin = tempfile::tempdir().unwrap();
        let qemu = bin.path().join("qemu-system-x86_64");
        std::fs::write(
            &qemu,
            "#!/bin/sh\n[ \"$1\" = -sandbox ] && { echo \"qemu-system-x86_64: -sandbox $2: There is no option group 'sandbox'\" >&2; exit 1; }\necho 'QEMU emulator version 7.2.0'\n",
        )
        .unwrap();
        std::fs::set_permissions(&qemu, std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = gather_unprivileged(&Runner, None, Some(&qemu), state.path(), None);
        assert!(!f.qemu.works, "{:?}", f.qemu);
        let error = f.qemu.error.unwrap();
        assert!(
            error.contains("There is no option group 'sandbox'"),
            "{error}"
        );
    }
}
