//! Verified downloads against a real HTTP server on 127.0.0.1 (started by
//! the test; nothing leaves loopback), and the shipped catalog.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;

use banger_imagebuild::fetch::FetchError;
use banger_imagebuild::{Catalog, Progress, fetch_verified};
use sha2::Digest as _;

/// Serve `body` for every GET of `/file`, 404 otherwise, for `requests`
/// connections; returns the base URL.
fn serve(body: Vec<u8>, requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for _ in 0..requests {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
            }
            if line.starts_with("GET /file ") {
                write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .unwrap();
                s.write_all(&body).unwrap();
            } else {
                s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .unwrap();
            }
        }
    });
    format!("http://{addr}")
}

fn sha(b: &[u8]) -> String {
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn dir_names(d: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn a_verified_download_is_published_whole() {
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let base = serve(body.clone(), 1);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("kernel");
    let mut events = Vec::new();
    fetch_verified(
        &format!("{base}/file"),
        &sha(&body).to_uppercase(),
        &dest,
        &mut |p| events.push(p),
    )
    .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(dir_names(dir.path()), ["kernel"]);
    assert_eq!(
        events.last(),
        Some(&Progress::Bytes {
            done: body.len() as u64,
            total: Some(body.len() as u64)
        })
    );
    assert!(events.len() >= 3, "progress every MiB: {events:?}");
}

#[test]
fn a_digest_mismatch_names_url_and_digests_and_leaves_no_file() {
    let body = b"not the kernel you wanted".to_vec();
    let base = serve(body.clone(), 1);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("kernel");
    let want = "0".repeat(64);
    let url = format!("{base}/file");
    let err = fetch_verified(&url, &want, &dest, &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FetchError::Mismatch { .. }), "{msg}");
    assert!(
        msg.contains(&url) && msg.contains(&want) && msg.contains(&sha(&body)),
        "{msg}"
    );
    assert!(
        dir_names(dir.path()).is_empty(),
        "left behind: {:?}",
        dir_names(dir.path())
    );
}

#[test]
fn http_errors_and_bad_digests_leave_no_file() {
    let base = serve(Vec::new(), 1);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("kernel");
    let err = fetch_verified(
        &format!("{base}/missing"),
        &"a".repeat(64),
        &dest,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("/missing"), "{err}");
    let err = fetch_verified(&format!("{base}/file"), "abc", &dest, &mut |_| {}).unwrap_err();
    assert!(matches!(err, FetchError::BadDigest(_)), "{err}");
    assert!(dir_names(dir.path()).is_empty());
}

#[test]
fn catalog_files_load_and_errors_name_the_file_and_entry() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("kernels.toml");
    std::fs::write(
        &f,
        "version = 1\n[[kernel]]\nname = \"mine\"\narch = \"x86_64\"\nkind = \"vmlinux\"\nurl = \"http://127.0.0.1/v\"\nsha256 = \"nope\"\n",
    )
    .unwrap();
    let err = Catalog::load(&f).unwrap_err().to_string();
    assert!(
        err.contains("kernels.toml") && err.contains("entry 0 (\"mine\")"),
        "{err}"
    );
    assert!(Catalog::builtin().get("debian-bookworm-cloud").is_some());
}

/// Serve a local file's bytes (the real Debian kernel package) the same way.
fn serve_file(path: &std::path::Path) -> String {
    serve(std::fs::read(path).unwrap(), 1)
}

#[test]
fn a_deb_catalog_entry_pulls_into_kernel_and_initramfs() {
    let deb = common::kernel_deb();
    let bytes = std::fs::read(&deb).unwrap();
    let base = serve_file(&deb);
    let text = format!(
        "version = 1\n[[kernel]]\nname = \"local-deb\"\narch = \"x86_64\"\nkind = \"deb\"\nurl = \"{base}/file\"\nsha256 = \"{}\"\n",
        sha(&bytes)
    );
    let cat = Catalog::parse(&text, "local").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut steps = Vec::new();
    let pulled =
        banger_imagebuild::pull_kernel(cat.get("local-deb").unwrap(), dir.path(), &mut |p| {
            if let Progress::Step(s) = p {
                steps.push(s)
            }
        })
        .unwrap();
    assert!(pulled.kernel.is_file());
    assert!(pulled.initrd.as_ref().unwrap().is_file());
    assert!(pulled.version.as_ref().unwrap().ends_with("-cloud-amd64"));
    // Only the two boot files are left: no package, no temp dir.
    assert_eq!(
        dir_names(dir.path()).len(),
        2,
        "{:?}",
        dir_names(dir.path())
    );
    assert!(steps.iter().any(|s| s.contains("initramfs")), "{steps:?}");
}
