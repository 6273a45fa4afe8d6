//! Shared by the Firecracker test targets: the swagger spec (YAML read with
//! yaml-rust2, turned into JSON), the validator the fake uses, sample launch
//! specs, and helpers around the fake's files.
//!
//! Each test target uses a different part of this module.
#![allow(dead_code)]

#[path = "../../src/bin/banger-fake-firecracker/swagger.rs"]
pub mod swagger;

use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_vmm::firecracker::{FirecrackerDriver, FirecrackerFiles, FirecrackerVm};
use banger_vmm::{Drive, LaunchSpec, VmmError};
use serde_json::{Map, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// The Firecracker API spec the driver targets: `$BANGER_FIRECRACKER_SPEC`,
/// else the copy vendored in `third_party/firecracker/` (see its README).
pub fn spec_path() -> PathBuf {
    if let Some(p) = std::env::var_os("BANGER_FIRECRACKER_SPEC") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../third_party/firecracker/firecracker-v1.16.1.yaml")
}

/// The spec as JSON. Panics (the test fails) if it cannot be read.
pub fn spec_json() -> Value {
    let path = spec_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reading the Firecracker API spec {} (set BANGER_FIRECRACKER_SPEC): {e}",
            path.display()
        )
    });
    let docs = YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    assert_eq!(docs.len(), 1, "{} holds one YAML document", path.display());
    let v = yaml_to_json(&docs[0]);
    assert_eq!(
        v.pointer("/info/version").and_then(Value::as_str),
        Some("1.16.1"),
        "the driver targets Firecracker API 1.16.1"
    );
    v
}

pub fn swagger() -> swagger::Spec {
    swagger::Spec::new(spec_json())
}

/// YAML to JSON. Mapping keys become strings (the spec's response codes are
/// integer keys); anything JSON cannot carry fails the test.
pub fn yaml_to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(r) => {
            let f: f64 = r.parse().unwrap_or_else(|e| panic!("YAML real {r:?}: {e}"));
            Value::from(f)
        }
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(a) => Value::Array(a.iter().map(yaml_to_json).collect()),
        Yaml::Hash(h) => {
            let mut m = Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    other => panic!("unsupported YAML mapping key {other:?}"),
                };
                m.insert(key, yaml_to_json(v));
            }
            Value::Object(m)
        }
        other => panic!("unsupported YAML node {other:?}"),
    }
}

/// A launch spec whose run dir is `dir` (which must exist).
pub fn sample_spec(dir: &Path) -> LaunchSpec {
    LaunchSpec {
        vm_id: "0123456789abcdef0123456789abcdef".into(),
        vcpus: 2,
        memory_mib: 512,
        kernel: "/var/lib/banger/kernels/k1/vmlinux".into(),
        initrd: None,
        cmdline: "console=ttyS0 reboot=k panic=1 root=/dev/vda rw".into(),
        drives: vec![
            Drive {
                id: "root".into(),
                path: "/var/lib/banger/vms/v/root.ext4".into(),
                read_only: false,
            },
            Drive {
                id: "work".into(),
                path: "/var/lib/banger/vms/v/work.ext4".into(),
                read_only: false,
            },
        ],
        tap: "bangertap3".into(),
        mac: "02:ba:0a:c8:00:05".into(),
        run_dir: dir.to_path_buf(),
        serial_log: dir.join("serial.log"),
        vsock_cid: 7,
        run_as: None,
        kvm: true,
    }
}

/// A slot uid for a jailed launch: one no account has, distinct per test
/// process (`base` plus this pid modulo 100000). The jailed tests need
/// root.
pub fn slot_uid(base: u32) -> u32 {
    assert!(
        rustix::process::geteuid().is_root(),
        "the jailed Firecracker tests need root (a jail, a device node, a tap)"
    );
    base + std::process::id() % 100_000
}

