//! The host guard of issue #13 finding 8: what keeps the host's udev rules
//! (blkid and `/dev/disk/by-*`, LVM autoactivation, md, btrfs, udisks,
//! systemd's device units, inotify re-probing) and LVM's command-line scans
//! off the block devices banger attaches over guest-written disks.
//!
//! Two texts, both pure functions of the install's paths (and, for LVM, of
//! the host's current `global_filter`):
//! * a udev rule that matches only what root set — a loop device's backing
//!   file under banger's state directories, a dm device named
//!   `banger-<vm_id>` — never disk contents, and sets only "leave it
//!   alone" properties, so a device matched by mistake is merely ignored by
//!   the host, never given access (no `OWNER`, `MODE` or `RUN`);
//! * a marked block for `lvmlocal.conf` whose `global_filter` rejects
//!   `/dev/mapper/banger-*` and the `/dev/banger/<kernel name>` link the
//!   rule gives each matched device (one rejected alias hides a device from
//!   LVM), ahead of whatever filter the admin had.
//!
//! `banger system install` writes both, `uninstall` removes them, `system
//! status` and the doctor compare what is there with what this module
//! renders ([`udev_rule_state`], [`lvm_filter_state`]).

use std::io::{self, Read as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

use banger_proto::vmops::DM_NAME_PREFIX;

use crate::runner::{Cmd, RunError, Runner, resolve};

/// The rule file. `10-` sorts it before every rule that probes a block
/// device (`60-persistent-storage`, `69-lvm`, `80-udisks2`, `99-systemd`).
pub const UDEV_RULE_FILE: &str = "/etc/udev/rules.d/10-banger.rules";
/// udevd listens here; without it no udevd runs and nothing is reloaded.
pub const UDEV_CONTROL: &str = "/run/udev/control";
/// LVM's configuration directory (lvm2 ships `lvm.conf` and
/// `lvmlocal.conf` there).
pub const LVM_DIR: &str = "/etc/lvm";
/// The file banger's block goes into: LVM reads it after `lvm.conf`, and a
/// `global_filter` there replaces `lvm.conf`'s outright.
pub const LVM_LOCAL_CONF: &str = "/etc/lvm/lvmlocal.conf";
/// The directory of the links the rule makes: `/dev/banger/<kernel name>`.
pub const LINK_DIR: &str = "/dev/banger";

const BEGIN: &str =
    "# BEGIN banger (written by `banger system install`; removed by `banger system uninstall`)";
const END: &str = "# END banger";
/// LVM's own default filter: accept everything.
const ACCEPT_ALL: &str = "a|.*|";

#[derive(Debug, thiserror::Error)]
pub enum DevGuardError {
    #[error(
        "state directory {path:?} cannot go into the udev rule: only absolute paths of \
         A-Z a-z 0-9 . _ + - @ / are accepted (no glob characters)"
    )]
    BadDir { path: String },
    #[error("lvmconfig printed a global_filter banger cannot read: {text:?}")]
    BadFilter { text: String },
    #[error("asking lvmconfig for the host's LVM global_filter")]
    Lvmconfig(#[source] RunError),
    #[error(
        "the host's LVM global_filter has a pattern banger will not copy into its own block \
         ({pattern:?}: a quote, backslash or control character); add banger's patterns \
         first in your global_filter by hand: {}",
        quoted(&banger_patterns())
    )]
    UnsafePattern { pattern: String },
    #[error(
        "{path} sets global_filter outside banger's block, and two global_filter settings in \
         one file do not combine; put banger's patterns first in yours ({}) or move yours to \
         lvm.conf, then run install again",
        quoted(&banger_patterns())
    )]
    FilterInLocal { path: String },
    #[error("{path} has a `{BEGIN}` line without its `{END}`; fix the file by hand")]
    Unterminated { path: String },
}

