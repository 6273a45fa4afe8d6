//! `BuildDebianImage`: the default image, built as root for an owner who
//! has no privilege (system mode).
//!
//! The build itself is `banger-imagebuild debian` (mmdebstrap in root mode,
//! the Debian kernel, the guest contract; see that crate). It needs mounts
//! and `chroot`, which the helper's own unit forbids (`@mount` is filtered
//! and `CAP_SYS_CHROOT` is not in its bounding set) and should keep
//! forbidding: so when systemd manages the host the executor starts it as a
//! transient unit (`systemd-run --wait --pipe`), a root process outside the
//! helper's sandbox whose only inputs are the program root installed, root's
//! cache directory and a validated suite name. Elsewhere (tests that run the
//! helper by hand, no systemd) it is a plain child.
//!
//! The owner gets the result as three read-only descriptors. They are opened
//! beneath root's cache directory without following symlinks, and every
//! directory on the way and every file must be root's and writable by no
//! one else, so an entry someone else could have planted or swapped is
//! refused rather than handed out. The program's JSON names the entry; only
//! its file names are used, and they must match the entry `cache_key` names.
//!
//! Builds are serialised: a second request waits and then finds the first
//! one's entry in the cache. An interrupted build leaves at most a staging
//! directory, which the next build prunes (`banger-imagebuild`).

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use banger_host::runner::{Cmd, RunError, Runner};
use banger_proto::net::FdIndex;
use banger_proto::privops::{BuiltImageFile, BuiltImageFiles};
use rustix::fs::{Mode, OFlags};

use crate::WithFds;

/// Longest accepted suite name (Debian's are short words: `bookworm`).
pub const SUITE_MAX: usize = 32;
/// The suites the owner may ask root to build: Debian code names only. The
/// suite alone picks mmdebstrap's vendor, and so its mirror and keyring:
/// another distribution's name, an alias (`stable`) or an archived suite
/// would let the owner choose which archive root's apt talks to, and each
/// name is a cache entry of about 1 GiB in root's cache.
pub const SUITES: [&str; 2] = ["bookworm", "trixie"];
/// A cold build downloads a few hundred MiB and packs an ext4; generous.
const BUILD_TIMEOUT: Duration = Duration::from_secs(3600);
/// The transient unit's own limit, well under the wait's, so the unit has
/// ended (and been stopped, `TimeoutStopSec`) before the wait gives up.
const UNIT_MAX_SECS: u64 = 3000;
/// How long systemd gives the unit to stop before killing it.
const UNIT_STOP_SECS: u64 = 30;

/// How `banger-imagebuild` is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildLaunch {
    /// `systemd-run --wait --pipe`: a transient unit, outside the helper's
    /// sandbox. Used when systemd manages the host.
    TransientUnit,
    /// A child of this process, with this process's privileges and its
    /// seccomp filter: in the root helper, no mount and no namespace
    /// (`banger_host::jail::lock_down`), which mmdebstrap needs. So the
    /// builder only looks the image up in root's cache (`--cached-only`).
    Child,
}

impl BuildLaunch {
    /// `TransientUnit` when systemd is the host's service manager (the
    /// `sd_booted` test: `/run/systemd/system` is a directory), else `Child`.
    pub fn detect() -> Self {
        if Path::new("/run/systemd/system").is_dir() {
            BuildLaunch::TransientUnit
        } else {
            BuildLaunch::Child
        }
    }
}

