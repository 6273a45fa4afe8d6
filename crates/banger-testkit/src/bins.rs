//! The workspace binaries under test, at a path every test user can run.
//!
//! Tests run the binaries as throwaway users (an owner's `bangerd`, a peer's
//! raw client). Straight from `target/` that works only while every directory
//! above the target dir lets others through: a checkout under `/root` (0700)
//! does not. Then [`bin`] hands out copies in a root-owned 0755 directory
//! under the system temp dir, one per target dir
//! (`banger-testbin-<hash of its path>`), refreshed whenever a binary's size
//! or mtime differs from the build's. Each binary is replaced by a rename of a
//! complete private copy, so test processes running at the same time never
//! see a partial file. Directories whose target dir is gone are removed when
//! a new one is made, so they do not pile up.

use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of the shared copy directories in the temp dir.
pub const SHARED_BIN_PREFIX: &str = "banger-testbin-";
/// The file in a shared directory naming the target dir it copies.
const SOURCE_FILE: &str = "source";

/// Path of a workspace binary (`bangerd`, `bangerd-root`, `banger`,
/// `banger-rawclient`, ...) that any user may execute: the one in the target
/// directory of the test executable when others can reach it, else a shared
/// copy (see the module docs).
pub fn bin(name: &str) -> PathBuf {
    let dir = profile_dir();
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing; build the workspace binaries first (`cargo build --workspace --bins`, which `make test` does)",
        p.display()
    );
    static SHARED: OnceLock<PathBuf> = OnceLock::new();
    let runnable = SHARED.get_or_init(|| {
        if others_can_run_from(&dir) {
            dir.clone()
        } else {
            shared_copies(&dir, &std::env::temp_dir())
        }
    });
    runnable.join(name)
}

/// The target profile dir holding the binaries (`target/debug`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // Test executables live in target/<profile>/deps/, other binaries
    // (banger-bench) in target/<profile>/ beside the binaries under test.
    let mut dir = exe.parent().expect("executable dir");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("target profile dir");
    }
    dir.to_path_buf()
}

/// Whether a user with no claim on any directory (not owner, not in the
/// group) can reach `dir`'s files: every directory from `/` down to it has
/// the others-search bit.
pub fn others_can_run_from(dir: &Path) -> bool {
    let dir = std::fs::canonicalize(dir)
        .unwrap_or_else(|e| panic!("canonicalizing {}: {e}", dir.display()));
    dir.ancestors().all(|a| {
        std::fs::metadata(a)
            .unwrap_or_else(|e| panic!("stat {}: {e}", a.display()))
            .mode()
            & 0o001
            != 0
    })
}

/// The workspace binaries in `dir`: executable regular files without an
/// extension (not `.d` files, libraries or directories).
fn binaries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .flatten()
        .filter(|e| {
            e.metadata()
                .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.contains('.'))
        .collect();
    names.sort();
    names
}

/// FNV-1a of the path's bytes: stable across builds and processes.
fn path_hash(p: &Path) -> u64 {
    p.as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// The shared directory for `profile` under `tmp`, created (root, 0755) or
/// checked, with every binary of `profile` present and current.
pub fn shared_copies(profile: &Path, tmp: &Path) -> PathBuf {
    let profile = std::fs::canonicalize(profile)
        .unwrap_or_else(|e| panic!("canonicalizing {}: {e}", profile.display()));
    assert!(
        others_can_run_from(tmp),
        "the temp dir {} is not reachable by other users either; set TMPDIR to a directory they can enter",
        tmp.display()
    );
    let shared = tmp.join(format!("{SHARED_BIN_PREFIX}{:016x}", path_hash(&profile)));
    let created = match std::fs::DirBuilder::new().mode(0o755).create(&shared) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => panic!("creating {}: {e}", shared.display()),
    };
    check_ours(&shared, created);
    if created {
        std::fs::write(shared.join(SOURCE_FILE), profile.as_os_str().as_bytes())
            .unwrap_or_else(|e| panic!("writing {}/{SOURCE_FILE}: {e}", shared.display()));
        prune(tmp, &shared);
    }
    remove_abandoned_temporaries(&shared);
    for name in binaries(&profile) {
        refresh(&profile.join(&name), &shared.join(&name));
    }
    shared
}

