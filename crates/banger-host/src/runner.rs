//! The one way banger runs a child process.
//!
//! Every external command goes through [`Runner`]: it logs the argv, gives the
//! child an empty environment plus `PATH` (and whatever the caller adds
//! explicitly), closes stdin unless the caller supplies input bytes
//! ([`Cmd::stdin`], e.g. an `nft -f -` batch), captures stdout and stderr, and
//! enforces a timeout. `clippy.toml` forbids `std::process::Command::new`
//! elsewhere.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

mod pipes;
use pipes::{PipeEnd, WriteStdin, drain, feed, finish_feeding, read_pipe, write_pipe};

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
/// the call must still return. Also how long a killed child is waited for
/// before a thread is left to reap it ([`reap_later`]).
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
    /// The child started, but no pidfd of it could be opened (`EMFILE`,
    /// say), and the kill that followed was not confirmed: it was not
    /// reaped in time and may still run (a thread reaps it once it
    /// exits). A caller that gave it something (a jail uid) must not give
    /// that again while it may run.
    #[error(
        "`{argv}` (pid {pid}) started, but no pidfd of it could be opened and its kill is not confirmed"
    )]
    StillRunning {
        argv: String,
        pid: u32,
        /// Its start time (`/proc/<pid>/stat` field 22), read while it was
        /// this process's unreaped child; `None` when it could not be.
        started: Option<u64>,
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
    /// The child exited but something it left (an ssh master, say) still
    /// held its stdout past the drain deadline: what arrived may be only
    /// part of it.
    #[error("`{argv}`: output did not end (something the command left still holds its stdout)")]
    OutputDidNotEnd { argv: String },
    /// Writing the caller's bytes into the child's stdin failed other than
    /// by the child's leaving. The child was killed before its stdin was
    /// closed, so it never saw part of them end as if it were all (a
    /// prefix of an `nft -f -` batch cut at a line break is a valid batch);
    /// a tool that acts as it reads may have acted on part.
    #[error("writing stdin to `{argv}`")]
    Stdin {
        argv: String,
        #[source]
        source: std::io::Error,
    },
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
        self.output_with(cmd, write_pipe)
    }

    /// [`Runner::output`], feeding stdin with `write` (tests inject a
    /// writer's failure: a real pipe gives none but EPIPE and the deadline).
    fn output_with(&self, cmd: &Cmd, write: WriteStdin) -> Result<Output, RunError> {
        let argv = cmd.display();
        tracing::debug!(%argv, "running");
        let (mut child, pidfd) = open_pidfd(spawn_piped(cmd, &argv, cmd.stdin.is_some())?, &argv)?;
        // Feed stdin and drain both pipes on threads, so neither a slow reader
        // nor a chatty child can block on a full pipe.
        let exited = Arc::new(OnceLock::new());
        let in_writer = feed(child.take_stdin(), cmd.stdin.clone(), &exited, pidfd, write);
        let out_reader = drain(child.take_output(false), cmd.max_output, &exited);
        let err_reader = drain(child.take_output(true), DEFAULT_MAX_OUTPUT, &exited);
        let waited = wait_for(child, cmd, &argv);
        // From here the readers stop at EOF or shortly after, whichever
        // comes first, so nothing a grandchild holds keeps this call (or
        // their threads) alive. After a failed wait (a timeout) nothing
        // they read is used: they stop at once.
        let drain = if waited.is_ok() {
            DRAIN_AFTER_EXIT
        } else {
            Duration::ZERO
        };
        let _ = exited.set(Instant::now() + drain);
        let fed = finish_feeding(in_writer, &argv);
        let status = waited?;
        let (stdout_raw, out_over) = out_reader.join().unwrap_or_default();
        let (stderr_raw, err_over) = err_reader.join().unwrap_or_default();
        fed?;
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
    /// exit is [`RunError::Failed`] with the stderr tail. Stdout must reach
    /// its end: if something the child left still holds it
    /// [`DRAIN_AFTER_EXIT`] after the child exited, what is buffered then
    /// is copied and the call fails with [`RunError::OutputDidNotEnd`]
    /// (the copy may be partial). For bulk data from
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
        // stalls; the result says whether the cap was hit and whether
        // stdout ended. Like `drain`: a grandchild holding stdout after the
        // child exited (an ssh master, say) does not hold the call — but
        // then the stream did not end, and that is an error below.
        let copy_exited = Arc::clone(&exited);
        let copier = std::thread::spawn(move || -> std::io::Result<(u64, PipeEnd)> {
            let Some(mut out) = out else {
                return Ok((0, PipeEnd::Eof));
            };
            let mut total = 0u64;
            let end = read_pipe(&mut out, &copy_exited, |chunk| {
                if total + chunk.len() as u64 > max_bytes {
                    return Ok(false);
                }
                sink.write_all(chunk)?;
                total += chunk.len() as u64;
                Ok(true)
            })?;
            Ok((total, end))
        });
        let waited = wait_for(child, cmd, &argv);
        let _ = exited.set(Instant::now() + DRAIN_AFTER_EXIT);
        let status = waited?;
        let copied = copier
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the copying thread panicked")));
        // An over-long stderr is cut, not an error: stdout is the payload.
        let (stderr, _) = err_reader.join().unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr).into_owned();
        let (bytes, end) = match copied {
            Ok((_, PipeEnd::Stopped)) => return Err(RunError::TooMuchOutput { argv, max_bytes }),
            Ok(copied) => copied,
            Err(source) => return Err(RunError::Sink { argv, source }),
        };
        if !status.success() {
            return Err(RunError::Failed {
                argv,
                status,
                stderr: stderr_tail(&stderr),
            });
        }
        // Item 20: the payload is whole only if stdout reached its end.
        if end == PipeEnd::Cut {
            return Err(RunError::OutputDidNotEnd { argv });
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
    pid: u32,
    /// `None` once [`Spawned::kill`] has left it to a reaper thread
    /// ([`reap_later`]): nothing here waits on its pid again.
    child: Option<Piped>,
    /// Its status, once that reaper has it.
    reaped: Arc<OnceLock<ExitStatus>>,
    pidfd: std::os::fd::OwnedFd,
    /// A jailed child's network namespace handles, until taken
    /// ([`crate::jail::Jail::net_handles`]).
    jail_net: Option<crate::jail::JailNet>,
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd as _;
        self.pidfd.as_fd()
    }

    /// The jail's network namespace handles, once, when its jail asked
    /// for them ([`crate::jail::Jail::net_handles`]). Holding them keeps
    /// the namespace alive: drop them once they have served.
    pub fn take_jail_net(&mut self) -> Option<crate::jail::JailNet> {
        self.jail_net.take()
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

    /// Reap if it has exited (after a [`Spawned::kill`] that left it to a
    /// reaper thread: its status once that thread has reaped it).
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(child) => child.try_wait(),
            None => Ok(self.reaped.get().copied()),
        }
    }

    /// Wait up to `timeout` for it to exit; `None` if still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
        poll_until(timeout, || self.try_wait())
    }

    /// SIGKILL through the pidfd, then reap within `DRAIN_AFTER_EXIT`
    /// (2 s). One not reaped by then (`reap_later`: a tracer holds its
    /// exit, or it is stuck in the kernel) is an error of kind `TimedOut`; a thread
    /// reaps it when it can, and [`Spawned::try_wait`] reports its status
    /// from then on.
    pub fn kill(&mut self) -> std::io::Result<ExitStatus> {
        if self.try_wait()?.is_none() {
            // ESRCH only if it exited between the check and the signal.
            let _ = self.signal(rustix::process::Signal::KILL);
        }
        if let Some(status) = self.wait_timeout(DRAIN_AFTER_EXIT)? {
            return Ok(status);
        }
        if let Some(child) = self.child.take() {
            reap_later(child, Arc::clone(&self.reaped));
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "pid {} was killed but not reaped within {}s; a thread reaps it when it can",
                self.pid,
                DRAIN_AFTER_EXIT.as_secs()
            ),
        ))
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
    ///
    /// With [`Cmd::jail`] (whose jail must be
    /// [`crate::jail::Jail::long_lived`]) the child is cloned into the jail
    /// instead, as pid 1 of its namespaces (so the pid held, its pidfd, its
    /// start time and `SO_PEERCRED` all name that one task), with the
    /// jail's own pass-through descriptors besides 0-2; `opts.run_as` is
    /// ignored.
    pub fn spawn(&self, cmd: &Cmd, opts: SpawnOptions) -> Result<Spawned, RunError> {
        use std::os::unix::process::CommandExt as _;
        let argv = cmd.display();
        tracing::debug!(%argv, "spawning");
        if let Some(jail) = &cmd.jail {
            return spawn_jailed(cmd, jail, opts, &argv);
        }
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
        let (child, pidfd) = open_pidfd(Piped::Std(child), &argv)?;
        Ok(Spawned {
            pid: child.id(),
            child: Some(child),
            reaped: Arc::default(),
            pidfd,
            jail_net: None,
        })
    }
}

