//! Bundle pull, kernel pull from a catalog and work seed refresh, end to
//! end: the real `banger` CLI → a real `bangerd --dev` in a throwaway
//! network namespace → files on disk. Downloads come from an HTTP server
//! this test runs on 127.0.0.1 inside that namespace; nothing leaves it.
#![allow(clippy::disallowed_methods)] // tests spawn the binaries under test directly

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use banger_imagebuild::bundle::{self, BundleFiles, Manifest};
use banger_testkit::*;
use serde_json::Value;

/// A daemon in `ns` on state under `dir`.
struct Daemon {
    proc: Proc,
    socket: PathBuf,
    state: PathBuf,
}

fn start_daemon(ns: &NetNs, dir: &Path) -> Daemon {
    let d = NsDaemon::start(ns, dir);
    let state = d.state();
    Daemon {
        proc: d.proc,
        socket: d.socket,
        state,
    }
}

impl Daemon {
    fn run(&self, cwd: &Path, args: &[&str]) -> Output {
        Command::new(bin("banger"))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--json")
            .args(args)
            .current_dir(cwd)
            .output()
            .expect("running banger")
    }

    fn ok(&self, cwd: &Path, args: &[&str]) -> Value {
        let out = self.run(cwd, args);
        assert!(
            out.status.success(),
            "banger {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON on stdout")
    }

    /// (error code, joined messages) of a command that must fail.
    fn err(&self, cwd: &Path, args: &[&str]) -> (String, String) {
        let out = self.run(cwd, args);
        assert!(!out.status.success(), "banger {args:?} should have failed");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON error for {args:?} ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let msgs: Vec<&str> = v["error"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        (
            v["error"]["code"].as_str().unwrap().to_owned(),
            msgs.join(": "),
        )
    }

    fn names(&self, cwd: &Path, what: &str) -> Vec<String> {
        self.ok(cwd, &[what, "ls"])
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Entries of both staging directories (none once a request ended),
    /// and the number of image and kernel directories.
    fn on_disk(&self) -> (Vec<PathBuf>, usize, usize) {
        let list = |d: PathBuf| -> Vec<PathBuf> {
            std::fs::read_dir(d)
                .map(|rd| rd.map(|e| e.unwrap().path()).collect())
                .unwrap_or_default()
        };
        let mut staging = list(self.state.join("images/.staging"));
        staging.extend(list(self.state.join("kernels/.staging")));
        let ids = |d: &str| {
            list(self.state.join(d))
                .into_iter()
                .filter(|p| !p.ends_with(".staging"))
                .count()
        };
        (staging, ids("images"), ids("kernels"))
    }
}

/// Path → (body, bytes to send before closing when cut short).
type Served = Arc<Mutex<BTreeMap<String, (Vec<u8>, Option<usize>)>>>;

/// Files served over HTTP on 127.0.0.1 inside a namespace. A path whose
/// body is registered with [`Server::cut`] is announced whole but the
/// connection closes after that many bytes.
#[derive(Clone)]
struct Server {
    base: String,
    files: Served,
}

impl Server {
    fn start(ns: &NetNs) -> Server {
        let listener = ns.run(|| TcpListener::bind("127.0.0.1:0").unwrap());
        let base = format!("http://{}", listener.local_addr().unwrap());
        let files: Served = Arc::default();
        let served = Arc::clone(&files);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { return };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                let entry = served.lock().unwrap().get(&path).cloned();
                let _ = match entry {
                    Some((body, cut)) => {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        s.write_all(head.as_bytes())
                            .and_then(|()| s.write_all(&body[..cut.unwrap_or(body.len())]))
                    }
                    None => s.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                };
            }
        });
        Server { base, files }
    }

    fn put(&self, path: &str, body: Vec<u8>) -> String {
        self.files
            .lock()
            .unwrap()
            .insert(path.to_owned(), (body, None));
        format!("{}{path}", self.base)
    }

    fn cut(&self, path: &str, body: Vec<u8>, after: usize) -> String {
        self.files
            .lock()
            .unwrap()
            .insert(path.to_owned(), (body, Some(after)));
        format!("{}{path}", self.base)
    }
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn write_bundle_file(out: &Path, files: &BundleFiles<'_>, zstd: Option<i32>) {
    let f = std::fs::File::create(out).unwrap();
    bundle::write_bundle(std::io::BufWriter::new(f), files, zstd).unwrap();
}

