//! Public RPC against a real `bangerd`: round trips, peer authentication with
//! real second users, malformed input, shutdown and readiness.
#![allow(clippy::disallowed_methods)] // these tests spawn the binaries under test directly

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use banger_testkit::*;

fn rawclient_as(
    user: &TestUser,
    socket: &std::path::Path,
    actions: &[&str],
) -> Vec<serde_json::Value> {
    rawclient(user.command(bin("banger-rawclient")), socket, actions)
}

#[test]
fn ping_round_trip_over_the_dev_socket() {
    let d = DevDaemon::start();
    let lines = rawclient_root(
        &d.socket,
        &["hello-rpc", "read=1", r#"json={"method":"ping"}"#, "read=1"],
    );
    let hello = expect_msg(&lines[0], "hello");
    assert_eq!(hello["mode"], "dev");
    assert_eq!(hello["protocol"], 1);
    let done = expect_msg(&lines[1], "done");
    assert_eq!(done["kind"], "pong");
    assert_eq!(done["result"]["pid"], d.proc.pid());
    assert_eq!(done["result"]["uid"], 0);
}

#[test]
fn doctor_streams_progress_before_its_result() {
    let d = DevDaemon::start();
    let lines = rawclient_root(
        &d.socket,
        &["hello-rpc", r#"json={"method":"doctor"}"#, "reply"],
    );
    let types: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.get("recv").map(|r| r["type"].as_str().unwrap()))
        .collect();
    let done_at = types
        .iter()
        .position(|t| *t == "done")
        .expect("doctor finished");
    let progress = types[..done_at]
        .iter()
        .filter(|t| **t == "progress")
        .count();
    assert!(
        progress >= 5,
        "expected a progress event per check, got {types:?}"
    );
}

#[test]
fn dev_daemon_refuses_non_root_before_reading_anything() {
    let d = DevDaemon::start();
    let intruder = TestUser::create(None);
    // The intruder sends nothing at all: the refusal must still arrive, which
    // shows the decision is made from SO_PEERCRED before any read.
    let lines = rawclient_as(&intruder, &d.socket_public(), &["eof"]);
    let msg = expect_error(&lines[0], "permission_denied");
    assert!(msg.contains(&format!("uid {}", intruder.uid)), "{msg}");
    assert!(is_eof(&lines[1]));
    // And the daemon goes on serving root.
    let lines = rawclient_root(&d.socket, &["hello-rpc", "read=1"]);
    expect_msg(&lines[0], "hello");
}

/// The dev socket is 0600 root: to test the SO_PEERCRED layer rather than
/// file permissions, the test opens the socket's mode up for the duration.
trait PublicSocket {
    fn socket_public(&self) -> std::path::PathBuf;
}

impl PublicSocket for DevDaemon {
    fn socket_public(&self) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        for dir in [self.socket.parent().unwrap(), self.dir.path()] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        self.socket.clone()
    }
}

