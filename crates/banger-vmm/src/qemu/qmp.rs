//! A minimal synchronous QMP client: JSON objects, one per line, over the
//! Unix socket root listens on and hands to QEMU ([`RootSocket`]).
//!
//! Conversation: QEMU greets with `{"QMP": ...}`; the client enters command
//! mode with `qmp_capabilities`; then each `{"execute": CMD}` is answered by
//! `{"return": ...}` or `{"error": {"class", "desc"}}`, with asynchronous
//! `{"event": ...}` lines possibly in between (skipped here).
//!
//! A guest that escaped into QEMU speaks for it, so its bytes are
//! hostile: a line longer than [`MAX_LINE`] ends the
//! session, and each exchange (the greeting and capabilities at connect,
//! then each command with the events before its answer) must be over
//! within the caller's timeout, however the bytes trickle in.

use std::io::{Read as _, Write as _};
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{FileType, Mode, OFlags};

use serde_json::Value;

use crate::QMP_SOCKET;
use crate::dir::{OwnerDir, Peer, RESOLVE, connect_inode};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("connecting to QMP at {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP I/O")]
    Io(#[from] std::io::Error),
    #[error("QMP sent something that is not JSON: {0}")]
    Garbage(String),
    #[error("QMP closed the connection")]
    Closed,
    #[error("QMP sent a line over 1 MiB")]
    TooLong,
    #[error("QMP did not answer within {secs}s")]
    Deadline { secs: u64 },
    #[error("QMP did not greet (got {0})")]
    NoGreeting(String),
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
}

/// The longest line taken from QEMU (its answers here are a few hundred
/// bytes).
pub const MAX_LINE: usize = 1 << 20;

#[derive(Debug)]
pub struct Qmp {
    stream: UnixStream,
    /// Bytes read past the last line taken; never over `MAX_LINE`.
    pending: Vec<u8>,
    /// What each exchange may take in all.
    timeout: Duration,
}

impl Qmp {
    /// Connect to `qmp.sock` in `run` (QEMU's, served by `peer`: see
    /// [`OwnerDir::connect`]), read the greeting and negotiate capabilities.
    pub fn connect(run: &OwnerDir, peer: Peer, timeout: Duration) -> Result<Qmp, QmpError> {
        let stream = run
            .connect(QMP_SOCKET, peer)
            .map_err(|source| QmpError::Connect {
                path: run.join(QMP_SOCKET).display().to_string(),
                source,
            })?;
        Qmp::negotiate(stream, timeout)
    }

    /// Connect to root's own QMP socket `sock` (see [`RootSocket`]), read
    /// the greeting and negotiate capabilities.
    pub fn connect_socket(sock: &RootSocket, timeout: Duration) -> Result<Qmp, QmpError> {
        let stream = sock.connect().map_err(|source| QmpError::Connect {
            path: sock.path().display().to_string(),
            source,
        })?;
        Qmp::negotiate(stream, timeout)
    }