/// A tar of (name, kind, body), built with the tar crate; names are put in
/// the header as given (the crate's path setter refuses `..`).
fn raw_tar(members: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, body) in members {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        let raw = name.as_bytes();
        h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
        h.set_cksum();
        b.append(&h, *body).unwrap();
    }
    b.into_inner().unwrap()
}

fn debugfs_cat(image: &Path, file: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {file}")])
        .arg(image)
        .output()
        .expect("running debugfs (package e2fsprogs)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bundles_pull_from_files_and_loopback_http_with_their_kernel() {
    let ns = NetNs::new();
    let tmp = shared_tempdir();
    let w = tmp.path();
    let d = start_daemon(&ns, w);
    let server = Server::start(&ns);

    mkfs_ext4(&w.join("root.ext4"), "8M");
    fake_kernel(&w.join("vmlinuz"), 0x11);
    std::fs::write(w.join("initrd.img"), b"an initramfs").unwrap();
    let full = BundleFiles {
        name: Some("web"),
        rootfs: &w.join("root.ext4"),
        kernel: Some(&w.join("vmlinuz")),
        initrd: Some(&w.join("initrd.img")),
    };

    // A local, zstd-compressed bundle with kernel and initrd, named by the
    // CLI with a ./ path; the image is named from the manifest.
    write_bundle_file(&w.join("web.bundle.tar.zst"), &full, Some(3));
    let img = d.ok(w, &["image", "pull", "./web.bundle.tar.zst"]);
    assert_eq!(img["name"], "web", "{img}");
    assert_eq!(img["source"], "bundle");
    assert_eq!(img["kernel"], "web-kernel");
    assert_eq!(
        img["source_ref"],
        w.join("web.bundle.tar.zst").display().to_string()
    );
    let rootfs = PathBuf::from(img["rootfs"].as_str().unwrap());
    assert_eq!(
        std::fs::read(&rootfs).unwrap(),
        std::fs::read(w.join("root.ext4")).unwrap()
    );
    let seed = PathBuf::from(img["work_seed"].as_str().expect("every image has a seed"));
    assert!(seed.is_file());
    let k = &d.ok(w, &["kernel", "ls"])[0];
    assert_eq!(
        (k["name"].as_str(), k["source"].as_str()),
        (Some("web-kernel"), Some("bundle"))
    );
    assert_eq!(
        std::fs::read(k["initrd"].as_str().unwrap()).unwrap(),
        b"an initramfs"
    );
    assert_eq!(img["initrd"], k["initrd"]);

    // The same content over loopback HTTP, plain tar, under another name:
    // the identical kernel is reused, not published twice.
    let mut plain = Vec::new();
    bundle::write_bundle(&mut plain, &full, None).unwrap();
    let url = server.put("/b/web.tar", plain);
    let img2 = d.ok(w, &["image", "pull", &url, "--name", "web2"]);
    assert_eq!(img2["kernel"], "web-kernel");
    assert_eq!(img2["source_ref"], url.as_str());
    assert_eq!(d.names(w, "kernel"), ["web-kernel"]);

    // A file:// URL of a bundle without a kernel: --kernel boots it, its
    // initrd becomes the image's own.
    fake_kernel(&w.join("other"), 0x22);
    d.ok(w, &["kernel", "import", "other"]);
    let bare = BundleFiles {
        name: None,
        rootfs: &w.join("root.ext4"),
        kernel: None,
        initrd: Some(&w.join("initrd.img")),
    };
    write_bundle_file(&w.join("tools.tar"), &bare, None);
    let file_url = format!("file://{}", w.join("tools.tar").display());
    let img3 = d.ok(w, &["image", "pull", &file_url, "--kernel", "other"]);
    assert_eq!(
        (img3["name"].as_str(), img3["kernel"].as_str()),
        (Some("tools"), Some("other"))
    );
    let own_initrd = rootfs
        .parent()
        .unwrap()
        .with_file_name(img3["id"].as_str().unwrap())
        .join("initrd");
    assert_eq!(img3["initrd"], own_initrd.display().to_string());
    // Without --kernel and without a `debian` image there is no kernel.
    let (code, msg) = d.err(w, &["image", "pull", &file_url, "--name", "t2"]);
    assert_eq!(code, "unavailable", "{msg}");
    assert!(msg.contains("--kernel"), "{msg}");

    // Taken name: refused, nothing new.
    let (code, msg) = d.err(w, &["image", "pull", &url, "--name", "web"]);
    assert_eq!(code, "already_exists", "{msg}");
    assert_eq!(d.on_disk(), (vec![], 3, 2));
}

#[test]
fn bad_bundles_name_the_member_and_publish_nothing() {
    let ns = NetNs::new();
    let tmp = shared_tempdir();
    let w = tmp.path();
    let d = start_daemon(&ns, w);
    let server = Server::start(&ns);
    fake_kernel(&w.join("k"), 0x33);
    d.ok(w, &["kernel", "import", "k"]);
    mkfs_ext4(&w.join("root.ext4"), "8M");
    let root = std::fs::read(w.join("root.ext4")).unwrap();
    let manifest_for = |members: &[(&str, &[u8])]| -> Vec<u8> {
        let m = Manifest {
            format: bundle::FORMAT.into(),
            version: bundle::FORMAT_VERSION,
            name: Some("bad".into()),
            members: members
                .iter()
                .map(|(n, b)| {
                    (
                        (*n).to_string(),
                        bundle::MemberDigest {
                            sha256: sha256(b),
                            size: b.len() as u64,
                        },
                    )
                })
                .collect(),
        };
        serde_json::to_vec(&m).unwrap()
    };
    use tar::EntryType::{Regular, Symlink};
    let good = manifest_for(&[("rootfs.ext4", &root)]);
    let mut flipped = root.clone();
    flipped[4096] ^= 0xff;
    let not_ext4 = vec![0x5au8; 64 << 10];
    let mut whole = Vec::new();
    bundle::write_bundle(
        &mut whole,
        &BundleFiles {
            name: Some("cut"),
            rootfs: &w.join("root.ext4"),
            kernel: None,
            initrd: None,
        },
        None,
    )
    .unwrap();
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "sha-mismatch.tar",
            raw_tar(&[
                ("manifest.json", Regular, &good),
                ("rootfs.ext4", Regular, &flipped),
            ]),
            "bad_request",
            "\"rootfs.ext4\": sha256 mismatch",
        ),
        (
            "traversal.tar",
            raw_tar(&[
                ("manifest.json", Regular, &good),
                ("../rootfs.ext4", Regular, &root),
            ]),
            "bad_request",
            "\"../rootfs.ext4\": `..` components are refused",
        ),
        (
            "link.tar",
            raw_tar(&[
                ("manifest.json", Regular, &good),
                ("rootfs.ext4", Symlink, b""),
            ]),
            "bad_request",
            "\"rootfs.ext4\": links are refused",
        ),
        (
            "no-rootfs.tar",
            raw_tar(&[
                ("manifest.json", Regular, &manifest_for(&[("kernel", b"k")])),
                ("kernel", Regular, b"k"),
            ]),
            "bad_request",
            "no \"rootfs.ext4\" member",
        ),
        (
            "unknown.tar",
            raw_tar(&[
                ("manifest.json", Regular, &good),
                ("rootfs.ext4", Regular, &root),
                ("etc-passwd", Regular, b"root:x:0:0"),
            ]),
            "bad_request",
            "\"etc-passwd\": unknown member",
        ),
        (
            "truncated.tar",
            whole[..whole.len() / 2].to_vec(),
            "bad_request",
            "\"rootfs.ext4\"",
        ),
        (
            "not-ext4.tar",
            raw_tar(&[
                (
                    "manifest.json",
                    Regular,
                    &manifest_for(&[("rootfs.ext4", &not_ext4)]),
                ),
                ("rootfs.ext4", Regular, &not_ext4),
            ]),
            "bad_request",
            "(member rootfs.ext4) is not an ext4 filesystem",
        ),
    ];
    for (file, bytes, want_code, needle) in &cases {
        let path = w.join(file);
        std::fs::write(&path, bytes).unwrap();
        let reference = path.display().to_string();
        let (code, msg) = d.err(w, &["image", "pull", &reference, "--kernel", "k"]);
        assert_eq!(&code, want_code, "{file}: {msg}");
        assert!(msg.contains(needle), "{file}: {msg:?} lacks {needle:?}");
        assert!(
            msg.contains(&reference),
            "{file}: {msg} does not name the bundle"
        );
        assert_eq!(d.on_disk(), (vec![], 0, 1), "{file} left something");
    }
    // Over HTTP: a sha mismatch, and a body cut short by the server.
    let url = server.put(
        "/mismatch.tar",
        raw_tar(&[
            ("manifest.json", Regular, &good),
            ("rootfs.ext4", Regular, &flipped),
        ]),
    );
    let (code, msg) = d.err(w, &["image", "pull", &url, "--kernel", "k"]);
    assert_eq!(code, "bad_request", "{msg}");
    assert!(
        msg.contains("sha256 mismatch") && msg.contains(&url),
        "{msg}"
    );
    let url = server.cut("/cut.tar", whole.clone(), whole.len() / 2);
    let (_, msg) = d.err(w, &["image", "pull", &url, "--kernel", "k"]);
    assert!(
        msg.contains("\"rootfs.ext4\"") && msg.contains(&url),
        "{msg}"
    );
    let url = format!("{}/missing.tar", server.base);
    let (code, msg) = d.err(w, &["image", "pull", &url, "--kernel", "k"]);
    assert_eq!(code, "unavailable", "{msg}");
    assert!(msg.contains(&url), "{msg}");

    assert_eq!(d.names(w, "image"), Vec::<String>::new());
    assert_eq!(d.names(w, "kernel"), ["k"]);
    assert_eq!(d.on_disk(), (vec![], 0, 1));
}