fn quoted(patterns: &[String]) -> String {
    patterns
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A directory as a udev glob prefix: absolute, allow-listed characters,
/// no trailing slash.
fn glob_dir(dir: &Path) -> Result<String, DevGuardError> {
    let s = dir.to_string_lossy();
    let bad = || DevGuardError::BadDir {
        path: s.to_string(),
    };
    let ok = s.starts_with('/')
        && s.len() > 1
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-@/".contains(c))
        && !s.split('/').any(|part| part == "..");
    if !ok {
        return Err(bad());
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// The udev rule for an install whose state lives under `dirs` (the owner's
/// and the helper's state directories). The executor attaches every loop
/// device through its own hard link in a root-only `root-loops/` directly
/// in the owner's state dir (`<vm_id>.origin`, `.cow`): the owner can at
/// most rename that directory within the state dir, so the backing file
/// stays under `<state_dir>/*` (udev's glob `*` matches across `/`).
pub fn udev_rule(dirs: &[&Path]) -> Result<String, DevGuardError> {
    let globs = dirs
        .iter()
        .map(|d| glob_dir(d).map(|g| format!("{g}/*")))
        .collect::<Result<Vec<_>, _>>()?
        .join("|");
    let link = LINK_DIR.trim_start_matches("/dev/");
    Ok(format!(
        r#"# Written by `banger system install`; removed by `banger system uninstall`.
# Keeps the host's udev rules (blkid and /dev/disk/by-*, LVM autoactivation,
# md, btrfs, udisks, systemd device units, inotify re-probing) off the disks
# banger attaches for VMs, whose contents a guest wrote. Matches only what
# root set (a loop device's backing file under banger's state directories,
# a dm device's name), never disk contents, and sets only "leave it alone"
# properties: a device matched by mistake is merely ignored by the host.
ACTION=="remove", GOTO="banger_end"
SUBSYSTEM!="block", GOTO="banger_end"
KERNEL=="loop[0-9]*", ATTRS{{loop/backing_file}}=="{globs}", GOTO="banger_ignore"
KERNEL=="dm-[0-9]*", ATTR{{dm/name}}=="{DM_NAME_PREFIX}*", GOTO="banger_ignore"
GOTO="banger_end"

LABEL="banger_ignore"
ENV{{BANGER_DEVICE}}="1"
ENV{{UDEV_DISABLE_PERSISTENT_STORAGE_RULES_FLAG}}="1"
ENV{{DM_UDEV_DISABLE_DISK_RULES_FLAG}}="1"
ENV{{DM_UDEV_DISABLE_OTHER_RULES_FLAG}}="1"
ENV{{SYSTEMD_READY}}="0"
ENV{{UDISKS_IGNORE}}="1"
OPTIONS:="nowatch"
SYMLINK+="{link}/%k"

LABEL="banger_end"
"#
    ))
}

/// banger's reject patterns, in the order they go first in `global_filter`.
pub fn banger_patterns() -> Vec<String> {
    vec![
        format!("r|^/dev/mapper/{DM_NAME_PREFIX}[0-9a-f]+$|"),
        format!("r|^{LINK_DIR}/|"),
    ]
}

/// Parse `lvmconfig --type full devices/global_filter` output:
/// `global_filter=["a|.*|","r|x|"]`, or `global_filter="r|x|"` for one
/// pattern.
pub fn parse_filter(output: &str) -> Result<Vec<String>, DevGuardError> {
    let bad = || DevGuardError::BadFilter {
        text: output.to_string(),
    };
    let value = output
        .trim()
        .strip_prefix("global_filter")
        .map(str::trim_start)
        .and_then(|v| v.strip_prefix('='))
        .ok_or_else(bad)?
        .trim();
    let (inner, list) = match value.strip_prefix('[') {
        Some(rest) => (rest.strip_suffix(']').ok_or_else(bad)?, true),
        None => (value, false),
    };
    let mut items = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let body = rest.strip_prefix('"').ok_or_else(bad)?;
        let end = body.find('"').ok_or_else(bad)?;
        let item = &body[..end];
        if item.contains('\\') {
            return Err(DevGuardError::UnsafePattern {
                pattern: item.to_string(),
            });
        }
        items.push(item.to_string());
        rest = body[end + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return Err(bad());
        }
    }
    if !list && items.len() != 1 {
        return Err(bad());
    }
    Ok(items)
}

/// The filter banger's block sets, given the one in effect now: banger's
/// patterns first, then the admin's (banger's own, from an earlier
/// install, dropped; LVM's default accept-all dropped, as it is implied).
pub fn merged_filter(current: &[String]) -> Result<Vec<String>, DevGuardError> {
    let ours = banger_patterns();
    let theirs: Vec<&String> = current.iter().filter(|p| !ours.contains(p)).collect();
    let mut out = ours;
    if theirs.len() == 1 && theirs[0] == ACCEPT_ALL {
        return Ok(out);
    }
    for p in theirs {
        if p.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
            return Err(DevGuardError::UnsafePattern { pattern: p.clone() });
        }
        out.push(p.clone());
    }
    Ok(out)
}

/// Whether `filter` (as in effect) starts with banger's patterns.
pub fn filter_guards(filter: &[String]) -> bool {
    filter.starts_with(&banger_patterns())
}

/// The marked block for `lvmlocal.conf`.
pub fn lvm_block(filter: &[String]) -> String {
    format!(
        "{BEGIN}\ndevices {{\n\tglobal_filter = [ {} ]\n}}\n{END}\n",
        quoted(filter)
    )
}

/// `text` without banger's block, and the block (marker lines included)
/// if there was one. `path` names the file in errors.
pub fn split_block(text: &str, path: &str) -> Result<(String, Option<String>), DevGuardError> {
    let mut rest = String::new();
    let mut block: Option<String> = None;
    let mut inside = false;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        if !inside && bare == BEGIN {
            inside = true;
            block = Some(String::new());
        }
        if inside {
            block.get_or_insert_with(String::new).push_str(line);
            if bare == END {
                inside = false;
            }
        } else {
            rest.push_str(line);
        }
    }
    if inside {
        return Err(DevGuardError::Unterminated {
            path: path.to_string(),
        });
    }
    Ok((rest, block))
}

