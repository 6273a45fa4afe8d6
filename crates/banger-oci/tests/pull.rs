//! Pulls from a real `docker-registry` on loopback in a throwaway network
//! namespace, of images these tests build and push with `skopeo`; the ext4
//! result is read back with `debugfs` and checked with `e2fsck -fn`.
#![allow(clippy::disallowed_methods)] // tests drive the tools directly

mod common;

use std::path::Path;

use banger_oci::{BootRequirement, Credentials, OciError, Progress, PullOptions, Stage};
use common::*;

fn full_image(layout: &Path) -> String {
    let l1 = layer(&[
        Item::Dir("etc/", 0o755, 0, 0),
        Item::File("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644, 0, 0),
        Item::File("etc/removed", b"gone in layer 2", 0o644, 0, 0),
        Item::Dir("opt/", 0o755, 0, 0),
        Item::File("opt/old", b"hidden by opaque", 0o644, 0, 0),
        Item::Dir("usr/bin/", 0o755, 0, 0),
        Item::File("usr/bin/su", b"#!/bin/sh\necho su\n", 0o4755, 0, 0),
        Item::Hardlink("usr/bin/su-again", "usr/bin/su"),
        Item::File("usr/bin/wall", b"wall", 0o2755, 0, 5),
        Item::Dir("lib/systemd/", 0o755, 0, 0),
        Item::File("lib/systemd/systemd", b"\x7fELF init", 0o755, 0, 0),
        Item::Dir("sbin/", 0o755, 0, 0),
        Item::Symlink("sbin/init", "/lib/systemd/systemd"),
        Item::Symlink("etc/rel", "../../../etc/passwd"),
        Item::Dir("home/user/", 0o750, 1000, 1000),
        Item::File("home/user/secret", b"mine", 0o600, 1000, 1000),
        Item::Dir("tmp/", 0o1777, 0, 0),
    ]);
    let l2 = layer(&[
        Item::File("etc/.wh.removed", b"", 0o644, 0, 0),
        Item::Dir("opt/", 0o755, 0, 0),
        Item::File("opt/.wh..wh..opq", b"", 0o644, 0, 0),
        Item::File("opt/new", b"from layer 2", 0o640, 0, 42),
        Item::File("etc/passwd", b"root:x:0:0::/root:/bin/bash\n", 0o644, 0, 0),
        Item::Dir("dev/", 0o755, 0, 0),
        Item::CharDev("dev/null", 0o666, 1, 3),
        Item::Fifo("dev/fifo"),
    ]);
    let l3 = layer(&[
        Item::Dir("usr/sbin/", 0o755, 0, 0),
        Item::XattrFile(
            "usr/sbin/sshd",
            b"sshd binary",
            &[
                ("security.capability", b"\x01\x00\x00\x02\x00\x04\x00\x00"),
                ("user.banger", b"yes"),
                ("system.nfs4_acl", b"dropped"),
            ],
        ),
    ]);
    write_layout(layout, "v1", &[gz(l1), zst(l2), plain(l3)], "amd64", true)
}

#[test]
fn multi_layer_image_keeps_ownership_modes_links_and_whiteouts() {
    let reg = Registry::start(None);
    let src = tempfile::tempdir().unwrap();
    full_image(src.path());
    reg.push(src.path(), "full", "v1");
    let staging = tempfile::tempdir().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let progress: banger_oci::ProgressFn = std::sync::Arc::new(move |p: &Progress| {
        sink.lock().unwrap().push(p.clone());
    });
    let img = reg
        .pull_progress("full", "v1", &insecure(), staging.path(), progress)
        .unwrap_or_else(|e| panic!("pull failed: {e:?}"));
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].stage, Stage::Manifest);
    for d in &img.layers {
        let last = seen
            .iter()
            .rfind(|p| p.stage == Stage::Download { digest: d.clone() })
            .unwrap_or_else(|| panic!("no download progress for {d}: {seen:?}"));
        assert_eq!(Some(last.done), last.total, "{last:?}");
        assert!(
            seen.iter()
                .any(|p| p.stage == Stage::Flatten { digest: d.clone() })
        );
    }
    assert_eq!(seen.last().unwrap().stage, Stage::BuildExt4);
    // skopeo may re-serialise the manifest, so only its form is known here.
    assert!(
        img.manifest_digest.starts_with("sha256:") && img.manifest_digest.len() == 71,
        "{}",
        img.manifest_digest
    );
    assert_eq!(img.layers.len(), 3);
    assert_eq!(img.config.architecture, "amd64");
    assert_eq!(img.config.cmd, vec!["/sbin/init".to_string()]);
    assert!(img.boot.is_bootable(), "{:?}", img.boot);
    assert_eq!(
        img.boot.init,
        Some(("/sbin/init".into(), "/lib/systemd/systemd".into()))
    );
    assert!(
        img.warnings.iter().any(|w| w.contains("system.nfs4_acl")),
        "{:?}",
        img.warnings
    );
    let ext4 = &img.ext4_path;
    assert_eq!(ext4, &staging.path().join("rootfs.ext4"));
    // Only the image is left in staging.
    let left: Vec<_> = std::fs::read_dir(staging.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec!["rootfs.ext4"]);
    banger_oci::fsck(ext4).unwrap();

    let su = stat(ext4, "/usr/bin/su").unwrap();
    assert_eq!(
        (su.ty.as_str(), su.mode, su.uid, su.gid),
        ("regular", 0o4755, 0, 0)
    );
    let again = stat(ext4, "/usr/bin/su-again").unwrap();
    assert_eq!((again.inode, again.links, su.links), (su.inode, 2, 2));
    let wall = stat(ext4, "/usr/bin/wall").unwrap();
    assert_eq!((wall.mode, wall.gid), (0o2755, 5));
    let home = stat(ext4, "/home/user").unwrap();
    assert_eq!(
        (home.ty.as_str(), home.mode, home.uid, home.gid),
        ("directory", 0o750, 1000, 1000)
    );
    let secret = stat(ext4, "/home/user/secret").unwrap();
    assert_eq!((secret.mode, secret.uid, secret.gid), (0o600, 1000, 1000));
    assert_eq!(stat(ext4, "/tmp").unwrap().mode, 0o1777);
    assert_eq!(debugfs(ext4, "cat /home/user/secret"), "mine");
    assert_eq!(
        debugfs(ext4, "cat /etc/passwd"),
        "root:x:0:0::/root:/bin/bash\n"
    );
    // Whiteout and opaque directory.
    assert!(stat(ext4, "/etc/removed").is_none());
    assert_eq!(ls(ext4, "/opt"), vec!["new"]);
    let new = stat(ext4, "/opt/new").unwrap();
    assert_eq!((new.mode, new.gid), (0o640, 42));
    // Symlinks verbatim, even ones pointing out of the tree.
    let init = stat(ext4, "/sbin/init").unwrap();
    assert_eq!(init.ty, "symlink");
    assert!(
        init.raw.contains("\"/lib/systemd/systemd\""),
        "{}",
        init.raw
    );
    assert!(
        stat(ext4, "/etc/rel")
            .unwrap()
            .raw
            .contains("\"../../../etc/passwd\"")
    );
    // Setting the links' attributes did not touch their targets.
    let systemd = stat(ext4, "/lib/systemd/systemd").unwrap();
    assert_eq!((systemd.ty.as_str(), systemd.mode), ("regular", 0o755));
    assert_eq!(stat(ext4, "/etc/passwd").unwrap().mode, 0o644);
    // Device node and FIFO exist only as inodes in the image.
    let null = stat(ext4, "/dev/null").unwrap();
    assert_eq!((null.ty.as_str(), null.mode), ("character", 0o666));
    assert!(
        null.raw.contains("Device major/minor number: 01:03"),
        "{}",
        null.raw
    );
    assert_eq!(stat(ext4, "/dev/fifo").unwrap().ty, "FIFO");
    // Xattrs that ext4 holds.
    let ea = debugfs(ext4, "ea_list /usr/sbin/sshd");
    assert!(ea.contains("security.capability"), "{ea}");
    assert!(ea.contains("user.banger") && ea.contains("\"yes\""), "{ea}");
    assert!(!ea.contains("nfs4"), "{ea}");
    // The root directory belongs to root.
    let root = stat(ext4, "/").unwrap();
    assert_eq!((root.mode, root.uid, root.gid), (0o755, 0, 0));
}

