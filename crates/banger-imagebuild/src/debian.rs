//! The Debian image: an mmdebstrap root filesystem with the guest contract
//! (docs/guest.md) baked in, packed into ext4, plus the distribution's cloud
//! kernel with banger's initramfs.
//!
//! Builds are cached under `cache_dir/debian/<key>/`, where the key is the
//! sha256 of every input ([`DebianOptions::cache_key`]). A build runs in a
//! staging directory beside the cache entries and is published with one
//! rename, so a reader sees a complete entry or none; two concurrent builds
//! of the same key both finish and the second one's rename loses, harmlessly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_host::runner::{Cmd, RunError, Runner};
use sha2::Digest as _;

use crate::ext4::{self, Ext4Error};
use crate::guest;
use crate::kernel::{self, KernelError};
use crate::{Progress, hex};

/// Packages on top of `--variant=minbase`.
pub const DEFAULT_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "openssh-server",
    "iproute2",
    "iputils-ping",
    "netbase",
    "procps",
    "sudo",
    "socat",
    "ca-certificates",
    "git",
    // `banger workspace prepare` copies checkouts with rsync over SSH.
    "rsync",
];

/// The metapackage whose current dependency is the kernel we ship.
pub const DEFAULT_KERNEL_PACKAGE: &str = "linux-image-cloud-amd64";

/// Free space left in the root filesystem beyond its contents.
const ROOTFS_HEADROOM: u64 = 512 << 20;

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianOptions {
    /// Debian suite (`bookworm`).
    pub suite: String,
    /// Archive URL; `None` uses deb.debian.org plus, for stable suites,
    /// its updates and security archives (mmdebstrap's default).
    pub mirror: Option<String>,
    /// Extra packages; [`DEFAULT_PACKAGES`] by default.
    pub packages: Vec<String>,
    /// Kernel metapackage resolved inside the new system's apt.
    pub kernel_package: String,
    /// Where cache entries live (`cache_dir/debian/<key>`).
    pub cache_dir: PathBuf,
    /// Only look the image up in the cache; never build it. The root
    /// helper's own children run under its seccomp filter, which refuses
    /// mmdebstrap's `unshare` and `mount`.
    pub cached_only: bool,
}

impl DebianOptions {
    /// bookworm, the default mirror and packages, in `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        DebianOptions {
            suite: "bookworm".into(),
            mirror: None,
            packages: DEFAULT_PACKAGES.iter().map(|s| s.to_string()).collect(),
            kernel_package: DEFAULT_KERNEL_PACKAGE.into(),
            cache_dir: cache_dir.into(),
            cached_only: false,
        }
    }

    /// sha256 over every input that changes the result.
    pub fn cache_key(&self) -> String {
        let mut packages = self.packages.clone();
        packages.sort();
        packages.dedup();
        let text = format!(
            "banger-imagebuild debian\nsuite={}\nmirror={}\npackages={}\nkernel={}\ncontract={}\nguest={}\ninitramfs={}\n",
            self.suite,
            self.mirror.as_deref().unwrap_or("-"),
            packages.join(","),
            self.kernel_package,
            guest::GUEST_CONTRACT_VERSION,
            guest::files_digest(),
            kernel::INITRAMFS_VERSION,
        );
        hex(&sha2::Sha256::digest(text.as_bytes()))
    }

    fn validate(&self) -> Result<(), DebianError> {
        let word = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '+' | '_'))
        };
        if !word(&self.suite) {
            return Err(DebianError::BadInput(format!(
                "suite {:?}: use a Debian suite name like bookworm",
                self.suite
            )));
        }
        for p in self.packages.iter().chain([&self.kernel_package]) {
            if !word(p) {
                return Err(DebianError::BadInput(format!(
                    "package name {p:?}: letters, digits, '-', '.', '+' only"
                )));
            }
        }
        // The cache dir ends up inside a shell string of mmdebstrap's hook.
        let dir = self.cache_dir.to_string_lossy();
        if !self.cache_dir.is_absolute()
            || !dir
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '.' | '+' | '_'))
        {
            return Err(DebianError::BadInput(format!(
                "cache directory {dir:?}: an absolute path of letters, digits, '/', '-', '.', '+', '_'"
            )));
        }
        if let Some(m) = &self.mirror
            && (!(m.starts_with("http://") || m.starts_with("https://"))
                || m.chars().any(|c| c.is_whitespace() || c == '\''))
        {
            return Err(DebianError::BadInput(format!(
                "mirror {m:?}: an http:// or https:// URL"
            )));
        }
        Ok(())
    }
}