/// Where the builder is and where it caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBuildConfig {
    /// `banger-imagebuild`; must be a root-owned file no one else can write.
    pub exe: PathBuf,
    /// Root's image cache (`/var/cache/banger` unless `BANGER_CACHE_DIR`).
    pub cache_dir: PathBuf,
    pub launch: BuildLaunch,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageBuildError {
    #[error("image builds are not enabled in this executor")]
    NotConfigured,
    #[error("invalid suite {suite:?}: {reason}")]
    Suite { suite: String, reason: &'static str },
    #[error("the image builder {}: {reason}", path.display())]
    Builder { path: PathBuf, reason: String },
    #[error("building the Debian {suite} image")]
    Run {
        suite: String,
        #[source]
        source: RunError,
    },
    #[error("another image build is running in the root helper; retry when it has finished")]
    Busy,
    #[error("the image builder printed no result {what}: {output:?}")]
    Output { what: String, output: String },
    #[error("the cache entry {}: {reason}", path.display())]
    Entry { path: PathBuf, reason: String },
}

impl ImageBuildError {
    pub fn code(&self) -> banger_proto::ErrorCode {
        use banger_proto::ErrorCode;
        match self {
            ImageBuildError::NotConfigured => ErrorCode::Unavailable,
            ImageBuildError::Suite { .. } => ErrorCode::BadRequest,
            ImageBuildError::Busy => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        }
    }
}

/// Check a suite name before it becomes an argument.
pub fn validate_suite(suite: &str) -> Result<(), ImageBuildError> {
    let bad = |reason| ImageBuildError::Suite {
        suite: suite.to_string(),
        reason,
    };
    if suite.is_empty() || suite.len() > SUITE_MAX {
        return Err(bad(
            "use a Debian suite name such as bookworm (1 to 32 bytes)",
        ));
    }
    if !suite.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(bad("must start with a lowercase letter"));
    }
    if !suite
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(bad("only lowercase letters, digits and '-'"));
    }
    if !SUITES.contains(&suite) {
        return Err(bad("not a suite this host builds (bookworm, trixie)"));
    }
    Ok(())
}

/// Check that every directory from `/` down to `path` is root's and
/// writable by no one else, opening each step without following symlinks:
/// the build runs as root inside the cache by path, so a step another uid
/// could rename or replace would let it swap the tree the build runs in.
pub fn check_root_path(path: &Path) -> Result<(), ImageBuildError> {
    let bad = |reason: String| ImageBuildError::Entry {
        path: path.to_path_buf(),
        reason,
    };
    let text = path.to_string_lossy();
    if !path.is_absolute()
        || !text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '.' | '+' | '_'))
    {
        return Err(bad(
            "must be an absolute path of letters, digits, '/', '-', '.', '+', '_'".into(),
        ));
    }
    let mut dir = open_root_dir(None, Path::new("/"))?;
    let mut walked = PathBuf::from("/");
    for part in path.components().skip(1) {
        let std::path::Component::Normal(name) = part else {
            return Err(bad("has '.' or '..' components".into()));
        };
        walked.push(name);
        dir = open_root_dir(Some(dir.as_fd()), &walked)?;
    }
    Ok(())
}

/// Builds the default image on request, one at a time.
#[derive(Debug)]
pub struct ImageBuilder {
    cfg: ImageBuildConfig,
    runner: Runner,
    one_at_a_time: Mutex<()>,
}

/// What `banger-imagebuild debian` prints on its last line of stdout.
#[derive(Debug, serde::Deserialize)]
struct Printed {
    cache_key: String,
    rootfs: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    kernel_version: String,
    #[serde(default)]
    cached: bool,
}

impl ImageBuilder {
    pub fn new(cfg: ImageBuildConfig) -> Self {
        ImageBuilder {
            cfg,
            runner: Runner,
            one_at_a_time: Mutex::new(()),
        }
    }

    /// The argv that builds `suite`, as the configured launch starts it.
    pub fn command(&self, suite: &str) -> Cmd {
        let build = [
            "debian".as_ref(),
            "--suite".as_ref(),
            suite.as_ref(),
            "--cache-dir".as_ref(),
            self.cfg.cache_dir.as_os_str(),
        ];
        let cmd = match self.cfg.launch {
            BuildLaunch::Child => Cmd::new(&self.cfg.exe).args(build).arg("--cached-only"),
            BuildLaunch::TransientUnit => Cmd::new("systemd-run")
                .args([
                    "--quiet",
                    "--wait",
                    "--pipe",
                    "--collect",
                    "--service-type=exec",
                ])
                .arg(format!("--unit={}", unit_name(suite)))
                .arg("--description=banger: build the default Debian image")
                .arg(format!("--property=RuntimeMaxSec={UNIT_MAX_SECS}"))
                .arg(format!("--property=TimeoutStopSec={UNIT_STOP_SECS}"))
                // mmdebstrap's /proc, /sys and /dev mounts stay in the
                // unit's own namespace and vanish with it; the build needs
                // neither homes nor the host's /tmp.
                .args([
                    "--property=PrivateMounts=yes",
                    "--property=PrivateTmp=yes",
                    "--property=ProtectHome=yes",
                ])
                .arg("--")
                .arg(&self.cfg.exe)
                .args(build),
        };
        cmd.timeout(BUILD_TIMEOUT)
    }

