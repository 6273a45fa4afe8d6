//! What an install writes, decided before anything is touched: the owner
//! account, the install metadata, and the list of directories and files with
//! their owners and modes. Everything here is a pure function of its inputs
//! except [`lookup_owner`] (the password database) and the existence check of
//! the binaries to copy.

use std::path::{Path, PathBuf};

use banger_host::devguard::{self, DevGuardError};
use banger_host::runner::{Cmd, RunError, Runner};
use banger_proto::install::{DEFAULT_INSTALL_FILE, InstallMeta, InstallPaths, Owner};

use super::units::{self, HELPER_UNIT, OWNER_UNIT, UnitError, VMS_UNIT};

/// Where the binaries go.
pub const BIN_DIR: &str = "/usr/local/bin";
/// Owner-owned state (`StateDirectory=banger`).
pub const STATE_DIR: &str = "/var/lib/banger";
/// `bangerd.sock` lives here (`RuntimeDirectory=banger`, owner-owned).
pub const RUNTIME_DIR: &str = "/run/banger";
/// The helper's socket, in a root-owned directory of its own
/// (`RuntimeDirectory=banger-root`).
pub const ROOT_SOCKET: &str = "/run/banger-root/root.sock";
/// The helper's journal of host objects (`StateDirectory=banger-root`).
pub const ROOT_STATE_DIR: &str = "/var/lib/banger-root";
/// Where the units go.
pub const UNIT_DIR: &str = "/etc/systemd/system";
/// The binaries an install copies, from the directory of the running `banger`.
/// `banger-imagebuild` is the default-image builder the helper runs as root
/// (`ImageOp::BuildDebianImage`).
pub const BINARIES: [&str; 4] = ["bangerd", "bangerd-root", "banger", "banger-imagebuild"];