/// `dir/run` made for `uid` (0700), as the executor makes a VM's `run/`.
pub fn slot_run_dir(dir: &Path, uid: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let run = dir.join("run");
    std::fs::create_dir(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    run
}

/// The descriptors of a jailed launch of `spec` (`run_dir` made by
/// [`slot_run_dir`]): the kernel and drives at the spec's paths (each
/// drive read-write unless read-only), `/dev/net/tun`, a KVM node this
/// test makes in `dir` (10:232, 0666: this lab's `/dev/kvm` is 0660 and
/// a slot uid has no groups), the serial log appended.
pub fn jailed_files(dir: &Path, spec: &LaunchSpec) -> FirecrackerFiles {
    use rustix::fs::{Mode, OFlags};
    let node = |path: &Path| {
        rustix::fs::open(
            path,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    };
    let kvm = dir.join("kvm");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &kvm,
        rustix::fs::FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(10, 232),
    )
    .unwrap();
    std::fs::set_permissions(&kvm, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let drives = spec
        .drives
        .iter()
        .map(|d| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(!d.read_only)
                .open(&d.path)
                .unwrap()
                .into()
        })
        .collect();
    FirecrackerFiles {
        kernel: std::fs::File::open(&spec.kernel).unwrap(),
        initrd: spec
            .initrd
            .as_ref()
            .map(|p| std::fs::File::open(p).unwrap()),
        drives,
        tun: node(Path::new("/dev/net/tun")),
        kvm: node(&kvm),
        serial: std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&spec.serial_log)
            .unwrap(),
        run: banger_vmm::dir::OwnerDir::open(&spec.run_dir, "run directory").unwrap(),
        cgroup: None,
        restore: None,
    }
}

/// Run `checks` on a launched `vm`; when they panic, kill it before the
/// panic goes on (a dropped handle leaves the VMM running, here as a slot
/// uid).
pub fn killed_if_failing(vm: &mut FirecrackerVm, checks: impl FnOnce(&mut FirecrackerVm)) {
    let run = std::panic::AssertUnwindSafe(|| checks(&mut *vm));
    if let Err(panic) = std::panic::catch_unwind(run) {
        let _ = vm.kill();
        std::panic::resume_unwind(panic);
    }
}

/// The recording fake, built by cargo beside the tests.
pub fn fake_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_banger-fake-firecracker"))
}

/// Configure the fake for a run in `dir`: the spec, what to do on
/// `SendCtrlAltDel` (`"exit"` or `"ignore"`), and injected failures
/// (`[{"method", "path", "status", "fault_message"}]`).
pub fn write_fake_config(dir: &Path, ctrl_alt_del: &str, fail: Value) {
    let config = serde_json::json!({
        "spec": spec_json(),
        "ctrl_alt_del": ctrl_alt_del,
        "fail": fail,
    });
    std::fs::write(dir.join("fake-firecracker.json"), config.to_string()).unwrap();
}