    /// Build (or find) the image of `suite` and open its three files.
    pub fn build(&self, suite: &str) -> Result<WithFds<BuiltImageFiles>, ImageBuildError> {
        validate_suite(suite)?;
        // One build at a time, and nobody queues behind it holding one of
        // the helper's connections for an hour: a second caller is told to
        // retry. The guarded data is `()`: a poisoned lock guards nothing.
        let _one = match self.one_at_a_time.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Err(ImageBuildError::Busy),
        };
        check_builder(&self.cfg.exe)?;
        self.prepare_cache()?;
        let out = self.runner.run(&self.command(suite)).map_err(|source| {
            if self.cfg.launch == BuildLaunch::TransientUnit {
                // Killing systemd-run (our timeout) leaves the unit running.
                let stop = Cmd::new("systemctl")
                    .args(["stop", "--no-block"])
                    .arg(format!("{}.service", unit_name(suite)))
                    .timeout(Duration::from_secs(10));
                let _ = self.runner.run(&stop);
            }
            ImageBuildError::Run {
                suite: suite.to_string(),
                source,
            }
        })?;
        let last = out.stdout.lines().rev().find(|l| !l.trim().is_empty());
        let printed: Printed =
            last.and_then(|l| serde_json::from_str(l).ok())
                .ok_or_else(|| ImageBuildError::Output {
                    what: "on its last line of output".into(),
                    output: out
                        .stdout
                        .chars()
                        .rev()
                        .take(400)
                        .collect::<String>()
                        .chars()
                        .rev()
                        .collect(),
                })?;
        self.open_entry(printed)
    }

    /// Root's cache directory exists and it and every directory above it
    /// are root's alone, before anything runs in it.
    fn prepare_cache(&self) -> Result<(), ImageBuildError> {
        let dir = &self.cfg.cache_dir;
        if !dir.exists() {
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o755)
                .create(dir)
                .map_err(|e| ImageBuildError::Entry {
                    path: dir.clone(),
                    reason: format!("creating it: {e}"),
                })?;
        }
        check_root_path(dir)
    }

    fn open_entry(&self, printed: Printed) -> Result<WithFds<BuiltImageFiles>, ImageBuildError> {
        let key = &printed.cache_key;
        if key.len() != 64 || !key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ImageBuildError::Output {
                what: "with a sha256 cache key".into(),
                output: key.clone(),
            });
        }
        if printed.kernel_version.is_empty()
            || printed.kernel_version.len() > 64
            || !printed
                .kernel_version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'_'))
        {
            return Err(ImageBuildError::Output {
                what: "with a kernel version".into(),
                output: printed.kernel_version.clone(),
            });
        }
        let entry = self.cfg.cache_dir.join("debian").join(key);
        let cache = open_root_dir(None, &self.cfg.cache_dir)?;
        let debian = open_root_dir(Some(cache.as_fd()), &self.cfg.cache_dir.join("debian"))?;
        let dir = open_root_dir(Some(debian.as_fd()), &entry)?;
        let mut fds = Vec::with_capacity(3);
        for path in [&printed.rootfs, &printed.kernel, &printed.initrd] {
            if path.parent() != Some(entry.as_path()) {
                return Err(ImageBuildError::Entry {
                    path: path.clone(),
                    reason: format!("is not a file of {}", entry.display()),
                });
            }
            fds.push(OwnedFd::from(open_root_file(dir.as_fd(), path)?));
        }
        Ok(WithFds {
            answer: BuiltImageFiles {
                cache_key: key.clone(),
                kernel_version: printed.kernel_version,
                entry: entry.display().to_string(),
                cached: printed.cached,
                rootfs: BuiltImageFile {
                    fd: FdIndex(0),
                    path: printed.rootfs.display().to_string(),
                },
                kernel: BuiltImageFile {
                    fd: FdIndex(1),
                    path: printed.kernel.display().to_string(),
                },
                initrd: BuiltImageFile {
                    fd: FdIndex(2),
                    path: printed.initrd.display().to_string(),
                },
            },
            fds,
        })
    }
}

