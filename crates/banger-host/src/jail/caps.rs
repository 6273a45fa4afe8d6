//! This process's own capabilities, as the jail spawner and the
//! locked-down helper shed them: every one outside a kept list, from every
//! set.

/// Every capability but `keep` out of the bounding, permitted, effective,
/// inheritable and ambient sets (the spawner keeps [`super::spawner::KEPT_CAPS`], the
/// locked-down helper its unit's).
pub(super) fn drop_capabilities(keep: &[u32]) -> std::io::Result<()> {
    for cap in 0..64u32 {
        if keep.contains(&cap) {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            // Past the kernel's last capability.
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(e);
        }
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    let kept = keep.iter().fold(0u64, |m, &c| m | 1 << c);
    let now = rustix::thread::capabilities(None)?;
    set_capabilities(now.permitted.bits() & kept, now.effective.bits() & kept)
}

/// `capset` of this process: `permitted` and `effective` (bit n:
/// capability n), nothing inheritable. Only ever takes away.
pub(super) fn set_capabilities(permitted: u64, effective: u64) -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let half = |shift: u32| Data {
        effective: (effective >> shift) as u32,
        permitted: (permitted >> shift) as u32,
        inheritable: 0,
    };
    let data = [half(0), half(32)];
    // SAFETY: capset with a version-3 header and its two data words, both
    // valid for the call.
    let r = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