/// Requests the fake recorded, in order.
pub fn read_record(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("fake-firecracker.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The pid the fake (or a test script) wrote to `file` in `dir`.
pub fn read_pid(dir: &Path, file: &str) -> i32 {
    let text =
        std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("reading {file}: {e}"));
    text.trim().parse().unwrap()
}

/// Whether a process with `pid` exists (zombies count: a process that was
/// not reaped is still "left").
pub fn alive(pid: i32) -> bool {
    let pid = rustix::process::Pid::from_raw(pid).expect("positive pid");
    rustix::process::test_kill_process(pid).is_ok()
}

/// Write an executable script to `dir/name`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// `driver.launch(spec)`, retrying the exec a few times on ETXTBSY: another
/// test thread forking while a script was still open for writing here holds
/// a copy of the write descriptor until it execs.
pub fn launch(driver: &FirecrackerDriver, spec: &LaunchSpec) -> Result<FirecrackerVm, VmmError> {
    for _ in 0..50 {
        match driver.launch(spec) {
            Err(VmmError::Spawn { source, .. }) if source.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
    driver.launch(spec)
}

/// A read-only loop device over a scratch file, detached when dropped,
/// and a 0666 node of it made in the test's directory (so a jail's uid
/// could open it for writing by its mode alone; the host's `/dev` is not
/// touched).
pub struct LoopNode {
    device: String,
    /// The 0666 block node in the test's directory.
    pub node: PathBuf,
}

impl LoopNode {
    pub fn new(dir: &Path) -> LoopNode {
        use banger_host::runner::{Cmd, Runner};
        let backing = dir.join("loop-backing");
        std::fs::write(&backing, vec![0u8; 1 << 20]).unwrap();
        let out = Runner
            .run(&Cmd::new("losetup").args([
                "--find".as_ref(),
                "--show".as_ref(),
                "--read-only".as_ref(),
                backing.as_os_str(),
            ]))
            .unwrap();
        let device = out.stdout.trim().to_string();
        let rdev = rustix::fs::stat(device.as_str()).unwrap().st_rdev;
        let node = dir.join("loop-node");
        let made = LoopNode { device, node };
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &made.node,
            rustix::fs::FileType::BlockDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rdev,
        )
        .unwrap();
        std::fs::set_permissions(
            &made.node,
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .unwrap();
        made
    }
}

impl Drop for LoopNode {
    fn drop(&mut self) {
        use banger_host::runner::{Cmd, Runner};
        if let Err(e) = Runner.run(&Cmd::new("losetup").args(["-d", &self.device])) {
            eprintln!("detaching {}: {e}", self.device);
        }
    }
}

/// A [`banger_vmm::firecracker::JailTap`] for launches whose VMM attaches
/// no tap (the fake): it moves nothing and records each call with what
/// it was given — `enter` a network namespace other than the caller's,
/// `leave` a route netlink socket — and fails the one named in `fail`.
#[derive(Debug, Default)]
pub struct RecordingTap {
    pub calls: Vec<String>,
    pub fail: Option<&'static str>,
}

impl RecordingTap {
    fn result(&self, call: &str) -> Result<(), String> {
        match self.fail {
            Some(f) if f == call => Err(format!("{call} failed (the test's)")),
            _ => Ok(()),
        }
    }
}

impl banger_vmm::firecracker::JailTap for RecordingTap {
    fn enter(&mut self, jail_ns: std::os::fd::BorrowedFd<'_>) -> Result<(), String> {
        let own = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
        let ns = rustix::fs::fstat(jail_ns).unwrap();
        let other = std::os::unix::fs::MetadataExt::ino(&own) != ns.st_ino;
        // SAFETY: NS_GET_NSTYPE (_IO(0xb7, 0x3)) takes no argument.
        let kind = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&jail_ns), 0xb703) };
        self.calls.push(format!(
            "enter({}, {})",
            if kind == libc::CLONE_NEWNET {
                "netns"
            } else {
                "not a netns"
            },
            if other { "not ours" } else { "ours" }
        ));
        self.result("enter")
    }

    fn leave(&mut self, jail_rtnl: std::os::fd::BorrowedFd<'_>) -> Result<(), String> {
        let domain = rustix::net::sockopt::socket_domain(jail_rtnl).unwrap();
        let netlink = domain == rustix::net::AddressFamily::NETLINK;
        self.calls.push(format!(
            "leave({})",
            if netlink { "netlink" } else { "not netlink" }
        ));
        self.result("leave")
    }
}

/// A jailed launch's spec in `dir` for the slot `uid` on `tap`: `kernel`,
/// the read-only root drive `rootfs` (readable by all: the grant the
/// executor gives a read-only drive for the launch), `memory_mib`, a
/// `run/` of the slot's ([`slot_run_dir`]).
pub fn jailed_real_spec(
    dir: &Path,
    uid: u32,
    tap: &str,
    (kernel, rootfs): (PathBuf, PathBuf),
    memory_mib: u32,
) -> LaunchSpec {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&rootfs, std::fs::Permissions::from_mode(0o644)).unwrap();
    LaunchSpec {
        vm_id: "1f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
        vcpus: 1,
        memory_mib,
        kernel,
        initrd: None,
        cmdline: format!(
            "{} root=/dev/vda ro",
            banger_vmm::firecracker::RECOMMENDED_BOOT_ARGS
        ),
        drives: vec![Drive {
            id: "root".into(),
            path: rootfs,
            read_only: true,
        }],
        tap: tap.into(),
        mac: "02:ba:0a:00:00:03".into(),
        run_dir: slot_run_dir(dir, uid),
        serial_log: dir.join("serial.log"),
        vsock_cid: 3,
        run_as: Some((uid, uid)),
        kvm: true,
    }
}
