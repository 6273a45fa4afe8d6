//! Test support: a hostile VMM stand-in serving a socket from a thread of
//! the test process (so `SO_PEERCRED` names this pid, the expected peer).

use std::io::Write as _;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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

/// A Firecracker API stand-in serving `path` from threads of this
/// process: each request (one per connection) is answered `delay` after
/// its head came in, `GET /` by an `InstanceInfo` saying `Paused`, any
/// other by `204`. It serves until dropped.
pub struct StallingApi {
    path: std::path::PathBuf,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl StallingApi {
    pub fn serve(path: &Path, delay: Duration) -> StallingApi {
        let listener = UnixListener::bind(path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, done) = (Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                let (Ok(conn), log) = (conn, Arc::clone(&log)) else {
                    return;
                };
                std::thread::spawn(move || answer_late(conn, delay, &log));
            }
        });
        StallingApi {
            path: path.to_path_buf(),
            seen,
            stop,
        }
    }

    /// The request lines seen so far (`PATCH /vm`), in order.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for StallingApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then ends.
        let _ = std::os::unix::net::UnixStream::connect(&self.path);
    }
}

/// Read one request's head from `conn`, note its request line in `seen`,
/// and answer it after `delay`.
fn answer_late(
    mut conn: std::os::unix::net::UnixStream,
    delay: Duration,
    seen: &Mutex<Vec<String>>,
) {
    use std::io::Read as _;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let line = head.lines().next().unwrap_or_default();
    let call: Vec<&str> = line.split(' ').take(2).collect();
    seen.lock().unwrap().push(call.join(" "));
    std::thread::sleep(delay);
    let answer = if line.starts_with("GET") {
        let body = r#"{"app_name":"Firecracker","id":"x","state":"Paused","vmm_version":"1.16.1"}"#;
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 204 No Content\r\n\r\n".to_string()
    };
    let _ = conn.write_all(answer.as_bytes());
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
