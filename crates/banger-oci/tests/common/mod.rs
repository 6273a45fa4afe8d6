//! Test support: a real `docker-registry` on 127.0.0.1 inside a throwaway
//! network namespace, OCI layouts written by the test and pushed with
//! `skopeo copy`, and `debugfs` readers for the resulting ext4 image.
#![allow(dead_code, clippy::disallowed_methods)] // tests spawn the tools they drive directly

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use banger_oci::{OciError, PullOptions, PulledImage};
use banger_testkit::{NetNs, Proc};
use sha2::{Digest as _, Sha256};

pub const ADDR: &str = "127.0.0.1:5000";

/// Fail (never skip) when a tool the test drives is missing.
pub fn require_tools(tools: &[&str]) {
    banger_testkit::require_root();
    for t in tools {
        assert!(
            banger_host::runner::resolve(t.as_ref()).is_some(),
            "this test needs `{t}`: apt-get install -y docker-registry skopeo apache2-utils e2fsprogs"
        );
    }
}

/// A registry process in its own network namespace. Dropping it stops the
/// process (by its pid), then deletes the namespace.
pub struct Registry {
    proc: Option<Proc>,
    pub ns: NetNs,
    pub root: tempfile::TempDir,
    pub auth: Option<(String, String)>,
}

impl Registry {
    pub fn start(auth: Option<(&str, &str)>) -> Registry {
        let root = tempfile::tempdir().unwrap();
        let mut extra = String::new();
        if let Some((u, p)) = auth {
            let htpasswd = root.path().join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-B", "-b", "-c"])
                .arg(&htpasswd)
                .args([u, p])
                .output()
                .unwrap();
            assert!(out.status.success(), "htpasswd: {out:?}");
            extra = format!(
                "auth:\n  htpasswd:\n    realm: banger-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        Registry::start_with(NetNs::new(), root, &extra, auth)
    }

    /// Start with `extra` appended to the registry configuration (an
    /// `auth:` section); `push_creds` are what skopeo pushes with.
    pub fn start_with(
        ns: NetNs,
        root: tempfile::TempDir,
        extra: &str,
        push_creds: Option<(&str, &str)>,
    ) -> Registry {
        require_tools(&["docker-registry", "skopeo", "htpasswd", "ip"]);
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {ADDR}\n",
            root.path().join("data").display()
        );
        cfg.push_str(extra);
        let cfg_path = root.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let mut cmd = ns.exec("docker-registry");
        cmd.arg("serve").arg(&cfg_path);
        let mut proc = Proc::spawn("docker-registry", cmd);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if ns.run(|| std::net::TcpStream::connect(ADDR).is_ok()) {
                break;
            }
            assert!(
                proc.is_running(),
                "docker-registry exited: {:?}",
                proc.wait(Duration::from_secs(1))
            );
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {ADDR}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            proc: Some(proc),
            ns,
            root,
            auth: push_creds.map(|(u, p)| (u.into(), p.into())),
        }
    }

    /// Push the OCI layout `layout` (tag `tag`) as `repo:tag`.
    pub fn push(&self, layout: &Path, repo: &str, tag: &str) {
        self.push_with(layout, repo, tag, &[]);
    }

