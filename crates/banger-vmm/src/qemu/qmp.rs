//! A minimal synchronous QMP client: JSON objects, one per line, over the
//! Unix socket QEMU opened with `-qmp unix:PATH,server=on,wait=off`.
//!
//! Conversation: QEMU greets with `{"QMP": ...}`; the client enters command
//! mode with `qmp_capabilities`; then each `{"execute": CMD}` is answered by
//! `{"return": ...}` or `{"error": {"class", "desc"}}`, with asynchronous
//! `{"event": ...}` lines possibly in between (skipped here).

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::time::Duration;

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
    #[error("QMP did not greet (got {0})")]
    NoGreeting(String),
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
}

#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
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
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let writer = stream.try_clone()?;
        let mut q = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = q.read_value()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::NoGreeting(greeting.to_string()));
        }
        q.execute("qmp_capabilities")?;
        Ok(q)
    }

    /// Run a command without arguments and return its `return` value.
    pub fn execute(&mut self, command: &str) -> Result<Value, QmpError> {
        let mut line = serde_json::json!({ "execute": command }).to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        loop {
            let v = self.read_value()?;
            if v.get("event").is_some() {
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                return Err(QmpError::Command {
                    command: command.to_string(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            return Err(QmpError::Garbage(v.to_string()));
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

    fn read_value(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(QmpError::Closed);
        }
        serde_json::from_str(line.trim()).map_err(|_| QmpError::Garbage(line.trim().to_string()))
    }
}
