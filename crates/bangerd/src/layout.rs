//! Where the owner daemon keeps things on disk (ARCHITECTURE.md, "Modes and
//! layout"; docs/config.md, "Layout on disk").
//!
//! System mode takes its paths from the install metadata; dev mode puts
//! everything under `--state-dir` / `--runtime-dir`. [`Layout::ensure`]
//! creates what is missing and refuses — never repairs — directories that
//! are symlinks, not directories, owned by someone else or writable by
//! others.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use banger_proto::install::InstallMeta;
use banger_proto::layout;

/// The dev daemon's default socket.
pub const DEV_SOCKET: &str = "/run/banger-dev/bangerd.sock";
/// The system daemon's socket.
pub const SYSTEM_SOCKET: &str = "/run/banger/bangerd.sock";

const DEV_STATE_DIR: &str = "/var/lib/banger-dev";
const DEV_RUNTIME_DIR: &str = "/run/banger-dev";
const SYSTEM_STATE_DIR: &str = "/var/lib/banger";
const SYSTEM_RUNTIME_DIR: &str = "/run/banger";
const SYSTEM_ROOT_SOCKET: &str = "/run/banger-root/root.sock";
const SYSTEM_ROOT_STATE_DIR: &str = "/var/lib/banger-root";

/// Mode of owner-private state directories.
const STATE_MODE: u32 = 0o700;
/// Mode of the runtime directory: others may reach the socket inside, whose
/// own mode and peer-credential checks decide who is served.
const RUNTIME_MODE: u32 = 0o755;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One root process with the in-process privileged adapter.
    Dev,
    /// Owner daemon plus root helper, installed by `banger system install`.
    System,
}

/// The resolved on-disk layout. All paths are absolute unless a relative
/// path was given and the working directory could not be read, in which case
/// [`Layout::ensure`] refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub mode: Mode,
    /// Owner-owned state: store, images, kernels, VMs.
    pub state_dir: PathBuf,
    /// Sockets.
    pub runtime_dir: PathBuf,
    /// `runtime_dir/bangerd.sock`.
    pub socket: PathBuf,
    /// `state_dir/store.db`.
    pub store_path: PathBuf,
    pub images_dir: PathBuf,
    pub kernels_dir: PathBuf,
    /// Holds one `<id>/` directory per VM.
    pub vms_dir: PathBuf,
    /// Guest host keys for daemon-side SSH: `state_dir/ssh/known_hosts`.
    pub known_hosts: PathBuf,
    /// banger's client SSH private key: owner material, so beside the owner
    /// config once [`Layout::with_owner_config`] set it; `state_dir/ssh/
    /// id_ed25519` (where earlier versions kept it) until then.
    pub client_key: PathBuf,
    /// The root helper's socket (system mode only).
    pub root_socket: Option<PathBuf>,
    /// The root helper's state directory (system mode only), which the
    /// install's udev rule names beside `state_dir`.
    pub root_state_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("resolving {what} {path}")]
    Absolute {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is not an absolute path")]
    Relative { what: &'static str, path: PathBuf },
    #[error("inspecting {path}")]
    Inspect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("giving {path} to uid {uid} gid {gid}")]
    Chown {
        path: PathBuf,
        uid: u32,
        gid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is a symlink; banger needs a real directory there (remove the link)")]
    Symlink { path: PathBuf },
    #[error("{path} exists but is not a directory")]
    NotADirectory { path: PathBuf },
    #[error(
        "{path} is owned by uid {found}, expected uid {expected}; fix its ownership or pick another directory"
    )]
    WrongOwner {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{path} has mode {mode:04o}, writable by group or others; run `chmod go-w {path}`")]
    TooOpen { path: PathBuf, mode: u32 },
}

impl Layout {
    /// The dev layout: `state_dir` (default `/var/lib/banger-dev`) and
    /// `runtime_dir` (default `/run/banger-dev`); relative paths are made
    /// absolute against the working directory.
    pub fn dev(
        state_dir: Option<PathBuf>,
        runtime_dir: Option<PathBuf>,
    ) -> Result<Layout, LayoutError> {
        let absolute = |what, path: PathBuf| {
            std::path::absolute(&path).map_err(|source| LayoutError::Absolute {
                what,
                path,
                source,
            })
        };
        let state_dir = absolute(
            "state directory",
            state_dir.unwrap_or_else(|| DEV_STATE_DIR.into()),
        )?;
        let runtime_dir = absolute(
            "runtime directory",
            runtime_dir.unwrap_or_else(|| DEV_RUNTIME_DIR.into()),
        )?;
        Ok(Layout::build(Mode::Dev, state_dir, runtime_dir, None))
    }

