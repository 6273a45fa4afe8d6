//! CLI tests: the real `banger` binary on isolated temp dirs. Where a daemon
//! is needed, a recording fake (`support/fake_server.rs`) speaks the protocol
//! on a temp socket.
#![allow(clippy::disallowed_methods)] // tests spawn the binary directly

#[path = "support/fake_server.rs"]
mod fake_server;

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::process::{Command, Output, Stdio};

use banger_proto::doctor::DoctorReport;
use banger_proto::rpc::{PROTOCOL_VERSION, Request, Response};
use banger_proto::{ErrorCode, RpcError};

use fake_server::{
    Behavior, FakeServer, Reply, daemon_info, progress, report_with_failure,
    report_with_warning_only,
};

/// `banger` with a clean environment: no inherited socket, no colour.
fn banger() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_banger"));
    cmd.env_remove("BANGER_SOCKET")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

fn run(args: &[&str]) -> Output {
    banger().args(args).output().expect("run banger")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed by a signal")
}

/// Run `banger` against a fake daemon following `behavior`.
fn against(behavior: Behavior, args: &[&str]) -> (Output, fake_server::Recorded) {
    let fake = FakeServer::start(behavior);
    let socket = fake.socket.to_str().unwrap().to_string();
    let out = banger()
        .arg("--socket")
        .arg(&socket)
        .args(args)
        .output()
        .unwrap();
    (out, fake.finish())
}

#[test]
fn completions_for_bash_mention_banger() {
    let out = run(&["completions", "bash"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let script = text(&out.stdout);
    assert!(script.contains("banger"), "{script}");
    assert!(script.contains("doctor"), "{script}");
}

#[test]
fn every_shell_gets_a_completion_script() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = run(&["completions", shell]);
        assert_eq!(code(&out), 0, "{shell}: {}", text(&out.stderr));
        assert!(!out.stdout.is_empty(), "{shell}");
    }
}

#[test]
fn closed_stdout_exits_quietly_with_zero() {
    // Close the read end before banger writes anything, so its write surely
    // meets EPIPE (with `| head -1` the script might fit in the pipe buffer).
    let mut child = banger()
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn pipe_into_head_exits_zero_with_empty_stderr() {
    let bin = env!("CARGO_BIN_EXE_banger");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{bin}' completions bash 2>\"$ERR\" | head -1 >/dev/null; \
             echo \"$?\"; cat \"$ERR\""
        ))
        .env("ERR", tempfile::NamedTempFile::new().unwrap().path())
        .env_remove("BANGER_SOCKET")
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "0\n", "{}", text(&out.stderr));
}

