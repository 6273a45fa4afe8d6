//! Talking to a guest for workspace work: `ssh` and `rsync` with banger's
//! key and strict, banger-managed host keys (the same options `vm ssh`
//! uses), run as the daemon's own user.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_host::runner::{Cmd, Output, Runner};
use banger_proto::{ErrorCode, RpcError};

/// Where and how to reach one guest.
#[derive(Debug, Clone)]
pub struct Guest {
    pub name: String,
    pub ip: Ipv4Addr,
    pub user: String,
    pub identity: PathBuf,
    pub known_hosts: PathBuf,
    /// An SSH control socket its connections share (see
    /// [`Guest::multiplexed`] and `crate::ssh_masters`); `None` for one
    /// connection per call.
    pub control: Option<Control>,
}

/// An SSH control socket: where it is, and how long its master outlives
/// its last client (`ControlPersist`).
#[derive(Debug, Clone)]
pub struct Control {
    pub path: PathBuf,
    pub persist_secs: u32,
    /// A master opened for a pooled clone (`vm::pool`), which sits paused
    /// for as long as nobody takes it: it stays until it is ended (by the
    /// sweep once its VM stops, or at shutdown) and sends no keepalives,
    /// which a paused guest cannot answer. `persist_secs` is then unused.
    pub until_ended: bool,
}

/// A guest whose connections ride one SSH master. One operation's own
/// master ([`Guest::multiplexed`]) exits when this is dropped; the VM's
/// master (`crate::ssh_masters`) stays for the next operation.
pub struct Multiplexed {
    guest: Guest,
    /// The operation's own control directory; `None` for the VM's master.
    own: Option<tempfile::TempDir>,
    /// Whether the VM's master answered before the operation began.
    pub reused: bool,
}

impl Multiplexed {
    pub(super) fn kept(guest: Guest, reused: bool) -> Multiplexed {
        Multiplexed {
            guest,
            own: None,
            reused,
        }
    }
}

impl std::ops::Deref for Multiplexed {
    type Target = Guest;
    fn deref(&self) -> &Guest {
        &self.guest
    }
}

impl Drop for Multiplexed {
    fn drop(&mut self) {
        if self.own.is_some() {
            self.guest.control_command("exit");
        }
    }
}

