//! The OCI layer applier: banger-oci's `layer::Flattener` applying one to
//! four layers (gzip, zstd or plain tar, found by magic bytes, with
//! whiteouts, opaque directories, hard and symbolic links, devices, PAX
//! headers) to its in-memory tree, work files in a directory on tmpfs; then
//! `boot::check`, which resolves paths through the tree's symlinks.
//!
//! The input is the layers, in order, separated by [`LAYER_SEPARATOR`].
//!
//! It drives the crate's own code through `banger_oci::fuzzing`, the hook
//! banger-oci exports only when built with `--cfg fuzzing` (run.sh sets it):
//! `Flattener`, `Limits`, `Tree`, `Kind`, `ROOT` and `boot::check` as
//! `check`.
//!
//! What the ext4 pass relies on is checked after every layer: each tree
//! path has at most 256 components and no component holds `/`, NUL or a
//! line break or is `.`, `..` or empty; each regular file's work file exists
//! in the content directory with the size the tree says; no directory is
//! reachable twice (the tree is a tree).

#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use banger_oci::OciError;
use banger_oci::fuzzing::{Flattener, Kind, Limits, ROOT, Tree, check};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

use banger_oci::fuzzing::MAX_DEPTH;

/// Between two layers of an input (an entry of dict/oci_layer.dict).
const LAYER_SEPARATOR: &[u8] = b"\n--banger-fuzz-layer--\n";
const MAX_LAYERS: usize = 4;

fuzz_target!(|data: &[u8]| {
    let layers: Vec<&[u8]> = split_layers(data);
    if layers.len() > MAX_LAYERS {
        return;
    }
    let work = common::scratch("oci").join("work");
    let content = work.join("content");
    std::fs::create_dir_all(&content).expect("making the content directory");
    let mut f = Flattener::new(
        &content,
        Limits {
            max_unpacked_bytes: 1 << 20,
            max_entries: 4096,
        },
    )
    .expect("opening the content directory");
    for (i, bytes) in layers.iter().enumerate() {
        let blob = work.join(format!("blob{i}"));
        std::fs::write(&blob, bytes).expect("writing the layer blob");
        let r = f.apply(&blob, &format!("sha256:layer{i}"));
        check_tree(&f.tree, &content);
        if let Err(e) = r {
            let _: &OciError = &e;
            let _ = e.to_string();
            break;
        }
    }
    let _ = f.warnings();
    let boot = check(&f.tree);
    let _ = (boot.missing(), boot.message());
    std::fs::remove_dir_all(&work).expect("emptying the scratch directory");
});

fn split_layers(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(at) = rest
        .windows(LAYER_SEPARATOR.len())
        .position(|w| w == LAYER_SEPARATOR)
    {
        out.push(&rest[..at]);
        rest = &rest[at + LAYER_SEPARATOR.len()..];
    }
    out.push(rest);
    out
}

fn check_tree(t: &Tree, content: &Path) {
    let mut files: BTreeMap<u64, u64> = BTreeMap::new();
    let mut dirs_seen = BTreeSet::new();
    let mut todo = vec![(ROOT, 0usize)];
    while let Some((dir, depth)) = todo.pop() {
        assert!(
            dirs_seen.insert(dir),
            "directory node {dir} is reachable twice"
        );
        let children = t.children(dir).expect("a directory");
        for (name, e) in children {
            assert!(
                !name.is_empty()
                    && name.as_slice() != b"."
                    && name.as_slice() != b".."
                    && !name.iter().any(|b| matches!(b, b'/' | 0 | b'\n')),
                "a tree entry named {name:?}"
            );
            assert!(
                depth < MAX_DEPTH,
                "a path deeper than {MAX_DEPTH} components"
            );
            match &t.nodes[e.node].kind {
                Kind::Dir(_) => todo.push((e.node, depth + 1)),
                Kind::File { content, size } => {
                    if let Some(other) = files.insert(*content, *size) {
                        assert_eq!(other, *size, "work file {content} with two sizes");
                    }
                }
                _ => {}
            }
        }
    }
    // Every regular file's work file exists at its size. (Work files no
    // longer named by the tree stay until the pull's directory goes.)
    for (id, size) in files {
        let meta = std::fs::symlink_metadata(content.join(id.to_string()))
            .unwrap_or_else(|e| panic!("work file {id} of the tree: {e}"));
        assert!(meta.file_type().is_file());
        assert_eq!(meta.len(), size, "work file {id}");
    }
}