    /// The system layout named by the install metadata.
    pub fn system(meta: &InstallMeta) -> Layout {
        Layout {
            root_state_dir: Some(meta.paths.root_state_dir.clone()),
            ..Layout::build(
                Mode::System,
                meta.paths.state_dir.clone(),
                meta.paths.runtime_dir.clone(),
                Some(meta.paths.root_socket.clone()),
            )
        }
    }

    /// The system layout at its standard paths.
    pub fn system_default() -> Layout {
        Layout {
            root_state_dir: Some(SYSTEM_ROOT_STATE_DIR.into()),
            ..Layout::build(
                Mode::System,
                SYSTEM_STATE_DIR.into(),
                SYSTEM_RUNTIME_DIR.into(),
                Some(SYSTEM_ROOT_SOCKET.into()),
            )
        }
    }

    fn build(
        mode: Mode,
        state_dir: PathBuf,
        runtime_dir: PathBuf,
        root_socket: Option<PathBuf>,
    ) -> Layout {
        Layout {
            mode,
            socket: runtime_dir.join("bangerd.sock"),
            store_path: state_dir.join("store.db"),
            images_dir: state_dir.join(layout::IMAGES_DIR),
            kernels_dir: state_dir.join(layout::KERNELS_DIR),
            vms_dir: state_dir.join(layout::VMS_DIR),
            known_hosts: state_dir.join("ssh").join("known_hosts"),
            client_key: Self::state_client_key(&state_dir),
            state_dir,
            runtime_dir,
            root_socket,
            root_state_dir: None,
        }
    }

    /// Where the client key lives without an owner home.
    pub fn state_client_key(state_dir: &Path) -> PathBuf {
        state_dir.join("ssh").join("id_ed25519")
    }

    /// Keep banger's client key beside the owner's config file
    /// (`…/banger/config.toml` → `…/banger/ssh/id_ed25519`); `None` keeps
    /// it in state.
    pub fn with_owner_config(mut self, config_file: Option<&Path>) -> Layout {
        if let Some(dir) = config_file.and_then(Path::parent) {
            self.client_key = dir.join("ssh").join("id_ed25519");
        }
        self
    }

    /// The directory of one VM. `id` is a store id (hex), never a name.
    pub fn vm_dir(&self, id: &str) -> PathBuf {
        debug_assert!(
            !id.is_empty() && !id.contains('/') && id != "." && id != "..",
            "vm id {id:?} is not a single path component"
        );
        self.vms_dir.join(id)
    }

    /// The directory of one snapshot: `snapshots/<id>/`. `id` is a store
    /// id.
    pub fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.state_dir
            .join(banger_proto::layout::SNAPSHOTS_DIR)
            .join(id_component("snapshot", id))
    }

    /// The directory of one kernel: `kernels/<id>/`. `id` is a store id.
    pub fn kernel_dir(&self, id: &str) -> PathBuf {
        self.kernels_dir.join(id_component("kernel", id))
    }

    /// `kernels/<id>/kernel`: the kernel image a VM boots.
    pub fn kernel_file(&self, id: &str) -> PathBuf {
        self.kernel_dir(id).join(KERNEL_FILE)
    }

    /// `kernels/<id>/initrd`: the kernel's initrd, where it has one.
    pub fn kernel_initrd(&self, id: &str) -> PathBuf {
        self.kernel_dir(id).join(INITRD_FILE)
    }

    /// Where kernel staging directories go (`kernels/.staging/`): on the same
    /// filesystem as `kernels/`, so publication is a rename.
    pub fn kernels_staging_dir(&self) -> PathBuf {
        self.kernels_dir.join(STAGING_DIR)
    }

    /// The directory of one image: `images/<id>/`. `id` is a store id.
    pub fn image_dir(&self, id: &str) -> PathBuf {
        self.images_dir.join(id_component("image", id))
    }

    /// `images/<id>/rootfs.ext4`: the image's root filesystem.
    pub fn image_rootfs(&self, id: &str) -> PathBuf {
        self.image_dir(id).join(ROOTFS_FILE)
    }

    /// `images/<id>/work-seed.ext4`: the managed work-disk seed, once built.
    pub fn image_work_seed(&self, id: &str) -> PathBuf {
        self.image_dir(id).join(WORK_SEED_FILE)
    }

    /// `images/<id>/initrd`: an initrd the image boots with instead of its
    /// kernel's, where it has one.
    pub fn image_initrd(&self, id: &str) -> PathBuf {
        self.image_dir(id).join(INITRD_FILE)
    }

    /// Where image staging directories go (`images/.staging/`).
    pub fn images_staging_dir(&self) -> PathBuf {
        self.images_dir.join(STAGING_DIR)
    }

    /// Create the state directory (and its `images/`, `kernels/`, `vms/`,
    /// `ssh/`) with mode 0700 and the runtime directory with mode 0755 where
    /// missing, owned by `owner_uid:owner_gid`. Existing directories are
    /// checked, not changed: a symlink, a non-directory, another owner, or
    /// group/other write permission is an error.
    pub fn ensure(&self, owner_uid: u32, owner_gid: u32) -> Result<(), LayoutError> {
        for (what, path) in [
            ("state directory", &self.state_dir),
            ("runtime directory", &self.runtime_dir),
        ] {
            if !path.is_absolute() {
                return Err(LayoutError::Relative {
                    what,
                    path: path.clone(),
                });
            }
        }
        let ssh_dir = self.known_hosts.parent().unwrap_or(&self.state_dir);
        let dirs = [
            (&*self.state_dir, STATE_MODE),
            (&*self.images_dir, STATE_MODE),
            (&*self.kernels_dir, STATE_MODE),
            (&*self.vms_dir, STATE_MODE),
            (ssh_dir, STATE_MODE),
            (&*self.runtime_dir, RUNTIME_MODE),
        ];
        for (dir, mode) in dirs {
            ensure_dir(dir, mode, owner_uid, owner_gid)?;
        }
        Ok(())
    }
}

