//! Tidy checks, as tests: structure the docs promise, no god files, no
//! silently ignored tests, doc links that resolve.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_crate_is_in_the_architecture_code_map() {
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    for e in std::fs::read_dir(root().join("crates")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(
            arch.contains(&format!("`crates/{name}`")),
            "ARCHITECTURE.md's code map does not mention crates/{name}"
        );
    }
}

#[test]
fn no_source_file_passes_800_lines() {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    for f in files {
        let n = std::fs::read_to_string(&f).unwrap().lines().count();
        assert!(
            n <= 800,
            "{} has {n} lines; split it along a real seam",
            f.display()
        );
    }
}

#[test]
fn no_test_is_silently_ignored() {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    let needle = ["#[", "ignore"].concat();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains(&needle),
            "{} ignores a test; tests fail or run, they never silently skip",
            f.display()
        );
    }
}

#[test]
fn markdown_links_to_repository_files_resolve() {
    let r = root();
    let mut docs: Vec<PathBuf> = vec![r.join("README.md"), r.join("ARCHITECTURE.md")];
    for e in std::fs::read_dir(r.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            docs.push(p);
        }
    }
    for doc in docs {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = rest[..end].split('#').next().unwrap();
            if target.is_empty() || target.contains("://") {
                continue;
            }
            let p = doc.parent().unwrap().join(target);
            assert!(p.exists(), "{} links to missing {}", doc.display(), target);
        }
    }
}