/// Mode of root-owned directories and world-readable files.
const DIR_MODE: u32 = 0o755;
const PRIVATE_DIR_MODE: u32 = 0o700;
const BIN_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("no owner given: pass --owner USER, or run through sudo so that SUDO_USER names you")]
    OwnerRequired,
    #[error("looking up user {name} in the password database")]
    Lookup {
        name: String,
        #[source]
        source: RunError,
    },
    #[error("user {name} does not exist; pass --owner with an existing user's name")]
    OwnerUnknown { name: String },
    #[error("`getent passwd {name}` printed an entry banger cannot read: {line:?}")]
    BadEntry { name: String, line: String },
    #[error(
        "user {name} has uid 0; banger's owner must be an ordinary user (bangerd never runs as root)"
    )]
    OwnerIsRoot { name: String },
    #[error(
        "user {name} has primary group 0 (root); banger's owner needs a group of its own: the helper's socket is shared with the owner's group, and tools and VMMs run with it"
    )]
    OwnerGroupIsRoot { name: String },
    #[error("finding the directory of the running banger")]
    CurrentExe(#[source] std::io::Error),
    #[error(
        "{name} is missing from {}; install needs bangerd, bangerd-root, banger and banger-imagebuild side by side (build them with `cargo build --workspace --bins`)",
        dir.display()
    )]
    BinaryMissing { name: &'static str, dir: PathBuf },
    #[error("writing the units")]
    Unit(#[from] UnitError),
    #[error("writing the udev rule that keeps the host off banger's devices")]
    UdevRule(#[source] DevGuardError),
}

/// The owner as the password database knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerAccount {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// `--owner`, else `$SUDO_USER` (empty counts as unset).
pub fn choose_owner(given: Option<&str>, sudo_user: Option<&str>) -> Result<String, PlanError> {
    given
        .or(sudo_user)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or(PlanError::OwnerRequired)
}

/// One `getent passwd` line: `name:pw:uid:gid:gecos:home:shell`.
pub fn parse_passwd_line(line: &str) -> Option<OwnerAccount> {
    let f: Vec<&str> = line.trim_end_matches('\n').split(':').collect();
    if f.len() != 7 || f[0].is_empty() {
        return None;
    }
    Some(OwnerAccount {
        name: f[0].to_string(),
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        home: PathBuf::from(f[5]),
    })
}

/// Look the owner up with `getent passwd` (so NSS sources such as LDAP
/// count), on the running system, never under `--root`. A name or a numeric
/// uid is accepted. Root is refused.
pub fn lookup_owner(runner: &Runner, name: &str) -> Result<OwnerAccount, PlanError> {
    let lookup = |source| PlanError::Lookup {
        name: name.to_string(),
        source,
    };
    // `--` so a name starting with `-` is never taken for an option.
    let out = runner
        .output(&Cmd::new("getent").args(["passwd", "--", name]))
        .map_err(lookup)?;
    // getent: 0 found, 2 no such key; anything else is a failure.
    match out.status.code() {
        Some(0) => {}
        Some(2) => {
            return Err(PlanError::OwnerUnknown {
                name: name.to_string(),
            });
        }
        _ => {
            return Err(lookup(RunError::Failed {
                argv: format!("getent passwd -- {name}"),
                status: out.status,
                stderr: out.stderr.trim().to_string(),
            }));
        }
    }
    let line = out.stdout.lines().next().unwrap_or("");
    let account = parse_passwd_line(line).ok_or_else(|| PlanError::BadEntry {
        name: name.to_string(),
        line: line.to_string(),
    })?;
    if account.uid == 0 {
        return Err(PlanError::OwnerIsRoot { name: account.name });
    }
    if account.gid == 0 {
        return Err(PlanError::OwnerGroupIsRoot { name: account.name });
    }
    Ok(account)
}

/// `secs` since the epoch as RFC 3339 UTC, `YYYY-MM-DDThh:mm:ssZ`.
pub fn rfc3339_utc(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// The install metadata for `owner`, at the standard system paths.
pub fn metadata(owner: &OwnerAccount, installed_at: String) -> InstallMeta {
    InstallMeta {
        owner: Owner {
            name: owner.name.clone(),
            uid: owner.uid,
            gid: owner.gid,
        },
        version: banger_proto::BANGER_VERSION.to_string(),
        installed_at,
        paths: default_paths(),
        // Chosen by `install` (vmm_bins, network).
        vmm: Default::default(),
        network: Default::default(),
        jail: Default::default(),
    }
}

/// The standard system paths an install uses (and `status`/`uninstall`
/// fall back to when the metadata is gone).
pub fn default_paths() -> InstallPaths {
    InstallPaths {
        bin_dir: BIN_DIR.into(),
        state_dir: STATE_DIR.into(),
        runtime_dir: RUNTIME_DIR.into(),
        root_socket: ROOT_SOCKET.into(),
        root_state_dir: ROOT_STATE_DIR.into(),
        state_dev: None,
    }
}

/// A directory the install makes sure of. Existing ones are checked, never
/// changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSpec {
    /// What it is, for messages.
    pub what: &'static str,
    /// The system path (not prefixed by `--root`).
    pub target: PathBuf,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What a file is written from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Bytes(Vec<u8>),
    /// Copied from this file (the binaries).
    CopyOf(PathBuf),
}

/// A file the install writes, owned by root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub what: &'static str,
    pub target: PathBuf,
    pub content: Content,
    pub mode: u32,
}

/// Everything an install writes, in order: directories, then files.
#[derive(Debug, Clone)]
pub struct Plan {
    pub meta: InstallMeta,
    pub dirs: Vec<DirSpec>,
    pub files: Vec<FileSpec>,
}

/// The directory of the running `banger`, where its sibling binaries are.
pub fn own_bin_dir() -> Result<PathBuf, PlanError> {
    let exe = std::env::current_exe().map_err(PlanError::CurrentExe)?;
    Ok(exe.parent().unwrap_or(Path::new("/")).to_path_buf())
}

/// The plan for `meta`: the binaries from `bin_source`, the units, the
/// metadata, and the layout directories. The runtime directories are not in
/// it: systemd creates them (`RuntimeDirectory=`) when the services start.
pub fn build(meta: InstallMeta, home: &Path, bin_source: &Path) -> Result<Plan, PlanError> {
    for name in BINARIES {
        if !bin_source.join(name).is_file() {
            return Err(PlanError::BinaryMissing {
                name,
                dir: bin_source.to_path_buf(),
            });
        }
    }
    let install_file = Path::new(DEFAULT_INSTALL_FILE);
    let owner_unit = units::owner_unit(&meta, install_file, home)?;
    let cgroup2 = banger_host::probe::probe_cgroup_v2().cgroup2_mount;
    let helper_unit = units::helper_unit(&meta, install_file, cgroup2.as_deref())?;
    let p = &meta.paths;
    let root_dir = |what, target: &Path, mode| DirSpec {
        what,
        target: target.to_path_buf(),
        mode,
        uid: 0,
        gid: 0,
    };
    let dirs = vec![
        root_dir("binary directory", &p.bin_dir, DIR_MODE),
        root_dir(
            "metadata directory",
            install_file.parent().unwrap_or(Path::new("/")),
            DIR_MODE,
        ),
        root_dir("unit directory", Path::new(UNIT_DIR), DIR_MODE),
        DirSpec {
            what: "state directory",
            target: p.state_dir.clone(),
            mode: PRIVATE_DIR_MODE,
            uid: meta.owner.uid,
            gid: meta.owner.gid,
        },
        root_dir(
            "helper state directory",
            &p.root_state_dir,
            PRIVATE_DIR_MODE,
        ),
        // Made even where udev is not installed yet, so the rule is in
        // place when it is.
        root_dir(
            "udev rules directory",
            Path::new(devguard::UDEV_RULE_FILE)
                .parent()
                .unwrap_or(Path::new("/")),
            DIR_MODE,
        ),
    ];
    let mut files: Vec<FileSpec> = BINARIES
        .iter()
        .map(|name| FileSpec {
            what: "binary",
            target: p.bin_dir.join(name),
            content: Content::CopyOf(bin_source.join(name)),
            mode: BIN_MODE,
        })
        .collect();
    let unit_dir = Path::new(UNIT_DIR);
    files.push(FileSpec {
        what: "unit",
        target: unit_dir.join(VMS_UNIT),
        content: Content::Bytes(units::vms_unit(cgroup2.as_deref())?.into_bytes()),
        mode: FILE_MODE,
    });
    files.push(FileSpec {
        what: "unit",
        target: unit_dir.join(HELPER_UNIT),
        content: Content::Bytes(helper_unit.into_bytes()),
        mode: FILE_MODE,
    });
    files.push(FileSpec {
        what: "unit",
        target: unit_dir.join(OWNER_UNIT),
        content: Content::Bytes(owner_unit.into_bytes()),
        mode: FILE_MODE,
    });
    // Issue #13 finding 8: the host's udev rules stay off banger's devices.
    let rule =
        devguard::udev_rule(&[&p.state_dir, &p.root_state_dir]).map_err(PlanError::UdevRule)?;
    files.push(FileSpec {
        what: "udev rule",
        target: devguard::UDEV_RULE_FILE.into(),
        content: Content::Bytes(rule.into_bytes()),
        mode: FILE_MODE,
    });
    // Last: a complete metadata file marks a complete install. Both daemons
    // read it (bangerd as the owner), so it is world-readable; it holds no
    // secrets.
    files.push(FileSpec {
        what: "install metadata",
        target: install_file.to_path_buf(),
        content: Content::Bytes(meta.to_toml().into_bytes()),
        mode: FILE_MODE,
    });
    Ok(Plan { meta, dirs, files })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> OwnerAccount {
        OwnerAccount {
            name: "dev".into(),
            uid: 1000,
            gid: 1001,
            home: "/home/dev".into(),
        }
    }

    #[test]
    fn owner_comes_from_the_flag_then_sudo_user() {
        assert_eq!(choose_owner(Some("a"), Some("b")).unwrap(), "a");
        assert_eq!(choose_owner(None, Some("b")).unwrap(), "b");
        assert!(matches!(
            choose_owner(None, Some("")),
            Err(PlanError::OwnerRequired)
        ));
        assert!(matches!(
            choose_owner(None, None),
            Err(PlanError::OwnerRequired)
        ));
    }

    #[test]
    fn passwd_lines_parse() {
        assert_eq!(
            parse_passwd_line("dev:x:1000:1001:Dev,,,:/home/dev:/bin/bash\n"),
            Some(account())
        );
        assert_eq!(parse_passwd_line("dev:x:1000:1001::/home/dev"), None);
        assert_eq!(parse_passwd_line("dev:x:abc:1001::/home/dev:/bin/sh"), None);
        assert_eq!(parse_passwd_line(""), None);
    }

    #[test]
    fn lookup_finds_real_users_and_refuses_root_and_strangers() {
        let err = lookup_owner(&Runner, "root").unwrap_err();
        assert!(matches!(err, PlanError::OwnerIsRoot { .. }), "{err}");
        let err = lookup_owner(&Runner, "0").unwrap_err();
        assert!(matches!(err, PlanError::OwnerIsRoot { .. }), "{err}");
        let err = lookup_owner(&Runner, "no-such-banger-user-x").unwrap_err();
        assert!(matches!(err, PlanError::OwnerUnknown { .. }), "{err}");
        assert!(err.to_string().contains("no-such-banger-user-x"), "{err}");
        // Debian always has `daemon` (uid 1).
        let d = lookup_owner(&Runner, "daemon").unwrap();
        assert_eq!((d.name.as_str(), d.uid), ("daemon", 1));
    }

    /// An owner in group 0 would run tools and VMMs with gid 0 and share
    /// the helper's socket with root's group: refused (second review).
    #[test]
    fn an_owner_in_the_root_group_is_refused() {
        let name = format!("bgtgid0x{}", std::process::id());
        Runner
            .run(&Cmd::new("useradd").args([
                "--system",
                "--no-create-home",
                "--gid",
                "0",
                "--shell",
                "/usr/sbin/nologin",
                &name,
            ]))
            .expect("useradd (needs root)");
        let res = lookup_owner(&Runner, &name);
        let _ = Runner.run(&Cmd::new("userdel").arg(&name));
        let err = res.unwrap_err();
        assert!(matches!(err, PlanError::OwnerGroupIsRoot { .. }), "{err}");
        assert!(err.to_string().contains(&name), "{err}");
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_798_329_600 + 3_661), "2026-12-27T01:01:01Z");
        assert_eq!(rfc3339_utc(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn plan_writes_binaries_units_and_metadata_with_modes() {
        let bins = tempfile::tempdir().unwrap();
        for b in BINARIES {
            std::fs::write(bins.path().join(b), b).unwrap();
        }
        let meta = metadata(&account(), "2026-01-01T00:00:00Z".into());
        let plan = build(meta.clone(), Path::new("/home/dev"), bins.path()).unwrap();
        let targets: Vec<_> = plan
            .files
            .iter()
            .map(|f| (f.target.to_str().unwrap(), f.mode))
            .collect();
        assert_eq!(
            targets,
            [
                ("/usr/local/bin/bangerd", 0o755),
                ("/usr/local/bin/bangerd-root", 0o755),
                ("/usr/local/bin/banger", 0o755),
                ("/usr/local/bin/banger-imagebuild", 0o755),
                ("/etc/systemd/system/banger-vms.service", 0o644),
                ("/etc/systemd/system/bangerd-root.service", 0o644),
                ("/etc/systemd/system/bangerd.service", 0o644),
                ("/etc/udev/rules.d/10-banger.rules", 0o644),
                ("/etc/banger/install.toml", 0o644),
            ]
        );
        let state = plan
            .dirs
            .iter()
            .find(|d| d.target == Path::new(STATE_DIR))
            .unwrap();
        assert_eq!((state.uid, state.gid, state.mode), (1000, 1001, 0o700));
        let root_state = plan
            .dirs
            .iter()
            .find(|d| d.target == Path::new(ROOT_STATE_DIR))
            .unwrap();
        assert_eq!((root_state.uid, root_state.mode), (0, 0o700));
        let Content::Bytes(toml) = &plan.files.last().unwrap().content else {
            panic!("metadata is generated")
        };
        let back = InstallMeta::parse(std::str::from_utf8(toml).unwrap(), Path::new("x")).unwrap();
        assert_eq!(back, meta);
    }

    /// The rule is rendered from the install's own state directories (the
    /// units already refuse glob characters there; `devguard` refuses them
    /// again).
    #[test]
    fn the_udev_rule_follows_the_state_dirs() {
        let bins = tempfile::tempdir().unwrap();
        for b in BINARIES {
            std::fs::write(bins.path().join(b), b).unwrap();
        }
        let mut meta = metadata(&account(), "t".into());
        meta.paths.state_dir = "/var/lib/banger-state".into();
        let plan = build(meta, Path::new("/home/dev"), bins.path()).unwrap();
        let rule = plan
            .files
            .iter()
            .find(|f| f.target == Path::new(devguard::UDEV_RULE_FILE))
            .unwrap();
        let Content::Bytes(text) = &rule.content else {
            panic!("the rule is generated")
        };
        let text = std::str::from_utf8(text).unwrap();
        assert!(
            text.contains(r#"=="/var/lib/banger-state/*|/var/lib/banger-root/*""#),
            "{text}"
        );
        assert!(
            plan.dirs
                .iter()
                .any(|d| d.target == Path::new("/etc/udev/rules.d") && d.uid == 0)
        );
    }

    #[test]
    fn the_metadata_paths_are_what_the_daemons_derive() {
        let meta = metadata(&account(), "t".into());
        // bangerd's socket is runtime_dir/bangerd.sock (Layout::system); the
        // CLI looks for the system daemon there.
        assert_eq!(
            meta.paths.runtime_dir.join("bangerd.sock"),
            Path::new("/run/banger/bangerd.sock")
        );
        // The helper's socket directory is not bangerd's: one is root's, the
        // other the owner's.
        assert_ne!(
            meta.paths.root_socket.parent().unwrap(),
            meta.paths.runtime_dir
        );
    }

    #[test]
    fn a_missing_binary_is_named() {
        let bins = tempfile::tempdir().unwrap();
        std::fs::write(bins.path().join("bangerd"), "").unwrap();
        std::fs::write(bins.path().join("banger"), "").unwrap();
        let meta = metadata(&account(), "t".into());
        let err = build(meta, Path::new("/home/dev"), bins.path()).unwrap_err();
        assert!(
            matches!(
                err,
                PlanError::BinaryMissing {
                    name: "bangerd-root",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("bangerd-root is missing from"));
    }
}
