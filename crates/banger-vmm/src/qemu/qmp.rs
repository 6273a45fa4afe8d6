//! A minimal synchronous QMP client: JSON objects, one per line, over the
//! Unix socket QEMU opened with `-qmp unix:PATH,server=on,wait=off`.
//!
//! Conversation: QEMU greets with `{"QMP": ...}`; the client enters command
//! mode with `qmp_capabilities`; then each `{"execute": CMD}` is answered by
//! `{"return": ...}` or `{"error": {"class", "desc"}}`, with asynchronous
//! `{"event": ...}` lines possibly in between (skipped here).
//!
//! QEMU runs as the owner, and a guest that escaped into it speaks for
//! it, so its bytes are hostile: a line longer than [`MAX_LINE`] ends the
//! session, and each exchange (the greeting and capabilities at connect,
//! then each command with the events before its answer) must be over
//! within the caller's timeout, however the bytes trickle in.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::QMP_SOCKET;
use crate::dir::{OwnerDir, Peer};

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
        let mut line = serde_json::json!({ "execute": command }).to_string();
        line.push('\n');
        let deadline = Instant::now() + self.timeout;
        self.stream.write_all(line.as_bytes())?;
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
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(late());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}