/// Whether `text` (banger's block removed) sets `global_filter` itself.
pub fn sets_global_filter(text: &str) -> bool {
    text.lines().any(|l| {
        let code = l.split('#').next().unwrap_or("");
        code.trim_start().starts_with("global_filter")
    })
}

/// `rest` (a file without banger's block) with `block` appended.
pub fn with_block(rest: &str, block: &str) -> String {
    let mut out = rest.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(block);
    out
}

/// Whether lvm2 is installed where `lvm_dir` (its configuration directory,
/// possibly under an install's `--root`) is: `lvmconfig` on the path and the
/// directory present.
pub fn lvm_present(lvm_dir: &Path) -> bool {
    resolve("lvmconfig".as_ref()).is_some() && lvm_dir.is_dir()
}

/// The `global_filter` LVM uses with the configuration in `lvm_dir`, as
/// `lvmconfig` reads it.
pub fn effective_filter(runner: &Runner, lvm_dir: &Path) -> Result<Vec<String>, DevGuardError> {
    let out = runner
        .run(
            &Cmd::new("lvmconfig")
                .args(["--type", "full", "devices/global_filter"])
                .env("LVM_SYSTEM_DIR", lvm_dir),
        )
        .map_err(DevGuardError::Lvmconfig)?;
    parse_filter(&out.stdout)
}

/// A configuration file and its mode, read without following a symlink
/// (`None`: absent).
pub fn read_nofollow(path: &Path) -> io::Result<Option<(String, u32)>> {
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mode = f.metadata()?.mode() & 0o7777;
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    Ok(Some((text, mode)))
}