    /// [`Registry::push`] with extra `skopeo copy` flags.
    pub fn push_with(&self, layout: &Path, repo: &str, tag: &str, flags: &[&str]) {
        let mut cmd = self.ns.exec("skopeo");
        cmd.args(["copy", "--all", "--quiet", "--dest-tls-verify=false"]);
        cmd.args(flags);
        if let Some((u, p)) = &self.auth {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        cmd.arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{ADDR}/{repo}:{tag}"));
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The registry's stored file for a blob.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.root
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Pull `repo:tag` from inside the namespace, reporting progress.
    pub fn pull_progress(
        &self,
        repo: &str,
        tag: &str,
        opts: &PullOptions,
        staging: &Path,
        progress: banger_oci::ProgressFn,
    ) -> Result<PulledImage, OciError> {
        let reference = format!("{ADDR}/{repo}:{tag}");
        self.ns
            .run(|| banger_oci::pull_to_ext4_blocking(&reference, opts, staging, progress))
    }

    /// Pull `repo:tag` from inside the namespace.
    pub fn pull(
        &self,
        repo: &str,
        tag: &str,
        opts: &PullOptions,
        staging: &Path,
    ) -> Result<PulledImage, OciError> {
        let reference = format!("{ADDR}/{repo}:{tag}");
        self.ns.run(|| {
            banger_oci::pull_to_ext4_blocking(&reference, opts, staging, banger_oci::no_progress())
        })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Stop the process before the namespace goes.
        drop(self.proc.take());
    }
}

pub fn insecure() -> PullOptions {
    PullOptions {
        insecure: true,
        headroom_bytes: 8 << 20,
        ..Default::default()
    }
}

/// One tar entry of a hand-built layer.
pub enum Item<'a> {
    Dir(&'a str, u32, u64, u64),
    File(&'a str, &'a [u8], u32, u64, u64),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    CharDev(&'a str, u32, u32, u32),
    Fifo(&'a str),
    /// File with PAX xattrs.
    XattrFile(&'a str, &'a [u8], &'a [(&'a str, &'a [u8])]),
    /// A regular file whose header claims more bytes than follow.
    TruncatedFile(&'a str, u64),
}

fn raw_header(
    ty: tar::EntryType,
    name: &str,
    link: &str,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(ty);
    // Raw bytes: the tar crate's setters refuse `..`, and these tests need it.
    let old = h.as_old_mut();
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

/// Build an uncompressed layer tar.
pub fn layer(items: &[Item]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for it in items {
        use tar::EntryType as T;
        match it {
            Item::Dir(n, m, u, g) => {
                let h = raw_header(T::Directory, n, "", *m, *u, *g, 0);
                b.append(&h, &[][..]).unwrap();
            }
            Item::File(n, data, m, u, g) => {
                let h = raw_header(T::Regular, n, "", *m, *u, *g, data.len() as u64);
                b.append(&h, *data).unwrap();
            }
            Item::Symlink(n, t) => {
                let h = raw_header(T::Symlink, n, t, 0o777, 0, 0, 0);
                b.append(&h, &[][..]).unwrap();
            }
            Item::Hardlink(n, t) => {
                let h = raw_header(T::Link, n, t, 0o644, 0, 0, 0);
                b.append(&h, &[][..]).unwrap();
            }
            Item::CharDev(n, m, maj, min) => {
                let mut h = raw_header(T::Char, n, "", *m, 0, 0, 0);
                h.set_device_major(*maj).unwrap();
                h.set_device_minor(*min).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            Item::Fifo(n) => {
                let h = raw_header(T::Fifo, n, "", 0o644, 0, 0, 0);
                b.append(&h, &[][..]).unwrap();
            }
            Item::XattrFile(n, data, xattrs) => {
                let pax: Vec<(String, &[u8])> = xattrs
                    .iter()
                    .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
                    .collect();
                b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))
                    .unwrap();
                let h = raw_header(T::Regular, n, "", 0o755, 0, 0, data.len() as u64);
                b.append(&h, *data).unwrap();
            }
            Item::TruncatedFile(n, claimed) => {
                let h = raw_header(T::Regular, n, "", 0o644, 0, 0, *claimed);
                let mut v = std::mem::take(b.get_mut());
                v.extend_from_slice(h.as_bytes());
                v.extend_from_slice(&[b'x'; 1000]);
                // No end-of-archive marker: the archive simply stops.
                return v;
            }
        }
    }
    b.into_inner().unwrap()
}

pub fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(tar).unwrap();
    e.finish().unwrap()
}

pub fn zstd(tar: &[u8]) -> Vec<u8> {
    zstd::encode_all(tar, 3).unwrap()
}

pub fn sha(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// A layer blob: (bytes as stored, media type, uncompressed tar for diff_id).
pub struct Blob {
    pub data: Vec<u8>,
    pub media_type: &'static str,
    pub diff_id: String,
}

pub fn plain(tar: Vec<u8>) -> Blob {
    Blob {
        diff_id: sha(&tar),
        data: tar,
        media_type: "application/vnd.oci.image.layer.v1.tar",
    }
}

pub fn gz(tar: Vec<u8>) -> Blob {
    Blob {
        diff_id: sha(&tar),
        data: gzip(&tar),
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
    }
}

pub fn zst(tar: Vec<u8>) -> Blob {
    Blob {
        diff_id: sha(&tar),
        data: zstd(&tar),
        media_type: "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

fn put_blob(layout: &Path, data: &[u8]) -> (String, usize) {
    let d = sha(data);
    let p = layout
        .join("blobs/sha256")
        .join(d.strip_prefix("sha256:").unwrap());
    std::fs::write(p, data).unwrap();
    (d, data.len())
}

/// Write an OCI image layout with one image (`arch`) tagged `tag`; with
/// `as_index`, the tag names an index holding that one manifest.
pub fn write_layout(
    layout: &Path,
    tag: &str,
    blobs: &[Blob],
    arch: &str,
    as_index: bool,
) -> String {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let diff_ids: Vec<&str> = blobs.iter().map(|b| b.diff_id.as_str()).collect();
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/sbin/init"], "Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (cd, cs) = put_blob(layout, config.to_string().as_bytes());
    let layers: Vec<serde_json::Value> = blobs
        .iter()
        .map(|b| {
            let (d, s) = put_blob(layout, &b.data);
            serde_json::json!({"mediaType": b.media_type, "digest": d, "size": s})
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": layers,
    });
    let (md, ms) = put_blob(layout, manifest.to_string().as_bytes());
    let mut top = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
    });
    if as_index {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
                "platform": {"architecture": arch, "os": "linux"},
            }],
        });
        let (id, is) = put_blob(layout, index.to_string().as_bytes());
        top = serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": id, "size": is,
        });
    }
    top["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
    let idx = serde_json::json!({"schemaVersion": 2, "manifests": [top]});
    std::fs::write(layout.join("index.json"), idx.to_string()).unwrap();
    md
}

/// `debugfs -R CMD IMAGE` stdout.
pub fn debugfs(image: &Path, cmd: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(cmd)
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success(), "debugfs {cmd}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (type, mode perm bits, uid, gid, links, inode) from `debugfs stat`.
#[derive(Debug, PartialEq, Eq)]
pub struct Stat {
    pub ty: String,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub links: u64,
    pub inode: u64,
    pub raw: String,
}

pub fn stat(image: &Path, path: &str) -> Option<Stat> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("stat \"{path}\""))
        .arg(image)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    if !s.contains("Inode:") {
        return None;
    }
    let field = |k: &str| -> String {
        let i = s.find(k).unwrap_or_else(|| panic!("{k} in {s}")) + k.len();
        s[i..].split_whitespace().next().unwrap().to_string()
    };
    Some(Stat {
        ty: field("Type:"),
        mode: u32::from_str_radix(&field("Mode:"), 8).unwrap(),
        uid: field("User:").parse().unwrap(),
        gid: field("Group:").parse().unwrap(),
        links: field("Links:").parse().unwrap(),
        inode: field("Inode:").parse().unwrap(),
        raw: s,
    })
}

/// Names in a directory of the image (without `.`/`..`).
pub fn ls(image: &Path, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = debugfs(image, &format!("ls -p \"{dir}\""))
        .lines()
        .filter_map(|l| l.split('/').nth(5).map(str::to_string))
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .collect();
    v.sort();
    v
}