/// Quote `s` for a POSIX shell (single quotes; `'` becomes `'\''`).
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Guest {
    /// The same guest, with every `ssh`/`rsync` of the operation riding one
    /// SSH connection (OpenSSH connection sharing; a handshake with a TCG
    /// guest costs seconds). The master exits when the result is dropped.
    pub fn multiplexed(&self) -> Result<Multiplexed, RpcError> {
        // Short path: a Unix socket path must fit in 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("banger-ssh-")
            .tempdir_in("/tmp")
            .map_err(|e| {
                RpcError::new(ErrorCode::Internal, format!("SSH control directory: {e}"))
            })?;
        let mut guest = self.clone();
        guest.control = Some(Control {
            path: dir.path().join("c"),
            persist_secs: 60,
            until_ended: false,
        });
        Ok(Multiplexed {
            guest,
            own: Some(dir),
            reused: false,
        })
    }

    /// `ssh -O COMMAND` on the control socket, if any.
    fn control_command(&self, command: &str) -> bool {
        self.control
            .as_ref()
            .is_some_and(|c| crate::ssh_masters::control(&c.path, command))
    }

    fn ssh_options(&self) -> Vec<String> {
        let mut opts: Vec<String> = Vec::new();
        let mut alive_secs = 15;
        if let Some(c) = &self.control {
            opts.extend([
                "-o".into(),
                "ControlMaster=auto".into(),
                "-o".into(),
                format!("ControlPath={}", c.path.display()),
                "-o".into(),
            ]);
            if c.until_ended {
                opts.extend([
                    "ControlPersist=yes".into(),
                    "-o".into(),
                    "TCPKeepAlive=no".into(),
                ]);
                alive_secs = 0;
            } else {
                opts.push(format!("ControlPersist={}", c.persist_secs));
            }
            if !c.until_ended && c.persist_secs >= crate::ssh_masters::KEEP_SECS {
                // The VM's own master, which `vm ssh` sessions ride too:
                // it outlives a pause of up to 5 minutes (15 s × 20
                // unanswered keepalives), not 45 s (review s11-2 F4). A
                // stopped VM's master is ended by the sweep, not by this.
                opts.extend(["-o".into(), "ServerAliveCountMax=20".into()]);
            }
        }
        opts.extend([
            "-F".into(),
            "/dev/null".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            format!("HostKeyAlias={}.vm", self.name),
            "-o".into(),
            "ConnectTimeout=10".into(),
            "-o".into(),
            format!("ServerAliveInterval={alive_secs}"),
            "-i".into(),
            self.identity.display().to_string(),
        ]);
        opts
    }

    fn login(&self) -> String {
        format!("{}@{}", self.user, self.ip)
    }

    /// Run `script` with `sh -c` in the guest, feeding `stdin`.
    pub fn exec(
        &self,
        script: &str,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Output, RpcError> {
        let mut cmd = Cmd::new("ssh")
            .args(self.ssh_options())
            .arg(self.login())
            .arg(format!("sh -c {}", sh_quote(script)))
            .timeout(timeout);
        if let Some(bytes) = stdin {
            cmd = cmd.stdin(bytes);
        }
        let out = Runner.output(&cmd).map_err(|e| {
            RpcError::from_error(ErrorCode::Unavailable, &e)
                .context(format!("reaching VM {} over SSH", self.name))
        })?;
        if out.status.code() == Some(255) {
            return Err(RpcError::new(
                ErrorCode::Unavailable,
                format!(
                    "VM {} is not reachable over SSH: {}",
                    self.name,
                    out.stderr.trim()
                ),
            ));
        }
        Ok(out)
    }

    /// Copy the guest file `path` (relative to the guest user's home) into
    /// `dst` as a plain byte stream over ssh (`cat`), at most `max_bytes`:
    /// the guest is untrusted, so nothing of its side speaks a file-transfer
    /// protocol to a client here, and it cannot make us store more than the
    /// cap. Returns the bytes copied; `Ok(None)` when the file is bigger.
    pub fn fetch_file(
        &self,
        path: &str,
        dst: std::fs::File,
        max_bytes: u64,
        timeout: Duration,
    ) -> Result<Option<u64>, RpcError> {
        let cmd = Cmd::new("ssh")
            .args(self.ssh_options())
            .arg(self.login())
            .arg(format!("exec cat -- {}", sh_quote(path)))
            .timeout(timeout);
        match Runner.stream_stdout(&cmd, dst, max_bytes) {
            Ok(done) => Ok(Some(done.bytes)),
            Err(banger_host::runner::RunError::TooMuchOutput { .. }) => Ok(None),
            Err(e) => Err(RpcError::from_error(ErrorCode::Unavailable, &e)
                .context(format!("copying ~/{path} from VM {}", self.name))),
        }
    }

    /// Like [`Guest::exec`], but a non-zero exit is an error naming `what`.
    pub fn exec_ok(
        &self,
        what: &str,
        script: &str,
        stdin: Option<Vec<u8>>,
    ) -> Result<Output, RpcError> {
        let out = self.exec(script, stdin, Duration::from_secs(600))?;
        if !out.status.success() {
            return Err(RpcError::new(
                ErrorCode::Unavailable,
                format!("{what} in VM {}: {}", self.name, out.stderr.trim()),
            ));
        }
        Ok(out)
    }

    /// The `-e` argument for rsync: the same ssh options, each quoted for
    /// rsync's own splitting.
    fn rsync_shell(&self) -> String {
        // rsync splits `-e` itself: single quotes group, and inside them a
        // doubled quote is a literal one (not the shell's `'\''`).
        let quote = |o: &String| format!("'{}'", o.replace('\'', "''"));
        let mut parts = vec!["ssh".to_string()];
        parts.extend(self.ssh_options().iter().map(quote));
        parts.join(" ")
    }

    /// `rsync ARGS... SRC DEST` where `remote` paths are written `:PATH`
    /// (relative to the guest user's home). Returns rsync's `--stats`.
    pub fn rsync(&self, args: &[std::ffi::OsString], what: &str) -> Result<RsyncStats, RpcError> {
        let args: Vec<std::ffi::OsString> = args
            .iter()
            .map(|a| match a.to_str() {
                Some(s) if s.starts_with(':') => format!("{}{s}", self.login()).into(),
                _ => a.clone(),
            })
            .collect();
        let cmd = Cmd::new("rsync")
            .args(["--stats", "--no-human-readable", "-e"])
            .arg(self.rsync_shell())
            .args(args)
            .timeout(Duration::from_secs(3600));
        let out = Runner.output(&cmd).map_err(|e| {
            RpcError::from_error(ErrorCode::Unavailable, &e)
                .context(format!("{what} (is rsync installed on the host?)"))
        })?;
        let vanished = out.status.code() == Some(24);
        if !out.status.success() && !vanished {
            let code = out.status.code().unwrap_or(-1);
            let hint = match code {
                // rsync's "remote command not found" / protocol startup errors.
                12 | 127 => " (does the image have rsync?)",
                _ => "",
            };
            return Err(RpcError::new(
                ErrorCode::Unavailable,
                format!(
                    "{what} with VM {} failed (rsync exit {code}){hint}: {}",
                    self.name,
                    out.stderr.trim()
                ),
            ));
        }
        let mut stats = RsyncStats::parse(&out.stdout);
        if vanished {
            // rsync's exit 24: source files vanished during the transfer.
            // They are gone on the host too, so the copy is still faithful.
            stats.vanished = out
                .stderr
                .lines()
                .filter(|l| l.contains("vanished"))
                .map(|l| l.trim().to_string())
                .collect();
        }
        Ok(stats)
    }
}

/// The parts of `rsync --stats` a report needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RsyncStats {
    pub sent: u64,
    pub received: u64,
    pub transferred_files: u64,
    /// rsync's lines about files that vanished during the transfer.
    pub vanished: Vec<String>,
}