    /// The greeting and `qmp_capabilities` on a connected `stream`.
    fn negotiate(stream: UnixStream, timeout: Duration) -> Result<Qmp, QmpError> {
        stream.set_nonblocking(false)?;
        stream.set_write_timeout(Some(timeout))?;
        let mut q = Qmp {
            stream,
            pending: Vec::new(),
            timeout,
        };
        let greeting = q.read_value(Instant::now() + timeout)?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::NoGreeting(crate::quoted(&greeting.to_string())));
        }
        q.execute("qmp_capabilities")?;
        Ok(q)
    }

    /// Run a command without arguments and return its `return` value.
    pub fn execute(&mut self, command: &str) -> Result<Value, QmpError> {
        self.send(command, None, None)
    }

    /// Run `command` with `arguments` (a JSON object) and return its
    /// `return` value.
    pub fn execute_with(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        self.send(command, Some(arguments), None)
    }

    /// Give QEMU `fd` under `name` (`getfd`, the descriptor travelling as
    /// `SCM_RIGHTS` beside the command): a later command names it
    /// (`fd:NAME` in a migration URI). QEMU keeps its own duplicate.
    pub fn pass_fd(&mut self, name: &str, fd: BorrowedFd<'_>) -> Result<(), QmpError> {
        self.send(
            "getfd",
            Some(serde_json::json!({ "fdname": name })),
            Some(fd),
        )
        .map(drop)
    }

    /// Send one command (with `fd` as `SCM_RIGHTS` on its first byte) and
    /// read its answer, skipping events, within the session's timeout.
    fn send(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<Value, QmpError> {
        let mut line = match arguments {
            Some(a) => serde_json::json!({ "execute": command, "arguments": a }),
            None => serde_json::json!({ "execute": command }),
        }
        .to_string();
        line.push('\n');
        let deadline = Instant::now() + self.timeout;
        let mut sent = 0;
        if let Some(fd) = fd {
            sent = send_with_fd(&self.stream, line.as_bytes(), fd)?;
        }
        self.stream.write_all(&line.as_bytes()[sent..])?;
        loop {
            let v = self.read_value(deadline)?;
            if v.get("event").is_some() {
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                let field = |k: &str| crate::quoted(e.get(k).and_then(Value::as_str).unwrap_or(""));
                return Err(QmpError::Command {
                    command: command.to_string(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            return Err(QmpError::Garbage(crate::quoted(&v.to_string())));
        }
    }

    /// `query-status`: the run state (`running`, `paused`, `shutdown`, ...).
    pub fn status(&mut self) -> Result<String, QmpError> {
        let v = self.execute("query-status")?;
        Ok(v.get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }

    /// The next line, parsed: at most [`MAX_LINE`] bytes, by `deadline`.
    fn read_value(&mut self, deadline: Instant) -> Result<Value, QmpError> {
        let line = self.read_line(deadline)?;
        let line = String::from_utf8_lossy(&line);
        serde_json::from_str(line.trim()).map_err(|_| {
            // Quoted in errors: the first 200 characters are enough.
            QmpError::Garbage(line.trim().chars().take(200).collect())
        })
    }

    fn read_line(&mut self, deadline: Instant) -> Result<Vec<u8>, QmpError> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let rest = self.pending.split_off(end + 1);
                return Ok(std::mem::replace(&mut self.pending, rest));
            }
            if self.pending.len() >= MAX_LINE {
                return Err(QmpError::TooLong);
            }
            let late = || QmpError::Deadline {
                secs: self.timeout.as_secs(),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(late());
            }
            self.stream.set_read_timeout(Some(left))?;
            // Never more than fills the line to one byte over the cap.
            let room = (MAX_LINE + 1 - self.pending.len()).min(chunk.len());
            match self.stream.read(&mut chunk[..room]) {
                Ok(0) => return Err(QmpError::Closed),
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if crate::timed_out(&e) => {
                    return Err(late());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Send `bytes` on `stream` with `fd` as `SCM_RIGHTS`: how many bytes
/// went (at least one; the descriptor goes with the first).
fn send_with_fd(stream: &UnixStream, bytes: &[u8], fd: BorrowedFd<'_>) -> std::io::Result<usize> {
    let fds = [fd];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    loop {
        let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
        if !control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)) {
            return Err(std::io::Error::other("no room for one descriptor"));
        }
        match rustix::net::sendmsg(
            stream,
            &[std::io::IoSlice::new(bytes)],
            &mut control,
            rustix::net::SendFlags::NOSIGNAL,
        ) {
            Ok(n) => return Ok(n),
            // Nothing was sent, the descriptor included: again.
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// QMP's socket as root holds it. Root binds and listens on it itself
/// ([`RootSocket::listen`]) in a directory only root can write, and passes
/// the listening descriptor into QEMU's jail (`-chardev socket,fd=N`):
/// QEMU gets no writable directory at all, and the socket outlives a
/// helper restart (QEMU keeps listening; the name stays in root's
/// directory). Root reaches it only through its descriptor of that
/// directory, so the path may be longer than `sun_path`.
///
/// No `SO_PEERCRED` check: the listener is root's socket (the kernel
/// reports the process that called `listen`), and only root and the VM's
/// QEMU ever hold it.
#[derive(Debug)]
pub struct RootSocket {
    /// Root's directory (0700, root's: the caller checked it).
    dir: OwnedFd,
    name: String,
    /// For messages only.
    path: PathBuf,
}

impl RootSocket {
    /// The socket `name` in root's directory `dir` (`dir_path` for
    /// messages). `name` is one plain path component.
    pub fn new(dir: OwnedFd, dir_path: &Path, name: &str) -> std::io::Result<RootSocket> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("socket name {name:?}"),
            ));
        }
        Ok(RootSocket {
            dir,
            name: name.to_string(),
            path: dir_path.join(name),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remove a stale socket of that name, bind a new one and listen: the
    /// listening descriptor QEMU gets.
    pub fn listen(&self) -> std::io::Result<OwnedFd> {
        self.remove()?;
        let sock = rustix::net::socket_with(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )?;
        let addr = rustix::net::SocketAddrUnix::new(self.in_dir())?;
        rustix::net::bind(&sock, &addr)?;
        rustix::net::listen(&sock, 4)?;
        Ok(sock)
    }

    /// Connect (non-blocking) to the socket: the name, opened without
    /// following a symlink, must be a socket of this process's uid; the
    /// connection goes to that inode through its descriptor.
    pub fn connect(&self) -> std::io::Result<UnixStream> {
        let node = rustix::fs::openat2(
            &self.dir,
            &self.name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )?;
        let st = rustix::fs::fstat(&node)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Socket
            || st.st_uid != rustix::process::geteuid().as_raw()
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{}: not a socket of uid {}; refusing to connect",
                    self.path.display(),
                    rustix::process::geteuid().as_raw()
                ),
            ));
        }
        connect_inode(node.as_fd())
    }

    /// Remove the socket's name (missing is fine).
    pub fn remove(&self) -> std::io::Result<()> {
        match rustix::fs::unlinkat(&self.dir, &self.name, rustix::fs::AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The socket's name through root's descriptor of its directory.
    fn in_dir(&self) -> String {
        format!(
            "/proc/thread-self/fd/{}/{}",
            self.dir.as_raw_fd(),
            self.name
        )
    }
}
