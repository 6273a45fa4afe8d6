//! cgroup v2: is the unified hierarchy mounted, and with which controllers?

use std::path::{Path, PathBuf};

use super::fs_magic;

/// Where systemd (and everyone else) mounts cgroups.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// `statfs` `f_type` of cgroup2.
pub const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
/// `statfs` `f_type` of a cgroup v1 hierarchy.
pub const CGROUP_SUPER_MAGIC: u64 = 0x0027_e0eb;

/// How cgroups are laid out under [`CGROUP_ROOT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup2 is mounted at the root: pure v2.
    Unified,
    /// v1 hierarchies at the root, cgroup2 only at `unified/` (systemd's
    /// "hybrid" layout): controllers are bound to v1, so v2 has none.
    Hybrid,
    /// Only cgroup v1 hierarchies.
    Legacy,
    /// No cgroup filesystem found.
    Missing,
}

impl CgroupMode {
    /// Stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupMode::Unified => "unified",
            CgroupMode::Hybrid => "hybrid",
            CgroupMode::Legacy => "legacy",
            CgroupMode::Missing => "missing",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupProbe {
    pub mode: CgroupMode,
    /// Where cgroup2 is mounted, when it is.
    pub cgroup2_mount: Option<PathBuf>,
    /// `cgroup.controllers` of the cgroup2 root.
    pub controllers: Vec<String>,
    /// What went wrong reading the hierarchy, if anything did.
    pub error: Option<String>,
}

/// Probe [`CGROUP_ROOT`].
pub fn probe_cgroup_v2() -> CgroupProbe {
    probe_cgroup_at(Path::new(CGROUP_ROOT))
}

/// Probe the cgroup layout under `root`.
pub fn probe_cgroup_at(root: &Path) -> CgroupProbe {
    let (mode, mount) = if is_cgroup2(root) {
        (CgroupMode::Unified, Some(root.to_path_buf()))
    } else if is_cgroup2(&root.join("unified")) {
        (CgroupMode::Hybrid, Some(root.join("unified")))
    } else if has_v1(root) {
        (CgroupMode::Legacy, None)
    } else {
        let error = match fs_magic(root) {
            Ok(magic) => format!(
                "{} holds no cgroup filesystem (f_type {magic:#x})",
                root.display()
            ),
            Err(e) => format!("statfs {}: {e}", root.display()),
        };
        return CgroupProbe {
            mode: CgroupMode::Missing,
            cgroup2_mount: None,
            controllers: Vec::new(),
            error: Some(error),
        };
    };
    let mut probe = CgroupProbe {
        mode,
        cgroup2_mount: mount.clone(),
        controllers: Vec::new(),
        error: None,
    };
    if let Some(mount) = mount {
        let file = mount.join("cgroup.controllers");
        match std::fs::read_to_string(&file) {
            Ok(s) => probe.controllers = s.split_whitespace().map(str::to_string).collect(),
            Err(e) => probe.error = Some(format!("reading {}: {e}", file.display())),
        }
    }
    probe
}

/// This process's cgroup2 directory: the cgroup2 mount ([`probe_cgroup_v2`])
/// joined with the `0::` line of `/proc/self/cgroup`.
pub fn own_cgroup2_dir() -> std::io::Result<PathBuf> {
    let mount = probe_cgroup_v2()
        .cgroup2_mount
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no cgroup2 mount"))?;
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    let rel = cgroup2_path_in(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no plain cgroup2 (0::/...) line in /proc/self/cgroup: {text:?}"),
        )
    })?;
    Ok(mount.join(rel.trim_start_matches('/')))
}