/// Refuse a shared directory someone else could have planted or changed:
/// it must be a real directory (not a symlink) owned by us with mode 0755.
fn check_ours(shared: &Path, just_created: bool) {
    if just_created {
        // The umask may have narrowed the mode mkdir was given.
        std::fs::set_permissions(shared, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", shared.display()));
    }
    let m = std::fs::symlink_metadata(shared)
        .unwrap_or_else(|e| panic!("stat {}: {e}", shared.display()));
    let me = rustix::process::geteuid().as_raw();
    assert!(
        m.is_dir() && m.uid() == me && m.mode() & 0o7777 == 0o755,
        "refusing to use {} for test binaries: it must be a directory owned by uid {me} with mode 0755 \
         (found {}, uid {}, mode {:o}); remove it",
        shared.display(),
        if m.is_dir() {
            "a directory"
        } else {
            "not a directory"
        },
        m.uid(),
        m.mode() & 0o7777
    );
}

static TEMP_SEQ: AtomicU32 = AtomicU32::new(0);

/// Make `dst` the same build as `src` (same size and mtime), replacing it by
/// a rename so a concurrent reader sees the old file or the new one whole.
fn refresh(src: &Path, dst: &Path) {
    let want = std::fs::metadata(src).unwrap_or_else(|e| panic!("stat {}: {e}", src.display()));
    if let Ok(have) = std::fs::symlink_metadata(dst)
        && have.is_file()
        && have.len() == want.len()
        && have.modified().ok() == want.modified().ok()
        && have.mode() & 0o7777 == 0o755
    {
        return;
    }
    let dir = dst.parent().expect("shared dir");
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        dst.file_name().unwrap().to_string_lossy(),
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    // A hard link costs nothing and keeps size and mtime; it only works on
    // the same filesystem, and only for a file others may already run.
    let linked = want.mode() & 0o7777 == 0o755 && std::fs::hard_link(src, &tmp).is_ok();
    if !linked {
        let copied = std::fs::copy(src, &tmp).and_then(|_| {
            let f = std::fs::File::options().write(true).open(&tmp)?;
            f.set_permissions(std::fs::Permissions::from_mode(0o755))?;
            f.set_modified(want.modified()?)
        });
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&tmp);
            panic!("copying {} to {}: {e}", src.display(), tmp.display());
        }
    }
    if let Err(e) = std::fs::rename(&tmp, dst) {
        let _ = std::fs::remove_file(&tmp);
        panic!("renaming {} to {}: {e}", tmp.display(), dst.display());
    }
}