/// One part of the guard as found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardState {
    Current,
    Missing,
    /// There, but not what this version writes (or not in effect): why.
    Stale(String),
}

impl GuardState {
    pub fn as_str(&self) -> &'static str {
        match self {
            GuardState::Current => "current",
            GuardState::Missing => "missing",
            GuardState::Stale(_) => "stale",
        }
    }
}

/// The rule at `rule_file` against what `dirs` render.
pub fn udev_rule_state(rule_file: &Path, dirs: &[&Path]) -> GuardState {
    let want = match udev_rule(dirs) {
        Ok(w) => w,
        Err(e) => return GuardState::Stale(e.to_string()),
    };
    match std::fs::read_to_string(rule_file) {
        Ok(have) if have == want => GuardState::Current,
        Ok(_) => GuardState::Stale("its text is not what this version writes".into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => GuardState::Missing,
        Err(e) => GuardState::Stale(e.to_string()),
    }
}

/// banger's LVM filter with the configuration in `lvm_dir` (`None`: no
/// lvm2 here): current when the filter LVM uses starts with banger's
/// patterns (from banger's block in `lvmlocal.conf`, or from the admin's
/// own filter); missing when it does not and there is no block; stale when
/// there is a block but it is not in effect.
pub fn lvm_filter_state(runner: &Runner, lvm_dir: &Path) -> Option<GuardState> {
    if !lvm_present(lvm_dir) {
        return None;
    }
    let local = lvm_dir.join("lvmlocal.conf");
    let name = local.display().to_string();
    let block = match read_nofollow(&local) {
        Err(e) => return Some(GuardState::Stale(format!("reading {name}: {e}"))),
        Ok(t) => match split_block(&t.map(|(t, _)| t).unwrap_or_default(), &name) {
            Err(e) => return Some(GuardState::Stale(e.to_string())),
            Ok((_, block)) => block.is_some(),
        },
    };
    Some(match effective_filter(runner, lvm_dir) {
        Ok(f) if filter_guards(&f) => GuardState::Current,
        Ok(f) if block => GuardState::Stale(format!(
            "lvmconfig reports global_filter {f:?}, which does not start with banger's patterns"
        )),
        Ok(_) => GuardState::Missing,
        Err(e) => GuardState::Stale(banger_proto::error::chain(&e).join(": ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_names_both_state_dirs_and_banger_dm_names() {
        let rule = udev_rule(&[
            Path::new("/var/lib/banger"),
            Path::new("/var/lib/banger-root/"),
        ])
        .unwrap();
        assert!(rule.contains(
            r#"KERNEL=="loop[0-9]*", ATTRS{loop/backing_file}=="/var/lib/banger/*|/var/lib/banger-root/*", GOTO="banger_ignore""#
        ));
        assert!(rule.contains(r#"ATTR{dm/name}=="banger-*""#));
        assert!(rule.contains(r#"SYMLINK+="banger/%k""#));
        assert!(rule.contains(r#"OPTIONS:="nowatch""#));
        // It grants nothing.
        for key in ["OWNER", "GROUP", "MODE", "RUN", "PROGRAM", "IMPORT"] {
            assert!(!rule.contains(key), "{key} in the rule");
        }
    }

    #[test]
    fn glob_characters_and_odd_paths_are_refused() {
        for bad in [
            "/var/lib/ban*ger",
            "/var/lib/b?",
            "/var/[lib]",
            "/a|/b",
            "relative/dir",
            "/",
            "/var/lib/\"x",
            "/var/lib/x\ny",
            "/var/../etc",
            "/var/lib/a b",
        ] {
            let err = udev_rule(&[Path::new(bad)]).unwrap_err();
            assert!(matches!(err, DevGuardError::BadDir { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn lvmconfig_output_parses() {
        let check = |text: &str, want: &[&str]| {
            assert_eq!(parse_filter(text).unwrap(), want, "{text}");
        };
        check("global_filter=[\"a|.*|\"]\n", &["a|.*|"]);
        check("global_filter=\"r|^/dev/sdz|\"\n", &["r|^/dev/sdz|"]);
        check(
            "global_filter=[\"r|^/dev/x|\", \"a|.*|\"]",
            &["r|^/dev/x|", "a|.*|"],
        );
        check("global_filter=[]", &[]);
        for bad in [
            "",
            "filter=[\"a|.*|\"]",
            "global_filter=[\"a",
            "global_filter=x",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            parse_filter(r#"global_filter=["r|\"x|"]"#),
            Err(DevGuardError::UnsafePattern { .. })
        ));
    }

    #[test]
    fn banger_patterns_go_first_and_the_admins_follow() {
        let ours = banger_patterns();
        assert_eq!(merged_filter(&["a|.*|".into()]).unwrap(), ours);
        assert_eq!(merged_filter(&[]).unwrap(), ours);
        let admin = vec!["r|^/dev/sdz|".to_string(), "a|.*|".to_string()];
        let merged = merged_filter(&admin).unwrap();
        assert_eq!(merged[..2], ours[..]);
        assert_eq!(merged[2..], admin[..]);
        // Reinstalling over banger's own block changes nothing.
        assert_eq!(merged_filter(&merged).unwrap(), merged);
        assert!(filter_guards(&merged));
        assert!(!filter_guards(&admin));
        // An admin list that accepts first would hide nothing after ours:
        // ours still come first.
        let m = merged_filter(&["a|^/dev/banger/|".into()]).unwrap();
        assert!(filter_guards(&m));
    }

    #[test]
    fn the_block_is_added_replaced_and_removed_whole() {
        let admin = "# site settings\nlocal {\n}\n";
        let block = lvm_block(&banger_patterns());
        let once = with_block(admin, &block);
        assert!(once.starts_with(admin) && once.ends_with(&block));
        let (rest, found) = split_block(&once, "f").unwrap();
        assert_eq!(
            (rest.as_str(), found.as_deref()),
            (admin, Some(block.as_str()))
        );
        // A file without a final newline keeps its last line whole.
        let (rest, _) = split_block(&with_block("local {}", &block), "f").unwrap();
        assert_eq!(rest, "local {}\n");
        let err = split_block(&format!("{admin}{BEGIN}\ndevices {{\n"), "f").unwrap_err();
        assert!(matches!(err, DevGuardError::Unterminated { .. }), "{err}");
        assert!(block.contains(
            "global_filter = [ \"r|^/dev/mapper/banger-[0-9a-f]+$|\", \"r|^/dev/banger/|\" ]"
        ));
    }

    #[test]
    fn the_rule_on_disk_is_judged_against_the_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("10-banger.rules");
        let dirs = [
            Path::new("/var/lib/banger"),
            Path::new("/var/lib/banger-root"),
        ];
        assert_eq!(udev_rule_state(&file, &dirs), GuardState::Missing);
        let rule = udev_rule(&dirs).unwrap();
        std::fs::write(&file, &rule).unwrap();
        assert_eq!(udev_rule_state(&file, &dirs), GuardState::Current);
        std::fs::write(&file, rule.replace("/var/lib/banger/*|", "")).unwrap();
        assert!(matches!(
            udev_rule_state(&file, &dirs),
            GuardState::Stale(_)
        ));
    }

    #[test]
    fn a_global_filter_outside_the_block_is_seen() {
        assert!(sets_global_filter(
            "devices {\n  global_filter = [ \"a|.*|\" ]\n}\n"
        ));
        assert!(!sets_global_filter(
            "devices {\n  # global_filter = [ \"a|.*|\" ]\n}\n"
        ));
        assert!(!sets_global_filter("local {\n}\n"));
    }
}
