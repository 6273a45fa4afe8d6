//! A VM's resource limits: the one definition the owner's config, the
//! daemon's preflight (`vm create`, `vm set`), the executor's checks of a
//! launch and the VMM drivers all use. A VM outside them is refused before
//! anything is allocated for it.

use crate::vmops::VmmKind;

/// Fewest vCPUs a VM has.
pub const MIN_VCPUS: u8 = 1;
/// Most vCPUs any VM has, whatever its VMM ([`VmmKind::max_vcpus`] is
/// each VMM's own, at most this).
pub const MAX_VCPUS: u8 = 64;
/// Least memory a VM has (MiB): a stock Debian guest boots in it.
pub const MIN_MEMORY_MIB: u32 = 128;
/// Most memory a VM has (MiB, 1 TiB); the daemon also keeps it within the
/// host's total.
pub const MAX_MEMORY_MIB: u32 = 1 << 20;
/// Smallest work disk (bytes, 64 MiB).
pub const MIN_DISK_BYTES: u64 = 64 << 20;
/// Largest work disk (bytes, 16 TiB, ext4's limit with 4 KiB blocks).
pub const MAX_DISK_BYTES: u64 = 16 << 40;

impl VmmKind {
    /// Most vCPUs a VM of this VMM has: Firecracker's API takes at most 32
    /// (`MachineConfiguration.vcpu_count`, v1.16); QEMU is held to
    /// [`MAX_VCPUS`].
    pub const fn max_vcpus(self) -> u8 {
        match self {
            VmmKind::Firecracker => 32,
            VmmKind::Qemu => MAX_VCPUS,
        }
    }
}

/// Why `vcpus` is not a vCPU count a VM of `vmm` can have, if it is not:
/// the message names the count, the VMM and the range.
pub fn check_vcpus(vmm: VmmKind, vcpus: u32) -> Result<u8, String> {
    let max = vmm.max_vcpus();
    match u8::try_from(vcpus) {
        Ok(n) if (MIN_VCPUS..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "invalid vCPU count {vcpus}: a {vmm} VM has {MIN_VCPUS}..={max}"
        )),
    }
}

/// Why `memory_mib` is not a memory size a VM can have, if it is not.
pub fn check_memory_mib(memory_mib: u32) -> Result<(), String> {
    if (MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&memory_mib) {
        Ok(())
    } else {
        Err(format!(
            "invalid memory {memory_mib} MiB: a VM has {MIN_MEMORY_MIB}..={MAX_MEMORY_MIB} MiB"
        ))
    }
}

/// Why `bytes` is not a work disk size, if it is not.
pub fn check_disk_bytes(bytes: u64) -> Result<(), String> {
    if (MIN_DISK_BYTES..=MAX_DISK_BYTES).contains(&bytes) {
        Ok(())
    } else {
        Err(format!(
            "invalid disk size {bytes} bytes: must be between 64 MiB and 16 TiB"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_vmm_has_its_own_vcpu_limit_within_bangers() {
        for &vmm in VmmKind::ALL {
            assert!(vmm.max_vcpus() <= MAX_VCPUS, "{vmm}");
            assert_eq!(check_vcpus(vmm, 1), Ok(1));
            assert_eq!(
                check_vcpus(vmm, u32::from(vmm.max_vcpus())),
                Ok(vmm.max_vcpus())
            );
            for bad in [0, u32::from(vmm.max_vcpus()) + 1, 256, 257, u32::MAX] {
                let e = check_vcpus(vmm, bad).unwrap_err();
                assert!(
                    e.contains(&bad.to_string()) && e.contains(vmm.as_str()),
                    "{e}"
                );
            }
        }
        assert_eq!(VmmKind::Firecracker.max_vcpus(), 32);
        assert!(
            check_vcpus(VmmKind::Firecracker, 48)
                .unwrap_err()
                .contains("a firecracker VM has 1..=32")
        );
        assert_eq!(check_vcpus(VmmKind::Qemu, 48), Ok(48));
    }

    #[test]
    fn memory_and_disk_bounds_are_inclusive() {
        assert!(check_memory_mib(MIN_MEMORY_MIB).is_ok());
        assert!(check_memory_mib(MAX_MEMORY_MIB).is_ok());
        assert!(check_memory_mib(MIN_MEMORY_MIB - 1).is_err());
        assert!(check_memory_mib(MAX_MEMORY_MIB + 1).is_err());
        assert!(check_disk_bytes(MIN_DISK_BYTES).is_ok());
        assert!(check_disk_bytes(MAX_DISK_BYTES).is_ok());
        assert!(check_disk_bytes(MIN_DISK_BYTES - 1).is_err());
        assert!(check_disk_bytes(MAX_DISK_BYTES + 1).is_err());
    }
}
