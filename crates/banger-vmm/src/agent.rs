//! The host end of the guest agent's channel (guest contract 4): the
//! identity of a VM restored from a snapshot, sent as
//! `banger_proto::guest::agent`'s lines and answered by the agent.
//!
//! QEMU serves the channel (a virtio-serial port) on a socket root binds
//! in its own directory ([`crate::qemu::RootSocket`], like QMP's) and
//! passes into QEMU's jail; Firecracker serves it on vsock port
//! `AGENT_VSOCK_PORT` through its host-side socket
//! (`firecracker::snapshot`). The guest is hostile to the host: what comes
//! back is read in lines of at most [`MAX_REPLY`] bytes, all within the
//! caller's deadline, and quoted cut in errors.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

pub use banger_proto::guest::agent::{Identity, Reply};

use crate::VmmError;

/// The longest line taken from the agent.
pub const MAX_REPLY: usize = 64 << 10;

/// [`apply`] with `identity`'s clock set to now (not to when the launch
/// began): what a restore sends its resumed guest.
pub fn apply_now(
    vmm: &'static str,
    stream: &mut UnixStream,
    identity: Identity,
    nonce: &str,
    timeout: Duration,
) -> Result<(), VmmError> {
    let identity = Identity {
        clock: std::time::SystemTime::now(),
        ..identity
    };
    apply(vmm, stream, &identity, nonce, timeout)
}

/// Send `identity` on `stream` (connected to the agent's channel) and wait
/// up to `timeout` for the agent's answer. Lines of other requests (or a
/// line the guest printed before) are skipped.
pub fn apply(
    vmm: &'static str,
    stream: &mut UnixStream,
    identity: &Identity,
    nonce: &str,
    timeout: Duration,
) -> Result<(), VmmError> {
    let err = |what: String| VmmError::Agent { vmm, what };
    let lines = identity.lines(nonce).map_err(err)?;
    let deadline = Instant::now() + timeout;
    let late = || VmmError::Timeout {
        vmm,
        what: "hear from the guest agent",
        secs: timeout.as_secs(),
    };
    // Written within the one deadline: the guest decides how fast QEMU
    // takes the bytes (it drains the port), so each write gets only what
    // is left of it, never a fresh timeout.
    let mut sent = 0;
    while sent < lines.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(late());
        }
        stream
            .set_write_timeout(Some(left))
            .map_err(|e| err(format!("sending the identity: {e}")))?;
        match stream.write(&lines.as_bytes()[sent..]) {
            Ok(0) => return Err(err("the agent's channel closed".into())),
            Ok(n) => sent += n,
            Err(e) if crate::timed_out(&e) => {
                return Err(late());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(format!("sending the identity: {e}"))),
        }
    }
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            match banger_proto::guest::agent::reply(&line, nonce) {
                Some(Reply::Applied) => return Ok(()),
                Some(Reply::Failed(why)) => {
                    return Err(err(format!(
                        "the guest agent could not apply the identity: {}",
                        crate::quoted(&why)
                    )));
                }
                None => tracing::debug!(vmm, line = %crate::quoted(&line), "agent line skipped"),
            }
        }
        if pending.len() > MAX_REPLY {
            return Err(err(format!("the agent sent a line over {MAX_REPLY} bytes")));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(late());
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| err(format!("reading: {e}")))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Err(err("the agent's channel closed before it answered".into())),
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
            Err(e) if crate::timed_out(&e) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(format!("reading its answer: {e}"))),
        }
    }
}
