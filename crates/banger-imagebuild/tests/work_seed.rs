//! The work seed: label, contents, modes and uid/gid 1000 ownership,
//! checked inside the ext4 with debugfs.

mod common;

use banger_host::runner::{Cmd, Runner};
use banger_imagebuild::{build_work_seed, work_seed_hash};

const KEYS: [&str; 2] = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOwner owner@laptop",
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY second",
];

fn stat(image: &std::path::Path, path: &str) -> String {
    common::debugfs(image, &format!("stat {path}"))
}

#[test]
fn work_seed_holds_the_home_skeleton_owned_by_the_guest_user() {
    common::require_tool("debugfs", "e2fsprogs");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("work-seed.ext4");
    let keys: Vec<String> = KEYS.iter().map(|k| k.to_string()).collect();
    let seed = build_work_seed(&keys, "0.1.0", &out).unwrap();
    assert_eq!(seed.path, out);
    assert_eq!(seed.hash, work_seed_hash(&keys, "0.1.0"));
    // Only the seed is left beside it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    common::assert_fsck_clean(&out);
    let label = Runner.run(&Cmd::new("e2label").arg(&out)).unwrap().stdout;
    assert_eq!(label.trim(), "banger-work");
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 64 << 20);

    let ak = common::debugfs(&out, "cat /.ssh/authorized_keys");
    assert_eq!(ak, format!("{}\n{}\n", KEYS[0], KEYS[1]));
    assert!(common::debugfs(&out, "cat /.bashrc").contains("PS1="));
    assert!(common::debugfs(&out, "cat /.profile").contains(".bashrc"));
    assert!(common::debugfs(&out, "cat /.banger/seed").contains(&seed.hash));
    for (path, mode) in [
        ("/", "0755"),
        ("/.ssh", "0700"),
        ("/.ssh/authorized_keys", "0600"),
        ("/.bashrc", "0644"),
        ("/.profile", "0644"),
    ] {
        let s = stat(&out, path);
        assert!(
            s.contains("User:  1000") && s.contains("Group:  1000"),
            "{path} not owned by 1000:1000:\n{s}"
        );
        assert!(
            s.contains(&format!("Mode:  {mode}")),
            "{path} mode is not {mode}:\n{s}"
        );
    }
}

#[test]
fn bad_keys_build_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("seed.ext4");
    let err = build_work_seed(&["not a key".into()], "0.1.0", &out).unwrap_err();
    assert!(err.to_string().contains("public key 0"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
