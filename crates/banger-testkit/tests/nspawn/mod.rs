//! A Debian bookworm tree (the image builder's cached rootfs plus
//! [`CONTAINER_PACKAGES`], unpacked with `debugfs rdump`) booted with
//! `systemd-nspawn --register=no --keep-unit --private-network -b`, the
//! binaries under test bound read-only at `/opt/banger`. Commands run inside
//! through `nsenter` into the container's PID 1, as root or, with
//! `runuser -l`, as a user. Shared by system_nspawn.rs and
//! system_guest_nspawn.rs.
#![allow(dead_code)] // each test file uses its own part
#![allow(clippy::disallowed_methods)] // these tests spawn the binaries under test directly

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use banger_imagebuild::debian::{BuiltImage, DebianOptions, build_debian};
use banger_testkit::{bin, require_root};
use serde_json::Value;

pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn require_tools() {
    require_root();
    for tool in ["systemd-nspawn", "nsenter", "debugfs"] {
        let found = PATH.split(':').any(|d| Path::new(d).join(tool).is_file());
        assert!(
            found,
            "{tool} is missing: this test boots a real systemd in a container \
             (apt-get install systemd-container util-linux e2fsprogs)"
        );
    }
}

/// What the services and the scenario use inside the container, on top of
/// the default image's packages (mmdebstrap installs no recommends): `nft`
/// for the helper's firewall, e2fsprogs for the doctor and disk tools, QEMU
/// for guests, `jq` for scripts/system-scenario.sh.
pub const CONTAINER_PACKAGES: [&str; 4] = ["nftables", "e2fsprogs", "qemu-system-x86", "jq"];

/// The default Debian image plus [`CONTAINER_PACKAGES`].
pub fn image() -> BuiltImage {
    let mut opts = DebianOptions::new(cache_dir());
    opts.packages.extend(CONTAINER_PACKAGES.map(String::from));
    build_debian(&opts, &mut |_| {})
        .unwrap_or_else(|e| panic!("building the container's Debian tree: {e:?}"))
}

/// The default image `banger image build debian` makes (same cache key),
/// for guests.
pub fn guest_image() -> BuiltImage {
    build_debian(&DebianOptions::new(cache_dir()), &mut |_| {})
        .unwrap_or_else(|e| panic!("building the default Debian image: {e:?}"))
}

fn cache_dir() -> PathBuf {
    std::env::var_os("BANGER_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/banger"))
}

/// Mode, owner and group of each host node of `devices` that exists.
fn host_devices(devices: &[&str]) -> Vec<(String, u32, u32, u32)> {
    use std::os::unix::fs::MetadataExt as _;
    devices
        .iter()
        .filter_map(|d| {
            let m = std::fs::metadata(d).ok()?;
            Some((d.to_string(), m.mode(), m.uid(), m.gid()))
        })
        .collect()
}

