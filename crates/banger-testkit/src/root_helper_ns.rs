//! [`RootHelper`] and daemons in a test network namespace: started through
//! `ip netns exec` ([`NetNs::exec_daemon`]), restarted there, or with
//! stand-in tools bound over the host's.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use banger_proto::install::{InstallNetwork, InstallVmm};

use crate::{NetNs, Proc, RootHelper, TestUser, bin, wait_for_socket};

impl NetNs {
    /// [`NetNs::exec`] for a daemon: `ip netns exec` mounts a fresh sysfs
    /// in a mount namespace of the program's own, which hides the host's
    /// cgroup mounts beneath `/sys/fs/cgroup`; cgroup2 is mounted there
    /// again (the same hierarchy, only in that namespace), so the daemon
    /// finds its own cgroup as it would outside a test and makes its VMs'
    /// cgroups there (`banger_executor::VmCgroups`).
    pub fn exec_daemon(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.name,
            "sh",
            "-c",
            "mount -t cgroup2 cgroup2 /sys/fs/cgroup || exit 125; exec \"$@\"",
            "sh",
        ])
        .arg(program);
        c
    }
}

impl RootHelper {
    /// Like [`RootHelper::start`], but the helper runs inside `ns` (started
    /// through `ip netns exec`), so every network object it creates is there.
    /// Its socket is a path, so it is reachable from any namespace.
    pub fn start_in(ns: &NetNs, root: &Path, owner: &TestUser) -> RootHelper {
        Self::start_in_full(
            ns,
            root,
            owner,
            InstallVmm::default(),
            InstallNetwork::default(),
        )
    }

    /// [`RootHelper::start_in`] for an install of the bridge and subnet
    /// `network`.
    pub fn start_in_with(
        ns: &NetNs,
        root: &Path,
        owner: &TestUser,
        network: InstallNetwork,
    ) -> RootHelper {
        Self::start_in_full(ns, root, owner, InstallVmm::default(), network)
    }

    /// [`RootHelper::start_in`] recording both `vmm` and `network`.
    pub fn start_in_full(
        ns: &NetNs,
        root: &Path,
        owner: &TestUser,
        vmm: InstallVmm,
        network: InstallNetwork,
    ) -> RootHelper {
        Self::spawn(
            root,
            owner,
            vmm,
            network,
            "bangerd-root (netns)",
            ns.exec_daemon(bin("bangerd-root")),
        )
    }
}

impl RootHelper {
    /// Stop the helper (SIGTERM) and start it again in `ns` from the same
    /// install file, so with the same jail range: what a restart of the
    /// installed service does.
    pub fn restart_in(&mut self, ns: &NetNs) {
        self.proc.terminate();
        let mut cmd = ns.exec_daemon(bin("bangerd-root"));
        cmd.arg("--install-file").arg(&self.install_file);
        let mut proc = Proc::spawn("bangerd-root (netns, restarted)", cmd);
        wait_for_socket(&self.socket, &mut proc);
        self.proc = proc;
    }

    /// [`RootHelper::start_in_full`] with stand-ins bound over host tools
    /// (`(stand-in, tool path)` pairs, e.g. over `/usr/sbin/e2fsck`) in a
    /// private mount namespace of the helper's own: the helper runs the
    /// stand-ins exactly where it would find the real tools, and nothing
    /// is mounted in the test's namespace.
    pub fn start_in_with_tools(
        ns: &NetNs,
        root: &Path,
        owner: &TestUser,
        vmm: InstallVmm,
        network: InstallNetwork,
        tools: &[(PathBuf, &str)],
    ) -> RootHelper {
        let mut script = String::new();
        for (stand_in, tool) in tools {
            let s = stand_in.to_str().expect("a UTF-8 path");
            for p in [s, tool] {
                assert!(
                    p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b)),
                    "{p:?} needs quoting"
                );
            }
            script.push_str(&format!("mount --bind {s} {tool} && "));
        }
        script.push_str("exec \"$0\" \"$@\"");
        // With cgroup2 mounted as for any helper (`NetNs::exec_daemon`).
        let mut cmd = ns.exec_daemon("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c", &script])
            .arg(bin("bangerd-root"));
        Self::spawn(
            root,
            owner,
            vmm,
            network,
            "bangerd-root (netns, stand-in tools)",
            cmd,
        )
    }
}