#[test]
fn kernel_pull_from_a_loopback_catalog() {
    let ns = NetNs::new();
    let tmp = shared_tempdir();
    let w = tmp.path();
    let d = start_daemon(&ns, w);
    let server = Server::start(&ns);
    fake_kernel(&w.join("bz"), 0x44);
    let kernel = std::fs::read(w.join("bz")).unwrap();
    let initrd = b"catalog initrd".to_vec();
    let k_url = server.put("/k/bzImage", kernel.clone());
    let i_url = server.put("/k/initrd", initrd.clone());
    let entry = |name: &str, sha: &str, extra: &str| {
        format!(
            "[[kernel]]\nname = \"{name}\"\narch = \"x86_64\"\nkind = \"bzimage\"\nurl = \"{k_url}\"\nsha256 = \"{sha}\"\n{extra}\n"
        )
    };
    let catalog = format!(
        "version = 1\n{}{}",
        entry(
            "test-cloud",
            &sha256(&kernel),
            &format!(
                "initrd = {{ url = \"{i_url}\", sha256 = \"{}\" }}",
                sha256(&initrd)
            ),
        ),
        entry("test-bad", &"0".repeat(64), ""),
    );
    std::fs::write(w.join("kernels.toml"), catalog).unwrap();

    let k = d.ok(
        w,
        &["kernel", "pull", "test-cloud", "--catalog", "kernels.toml"],
    );
    assert_eq!(k["name"], "test-cloud");
    assert_eq!(k["source"], "pull");
    assert_eq!(k["arch"], "x86_64");
    assert_eq!(k["sha256"], sha256(&kernel));
    assert_eq!(
        std::fs::read(k["kernel"].as_str().unwrap()).unwrap(),
        kernel
    );
    assert_eq!(
        std::fs::read(k["initrd"].as_str().unwrap()).unwrap(),
        initrd
    );
    assert_eq!(d.on_disk(), (vec![], 0, 1));

    let cases: [(&[&str], &str, &str); 4] = [
        (
            &["kernel", "pull", "test-bad", "--catalog", "kernels.toml"],
            "bad_request",
            "sha256 mismatch",
        ),
        (
            &["kernel", "pull", "test-cloud", "--catalog", "kernels.toml"],
            "already_exists",
            "\"test-cloud\"",
        ),
        (
            &["kernel", "pull", "nope", "--catalog", "kernels.toml"],
            "not_found",
            "no kernel \"nope\" in the kernel catalog",
        ),
        (
            &["kernel", "pull", "x", "--catalog", "missing.toml"],
            "not_found",
            "missing.toml",
        ),
    ];
    for (args, want, needle) in cases {
        let (code, msg) = d.err(w, args);
        assert_eq!(code, want, "{args:?}: {msg}");
        assert!(msg.contains(needle), "{args:?}: {msg:?} lacks {needle:?}");
        assert_eq!(d.on_disk(), (vec![], 0, 1), "{args:?} left something");
    }
    let (_, msg) = d.err(
        w,
        &["kernel", "pull", "test-bad", "--catalog", "kernels.toml"],
    );
    assert!(msg.contains("test-bad") && msg.contains(&k_url), "{msg}");
    assert_eq!(d.names(w, "kernel"), ["test-cloud"]);
}

