//! Test support for banger's cross-process tests: throwaway users, daemons on
//! temp sockets, and the raw protocol client. Never shipped.
//!
//! These tests need root (they create users, bind helper sockets and open
//! host devices). They do not skip without it: [`require_root`] fails the test
//! with a message saying so. CI runs them as root.
#![allow(clippy::disallowed_methods)] // test support spawns the binaries under test directly

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use banger_proto::install::{InstallMeta, InstallNetwork, InstallPaths, InstallVmm, Owner};
use serde_json::Value;

mod bins;
pub mod hostcheck;
mod jail;
mod root_helper_ns;

pub use bins::{SHARED_BIN_PREFIX, bin, others_can_run_from, shared_copies};
pub use jail::{JailCgroup, dev_jail_env, kvm_node, test_jail};

/// Fail (never skip) a test that needs root.
pub fn require_root() {
    let euid = rustix::process::geteuid().as_raw();
    assert_eq!(
        euid, 0,
        "this test needs root (it creates users, sockets owned by other uids and opens host devices); \
         run the suite as root, as `make test` and CI do"
    );
}

/// A directory that other test users can traverse, removed on drop.
pub fn shared_tempdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("banger-test-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A real system user created for one test and deleted on drop.
#[derive(Debug)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

static USER_SEQ: AtomicU32 = AtomicU32::new(0);

impl TestUser {
    /// Create a user with its own group, or with `group` as primary group.
    pub fn create(group: Option<u32>) -> TestUser {
        require_root();
        let name = format!(
            "bgt{}x{}",
            std::process::id(),
            USER_SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let mut cmd = Command::new("useradd");
        cmd.args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ]);
        match group {
            Some(gid) => {
                cmd.args(["--gid", &gid.to_string(), "--no-user-group"]);
            }
            None => {
                cmd.arg("--user-group");
            }
        }
        let out = cmd
            .arg(&name)
            .output()
            .expect("running useradd (package passwd)");
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = |flag: &str| -> u32 {
            let o = Command::new("id").args([flag, &name]).output().unwrap();
            String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
        };
        TestUser {
            uid: id("-u"),
            gid: id("-g"),
            name,
        }
    }

    /// A command that runs as this user (uid, gid, no supplementary groups).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(program);
        c.uid(self.uid).gid(self.gid).env("HOME", "/nonexistent");
        c
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
        // userdel leaves a group we asked for only if it was created for the user.
        let _ = Command::new("groupdel")
            .arg(&self.name)
            .stderr(Stdio::null())
            .output();
    }
}

/// A child process we started; stopped by its own handle on drop (SIGTERM,
/// then SIGKILL after 10 s). Never signals anything it did not start.
///
/// Its stdout and stderr are drained continuously into memory, so a chatty
/// daemon can never block on a full pipe.
#[derive(Debug)]
pub struct Proc {
    pub child: Option<Child>,
    pub name: String,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    if let Some(mut pipe) = pipe {
        let sink = Arc::clone(&buf);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
    }
    buf
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        Proc {
            child: Some(child),
            name: name.into(),
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Send SIGTERM and wait for exit; returns the process's output.
    pub fn terminate(&mut self) -> Output {
        let child = self.child.take().expect("already stopped");
        let pid = rustix::process::Pid::from_child(&child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        self.wait_output(child, Duration::from_secs(15))
    }

    /// Wait for the process to exit on its own.
    pub fn wait(&mut self, timeout: Duration) -> Output {
        let child = self.child.take().expect("already stopped");
        self.wait_output(child, timeout)
    }

    /// What the process wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// SIGKILL (by the child handle this test holds) and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn wait_output(&self, mut child: Child, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit within {timeout:?}; killed. stderr:\n{}",
                    self.name,
                    String::from_utf8_lossy(&self.stderr.lock().unwrap())
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Give the drain threads a moment to read what the pipes still hold.
        std::thread::sleep(Duration::from_millis(50));
        Output {
            status,
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Wait until `path` exists as a socket that accepts connections, or the
/// process exits (then panic with its stderr).
pub fn wait_for_socket(path: &Path, proc: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return;
        }
        if !proc.is_running() {
            let out = proc.wait(Duration::from_secs(1));
            panic!(
                "{} exited with {} before serving {}:\n{}",
                proc.name,
                out.status,
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} did not serve {} within 20 s", proc.name, path.display());
}

/// `bangerd --dev` inside a test namespace `ns` (so its bridge, taps, nft
/// tables and VMs live there), state under `dir/state`, sockets under
/// `dir/run`, `$HOME` = `dir` (where its owner config and keys are looked
/// for).
#[derive(Debug)]
pub struct NsDaemon {
    pub proc: Proc,
    pub socket: PathBuf,
    pub dir: PathBuf,
    /// Removed once `proc` has gone (declared after it).
    _cgroup: JailCgroup,
}

impl NsDaemon {
    pub fn start(ns: &NetNs, dir: &Path) -> NsDaemon {
        Self::start_with(dir, ns.exec_daemon(bin("bangerd")))
    }

    /// [`NsDaemon::start`] with `env` added to the daemon's environment
    /// (e.g. `BANGER_CRASH_AT`, bangerd's crash points).
    pub fn start_with_env(ns: &NetNs, dir: &Path, env: &[(&str, &str)]) -> NsDaemon {
        let mut cmd = ns.exec_daemon(bin("bangerd"));
        cmd.envs(env.iter().copied());
        Self::start_with(dir, cmd)
    }

    /// [`NsDaemon::start`] with the device node `kvm` (a character device
    /// 10:232 the test made, mode 0666) bound over `/dev/kvm` in a private
    /// mount namespace of the daemon's own: a jailed VMM's uid has no
    /// groups, so the executor takes `/dev/kvm` only world read-write,
    /// which a host's 0660 node is not. Nothing is mounted in the test's
    /// namespace.
    pub fn start_with_kvm(ns: &NetNs, dir: &Path, kvm: &Path) -> NsDaemon {
        let node = kvm.to_str().expect("a UTF-8 path");
        assert!(
            node.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b)),
            "{node:?} needs quoting"
        );
        let mut cmd = ns.exec_daemon("unshare");
        cmd.args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &format!("mount --bind {node} /dev/kvm && exec \"$0\" \"$@\""),
        ])
        .arg(bin("bangerd"));
        Self::start_with(dir, cmd)
    }

