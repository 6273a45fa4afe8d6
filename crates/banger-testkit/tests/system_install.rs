//! `banger system install`: the real binary, as root, into temp directories
//! with `--root`, checked by systemd's own tools; refusals that must leave
//! everything as it was; and, in a private mount namespace, an install
//! against `/` whose systemd step fails and is rolled back.
//!
//! How the units are checked (systemd 252, PID 1 not systemd here):
//! * `systemd-analyze verify` takes unit file paths and insists that
//!   `ExecStart=` binaries exist at their final paths (`/usr/local/bin`),
//!   while `--root=DIR` would also look for `sysinit.target` and friends under
//!   DIR. So verify runs in a private mount namespace with DIR's
//!   `usr/local/bin` bind-mounted over `/usr/local/bin`, on the unit files
//!   under DIR, against the host's own unit search path. It exits 0 even for
//!   unknown keys or bad values (it only logs them), so stderr must be empty.
//! * `systemd-analyze security --offline=true --root=DIR --threshold=N UNIT`
//!   scores the unit file under DIR; N is the score x10.
#![allow(clippy::disallowed_methods)] // these tests spawn the binaries under test directly

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use banger_proto::install::InstallMeta;
use banger_testkit::*;
use serde_json::Value;

fn banger() -> Command {
    let mut c = Command::new(bin("banger"));
    c.env_remove("SUDO_USER").env_remove("BANGER_SOCKET");
    c
}

