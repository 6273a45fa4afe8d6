//! Bearer-token auth: the registry (`auth: token`) sends clients to a token
//! service, here a small HTTP server in the test on 127.0.0.1:5001 in the
//! same namespace. It hands a JWT (RS256, signed with `openssl`, certificate
//! in the `x5c` header and in the registry's root bundle) to clients that
//! present the right basic credentials, and 401 to anyone else.
#![allow(clippy::disallowed_methods)] // tests drive the tools directly

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

use banger_oci::{Credentials, OciError, PullOptions};
use banger_testkit::NetNs;
use base64::Engine as _;
use common::*;

const TOKEN_ADDR: &str = "127.0.0.1:5001";
const SERVICE: &str = "banger-registry";
const ISSUER: &str = "banger-test-issuer";
const BASIC: &str = "YmFuZ2VyOnRva2VuLXB3"; // banger:token-pw

fn b64url(d: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d)
}

fn openssl(args: &[&str], dir: &Path, stdin: Option<&[u8]>) -> Vec<u8> {
    let mut c = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl (package openssl)");
    let mut si = c.stdin.take().unwrap();
    si.write_all(stdin.unwrap_or_default()).unwrap();
    drop(si);
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
    out.stdout
}

/// A JWT granting pull and push on `repo`, valid for an hour.
fn token(dir: &Path, repo: &str) -> String {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "1",
            "-subj",
            "/CN=banger-token",
        ],
        dir,
        None,
    );
    let der = openssl(&["x509", "-in", "cert.pem", "-outform", "DER"], dir, None);
    let header = serde_json::json!({
        "typ": "JWT", "alg": "RS256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(der)],
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": "banger", "aud": SERVICE,
        "exp": now + 3600, "nbf": now - 60, "iat": now - 60, "jti": "banger-1",
        "access": [{"type": "repository", "name": repo, "actions": ["pull", "push"]}],
    });
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = openssl(
        &["dgst", "-sha256", "-sign", "key.pem"],
        dir,
        Some(input.as_bytes()),
    );
    format!("{input}.{}", b64url(&sig))
}

/// Serve tokens on a listener bound inside `ns`, on a thread of its own
/// (the process exits with the test; nothing else to stop).
fn token_server(ns: &NetNs, token: String) {
    let l = ns.run(|| TcpListener::bind(TOKEN_ADDR).unwrap());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut authorized = false;
            let mut r = BufReader::new(s.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let l = line.to_ascii_lowercase();
                if l.starts_with("authorization:") && line.trim_end().ends_with(BASIC) {
                    authorized = true;
                }
            }
            let (status, body) = if authorized {
                let t = &token;
                (
                    "200 OK",
                    format!(r#"{{"token":"{t}","access_token":"{t}","expires_in":3600}}"#),
                )
            } else {
                (
                    "401 Unauthorized",
                    r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#.to_string(),
                )
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
}

#[test]
fn bearer_token_flow_with_docker_config_credentials() {
    require_tools(&["openssl"]);
    let root = tempfile::tempdir().unwrap();
    let t = token(root.path(), "tok");
    let ns = NetNs::new();
    token_server(&ns, t.clone());
    let extra = format!(
        "auth:\n  token:\n    realm: http://{TOKEN_ADDR}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        root.path().join("cert.pem").display()
    );
    let reg = Registry::start_with(ns, root, &extra, Some(("banger", "token-pw")));
    let src = tempfile::tempdir().unwrap();
    let l = layer(&[Item::File("via-token", b"bearer ok", 0o640, 3, 4)]);
    write_layout(src.path(), "v1", &[gz(l)], "amd64", false);
    reg.push(src.path(), "tok", "v1");

    // Anonymous: the token service refuses, so does the pull.
    let staging = tempfile::tempdir().unwrap();
    let e = reg
        .pull("tok", "v1", &insecure(), staging.path())
        .unwrap_err();
    assert!(matches!(e, OciError::Manifest { .. }), "{e:?}");

    // Credentials from a docker config file; the client trades them for a
    // token at the realm the registry names.
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("config.json");
    std::fs::write(
        &cfg,
        format!(r#"{{"auths":{{"http://127.0.0.1:5000/v2/":{{"auth":"{BASIC}"}}}}}}"#),
    )
    .unwrap();
    let opts = PullOptions {
        docker_config: Some(cfg),
        ..insecure()
    };
    let img = reg.pull("tok", "v1", &opts, staging.path()).unwrap();
    let s = stat(&img.ext4_path, "/via-token").unwrap();
    assert_eq!((s.mode, s.uid, s.gid), (0o640, 3, 4));

    // A ready token is used as is.
    let staging = tempfile::tempdir().unwrap();
    let ready = PullOptions {
        credentials: Some(Credentials::Bearer(t)),
        ..insecure()
    };
    let img = reg.pull("tok", "v1", &ready, staging.path()).unwrap();
    assert_eq!(debugfs(&img.ext4_path, "cat /via-token"), "bearer ok");
    let staging = tempfile::tempdir().unwrap();
    let bad = PullOptions {
        credentials: Some(Credentials::Bearer("not-a-jwt".into())),
        ..insecure()
    };
    assert!(reg.pull("tok", "v1", &bad, staging.path()).is_err());
}
