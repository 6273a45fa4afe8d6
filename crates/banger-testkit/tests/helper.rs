//! A real `bangerd-root` on a temp socket: it serves the installed owner and
//! nobody else, and survives malformed input.
#![allow(clippy::disallowed_methods)] // these tests spawn the binaries under test directly

use banger_testkit::*;

const PROBE_DEVICE: &str =
    r#"json={"type":"op","body":{"op":"probe_device","args":{"device":"tun"}}}"#;

fn owner_client(
    owner: &TestUser,
    socket: &std::path::Path,
    actions: &[&str],
) -> Vec<serde_json::Value> {
    rawclient(owner.command(bin("banger-rawclient")), socket, actions)
}

#[test]
fn serves_the_owner() {
    let dir = shared_tempdir();
    let owner = TestUser::create(None);
    let h = RootHelper::start(dir.path(), &owner);
    let lines = owner_client(
        &owner,
        &h.socket,
        &["hello-priv", "read=1", PROBE_DEVICE, "read=1"],
    );
    let hello = expect_msg(&lines[0], "hello");
    assert_eq!(
        hello["protocol"],
        banger_proto::privops::PRIV_PROTOCOL_VERSION
    );
    let ok = expect_msg(&lines[1], "ok");
    assert_eq!(ok["kind"], "device");
    assert_eq!(ok["result"]["device"], "tun");
    let expected = if std::path::Path::new("/dev/net/tun").exists() {
        "present"
    } else {
        "absent"
    };
    assert_eq!(ok["result"]["state"]["state"], expected);
}

#[test]
fn refuses_other_uids_before_reading_a_request() {
    let dir = shared_tempdir();
    let owner = TestUser::create(None);
    // Same primary group as the owner, so the socket's 0660 root:owner-group
    // mode lets it connect and only the SO_PEERCRED check can stop it.
    let other = TestUser::create(Some(owner.gid));
    let h = RootHelper::start(dir.path(), &owner);

    // Sends nothing: the refusal arrives anyway.
    let lines = owner_client(&other, &h.socket, &["eof"]);
    let msg = expect_error(&lines[0], "permission_denied");
    assert!(msg.contains(&format!("uid {}", other.uid)), "{msg}");
    assert!(is_eof(&lines[1]));

    // Root is not the owner either: the helper serves exactly one uid.
    let lines = rawclient_root(&h.socket, &["hello-priv", "eof"]);
    expect_error(&lines[0], "permission_denied");

    // The owner is still served.
    let lines = owner_client(&owner, &h.socket, &["hello-priv", "read=1"]);
    expect_msg(&lines[0], "hello");
}

#[test]
fn a_user_outside_the_owner_group_cannot_even_connect() {
    let dir = shared_tempdir();
    let owner = TestUser::create(None);
    let stranger = TestUser::create(None);
    let h = RootHelper::start(dir.path(), &owner);
    let out = stranger
        .command(bin("banger-rawclient"))
        .arg(&h.socket)
        .arg("eof")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
}

#[test]
fn malformed_input_is_refused_and_the_helper_keeps_serving() {
    let dir = shared_tempdir();
    let owner = TestUser::create(None);
    let h = RootHelper::start(dir.path(), &owner);
    let speaks = format!(
        "helper speaks {}",
        banger_proto::privops::PRIV_PROTOCOL_VERSION
    );
    // A newer client's hello, whatever the current protocol is, and an
    // older one's (a daemon not yet upgraded).
    let newer = format!(
        "hello-priv={}",
        banger_proto::privops::PRIV_PROTOCOL_VERSION + 1
    );
    let older = format!(
        "hello-priv={}",
        banger_proto::privops::PRIV_PROTOCOL_VERSION - 1
    );
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["json={not json", "eof"],
            "bad_request",
            "malformed message",
        ),
        (&["big=2000000", "eof"], "frame_too_large", "exceeds"),
        (&[PROBE_DEVICE, "eof"], "bad_request", "expected hello"),
        (
            &[newer.as_str(), "eof"],
            "protocol_mismatch",
            speaks.as_str(),
        ),
        (
            &[older.as_str(), "eof"],
            "protocol_mismatch",
            speaks.as_str(),
        ),
        (
            &[
                "hello-priv",
                "read=1",
                r#"json={"type":"op","body":{"op":"exec","args":{"argv":["/bin/sh"]}}}"#,
                "eof",
            ],
            "bad_request",
            "unknown variant `exec`",
        ),
        (
            &[
                "hello-priv",
                "read=1",
                r#"json={"type":"op","body":{"op":"probe_device","args":{"device":"/dev/sda"}}}"#,
                "eof",
            ],
            "bad_request",
            "unknown variant",
        ),
        (
            &["hello-priv", "read=1", "hello-priv", "eof"],
            "bad_request",
            "hello sent twice",
        ),
    ];
    for (actions, code, needle) in cases {
        let lines = owner_client(&owner, &h.socket, actions);
        let err = lines
            .iter()
            .find(|l| l.get("recv").is_some_and(|r| r["type"] == "error"))
            .unwrap_or_else(|| panic!("{actions:?}: no error in {lines:?}"));
        let msg = expect_error(err, code);
        assert!(msg.contains(needle), "{actions:?}: {msg}");
        assert!(is_eof(lines.last().unwrap()), "{actions:?}: {lines:?}");
    }
    let lines = owner_client(
        &owner,
        &h.socket,
        &["hello-priv", "read=1", PROBE_DEVICE, "read=1"],
    );
    expect_msg(&lines[1], "ok");
}

