//! Requests the public API never builds, for the spawner's own tests.

use std::sync::Arc;

use super::super::Bind;
use super::*;

/// One bind as the wire carries it, its name unchecked.
#[derive(Debug)]
pub struct RawBind<'a> {
    pub fd: BorrowedFd<'a>,
    pub name: &'a str,
    pub writable: bool,
}

/// Send a request for `argv` run as `uid`:`gid` with `binds` (none of
/// it checked here), cut to `keep` bytes when given, with `extra`
/// descriptors after its own; the spawner's answer, an error for a
/// refusal. A child it starts is killed and reaped.
pub fn request(
    uid: u32,
    gid: u32,
    binds: &[RawBind<'_>],
    argv: &[&str],
    keep: Option<usize>,
    extra: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    let spawner = running().ok_or_else(|| refused("not started"))?;
    let open = |p: &std::ffi::CStr, flags| {
        rustix::fs::open(
            p,
            flags | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
    };
    let program =
        crate::runner::resolve(argv[0].as_ref()).ok_or_else(|| refused("no such program"))?;
    let null = || open(c"/dev/null", rustix::fs::OFlags::RDWR);
    let r = Request {
        jail: Jail {
            uid,
            gid,
            binds: binds
                .iter()
                .map(|b| {
                    Ok(Bind {
                        fd: Arc::new(b.fd.try_clone_to_owned()?),
                        at: b.name.to_string(),
                        writable: b.writable,
                    })
                })
                .collect::<std::io::Result<_>>()?,
            passes: Vec::new(),
            copies: Vec::new(),
            long_lived: None,
            cgroup: None,
            net_handles: false,
        },
        program: rustix::fs::open(
            &program,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?,
        argv0: argv[0].into(),
        args: argv[1..].iter().map(|a| a.into()).collect(),
        env: Vec::new(),
        stdio: [null()?, null()?, null()?],
    };
    let mut w = r.encode();
    w.fds.extend_from_slice(extra);
    let bytes = &w.bytes[..keep.unwrap_or(w.bytes.len()).min(w.bytes.len())];
    let sock = spawner.sock.lock().unwrap_or_else(|p| p.into_inner());
    send_any(sock.as_fd(), bytes, &w.fds)?;
    let mut buf = [0u8; 512];
    let (n, fds) = recv(sock.as_fd(), &mut buf)?;
    drop(sock);
    let Cloned {
        pid, pidfd, report, ..
    } = answer(&buf[..n], fds, r.jail.net_handles)??;
    let mut child = super::super::Child {
        pid,
        pidfd,
        status: None,
        kill_on_drop: true,
        net: None,
        stdin: None,
        stdout: None,
        stderr: None,
    };
    child.kill()?;
    child.wait()?;
    match report {
        None => Ok(()),
        Some((step, errno)) => Err(super::super::report_error(step, errno)),
    }
}

/// Send `bytes` (up to a whole request and one byte more) with `fds`
/// (up to four times what a request may carry) attached.
fn send_any(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4 * MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(refused("too many descriptors for the test"));
    }
    rustix::net::sendmsg(
        sock,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// How long [`Spawner::spawn`] waits for the spawner's answer, from
/// now on.
pub fn set_deadline(d: std::time::Duration) {
    DEADLINE_MS.store(d.as_millis() as u64, Ordering::Relaxed);
}

/// A request padded past [`MAX_REQUEST`]: the spawner reads it cut
/// (`MSG_TRUNC`) and refuses it.
pub fn oversized() -> std::io::Result<()> {
    let spawner = running().ok_or_else(|| refused("not started"))?;
    let sock = spawner.sock.lock().unwrap_or_else(|p| p.into_inner());
    let mut bytes = vec![0u8; MAX_REQUEST + 1];
    bytes[..4].copy_from_slice(&VERSION.to_le_bytes());
    send_any(sock.as_fd(), &bytes, &[])?;
    let mut buf = [0u8; 512];
    let (n, fds) = recv(sock.as_fd(), &mut buf)?;
    answer(&buf[..n], fds, false)?.map(|_| ())
}
