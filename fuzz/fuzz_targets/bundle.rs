//! The image bundle reader: `banger_imagebuild::read_bundle` on the input
//! as a whole bundle (plain or zstd-compressed tar, manifest first), into a
//! fresh directory on tmpfs, and `bundle::Manifest::parse` on the input as
//! a manifest on its own.
//!
//! What `image pull` of a bundle relies on is checked: the reader writes
//! nothing in its directory but the members it names, and what it returns
//! is what it wrote, at the sizes the manifest gives.

#![no_main]

use std::path::{Path, PathBuf};

use banger_imagebuild::bundle::Manifest;
use banger_imagebuild::{Bundle, read_bundle};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let _ = Manifest::parse(data);
    let out = common::scratch("bundle").join("out");
    std::fs::create_dir(&out).expect("making the output directory");
    let r = read_bundle(data, Some(data.len() as u64), &out, &mut |_| {});
    let present = listing(&out);
    match r {
        Ok(b) => check(&b, &out, &present),
        Err(e) => {
            let _ = (e.is_bad_content(), banger_proto::error::chain(&e));
            for name in &present {
                assert!(
                    ["rootfs.ext4", "kernel", "initrd"].contains(&name.as_str()),
                    "a failed read left {name:?}"
                );
            }
        }
    }
    std::fs::remove_dir_all(&out).expect("emptying the output directory");
});

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("listing the output directory")
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn check(b: &Bundle, out: &Path, present: &[String]) {
    let mut expected: Vec<String> = b.manifest.members.keys().cloned().collect();
    expected.sort();
    assert_eq!(
        present, expected,
        "the files written are not the manifest's members"
    );
    let paths: [(&str, Option<&PathBuf>); 3] = [
        ("rootfs.ext4", Some(&b.rootfs)),
        ("kernel", b.kernel.as_ref()),
        ("initrd", b.initrd.as_ref()),
    ];
    for (name, path) in paths {
        match (b.manifest.members.get(name), path) {
            (Some(want), Some(p)) => {
                assert_eq!(p, &out.join(name));
                let meta = std::fs::symlink_metadata(p).expect("a member the reader returned");
                assert!(meta.file_type().is_file(), "{p:?} is not a regular file");
                assert_eq!(meta.len(), want.size, "{p:?} is not the manifest's size");
            }
            (None, None) => {}
            (want, got) => panic!("member {name}: manifest {want:?}, returned {got:?}"),
        }
    }
}