/// File names inside a kernel's or an image's directory: those of
/// `banger_proto::layout`, with which the executor derives the same paths
/// from ids, so they never change.
pub use banger_proto::layout::{
    INITRD as INITRD_FILE, KERNEL as KERNEL_FILE, ROOTFS as ROOTFS_FILE,
    WORK_SEED as WORK_SEED_FILE,
};
/// Staging directories under `images/` and `kernels/`; starts with a dot, so
/// it can never be a store id.
pub const STAGING_DIR: &str = ".staging";

fn id_component<'a>(what: &str, id: &'a str) -> &'a str {
    debug_assert!(
        !id.is_empty() && !id.contains('/') && !id.starts_with('.'),
        "{what} id {id:?} is not a single path component"
    );
    id
}

fn ensure_dir(path: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), LayoutError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => check_existing(path, &meta, uid),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path, mode, uid, gid),
        Err(source) => Err(LayoutError::Inspect {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn check_existing(path: &Path, meta: &std::fs::Metadata, uid: u32) -> Result<(), LayoutError> {
    let path_buf = || path.to_path_buf();
    if meta.file_type().is_symlink() {
        return Err(LayoutError::Symlink { path: path_buf() });
    }
    if !meta.is_dir() {
        return Err(LayoutError::NotADirectory { path: path_buf() });
    }
    if meta.uid() != uid {
        return Err(LayoutError::WrongOwner {
            path: path_buf(),
            found: meta.uid(),
            expected: uid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(LayoutError::TooOpen {
            path: path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Create `path` (and missing parents, which get the same mode) and hand the
/// new directory to the owner. The mode is set explicitly so the umask does
/// not widen or narrow it.
fn create(path: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), LayoutError> {
    let create_err = |source| LayoutError::Create {
        path: path.to_path_buf(),
        source,
    };
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(create_err)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(create_err)?;
    let meta = std::fs::symlink_metadata(path).map_err(|source| LayoutError::Inspect {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.uid() != uid || meta.gid() != gid {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| {
            LayoutError::Chown {
                path: path.to_path_buf(),
                uid,
                gid,
                source,
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use banger_proto::install::{InstallPaths, Owner};

    use super::*;

    /// uid/gid of the test process, read from a directory it created.
    fn me(dir: &Path) -> (u32, u32) {
        let m = std::fs::metadata(dir).unwrap();
        (m.uid(), m.gid())
    }

    fn mode_of(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn dev_defaults_and_derived_paths() {
        let l = Layout::dev(None, None).unwrap();
        assert_eq!(l.mode, Mode::Dev);
        assert_eq!(l.state_dir, Path::new("/var/lib/banger-dev"));
        assert_eq!(l.socket, Path::new(DEV_SOCKET));
        assert_eq!(l.store_path, Path::new("/var/lib/banger-dev/store.db"));
        assert_eq!(
            l.known_hosts,
            Path::new("/var/lib/banger-dev/ssh/known_hosts")
        );
        assert_eq!(l.vm_dir("ab12"), Path::new("/var/lib/banger-dev/vms/ab12"));
        assert_eq!(
            l.kernel_file("k1"),
            Path::new("/var/lib/banger-dev/kernels/k1/kernel")
        );
        assert_eq!(
            l.kernel_initrd("k1"),
            Path::new("/var/lib/banger-dev/kernels/k1/initrd")
        );
        assert_eq!(
            l.image_rootfs("i1"),
            Path::new("/var/lib/banger-dev/images/i1/rootfs.ext4")
        );
        assert_eq!(
            l.image_work_seed("i1"),
            Path::new("/var/lib/banger-dev/images/i1/work-seed.ext4")
        );
        assert_eq!(
            l.images_staging_dir(),
            Path::new("/var/lib/banger-dev/images/.staging")
        );
        assert_eq!(
            l.kernels_staging_dir(),
            Path::new("/var/lib/banger-dev/kernels/.staging")
        );
        assert_eq!(l.root_socket, None);
    }

    #[test]
    fn relative_dev_dirs_are_made_absolute() {
        let l = Layout::dev(Some("st".into()), Some("rt".into())).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(l.state_dir, cwd.join("st"));
        assert_eq!(l.socket, cwd.join("rt").join("bangerd.sock"));
    }

    #[test]
    fn system_layouts() {
        let d = Layout::system_default();
        assert_eq!(d.socket, Path::new(SYSTEM_SOCKET));
        assert_eq!(d.store_path, Path::new("/var/lib/banger/store.db"));
        assert_eq!(
            d.root_socket.as_deref(),
            Some(Path::new("/run/banger-root/root.sock"))
        );

        let meta = InstallMeta {
            owner: Owner {
                name: "dev".into(),
                uid: 1000,
                gid: 1000,
            },
            version: "0.1.0".into(),
            installed_at: "2026-01-01T00:00:00Z".into(),
            paths: InstallPaths {
                bin_dir: "/usr/local/bin".into(),
                state_dir: "/srv/banger".into(),
                runtime_dir: "/run/b".into(),
                root_socket: "/run/b/root.sock".into(),
                root_state_dir: "/var/lib/banger-root".into(),
                state_dev: None,
            },
            vmm: Default::default(),
            network: Default::default(),
            jail: Default::default(),
        };
        let l = Layout::system(&meta);
        assert_eq!(l.mode, Mode::System);
        assert_eq!(l.images_dir, Path::new("/srv/banger/images"));
        assert_eq!(l.socket, Path::new("/run/b/bangerd.sock"));
        assert_eq!(
            l.root_socket.as_deref(),
            Some(Path::new("/run/b/root.sock"))
        );
    }

    #[test]
    fn ensure_creates_dirs_with_modes_and_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let (uid, gid) = me(tmp.path());
        let l = Layout::dev(
            Some(tmp.path().join("a/state")),
            Some(tmp.path().join("run")),
        )
        .unwrap();
        l.ensure(uid, gid).unwrap();
        for d in [&l.state_dir, &l.images_dir, &l.kernels_dir, &l.vms_dir] {
            assert_eq!(mode_of(d), 0o700, "{}", d.display());
        }
        assert_eq!(mode_of(l.known_hosts.parent().unwrap()), 0o700);
        assert_eq!(mode_of(&l.runtime_dir), 0o755);
        l.ensure(uid, gid).unwrap();
    }

    #[test]
    fn ensure_refuses_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let (uid, gid) = me(tmp.path());
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = tmp.path().join("state");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let l = Layout::dev(Some(link.clone()), Some(tmp.path().join("run"))).unwrap();
        let err = l.ensure(uid, gid).unwrap_err();
        assert!(
            matches!(&err, LayoutError::Symlink { path } if *path == link),
            "{err}"
        );
    }

    #[test]
    fn ensure_refuses_another_owner_and_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let (uid, gid) = me(tmp.path());
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        let l = Layout::dev(Some(state.clone()), Some(tmp.path().join("run"))).unwrap();
        let err = l.ensure(uid + 1, gid).unwrap_err();
        assert!(
            matches!(&err, LayoutError::WrongOwner { found, expected, .. } if *found == uid && *expected == uid + 1),
            "{err}"
        );
        assert_eq!(me(&state), (uid, gid));
        assert!(!l.images_dir.exists());
    }

    #[test]
    fn ensure_refuses_a_file_and_a_world_writable_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let (uid, gid) = me(tmp.path());
        let file = tmp.path().join("state");
        std::fs::write(&file, "").unwrap();
        let l = Layout::dev(Some(file), Some(tmp.path().join("run"))).unwrap();
        assert!(matches!(
            l.ensure(uid, gid),
            Err(LayoutError::NotADirectory { .. })
        ));

        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let l = Layout::dev(Some(open.clone()), Some(tmp.path().join("run"))).unwrap();
        let err = l.ensure(uid, gid).unwrap_err();
        assert!(
            matches!(err, LayoutError::TooOpen { mode: 0o777, .. }),
            "{err}"
        );
        assert_eq!(mode_of(&open), 0o777);
    }

    #[test]
    fn ensure_refuses_relative_paths() {
        let mut l = Layout::system_default();
        l.state_dir = "relative".into();
        assert!(matches!(l.ensure(0, 0), Err(LayoutError::Relative { .. })));
    }
}