/// [`Runner::spawn`] of a command with a jail.
fn spawn_jailed(
    cmd: &Cmd,
    jail: &crate::jail::Jail,
    opts: SpawnOptions,
    argv: &str,
) -> Result<Spawned, RunError> {
    let spawn_error = |source| RunError::Spawn {
        argv: argv.to_string(),
        source,
    };
    let program = resolve(&cmd.program).ok_or_else(|| RunError::NotFound {
        program: cmd.program.to_string_lossy().into_owned(),
    })?;
    let output = match opts.output {
        Some(f) => f,
        None => std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .map_err(spawn_error)?,
    };
    let mut env = vec![(OsString::from("PATH"), OsString::from(CHILD_PATH))];
    env.extend(cmd.env.iter().cloned());
    let mut child = crate::jail::spawn(
        jail,
        &program,
        &cmd.program,
        &cmd.args,
        &env,
        false,
        crate::jail::Output::File(output),
    )
    .map_err(spawn_error)?;
    let jail_net = child.take_net();
    let (child, pidfd) = open_pidfd(Piped::Jailed(child), argv)?;
    Ok(Spawned {
        pid: child.id(),
        child: Some(child),
        reaped: Arc::default(),
        pidfd,
        jail_net,
    })
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
        return crate::jail::spawn(
            jail,
            &program,
            &cmd.program,
            &cmd.args,
            &env,
            piped_stdin,
            crate::jail::Output::Piped,
        )
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
fn wait_for(child: Piped, cmd: &Cmd, argv: &str) -> Result<ExitStatus, RunError> {
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

/// Wait up to `timeout` for `child` to exit; past it (or if the wait
/// fails) kill it ([`kill_and_reap`]). The child is taken: after a timeout
/// it may be a reaper thread's, and nothing else may wait on its pid.
fn wait_with_timeout(mut child: Piped, timeout: Duration) -> Result<ExitStatus, WaitError> {
    let waited = poll_until(timeout, || child.try_wait());
    if let Ok(Some(status)) = waited {
        return Ok(status);
    }
    kill_and_reap(child);
    match waited {
        Err(e) => Err(WaitError::Io(e)),
        Ok(_) => Err(WaitError::Timeout),
    }
}

/// How many of a failed tool's last stderr lines its error carries.
pub const STDERR_TAIL_LINES: usize = 8;
/// Longest line of a process's output kept in an error (a tool's stderr,
/// a VMM's serial console: either may print a huge one).
pub const STDERR_LINE_MAX: usize = 400;

/// The last [`STDERR_TAIL_LINES`] non-empty lines of `s`, each trimmed and
/// cut at [`STDERR_LINE_MAX`] characters, joined by newlines.
fn stderr_tail(s: &str) -> String {
    let mut lines: Vec<String> = s
        .lines()
        .rev()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(STDERR_TAIL_LINES)
        .map(cut_line)
        .collect();
    lines.reverse();
    lines.join("\n")
}

/// `line` cut at [`STDERR_LINE_MAX`] characters, marked with `…` when
/// cut: one line of a process's output quoted in an error.
pub fn cut_line(line: &str) -> String {
    cut_at(line, STDERR_LINE_MAX)
}

/// `line` cut at `max` characters (never inside one), marked with `…`
/// when cut.
pub fn cut_at(line: &str, max: usize) -> String {
    match line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

mod piped;
use piped::Piped;
mod reap;
#[cfg(test)]
use reap::no_pidfd;
use reap::{kill_and_reap, open_pidfd, poll_until, reap_later};

#[cfg(test)]
mod tests;