#[test]
fn boot_check_names_the_missing_ssh_server() {
    let reg = Registry::start(None);
    let src = tempfile::tempdir().unwrap();
    let l = layer(&[
        Item::Dir("sbin/", 0o755, 0, 0),
        Item::File("sbin/init", b"init", 0o755, 0, 0),
        Item::Dir("usr/sbin/", 0o755, 0, 0),
        // Not executable: does not count.
        Item::File("usr/sbin/sshd", b"sshd", 0o644, 0, 0),
    ]);
    write_layout(src.path(), "v1", &[gz(l)], "amd64", false);
    reg.push(src.path(), "nossh", "v1");
    let staging = tempfile::tempdir().unwrap();
    let img = reg
        .pull("nossh", "v1", &insecure(), staging.path())
        .unwrap();
    assert_eq!(img.boot.missing(), vec![BootRequirement::SshServer]);
    let msg = img.boot.message().unwrap();
    assert!(
        msg.contains("no SSH server") && msg.contains("/usr/sbin/sshd"),
        "{msg}"
    );
    assert!(!msg.contains("init"), "{msg}");
    assert!(img.warnings.contains(&msg));
}

#[test]
fn docker_schema2_manifests_pull_too() {
    let reg = Registry::start(None);
    let src = tempfile::tempdir().unwrap();
    let l1 = layer(&[Item::File("a", b"one", 0o644, 0, 0)]);
    let l2 = layer(&[
        Item::File(".wh.a", b"", 0o644, 0, 0),
        Item::File("b", b"two", 0o755, 1, 1),
    ]);
    write_layout(src.path(), "v1", &[gz(l1), gz(l2)], "amd64", false);
    // What Docker Hub and most registries serve.
    reg.push_with(src.path(), "v2s2", "v1", &["--format", "v2s2"]);
    let staging = tempfile::tempdir().unwrap();
    let img = reg.pull("v2s2", "v1", &insecure(), staging.path()).unwrap();
    assert_eq!(ls(&img.ext4_path, "/"), vec!["b", "lost+found"]);
    let b = stat(&img.ext4_path, "/b").unwrap();
    assert_eq!((b.mode, b.uid, b.gid), (0o755, 1, 1));
}