#[test]
fn system_mode_serves_owner_and_root_but_not_other_users() {
    require_root();
    let dir = shared_tempdir();
    let owner = TestUser::create(None);
    let other = TestUser::create(Some(owner.gid));
    let install = write_install_meta(dir.path(), &owner);
    for sub in ["state", "run"] {
        let p = dir.path().join(sub);
        std::fs::create_dir(&p).unwrap();
        std::os::unix::fs::chown(&p, Some(owner.uid), Some(owner.gid)).unwrap();
    }
    let mut cmd = owner.command(bin("bangerd"));
    cmd.arg("--install-file").arg(&install);
    let mut proc = Proc::spawn("bangerd (system)", cmd);
    let socket = dir.path().join("run/bangerd.sock");
    wait_for_socket(&socket, &mut proc);
    // Open the socket's mode so only SO_PEERCRED stands between `other` and the daemon.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    }

    let lines = rawclient_as(
        &owner,
        &socket,
        &["hello-rpc", "read=1", r#"json={"method":"ping"}"#, "read=1"],
    );
    assert_eq!(expect_msg(&lines[0], "hello")["mode"], "system");
    assert_eq!(expect_msg(&lines[1], "done")["result"]["uid"], owner.uid);

    let lines = rawclient_root(&socket, &["hello-rpc", "read=1"]);
    expect_msg(&lines[0], "hello");

    let lines = rawclient_as(&other, &socket, &["eof"]);
    let msg = expect_error(&lines[0], "permission_denied");
    assert!(msg.contains(&format!("uid {}", other.uid)), "{msg}");
    assert!(msg.contains(&format!("owner (uid {})", owner.uid)), "{msg}");

    let out = proc.terminate();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn malformed_frames_end_the_connection_but_not_the_daemon() {
    let d = DevDaemon::start();
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["json=this is not json", "eof"],
            "bad_request",
            "malformed message",
        ),
        (&["big=4294967295", "eof"], "frame_too_large", "exceeds"),
        (&["hex=00000000", "eof"], "bad_request", "empty frame"),
        (
            &[
                "hello-rpc",
                "read=1",
                r#"json={"method":"format_disk"}"#,
                "eof",
            ],
            "bad_request",
            "unknown variant",
        ),
        (
            &[
                "hello-rpc",
                "read=1",
                r#"json={"method":"ping","params":null,"sudo":true}"#,
                "eof",
            ],
            "bad_request",
            "sudo",
        ),
        (
            &[
                r#"json={"protocol":1,"client_version":"x","admin":true}"#,
                "eof",
            ],
            "bad_request",
            "unknown field `admin`",
        ),
        (&["hello-rpc=99", "eof"], "protocol_mismatch", "protocol 99"),
    ];
    for (actions, code, needle) in cases {
        let lines = rawclient_root(&d.socket, actions);
        let err_line = lines
            .iter()
            .find(|l| l.get("recv").is_some_and(|r| r["type"] == "error"))
            .unwrap_or_else(|| panic!("{actions:?}: no error in {lines:?}"));
        let msg = expect_error(err_line, code);
        assert!(msg.contains(needle), "{actions:?}: {msg}");
        assert!(
            is_eof(lines.last().unwrap()),
            "{actions:?}: connection not closed: {lines:?}"
        );
    }
    // Still serving.
    let lines = rawclient_root(
        &d.socket,
        &["hello-rpc", "read=1", r#"json={"method":"ping"}"#, "read=1"],
    );
    expect_msg(&lines[1], "done");
}

#[test]
fn sigterm_shuts_down_cleanly_and_removes_the_socket() {
    let mut d = DevDaemon::start();
    let out = d.proc.terminate();
    assert!(
        out.status.success(),
        "exit {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!d.socket.exists(), "socket left behind");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("shutting down") && log.contains("bangerd stopped"),
        "{log}"
    );
}

#[test]
fn readiness_is_reported_through_sd_notify() {
    let dir = shared_tempdir();
    let notify = dir.path().join("notify.sock");
    let listener = UnixDatagram::bind(&notify).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut d = DevDaemon::start_with(|c| {
        c.env("NOTIFY_SOCKET", &notify);
    });
    let mut buf = [0u8; 256];
    let n = listener.recv(&mut buf).unwrap();
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "READY=1");
    d.proc.terminate();
    let n = listener.recv(&mut buf).unwrap();
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "STOPPING=1");
}

#[test]
fn a_symlink_at_the_socket_path_is_refused_and_left_alone() {
    require_root();
    let dir = shared_tempdir();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let target = dir.path().join("precious");
    std::fs::write(&target, "keep").unwrap();
    std::os::unix::fs::symlink(&target, run.join("bangerd.sock")).unwrap();
    // Whatever VM cgroup directory the daemon made, removed after it.
    let _cgroup = JailCgroup::of_dev(&dir.path().join("state"));
    let out = Command::new(bin("bangerd"))
        .envs([dev_jail_env()])
        .args(["--dev", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--runtime-dir")
        .arg(&run)
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is a symlink"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
}

#[test]
fn a_config_typo_names_the_key_and_the_file() {
    require_root();
    let dir = shared_tempdir();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[network]\nbrdige = \"banger0\"\n").unwrap();
    // Whatever VM cgroup directory the daemon made, removed after it.
    let _cgroup = JailCgroup::of_dev(&dir.path().join("state"));
    let out = Command::new(bin("bangerd"))
        .envs([dev_jail_env()])
        .args(["--dev", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("brdige"), "{err}");
    assert!(err.contains(&cfg.display().to_string()), "{err}");
}

#[test]
fn dev_mode_refuses_to_run_unprivileged_and_system_mode_refuses_root() {
    require_root();
    let dir = shared_tempdir();
    let user = TestUser::create(None);
    let out = user
        .command(bin("bangerd"))
        .args(["--dev", "--state-dir"])
        .arg(dir.path().join("s"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must run as root"));

    let install = write_install_meta(dir.path(), &user);
    let out = Command::new(bin("bangerd"))
        .arg("--install-file")
        .arg(&install)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not run as root"));
}
