//! `banger-fake-firecracker`: a recording stand-in for the `firecracker`
//! binary, used by banger-vmm's tests. Never installed.
//!
//! Invoked exactly like Firecracker (`--api-sock PATH --id ID`), it serves
//! HTTP/1.1 on the API socket, validates every request against the
//! Firecracker swagger spec (see `swagger.rs`), answers 204/200/400 the way
//! Firecracker does, and appends each request to a record. There is no
//! guest: `InstanceStart` only flips the state to `Running`.
//!
//! Its configuration is a file next to the socket, `fake-firecracker.json`
//! in the socket's directory, written by the test:
//! `{"spec": <swagger as JSON>, "ctrl_alt_del": "exit" | "ignore",
//!   "fail": [{"method", "path", "status", "fault_message"}],
//!   "tap_probe": [names]}` (`tap_probe` optional: only with it does the
//! fake attach taps, as below).
//! It writes `fake-firecracker.pid` and `fake-firecracker.jsonl` (one
//! `{"method", "path", "body", "status"}` per request; a `PUT /drives`
//! also has `"opened"`: `"ok"` or the error of opening `path_on_host` as
//! Firecracker does, read-only or read-write), and with `tap_probe` a `PUT
//! /network-interfaces` has `"attached"`: for `host_dev_name` and each
//! name of `tap_probe`, `"ok"` or the error of attaching it as
//! Firecracker does (`TUNSETIFF` on `/dev/net/tun`), beside it, and
//! `fake-firecracker.self` (`{"uid", "gid", "proc"}`: its ids, and whether
//! it sees a `/proc`) for the jailed tests.

mod swagger;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

struct Config {
    spec: swagger::Spec,
    exit_on_ctrl_alt_del: bool,
    fail: Vec<Value>,
    /// Taps to try attaching at `PUT /network-interfaces` besides the
    /// body's; `None`: attach nothing.
    tap_probe: Option<Vec<String>>,
}

struct Fake {
    id: String,
    config: Config,
    record: PathBuf,
    boot_source_set: bool,
    started: bool,
}

enum After {
    Continue,
    Exit,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("fake firecracker: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut sock = None;
    let mut id = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--api-sock" => sock = it.next().cloned(),
            "--id" => id = it.next().cloned(),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let sock = PathBuf::from(sock.ok_or("--api-sock is required")?);
    let id = id.ok_or("--id is required")?;
    let dir = sock
        .parent()
        .ok_or("--api-sock has no directory")?
        .to_path_buf();
    let config = load_config(&dir.join("fake-firecracker.json"))?;
    std::fs::write(
        dir.join("fake-firecracker.pid"),
        std::process::id().to_string(),
    )
    .map_err(|e| format!("writing the pid file: {e}"))?;
    let me = json!({
        "uid": rustix::process::getuid().as_raw(),
        "gid": rustix::process::getgid().as_raw(),
        "proc": Path::new("/proc/self").exists(),
    });
    std::fs::write(dir.join("fake-firecracker.self"), me.to_string())
        .map_err(|e| format!("writing what it is: {e}"))?;
    let listener =
        UnixListener::bind(&sock).map_err(|e| format!("binding {}: {e}", sock.display()))?;
    println!("fake firecracker {id}: API on {}", sock.display());
    let mut fake = Fake {
        id,
        config,
        record: dir.join("fake-firecracker.jsonl"),
        boot_source_set: false,
        started: false,
    };
    for conn in listener.incoming() {
        let conn = conn.map_err(|e| format!("accepting: {e}"))?;
        if let After::Exit = fake.serve(conn) {
            println!("fake firecracker {}: guest rebooted, exiting", fake.id);
            let _ = std::fs::remove_file(&sock);
            return Ok(());
        }
    }
    Ok(())
}

fn load_config(path: &Path) -> Result<Config, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))?;
    Ok(Config {
        spec: swagger::Spec::new(v.get("spec").cloned().ok_or("config has no \"spec\"")?),
        exit_on_ctrl_alt_del: v.get("ctrl_alt_del").and_then(Value::as_str) != Some("ignore"),
        fail: v
            .get("fail")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        tap_probe: v.get("tap_probe").and_then(Value::as_array).map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        }),
    })
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
    chunked: bool,
}

