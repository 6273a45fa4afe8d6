//! The one way banger runs a child process.
//!
//! Every external command goes through [`Runner`]: it logs the argv, gives the
//! child an empty environment plus `PATH` (and whatever the caller adds
//! explicitly), closes stdin unless the caller supplies input bytes
//! ([`Cmd::stdin`], e.g. an `nft -f -` batch), captures stdout and stderr, and
//! enforces a timeout. `clippy.toml` forbids `std::process::Command::new`
//! elsewhere.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Default PATH given to children.
pub const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How much of each of stdout and stderr [`Runner::output`] keeps by
/// default. A tool reading a hostile disk (`debugfs -R cat` of an inode
/// that claims terabytes) must not grow the caller's memory without bound;
/// past the cap the pipe is closed and the call fails with
/// [`RunError::TooMuchOutput`]. Raise it per command with [`Cmd::max_output`].
pub const DEFAULT_MAX_OUTPUT: usize = 64 << 20;

/// How long [`Runner::output`] keeps reading a pipe after the child has
/// exited: a grandchild that inherited it may hold it open for ever, and
/// the call must still return.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// A command to run: program, arguments, extra environment, timeout.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    run_as: Option<(u32, u32)>,
    max_output: usize,
    jail: Option<crate::jail::Jail>,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            timeout: Duration::from_secs(60),
            run_as: None,
            max_output: DEFAULT_MAX_OUTPUT,
            jail: None,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.env
            .push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }

    /// Feed `input` to the child's stdin (then close it). Without this the
    /// child's stdin is `/dev/null`. The input is not part of [`Cmd::display`];
    /// callers log it themselves when it matters.
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Run the child as (uid, gid) with no supplementary groups: the
    /// executor runs e2fsprogs on owner-owned files with the owner's rights.
    pub fn run_as(mut self, ids: Option<(u32, u32)>) -> Self {
        self.run_as = ids;
        self
    }

    /// Run the child in `jail` (see [`crate::jail`]): its uid, its own
    /// namespaces, `/usr`, a minimal `/dev`, the program at
    /// [`crate::jail::EXE`] and the jail's binds, nothing else. Replaces
    /// [`Cmd::run_as`]. [`Runner::output`], [`Runner::run`] and
    /// [`Runner::stream_stdout`] honour it, with the same timeout and
    /// output caps.
    pub fn jail(mut self, jail: crate::jail::Jail) -> Self {
        self.jail = Some(jail);
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Keep at most `bytes` of stdout in [`Runner::output`] (default
    /// [`DEFAULT_MAX_OUTPUT`]); more is an error. Stderr is always capped
    /// at [`DEFAULT_MAX_OUTPUT`] (a tool's banner and messages are not the
    /// payload this bounds).
    pub fn max_output(mut self, bytes: usize) -> Self {
        self.max_output = bytes;
        self
    }

    /// The argv as one display string, for logs and errors.
    pub fn display(&self) -> String {
        let mut s = self.program.to_string_lossy().into_owned();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

/// What a finished child produced.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    /// stdout decoded lossily as UTF-8 (for text).
    pub stdout: String,
    pub stderr: String,
    /// stdout exactly as the child wrote it (for binary or NUL-separated
    /// output such as file lists).
    pub stdout_raw: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{program} not found on PATH")]
    NotFound { program: String },
    #[error("starting `{argv}`")]
    Spawn {
        argv: String,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for `{argv}`")]
    Wait {
        argv: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{argv}` did not finish within {secs}s and was killed")]
    Timeout { argv: String, secs: u64 },
    #[error("`{argv}` wrote more than {max_bytes} bytes; stopped reading it")]
    TooMuchOutput { argv: String, max_bytes: u64 },
    #[error("storing the output of `{argv}`")]
    Sink {
        argv: String,
        #[source]
        source: std::io::Error,
    },
    /// `stderr` is the tool's own last lines ([`STDERR_TAIL_LINES`]), so
    /// the error says why in the tool's words.
    #[error("`{argv}` failed with {status}: {stderr}")]
    Failed {
        argv: String,
        status: ExitStatus,
        stderr: String,
    },
}

/// Runs commands. Stateless; cheap to copy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Runner;

impl Runner {
    /// Run and require success (exit status 0).
    pub fn run(&self, cmd: &Cmd) -> Result<Output, RunError> {
        let out = self.output(cmd)?;
        if !out.status.success() {
            return Err(RunError::Failed {
                argv: cmd.display(),
                status: out.status,
                stderr: stderr_tail(&out.stderr),
            });
        }
        Ok(out)
    }

    /// Run and return whatever it produced, success or not.
    pub fn output(&self, cmd: &Cmd) -> Result<Output, RunError> {
        let argv = cmd.display();
        tracing::debug!(%argv, "running");
        let mut child = spawn_piped(cmd, &argv, cmd.stdin.is_some())?;
        // Feed stdin and drain both pipes on threads, so neither a slow reader
        // nor a chatty child can block on a full pipe.
        let in_writer = feed(child.take_stdin(), cmd.stdin.clone());
        let exited = Arc::new(OnceLock::new());
        let out_reader = drain(child.take_output(false), cmd.max_output, &exited);
        let err_reader = drain(child.take_output(true), DEFAULT_MAX_OUTPUT, &exited);
        let waited = wait_for(&mut child, cmd, &argv);
        // From here the readers stop at EOF or shortly after, whichever
        // comes first, so nothing a grandchild holds keeps this call (or
        // their threads) alive.
        let _ = exited.set(Instant::now() + DRAIN_AFTER_EXIT);
        let status = waited?;
        finish_feeding(in_writer, &argv);
        let (stdout_raw, out_over) = out_reader.join().unwrap_or_default();
        let (stderr_raw, err_over) = err_reader.join().unwrap_or_default();
        if out_over || err_over {
            return Err(RunError::TooMuchOutput {
                argv,
                max_bytes: if out_over {
                    cmd.max_output
                } else {
                    DEFAULT_MAX_OUTPUT
                } as u64,
            });
        }
        let stderr = String::from_utf8_lossy(&stderr_raw).into_owned();
        tracing::debug!(%argv, %status, "finished");
        Ok(Output {
            status,
            stdout: String::from_utf8_lossy(&stdout_raw).into_owned(),
            stderr,
            stdout_raw,
        })
    }
}

/// What [`Runner::stream_stdout`] leaves besides the file it wrote.
#[derive(Debug, Clone)]
pub struct Streamed {
    pub status: ExitStatus,
    /// Bytes of stdout written to the sink.
    pub bytes: u64,
    pub stderr: String,
}

impl Runner {
    /// Run `cmd` and write its stdout into `sink` as it arrives, never more
    /// than `max_bytes` of it: past that the pipe is closed (the child sees
    /// EPIPE) and the call fails with [`RunError::TooMuchOutput`]. Stdin is
    /// `/dev/null`, stderr is captured, the timeout applies, and a non-zero
    /// exit is [`RunError::Failed`] with the stderr tail. For bulk data from
    /// an untrusted peer (a guest's export over ssh) that must neither sit
    /// in memory nor go through a protocol client with a history of bugs.
    pub fn stream_stdout(
        &self,
        cmd: &Cmd,
        mut sink: std::fs::File,
        max_bytes: u64,
    ) -> Result<Streamed, RunError> {
        let argv = cmd.display();
        tracing::debug!(%argv, max_bytes, "running, stdout to a file");
        let mut child = spawn_piped(cmd, &argv, false)?;
        let exited = Arc::new(OnceLock::new());
        let err_reader = drain(child.take_output(true), DEFAULT_MAX_OUTPUT, &exited);
        let out = child.take_output(false);
        // Copy on a thread so the timeout below still holds when the child
        // stalls; the result says whether the cap was hit.
        // Like `drain`: a grandchild holding stdout after the child exited
        // (an ssh master, say) does not hold the call.
        let copy_exited = Arc::clone(&exited);
        let copier = std::thread::spawn(move || -> std::io::Result<(u64, bool)> {
            let Some(mut out) = out else {
                return Ok((0, false));
            };
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            while readable(&out, &copy_exited) {
                let n = match out.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if total + n as u64 > max_bytes {
                    return Ok((total, true));
                }
                sink.write_all(&buf[..n])?;
                total += n as u64;
            }
            Ok((total, false))
        });
        let waited = wait_for(&mut child, cmd, &argv);
        let _ = exited.set(Instant::now() + DRAIN_AFTER_EXIT);
        let status = waited?;
        let copied = copier
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the copying thread panicked")));
        // An over-long stderr is cut, not an error: stdout is the payload.
        let (stderr, _) = err_reader.join().unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr).into_owned();
        let bytes = match copied {
            Ok((_, true)) => return Err(RunError::TooMuchOutput { argv, max_bytes }),
            Ok((n, false)) => n,
            Err(source) => return Err(RunError::Sink { argv, source }),
        };
        if !status.success() {
            return Err(RunError::Failed {
                argv,
                status,
                stderr: stderr_tail(&stderr),
            });
        }
        Ok(Streamed {
            status,
            bytes,
            stderr,
        })
    }
}

/// How a long-lived child ([`Runner::spawn`]) is set up.
#[derive(Debug, Default)]
pub struct SpawnOptions {
    /// Append stdout and stderr here (e.g. a serial log); `/dev/null` if unset.
    pub output: Option<std::fs::File>,
    /// Drop to this (uid, gid) before exec, with no supplementary groups.
    pub run_as: Option<(u32, u32)>,
}

/// A long-lived child: its pid and a pidfd, the only handle used to signal
/// it (a pid alone can be recycled).
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    pidfd: std::os::fd::OwnedFd,
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd as _;
        self.pidfd.as_fd()
    }

    /// Whether the process is still alive (without reaping it): its pidfd
    /// becomes readable when it exits.
    pub fn pidfd_alive(&self) -> bool {
        let mut fds = [rustix::event::PollFd::new(
            &self.pidfd,
            rustix::event::PollFlags::IN,
        )];
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        !matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
    }

    /// Send `sig` through the pidfd.
    pub fn signal(&self, sig: rustix::process::Signal) -> std::io::Result<()> {
        rustix::process::pidfd_send_signal(&self.pidfd, sig).map_err(std::io::Error::from)
    }

    /// Reap if it has exited.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Wait up to `timeout` for it to exit; `None` if still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL through the pidfd, then reap.
    pub fn kill(&mut self) -> std::io::Result<ExitStatus> {
        if self.child.try_wait()?.is_none() {
            // ESRCH only if it exited between the check and the signal.
            let _ = self.signal(rustix::process::Signal::KILL);
        }
        self.child.wait()
    }
}

impl Runner {
    /// Replace the current process with `cmd` (execvp), keeping this
    /// process's environment and terminal: `banger vm ssh` becomes `ssh`.
    /// Returns only on failure.
    pub fn exec_replace(&self, cmd: &Cmd) -> std::io::Error {
        use std::os::unix::process::CommandExt as _;
        let Some(program) = resolve(&cmd.program) else {
            return std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} not found on PATH", cmd.program.to_string_lossy()),
            );
        };
        tracing::debug!(argv = %cmd.display(), "exec");
        #[allow(clippy::disallowed_methods)] // this is the one sanctioned spawn site
        let mut command = Command::new(program);
        command.args(&cmd.args).exec()
    }

    /// Start a long-lived child (a VMM): empty environment plus `PATH` and
    /// the command's own variables, stdin `/dev/null`, stdout and stderr to
    /// `opts.output`, its own process group (a signal to the caller's group
    /// does not reach it), optionally dropped to `opts.run_as`. Descriptors
    /// other than 0-2 are not inherited (std opens everything close-on-exec).
    /// The command's timeout does not apply.
    pub fn spawn(&self, cmd: &Cmd, opts: SpawnOptions) -> Result<Spawned, RunError> {
        use std::os::unix::process::CommandExt as _;
        let argv = cmd.display();
        tracing::debug!(%argv, "spawning");
        let mut command = base_command(cmd)?;
        command.stdin(Stdio::null()).process_group(0);
        match opts.output {
            Some(f) => {
                let err = f.try_clone().map_err(|source| RunError::Spawn {
                    argv: argv.clone(),
                    source,
                })?;
                command.stdout(Stdio::from(f)).stderr(Stdio::from(err));
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        if let Some((uid, gid)) = opts.run_as {
            // std clears the supplementary groups itself when a root parent
            // sets a uid without an explicit group list.
            command.uid(uid).gid(gid);
        }
        let child = command.spawn().map_err(|source| RunError::Spawn {
            argv: argv.clone(),
            source,
        })?;
        // The child is ours and unreaped, so its pid cannot be recycled yet.
        let pid = rustix::process::Pid::from_child(&child);
        let pidfd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::Spawn {
                    argv,
                    source: e.into(),
                });
            }
        };
        Ok(Spawned { child, pidfd })
    }
}

/// The resolved program with its arguments and a cleared environment
/// (`PATH` plus the command's own variables): what every child starts from.
fn base_command(cmd: &Cmd) -> Result<Command, RunError> {
    let program = resolve(&cmd.program).ok_or_else(|| RunError::NotFound {
        program: cmd.program.to_string_lossy().into_owned(),
    })?;
    #[allow(clippy::disallowed_methods)] // this is the one sanctioned spawn site
    let mut command = Command::new(&program);
    command
        .args(&cmd.args)
        .env_clear()
        .env("PATH", CHILD_PATH)
        .envs(cmd.env.iter().map(|(k, v)| (k, v)));
    Ok(command)
}

/// Find a program: a path containing `/` is used as is (if it exists),
/// anything else is looked up on [`CHILD_PATH`].
pub fn resolve(program: &OsStr) -> Option<PathBuf> {
    let p = Path::new(program);
    if p.as_os_str().is_empty() {
        return None;
    }
    if p.components().count() > 1 || program.to_string_lossy().contains('/') {
        return p.is_file().then(|| p.to_path_buf());
    }
    CHILD_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(p))
        .find(|candidate| candidate.is_file())
}

fn feed(
    pipe: Option<Box<dyn Write + Send>>,
    input: Option<Vec<u8>>,
) -> Option<std::thread::JoinHandle<std::io::Result<()>>> {
    let (mut pipe, input) = (pipe?, input?);
    Some(std::thread::spawn(move || {
        // Dropping the pipe at the end closes the child's stdin (EOF).
        pipe.write_all(&input)
    }))
}

/// Read `pipe` on a thread until EOF, keeping at most `cap` bytes (the
/// flag says the child wrote more; the pipe is closed then, so it sees
/// EPIPE), and stopping once the deadline in `exited` has passed and
/// nothing more is buffered — the deadline is set by the caller when the
/// child is gone, because a grandchild may hold the write end open.
fn drain<R: Read + std::os::fd::AsFd + Send + 'static>(
    pipe: Option<R>,
    cap: usize,
    exited: &Arc<OnceLock<Instant>>,
) -> std::thread::JoinHandle<(Vec<u8>, bool)> {
    let exited = Arc::clone(exited);
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let Some(mut p) = pipe else {
            return (buf, false);
        };
        let mut chunk = vec![0u8; 1 << 16];
        while readable(&p, &exited) {
            match p.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) if buf.len() + n > cap => {
                    let keep = cap - buf.len();
                    buf.extend_from_slice(&chunk[..keep]);
                    return (buf, true);
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        (buf, false)
    })
}

/// Whether a read of `pipe` is worth making now: `true` once it has data
/// or is at its end (the read says which), `false` once the deadline in
/// `exited` has passed and nothing is buffered. Until the deadline is set
/// this waits as long as it takes.
fn readable(pipe: &impl std::os::fd::AsFd, exited: &OnceLock<Instant>) -> bool {
    loop {
        let late = exited.get().is_some_and(|d| Instant::now() >= *d);
        let tick = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: if late { 0 } else { 100_000_000 },
        };
        let mut fds = [rustix::event::PollFd::new(
            pipe,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&tick)) {
            Ok(0) if late => return false,
            Ok(0) | Err(rustix::io::Errno::INTR) => {}
            Ok(_) => return true,
            Err(_) => return false,
        }
    }
}

/// Wait for the stdin writer until shortly after the child exited; a
/// grandchild holding stdin without reading would hold it for ever, so
/// past that it is left to end when its pipe does.
fn finish_feeding(writer: Option<std::thread::JoinHandle<std::io::Result<()>>>, argv: &str) {
    let Some(w) = writer else { return };
    let until = Instant::now() + DRAIN_AFTER_EXIT;
    while !w.is_finished() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !w.is_finished() {
        tracing::debug!(%argv, "stdin still held by something the child left; not waiting");
        return;
    }
    if let Ok(Err(e)) = w.join() {
        // The child may legitimately exit before reading everything; its
        // status and stderr say what went wrong, so this is only logged.
        tracing::debug!(%argv, error = %e, "writing stdin");
    }
}

/// Start `cmd` with stdin piped (`piped_stdin`) or `/dev/null`, stdout
/// and stderr piped, as `cmd.run_as` or in `cmd.jail`.
fn spawn_piped(cmd: &Cmd, argv: &str, piped_stdin: bool) -> Result<Piped, RunError> {
    let spawn_error = |source| RunError::Spawn {
        argv: argv.to_string(),
        source,
    };
    if let Some(jail) = &cmd.jail {
        let program = resolve(&cmd.program).ok_or_else(|| RunError::NotFound {
            program: cmd.program.to_string_lossy().into_owned(),
        })?;
        let mut env = vec![(OsString::from("PATH"), OsString::from(CHILD_PATH))];
        env.extend(cmd.env.iter().cloned());
        return crate::jail::spawn(jail, &program, &cmd.program, &cmd.args, &env, piped_stdin)
            .map(Piped::Jailed)
            .map_err(spawn_error);
    }
    let mut command = base_command(cmd)?;
    command
        .stdin(if piped_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((uid, gid)) = cmd.run_as {
        use std::os::unix::process::CommandExt as _;
        command.uid(uid).gid(gid);
    }
    command.spawn().map(Piped::Std).map_err(spawn_error)
}

/// [`wait_with_timeout`] with `cmd`'s timeout, its failures as [`RunError`]s.
fn wait_for(child: &mut Piped, cmd: &Cmd, argv: &str) -> Result<ExitStatus, RunError> {
    wait_with_timeout(child, cmd.timeout).map_err(|e| match e {
        WaitError::Io(source) => RunError::Wait {
            argv: argv.to_string(),
            source,
        },
        WaitError::Timeout => RunError::Timeout {
            argv: argv.to_string(),
            secs: cmd.timeout.as_secs(),
        },
    })
}

enum WaitError {
    Io(std::io::Error),
    Timeout,
}

fn wait_with_timeout(child: &mut Piped, timeout: Duration) -> Result<ExitStatus, WaitError> {
    let deadline = Instant::now() + timeout;
    let mut sleep = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait().map_err(WaitError::Io)? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            // The child is ours: kill it by the handle we hold, then reap it.
            child.kill_and_reap();
            return Err(WaitError::Timeout);
        }
        std::thread::sleep(sleep);
        sleep = (sleep * 2).min(Duration::from_millis(50));
    }
}

/// How many of a failed tool's last stderr lines its error carries.
pub const STDERR_TAIL_LINES: usize = 8;
/// Longest stderr line kept in an error (a tool may print a huge one).
const STDERR_LINE_MAX: usize = 400;

/// The last [`STDERR_TAIL_LINES`] non-empty lines of `s`, each trimmed and
/// cut at [`STDERR_LINE_MAX`] characters, joined by newlines.
fn stderr_tail(s: &str) -> String {
    let mut lines: Vec<String> = s
        .lines()
        .rev()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(STDERR_TAIL_LINES)
        .map(|l| match l.char_indices().nth(STDERR_LINE_MAX) {
            Some((cut, _)) => format!("{}…", &l[..cut]),
            None => l.to_string(),
        })
        .collect();
    lines.reverse();
    lines.join("\n")
}

mod piped;
use piped::Piped;

#[cfg(test)]
mod tests;
