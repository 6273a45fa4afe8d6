//! The host side of a workspace: what `git` says about the checkout, and the
//! export's landing (a fetched branch or a written patch file).
//!
//! Every git call runs through the [`Runner`] with `GIT_OPTIONAL_LOCKS=0`
//! (so `git status` never rewrites the index) and `core.fsmonitor` off (so
//! no repository-configured program runs). None of them touches the host's
//! working tree, index or `HEAD`: inspection is read-only, and the export
//! only adds objects and one ref with `git fetch` from a bundle.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_host::runner::{Cmd, Output, Runner};
use banger_proto::{ErrorCode, RpcError};

/// What a prepare copies, as seen at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSnapshot {
    /// Root of the working tree.
    pub root: PathBuf,
    pub head: Option<String>,
    pub branch: Option<String>,
    /// Working-tree paths to copy (tracked and untracked-not-ignored),
    /// relative to `root`, sorted, as raw bytes. Tracked files deleted from
    /// the working tree are left out.
    pub files: Vec<Vec<u8>>,
    /// `git status` entries: modified, staged, deleted, untracked.
    pub dirty: u64,
    pub submodules: u64,
    /// Bytes of the files above plus the `.git` directory.
    pub total_bytes: u64,
}

fn bad(msg: impl Into<String>) -> RpcError {
    RpcError::new(ErrorCode::BadRequest, msg)
}

/// `git -C DIR` with banger's safety settings.
pub fn git(dir: &Path) -> Cmd {
    Cmd::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "core.fsmonitor=false", "-c", "core.quotepath=off"])
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_TERMINAL_PROMPT", "0")
        .timeout(Duration::from_secs(300))
}

/// Run a git command; a non-zero exit becomes `code` with git's own words.
pub fn run_git(cmd: &Cmd, code: ErrorCode, what: &str) -> Result<Output, RpcError> {
    let out = Runner.output(cmd).map_err(|e| {
        RpcError::from_error(ErrorCode::Unavailable, &e)
            .context(format!("{what} (is git installed?)"))
    })?;
    if !out.status.success() {
        let msg = out.stderr.trim();
        let msg = if msg.is_empty() {
            out.stdout.trim()
        } else {
            msg
        };
        return Err(RpcError::new(code, format!("{what}: {msg}")));
    }
    Ok(out)
}

/// `Some(stdout)` on exit 0, `None` on exit 1 (git's "no such thing"),
/// an error otherwise.
fn git_optional(cmd: &Cmd, what: &str) -> Result<Option<String>, RpcError> {
    let out = Runner.output(cmd).map_err(|e| {
        RpcError::from_error(ErrorCode::Unavailable, &e)
            .context(format!("{what} (is git installed?)"))
    })?;
    match out.status.code() {
        Some(0) => Ok(Some(out.stdout.trim().to_string())),
        Some(1) => Ok(None),
        _ => Err(bad(format!("{what}: {}", out.stderr.trim()))),
    }
}

/// Split NUL-separated git output into raw paths.
fn nul_split(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.split(|b| *b == 0).filter(|s| !s.is_empty())
}

/// Output of a git command whose stdout is binary (NUL-separated paths).
fn git_bytes(cmd: &Cmd, what: &str) -> Result<Vec<u8>, RpcError> {
    Ok(run_git(cmd, ErrorCode::BadRequest, what)?.stdout_raw)
}

/// Inspect the checkout containing `path`.
pub fn inspect(path: &Path) -> Result<RepoSnapshot, RpcError> {
    if !path.is_absolute() {
        return Err(bad(format!(
            "workspace path {} is not absolute",
            path.display()
        )));
    }
    let meta = std::fs::metadata(path)
        .map_err(|e| bad(format!("workspace path {}: {e}", path.display())))?;
    if !meta.is_dir() {
        return Err(bad(format!(
            "workspace path {} is not a directory",
            path.display()
        )));
    }
    let top = run_git(
        &git(path).args(["rev-parse", "--show-toplevel"]),
        ErrorCode::BadRequest,
        &format!("{} is not in a git working tree", path.display()),
    )?;
    let root = PathBuf::from(top.stdout.trim_end_matches('\n'));
    let dotgit = root.join(".git");
    match std::fs::symlink_metadata(&dotgit) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(bad(format!(
                "{} is a file or link, not a directory: linked worktrees and submodule \
                 checkouts are not supported as workspaces; use the main checkout",
                dotgit.display()
            )));
        }
        Err(e) => return Err(bad(format!("{}: {e}", dotgit.display()))),
    }
    let head = git_optional(
        &git(&root).args(["rev-parse", "-q", "--verify", "HEAD^{commit}"]),
        &format!("reading HEAD of {}", root.display()),
    )?;
    let branch = git_optional(
        &git(&root).args(["symbolic-ref", "-q", "--short", "HEAD"]),
        &format!("reading the branch of {}", root.display()),
    )?;
    let listed = git_bytes(
        &git(&root).args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ]),
        &format!(
            "listing the files of {} (is its .git broken?)",
            root.display()
        ),
    )?;
    let stage = git_bytes(
        &git(&root).args(["ls-files", "-z", "--stage"]),
        &format!("reading the index of {}", root.display()),
    )?;
    let submodules = nul_split(&stage)
        .filter(|e| e.starts_with(b"160000 "))
        .count() as u64;
    let status = git_bytes(
        &git(&root).args(["status", "-z", "--porcelain=v1", "--untracked-files=all"]),
        &format!("reading the status of {}", root.display()),
    )?;
    let dirty = count_status(&status);

    let mut files = BTreeSet::new();
    let mut total_bytes = 0u64;
    for p in nul_split(&listed) {
        let full = root.join(std::ffi::OsStr::from_bytes(p));
        match std::fs::symlink_metadata(&full) {
            Ok(m) => {
                total_bytes += if m.is_file() { m.len() } else { 0 };
                files.insert(p.to_vec());
            }
            // A tracked file deleted in the working tree: not copied (and
            // removed from the guest if an earlier prepare sent it).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(bad(format!("{}: {e}", full.display()))),
        }
    }
    total_bytes += dir_bytes(&dotgit);
    Ok(RepoSnapshot {
        root,
        head,
        branch,
        files: files.into_iter().collect(),
        dirty,
        submodules,
        total_bytes,
    })
}

