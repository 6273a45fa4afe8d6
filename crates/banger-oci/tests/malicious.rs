//! Hostile images from a real registry: each pull must fail with an error
//! naming the layer and member, leave no image, and write nothing outside
//! its staging directory (checked on a sentinel directory around it).
#![allow(clippy::disallowed_methods)] // tests drive the tools directly

mod common;

use std::path::Path;

use banger_oci::{OciError, PullOptions};
use common::*;

/// Pull `repo:v1` into `<sentinel>/staging`; the pull must fail, and
/// afterwards the sentinel holds only the (empty) staging dir.
fn refused(reg: &Registry, repo: &str, opts: &PullOptions) -> OciError {
    let sentinel = tempfile::tempdir().unwrap();
    let staging = sentinel.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    let err = match reg.pull(repo, "v1", opts, &staging) {
        Ok(img) => panic!("{repo}: pull succeeded: {img:?}"),
        Err(e) => e,
    };
    let names = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(sentinel.path()),
        vec!["staging"],
        "{repo}: wrote beside staging"
    );
    assert!(
        names(&staging).is_empty(),
        "{repo}: staging not cleaned: {:?}",
        names(&staging)
    );
    for p in ["/etc/banger-pwned", "/tmp/banger-pwned", "/banger-pwned"] {
        assert!(!Path::new(p).exists(), "{repo}: {p} was written");
    }
    err
}

/// Push a one-layer image as `repo:v1`; returns the layer digest. Gzip,
/// because skopeo compresses plain tar layers on push (new digest).
fn push_layer(reg: &Registry, repo: &str, tar: Vec<u8>) -> String {
    let src = tempfile::tempdir().unwrap();
    let b = gz(tar);
    let digest = sha(&b.data);
    write_layout(src.path(), "v1", &[b], "amd64", false);
    reg.push(src.path(), repo, "v1");
    digest
}

#[test]
fn path_and_link_attacks_are_refused() {
    let reg = Registry::start(None);
    let opts = insecure();

    let d = push_layer(
        &reg,
        "dotdot",
        layer(&[
            Item::File("ok", b"fine", 0o644, 0, 0),
            Item::File("../../banger-pwned", b"x", 0o644, 0, 0),
        ]),
    );
    let e = refused(&reg, "dotdot", &opts);
    assert!(matches!(e, OciError::BadMemberPath { .. }), "{e:?}");
    let m = e.to_string();
    assert!(m.contains(&d) && m.contains("../../banger-pwned"), "{m}");

    // Also in the middle of a path.
    push_layer(
        &reg,
        "dotdot-mid",
        layer(&[Item::File("a/../../banger-pwned", b"x", 0o644, 0, 0)]),
    );
    assert!(matches!(
        refused(&reg, "dotdot-mid", &opts),
        OciError::BadMemberPath { .. }
    ));

    for (repo, target) in [
        ("abs-link", "/etc"),
        ("up-link", "../.."),
        ("tmp-link", "/tmp"),
    ] {
        let d = push_layer(
            &reg,
            repo,
            layer(&[
                Item::Symlink("a", target),
                Item::File("a/banger-pwned", b"x", 0o644, 0, 0),
            ]),
        );
        let e = refused(&reg, repo, &opts);
        let m = e.to_string();
        assert!(
            matches!(e, OciError::ThroughSymlink { .. }),
            "{repo}: {e:?}"
        );
        assert!(
            m.contains(&d) && m.contains("a/banger-pwned") && m.contains("`/a`"),
            "{m}"
        );
    }

    // Through a symlink set up in a lower layer, and a directory entry too.
    let src = tempfile::tempdir().unwrap();
    write_layout(
        src.path(),
        "v1",
        &[
            gz(layer(&[
                Item::Dir("x/", 0o755, 0, 0),
                Item::Symlink("x/y", "/etc"),
            ])),
            gz(layer(&[Item::Dir("x/y/banger-pwned/", 0o755, 0, 0)])),
        ],
        "amd64",
        false,
    );
    reg.push(src.path(), "lower-link", "v1");
    assert!(matches!(
        refused(&reg, "lower-link", &opts),
        OciError::ThroughSymlink { .. }
    ));

    // A whiteout below a symlink would delete through it.
    push_layer(
        &reg,
        "wh-link",
        layer(&[
            Item::Symlink("a", "/etc"),
            Item::File("a/.wh.passwd", b"", 0o644, 0, 0),
        ]),
    );
    assert!(matches!(
        refused(&reg, "wh-link", &opts),
        OciError::ThroughSymlink { .. }
    ));

    let d = push_layer(
        &reg,
        "hl-out",
        layer(&[Item::Hardlink("h", "../../etc/passwd")]),
    );
    let e = refused(&reg, "hl-out", &opts);
    assert!(matches!(e, OciError::HardlinkOutside { .. }), "{e:?}");
    assert!(e.to_string().contains(&d) && e.to_string().contains("../../etc/passwd"));

    push_layer(
        &reg,
        "hl-later",
        layer(&[
            Item::Hardlink("h", "later"),
            Item::File("later", b"x", 0o644, 0, 0),
        ]),
    );
    let e = refused(&reg, "hl-later", &opts);
    assert!(matches!(e, OciError::HardlinkMissing { .. }), "{e:?}");
    assert!(e.to_string().contains("`later`"), "{e}");

    push_layer(
        &reg,
        "hl-dir",
        layer(&[Item::Dir("d/", 0o755, 0, 0), Item::Hardlink("h", "d")]),
    );
    assert!(matches!(
        refused(&reg, "hl-dir", &opts),
        OciError::HardlinkMissing { .. }
    ));

    push_layer(
        &reg,
        "hl-via-link",
        layer(&[Item::Symlink("s", "/etc"), Item::Hardlink("h", "s/passwd")]),
    );
    assert!(matches!(
        refused(&reg, "hl-via-link", &opts),
        OciError::ThroughSymlink { .. }
    ));
}