#[test]
fn refresh_rebuilds_the_work_seed_only_when_its_inputs_change() {
    let ns = NetNs::new();
    let tmp = shared_tempdir();
    let w = tmp.path();
    let d = start_daemon(&ns, w);
    fake_kernel(&w.join("k"), 0x55);
    mkfs_ext4(&w.join("r.ext4"), "8M");
    d.ok(w, &["kernel", "import", "k"]);
    let img = d.ok(
        w,
        &[
            "image", "register", "deb", "--rootfs", "r.ext4", "--kernel", "k",
        ],
    );
    let dir = d.state.join("images").join(img["id"].as_str().unwrap());
    let seed = dir.join("work-seed.ext4");
    assert_eq!(img["work_seed"], seed.display().to_string());
    let hash_file = dir.join("work-seed.sha256");
    let first = std::fs::read_to_string(&hash_file)
        .unwrap()
        .trim()
        .to_owned();
    // banger's client key lives in the daemon's $HOME (the test dir).
    let key_dir = d.state.parent().unwrap().join(".config/banger/ssh");
    let key_path = key_dir.join("id_ed25519.pub");
    let key = std::fs::read_to_string(&key_path).unwrap();
    assert!(debugfs_cat(&seed, "/.ssh/authorized_keys").contains(key.trim()));
    assert!(debugfs_cat(&seed, "/.banger/seed").contains(&first));

    let r = d.ok(w, &["image", "refresh", "deb"]);
    assert_eq!(r["rebuilt"], false, "{r}");
    assert_eq!(r["seed_hash"], first.as_str());
    let out = Command::new(bin("banger"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["image", "refresh", "deb"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "the work seed of image deb is up to date\n"
    );
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = inode(&seed);

    // New inputs: banger's key replaced.
    for ext in ["", ".pub"] {
        std::fs::remove_file(key_dir.join(format!("id_ed25519{ext}"))).unwrap();
    }
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "rotated", "-f"])
        .arg(key_dir.join("id_ed25519"))
        .output()
        .expect("running ssh-keygen (package openssh-client)");
    assert!(out.status.success());
    let new_key = std::fs::read_to_string(&key_path).unwrap();

    let r = d.ok(w, &["image", "refresh", "deb"]);
    assert_eq!(r["rebuilt"], true, "{r}");
    let second = r["seed_hash"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(std::fs::read_to_string(&hash_file).unwrap().trim(), second);
    assert_ne!(inode(&seed), before, "the seed is replaced by a rename");
    let keys = debugfs_cat(&seed, "/.ssh/authorized_keys");
    assert!(
        keys.contains(new_key.trim()) && !keys.contains(key.trim()),
        "{keys}"
    );
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&seed)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "the new seed fails e2fsck -fn");

    // Up to date again; an image without a recorded hash is rebuilt.
    assert_eq!(d.ok(w, &["image", "refresh", "deb"])["rebuilt"], false);
    std::fs::remove_file(&hash_file).unwrap();
    assert_eq!(d.ok(w, &["image", "refresh", "deb"])["rebuilt"], true);
    let (code, _) = d.err(w, &["image", "refresh", "nope"]);
    assert_eq!(code, "not_found");
    assert_eq!(d.on_disk(), (vec![], 1, 1));
    let mut d = d;
    d.proc.terminate();
}