fn install(root: &Path, owner: &str, extra: &[&str]) -> Output {
    require_root();
    banger()
        .args(["system", "install", "--owner", owner, "--root"])
        .arg(root)
        .args(extra)
        .output()
        .expect("running banger")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

fn ok_json(out: &Output) -> Value {
    assert_eq!(
        code(out),
        0,
        "stderr: {}\nstdout: {}",
        text(&out.stderr),
        text(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

/// A root-owned temp dir to install into.
fn target() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("banger-install-")
        .tempdir()
        .unwrap()
}

/// Everything under `root`: type, mode, owner, inode, mtime, and the content
/// of small files. Equal snapshots mean nothing was touched.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mut line = format!(
                "{:?} {:o} {}:{} ino {} mtime {}.{}",
                m.file_type(),
                m.mode(),
                m.uid(),
                m.gid(),
                m.ino(),
                m.mtime(),
                m.mtime_nsec()
            );
            if m.is_file() && m.len() < 1 << 20 {
                line.push_str(&format!(" {:?}", std::fs::read_to_string(&p).ok()));
            }
            out.insert(p.strip_prefix(root).unwrap().to_path_buf(), line);
            if m.is_dir() {
                walk(&p, root, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn mode_owner(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

#[test]
fn install_into_a_root_writes_the_layout() {
    let owner = TestUser::create(None);
    let dir = target();
    let r = dir.path();
    let report = ok_json(&install(r, &owner.name, &["--json"]));
    assert_eq!(report["owner"]["name"], owner.name.as_str());
    assert_eq!(
        report["services"],
        Value::Null,
        "--root never starts services"
    );
    let written = report["written"].as_array().unwrap();
    assert!(
        written.iter().all(|w| w["action"] == "created"),
        "{report:#}"
    );
    let parents: Vec<_> = written
        .iter()
        .filter(|w| w["what"] == "parent directory")
        .map(|w| w["target"].as_str().unwrap())
        .collect();
    assert_eq!(
        parents,
        [
            "/usr",
            "/usr/local",
            "/etc",
            "/etc/systemd",
            "/var",
            "/var/lib",
            "/etc/udev"
        ]
    );
    assert_eq!(written.len(), 15 + parents.len(), "{report:#}");
    for w in written {
        let path = Path::new(w["path"].as_str().unwrap());
        let target = w["target"].as_str().unwrap();
        assert_eq!(path, r.join(&target[1..]), "{w}");
    }

    for (path, want) in [
        ("etc/banger", (0o755, 0, 0)),
        ("etc/banger/install.toml", (0o644, 0, 0)),
        ("etc/systemd/system/bangerd.service", (0o644, 0, 0)),
        ("etc/systemd/system/bangerd-root.service", (0o644, 0, 0)),
        ("etc/systemd/system/banger-vms.service", (0o644, 0, 0)),
        ("usr/local/bin/bangerd", (0o755, 0, 0)),
        ("usr/local/bin/bangerd-root", (0o755, 0, 0)),
        ("usr/local/bin/banger", (0o755, 0, 0)),
        ("usr/local/bin/banger-imagebuild", (0o755, 0, 0)),
        ("var/lib/banger", (0o700, owner.uid, owner.gid)),
        ("var/lib/banger-root", (0o700, 0, 0)),
        ("etc/udev/rules.d", (0o755, 0, 0)),
        ("etc/udev/rules.d/10-banger.rules", (0o644, 0, 0)),
    ] {
        assert_eq!(mode_owner(&r.join(path)), want, "{path}");
    }
    // Issue #13 finding 8: the rule names the recorded state directories
    // (udev_lvm.rs shows what it does).
    let rule = std::fs::read_to_string(r.join("etc/udev/rules.d/10-banger.rules")).unwrap();
    assert!(
        rule.contains(r#"ATTRS{loop/backing_file}=="/var/lib/banger/*|/var/lib/banger-root/*""#),
        "{rule}"
    );
    // The copies are the binaries under test.
    assert_eq!(
        std::fs::read(r.join("usr/local/bin/bangerd-root")).unwrap(),
        std::fs::read(bin("bangerd-root")).unwrap()
    );
    // Runtime directories are systemd's to create.
    assert!(!r.join("run").exists());

    let meta = InstallMeta::load(&r.join("etc/banger/install.toml")).unwrap();
    assert_eq!(
        (meta.owner.name.as_str(), meta.owner.uid, meta.owner.gid),
        (owner.name.as_str(), owner.uid, owner.gid)
    );
    assert_eq!(meta.version, banger_proto::BANGER_VERSION);
    // Nothing holds the state directory to a device (not stable).
    assert_eq!(meta.paths.state_dev, None);
    assert_eq!(meta.paths.runtime_dir, Path::new("/run/banger"));
    assert_eq!(
        meta.paths.root_socket,
        Path::new("/run/banger-root/root.sock")
    );
    let unit = std::fs::read_to_string(r.join("etc/systemd/system/bangerd.service")).unwrap();
    assert!(unit.contains(&format!("\nUser={}\n", owner.name)), "{unit}");
    assert!(
        unit.contains(
            "\nExecStart=/usr/local/bin/bangerd --install-file /etc/banger/install.toml\n"
        )
    );
    assert!(
        !unit.contains(&r.display().to_string()),
        "unit paths are system paths"
    );
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let owner = TestUser::create(None);
    let dir = target();
    let r = dir.path();
    ok_json(&install(r, &owner.name, &["--json"]));
    let units = r.join("etc/systemd/system");
    let script = format!(
        "mount --bind {bin} /usr/local/bin && exec systemd-analyze verify {a} {b}",
        bin = r.join("usr/local/bin").display(),
        a = units.join("bangerd-root.service").display(),
        b = units.join("bangerd.service").display(),
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("running unshare (util-linux) and systemd-analyze (systemd)");
    assert_eq!(code(&out), 0, "verify failed:\n{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "verify complained");
}

/// `systemd-analyze security` on one unit under `root`: the exit status with
/// `--threshold` and the overall exposure it prints.
fn exposure(root: &Path, unit: &str, threshold: u32) -> (i32, f64, String) {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(format!("--root={}", root.display()))
        .arg(format!("--threshold={threshold}"))
        .arg(unit)
        .output()
        .expect("running systemd-analyze (systemd)");
    let stdout = text(&out.stdout);
    let needle = format!("Overall exposure level for {unit}: ");
    let score = stdout
        .lines()
        .find_map(|l| l.split_once(&needle).map(|(_, rest)| rest.to_string()))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}\n{}", text(&out.stderr)));
    (code(&out), score, stdout)
}

#[test]
fn units_meet_the_security_targets() {
    let owner = TestUser::create(None);
    let dir = target();
    let r = dir.path();
    ok_json(&install(r, &owner.name, &["--json"]));
    for (unit, threshold) in [
        ("bangerd.service", 20),
        ("bangerd-root.service", 45),
        // The holder of the VMs' cgroups: a root shell and a `sleep`.
        ("banger-vms.service", 10),
    ] {
        let (status, score, table) = exposure(r, unit, threshold);
        println!(
            "{unit}: overall exposure {score:.1} (target <= {:.1})",
            f64::from(threshold) / 10.0
        );
        assert_eq!(
            status, 0,
            "{unit} is over --threshold={threshold}:\n{table}"
        );
        assert!(
            score <= f64::from(threshold) / 10.0,
            "{unit}: {score}\n{table}"
        );
    }
}

#[test]
fn a_second_install_for_the_same_owner_changes_nothing() {
    let owner = TestUser::create(None);
    let dir = target();
    let r = dir.path();
    ok_json(&install(r, &owner.name, &["--json"]));
    let before = snapshot(r);
    let report = ok_json(&install(r, &owner.name, &["--json"]));
    let actions: Vec<_> = report["written"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["action"].as_str().unwrap())
        .collect();
    assert!(actions.iter().all(|a| *a == "unchanged"), "{actions:?}");
    assert_eq!(snapshot(r), before, "files were rewritten");
    // Human output says so too.
    let out = install(r, &owner.name, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .lines()
            .skip(1)
            .take(11)
            .all(|l| l.starts_with("unchanged"))
    );
    assert_eq!(snapshot(r), before);
}

#[test]
fn another_owner_is_refused_naming_the_current_one() {
    let first = TestUser::create(None);
    let second = TestUser::create(None);
    let dir = target();
    let r = dir.path();
    ok_json(&install(r, &first.name, &["--json"]));
    let before = snapshot(r);
    let out = install(r, &second.name, &[]);
    assert_eq!(code(&out), 6, "conflict: {}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("installed for {} (uid {})", first.name, first.uid)),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert_eq!(snapshot(r), before, "a refusal changed something");

    // --force gets past the metadata, but the previous owner's state
    // directory is never handed over silently.
    let out = install(r, &second.name, &["--force"]);
    assert_eq!(code(&out), 6, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!(
            "owned by uid {}, expected uid {}",
            first.uid, second.uid
        )),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(snapshot(r), before);
}

#[test]
fn a_symlinked_state_dir_is_refused_and_nothing_written() {
    let owner = TestUser::create(None);
    let dir = target();
    let r = dir.path();
    std::fs::create_dir_all(r.join("var/lib")).unwrap();
    std::fs::create_dir(r.join("elsewhere")).unwrap();
    std::os::unix::fs::chown(r.join("elsewhere"), Some(owner.uid), Some(owner.gid)).unwrap();
    std::fs::set_permissions(r.join("elsewhere"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(r.join("elsewhere"), r.join("var/lib/banger")).unwrap();
    let before = snapshot(r);
    let out = install(r, &owner.name, &["--json"]);
    assert_eq!(code(&out), 6, "{}", text(&out.stdout));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["code"], "invalid_state");
    let msg = doc["error"]["messages"][0].as_str().unwrap();
    assert!(msg.contains("var/lib/banger is a symlink"), "{msg}");
    assert_eq!(snapshot(r), before);
}

/// An existing state directory on FUSE (the owner's, mounted over it) is
/// refused before the install looks at it by path, naming the type and
/// the path, and nothing is written. A real FUSE mount with no daemon (root
/// is not let into it), in a mount namespace of the test's own, where the
/// install runs. Before the fix the preflight `lstat`ed it (on FUSE with
/// `allow_other`, a request to the owner's daemon).
#[test]
fn a_state_dir_on_fuse_is_refused_and_nothing_written() {
    let owner = TestUser::create(None);
    let dir = target();
    let r = dir.path();
    let state = r.join("var/lib/banger");
    std::fs::create_dir_all(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(owner.uid), Some(owner.gid)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let before = snapshot(r);
    let out = banger_host::mounts::testing::in_private_mount_ns(|| {
        let _fuse =
            banger_host::mounts::testing::mount_fuse_without_daemon(&state, owner.uid, owner.gid);
        install(r, &owner.name, &["--json"])
    });
    assert_eq!(code(&out), 6, "{}", text(&out.stdout));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["code"], "invalid_state");
    let msg = doc["error"]["messages"][0].as_str().unwrap();
    assert!(
        msg.contains(&format!("refusing the state directory {}", state.display()))
            && msg.contains("FUSE file system (fuse, mounted at "),
        "{msg}"
    );
    assert_eq!(snapshot(r), before);
}

#[test]
fn unknown_missing_and_root_owners_are_refused() {
    let dir = target();
    let r = dir.path();

    let out = install(r, "no-such-banger-owner", &[]);
    assert_eq!(code(&out), 5, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("user no-such-banger-owner does not exist"));

    let out = install(r, "root", &["--json"]);
    assert_eq!(code(&out), 4);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["code"], "permission_denied");
    assert!(
        doc["error"]["messages"][0]
            .as_str()
            .unwrap()
            .contains("uid 0")
    );

    // No --owner and no SUDO_USER.
    let out = banger()
        .args(["system", "install", "--root"])
        .arg(r)
        .output()
        .unwrap();
    assert_eq!(code(&out), 5);
    assert!(
        text(&out.stderr).contains("--owner USER"),
        "{}",
        text(&out.stderr)
    );

    // SUDO_USER stands in for --owner.
    let owner = TestUser::create(None);
    let out = banger()
        .env("SUDO_USER", &owner.name)
        .args(["system", "install", "--json", "--root"])
        .arg(r)
        .output()
        .unwrap();
    assert_eq!(ok_json(&out)["owner"]["uid"], owner.uid);
    let after: Vec<_> = snapshot(r).into_keys().collect();
    assert!(after.contains(&PathBuf::from("etc/banger/install.toml")));
}

#[test]
fn a_missing_root_dir_is_refused() {
    let owner = TestUser::create(None);
    let dir = target();
    let out = install(&dir.path().join("nope"), &owner.name, &[]);
    assert_eq!(code(&out), 5, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no such directory"));
    assert!(!dir.path().join("nope").exists());
}

/// Without `--root`, on a host whose systemd cannot be talked to: in a
/// private mount namespace with `/etc`, `/usr/local/bin` and `/var/lib`
/// behind throwaway overlays (so the real host is never written) and a
/// private `/run` that claims systemd is booted, the install writes
/// everything, `systemctl daemon-reload` fails (PID 1 is not systemd), and
/// the run must undo every write. Whatever is left in the overlays' upper
/// layers besides copied-up directories would be a leak onto the host.
#[test]
fn a_failed_systemd_step_rolls_back_every_write() {
    let owner = TestUser::create(None);
    let dir = target();
    let t = dir.path();
    let host_paths = ["/etc/banger", "/var/lib/banger", "/var/lib/banger-root"];
    let host_before: Vec<bool> = host_paths.iter().map(|p| Path::new(p).exists()).collect();
    let script = r#"
set -e
T="$1"; BANGER="$2"; OWNER="$3"
mkdir -p "$T/ovl"
mount -t tmpfs tmpfs "$T/ovl"
for d in /etc /usr/local/bin /var/lib; do
    n=$(echo "$d" | tr / _)
    mkdir -p "$T/ovl/$n/up" "$T/ovl/$n/work"
    mount -t overlay overlay -o "lowerdir=$d,upperdir=$T/ovl/$n/up,workdir=$T/ovl/$n/work" "$d"
done
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/system
set +e
"$BANGER" system install --owner "$OWNER" > "$T/stdout" 2> "$T/stderr"
echo $? > "$T/rc"
ls -d /etc/banger /var/lib/banger /var/lib/banger-root /usr/local/bin/bangerd 2>/dev/null > "$T/visible"
find "$T"/ovl/*/up -mindepth 1 ! -type d > "$T/leaked"
exit 0
"#;
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(t)
        .arg(bin("banger"))
        .arg(&owner.name)
        .output()
        .expect("running unshare");
    assert!(
        out.status.success(),
        "namespace setup failed: {}",
        text(&out.stderr)
    );
    let read = |name: &str| std::fs::read_to_string(t.join(name)).unwrap();
    let stderr = read("stderr");
    assert_eq!(
        read("rc").trim(),
        "1",
        "stderr: {stderr}\nstdout: {}",
        read("stdout")
    );
    assert!(
        stderr.contains("starting the services failed; everything this run wrote was rolled back"),
        "{stderr}"
    );
    assert!(stderr.contains("systemctl daemon-reload"), "{stderr}");
    assert_eq!(read("visible"), "", "paths survived the rollback");
    assert_eq!(read("leaked"), "", "files left in the overlays");
    // And the real host was never touched.
    let host_after: Vec<bool> = host_paths.iter().map(|p| Path::new(p).exists()).collect();
    assert_eq!(host_after, host_before);
}

#[test]
fn a_non_root_caller_is_refused() {
    let user = TestUser::create(None);
    let dir = target();
    let out = user
        .command(bin("banger"))
        .args(["system", "install", "--owner", &user.name, "--root"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(code(&out), 4, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("must run as root"));
    assert!(snapshot(dir.path()).is_empty());
}

#[test]
fn status_of_a_root_reads_the_files_only() {
    let owner = TestUser::create(None);
    let dir = target();
    let r = dir.path();

    // Nothing installed: exit 5, and it says how to install.
    let out = banger()
        .args(["system", "status", "--json", "--root"])
        .arg(r)
        .output()
        .unwrap();
    assert_eq!(code(&out), 5, "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["installed"], false);
    assert!(
        doc["problems"][0]
            .as_str()
            .unwrap()
            .contains("sudo banger system install"),
        "{doc:#}"
    );

    ok_json(&install(r, &owner.name, &["--json"]));
    let out = banger()
        .args(["system", "status", "--json", "--root"])
        .arg(r)
        .output()
        .unwrap();
    let doc = ok_json(&out);
    assert_eq!(doc["healthy"], true, "{doc:#}");
    assert_eq!(doc["owner"]["name"], owner.name.as_str());
    assert_eq!(doc["units"], Value::Null, "--root never asks systemd");
    assert_eq!(doc["sockets"], Value::Null);
    for b in doc["binaries"].as_array().unwrap() {
        assert_eq!(b["version"], banger_proto::BANGER_VERSION, "{b}");
    }

    // A binary that disagrees with the metadata is a problem (exit 1).
    std::fs::write(
        r.join("usr/local/bin/bangerd"),
        "#!/bin/sh\necho bangerd 9.9.9\n",
    )
    .unwrap();
    let out = banger()
        .args(["system", "status", "--root"])
        .arg(r)
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("bangerd is version 9.9.9 but the install metadata says"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn uninstall_of_a_root_removes_what_install_wrote() {
    let owner = TestUser::create(None);
    let dir = target();
    let r = dir.path();
    ok_json(&install(r, &owner.name, &["--json"]));
    let uninstall = |extra: &[&str]| {
        banger()
            .args(["system", "uninstall", "--json", "--root"])
            .arg(r)
            .args(extra)
            .output()
            .unwrap()
    };
    let report = ok_json(&uninstall(&[]));
    assert_eq!(report["owner"], owner.name.as_str());
    assert_eq!(
        report["units"],
        serde_json::json!([]),
        "--root stops nothing"
    );
    let left: Vec<_> = snapshot(r).into_keys().collect();
    let left: Vec<_> = left.iter().map(|p| p.to_str().unwrap()).collect();
    assert_eq!(
        left,
        [
            "etc",
            "etc/systemd",
            "etc/systemd/system",
            "etc/udev",
            "etc/udev/rules.d",
            "usr",
            "usr/local",
            "usr/local/bin",
            "var",
            "var/lib",
            "var/lib/banger",
            "var/lib/banger-root",
        ],
        "only the parents and the kept state"
    );
    let kept: Vec<_> = report["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kept,
        [
            r.join("var/lib/banger").display().to_string(),
            r.join("var/lib/banger-root").display().to_string()
        ]
    );

    // Nothing left to uninstall.
    let out = uninstall(&[]);
    assert_eq!(code(&out), 5, "{}", text(&out.stdout));

    // --purge takes the state too.
    ok_json(&install(r, &owner.name, &["--json"]));
    ok_json(&uninstall(&["--purge"]));
    assert!(!r.join("var/lib/banger").exists());
    assert!(!r.join("var/lib/banger-root").exists());
}

#[test]
fn restart_and_uninstall_refuse_non_root_callers() {
    let user = TestUser::create(None);
    for args in [
        &["system", "restart"][..],
        &["system", "uninstall", "--root", "/nonexistent"][..],
    ] {
        let out = user.command(bin("banger")).args(args).output().unwrap();
        assert_eq!(code(&out), 4, "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("must run as root"), "{args:?}");
    }
}

/// Without `--root`, both need a running systemd. In a private mount
/// namespace with an empty `/run` (so `/run/systemd/system` is absent
/// whatever the host), both refuse with exit 8 before doing anything.
#[test]
fn restart_and_uninstall_need_systemd_without_root() {
    require_root();
    for cmd in ["restart", "uninstall"] {
        let script = format!("mount -t tmpfs tmpfs /run && exec \"$0\" system {cmd}");
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .arg(bin("banger"))
            .env_remove("SUDO_USER")
            .output()
            .expect("running unshare");
        assert_eq!(code(&out), 8, "{cmd}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("not running systemd"),
            "{cmd}: {}",
            text(&out.stderr)
        );
    }
}

/// Issue #13 finding 5: the bridge and guest subnet are root's choice,
/// recorded in the install metadata; a reinstall without `--subnet` keeps
/// the recorded one, and a subnet the helper could never use is refused
/// before anything is written.
#[test]
fn the_bridge_and_subnet_are_recorded_at_install() {
    let owner = TestUser::create(None);
    let dir = target();
    let r = dir.path();
    let meta = || InstallMeta::load(&r.join("etc/banger/install.toml")).unwrap();
    let report = ok_json(&install(
        r,
        &owner.name,
        &["--json", "--bridge", "banger7", "--subnet", "10.99.0.0/24"],
    ));
    assert_eq!(
        report["network"],
        serde_json::json!({"bridge": "banger7", "subnet": "10.99.0.0/24"})
    );
    assert_eq!(
        meta().network.bridge_spec().address.to_string(),
        "10.99.0.1"
    );
    // Reinstalled (an upgrade) without the flags: the same network.
    let before = snapshot(r);
    ok_json(&install(r, &owner.name, &["--json"]));
    assert_eq!(snapshot(r), before);
    assert_eq!(meta().network.subnet.to_string(), "10.99.0.0/24");

    for (flags, says) in [
        (["--subnet", "8.8.8.0/24"], "not in a private range"),
        (
            ["--subnet", "10.99.0.0/30"],
            "prefix /30 is outside /16../29",
        ),
        (["--bridge", "eth0"], "\"eth0\" is not a banger bridge name"),
    ] {
        let out = install(r, &owner.name, &flags);
        assert_eq!(code(&out), 2, "{flags:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(says),
            "{flags:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(snapshot(r), before, "{flags:?} changed something");
    }
    let out = install(r, &owner.name, &["--subnet", "10.99.0.1/24"]);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr).contains("host bits"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(snapshot(r), before);
}

#[test]
fn the_jail_range_is_recorded_and_a_range_in_use_is_refused() {
    use std::os::unix::process::CommandExt as _;
    let owner = TestUser::create(None);
    let dir = target();
    let r = dir.path();
    let report = ok_json(&install(r, &owner.name, &["--json"]));
    assert_eq!(report["jail"]["uid_base"], 1_990_000_000);
    assert_eq!(report["jail"]["count"], 1024);
    // A system uid range is a usage error.
    let out = install(r, &owner.name, &["--jail-uids", "100:5"]);
    assert_eq!(code(&out), 2, "{}", text(&out.stderr));
    // A range a running process uses is refused, and nothing changes.
    let before = snapshot(r);
    let uid = 3_200_000 + std::process::id() % 100_000;
    let mut sleeper = Command::new("sleep")
        .arg("30")
        .uid(uid)
        .gid(uid)
        .spawn()
        .unwrap();
    let range = format!("{uid}:16");
    let out = install(r, &owner.name, &["--jail-uids", &range]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_ne!(code(&out), 0);
    assert!(
        text(&out.stderr).contains("in use"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(snapshot(r), before);
    // A free range is recorded, and kept by a reinstall that names none.
    let report = ok_json(&install(r, &owner.name, &["--json", "--jail-uids", &range]));
    assert_eq!(report["jail"]["uid_base"], uid);
    let report = ok_json(&install(r, &owner.name, &["--json"]));
    assert_eq!(report["jail"]["count"], 16);
}
