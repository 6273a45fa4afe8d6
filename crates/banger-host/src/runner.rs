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
use std::time::{Duration, Instant};

/// Default PATH given to children.
pub const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A command to run: program, arguments, extra environment, timeout.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            timeout: Duration::from_secs(60),
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

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
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
    pub stdout: String,
    pub stderr: String,
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
                stderr: last_line(&out.stderr),
            });
        }
        Ok(out)
    }

    /// Run and return whatever it produced, success or not.
    pub fn output(&self, cmd: &Cmd) -> Result<Output, RunError> {
        let argv = cmd.display();
        tracing::debug!(%argv, "running");
        let program = resolve(&cmd.program).ok_or_else(|| RunError::NotFound {
            program: cmd.program.to_string_lossy().into_owned(),
        })?;
        #[allow(clippy::disallowed_methods)] // this is the one sanctioned spawn site
        let mut command = Command::new(&program);
        command
            .args(&cmd.args)
            .env_clear()
            .env("PATH", CHILD_PATH)
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|source| RunError::Spawn {
            argv: argv.clone(),
            source,
        })?;
        // Feed stdin and drain both pipes on threads, so neither a slow reader
        // nor a chatty child can block on a full pipe.
        let in_writer = feed(child.stdin.take(), cmd.stdin.clone());
        let out_reader = drain(child.stdout.take());
        let err_reader = drain(child.stderr.take());
        let status = wait_with_timeout(&mut child, cmd.timeout).map_err(|e| match e {
            WaitError::Io(source) => RunError::Wait {
                argv: argv.clone(),
                source,
            },
            WaitError::Timeout => RunError::Timeout {
                argv: argv.clone(),
                secs: cmd.timeout.as_secs(),
            },
        })?;
        if let Some(Err(e)) = in_writer.map(|w| w.join().unwrap_or(Ok(()))) {
            // The child may legitimately exit before reading everything; its
            // status and stderr say what went wrong, so this is only logged.
            tracing::debug!(%argv, error = %e, "writing stdin");
        }
        let stdout = out_reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        tracing::debug!(%argv, %status, "finished");
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }
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
    pipe: Option<std::process::ChildStdin>,
    input: Option<Vec<u8>>,
) -> Option<std::thread::JoinHandle<std::io::Result<()>>> {
    let (mut pipe, input) = (pipe?, input?);
    Some(std::thread::spawn(move || {
        // Dropping the pipe at the end closes the child's stdin (EOF).
        pipe.write_all(&input)
    }))
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

enum WaitError {
    Io(std::io::Error),
    Timeout,
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Result<ExitStatus, WaitError> {
    let deadline = Instant::now() + timeout;
    let mut sleep = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait().map_err(WaitError::Io)? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            // The child is ours: kill it by the handle we hold, then reap it.
            let _ = child.kill();
            let _ = child.wait();
            return Err(WaitError::Timeout);
        }
        std::thread::sleep(sleep);
        sleep = (sleep * 2).min(Duration::from_millis(50));
    }
}

fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_clears_environment() {
        // SAFETY-free: env var set only in this test process, read by the child.
        let out = Runner
            .run(&Cmd::new("sh").args(["-c", "echo out; echo err >&2; echo ${HOME:-nohome}"]))
            .unwrap();
        assert_eq!(out.stdout, "out\nnohome\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn failure_carries_status_and_last_stderr_line() {
        let err = Runner
            .run(&Cmd::new("sh").args(["-c", "echo first >&2; echo 'bad thing' >&2; exit 3"]))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.contains("bad thing"), "{msg}");
    }

    #[test]
    fn stdin_is_fed_then_closed() {
        let out = Runner
            .run(&Cmd::new("sh").args(["-c", "wc -c; cat"]).stdin("hello\n"))
            .unwrap();
        // `wc -c` reads to EOF, so `cat` sees nothing left: stdin was closed.
        assert_eq!(out.stdout.trim(), "6");
        // A large input does not deadlock against a child that writes it back.
        let big = vec![b'x'; 1 << 20];
        let out = Runner.run(&Cmd::new("cat").stdin(big)).unwrap();
        assert_eq!(out.stdout.len(), 1 << 20);
    }

    #[test]
    fn stdin_is_closed_by_default() {
        let out = Runner.run(&Cmd::new("cat")).unwrap();
        assert_eq!(out.stdout, "");
    }

    #[test]
    fn missing_program_is_named() {
        let err = Runner.run(&Cmd::new("no-such-banger-tool")).unwrap_err();
        assert_eq!(err.to_string(), "no-such-banger-tool not found on PATH");
    }

    #[test]
    fn timeout_kills_the_child() {
        let start = Instant::now();
        let err = Runner
            .run(
                &Cmd::new("sleep")
                    .arg("5")
                    .timeout(Duration::from_millis(200)),
            )
            .unwrap_err();
        assert!(matches!(err, RunError::Timeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(3));
    }
}