#[test]
fn basic_auth_from_docker_config_and_explicit_credentials() {
    let reg = Registry::start(Some(("banger", "s3cret-pw")));
    let src = tempfile::tempdir().unwrap();
    let l = layer(&[Item::File("hello", b"hi", 0o644, 0, 0)]);
    write_layout(src.path(), "v1", &[gz(l)], "amd64", false);
    reg.push(src.path(), "private", "v1");

    // Anonymous: refused by the registry, and the error names the reference.
    let staging = tempfile::tempdir().unwrap();
    let err = reg
        .pull("private", "v1", &insecure(), staging.path())
        .unwrap_err();
    assert!(matches!(err, OciError::Manifest { .. }), "{err:?}");
    assert!(
        err.to_string().contains("127.0.0.1:5000/private:v1"),
        "{err}"
    );

    // docker config.json with an inline `auth` for this registry.
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("config.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{}"}},"other.example":{{"auth":"eDp5"}}}}}}"#,
            "YmFuZ2VyOnMzY3JldC1wdw==" // banger:s3cret-pw
        ),
    )
    .unwrap();
    let opts = PullOptions {
        docker_config: Some(cfg.clone()),
        ..insecure()
    };
    let img = reg.pull("private", "v1", &opts, staging.path()).unwrap();
    assert_eq!(debugfs(&img.ext4_path, "cat /hello"), "hi");

    // Wrong explicit credentials win over the file and fail.
    let staging = tempfile::tempdir().unwrap();
    let opts = PullOptions {
        docker_config: Some(cfg),
        credentials: Some(Credentials::Basic {
            username: "banger".into(),
            password: "wrong".into(),
        }),
        ..insecure()
    };
    assert!(reg.pull("private", "v1", &opts, staging.path()).is_err());
    assert!(!staging.path().join("rootfs.ext4").exists());
}

#[test]
fn concurrent_pulls_of_one_reference_succeed_independently() {
    let reg = Registry::start(None);
    let src = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..4_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let l = layer(&[
        Item::File("big", &big, 0o644, 0, 0),
        Item::File("small", b"s", 0o4711, 7, 8),
    ]);
    write_layout(src.path(), "v1", &[gz(l)], "amd64", false);
    reg.push(src.path(), "conc", "v1");
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let opts = insecure();
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| reg.pull("conc", "v1", &opts, a.path()));
        let tb = s.spawn(|| reg.pull("conc", "v1", &opts, b.path()));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    for img in [ra.unwrap(), rb.unwrap()] {
        banger_oci::fsck(&img.ext4_path).unwrap();
        let s = stat(&img.ext4_path, "/small").unwrap();
        assert_eq!((s.mode, s.uid, s.gid), (0o4711, 7, 8));
        assert!(
            stat(&img.ext4_path, "/big")
                .unwrap()
                .raw
                .contains("Size: 4000000")
        );
    }
}

#[test]
fn insecure_is_refused_for_a_remote_registry() {
    let staging = tempfile::tempdir().unwrap();
    let err = banger_oci::pull_to_ext4_blocking(
        "registry.example.com/x:1",
        &insecure(),
        staging.path(),
        banger_oci::no_progress(),
    )
    .unwrap_err();
    assert!(
        matches!(err, OciError::InsecureNotLoopback { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("registry.example.com"), "{err}");
    let err = banger_oci::pull_to_ext4_blocking(
        "Bad Ref!",
        &insecure(),
        staging.path(),
        banger_oci::no_progress(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("`Bad Ref!`"), "{err}");
}
