//! Host tools: is the binary there, what version is it, does it work?

use std::error::Error;
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use banger_proto::privops::ToolProbe;

use crate::runner::{Cmd, Runner, resolve};

/// Budget for one version or listing command.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(10);

/// Find `program` without running it, for tools whose mere start has side
/// effects on the host: `dmsetup` (even `--version`) creates
/// `/dev/mapper/control` when it is missing. `works` means found; there is
/// no version.
pub fn locate_tool(tool: &str, program: impl AsRef<OsStr>) -> ToolProbe {
    let program = program.as_ref();
    match resolve(program) {
        Some(path) => ToolProbe {
            tool: tool.to_string(),
            path: Some(path.display().to_string()),
            version: None,
            works: true,
            error: None,
        },
        None => ToolProbe {
            tool: tool.to_string(),
            path: None,
            version: None,
            works: false,
            error: Some(not_found(program)),
        },
    }
}

/// Find `program` (an absolute path, or a bare name looked up on
/// [`crate::runner::CHILD_PATH`]) and run it with `version_args`.
///
/// `version` is the first non-empty line of stdout, else of stderr (e2fsprogs
/// prints its version on stderr). `works` means the command exited 0.
pub fn probe_tool(
    runner: &Runner,
    tool: &str,
    program: impl AsRef<OsStr>,
    version_args: &[&str],
) -> ToolProbe {
    let program = program.as_ref();
    let Some(path) = resolve(program) else {
        return ToolProbe {
            tool: tool.to_string(),
            path: None,
            version: None,
            works: false,
            error: Some(not_found(program)),
        };
    };
    let mut probe = ToolProbe {
        tool: tool.to_string(),
        path: Some(path.display().to_string()),
        version: None,
        works: false,
        error: None,
    };
    let cmd = Cmd::new(&path).args(version_args).timeout(TOOL_TIMEOUT);
    match runner.output(&cmd) {
        Ok(out) => {
            probe.version = first_line(&out.stdout).or_else(|| first_line(&out.stderr));
            if out.status.success() {
                probe.works = true;
            } else {
                let detail = first_line(&out.stderr).unwrap_or_default();
                probe.error = Some(format!(
                    "`{}` failed with {}: {detail}",
                    cmd.display(),
                    out.status
                ));
            }
        }
        Err(e) => probe.error = Some(chain(&e)),
    }
    probe
}

/// `nft --version`, then `nft list tables` (read-only) must succeed.
pub fn probe_nft(runner: &Runner) -> ToolProbe {
    let mut probe = probe_tool(runner, "nft", "nft", &["--version"]);
    let Some(path) = probe.path.clone().filter(|_| probe.works) else {
        return probe;
    };
    let list = Cmd::new(path)
        .args(["list", "tables"])
        .timeout(TOOL_TIMEOUT);
    if let Err(e) = runner.run(&list) {
        probe.works = false;
        probe.error = Some(chain(&e));
    }
    probe
}

fn not_found(program: &OsStr) -> String {
    let shown = program.to_string_lossy();
    if shown.contains('/') {
        if Path::new(program).exists() {
            format!("{shown} is not a regular file")
        } else {
            format!("{shown} does not exist")
        }
    } else {
        format!("{shown} not found on PATH")
    }
}

fn first_line(s: &str) -> Option<String> {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// An error and its sources, outermost first, joined with ": ".
pub(crate) fn chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn require(program: &str, package: &str) -> std::path::PathBuf {
        resolve(OsStr::new(program))
            .unwrap_or_else(|| panic!("this test needs `{program}`: apt-get install {package}"))
    }

    #[test]
    fn mkfs_ext4_version_comes_from_stderr() {
        let path = require("mkfs.ext4", "e2fsprogs");
        let p = probe_tool(&Runner, "mkfs.ext4", "mkfs.ext4", &["-V"]);
        assert_eq!(p.path.as_deref(), Some(path.to_str().unwrap()));
        assert!(p.works, "{p:?}");
        let version = p.version.expect("a version line");
        assert!(version.starts_with("mke2fs 1."), "{version}");
        assert_eq!(p.error, None);
    }

    #[test]
    fn absolute_path_is_used_as_given() {
        let path = require("e2fsck", "e2fsprogs");
        let p = probe_tool(&Runner, "e2fsck", &path, &["-V"]);
        assert_eq!(p.path.as_deref(), Some(path.to_str().unwrap()));
        assert!(p.works, "{p:?}");
        assert!(p.version.unwrap().starts_with("e2fsck 1."));
    }

    #[test]
    fn missing_tools_are_named() {
        let p = probe_tool(&Runner, "firecracker", "no-such-banger-vmm", &["--version"]);
        assert_eq!(p.path, None);
        assert!(!p.works);
        assert_eq!(
            p.error.as_deref(),
            Some("no-such-banger-vmm not found on PATH")
        );

        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("firecracker");
        let p = probe_tool(&Runner, "firecracker", &gone, &["--version"]);
        assert_eq!(p.path, None);
        assert_eq!(p.error, Some(format!("{} does not exist", gone.display())));

        let p = probe_tool(&Runner, "firecracker", dir.path(), &["--version"]);
        assert_eq!(
            p.error,
            Some(format!("{} is not a regular file", dir.path().display()))
        );
    }

    #[test]
    fn failing_tool_is_broken_and_keeps_its_version_line() {
        let dir = tempfile::tempdir().unwrap();
        let tool = script(
            dir.path(),
            "qemu-system-x86_64",
            "echo 'QEMU emulator version 9.9'\necho 'no accel' >&2\nexit 4",
        );
        let p = probe_tool(&Runner, "qemu", &tool, &["--version"]);
        assert_eq!(p.path.as_deref(), Some(tool.to_str().unwrap()));
        assert!(!p.works);
        assert_eq!(p.version.as_deref(), Some("QEMU emulator version 9.9"));
        let error = p.error.unwrap();
        assert!(
            error.contains("exit status: 4") && error.contains("no accel"),
            "{error}"
        );
    }

    #[test]
    fn unexecutable_tool_reports_the_spawn_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("firecracker");
        std::fs::write(&path, "not a program").unwrap();
        let p = probe_tool(&Runner, "firecracker", &path, &["--version"]);
        assert!(!p.works);
        let error = p.error.unwrap();
        assert!(error.contains("Permission denied"), "{error}");
    }

    #[test]
    fn nft_lists_tables() {
        // Root is needed to read the ruleset; the helper runs as root.
        assert!(rustix::process::geteuid().is_root(), "this test needs root");
        let path = require("nft", "nftables");
        let p = probe_nft(&Runner);
        assert_eq!(p.tool, "nft");
        assert_eq!(p.path.as_deref(), Some(path.to_str().unwrap()));
        assert!(p.works, "{p:?}");
        assert!(p.version.unwrap().starts_with("nftables v"));
    }
}