    /// Start `cmd` (which runs `bangerd`) as the dev daemon of `dir`.
    fn start_with(dir: &Path, mut cmd: Command) -> NsDaemon {
        cmd.arg("--dev")
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--runtime-dir")
            .arg(dir.join("run"))
            .env("HOME", dir)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("NOTIFY_SOCKET");
        let (k, v) = dev_jail_env();
        let cgroup = JailCgroup::of_dev(&dir.join("state"));
        cmd.env(k, v);
        let mut proc = Proc::spawn("bangerd --dev", cmd);
        let socket = dir.join("run").join("bangerd.sock");
        wait_for_socket(&socket, &mut proc);
        NsDaemon {
            proc,
            socket,
            dir: dir.to_path_buf(),
            _cgroup: cgroup,
        }
    }

    /// The daemon's state directory.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
}

/// `bangerd --dev` on temp state and runtime dirs.
#[derive(Debug)]
pub struct DevDaemon {
    pub proc: Proc,
    pub socket: PathBuf,
    pub dir: tempfile::TempDir,
    /// Removed once `proc` has gone (declared after it).
    _cgroup: JailCgroup,
}

impl DevDaemon {
    pub fn start() -> DevDaemon {
        Self::start_with(|_| {})
    }

    /// Start with extra configuration of the command (env, args).
    pub fn start_with(extra: impl FnOnce(&mut Command)) -> DevDaemon {
        require_root();
        let dir = shared_tempdir();
        let state = dir.path().join("state");
        let run = dir.path().join("run");
        // Every dev daemon sets up a bridge, taps and nft tables at start:
        // run it in a private network namespace of its own (gone when it
        // exits) so nothing touches the host's network.
        let mut cmd = Command::new("unshare");
        cmd.args(["--net", "--"])
            .arg(bin("bangerd"))
            .arg("--dev")
            .arg("--state-dir")
            .arg(&state)
            .arg("--runtime-dir")
            .arg(&run)
            .env("HOME", dir.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("NOTIFY_SOCKET");
        let (k, v) = dev_jail_env();
        let cgroup = JailCgroup::of_dev(&state);
        cmd.env(k, v);
        extra(&mut cmd);
        let mut proc = Proc::spawn("bangerd --dev", cmd);
        let socket = run.join("bangerd.sock");
        wait_for_socket(&socket, &mut proc);
        DevDaemon {
            proc,
            socket,
            dir,
            _cgroup: cgroup,
        }
    }
}

impl DevDaemon {
    /// A command that runs inside the daemon's private network namespace.
    pub fn in_netns(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/proc/{}/ns/net", self.proc.pid()))
            .arg("--")
            .arg(program);
        c
    }
}

/// Write install metadata naming `owner`, with all paths under `root`, and
/// banger's default bridge and subnet.
pub fn write_install_meta(root: &Path, owner: &TestUser) -> PathBuf {
    write_install_meta_full(
        root,
        owner,
        InstallVmm::default(),
        InstallNetwork::default(),
    )
}

/// [`write_install_meta`] with the bridge and subnet `network`.
pub fn write_install_meta_with(root: &Path, owner: &TestUser, network: InstallNetwork) -> PathBuf {
    write_install_meta_full(root, owner, InstallVmm::default(), network)
}

/// [`write_install_meta`] recording `vmm` and `network`.
pub fn write_install_meta_full(
    root: &Path,
    owner: &TestUser,
    vmm: InstallVmm,
    network: InstallNetwork,
) -> PathBuf {
    let meta = InstallMeta {
        owner: Owner {
            name: owner.name.clone(),
            uid: owner.uid,
            gid: owner.gid,
        },
        version: banger_proto::BANGER_VERSION.into(),
        installed_at: "2026-11-26T00:00:00Z".into(),
        paths: InstallPaths {
            bin_dir: root.join("bin"),
            state_dir: root.join("state"),
            runtime_dir: root.join("run"),
            root_socket: root.join("root-run").join("root.sock"),
            root_state_dir: root.join("root-state"),
            state_dev: None,
        },
        vmm,
        network,
        jail: test_jail(),
    };
    let file = root.join("install.toml");
    std::fs::write(&file, meta.to_toml()).unwrap();
    file
}

/// `bangerd-root` serving `owner` on a temp socket.
#[derive(Debug)]
pub struct RootHelper {
    pub proc: Proc,
    pub socket: PathBuf,
    pub install_file: PathBuf,
    /// Removed once `proc` has gone (declared after it).
    _cgroup: JailCgroup,
}

impl RootHelper {
    /// Start the helper with its files under `root` (see [`write_install_meta`]).
    pub fn start(root: &Path, owner: &TestUser) -> RootHelper {
        Self::spawn(
            root,
            owner,
            InstallVmm::default(),
            InstallNetwork::default(),
            "bangerd-root",
            Command::new(bin("bangerd-root")),
        )
    }

