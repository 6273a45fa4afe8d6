//! Host probes: typed findings about KVM, device nodes, host tools, cgroups,
//! the system resolver and reflink support.
//!
//! Every probe returns a value, never an error and never a panic: a failure is
//! a finding, carrying the OS's own error text. Interpreting findings (pass,
//! warn, fail, fix hints) is the doctor's job, not this module's.
//!
//! The privileged probes (KVM, device nodes, nft) sit behind [`HostProbes`] so
//! the executor can be unit-tested with [`fake::FakeHost`]; the others are
//! plain functions the owner daemon calls itself.
//!
//! The finding types defined here (`CgroupProbe`, `ResolvedProbe`,
//! `ReflinkProbe`) are deliberately not serializable: only `banger-proto`
//! defines what crosses a socket.

mod cgroup;
mod device;
pub mod fake;
mod kvm;
mod reflink;
mod resolved;
mod tools;

use std::path::Path;

use banger_proto::privops::{DeviceProbe, HostDevice, JailScopeProbe, KvmProbe, ToolProbe};

use crate::runner::Runner;

pub use cgroup::{
    CGROUP_ROOT, CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, CgroupMode, CgroupProbe, cgroup2_path_in,
    own_cgroup2_dir, probe_cgroup_at, probe_cgroup_v2,
};
pub use device::probe_device;
pub use kvm::{GUEST_TIMEOUT, KVM_DEVICE, PVM_MODULE_DIR, TINY_GUEST, probe_kvm};
pub use reflink::{ReflinkProbe, ReflinkSupport, probe_reflink};
pub use resolved::{
    RESOLV_CONF, RESOLVED_SOCKET, RESOLVED_STUB, RESOLVED_STUBS, RESOLVED_UPSTREAM_CONF,
    ResolvedProbe, ResolvedSocket, nameservers, probe_resolved, probe_resolved_at,
};
pub use tools::{TOOL_TIMEOUT, locate_tool, probe_nft, probe_tool};

/// The privileged host probes, injected into the executor.
pub trait HostProbes: Send + Sync {
    fn probe_kvm(&self) -> KvmProbe;
    fn probe_device(&self, device: HostDevice) -> DeviceProbe;
    fn probe_nft(&self) -> ToolProbe;
    /// Whether this process's jails enter the Landlock scope
    /// ([`crate::jail::scope_support`]).
    fn probe_jail_scope(&self) -> JailScopeProbe;
}

/// [`HostProbes`] on the real host.
#[derive(Debug, Clone, Default)]
pub struct RealHost {
    runner: Runner,
}

impl RealHost {
    pub fn new() -> RealHost {
        RealHost { runner: Runner }
    }
}

impl HostProbes for RealHost {
    fn probe_kvm(&self) -> KvmProbe {
        probe_kvm()
    }

    fn probe_device(&self, device: HostDevice) -> DeviceProbe {
        probe_device(device)
    }

    fn probe_nft(&self) -> ToolProbe {
        probe_nft(&self.runner)
    }

    fn probe_jail_scope(&self) -> JailScopeProbe {
        match crate::jail::scope_support() {
            Ok(()) => JailScopeProbe::Scoped,
            Err(reason) => JailScopeProbe::Unscoped { reason },
        }
    }
}

/// `statfs(path).f_type`.
pub(crate) fn fs_magic(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statfs(path)?;
    // f_type is a signed word in the C struct; magics are 32-bit patterns.
    Ok(st.f_type as u64)
}

/// Name of a filesystem `f_type` magic, or its hex value.
pub fn fs_type_name(magic: u64) -> String {
    match magic {
        0xef53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794c_7630 => "overlayfs",
        0x2fc1_2fc1 => "zfs",
        0xca45_1a4e => "bcachefs",
        0xf2f5_2010 => "f2fs",
        0x6969 => "nfs",
        0x6573_5546 => "fuse",
        0x0102_1997 => "9p",
        0x9fa0 => "proc",
        _ => return format!("unknown (f_type {magic:#x})"),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_type_of_known_mounts() {
        assert_eq!(fs_type_name(fs_magic(Path::new("/proc")).unwrap()), "proc");
        assert_eq!(fs_type_name(0x1234), "unknown (f_type 0x1234)");
        assert_eq!(
            fs_type_name(fs_magic(Path::new("/dev/shm")).unwrap()),
            "tmpfs"
        );
    }

    #[test]
    fn real_host_answers_through_the_trait() {
        let host: &dyn HostProbes = &RealHost::new();
        let tun = host.probe_device(HostDevice::Tun);
        assert_eq!(tun, probe_device(HostDevice::Tun));
    }
}