/// The cgroup2 path of a `/proc/<pid>/cgroup` text: its `0::` line's,
/// absolute, without `..` or an empty component (a process outside the
/// reader's cgroup namespace shows as `/../..`), and not a deleted one.
pub fn cgroup2_path_in(text: &str) -> Option<&str> {
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let plain = path.starts_with('/')
        && !path.ends_with(" (deleted)")
        && (path == "/"
            || path[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."));
    plain.then_some(path)
}

fn is_cgroup2(dir: &Path) -> bool {
    fs_magic(dir).is_ok_and(|m| m == CGROUP2_SUPER_MAGIC)
        || dir.join("cgroup.controllers").is_file()
}

/// The root itself, or any directory directly under it, is a v1 hierarchy.
fn has_v1(root: &Path) -> bool {
    if fs_magic(root).is_ok_and(|m| m == CGROUP_SUPER_MAGIC) {
        return true;
    }
    std::fs::read_dir(root).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| fs_magic(&e.path()).is_ok_and(|m| m == CGROUP_SUPER_MAGIC))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cgroup mounts from /proc/self/mounts: (mount point, fstype).
    fn cgroup_mounts() -> Vec<(String, String)> {
        std::fs::read_to_string("/proc/self/mounts")
            .expect("/proc/self/mounts")
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (_, at, ty) = (f.next()?, f.next()?, f.next()?);
                ty.starts_with("cgroup")
                    .then(|| (at.to_string(), ty.to_string()))
            })
            .collect()
    }

    #[test]
    fn agrees_with_proc_mounts() {
        let p = probe_cgroup_v2();
        eprintln!("{p:?}");
        let mounts = cgroup_mounts();
        let v2_at = |dir: &str| mounts.iter().any(|(at, ty)| at == dir && ty == "cgroup2");
        let expected = if v2_at("/sys/fs/cgroup") {
            CgroupMode::Unified
        } else if v2_at("/sys/fs/cgroup/unified") {
            CgroupMode::Hybrid
        } else if mounts
            .iter()
            .any(|(at, ty)| at.starts_with("/sys/fs/cgroup") && ty == "cgroup")
        {
            CgroupMode::Legacy
        } else {
            CgroupMode::Missing
        };
        assert_eq!(p.mode, expected);
        if let Some(mount) = &p.cgroup2_mount {
            let listed = std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap();
            let listed: Vec<&str> = listed.split_whitespace().collect();
            assert_eq!(p.controllers, listed);
            assert_eq!(p.error, None);
        }
    }

    #[test]
    fn the_cgroup2_line_gives_the_path_and_odd_ones_none() {
        let hybrid = "9:name=systemd:/\n4:memory:/x\n0::/system.slice/a.service\n";
        assert_eq!(cgroup2_path_in(hybrid), Some("/system.slice/a.service"));
        assert_eq!(cgroup2_path_in("0::/\n"), Some("/"));
        for bad in [
            "4:memory:/x\n",
            "0::/../..\n",
            "0::relative\n",
            "0::/a//b\n",
            "0::/a/ (deleted)\n",
        ] {
            assert_eq!(cgroup2_path_in(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn own_cgroup2_dir_is_a_cgroup2_directory_listing_this_process() {
        let dir = own_cgroup2_dir().unwrap();
        assert_eq!(fs_magic(&dir).unwrap(), CGROUP2_SUPER_MAGIC);
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        let me = std::process::id().to_string();
        assert!(procs.lines().any(|l| l == me), "{me} not in {procs}");
    }

    #[test]
    fn plain_directory_is_missing_with_its_fs_type() {
        let dir = tempfile::tempdir().unwrap();
        let p = probe_cgroup_at(dir.path());
        assert_eq!(p.mode, CgroupMode::Missing);
        assert!(p.error.unwrap().contains("holds no cgroup filesystem"));
    }

    #[test]
    fn nonexistent_root_reports_the_statfs_error() {
        let p = probe_cgroup_at(Path::new("/nonexistent-banger-cgroup"));
        assert_eq!(p.mode, CgroupMode::Missing);
        assert!(p.error.unwrap().contains("No such file or directory"));
    }

    #[test]
    fn controllers_file_marks_cgroup2() {
        // A tree that looks like a cgroup2 root (as a bind of one would).
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let p = probe_cgroup_at(dir.path());
        assert_eq!(p.mode, CgroupMode::Unified);
        assert_eq!(p.controllers, ["cpuset", "cpu", "io", "memory", "pids"]);

        let hybrid = tempfile::tempdir().unwrap();
        std::fs::create_dir(hybrid.path().join("unified")).unwrap();
        std::fs::write(hybrid.path().join("unified/cgroup.controllers"), "").unwrap();
        let p = probe_cgroup_at(hybrid.path());
        assert_eq!(p.mode, CgroupMode::Hybrid);
        assert!(p.controllers.is_empty());
    }
}