/// A built (or cached) Debian image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The ext4 root filesystem (label `banger-root`).
    pub rootfs_ext4: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub kernel_version: String,
    /// The cache entry holding all three.
    pub dir: PathBuf,
    pub cache_key: String,
    /// The kernel command line to boot it with.
    pub cmdline: String,
    /// True when the entry already existed and nothing was built.
    pub cached: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error("bad build input: {0}")]
    BadInput(String),
    #[error("building a Debian image needs root (mmdebstrap, chroot and file ownership)")]
    NotRoot,
    #[error(
        "no cached {suite} image, and the root helper cannot build one on a host without \
         systemd (its children may not mount or make namespaces); build it as root with \
         `sudo banger-imagebuild debian --suite {suite}`"
    )]
    NotCached { suite: String },
    #[error("preparing {}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mmdebstrap {suite}")]
    Mmdebstrap {
        suite: String,
        #[source]
        source: RunError,
    },
    #[error("the kernel package {package} was not downloaded into {}", dir.display())]
    NoKernelDeb { package: String, dir: PathBuf },
    #[error("writing the guest file {}", path.display())]
    GuestFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("setting up the guest user and services in {}", tree.display())]
    Setup {
        tree: PathBuf,
        #[source]
        source: RunError,
    },
    #[error("building the kernel")]
    Kernel(#[source] KernelError),
    #[error("packing the root filesystem")]
    Ext4(#[source] Ext4Error),
    #[error("{} still has mounts below it ({mounts}); left in place", dir.display())]
    MountsLeft { dir: PathBuf, mounts: String },
    #[error("the cache entry {} is incomplete: {what}", dir.display())]
    BadEntry { dir: PathBuf, what: String },
}

const MANIFEST: &str = "image.txt";

/// Build (or reuse from the cache) a Debian image. Needs root.
pub fn build_debian(
    opts: &DebianOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<BuiltImage, DebianError> {
    opts.validate()?;
    let key = opts.cache_key();
    let base = opts.cache_dir.join("debian");
    let dir = base.join(&key);
    if dir.join(MANIFEST).is_file() {
        progress(Progress::Step(format!(
            "using cached image {}",
            dir.display()
        )));
        return read_entry(&dir, &key, true);
    }
    if opts.cached_only {
        return Err(DebianError::NotCached {
            suite: opts.suite.clone(),
        });
    }
    if !rustix::process::geteuid().is_root() {
        return Err(DebianError::NotRoot);
    }
    let dir_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DebianError::Dir { path, source }
    };
    std::fs::create_dir_all(&base).map_err(dir_err(&base))?;
    prune_stale_staging(&base);
    let staging = tempfile::Builder::new()
        .prefix(&format!(".staging-{key}-"))
        .tempdir_in(&base)
        .map_err(dir_err(&base))?;
    let stage = staging.path();
    // 0755, not tempfile's 0700: apt drops to its unprivileged `_apt` user
    // for downloads only when that user can reach the lists and archives.
    std::fs::set_permissions(stage, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(dir_err(stage))?;
    let tree = stage.join("tree");
    let debs = stage.join("debs");
    std::fs::create_dir(&debs).map_err(dir_err(&debs))?;

    progress(Progress::Step(format!(
        "mmdebstrap {} ({} packages; a few minutes)",
        opts.suite,
        opts.packages.len()
    )));
    let result = build_in(opts, stage, &tree, &debs, progress);
    // Whatever happened, the tree must go, and never with a mount under it.
    let mounts = mounts_below(stage);
    if !mounts.is_empty() {
        let kept = staging.keep();
        return Err(DebianError::MountsLeft {
            dir: kept,
            mounts: mounts.join(", "),
        });
    }
    let _ = std::fs::remove_dir_all(&tree);
    let _ = std::fs::remove_dir_all(&debs);
    let (kernel, rootfs) = result?;

    let manifest = format!(
        "kernel={}\ninitrd={}\nversion={}\nrootfs={}\nsuite={}\ncontract={}\n",
        file_name(&kernel.kernel),
        file_name(&kernel.initrd),
        kernel.version,
        file_name(&rootfs),
        opts.suite,
        guest::GUEST_CONTRACT_VERSION,
    );
    let mpath = stage.join(MANIFEST);
    std::fs::write(&mpath, manifest).map_err(dir_err(&mpath))?;
    match std::fs::rename(stage, &dir) {
        Ok(()) => {
            // The TempDir's path is gone; its drop finds nothing to remove.
            progress(Progress::Step(format!("published {}", dir.display())));
            read_entry(&dir, &key, false)
        }
        Err(_) if dir.join(MANIFEST).is_file() => {
            // Someone else published the same key meanwhile: use theirs,
            // ours goes with the TempDir.
            read_entry(&dir, &key, true)
        }
        Err(source) => Err(DebianError::Dir { path: dir, source }),
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The slow part, inside `stage`. Returns the kernel and the rootfs image.
fn build_in(
    opts: &DebianOptions,
    stage: &Path,
    tree: &Path,
    debs: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<(kernel::BuiltKernel, PathBuf), DebianError> {
    let mut cmd = Cmd::new("mmdebstrap")
        // Not `--quiet`: it hides apt's reasons (a mirror that does not
        // resolve, a missing package), and the error carries stderr's tail.
        .args(["--variant=minbase", "--mode=root", "--format=directory"])
        .arg(format!("--include={}", opts.packages.join(",")))
        // The kernel package: resolved and downloaded by the new system's own
        // apt (so it matches the suite and mirror), then moved out.
        .arg(format!(
            "--customize-hook=chroot \"$1\" sh -ec 'cd /tmp; pkg=$(apt-cache depends {k} | sed -n \"s/^ *Depends: //p\" | head -n1); apt-get download -q \"$pkg\"' 2>&1",
            k = opts.kernel_package
        ))
        .arg(format!(
            "--customize-hook=mv \"$1\"/tmp/*.deb '{}'/",
            debs.display()
        ))
        .arg(&opts.suite)
        .arg(tree)
        .timeout(Duration::from_secs(1800));
    if let Some(m) = &opts.mirror {
        cmd = cmd.arg(m);
    }
    Runner.run(&cmd).map_err(|source| DebianError::Mmdebstrap {
        suite: opts.suite.clone(),
        source,
    })?;

    progress(Progress::Step("applying the guest contract".into()));
    apply_contract(tree)?;

    let deb = std::fs::read_dir(debs)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| DebianError::NoKernelDeb {
            package: opts.kernel_package.clone(),
            dir: debs.to_path_buf(),
        })?;
    progress(Progress::Step(format!(
        "kernel and initramfs from {}",
        file_name(&deb)
    )));
    let built = kernel::kernel_from_deb(&deb, stage).map_err(DebianError::Kernel)?;

    progress(Progress::Step("packing the root filesystem (ext4)".into()));
    let usage = ext4::tree_usage(tree).map_err(DebianError::Ext4)?;
    let size = ext4::image_size(usage, ROOTFS_HEADROOM);
    let rootfs = stage.join(banger_proto::layout::ROOTFS);
    ext4::mkfs_from_tree(tree, &rootfs, guest::ROOT_LABEL, size).map_err(DebianError::Ext4)?;
    ext4::fsck(&rootfs).map_err(DebianError::Ext4)?;
    Ok((built, rootfs))
}

/// Write the contract's files and run its setup script in the tree.
pub fn apply_contract(tree: &Path) -> Result<(), DebianError> {
    use std::os::unix::fs::PermissionsExt as _;
    let contract = format!("{}\n", guest::GUEST_CONTRACT_VERSION);
    let dynamic = [guest::GuestFile {
        path: "etc/banger/guest-contract",
        mode: 0o644,
        contents: "",
    }];
    for f in guest::FILES.iter().chain(dynamic.iter()) {
        let path = tree.join(f.path);
        let err = |source| DebianError::GuestFile {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        // Replace, never write through: resolv.conf may be a symlink.
        match std::fs::symlink_metadata(&path) {
            Ok(md) if md.is_dir() => std::fs::remove_dir_all(&path).map_err(err)?,
            Ok(_) => std::fs::remove_file(&path).map_err(err)?,
            Err(_) => {}
        }
        let contents = if f.path == "etc/banger/guest-contract" {
            contract.as_str()
        } else {
            f.contents
        };
        std::fs::write(&path, contents).map_err(err)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode)).map_err(err)?;
    }
    Runner
        .run(
            &Cmd::new("chroot")
                .arg(tree)
                .args(["/bin/sh", "-ec", guest::SETUP_SCRIPT])
                .timeout(Duration::from_secs(120)),
        )
        .map_err(|source| DebianError::Setup {
            tree: tree.to_path_buf(),
            source,
        })?;
    Ok(())
}

/// Staging dirs older than this are leftovers of a killed build (a build
/// takes minutes).
const STALE_STAGING: Duration = Duration::from_secs(6 * 3600);

/// Remove `.staging-*` dirs a killed build left behind (best effort; never
/// one with a mount below it).
fn prune_stale_staging(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let stale = e.file_name().to_string_lossy().starts_with(".staging-")
            && e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_STAGING);
        if stale && mounts_below(&e.path()).is_empty() {
            tracing::info!(dir = %e.path().display(), "removing a stale staging dir");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Mount points at or below `dir`, from /proc/self/mountinfo. Read as
/// bytes (any user's mount point may have a name that is not UTF-8); a
/// mountinfo that cannot be read counts as a mount, so nothing is
/// removed on a guess.
fn mounts_below(dir: &Path) -> Vec<String> {
    match std::fs::read("/proc/self/mountinfo") {
        Ok(bytes) => mounts_below_in(&String::from_utf8_lossy(&bytes), dir),
        Err(e) => vec![format!("(/proc/self/mountinfo unreadable: {e})")],
    }
}

/// [`mounts_below`] over mountinfo text `info`: each mount point is
/// unescaped (`\040` for a space…) before it is compared, so a directory
/// whose name has a space, tab, newline or backslash still sees the mounts
/// below it.
fn mounts_below_in(info: &str, dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    info.lines()
        .filter_map(banger_host::mounts::parse_mountinfo_line)
        .map(|m| m.mount_point)
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .collect()
}

fn read_entry(dir: &Path, key: &str, cached: bool) -> Result<BuiltImage, DebianError> {
    let bad = |what: String| DebianError::BadEntry {
        dir: dir.to_path_buf(),
        what,
    };
    let text =
        std::fs::read_to_string(dir.join(MANIFEST)).map_err(|e| bad(format!("{MANIFEST}: {e}")))?;
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(str::to_string)
            .ok_or_else(|| bad(format!("{MANIFEST} has no {k}=")))
    };
    let path = |k: &str| -> Result<PathBuf, DebianError> {
        let name = field(k)?;
        if name.is_empty() || name.contains('/') {
            return Err(bad(format!("{k}={name:?} is not a file name")));
        }
        let p = dir.join(name);
        if !p.is_file() {
            return Err(bad(format!("{} is missing", p.display())));
        }
        Ok(p)
    };
    Ok(BuiltImage {
        rootfs_ext4: path("rootfs")?,
        kernel: path("kernel")?,
        initrd: path("initrd")?,
        kernel_version: field("version")?,
        dir: dir.to_path_buf(),
        cache_key: key.to_string(),
        cmdline: guest::KERNEL_CMDLINE.to_string(),
        cached,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the root helper's child launch asks for: a miss is an error
    /// naming the way to build, and nothing is made in the cache.
    #[test]
    fn a_cached_only_lookup_never_builds() {
        let cache = tempfile::tempdir().unwrap();
        let mut opts = DebianOptions::new(cache.path());
        opts.cached_only = true;
        let e = build_debian(&opts, &mut |_| {}).unwrap_err();
        assert!(matches!(e, DebianError::NotCached { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("sudo banger-imagebuild debian --suite bookworm")
        );
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
        // The lookup is the cache key's, whatever `cached_only` says.
        assert_eq!(opts.cache_key(), DebianOptions::new("/c").cache_key());
    }

    /// Hostile read of 9c47982, F5: mount points were compared as the
    /// kernel escapes them (`\040` for a space), so a staging dir whose
    /// path has a space saw no mount below it and `remove_dir_all` could
    /// descend through one.
    #[test]
    fn a_mount_below_a_path_with_a_space_is_seen() {
        let info = "36 25 0:31 / /c/stage\\040one/root rw,relatime shared:1 - tmpfs tmpfs rw\n\
                    37 25 0:32 / /c/stage\\040onex rw - tmpfs tmpfs rw\n";
        assert_eq!(
            mounts_below_in(info, Path::new("/c/stage one")),
            vec!["/c/stage one/root".to_string()]
        );
        assert!(mounts_below_in(info, Path::new("/c/stage")).is_empty());
    }

    #[test]
    fn cache_key_follows_every_input_but_not_package_order() {
        let a = DebianOptions::new("/c");
        let mut b = a.clone();
        b.packages.reverse();
        assert_eq!(a.cache_key(), b.cache_key());
        b.suite = "trixie".into();
        assert_ne!(a.cache_key(), b.cache_key());
        let mut c = a.clone();
        c.mirror = Some("http://127.0.0.1/debian".into());
        assert_ne!(a.cache_key(), c.cache_key());
        let mut d = a.clone();
        d.packages.push("vim".into());
        assert_ne!(a.cache_key(), d.cache_key());
        // The cache dir is where, not what.
        assert_eq!(a.cache_key(), DebianOptions::new("/elsewhere").cache_key());
    }

    #[test]
    fn bad_input_is_named() {
        let mut o = DebianOptions::new("/c");
        o.suite = "book worm".into();
        assert!(
            o.validate()
                .unwrap_err()
                .to_string()
                .contains("\"book worm\"")
        );
        let mut o = DebianOptions::new("/c");
        o.packages.push("a;rm".into());
        assert!(o.validate().unwrap_err().to_string().contains("a;rm"));
        let mut o = DebianOptions::new("/c");
        o.mirror = Some("ftp://x".into());
        assert!(o.validate().unwrap_err().to_string().contains("ftp://x"));
    }

    #[test]
    fn broken_cache_entries_are_reported() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(MANIFEST), "kernel=../x\n").unwrap();
        let err = read_entry(d.path(), "k", true).unwrap_err();
        assert!(err.to_string().contains("incomplete"), "{err}");
    }
}
