//! Guest readiness over vsock.
//!
//! Firecracker proxies a guest-initiated vsock connection to host CID 2,
//! port P, onto the host Unix socket `<uds_path>_P`, which host software must
//! already be listening on when the guest connects (otherwise the guest's
//! connect is reset). banger's guest images carry a unit that runs, once the
//! guest is up,
//!
//! ```text
//! echo banger-guest-ready | socat - VSOCK-CONNECT:2:52
//! ```
//!
//! so the host binds `<vsock_socket>_52` ([`READY_PORT`]), accepts, and reads
//! one line, expecting [`READY_MARKER`]. Bind the [`ReadyListener`] before
//! `InstanceStart` (or at least before the guest can get that far) and wait
//! on it afterwards; [`wait_ready_vsock`] does both in one call for guests
//! whose unit retries until it connects.

use std::io::{BufRead as _, BufReader};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{LaunchSpec, VmmError};

const VMM: &str = "firecracker";

/// Guest vsock port the readiness unit connects to (host CID 2).
pub const READY_PORT: u32 = 52;

/// The line the guest sends when it is ready.
pub const READY_MARKER: &str = "banger-guest-ready";

/// Longest line read from the guest; a marker is a dozen bytes.
const MAX_LINE: u64 = 256;

/// Host socket Firecracker forwards guest connections on `port` to.
pub fn guest_port_socket(spec: &LaunchSpec, port: u32) -> PathBuf {
    let mut s = spec.vsock_socket().into_os_string();
    s.push(format!("_{port}"));
    PathBuf::from(s)
}

/// A bound listener for the guest's readiness connection. The socket file is
/// removed when this is dropped.
#[derive(Debug)]
pub struct ReadyListener {
    path: PathBuf,
    listener: UnixListener,
}

impl ReadyListener {
    /// Bind `<vsock_socket>_<port>`. A stale socket from an earlier run is
    /// replaced; any other file there is refused. When the VMM runs as
    /// another user the socket is handed to that user, since Firecracker
    /// connects to it with the VMM's credentials.
    pub fn bind(spec: &LaunchSpec, port: u32) -> Result<Self, VmmError> {
        let path = guest_port_socket(spec, port);
        super::spec::remove_stale_socket(&path)?;
        let listener = UnixListener::bind(&path).map_err(|source| VmmError::Io {
            what: format!("binding the vsock readiness socket {}", path.display()),
            source,
        })?;
        let guard = ReadyListener { path, listener };
        if let Some((uid, gid)) = spec.run_as {
            rustix::fs::chown(
                &guard.path,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
            .map_err(|e| VmmError::Io {
                what: format!(
                    "handing the vsock readiness socket {} to uid {uid}",
                    guard.path.display()
                ),
                source: e.into(),
            })?;
        }
        guard
            .listener
            .set_nonblocking(true)
            .map_err(|source| VmmError::Io {
                what: format!("configuring {}", guard.path.display()),
                source,
            })?;
        Ok(guard)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wait up to `timeout` for a guest connection that sends
    /// [`READY_MARKER`]. A connection that closes without sending anything is
    /// ignored (a probe); any other line is an error quoting it.
    pub fn wait(&self, timeout: Duration) -> Result<(), VmmError> {
        self.wait_while(timeout, || Ok(()))
    }

    /// [`ReadyListener::wait`], calling `check` between polls; an error from
    /// `check` (e.g. "the VMM exited") ends the wait with that error.
    pub fn wait_while(
        &self,
        timeout: Duration,
        mut check: impl FnMut() -> Result<(), VmmError>,
    ) -> Result<(), VmmError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if self.read_marker(stream, remaining)? {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(VmmError::Io {
                        what: format!("accepting on {}", self.path.display()),
                        source,
                    });
                }
            }
            check()?;
            if Instant::now() >= deadline {
                return Err(VmmError::Timeout {
                    vmm: VMM,
                    what: "see the guest report ready over vsock",
                    secs: timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `Ok(true)` on the marker, `Ok(false)` on an empty connection.
    fn read_marker(&self, stream: UnixStream, remaining: Duration) -> Result<bool, VmmError> {
        let io = |source| VmmError::Io {
            what: format!(
                "reading the guest's readiness line on {}",
                self.path.display()
            ),
            source,
        };
        stream.set_nonblocking(false).map_err(io)?;
        // A guest that connects and then stalls gets at most the remaining
        // time (and at least a moment to finish its line).
        stream
            .set_read_timeout(Some(remaining.max(Duration::from_millis(200))))
            .map_err(io)?;
        let mut line = String::new();
        let mut reader = BufReader::new(std::io::Read::take(stream, MAX_LINE));
        match reader.read_line(&mut line) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(VmmError::Readiness {
                    vmm: VMM,
                    what: format!(
                        "the guest connected to vsock port {} but sent no full line (got {line:?})",
                        port_of(&self.path)
                    ),
                });
            }
            Err(e) => return Err(io(e)),
        }
        let got = line.trim_end_matches(['\n', '\r']);
        if got.is_empty() {
            tracing::debug!(socket = %self.path.display(), "empty vsock readiness connection");
            return Ok(false);
        }
        if got == READY_MARKER {
            return Ok(true);
        }
        Err(VmmError::Readiness {
            vmm: VMM,
            what: format!(
                "expected {READY_MARKER:?} on vsock port {}, the guest sent {got:?}",
                port_of(&self.path)
            ),
        })
    }
}

impl Drop for ReadyListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn port_of(path: &Path) -> String {
    path.to_string_lossy()
        .rsplit('_')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Bind `<vsock_socket>_<port>` and wait up to `timeout` for the guest's
/// [`READY_MARKER`]. The guest must connect after this is called (its unit
/// retries), which is why [`ReadyListener`] exists for callers that can bind
/// before `InstanceStart`.
pub fn wait_ready_vsock(spec: &LaunchSpec, port: u32, timeout: Duration) -> Result<(), VmmError> {
    ReadyListener::bind(spec, port)?.wait(timeout)
}
