//! Kernels and images end to end: the real `banger` CLI → a real `bangerd`
//! → files on disk and rows in the store. Inputs are made here: a fake
//! bzImage (only the "HdrS" header at 0x202 matters for import) and ext4
//! filesystems from `mkfs.ext4`.
#![allow(clippy::disallowed_methods)] // these tests spawn the binaries under test directly

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use banger_testkit::*;
use serde_json::Value;

fn banger_in(socket: &Path, cwd: &Path, args: &[&str]) -> Output {
    Command::new(bin("banger"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("running banger")
}

/// `banger --json ARGS` that must succeed; its parsed stdout.
fn ok_json(d: &DevDaemon, cwd: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = banger_in(&d.socket, cwd, &all);
    assert!(
        out.status.success(),
        "banger {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// `banger --json ARGS` that must fail: (exit status, error code, joined
/// messages).
fn err_json(socket: &Path, cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = banger_in(socket, cwd, &all);
    assert!(!out.status.success(), "banger {args:?} should have failed");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON error for {args:?} ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let msgs = v["error"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(": ");
    (
        out.status.code().unwrap(),
        v["error"]["code"].as_str().unwrap().to_owned(),
        msgs,
    )
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn state(d: &DevDaemon) -> PathBuf {
    d.dir.path().join("state")
}

/// What is on disk under images/ and kernels/: staging entries (must be
/// none after any request finished) and the number of id directories.
fn on_disk(state: &Path) -> (Vec<PathBuf>, usize, usize) {
    let list = |d: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .map(|rd| rd.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    };
    let mut staging = list(state.join("images/.staging"));
    staging.extend(list(state.join("kernels/.staging")));
    let ids = |d: &str| {
        list(state.join(d))
            .into_iter()
            .filter(|p| !p.ends_with(".staging"))
            .count()
    };
    (staging, ids("images"), ids("kernels"))
}

#[test]
fn kernel_and_image_lifecycle_through_the_cli() {
    let d = DevDaemon::start();
    let work = shared_tempdir();
    let w = work.path();
    fake_kernel(&w.join("vmlinux.bin"), 0x5a);
    std::fs::write(w.join("initrd.img"), b"an initramfs").unwrap();
    mkfs_ext4(&w.join("root.ext4"), "16M");

    // Relative paths are resolved by the CLI against its working directory;
    // the name defaults to the file name without its extension.
    let k = ok_json(
        &d,
        w,
        &["kernel", "import", "vmlinux.bin", "--initrd", "initrd.img"],
    );
    assert_eq!(k["name"], "vmlinux");
    assert_eq!(k["arch"], "x86_64");
    assert_eq!(k["source"], "import");
    let kid = k["id"].as_str().unwrap();
    let kdir = state(&d).join("kernels").join(kid);
    assert_eq!(k["kernel"], kdir.join("kernel").display().to_string());
    assert_eq!(k["initrd"], kdir.join("initrd").display().to_string());
    assert_eq!(k["sha256"], sha256sum(&w.join("vmlinux.bin")));
    assert_eq!(
        sha256sum(&kdir.join("kernel")),
        sha256sum(&w.join("vmlinux.bin"))
    );
    assert_eq!(std::fs::read(kdir.join("initrd")).unwrap(), b"an initramfs");

    let img = ok_json(
        &d,
        w,
        &[
            "image",
            "register",
            "deb",
            "--rootfs",
            "root.ext4",
            "--kernel",
            "vmlinux",
        ],
    );
    let iid = img["id"].as_str().unwrap();
    let rootfs = state(&d).join("images").join(iid).join("rootfs.ext4");
    assert_eq!(img["rootfs"], rootfs.display().to_string());
    assert_eq!(img["kernel"], "vmlinux");
    assert_eq!(img["initrd"], kdir.join("initrd").display().to_string());
    assert_eq!(img["size_bytes"], 16 << 20);
    assert_eq!(img["source"], "register");
    assert_eq!(sha256sum(&rootfs), sha256sum(&w.join("root.ext4")));
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&rootfs)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "published rootfs fails e2fsck -fn");

    let list = ok_json(&d, w, &["image", "ls"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0], img);
    assert_eq!(ok_json(&d, w, &["image", "show", "deb"]), img);
    let kernels = ok_json(&d, w, &["kernel", "ls"]);
    assert_eq!(kernels[0]["used_by"], serde_json::json!(["deb"]));

    // Human output: tables.
    let out = banger_in(&d.socket, w, &["image", "ls"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("NAME"), "{text}");
    assert!(text.contains("deb") && text.contains("16 MiB"), "{text}");
    let out = banger_in(&d.socket, w, &["kernel", "ls"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("vmlinux"));

    // The kernel cannot go while the image uses it.
    let (status, code, msg) = err_json(&d.socket, w, &["kernel", "rm", "vmlinux"]);
    assert_eq!((status, code.as_str()), (6, "invalid_state"), "{msg}");
    assert!(msg.contains("used by image deb"), "{msg}");
    assert!(kdir.join("kernel").is_file());

    let removed = ok_json(&d, w, &["image", "rm", "deb"]);
    assert_eq!(removed["name"], "deb");
    assert!(!rootfs.parent().unwrap().exists());
    let (status, code, _) = err_json(&d.socket, w, &["image", "show", "deb"]);
    assert_eq!((status, code.as_str()), (5, "not_found"));
    ok_json(&d, w, &["kernel", "rm", "vmlinux"]);
    assert!(!kdir.exists());
    assert_eq!(ok_json(&d, w, &["kernel", "ls"]), serde_json::json!([]));
    assert_eq!(on_disk(&state(&d)), (vec![], 0, 0));
}

#[test]
fn bad_inputs_fail_with_the_input_named_and_leave_nothing() {
    let d = DevDaemon::start();
    let work = shared_tempdir();
    let w = work.path();
    fake_kernel(&w.join("k"), 0x5a);
    mkfs_ext4(&w.join("good.ext4"), "8M");
    std::fs::write(w.join("junk.img"), vec![7u8; 1 << 20]).unwrap();
    std::fs::write(w.join("notes.txt"), "not a kernel").unwrap();
    ok_json(&d, w, &["kernel", "import", "k"]);
    ok_json(
        &d,
        w,
        &[
            "image",
            "register",
            "taken",
            "--rootfs",
            "good.ext4",
            "--kernel",
            "k",
        ],
    );
    let before = on_disk(&state(&d));
    assert_eq!(before, (vec![], 1, 1));

    let junk = w.join("junk.img").display().to_string();
    let missing = w.join("missing.ext4").display().to_string();
    let notes = w.join("notes.txt").display().to_string();
    let reg = |name: &'static str, rootfs: &'static str, kernel: &'static str| {
        vec![
            "image", "register", name, "--rootfs", rootfs, "--kernel", kernel,
        ]
    };
    let cases: Vec<(Vec<&str>, &str, String)> = vec![
        (
            reg("Bad/Name", "good.ext4", "k"),
            "bad_request",
            "\"Bad/Name\"".into(),
        ),
        (
            reg("a..b", "good.ext4", "k"),
            "bad_request",
            "\"a..b\"".into(),
        ),
        (
            reg("taken", "good.ext4", "k"),
            "already_exists",
            "\"taken\"".into(),
        ),
        (reg("x", "junk.img", "k"), "bad_request", junk),
        (reg("x", "missing.ext4", "k"), "not_found", missing),
        (
            reg("x", "good.ext4", "nokernel"),
            "not_found",
            "\"nokernel\"".into(),
        ),
        (
            vec!["kernel", "import", "notes.txt", "--name", "n"],
            "bad_request",
            notes,
        ),
        (
            vec!["kernel", "import", "k", "--name", "k"],
            "already_exists",
            "\"k\"".into(),
        ),
    ];
    for (args, want, needle) in cases {
        let (_, code, msg) = err_json(&d.socket, w, &args);
        assert_eq!(code, want, "{args:?}: {msg}");
        assert!(
            msg.contains(&needle),
            "{args:?}: {msg} should name {needle}"
        );
        assert_eq!(
            on_disk(&state(&d)),
            before,
            "{args:?} left something behind"
        );
    }
    let (status, _, _) = err_json(&d.socket, w, &reg("x", "good.ext4", "nokernel"));
    assert_eq!(status, 5);
    let (status, _, _) = err_json(&d.socket, w, &reg("taken", "good.ext4", "k"));
    assert_eq!(status, 6);
    let images = ok_json(&d, w, &["image", "ls"]);
    assert_eq!(images.as_array().unwrap().len(), 1);
}

#[test]
fn a_corrupt_ext4_is_refused_by_e2fsck_naming_the_file() {
    let d = DevDaemon::start();
    let work = shared_tempdir();
    let w = work.path();
    fake_kernel(&w.join("k"), 0x5a);
    ok_json(&d, w, &["kernel", "import", "k"]);
    // A real filesystem (1 KiB blocks at this size) whose group descriptors
    // (block 2) were overwritten: it has the superblock magic and a clean
    // flag, so only e2fsck can tell.
    let bad = w.join("bad.ext4");
    mkfs_ext4(&bad, "8M");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&bad).unwrap();
        f.seek(SeekFrom::Start(2048)).unwrap();
        f.write_all(&[0xffu8; 1024]).unwrap();
    }
    let (_, code, msg) = err_json(
        &d.socket,
        w,
        &[
            "image", "register", "x", "--rootfs", "bad.ext4", "--kernel", "k",
        ],
    );
    assert_eq!(code, "bad_request", "{msg}");
    assert!(msg.contains("e2fsck"), "{msg}");
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
    assert!(!msg.contains(".staging"), "the staged path leaked: {msg}");
    assert_eq!(on_disk(&state(&d)), (vec![], 0, 1));
}

#[test]
fn concurrent_registers_of_one_name_publish_exactly_one() {
    let d = DevDaemon::start();
    let work = shared_tempdir();
    let w = work.path();
    fake_kernel(&w.join("k"), 0x5a);
    ok_json(&d, w, &["kernel", "import", "k"]);
    // Two different files, big enough that both copies overlap.
    mkfs_ext4(&w.join("a.ext4"), "128M");
    mkfs_ext4(&w.join("b.ext4"), "128M");
    let spawn = |rootfs: &str| {
        Command::new(bin("banger"))
            .arg("--socket")
            .arg(&d.socket)
            .args([
                "--json", "image", "register", "same", "--rootfs", rootfs, "--kernel", "k",
            ])
            .current_dir(w)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("a.ext4"), spawn("b.ext4"));
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let ok = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(ok, 1, "exactly one register succeeds: {outs:?}");
    let loser = outs.iter().find(|o| !o.status.success()).unwrap();
    assert_eq!(loser.status.code(), Some(6));
    let v: Value = serde_json::from_slice(&loser.stdout).unwrap();
    assert_eq!(v["error"]["code"], "already_exists", "{v}");
    assert_eq!(on_disk(&state(&d)), (vec![], 1, 1));
    assert_eq!(
        ok_json(&d, w, &["image", "ls"]).as_array().unwrap().len(),
        1
    );
}

/// In system mode the daemon runs as the owner and opens the user's files
/// as the owner: a file it may not read is refused with the path named.
#[test]
fn a_system_daemon_names_the_file_it_may_not_read() {
    require_root();
    let dir = shared_tempdir();
    let owner = TestUser::create(None);
    let install = write_install_meta(dir.path(), &owner);
    for sub in ["state", "run"] {
        let p = dir.path().join(sub);
        std::fs::create_dir(&p).unwrap();
        std::os::unix::fs::chown(&p, Some(owner.uid), Some(owner.gid)).unwrap();
    }
    // Its own network namespace, as every test daemon; no helper runs, so
    // network setup fails and is only logged.
    let mut cmd = Command::new("unshare");
    cmd.args(["--net", "--", "setpriv"])
        .arg(format!("--reuid={}", owner.uid))
        .arg(format!("--regid={}", owner.gid))
        .args(["--clear-groups", "--"])
        .arg(bin("bangerd"))
        .arg("--install-file")
        .arg(&install)
        .env("HOME", "/nonexistent");
    let mut proc = Proc::spawn("bangerd (system)", cmd);
    let socket = dir.path().join("run/bangerd.sock");
    wait_for_socket(&socket, &mut proc);

    let work = shared_tempdir();
    let w = work.path();
    let secret = w.join("secret-kernel");
    fake_kernel(&secret, 0x5a);
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // The CLI runs as the owner too: it trusts only sockets of its own uid,
    // root and the installed owner (this test's owner is not installed).
    let as_owner = |args: &[&str]| {
        owner
            .command(bin("banger"))
            .arg("--socket")
            .arg(&socket)
            .arg("--json")
            .args(args)
            .current_dir(w)
            .output()
            .unwrap()
    };
    let out = as_owner(&["kernel", "import", "secret-kernel"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (status, code) = (
        out.status.code().unwrap(),
        v["error"]["code"].as_str().unwrap(),
    );
    let msg = v["error"]["messages"].to_string();
    assert_eq!((status, code), (4, "permission_denied"), "{msg}");
    assert!(msg.contains(&secret.display().to_string()), "{msg}");
    assert!(msg.contains(&format!("uid {}", owner.uid)), "{msg}");
    assert_eq!(on_disk(&dir.path().join("state")), (vec![], 0, 0));

    // Readable, it imports, owned by the owner.
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = as_owner(&["kernel", "import", "secret-kernel"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let k: Value = serde_json::from_slice(&out.stdout).unwrap();
    let meta = std::fs::metadata(k["kernel"].as_str().unwrap()).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), owner.uid);
    proc.terminate();
}

/// `bangerd --dev` on a given state dir, in its own network namespace, so
/// a test can start a second daemon on what the first left behind; its VM
/// cgroup directory goes when the guard is dropped (after the daemon).
fn dev_daemon_on(root: &Path) -> (Proc, PathBuf, JailCgroup) {
    let run = root.join("run");
    let mut cmd = Command::new("unshare");
    cmd.args(["--net", "--"])
        .arg(bin("bangerd"))
        .arg("--dev")
        .arg("--state-dir")
        .arg(root.join("state"))
        .arg("--runtime-dir")
        .arg(&run)
        .env("HOME", root)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("NOTIFY_SOCKET");
    let (k, v) = dev_jail_env();
    let cgroup = JailCgroup::of_dev(&root.join("state"));
    cmd.env(k, v);
    let mut proc = Proc::spawn("bangerd --dev", cmd);
    let socket = run.join("bangerd.sock");
    wait_for_socket(&socket, &mut proc);
    (proc, socket, cgroup)
}

#[test]
fn startup_removes_what_an_interrupted_publication_left() {
    require_root();
    let root = shared_tempdir();
    let work = shared_tempdir();
    let w = work.path();
    let state = root.path().join("state");
    let (mut first, socket, _first_cgroup) = dev_daemon_on(root.path());
    fake_kernel(&w.join("k"), 0x5a);
    mkfs_ext4(&w.join("r.ext4"), "8M");
    let out = banger_in(&socket, w, &["kernel", "import", "k"]);
    assert!(out.status.success());
    let out = banger_in(
        &socket,
        w,
        &[
            "image", "register", "keep", "--rootfs", "r.ext4", "--kernel", "k",
        ],
    );
    assert!(out.status.success());
    // Piped stderr: no progress drawn.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    first.terminate();

    // What a crash leaves: a half-written staging dir, a removal's trash,
    // and an image directory renamed into place whose row was never written.
    let half = state.join("images/.staging/0123abcd");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("rootfs.ext4"), b"half a filesystem").unwrap();
    let trash = state.join("kernels/.staging/rm-feedface");
    std::fs::create_dir_all(&trash).unwrap();
    let unrecorded = state.join("images").join("cd".repeat(16));
    std::fs::create_dir_all(&unrecorded).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));

    let (mut second, socket, _second_cgroup) = dev_daemon_on(root.path());
    // The socket exists before startup's reconcile has run; an answered
    // request means it has (the server starts after it).
    let out = banger_in(&socket, w, &["--json", "image", "show", "keep"]);
    assert!(out.status.success(), "the published image survives");
    assert!(!half.exists() && !trash.exists() && !unrecorded.exists());
    assert_eq!(on_disk(&state), (vec![], 1, 1));
    second.terminate();
}
