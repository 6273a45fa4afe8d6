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

use std::ffi::OsStr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode};
use std::time::{Duration, Instant};

use crate::dir::OwnerDir;
use crate::{LaunchSpec, VmmError};

const VMM: &str = "firecracker";

/// Guest vsock port the readiness unit connects to (host CID 2), and the
/// line the guest sends when it is ready (the guest contract's,
/// `banger_proto::guest`).
pub use banger_proto::guest::{READY_MARKER, READY_VSOCK_PORT as READY_PORT};

/// Longest line read from the guest; a marker is a dozen bytes.
const MAX_LINE: u64 = 256;

/// Longest a connection may take to send its line: the guest's unit writes
/// it as soon as it connects. Anyone else who can connect (the VMM's user)
/// and then stalls holds the waiting thread no longer than this, not for
/// the whole boot timeout.
pub const LINE_WAIT: Duration = Duration::from_secs(5);

/// Host socket Firecracker forwards guest connections on `port` to.
pub fn guest_port_socket(spec: &LaunchSpec, port: u32) -> PathBuf {
    let mut s = spec.vsock_socket().into_os_string();
    s.push(format!("_{port}"));
    PathBuf::from(s)
}

/// A bound listener for the guest's readiness connection. The socket file is
/// removed when this is dropped.
///
/// Root binds it inside the VM's `run/` directory, which the VMM's user
/// (the owner in system mode) can write. So nothing here acts on a path
/// that user could redirect: `run/` is a descriptor (the executor's, of the
/// directory it made; else opened once without following any symlink), the
/// socket is bound by name relative to it, as the VMM's user, on a thread
/// with its own working directory, umask and file-system ids, it is never
/// `chown`ed, and it is removed with `unlinkat` only while the name still
/// holds the inode that was bound.
#[derive(Debug)]
pub struct ReadyListener {
    path: PathBuf,
    dir: OwnerDir,
    name: String,
    /// Device and inode of the bound socket file.
    node: (u64, u64),
    listener: UnixListener,
}

impl ReadyListener {
    /// Bind `<vsock_socket>_<port>`. A stale socket from an earlier run is
    /// replaced; any other file there is refused, and so is a run directory
    /// reached through a symlink. When the VMM runs as another user the
    /// socket is created as that user (Firecracker connects with the VMM's
    /// credentials).
    /// Test support: the executor binds in its own descriptor
    /// ([`ReadyListener::bind_in`]).
    #[cfg(any(test, feature = "test-support"))]
    pub fn bind(spec: &LaunchSpec, port: u32) -> Result<Self, VmmError> {
        let path = guest_port_socket(spec, port);
        let parent = path.parent().unwrap_or(Path::new("/"));
        let dir = OwnerDir::open(parent, "directory of the vsock readiness socket")?;
        Self::bind_in(dir, spec, port)
    }

    /// [`ReadyListener::bind`] inside `dir`, a descriptor of the directory
    /// `<vsock_socket>_<port>` lives in that the caller opened (the executor
    /// passes the one it made, so no path is resolved at all).
    pub fn bind_in(dir: OwnerDir, spec: &LaunchSpec, port: u32) -> Result<Self, VmmError> {
        let path = guest_port_socket(spec, port);
        let io = |what: &str, e: std::io::Error| VmmError::Io {
            what: format!("{what} the vsock readiness socket {}", path.display()),
            source: e,
        };
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return Err(io(
                "placing",
                std::io::Error::from(std::io::ErrorKind::InvalidInput),
            ));
        };
        let name = name.to_string();
        dir.remove_stale_socket(&name)?;
        // Created as the VMM's user (0700), who connects to it: nothing
        // root-owned is left in that user's directory, and nothing is chowned.
        let listener =
            bind_beneath(&dir, OsStr::new(&name), spec.run_as).map_err(|e| io("binding", e))?;
        let st = dir
            .lstat(name.as_str())
            .map_err(|e| io("inspecting", e.into()))?;
        let guard = ReadyListener {
            path,
            dir,
            name,
            node: (st.st_dev, st.st_ino),
            listener,
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::Socket || st.st_uid != spec.vmm_uid() {
            return Err(VmmError::InvalidSpec {
                vmm: VMM,
                what: format!(
                    "{} was replaced right after it was bound; refusing it",
                    guard.path.display()
                ),
            });
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
        // A guest that connects and then stalls — or trickles a byte at a
        // time — gets at most the remaining time for the whole line, capped
        // at LINE_WAIT (and at least a moment to finish).
        let deadline = Instant::now() + remaining.min(LINE_WAIT).max(Duration::from_millis(200));
        let mut got_bytes = Vec::new();
        let mut stream = stream;
        let mut chunk = [0u8; MAX_LINE as usize];
        let stalled = |got: &[u8]| VmmError::Readiness {
            vmm: VMM,
            what: format!(
                "the guest connected to vsock port {} but sent no full line (got {:?})",
                port_of(&self.path),
                String::from_utf8_lossy(got)
            ),
        };
        while !got_bytes.contains(&b'\n') && (got_bytes.len() as u64) < MAX_LINE {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(stalled(&got_bytes));
            }
            stream.set_read_timeout(Some(left)).map_err(io)?;
            let room = MAX_LINE as usize - got_bytes.len();
            match std::io::Read::read(&mut stream, &mut chunk[..room]) {
                Ok(0) => break,
                Ok(n) => got_bytes.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(stalled(&got_bytes));
                }
                Err(e) => return Err(io(e)),
            }
        }
        // The first line only (what a line reader would have returned).
        let end = got_bytes
            .iter()
            .position(|b| *b == b'\n')
            .map_or(got_bytes.len(), |i| i + 1);
        let line = String::from_utf8_lossy(&got_bytes[..end]).into_owned();
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
    /// Remove the socket — only while the name still holds the bound inode,
    /// relative to the directory opened at bind time.
    fn drop(&mut self) {
        let name = self.name.as_str();
        if let Ok(st) = self.dir.lstat(name)
            && (st.st_dev, st.st_ino) == self.node
        {
            let _ = rustix::fs::unlinkat(&self.dir, name, AtFlags::empty());
        }
    }
}

/// Bind `name` inside `dir` as `run_as` (else as this process), mode 0700,
/// on a short-lived thread with its own working directory and umask
/// (`unshare(CLONE_FS)`) and file-system ids (`setfsuid`/`setfsgid` are
/// per thread), so the bind resolves no path but the final name and the
/// rest of the process is never touched. `bind` never follows a symlink at
/// the final name: an existing entry makes it fail.
fn bind_beneath(
    dir: &OwnerDir,
    name: &OsStr,
    run_as: Option<(u32, u32)>,
) -> std::io::Result<UnixListener> {
    crate::dir::with_fs_ids(run_as, "ready-bind", || {
        // SAFETY: unshare(CLONE_FS) takes no pointers; it gives only this
        // thread its own cwd/umask, which it changes below and which end
        // with it.
        if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        rustix::process::fchdir(dir)?;
        rustix::process::umask(Mode::from_raw_mode(0o077));
        UnixListener::bind(name)
    })
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
#[cfg(any(test, feature = "test-support"))]
pub fn wait_ready_vsock(spec: &LaunchSpec, port: u32, timeout: Duration) -> Result<(), VmmError> {
    ReadyListener::bind(spec, port)?.wait(timeout)
}
