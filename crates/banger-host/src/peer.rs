//! Peer credentials of a connected Unix socket (SO_PEERCRED).

use std::os::fd::AsFd;

/// Who is on the other end of a Unix stream socket, as the kernel recorded it
/// at `connect(2)` time. Cannot be forged by the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Read SO_PEERCRED from a connected Unix socket.
pub fn peer_cred(sock: impl AsFd) -> std::io::Result<PeerCred> {
    let c = rustix::net::sockopt::socket_peercred(sock)?;
    Ok(PeerCred {
        pid: c.pid.as_raw_nonzero().get() as u32,
        uid: c.uid.as_raw(),
        gid: c.gid.as_raw(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_our_own_identity_on_a_socketpair() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let c = peer_cred(&a).unwrap();
        assert_eq!(c.uid, rustix::process::geteuid().as_raw());
        assert_eq!(c.pid, std::process::id());
    }
}