/// Entries of `git status -z --porcelain=v1`; a rename or copy carries its
/// source as an extra NUL-terminated field.
fn count_status(z: &[u8]) -> u64 {
    let mut n = 0;
    let mut fields = z.split(|b| *b == 0);
    while let Some(f) = fields.next() {
        if f.len() < 3 {
            continue;
        }
        n += 1;
        if matches!(f[0], b'R' | b'C') {
            fields.next();
        }
    }
    n
}

/// Sum of regular file sizes below `dir` (no symlinks followed).
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

/// `user.name` and `user.email` as git resolves them for this repository
/// (its own config, then the owner's global one under `home`).
pub fn identity(
    root: &Path,
    home: Option<&Path>,
) -> Result<(Option<String>, Option<String>), RpcError> {
    let get = |key: &str| {
        let mut cmd = git(root).args(["config", "--get", key]);
        if let Some(h) = home {
            cmd = cmd.env("HOME", h);
        }
        git_optional(&cmd, &format!("reading git {key}")).map(|v| v.filter(|s| !s.is_empty()))
    };
    Ok((get("user.name")?, get("user.email")?))
}

/// Check a branch name the way git does, and that it may be written.
pub fn check_branch(root: &Path, name: &str, force: bool) -> Result<(), RpcError> {
    let out = Runner
        .output(&git(root).args(["check-ref-format", "--branch", name]))
        .map_err(|e| RpcError::from_error(ErrorCode::Unavailable, &e))?;
    // `@{-1}` and friends pass check-ref-format --branch (it expands them)
    // but are no branch name to create.
    if !out.status.success() || name.starts_with('-') || name.contains("@{") {
        return Err(bad(format!(
            "git refuses the branch name {name:?} (see `git check-ref-format`)"
        )));
    }
    let full = format!("refs/heads/{name}");
    let exists = git_optional(
        &git(root).args(["rev-parse", "-q", "--verify", &full]),
        &format!("looking up branch {name}"),
    )?
    .is_some();
    let current = git_optional(
        &git(root).args(["symbolic-ref", "-q", "HEAD"]),
        "reading the current branch",
    )?;
    if current.as_deref() == Some(full.as_str()) {
        return Err(RpcError::new(
            ErrorCode::InvalidState,
            format!(
                "branch {name} is checked out in {}; export to another branch",
                root.display()
            ),
        ));
    }
    if exists && !force {
        return Err(RpcError::new(
            ErrorCode::AlreadyExists,
            format!(
                "branch {name} already exists in {}; pick another name with --branch or replace it with --force",
                root.display()
            ),
        ));
    }
    Ok(())
}

/// Fetch the bundle's `refs/banger/export` into `refs/heads/BRANCH`.
pub fn fetch_bundle(root: &Path, bundle: &Path, branch: &str, force: bool) -> Result<(), RpcError> {
    run_git(
        &git(root).arg("bundle").arg("verify").arg(bundle),
        ErrorCode::InvalidState,
        "the guest's history does not fit the host repository (was the prepared commit removed?)",
    )?;
    let refspec = format!(
        "{}refs/banger/export:refs/heads/{branch}",
        if force { "+" } else { "" }
    );
    run_git(
        &git(root)
            // The guest is untrusted: check every object it sends.
            .args([
                "-c",
                "fetch.fsckObjects=true",
                "-c",
                "transfer.fsckObjects=true",
            ])
            .args([
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-write-fetch-head",
                "--no-recurse-submodules",
            ])
            .arg(bundle)
            .arg(refspec),
        ErrorCode::InvalidState,
        &format!("creating branch {branch}"),
    )?;
    Ok(())
}

/// Raw bytes of a path as an `OsString` (for paths from NUL lists).
pub fn os(p: &[u8]) -> OsString {
    OsString::from_vec(p.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_counts_renames_once() {
        let z = b" M a\0?? b\0R  new\0old\0D  gone\0";
        assert_eq!(count_status(z), 4);
        assert_eq!(count_status(b""), 0);
    }
}