/// A node of the host's character device `dev` (its device number, mode
/// 0600, root's) made in `dir`, for the container to have in its place;
/// `None` when the host has no such device.
fn device_copy(dev: &Path, dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(dev).ok()?;
    let node = dir.join(format!("dev-{}", dev.file_name()?.to_str()?));
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &node,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o600),
        m.rdev(),
    )
    .unwrap_or_else(|e| panic!("making {}: {e}", node.display()));
    Some(node)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A booted container. Dropping it powers it off (killing it by pid if it
/// does not stop) and removes its tree.
pub struct Container {
    nspawn: Child,
    /// The container's PID 1, as the host sees it.
    pub leader: i32,
    log: PathBuf,
    pub tree: tempfile::TempDir,
}

impl Container {
    /// Boot [`image`] with the binaries under test at `/opt/banger` and
    /// `binds` (host path, path inside) read-only; `/dev/net/tun` is passed
    /// in, and `/dev/kvm` when `kvm` is set and the host has one.
    pub fn boot(binds: &[(PathBuf, &str)], kvm: bool) -> Container {
        require_tools();
        let img = image();
        let tree = tempfile::Builder::new()
            .prefix("banger-nspawn-")
            .tempdir()
            .unwrap();
        let root = tree.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let out = Command::new("debugfs")
            .arg("-R")
            .arg(format!("rdump / {}", root.display()))
            .arg(&img.rootfs_ext4)
            .output()
            .expect("running debugfs");
        assert!(out.status.success(), "debugfs: {}", text(&out.stderr));
        assert!(
            root.join("usr/lib/systemd/systemd").is_file(),
            "no systemd in the unpacked tree"
        );
        let log = tree.path().join("console.log");
        let mut cmd = Command::new("systemd-nspawn");
        cmd.args([
            "--register=no",
            "--keep-unit",
            "--private-network",
            "--quiet",
            "--console=read-only",
        ])
        .arg("-D")
        .arg(&root);
        for b in [
            "banger",
            "bangerd",
            "bangerd-root",
            "banger-imagebuild",
            "banger-rawclient",
        ] {
            cmd.arg(format!("--bind-ro={}:/opt/banger/{b}", bin(b).display()));
        }
        for (host, inside) in binds {
            cmd.arg(format!("--bind-ro={}:{inside}", host.display()));
        }
        let devices: &[&str] = if kvm {
            &["/dev/net/tun", "/dev/kvm"]
        } else {
            &["/dev/net/tun"]
        };
        // Nodes of the same devices made in the tree, never the host's
        // own: the container's systemd sets its device nodes' modes and
        // groups (tmpfiles' static-nodes-permissions), which through a
        // bound host node changed the host's (its /dev/kvm became 0660 of
        // a host group, /dev/net/tun 0666; an earlier run's state reached
        // later tests).
        let before = host_devices(devices);
        for dev in devices {
            if let Some(node) = device_copy(Path::new(dev), tree.path()) {
                cmd.arg(format!("--bind={}:{dev}", node.display()));
            }
        }
        cmd.arg("-b")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(tree.path().join("nspawn.err")).unwrap());
        let nspawn = cmd.spawn().expect("starting systemd-nspawn");
        let mut c = Container {
            leader: 0,
            nspawn,
            log,
            tree,
        };
        c.leader = c.find_leader();
        c.wait_booted();
        assert_eq!(
            host_devices(devices),
            before,
            "the container changed the host's device nodes (mode, uid, gid)"
        );
        c
    }

    /// The host pid of the `systemd-nspawn` process.
    pub fn nspawn_pid(&self) -> u32 {
        self.nspawn.id()
    }

    /// The child of our systemd-nspawn that runs systemd.
    fn find_leader(&mut self) -> i32 {
        let nspawn = self.nspawn.id();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.nspawn.try_wait() {
                panic!("systemd-nspawn exited early ({status}):\n{}", self.logs());
            }
            let children = std::fs::read_dir(format!("/proc/{nspawn}/task"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
                .flat_map(|s| {
                    s.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok())
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>();
            for pid in children {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == "systemd" {
                    return pid;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no systemd under systemd-nspawn {nspawn}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_booted(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = self.run(None, "systemctl is-system-running");
            let state = text(&out.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the container did not finish booting (state {state:?}):\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn logs(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- console\n{}\n--- nspawn stderr\n{}",
            read(&self.log),
            read(&self.tree.path().join("nspawn.err"))
        )
    }

    /// Run `script` with `sh -c` in the container, as root or as `user`
    /// (a login shell, so with that user's HOME and no inherited privilege).
    pub fn run(&self, user: Option<&str>, script: &str) -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.env_clear()
            .env("PATH", PATH)
            .env("HOME", "/root")
            .args(["-t", &self.leader.to_string(), "-a", "--"]);
        match user {
            None => cmd.args(["sh", "-c", script]),
            Some(u) => cmd.args(["runuser", "-l", u, "-c", script]),
        };
        cmd.stdin(Stdio::null()).output().expect("running nsenter")
    }

    /// [`run`] that must succeed; its stdout.
    pub fn ok(&self, user: Option<&str>, script: &str) -> String {
        let out = self.run(user, script);
        assert!(
            out.status.success(),
            "`{script}` as {} failed ({}):\nstdout: {}\nstderr: {}",
            user.unwrap_or("root"),
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// [`ok`] whose stdout is a JSON document.
    pub fn json(&self, user: Option<&str>, script: &str) -> Value {
        let out = self.ok(user, script);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("`{script}`: {e}: {out}"))
    }

    /// Journal of a unit, for failure messages.
    pub fn journal(&self, unit: &str) -> String {
        text(
            &self
                .run(None, &format!("journalctl --no-pager -n 50 -u {unit}"))
                .stdout,
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.run(None, "systemctl poweroff");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Killing the namespace's init kills every process in it.
        if let Some(pid) = rustix::process::Pid::from_raw(self.leader) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}
