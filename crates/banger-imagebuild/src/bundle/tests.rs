//! Manifest parsing, member validation and the round trip.

use super::*;

const SHA: &str = "e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee";

fn manifest(members: &str) -> String {
    format!(r#"{{"format":"banger-bundle","version":1,"members":{{{members}}}}}"#)
}

#[test]
fn manifests_are_checked_and_errors_say_what_is_wrong() {
    let ok = manifest(&format!(r#""rootfs.ext4":{{"sha256":"{SHA}","size":3}}"#));
    assert_eq!(Manifest::parse(ok.as_bytes()).unwrap().members.len(), 1);
    let bad = |text: String, want: &str| {
        let msg = Manifest::parse(text.as_bytes()).unwrap_err().to_string();
        assert!(msg.contains(want), "{msg:?} lacks {want:?}");
    };
    bad(manifest(""), "no \"rootfs.ext4\" member");
    bad(
        manifest(&format!(
            r#""rootfs.ext4":{{"sha256":"{SHA}","size":3}},"etc/passwd":{{"sha256":"{SHA}","size":1}}"#
        )),
        "unknown member \"etc/passwd\"",
    );
    bad(
        manifest(r#""rootfs.ext4":{"sha256":"abc","size":3}"#),
        "sha256 \"abc\" is not 64 hex digits",
    );
    bad(ok.replace("\"version\":1", "\"version\":2"), "version 2");
    bad(
        ok.replace("banger-bundle", "tarball"),
        "format is \"tarball\"",
    );
    bad(
        ok.replace("\"format\"", "\"colour\":1,\"format\""),
        "colour",
    );
    bad("not json".into(), "not valid JSON");
}

#[test]
fn member_names_are_normalised_or_refused() {
    assert_eq!(
        member_name(b"./rootfs.ext4").unwrap().unwrap(),
        "rootfs.ext4"
    );
    assert_eq!(member_name(b"kernel").unwrap().unwrap(), "kernel");
    assert_eq!(member_name(b"./").unwrap(), None);
    assert_eq!(member_name(b".").unwrap(), None);
    for (raw, want) in [
        (&b"/etc/passwd"[..], "absolute"),
        (b"../x", "`..`"),
        (b"a/../../x", "`..`"),
        (b"\xff", "not UTF-8"),
    ] {
        let msg = member_name(raw).unwrap_err().to_string();
        assert!(msg.contains(want), "{msg}");
    }
}

fn write(dir: &Path, name: &str, body: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn a_written_bundle_reads_back_plain_and_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let mut rootfs_body = vec![0u8; 3 << 20];
    rootfs_body[1080] = 0x53;
    rootfs_body[(2 << 20) + 7] = 1;
    let rootfs = write(dir.path(), "r", &rootfs_body);
    let kernel = write(dir.path(), "k", b"a kernel");
    for level in [None, Some(3)] {
        let mut bytes = Vec::new();
        let files = BundleFiles {
            name: Some("web"),
            rootfs: &rootfs,
            kernel: Some(&kernel),
            initrd: None,
        };
        let m = write_bundle(&mut bytes, &files, level).unwrap();
        assert_eq!(bytes.starts_with(&ZSTD_MAGIC), level.is_some());
        let out = tempfile::tempdir().unwrap();
        let mut steps = Vec::new();
        let b = read_bundle(&bytes[..], Some(bytes.len() as u64), out.path(), &mut |p| {
            steps.push(p)
        })
        .unwrap();
        assert_eq!(b.manifest, m);
        assert_eq!(b.manifest.name.as_deref(), Some("web"));
        assert_eq!(std::fs::read(&b.rootfs).unwrap(), rootfs_body);
        assert_eq!(std::fs::read(b.kernel.unwrap()).unwrap(), b"a kernel");
        assert_eq!(b.initrd, None);
        assert!(steps.contains(&Progress::Step("unpacking rootfs.ext4".into())));
    }
}

/// A tar of (name, type, body) built with the tar crate.
fn tar_of(members: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, body) in members {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
            h.set_size(0);
            b.append_link(&mut h, name, "/etc/shadow").unwrap();
        } else {
            // set_path refuses `..`; write the raw name for the
            // traversal cases.
            let raw = name.as_bytes();
            h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
            h.set_cksum();
            b.append(&h, *body).unwrap();
        }
    }
    b.into_inner().unwrap()
}

fn sha(b: &[u8]) -> String {
    hex(&sha2::Sha256::digest(b))
}

fn read_err(bytes: &[u8]) -> String {
    let out = tempfile::tempdir().unwrap();
    read_bundle(bytes, None, out.path(), &mut |_| {})
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_bundles_are_refused_naming_the_member() {
    use tar::EntryType::{Block, Regular, Symlink};
    let root = b"root";
    let m = manifest(&format!(
        r#""rootfs.ext4":{{"sha256":"{}","size":4}}"#,
        sha(root)
    ));
    let mb = m.as_bytes();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            tar_of(&[("rootfs.ext4", Regular, root), (MANIFEST, Regular, mb)]),
            "\"rootfs.ext4\": manifest.json must be the first member",
        ),
        (
            tar_of(&[(MANIFEST, Regular, mb), ("../rootfs.ext4", Regular, root)]),
            "\"../rootfs.ext4\": `..` components are refused",
        ),
        (
            tar_of(&[(MANIFEST, Regular, mb), ("/rootfs.ext4", Regular, root)]),
            "absolute paths are refused",
        ),
        (
            tar_of(&[(MANIFEST, Regular, mb), ("rootfs.ext4", Symlink, b"")]),
            "\"rootfs.ext4\": links are refused",
        ),
        (
            tar_of(&[(MANIFEST, Regular, mb), ("kernel", Block, b"")]),
            "\"kernel\": device nodes",
        ),
        (
            tar_of(&[(MANIFEST, Regular, mb), ("notes.txt", Regular, b"hi")]),
            "\"notes.txt\": unknown member",
        ),
        (
            tar_of(&[(MANIFEST, Regular, mb), ("kernel", Regular, b"k")]),
            "\"kernel\": not listed in the manifest",
        ),
        (
            tar_of(&[
                (MANIFEST, Regular, mb),
                ("rootfs.ext4", Regular, root),
                ("./rootfs.ext4", Regular, root),
            ]),
            "\"rootfs.ext4\": the member appears twice",
        ),
        (
            tar_of(&[(MANIFEST, Regular, mb), ("rootfs.ext4", Regular, b"RooT")]),
            "\"rootfs.ext4\": sha256 mismatch",
        ),
        (
            tar_of(&[(MANIFEST, Regular, mb), ("rootfs.ext4", Regular, b"rooty")]),
            "5 bytes in the archive, but the manifest says 4",
        ),
        (
            tar_of(&[(MANIFEST, Regular, mb)]),
            "\"rootfs.ext4\" is listed in the manifest but missing",
        ),
        (vec![0x1f, 0x8b, 8, 0], "gzip"),
    ];
    for (bytes, want) in cases {
        let msg = read_err(&bytes);
        assert!(msg.contains(want), "{msg:?} lacks {want:?}");
    }
}

#[test]
fn a_truncated_member_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = write(dir.path(), "r", &vec![7u8; 100_000]);
    let mut bytes = Vec::new();
    let files = BundleFiles {
        name: None,
        rootfs: &rootfs,
        kernel: None,
        initrd: None,
    };
    write_bundle(&mut bytes, &files, None).unwrap();
    bytes.truncate(50_000);
    let msg = read_err(&bytes);
    assert!(msg.contains("\"rootfs.ext4\""), "{msg}");
    let mut z = Vec::new();
    write_bundle(&mut z, &files, Some(1)).unwrap();
    z.truncate(z.len() / 2);
    let out = tempfile::tempdir().unwrap();
    let err = read_bundle(&z[..], None, out.path(), &mut |_| {}).unwrap_err();
    let chain = crate::error_chain(&err);
    assert!(
        chain.contains("manifest.json")
            || chain.contains("rootfs.ext4")
            || chain.contains("at its start"),
        "{chain}"
    );
}