#[test]
fn sigterm_removes_the_socket() {
    let dir = shared_tempdir();
    let owner = TestUser::create(None);
    let mut h = RootHelper::start(dir.path(), &owner);
    let meta = std::fs::metadata(&h.socket).unwrap();
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!((meta.uid(), meta.gid()), (0, owner.gid));
    }
    let out = h.proc.terminate();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!h.socket.exists());
}

/// Whoever read the helper's stderr went away (the test process that
/// started it died; a journal stream broke). Every log line then failed,
/// tracing-subscriber reported that with `eprintln!`, which panics on a
/// closed stderr — so the signal thread died at its first log line and
/// SIGTERM no longer stopped the helper. Seen after a killed test run left
/// one serving for good.
#[test]
fn a_helper_whose_stderr_is_gone_still_stops_on_sigterm() {
    use std::os::unix::process::ExitStatusExt as _;
    require_root();
    let dir = shared_tempdir();
    let owner = TestUser::create(None);
    let install = write_install_meta_full(
        dir.path(),
        &owner,
        banger_proto::install::InstallVmm::default(),
        banger_proto::install::InstallNetwork::default(),
    );
    let run = dir.path().join("root-run");
    std::fs::create_dir_all(&run).unwrap();
    let socket = run.join("root.sock");
    let (reader, writer) = std::io::pipe().unwrap();
    // The VM cgroup directory the helper makes, removed after it stopped
    // (dropped after `started`, declared below).
    let _cgroup = JailCgroup::of_helper(&install);
    /// The helper this test started, stopped by its pid whatever happens.
    struct Started(std::process::Child);
    impl Drop for Started {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut started = Started(
        std::process::Command::new(bin("bangerd-root"))
            .arg("--install-file")
            .arg(&install)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(writer)
            .spawn()
            .unwrap(),
    );
    let child = &mut started.0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the helper never bound its socket"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(reader);
    // A request makes the helper log with nobody reading (and it must go on
    // serving).
    let lines = rawclient(
        owner.command(bin("banger-rawclient")),
        &socket,
        &["hello-priv", "read=1", PROBE_DEVICE, "read=1"],
    );
    expect_msg(&lines[1], "ok");
    rustix::process::kill_process(
        rustix::process::Pid::from_child(child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        // `started` stops it by its pid on the way out.
        assert!(
            std::time::Instant::now() < deadline,
            "SIGTERM did not stop a helper whose stderr is gone"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "{status:?} (signal {:?})",
        status.signal()
    );
    assert!(!socket.exists(), "the socket was left behind");
}

#[test]
fn refuses_to_start_without_valid_install_metadata() {
    require_root();
    let dir = shared_tempdir();
    let bad = dir.path().join("install.toml");
    std::fs::write(&bad, "[owner]\nname = \"x\"\nuidd = 5\n").unwrap();
    let out = std::process::Command::new(bin("bangerd-root"))
        .arg("--install-file")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&bad.display().to_string()) && err.contains("uidd"),
        "{err}"
    );
}