    /// Write the install metadata (recording `vmm` and `network`) and
    /// runtime dir, start `cmd` (the helper, possibly wrapped) and wait for
    /// its socket.
    fn spawn(
        root: &Path,
        owner: &TestUser,
        vmm: InstallVmm,
        network: InstallNetwork,
        name: &str,
        mut cmd: Command,
    ) -> RootHelper {
        require_root();
        let install_file = write_install_meta_full(root, owner, vmm, network);
        let run = root.join("root-run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = run.join("root.sock");
        cmd.arg("--install-file").arg(&install_file);
        let mut proc = Proc::spawn(name, cmd);
        wait_for_socket(&socket, &mut proc);
        let cgroup = JailCgroup::of_helper(&install_file);
        RootHelper {
            proc,
            socket,
            install_file,
            _cgroup: cgroup,
        }
    }
}

impl RootHelper {
    /// Send `op` over `root.sock` as `user` (the owner, for the helper to
    /// answer): the reply's body, or the error's messages joined.
    pub fn call_as(
        &self,
        user: &TestUser,
        op: banger_proto::privops::PrivOp,
    ) -> Result<Value, String> {
        let req = serde_json::to_string(&banger_proto::privops::PrivRequest::Op(op)).unwrap();
        let lines = rawclient(
            user.command(bin("banger-rawclient")),
            &self.socket,
            &["hello-priv", "read=1", &format!("json={req}"), "reply"],
        );
        expect_msg(&lines[0], "hello");
        let last = lines.last().unwrap();
        match last["recv"]["type"].as_str() {
            Some("ok") => Ok(last["recv"]["body"].clone()),
            Some("error") => Err(format!(
                "{}: {}",
                last["recv"]["body"]["code"].as_str().unwrap(),
                expect_error(last, last["recv"]["body"]["code"].as_str().unwrap())
            )),
            _ => panic!("no reply from the helper: {lines:?}"),
        }
    }
}

/// Run `cmd` (`ip`, `nft`, `bridge`, ...), which must succeed; its stdout.
pub fn run_ok(mut cmd: Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e} (needs iproute2 and nftables)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `banger-rawclient` with `cmd` (already set to the right uid) and
/// return the parsed output lines.
pub fn rawclient(mut cmd: Command, socket: &Path, actions: &[&str]) -> Vec<Value> {
    cmd.arg(socket).args(actions);
    let out = cmd.output().expect("running banger-rawclient");
    assert!(
        out.status.success(),
        "banger-rawclient failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        // A send can fail because the server already answered (a refusal)
        // and closed; what it answered is what tests look at.
        .filter(|v| v.get("send_error").is_none())
        .collect()
}

/// `banger-rawclient` as root.
pub fn rawclient_root(socket: &Path, actions: &[&str]) -> Vec<Value> {
    rawclient(Command::new(bin("banger-rawclient")), socket, actions)
}

/// The `body` of a received `{"type":..., "body":...}` message, asserting its type.
pub fn expect_msg<'a>(line: &'a Value, ty: &str) -> &'a Value {
    let recv = line
        .get("recv")
        .unwrap_or_else(|| panic!("expected a received message, got {line}"));
    assert_eq!(recv["type"], ty, "unexpected message {recv}");
    &recv["body"]
}

/// Assert the line is an error with `code`; returns its joined messages.
pub fn expect_error(line: &Value, code: &str) -> String {
    let body = expect_msg(line, "error");
    assert_eq!(body["code"], code, "unexpected error {body}");
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

pub fn is_eof(line: &Value) -> bool {
    line.get("eof").is_some()
}

/// A network namespace created for one test (`ip netns add banger-t-<pid>-<n>`)
/// with its loopback up, deleted (`ip netns del`) on drop. Everything a test
/// does to links, addresses and sockets on non-loopback addresses happens in
/// here, never in the host's namespace.
#[derive(Debug)]
pub struct NetNs {
    pub name: String,
}

/// Where `ip netns exec NAME` finds the files it bind-mounts over `/etc`
/// for the programs it runs (iproute2's convention for per-namespace
/// configuration such as `resolv.conf`).
const NETNS_ETC: &str = "/etc/netns";
/// This process created [`NETNS_ETC`] (and so removes it once empty).
static NETNS_ETC_CREATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

static NETNS_SEQ: AtomicU32 = AtomicU32::new(0);

impl NetNs {
    pub fn new() -> NetNs {
        require_root();
        let name = format!(
            "banger-t-{}-{}",
            std::process::id(),
            NETNS_SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("running ip (package iproute2)");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // From here on the guard owns the namespace, so a failure below still
        // deletes it.
        let ns = NetNs { name };
        // Local traffic (to the namespace's own addresses) goes through lo.
        let out = Command::new("ip")
            .args(["-n", &ns.name, "link", "set", "lo", "up"])
            .output()
            .expect("running ip");
        assert!(
            out.status.success(),
            "bringing up lo in {}: {}",
            ns.name,
            String::from_utf8_lossy(&out.stderr)
        );
        ns
    }

    /// Give the programs run through [`NetNs::exec`] a `resolv.conf` of
    /// their own, `text`: `ip netns exec` bind-mounts
    /// `/etc/netns/<name>/resolv.conf` over `/etc/resolv.conf` in their
    /// mount namespace. Removed again on drop.
    pub fn set_resolv_conf(&self, text: &str) {
        let dir = Path::new(NETNS_ETC).join(&self.name);
        if std::fs::create_dir(NETNS_ETC).is_ok() {
            NETNS_ETC_CREATED.store(true, Ordering::SeqCst);
        }
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        std::fs::write(dir.join("resolv.conf"), text)
            .unwrap_or_else(|e| panic!("writing {}/resolv.conf: {e}", dir.display()));
    }

    /// `/run/netns/<name>`, the namespace's bind mount.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip netns exec <name> <program>`: the program runs in the namespace
    /// (and keeps the PID of the `ip` process, which execs it).
    pub fn exec(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Run `f` on a thread that has joined this namespace (setns), for
    /// sockets the test process itself opens inside it. Only that thread
    /// moves; the rest of the process stays where it was.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = std::fs::File::open(self.path())
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.path().display()));
        std::thread::scope(|s| {
            s.spawn(|| {
                use std::os::fd::AsFd;
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .unwrap_or_else(|e| panic!("entering network namespace {}: {e}", self.name));
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Default for NetNs {
    fn default() -> Self {
        NetNs::new()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .output();
        // What `set_resolv_conf` wrote, and `/etc/netns` itself if this
        // process created it and no namespace has files there any more
        // (the removal fails harmlessly while one does).
        let etc = Path::new(NETNS_ETC);
        if std::fs::remove_dir_all(etc.join(&self.name)).is_ok()
            && NETNS_ETC_CREATED.load(Ordering::SeqCst)
        {
            let _ = std::fs::remove_dir(etc);
        }
    }
}

/// A fake bzImage (the `HdrS` magic at 0x202 the kernel import sniffs),
/// 16 KiB of `fill`.
pub fn fake_kernel(path: &Path, fill: u8) {
    let mut bytes = vec![fill; 16 << 10];
    bytes[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(path, bytes).unwrap();
}

/// `mkfs.ext4 -q -F PATH SIZE`, which must succeed.
pub fn mkfs_ext4(path: &Path, size: &str) {
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(path)
        .arg(size)
        .output()
        .expect("running mkfs.ext4 (package e2fsprogs)");
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