impl Fake {
    /// Serve requests on one connection until the client closes it.
    fn serve(&mut self, conn: UnixStream) -> After {
        let Ok(write_half) = conn.try_clone() else {
            return After::Continue;
        };
        let mut reader = BufReader::new(conn);
        let mut out = write_half;
        loop {
            let req = match read_request(&mut reader) {
                Ok(Some(r)) => r,
                Ok(None) => return After::Continue,
                Err(e) => {
                    let _ = respond(&mut out, 400, Some(&fault(&e)));
                    return After::Continue;
                }
            };
            let (status, body, after) = self.handle(&req);
            if respond(&mut out, status, body.as_ref()).is_err() {
                return After::Continue;
            }
            if let After::Exit = after {
                return After::Exit;
            }
        }
    }

    fn handle(&mut self, req: &Request) -> (u16, Option<Value>, After) {
        let parsed: Option<Result<Value, String>> = (!req.body.is_empty())
            .then(|| serde_json::from_slice(&req.body).map_err(|e| e.to_string()));
        let (status, body, after) = self.decide(req, parsed.as_ref());
        let recorded_body = match parsed {
            Some(Ok(v)) => v,
            Some(Err(_)) => Value::String(String::from_utf8_lossy(&req.body).into_owned()),
            None => Value::Null,
        };
        let mut line = json!({
            "method": req.method, "path": req.path, "body": recorded_body, "status": status,
        });
        if req.method == "PUT" && req.path.starts_with("/drives/") {
            line["opened"] = json!(open_drive(&recorded_body));
        }
        if let Some(probe) = &self.config.tap_probe
            && req.method == "PUT"
            && req.path.starts_with("/network-interfaces/")
        {
            let own = recorded_body.get("host_dev_name").and_then(Value::as_str);
            let attached: serde_json::Map<String, Value> = own
                .into_iter()
                .chain(probe.iter().map(String::as_str))
                .map(|name| (name.to_string(), json!(attach_tap(name))))
                .collect();
            line["attached"] = Value::Object(attached);
        }
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.record)
        {
            let _ = writeln!(f, "{line}");
        }
        (status, body, after)
    }

    fn decide(
        &mut self,
        req: &Request,
        body: Option<&Result<Value, String>>,
    ) -> (u16, Option<Value>, After) {
        let bad = |msg: String| (400, Some(fault(&msg)), After::Continue);
        if req.chunked {
            return bad("chunked transfer encoding is not supported".into());
        }
        for f in &self.config.fail {
            if f.get("method").and_then(Value::as_str) == Some(req.method.as_str())
                && f.get("path").and_then(Value::as_str) == Some(req.path.as_str())
            {
                let status = f.get("status").and_then(Value::as_u64).unwrap_or(400) as u16;
                let msg = f.get("fault_message").and_then(Value::as_str).unwrap_or("");
                return (status, Some(fault(msg)), After::Continue);
            }
        }
        let body = match body {
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => return bad(format!("the body is not JSON: {e}")),
            None => None,
        };
        let Some(op) = self.config.spec.operation(&req.method, &req.path) else {
            return bad(format!(
                "Invalid request method and/or path: {} {}.",
                req.method, req.path
            ));
        };
        let pre_boot_only = op
            .op
            .get("summary")
            .and_then(Value::as_str)
            .is_some_and(|s| s.contains("Pre-boot only"));
        let template = op.template.clone();
        if let Err(e) = self
            .config
            .spec
            .validate_request(&req.method, &req.path, body)
        {
            return bad(e);
        }
        if pre_boot_only && self.started {
            return bad(
                "The requested operation is not supported after starting the microVM.".into(),
            );
        }
        match (req.method.as_str(), template.as_str()) {
            ("GET", "/") => {
                let state = if self.started {
                    "Running"
                } else {
                    "Not started"
                };
                let info = json!({
                    "app_name": "Firecracker", "id": self.id,
                    "state": state, "vmm_version": "1.16.1-banger-fake",
                });
                // The fake holds its own answers to the spec too.
                match self.config.spec.validate_definition("InstanceInfo", &info) {
                    Ok(()) => (200, Some(info), After::Continue),
                    Err(e) => (500, Some(fault(&e)), After::Continue),
                }
            }
            ("PUT", "/boot-source") => {
                self.boot_source_set = true;
                (204, None, After::Continue)
            }
            ("PUT", "/actions") => {
                let action = body
                    .and_then(|b| b.get("action_type"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match action {
                    "InstanceStart" if self.started => {
                        bad("The microVM is already running.".into())
                    }
                    "InstanceStart" if !self.boot_source_set => {
                        bad("Cannot start microvm without kernel configuration.".into())
                    }
                    "InstanceStart" => {
                        self.started = true;
                        (204, None, After::Continue)
                    }
                    "SendCtrlAltDel" if !self.started => bad(
                        "The requested operation is not supported before starting the microVM."
                            .into(),
                    ),
                    "SendCtrlAltDel" if self.config.exit_on_ctrl_alt_del => {
                        (204, None, After::Exit)
                    }
                    _ => (204, None, After::Continue),
                }
            }
            ("PUT", _) | ("PATCH", _) => (204, None, After::Continue),
            _ => bad(format!(
                "the fake does not implement {} {}",
                req.method, req.path
            )),
        }
    }
}

/// Open a drive body's `path_on_host` as Firecracker does at `PUT
/// /drives` (read-write unless `is_read_only`): `"ok"` or the error.
fn open_drive(body: &Value) -> String {
    let Some(path) = body.get("path_on_host").and_then(Value::as_str) else {
        return "no path_on_host".into();
    };
    let read_only = body.get("is_read_only").and_then(Value::as_bool) == Some(true);
    match std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(path)
    {
        Ok(_) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

/// Attach the tap `name` as Firecracker does at `PUT /network-interfaces`
/// (`TUNSETIFF` with `IFF_TAP|IFF_NO_PI|IFF_VNET_HDR` on `/dev/net/tun`),
/// then let it go: `"ok"` or the error.
fn attach_tap(name: &str) -> String {
    use std::os::fd::AsRawFd as _;
    let tun = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(f) => f,
        Err(e) => return format!("opening /dev/net/tun: {e}"),
    };
    let mut req = [0u8; 40];
    let len = name.len().min(15);
    req[..len].copy_from_slice(&name.as_bytes()[..len]);
    let flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
    req[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes 40 bytes, the size of `req`, on
    // a live tun descriptor.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, req.as_mut_ptr()) };
    if rc < 0 {
        return std::io::Error::last_os_error().to_string();
    }
    "ok".into()
}

fn fault(msg: &str) -> Value {
    json!({ "fault_message": msg })
}

/// Read one request; `Ok(None)` at a clean end of the connection.
fn read_request(r: &mut BufReader<UnixStream>) -> Result<Option<Request>, String> {
    let mut line = String::new();
    if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("bad request line {line:?}"));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(format!("unsupported HTTP version {version:?}"));
    }
    let (method, path) = (method.to_string(), path.to_string());
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).map_err(|e| e.to_string())? == 0 {
            return Err("connection closed inside the headers".into());
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':').ok_or(format!("bad header {h:?}"))?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?;
            }
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    if length > 1 << 20 {
        return Err(format!("body of {length} bytes is too large"));
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok(Some(Request {
        method,
        path,
        body,
        chunked,
    }))
}

fn respond(w: &mut UnixStream, status: u16, body: Option<&Value>) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        _ => "Internal Server Error",
    };
    let mut head = format!("HTTP/1.1 {status} {reason}\r\nServer: Firecracker API\r\n");
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    if body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
        head.push_str(&format!("Content-Length: {}\r\n", payload.len()));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    w.write_all(payload.as_bytes())?;
    w.flush()
}