#[test]
fn man_prints_a_roff_page() {
    let out = run(&["man"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let page = text(&out.stdout);
    assert!(page.contains(".TH banger 1"), "{page}");
    assert!(
        page.contains("Exit status"),
        "the exit-status table belongs in banger(1)"
    );
}

#[test]
fn man_out_dir_writes_one_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    let out = run(&["man", "--out-dir", out_dir.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    for page in [
        "banger.1",
        "banger-doctor.1",
        "banger-version.1",
        "banger-completions.1",
    ] {
        let body =
            std::fs::read_to_string(out_dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(body.contains(".TH"), "{page}");
    }
    assert!(text(&out.stdout).contains("banger-doctor.1"));
}

#[test]
fn unreachable_socket_exits_3_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nonexistent.sock");
    let sock = sock.to_str().unwrap();
    let out = run(&["--socket", sock, "doctor"]);
    assert_eq!(code(&out), 3);
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!("banger: cannot reach bangerd at {sock}: ")),
        "{err}"
    );
    assert!(err.contains("hint: is the daemon running?"), "{err}");
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn socket_comes_from_the_environment_too() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("from-env.sock");
    let out = banger()
        .env("BANGER_SOCKET", &sock)
        .arg("doctor")
        .output()
        .unwrap();
    assert_eq!(code(&out), 3);
    assert!(text(&out.stderr).contains(sock.to_str().unwrap()));
}

#[test]
fn unreachable_socket_with_json_prints_the_error_object() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nonexistent.sock");
    let out = run(&["doctor", "--json", "--socket", sock.to_str().unwrap()]);
    assert_eq!(code(&out), 3);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(v["error"]["code"], "daemon_unreachable");
    let first = v["error"]["messages"][0].as_str().unwrap();
    assert!(first.contains(sock.to_str().unwrap()), "{first}");
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn version_without_daemon_prints_client_version_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nonexistent.sock");
    let out = run(&["version", "--socket", sock.to_str().unwrap()]);
    assert_eq!(code(&out), 3);
    assert_eq!(
        text(&out.stdout),
        format!(
            "banger {} (protocol {PROTOCOL_VERSION})\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert!(text(&out.stderr).contains("cannot reach bangerd"));

    let out = run(&["version", "--json", "--socket", sock.to_str().unwrap()]);
    assert_eq!(code(&out), 3);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["client"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["daemon"].is_null());
    assert_eq!(v["error"]["code"], "daemon_unreachable");
}

#[test]
fn symlinked_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.sock");
    let _listener = UnixListener::bind(&real).unwrap();
    let link = dir.path().join("link.sock");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = run(&["--socket", link.to_str().unwrap(), "version"]);
    assert_eq!(code(&out), 3);
    let err = text(&out.stderr);
    assert!(err.contains("symlink"), "{err}");
    assert!(err.contains(link.to_str().unwrap()), "{err}");
}

#[test]
fn regular_file_as_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a.sock");
    std::fs::write(&file, b"").unwrap();
    let out = run(&["--socket", file.to_str().unwrap(), "doctor"]);
    assert_eq!(code(&out), 3);
    assert!(
        text(&out.stderr).contains("not a socket"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn version_round_trip() {
    let (out, rec) = against(
        Behavior::Serve(vec![Reply {
            progress: vec![],
            outcome: Ok(Response::Pong(daemon_info("/run/banger-dev/bangerd.sock"))),
        }]),
        &["version"],
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!("banger {} ", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    assert!(
        stdout.contains("bangerd 9.9.9 (protocol 1, dev mode)"),
        "{stdout}"
    );
    assert!(stdout.contains("pid        4242"), "{stdout}");
    assert!(stdout.contains("/run/banger-dev/bangerd.sock"), "{stdout}");
    assert_eq!(rec.requests, [Request::Ping]);
    assert_eq!(rec.hello.unwrap().protocol, PROTOCOL_VERSION);
}

#[test]
fn version_json_round_trip() {
    let (out, _) = against(
        Behavior::Serve(vec![Reply {
            progress: vec![],
            outcome: Ok(Response::Pong(daemon_info("/s.sock"))),
        }]),
        &["version", "--json"],
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["daemon"]["daemon_version"], "9.9.9");
    assert_eq!(v["daemon"]["mode"], "dev");
    assert_eq!(v["daemon"]["pid"], 4242);
    assert!(v.get("error").is_none());
}

#[test]
fn permission_denied_right_after_connect_exits_4() {
    let msg = "uid 1234 is not allowed to use this daemon";
    let (out, rec) = against(
        Behavior::RefuseBeforeHello(RpcError::new(ErrorCode::PermissionDenied, msg)),
        &["doctor"],
    );
    assert_eq!(code(&out), 4);
    assert_eq!(text(&out.stderr), format!("banger: {msg}\n"));
    assert!(rec.requests.is_empty());
}

#[test]
fn permission_denied_with_json_keeps_the_daemons_code() {
    let msg = "uid 1234 is not allowed to use this daemon";
    let (out, _) = against(
        Behavior::RefuseBeforeHello(RpcError::new(ErrorCode::PermissionDenied, msg)),
        &["doctor", "--json"],
    );
    assert_eq!(code(&out), 4);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "permission_denied");
    assert_eq!(v["error"]["messages"], serde_json::json!([msg]));
}

#[test]
fn protocol_mismatch_exits_7() {
    let err = RpcError::new(
        ErrorCode::ProtocolMismatch,
        "client speaks protocol 1, server 2",
    );
    let (out, rec) = against(Behavior::RejectHello(err), &["version"]);
    assert_eq!(code(&out), 7);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("client speaks protocol 1, server 2"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: "), "{stderr}");
    assert!(rec.hello.is_some());
}

#[test]
fn server_hello_with_another_protocol_exits_7() {
    let (out, _) = against(
        Behavior::HelloWithProtocol(PROTOCOL_VERSION + 1),
        &["doctor"],
    );
    assert_eq!(code(&out), 7);
    assert!(
        text(&out.stderr).contains("speaks protocol"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn remote_error_codes_map_to_exit_statuses() {
    for (code_, want) in [
        (ErrorCode::Unavailable, 8),
        (ErrorCode::Internal, 1),
        (ErrorCode::NotFound, 5),
        (ErrorCode::InvalidState, 6),
    ] {
        let err = RpcError::new(code_, "inner cause").context("outer");
        let (out, _) = against(
            Behavior::Serve(vec![Reply {
                progress: vec![],
                outcome: Err(err),
            }]),
            &["doctor"],
        );
        assert_eq!(code(&out), want, "{code_}");
        assert_eq!(text(&out.stderr), "banger: outer: inner cause\n");
    }
}

fn doctor_reply(report: DoctorReport) -> Behavior {
    Behavior::Serve(vec![Reply {
        progress: vec![
            progress("kvm", 1, 3),
            progress("resolved", 2, 3),
            progress("nft", 3, 3),
        ],
        outcome: Ok(Response::Doctor(report)),
    }])
}

#[test]
fn doctor_with_a_failure_exits_10_and_stays_quiet_when_piped() {
    let (out, rec) = against(doctor_reply(report_with_failure()), &["doctor"]);
    assert_eq!(code(&out), 10);
    // stderr is a pipe here, not a terminal: no progress lines.
    assert_eq!(text(&out.stderr), "");
    let table = text(&out.stdout);
    assert!(table.starts_with("STATUS  CHECK"), "{table}");
    assert!(
        table.contains("fail    nft       nft binary not found\n"),
        "{table}"
    );
    assert!(
        table.contains("        fix: apt-get install nftables\n"),
        "{table}"
    );
    assert!(table.contains("VMM backends"), "{table}");
    assert!(table.contains("firecracker  no"), "{table}");
    assert_eq!(rec.requests, [Request::Doctor]);
}

#[test]
fn doctor_with_warnings_only_exits_0() {
    let (out, _) = against(doctor_reply(report_with_warning_only()), &["doctor"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("fix: start systemd-resolved"));
}

#[test]
fn doctor_json_parses_as_a_doctor_report() {
    let (out, _) = against(doctor_reply(report_with_failure()), &["doctor", "--json"]);
    assert_eq!(code(&out), 10);
    assert_eq!(text(&out.stderr), "");
    let report: DoctorReport = serde_json::from_slice(&out.stdout).expect("a DoctorReport");
    assert_eq!(report, report_with_failure());
}

#[test]
fn verbose_names_the_socket_on_stderr() {
    let (out, _) = against(doctor_reply(report_with_warning_only()), &["doctor", "-v"]);
    assert_eq!(code(&out), 0);
    let err = text(&out.stderr);
    assert!(
        err.contains("banger: socket ") && err.contains("from --socket"),
        "{err}"
    );
    assert!(err.contains("connected to bangerd 9.9.9"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let out = run(&["frobnicate"]);
    assert_eq!(code(&out), 2);
    let out = run(&["completions", "tcsh"]);
    assert_eq!(code(&out), 2);
}

#[test]
fn help_lists_the_exit_statuses() {
    let mut child = banger()
        .arg("--help")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut help = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut help)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(help.contains("Exit status:"), "{help}");
    assert!(help.contains("  10  doctor found failing checks"), "{help}");
}
