//! The real Firecracker binary and a kernel it can load, for the tests that
//! run it: `banger-vmm`'s `firecracker_real` and `banger-testkit`'s
//! `firecracker_daemon` (which includes this file by path).
//!
//! * The binary: `$BANGER_FIRECRACKER`, else
//!   `<workspace>/../shared/firecracker/bin/firecracker` (Firecracker
//!   v1.16.1 built from its public source; the README beside it gives its
//!   sha256). A missing binary fails the test, naming where it was looked
//!   for; its `--version` must be v1.16.x, and the sha256 must be the one
//!   the README beside it states.
//! * The kernel: the uncompressed `vmlinux` inside the Debian kernel of the
//!   cached default image (`banger_imagebuild::debian::build_debian` with
//!   `$BANGER_CACHE_DIR`, else /var/cache/banger — the cache the VM tests
//!   share), extracted with `banger_imagebuild::extract_vmlinux`.
#![allow(dead_code)] // each including test target uses its own subset

use std::path::{Path, PathBuf};

use banger_host::runner::{Cmd, Runner};

/// The variable that names another Firecracker binary.
pub const ENV: &str = "BANGER_FIRECRACKER";

/// Where the binary is looked for when `$BANGER_FIRECRACKER` is unset.
pub fn default_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/firecracker/bin/firecracker")
}

/// The Firecracker binary, checked: it exists, says v1.16.x, and (for the
/// shared build, or any binary with a README beside its directory) has the
/// sha256 that README states. Panics — the test fails — otherwise.
pub fn binary() -> PathBuf {
    let (path, from_env) = match std::env::var_os(ENV) {
        Some(v) if !v.is_empty() => (PathBuf::from(v), true),
        _ => (default_path(), false),
    };
    assert!(
        path.is_file(),
        "no Firecracker binary at {}: these tests need Firecracker v1.16.x there \
         (the shared build at <workspace>/../shared/firecracker/bin/firecracker, or set {ENV}=/path/to/firecracker)",
        path.display()
    );
    let path = std::path::absolute(&path).unwrap();
    let version = Runner
        .run(&Cmd::new(&path).arg("--version"))
        .unwrap_or_else(|e| panic!("{} --version: {e}", path.display()));
    let first = version.stdout.lines().next().unwrap_or_default().trim();
    assert!(
        first.starts_with("Firecracker v1.16."),
        "{} --version says {first:?}; the driver targets Firecracker v1.16",
        path.display()
    );
    let readme = path
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("README.md"));
    match readme.filter(|r| r.is_file()) {
        Some(readme) => {
            let want = readme_sha256(&readme);
            let got = sha256(&path);
            assert_eq!(
                got,
                want,
                "{} does not have the sha256 {} states",
                path.display(),
                readme.display()
            );
        }
        None => assert!(
            from_env,
            "the shared Firecracker build has no README.md beside {} (it states the binary's sha256)",
            path.parent().unwrap().display()
        ),
    }
    path
}

/// The one 64-hex-digit word in the README: the binary's sha256.
fn readme_sha256(readme: &Path) -> String {
    let text = std::fs::read_to_string(readme).unwrap();
    let words: Vec<&str> = text
        .split(|c: char| !c.is_ascii_hexdigit())
        .filter(|w| w.len() == 64)
        .collect();
    assert_eq!(
        words.len(),
        1,
        "{} should state exactly one sha256, found {words:?}",
        readme.display()
    );
    words[0].to_ascii_lowercase()
}

fn sha256(path: &Path) -> String {
    let out = Runner
        .run(&Cmd::new("sha256sum").arg(path))
        .expect("sha256sum (coreutils)");
    out.stdout
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The default Debian image, built once or taken from the shared cache.
pub fn debian_image() -> banger_imagebuild::debian::BuiltImage {
    let cache = banger_imagebuild::default_cache_dir();
    let opts = banger_imagebuild::debian::DebianOptions::new(cache);
    banger_imagebuild::debian::build_debian(&opts, &mut |_| {})
        .unwrap_or_else(|e| panic!("building the default Debian image: {e:?}"))
}

/// The uncompressed ELF `vmlinux` of the default image's Debian kernel,
/// written to `out`.
pub fn debian_vmlinux(out: &Path) -> PathBuf {
    let image = debian_image();
    let vmlinux = banger_imagebuild::extract_vmlinux(&image.kernel, out).unwrap_or_else(|e| {
        panic!(
            "extracting vmlinux from {}: {}",
            image.kernel.display(),
            banger_imagebuild::error_chain(&e)
        )
    });
    let magic = std::fs::read(&vmlinux).unwrap();
    assert!(
        magic.starts_with(b"\x7fELF"),
        "{} is no ELF",
        vmlinux.display()
    );
    vmlinux
}
