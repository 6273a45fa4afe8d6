//! Per-link IPv6 settings, written through a descriptor of
//! [`IPV6_CONF`](super::IPV6_CONF).
//!
//! rtnetlink cannot set them: of the IPv6 per-link attributes
//! (`IFLA_AF_SPEC`/`IFLA_INET6_*`) the kernel accepts only the address
//! generation mode and the token on a change, so `disable_ipv6` is written
//! in `/proc/sys/net/ipv6/conf/<link>/`. That tree belongs to the calling
//! thread's network namespace and only root can change it; the link name
//! is one the executor validated (an allow-listed token) and is re-checked
//! here to be one path component, opened beneath the directory's
//! descriptor without following links.

use std::io::{self, Write as _};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::{IPV6_CONF, NetError};

pub(super) fn disable_ipv6(link: &str) -> Result<(), NetError> {
    let fail = |source: io::Error| NetError::DisableIpv6 {
        link: link.to_string(),
        source,
    };
    if link.is_empty()
        || link.len() >= libc::IFNAMSIZ
        || link == "."
        || link == ".."
        || link.bytes().any(|b| b == b'/' || b == 0)
    {
        return Err(fail(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an interface name",
        )));
    }
    let conf = match rustix::fs::open(
        IPV6_CONF,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // A kernel without IPv6 (or booted with ipv6.disable=1): no link
        // of it takes an RA or an IPv6 packet.
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(fail(e.into())),
    };
    let fd = rustix::fs::openat2(
        &conf,
        format!("{link}/disable_ipv6"),
        OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| fail(e.into()))?;
    std::fs::File::from(fd).write_all(b"1\n").map_err(fail)
}
