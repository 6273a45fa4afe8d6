//! Test support: a hostile VMM stand-in serving a socket from a thread of
//! the test process (so `SO_PEERCRED` names this pid, the expected peer).

use std::io::Write as _;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::dir::{OwnerDir, Peer};

/// What the stand-in sends after accepting one connection. It never reads.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// `prefix`, then `bytes` more bytes as fast as the socket takes them,
    /// then it closes.
    Flood { prefix: &'static [u8], bytes: usize },
    /// `prefix` and then one byte every 100 ms, never a line end, for at
    /// most a minute or until the client hangs up.
    Trickle { prefix: &'static [u8] },
    /// `bytes` whole, then it closes.
    Whole(&'static [u8]),
}

/// Bind `path` and serve one connection with `reply` on a thread.
pub fn serve(path: &Path, reply: Reply) -> JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        match reply {
            Reply::Flood { prefix, bytes } => {
                if conn.write_all(prefix).is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if conn.write_all(&chunk[..n]).is_err() {
                        return;
                    }
                    left -= n;
                }
            }
            Reply::Whole(bytes) => {
                let _ = conn.write_all(bytes);
            }
            Reply::Trickle { prefix } => {
                let until = Instant::now() + Duration::from_secs(60);
                for b in prefix.iter().chain(std::iter::repeat(&b'x')) {
                    if Instant::now() > until || conn.write_all(&[*b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    })
}

/// Run `f` on a thread and wait at most `limit` for its result; `None`
/// when it is still running then (the thread is left to finish alone).
pub fn within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

/// Run `client` against a stand-in serving `name` with `reply` in a fresh
/// directory (`client` gets that directory and this process as the
/// expected peer). Returns the client's error, cut to 300 bytes, and how
/// long it took; fails the test if the client succeeded or was still
/// waiting after 15 s.
pub fn client_error<T: std::fmt::Debug + Send + 'static>(
    name: &str,
    reply: Reply,
    client: impl FnOnce(OwnerDir, Peer) -> Result<T, String> + Send + 'static,
) -> (String, Duration) {
    let base = tempfile::tempdir().unwrap();
    let server = serve(&base.path().join(name), reply);
    let dir = OwnerDir::open(base.path(), "run directory").unwrap();
    let me = Peer {
        uid: rustix::process::geteuid().as_raw(),
        pid: std::process::id(),
    };
    let started = Instant::now();
    let got = within(Duration::from_secs(15), move || client(dir, me))
        .unwrap_or_else(|| panic!("the client was still waiting for the stand-in after 15 s"));
    let took = started.elapsed();
    drop(server);
    let mut msg = got.expect_err("the stand-in's answer was taken");
    msg.truncate(300);
    (msg, took)
}