impl RsyncStats {
    pub fn parse(text: &str) -> Self {
        let num = |label: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(label))
                .and_then(|rest| {
                    let digits: String = rest
                        .trim_start_matches(':')
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == ',')
                        .filter(|c| *c != ',')
                        .collect();
                    digits.parse().ok()
                })
                .unwrap_or(0)
        };
        RsyncStats {
            sent: num("Total bytes sent"),
            received: num("Total bytes received"),
            transferred_files: num("Number of regular files transferred"),
            vanished: Vec::new(),
        }
    }
}

/// A directory name for the checkout in the guest: the repository
/// directory's name with anything outside `[A-Za-z0-9._-]` replaced.
pub fn guest_dir_name(root: &Path) -> String {
    let raw = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') || s.starts_with('-') {
        s.insert_str(0, "repo");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_parsed_with_or_without_separators() {
        let text = "Number of files: 12 (reg: 10, dir: 2)\n\
                    Number of regular files transferred: 3\n\
                    Total file size: 1,234,567 bytes\n\
                    Total bytes sent: 45,678\n\
                    Total bytes received: 910\n";
        assert_eq!(
            RsyncStats::parse(text),
            RsyncStats {
                sent: 45678,
                received: 910,
                transferred_files: 3,
                vanished: Vec::new(),
            }
        );
        assert_eq!(RsyncStats::parse("Total bytes sent: 17").sent, 17);
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }

    #[test]
    fn guest_names_are_tame() {
        assert_eq!(guest_dir_name(Path::new("/src/banger")), "banger");
        assert_eq!(guest_dir_name(Path::new("/src/my repo;rm")), "my_repo_rm");
        assert_eq!(guest_dir_name(Path::new("/src/.hidden")), "repo.hidden");
        assert_eq!(guest_dir_name(Path::new("/")), "repo");
    }
}