/// The transient unit of a build of `suite`.
fn unit_name(suite: &str) -> String {
    format!("banger-imagebuild-{suite}")
}

/// Refuse anything but root's: `uid` 0 and writable by no group or other.
fn check_root_only(path: &Path, meta: &rustix::fs::Stat) -> Result<(), ImageBuildError> {
    let entry = |reason: String| ImageBuildError::Entry {
        path: path.to_path_buf(),
        reason,
    };
    if meta.st_uid != 0 {
        return Err(entry(format!("is owned by uid {}, not root", meta.st_uid)));
    }
    if meta.st_mode & 0o022 != 0 {
        return Err(entry(format!(
            "has mode {:o}: group or others may write it",
            meta.st_mode & 0o7777
        )));
    }
    Ok(())
}

/// Open `path` as a directory (its last component relative to `parent`
/// when given), following no symlink, and check it is root's alone.
fn open_root_dir(parent: Option<BorrowedFd<'_>>, path: &Path) -> Result<OwnedFd, ImageBuildError> {
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY;
    let opened = match (parent, path.file_name()) {
        (Some(dir), Some(name)) => rustix::fs::openat(dir, name, flags, Mode::empty()),
        (Some(_), None) => {
            return Err(ImageBuildError::Entry {
                path: path.to_path_buf(),
                reason: "has no file name".into(),
            });
        }
        (None, _) => rustix::fs::open(path, flags, Mode::empty()),
    };
    let fd = opened.map_err(|e| ImageBuildError::Entry {
        path: path.to_path_buf(),
        reason: format!(
            "opening without following symlinks: {}",
            std::io::Error::from(e)
        ),
    })?;
    let meta = rustix::fs::fstat(&fd).map_err(|e| ImageBuildError::Entry {
        path: path.to_path_buf(),
        reason: std::io::Error::from(e).to_string(),
    })?;
    check_root_only(path, &meta)?;
    Ok(fd)
}

/// Open the entry's file `path` (by its name, beneath `dir`) read-only:
/// a non-empty regular file of root's with one link.
fn open_root_file(dir: BorrowedFd<'_>, path: &Path) -> Result<File, ImageBuildError> {
    let entry = |reason: String| ImageBuildError::Entry {
        path: path.to_path_buf(),
        reason,
    };
    let name = path
        .file_name()
        .ok_or_else(|| entry("has no file name".into()))?;
    // O_NONBLOCK: a FIFO planted at the name must not hang the helper.
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| entry(format!("opening: {}", std::io::Error::from(e))))?;
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| entry(format!("reading its metadata: {e}")))?;
    if !meta.file_type().is_file() {
        return Err(entry("is not a regular file".into()));
    }
    let stat = rustix::fs::fstat(&file).map_err(|e| entry(std::io::Error::from(e).to_string()))?;
    check_root_only(path, &stat)?;
    if meta.nlink() != 1 {
        return Err(entry(format!("has {} links, not 1", meta.nlink())));
    }
    if meta.len() == 0 {
        return Err(entry("is empty".into()));
    }
    // Back to blocking reads for the daemon (O_NONBLOCK rides on the open
    // file description it receives).
    rustix::fs::fcntl_setfl(&file, OFlags::empty())
        .map_err(|e| entry(format!("clearing O_NONBLOCK: {}", std::io::Error::from(e))))?;
    Ok(file)
}