/// Remove `.NAME.PID.N.tmp` files of processes that no longer run (a test
/// killed half-way through a copy).
fn remove_abandoned_temporaries(shared: &Path) {
    for e in std::fs::read_dir(shared).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_suffix(".tmp") else {
            continue;
        };
        let pid = rest.rsplit('.').nth(1).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Remove the shared directories under `tmp` (ours, besides `keep`) whose
/// target dir no longer exists.
fn prune(tmp: &Path, keep: &Path) {
    let me = rustix::process::geteuid().as_raw();
    for e in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
        let path = e.path();
        if path == keep
            || !e
                .file_name()
                .to_string_lossy()
                .starts_with(SHARED_BIN_PREFIX)
        {
            continue;
        }
        let Ok(m) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !m.is_dir() || m.uid() != me {
            continue;
        }
        let Ok(source) = std::fs::read(path.join(SOURCE_FILE)) else {
            continue;
        };
        let source = PathBuf::from(std::ffi::OsString::from_vec(source));
        if !source.exists() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestUser;

    fn script(path: &Path, body: &str, mode: u32) {
        std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A "target dir" inside a 0700 directory, as a checkout under /root.
    fn private_profile(root: &Path) -> PathBuf {
        let private = root.join("private");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .unwrap();
        let profile = private.join("target").join("debug");
        std::fs::create_dir_all(&profile).unwrap();
        script(&profile.join("hello"), "echo hello", 0o755);
        // Built under umask 077: only the owner may run it.
        script(&profile.join("secret"), "echo secret", 0o700);
        std::fs::write(profile.join("hello.d"), "deps\n").unwrap();
        std::fs::create_dir(profile.join("deps")).unwrap();
        profile
    }

    fn run_as(user: &TestUser, program: &Path) -> std::process::Output {
        user.command(program).output().unwrap()
    }

    #[test]
    fn binaries_in_a_private_checkout_are_run_from_shared_copies() {
        crate::require_root();
        let root = tempfile::tempdir().unwrap();
        let profile = private_profile(root.path());
        let tmp = crate::shared_tempdir();
        let user = TestUser::create(None);
        assert!(!others_can_run_from(&profile));
        assert!(others_can_run_from(tmp.path()));
        let denied = user.command(profile.join("hello")).output().unwrap_err();
        assert_eq!(denied.kind(), std::io::ErrorKind::PermissionDenied);

        let shared = shared_copies(&profile, tmp.path());
        assert!(shared.starts_with(tmp.path()));
        let m = std::fs::symlink_metadata(&shared).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o755));
        let mut names: Vec<String> = std::fs::read_dir(&shared)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["hello", "secret", SOURCE_FILE]);
        for name in ["hello", "secret"] {
            let out = run_as(&user, &shared.join(name));
            assert!(out.status.success(), "{name}: {out:?}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{name}\n"));
        }
        // The build's own file stays as private as it was.
        let src = std::fs::metadata(profile.join("secret")).unwrap();
        assert_eq!(src.mode() & 0o7777, 0o700);

        // Same build: nothing is replaced. A rebuild: the copy follows.
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let before = ino(&shared.join("secret"));
        assert_eq!(shared_copies(&profile, tmp.path()), shared);
        assert_eq!(ino(&shared.join("secret")), before);
        script(&profile.join("secret"), "echo rebuilt secret", 0o700);
        shared_copies(&profile, tmp.path());
        let out = run_as(&user, &shared.join("secret"));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "rebuilt secret\n");
        assert!(
            std::fs::read_dir(&shared).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")),
            "temporary copies left behind"
        );
    }

    #[test]
    fn a_planted_shared_dir_is_refused() {
        crate::require_root();
        let root = tempfile::tempdir().unwrap();
        let profile = private_profile(root.path());
        let tmp = crate::shared_tempdir();
        let canonical = std::fs::canonicalize(&profile).unwrap();
        let planted = tmp
            .path()
            .join(format!("{SHARED_BIN_PREFIX}{:016x}", path_hash(&canonical)));
        std::fs::DirBuilder::new()
            .mode(0o777)
            .create(&planted)
            .unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = std::panic::catch_unwind(|| shared_copies(&profile, tmp.path())).unwrap_err();
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("refusing to use"), "{msg}");
        assert_eq!(std::fs::read_dir(&planted).unwrap().count(), 0);
    }

    #[test]
    fn shared_dirs_of_vanished_checkouts_are_pruned() {
        crate::require_root();
        let tmp = crate::shared_tempdir();
        let gone_root = tempfile::tempdir().unwrap();
        let gone = shared_copies(&private_profile(gone_root.path()), tmp.path());
        let kept_root = tempfile::tempdir().unwrap();
        let kept = shared_copies(&private_profile(kept_root.path()), tmp.path());
        drop(gone_root);
        assert!(gone.exists(), "pruned only when another dir is made");
        let new_root = tempfile::tempdir().unwrap();
        let new = shared_copies(&private_profile(new_root.path()), tmp.path());
        assert!(!gone.exists(), "{} outlived its checkout", gone.display());
        assert!(kept.exists() && new.exists());
    }
}
