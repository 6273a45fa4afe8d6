//! Checks of VM operation arguments that need no host state.

use banger_proto::vmops::{GuestFile, LaunchVmSpec};
use banger_proto::{ids, limits};

use super::error::VmOpError;

fn invalid(what: &'static str, value: &str, reason: &str) -> VmOpError {
    VmOpError::Invalid {
        what,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Store ids (`banger_proto::ids::is_id`).
pub fn id(what: &'static str, value: &str) -> Result<(), VmOpError> {
    if ids::is_id(value) {
        Ok(())
    } else {
        Err(invalid(what, value, ids::ID_RULE))
    }
}

/// Guest MACs (`banger_proto::ids::is_guest_mac`).
pub fn mac(value: &str) -> Result<(), VmOpError> {
    if ids::is_guest_mac(value) {
        Ok(())
    } else {
        Err(invalid("MAC", value, ids::GUEST_MAC_RULE))
    }
}

/// The most files a restore's identity carries.
pub const MAX_IDENTITY_FILES: usize = 32;
/// The most bytes their contents hold in all.
pub const MAX_IDENTITY_BYTES: usize = 1 << 20;

/// A launch's arguments: ids, MAC, tap, and resources within
/// `banger_proto::limits` — the vCPU count within its VMM's own limit, so
/// a VM its VMM would refuse is refused before a slot, a cgroup or a tap
/// is given to it.
pub fn launch(spec: &LaunchVmSpec) -> Result<(), VmOpError> {
    id("VM id", &spec.vm_id)?;
    id("image id", &spec.image_id)?;
    id("kernel id", &spec.kernel_id)?;
    mac(&spec.mac)?;
    limits::check_vcpus(spec.vmm, u32::from(spec.vcpus))
        .map_err(|e| invalid("vCPU count", &spec.vcpus.to_string(), &e))?;
    limits::check_memory_mib(spec.memory_mib)
        .map_err(|e| invalid("memory (MiB)", &spec.memory_mib.to_string(), &e))?;
    crate::validate::tap_name(&spec.tap).map_err(|e| invalid("tap", &spec.tap, &e.to_string()))?;
    if let Some(r) = &spec.restore {
        id("snapshot id", &r.snapshot_id)?;
        // Refused before the VMM loads anything: the agent is sent these
        // (guest contract 4), a few KiB in practice.
        if r.identity.files.len() > MAX_IDENTITY_FILES {
            return Err(invalid(
                "identity",
                &r.identity.files.len().to_string(),
                &format!("more than {MAX_IDENTITY_FILES} files"),
            ));
        }
        let mut total = 0;
        for f in &r.identity.files {
            guest_file(f)?;
            total += f.content.len();
        }
        if total > MAX_IDENTITY_BYTES {
            return Err(invalid(
                "identity",
                &format!("{total} bytes"),
                &format!("its files hold more than {MAX_IDENTITY_BYTES} bytes"),
            ));
        }
        for (what, ip) in [("address", r.identity.ip), ("gateway", r.identity.gateway)] {
            if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
                return Err(invalid(what, &ip.to_string(), "not a unicast address"));
            }
        }
        banger_proto::guest::check_hostname(&r.identity.hostname)
            .map_err(|e| invalid("hostname", &r.identity.hostname, e))?;
        if !(1..=30).contains(&r.identity.prefix) {
            return Err(invalid(
                "prefix",
                &r.identity.prefix.to_string(),
                "must be 1 to 30",
            ));
        }
    }
    Ok(())
}

pub fn work_disk_bytes(bytes: u64) -> Result<(), VmOpError> {
    limits::check_disk_bytes(bytes).map_err(|e| invalid("work disk size", &bytes.to_string(), &e))
}

/// A guest path the ext4 writer accepts: absolute, normal components of
/// `[A-Za-z0-9._-]` (so it never needs quoting in a debugfs script), no `.`
/// or `..`, at most 255 bytes.
pub fn guest_path(path: &str) -> Result<(), VmOpError> {
    banger_proto::guest::check_guest_path(path).map_err(|r| invalid("guest path", path, r))
}

pub fn guest_file(f: &GuestFile) -> Result<(), VmOpError> {
    guest_path(&f.path)?;
    if f.mode > 0o7777 {
        return Err(invalid(
            "file mode",
            &format!("{:o}", f.mode),
            "must be at most 7777",
        ));
    }
    if f.content.len() > 1 << 20 {
        return Err(invalid("guest file", &f.path, "content larger than 1 MiB"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_macs_and_paths() {
        assert!(id("VM id", "0123456789abcdef0123456789abcdef").is_ok());
        for bad in [
            "",
            "../../etc",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef",
        ] {
            let e = id("VM id", bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        assert!(mac("02:ba:ac:1e:00:05").is_ok());
        assert!(mac("02:BA:ac:1e:00:05").is_err());
        assert!(mac("02:ba:ac:1e:00").is_err());
        assert!(guest_path("/etc/systemd/network/10-banger.network").is_ok());
        for bad in [
            "etc/x",
            "/",
            "/etc/../shadow",
            "/etc//x",
            "/etc/a b",
            "/etc/x\n",
            "/./x",
        ] {
            assert!(guest_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn spec(vmm: banger_proto::vmops::VmmKind, vcpus: u8, memory_mib: u32) -> LaunchVmSpec {
        LaunchVmSpec {
            vm_id: "0123456789abcdef0123456789abcdef".into(),
            image_id: "1123456789abcdef0123456789abcdef".into(),
            kernel_id: "2123456789abcdef0123456789abcdef".into(),
            vmm,
            vcpus,
            memory_mib,
            tap: "bangertap0".into(),
            mac: "02:ba:0a:00:00:05".into(),
            force_kvm: true,
            restore: None,
        }
    }

    /// Issue #14: a 48-vCPU Firecracker VM passed every check before the
    /// driver's (after a slot, a cgroup, the tap and the disk grants were
    /// given to it). The launch check knows each VMM's limit.
    #[test]
    fn a_launch_is_held_to_its_vmms_own_vcpu_limit() {
        use banger_proto::vmops::VmmKind::{Firecracker, Qemu};
        assert!(launch(&spec(Firecracker, 32, 1024)).is_ok());
        let e = launch(&spec(Firecracker, 48, 1024))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("48") && e.contains("firecracker VM has 1..=32"),
            "{e}"
        );
        assert!(launch(&spec(Qemu, 48, 1024)).is_ok());
        assert!(launch(&spec(Qemu, 65, 1024)).is_err());
        assert!(launch(&spec(Qemu, 0, 1024)).is_err());
        assert!(launch(&spec(Qemu, 2, 127)).is_err());
        assert!(launch(&spec(Qemu, 2, (1 << 20) + 1)).is_err());
    }
}