/// The builder runs as root: it must be root's and writable by no one else,
/// and not a symlink to something that is not.
fn check_builder(exe: &Path) -> Result<(), ImageBuildError> {
    let bad = |reason: String| ImageBuildError::Builder {
        path: exe.to_path_buf(),
        reason,
    };
    if !exe.is_absolute() {
        return Err(bad("is not an absolute path".into()));
    }
    let meta = std::fs::symlink_metadata(exe).map_err(|e| bad(e.to_string()))?;
    if !meta.file_type().is_file() {
        return Err(bad("is not a regular file".into()));
    }
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(bad(format!(
            "must be owned by root and writable by no one else (uid {}, mode {:o})",
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_are_plain_words() {
        for ok in SUITES {
            validate_suite(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let long = "a".repeat(SUITE_MAX + 1);
        for bad in [
            "",
            "Bookworm",
            "-x",
            "1abc",
            "book worm",
            "book;rm",
            "../x",
            "a/b",
            "--mirror=http://x",
            "bookworm\n",
            long.as_str(),
            // Plain words, but aliases, other vendors' or archived suites.
            "stable",
            "sid",
            "bionic",
            "kali-rolling",
            "aequorea",
            "buster",
        ] {
            assert!(
                matches!(validate_suite(bad), Err(ImageBuildError::Suite { .. })),
                "{bad:?} accepted"
            );
        }
    }

    fn builder(launch: BuildLaunch, cache_dir: &Path) -> ImageBuilder {
        ImageBuilder::new(ImageBuildConfig {
            exe: "/usr/local/bin/banger-imagebuild".into(),
            cache_dir: cache_dir.to_path_buf(),
            launch,
        })
    }

    #[test]
    fn the_transient_unit_runs_the_installed_builder_with_the_suite_only() {
        let cache = Path::new("/var/cache/banger");
        let cmd = builder(BuildLaunch::TransientUnit, cache).command("trixie");
        assert_eq!(
            cmd.display(),
            "systemd-run --quiet --wait --pipe --collect --service-type=exec \
             --unit=banger-imagebuild-trixie \
             --description=banger: build the default Debian image \
             --property=RuntimeMaxSec=3000 --property=TimeoutStopSec=30 \
             --property=PrivateMounts=yes --property=PrivateTmp=yes \
             --property=ProtectHome=yes -- /usr/local/bin/banger-imagebuild debian \
             --suite trixie --cache-dir /var/cache/banger"
        );
        let child = builder(BuildLaunch::Child, cache).command("bookworm");
        assert_eq!(
            child.display(),
            "/usr/local/bin/banger-imagebuild debian --suite bookworm --cache-dir /var/cache/banger \
             --cached-only"
        );
    }

    /// A cache with one entry, as root's build leaves it: root-owned 0755
    /// directories, 0644 files. The checks compare owners with uid 0, so
    /// this runs as root, like the rest of `make test`.
    struct Cache {
        dir: tempfile::TempDir,
        key: String,
    }

    impl Cache {
        fn new() -> Cache {
            assert!(
                rustix::process::geteuid().is_root(),
                "the cache-entry tests need root (run them through `make test`)"
            );
            let dir = tempfile::tempdir().unwrap();
            let key = "a".repeat(64);
            let entry = dir.path().join("debian").join(&key);
            std::fs::create_dir_all(&entry).unwrap();
            for d in [dir.path(), &dir.path().join("debian"), &entry] {
                std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                    .unwrap();
            }
            for (name, bytes) in [
                ("rootfs.ext4", "ROOT"),
                ("vmlinuz", "KERN"),
                ("initrd.img", "INIT"),
            ] {
                std::fs::write(entry.join(name), bytes).unwrap();
            }
            Cache { dir, key }
        }

        fn entry(&self) -> PathBuf {
            self.dir.path().join("debian").join(&self.key)
        }

        fn printed(&self) -> Printed {
            Printed {
                cache_key: self.key.clone(),
                rootfs: self.entry().join("rootfs.ext4"),
                kernel: self.entry().join("vmlinuz"),
                initrd: self.entry().join("initrd.img"),
                kernel_version: "6.1.0-57-cloud-amd64".into(),
                cached: true,
            }
        }

        fn open(&self, printed: Printed) -> Result<WithFds<BuiltImageFiles>, ImageBuildError> {
            builder(BuildLaunch::Child, self.dir.path()).open_entry(printed)
        }
    }

    #[test]
    fn a_root_only_entry_is_handed_out_as_three_read_only_descriptors() {
        use std::io::Read as _;
        let cache = Cache::new();
        let done = cache.open(cache.printed()).unwrap();
        let files = &done.answer;
        assert_eq!(files.cache_key, cache.key);
        let mut read = Vec::new();
        for (file, want) in [
            (&files.rootfs, "ROOT"),
            (&files.kernel, "KERN"),
            (&files.initrd, "INIT"),
        ] {
            assert!(
                file.path.starts_with(cache.entry().to_str().unwrap()),
                "{file:?}"
            );
            let fd = done.fds[file.fd.0 as usize].try_clone().unwrap();
            let mut f = File::from(fd);
            let mut s = String::new();
            f.read_to_string(&mut s).unwrap();
            assert_eq!(s, want);
            let flags = rustix::fs::fcntl_getfl(&f).unwrap();
            assert!(!flags.contains(OFlags::WRONLY) && !flags.contains(OFlags::RDWR));
            assert!(!flags.contains(OFlags::NONBLOCK));
            read.push(s);
        }
        assert_eq!(read.len(), 3);
    }

    #[test]
    fn an_entry_anyone_else_could_have_planted_is_refused() {
        let refused = |cache: &Cache, printed: Printed, want: &str| {
            let e = cache.open(printed).unwrap_err().to_string();
            assert!(e.contains(want), "wanted {want:?} in: {e}");
        };
        // A key that is not a sha256: never joined to a path.
        let cache = Cache::new();
        let mut p = cache.printed();
        p.cache_key = "../../etc".into();
        refused(&cache, p, "sha256 cache key");
        // A file outside the entry.
        let mut p = cache.printed();
        p.rootfs = "/etc/shadow".into();
        refused(&cache, p, "is not a file of");
        // A kernel version that is not a token.
        let mut p = cache.printed();
        p.kernel_version = "6.1\nx".into();
        refused(&cache, p, "kernel version");
        // A symlink at a file's name.
        let cache = Cache::new();
        std::fs::remove_file(cache.entry().join("vmlinuz")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", cache.entry().join("vmlinuz")).unwrap();
        refused(&cache, cache.printed(), "opening");
        // A second link to a file.
        let cache = Cache::new();
        std::fs::hard_link(cache.entry().join("initrd.img"), cache.dir.path().join("x")).unwrap();
        refused(&cache, cache.printed(), "2 links");
        // A file someone else owns.
        let cache = Cache::new();
        std::os::unix::fs::chown(cache.entry().join("rootfs.ext4"), Some(65534), None).unwrap();
        refused(&cache, cache.printed(), "uid 65534");
        // A directory others may write, at each level.
        for level in 0..3 {
            let cache = Cache::new();
            let d = [
                cache.dir.path().to_path_buf(),
                cache.dir.path().join("debian"),
                cache.entry(),
            ][level]
                .clone();
            std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                .unwrap();
            refused(&cache, cache.printed(), "group or others may write");
        }
        // The entry directory swapped for a symlink.
        let cache = Cache::new();
        let real = cache.dir.path().join("real");
        std::fs::rename(cache.entry(), &real).unwrap();
        std::os::unix::fs::symlink(&real, cache.entry()).unwrap();
        refused(&cache, cache.printed(), "without following symlinks");
    }

    #[test]
    fn the_cache_path_must_be_roots_from_the_top() {
        assert!(
            rustix::process::geteuid().is_root(),
            "needs root (make test)"
        );
        // /run is root's 0755 on every Linux host; the tree below is ours.
        let top = tempfile::tempdir_in("/run").unwrap();
        let cache = top.path().join("a").join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        check_root_path(&cache).unwrap();
        for bad in ["relative/cache", "/run/x'y", "/run/a b", "/run/../run"] {
            assert!(check_root_path(Path::new(bad)).is_err(), "{bad} accepted");
        }
        // A directory others may write, anywhere on the way.
        let a = top.path().join("a");
        std::fs::set_permissions(&a, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
        let e = check_root_path(&cache).unwrap_err().to_string();
        assert!(e.contains("group or others may write"), "{e}");
        std::fs::set_permissions(&a, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        // Someone else's directory on the way.
        std::os::unix::fs::chown(&a, Some(65534), None).unwrap();
        let e = check_root_path(&cache).unwrap_err().to_string();
        assert!(e.contains("uid 65534"), "{e}");
        std::os::unix::fs::chown(&a, Some(0), None).unwrap();
        // A symlink on the way.
        let link = top.path().join("link");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let e = check_root_path(&link.join("cache"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("without following symlinks"), "{e}");
    }
}