#[test]
fn damaged_and_oversized_layers_are_refused() {
    let reg = Registry::start(None);
    let opts = insecure();
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();

    // A member cut short inside a layer whose digest is right.
    let d = push_layer(
        &reg,
        "member-cut",
        layer(&[
            Item::File("ok", b"fine", 0o644, 0, 0),
            Item::TruncatedFile("cut", 5000),
        ]),
    );
    let e = refused(&reg, "member-cut", &opts);
    assert!(
        matches!(
            e,
            OciError::MemberTruncated { .. } | OciError::LayerRead { .. }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains(&d) && e.to_string().contains("cut"),
        "{e}"
    );

    // A gzip stream cut short (digest right, archive broken).
    let src = tempfile::tempdir().unwrap();
    let mut blob = gz(layer(&[Item::File("f", &content, 0o644, 0, 0)]));
    blob.data.truncate(blob.data.len() / 2);
    let d = sha(&blob.data);
    write_layout(src.path(), "v1", &[blob], "amd64", false);
    reg.push(src.path(), "gz-cut", "v1");
    let e = refused(&reg, "gz-cut", &opts);
    assert!(
        matches!(
            e,
            OciError::LayerRead { .. } | OciError::MemberTruncated { .. }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains(&d), "{e}");

    // (Each case has its own content: the registry stores a blob once.)
    // The registry serves a blob shorter than the manifest says.
    let d = push_layer(
        &reg,
        "blob-cut",
        layer(&[Item::File("f", &content, 0o644, 0, 0)]),
    );
    let data = reg.blob_data(&d);
    let len = std::fs::metadata(&data).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    let e = refused(&reg, "blob-cut", &opts);
    assert!(matches!(e, OciError::LayerTruncated { .. }), "{e:?}");
    assert!(e.to_string().contains(&d), "{e}");

    // The registry serves other bytes than the digest names.
    let d = push_layer(
        &reg,
        "blob-bad",
        layer(&[Item::File("f-bad", &content, 0o644, 0, 0)]),
    );
    let data = reg.blob_data(&d);
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[700] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let e = refused(&reg, "blob-bad", &opts);
    assert!(matches!(e, OciError::DigestMismatch { .. }), "{e:?}");
    assert!(e.to_string().contains(&d), "{e}");

    // Layer size cap (the manifest's size is checked before downloading).
    let d = push_layer(
        &reg,
        "huge",
        layer(&[Item::File("f-huge", &content, 0o644, 0, 0)]),
    );
    let e = refused(
        &reg,
        "huge",
        &PullOptions {
            max_layer_bytes: 1_000,
            ..insecure()
        },
    );
    assert!(matches!(e, OciError::LayerTooLarge { .. }), "{e:?}");
    assert!(
        e.to_string().contains(&d) && e.to_string().contains("limit of 1000 bytes"),
        "{e}"
    );

    // Unpacked size cap: a small gzip layer expanding to 64 MiB of zeros.
    let src = tempfile::tempdir().unwrap();
    let zeros = vec![0u8; 64 << 20];
    let bomb = gz(layer(&[Item::File("zeros", &zeros, 0o644, 0, 0)]));
    let d = sha(&bomb.data);
    write_layout(src.path(), "v1", &[bomb], "amd64", false);
    reg.push(src.path(), "bomb", "v1");
    let e = refused(
        &reg,
        "bomb",
        &PullOptions {
            max_unpacked_bytes: 1 << 20,
            ..insecure()
        },
    );
    assert!(matches!(e, OciError::UnpackedTooLarge { .. }), "{e:?}");
    assert!(e.to_string().contains(&d), "{e}");
}

#[test]
fn other_architectures_are_refused_by_name() {
    let reg = Registry::start(None);
    let l = || gz(layer(&[Item::File("f", b"x", 0o755, 0, 0)]));
    for (repo, as_index) in [("arm-single", false), ("arm-index", true)] {
        let src = tempfile::tempdir().unwrap();
        write_layout(src.path(), "v1", &[l()], "arm64", as_index);
        reg.push(src.path(), repo, "v1");
        let e = refused(&reg, repo, &insecure());
        assert!(
            matches!(e, OciError::WrongArchitecture { .. }),
            "{repo}: {e:?}"
        );
        let m = e.to_string();
        assert!(
            m.contains("linux/arm64") && m.contains(repo) && m.contains("amd64"),
            "{m}"
        );
    }
}
