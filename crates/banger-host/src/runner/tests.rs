//! Tests of the runner, against real child processes.

use super::*;
use std::io::Read;

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
fn failure_carries_the_last_stderr_lines_and_no_more() {
    let err = Runner
        .run(&Cmd::new("sh").args([
            "-c",
            "for i in $(seq 1 20); do echo line$i >&2; done; echo >&2; exit 25",
        ]))
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("exit status: 25"), "{msg}");
    let tail = (13..=20).map(|i| format!("line{i}")).collect::<Vec<_>>();
    assert!(msg.ends_with(&tail.join("\n")), "{msg}");
    assert!(!msg.contains("line12"), "{msg}");
}

#[test]
fn output_past_the_cap_is_an_error_and_the_writer_is_cut_off() {
    // `yes` never stops on its own: without a cap this fills memory
    // until the timeout (what `debugfs -R cat` of a hostile inode did).
    let started = Instant::now();
    let err = Runner
        .output(
            &Cmd::new("yes")
                .max_output(1 << 20)
                .timeout(Duration::from_secs(30)),
        )
        .unwrap_err();
    assert!(
        matches!(err, RunError::TooMuchOutput { max_bytes, .. } if max_bytes == 1 << 20),
        "{err}"
    );
    // Cut off by EPIPE, not by the 30 s timeout.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Within the cap, everything arrives.
    let out = Runner
        .run(
            &Cmd::new("head")
                .args(["-c", "1048576", "/dev/zero"])
                .max_output(1 << 20),
        )
        .unwrap();
    assert_eq!(out.stdout_raw.len(), 1 << 20);
}

#[test]
fn a_grandchild_holding_the_pipes_does_not_hold_the_call() {
    // The shell exits at once; its background `sleep` keeps stdout and
    // stderr open. The call returns what the shell wrote, soon after it
    // exited.
    let started = Instant::now();
    let out = Runner
        .run(&Cmd::new("sh").args(["-c", "sleep 30 & echo $!; echo done >&2"]))
        .unwrap();
    let elapsed = started.elapsed();
    let sleeper: i32 = out.stdout.lines().next().unwrap().trim().parse().unwrap();
    // The test's own child: stop it by its pid.
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(sleeper).unwrap(),
        rustix::process::Signal::KILL,
    );
    assert_eq!(out.stderr, "done\n");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[test]
fn stdout_streams_into_the_sink_up_to_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    let sink = || std::fs::File::create(&path).unwrap();
    // 3 MiB, in many chunks, arrives whole; stderr is kept apart.
    let got = Runner
        .stream_stdout(
            &Cmd::new("sh").args(["-c", "head -c 3145728 /dev/zero; echo note >&2"]),
            sink(),
            4 << 20,
        )
        .unwrap();
    assert_eq!(got.bytes, 3 << 20);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 << 20);
    assert_eq!(got.stderr, "note\n");
    // One byte over the cap: refused, and the sender is not waited on
    // forever (it gets EPIPE; `yes` would otherwise never stop).
    let err = Runner
        .stream_stdout(&Cmd::new("yes"), sink(), 1 << 20)
        .unwrap_err();
    assert!(
        matches!(err, RunError::TooMuchOutput { max_bytes, .. } if max_bytes == 1 << 20),
        "{err}"
    );
    assert!(std::fs::metadata(&path).unwrap().len() <= 1 << 20);
    // A failing command carries its stderr tail.
    let err = Runner
        .stream_stdout(
            &Cmd::new("sh").args(["-c", "echo partial; echo gone >&2; exit 7"]),
            sink(),
            100,
        )
        .unwrap_err();
    assert!(err.to_string().contains("gone"), "{err}");
    // The timeout holds while the child sends nothing.
    let err = Runner
        .stream_stdout(
            &Cmd::new("sleep")
                .arg("30")
                .timeout(Duration::from_millis(300)),
            sink(),
            100,
        )
        .unwrap_err();
    assert!(matches!(err, RunError::Timeout { .. }), "{err}");
}

#[test]
fn a_huge_stderr_line_is_cut() {
    let err = Runner
        .run(&Cmd::new("sh").args(["-c", "head -c 5000 /dev/zero | tr '\\0' x >&2; exit 1"]))
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.len() < 1000, "{} bytes", msg.len());
    assert!(msg.ends_with('…'), "{msg}");
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
fn spawned_child_is_signalled_through_its_pidfd() {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = Runner
        .spawn(
            &Cmd::new("sh").args(["-c", "echo up; echo $PPID >&2; exec sleep 30"]),
            SpawnOptions {
                output: Some(out.reopen().unwrap()),
                run_as: None,
            },
        )
        .unwrap();
    assert!(
        child
            .wait_timeout(Duration::from_millis(300))
            .unwrap()
            .is_none()
    );
    let status = child.kill().unwrap();
    assert!(!status.success());
    let log = std::fs::read_to_string(out.path()).unwrap();
    assert!(log.starts_with("up\n"), "{log}");
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

#[test]
fn the_output_cap_is_for_stdout_and_stderr_keeps_the_default() {
    // What debugfs does: a banner on stderr, the payload on stdout.
    let out = Runner
        .run(
            &Cmd::new("sh")
                .args(["-c", "echo 'debugfs 1.47.0 (5-Feb-2023)' >&2; printf dev"])
                .max_output(4),
        )
        .unwrap();
    assert_eq!(out.stdout, "dev");
    assert_eq!(out.stderr, "debugfs 1.47.0 (5-Feb-2023)\n");
}

#[test]
fn a_grandchild_holding_stdout_does_not_hold_a_stream() {
    // The shell writes, leaves a `sleep` holding stdout, and exits: the
    // call returns soon after it exited, what was written is in the sink,
    // and the stream is an error since it never ended (item 20).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    let (got, elapsed) = stream_leaving("sleep 30", std::fs::File::create(&path).unwrap());
    assert!(
        matches!(got, Err(RunError::OutputDidNotEnd { .. })),
        "{got:?}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "data\n");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[test]
fn a_grandchild_holding_stdin_unread_does_not_hold_the_call() {
    // More input than a pipe holds; the shell exits at once, its
    // background `sleep` keeps stdin open and never reads it.
    let started = Instant::now();
    let out = Runner
        .run(
            &Cmd::new("sh")
                .args(["-c", "exec 3<&0; sleep 30 <&3 & echo $!"])
                .stdin(vec![b'x'; 4 << 20]),
        )
        .unwrap();
    let elapsed = started.elapsed();
    let sleeper: i32 = out.stdout.trim().parse().unwrap();
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(sleeper).unwrap(),
        rustix::process::Signal::KILL,
    );
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

/// Stream `sh -c "LEFT & ...; echo data"` into `sink`: the shell leaves
/// `left` running in the background holding stdout, and exits. Returns the
/// result and how long the call took; `left` is then stopped by its pid
/// (the test's own process).
fn stream_leaving(left: &str, sink: std::fs::File) -> (Result<Streamed, RunError>, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let pid = dir.path().join("pid");
    let script = format!("{left} & echo $! > {}; echo data", pid.display());
    let started = Instant::now();
    let got = Runner.stream_stdout(
        &Cmd::new("sh")
            .args(["-c", &script])
            .timeout(Duration::from_secs(300)),
        sink,
        128 << 20,
    );
    let elapsed = started.elapsed();
    if let Some(pid) = std::fs::read_to_string(&pid)
        .ok()
        .and_then(|p| p.trim().parse().ok())
    {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
    (got, elapsed)
}

#[test]
fn a_stream_cut_off_before_its_end_is_an_error() {
    // Item 20: the shell exits, and what it left (as an ssh master relays
    // the rest of a file) still holds stdout and is still sending. The
    // copy must not end as a success with part of the data.
    let (got, elapsed) = stream_leaving(
        "(sleep 1; echo more; exec sleep 30)",
        tempfile::tempfile().unwrap(),
    );
    let err = got.expect_err("a stream that never reached its end reported success");
    assert!(matches!(err, RunError::OutputDidNotEnd { .. }), "{err}");
    assert!(err.to_string().contains("output did not end"), "{err}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[test]
fn a_grandchild_sending_after_the_exit_does_not_stretch_a_stream() {
    // Item 20: what the child left keeps stdout full, and the sink is slow
    // (a pipe read at about 6 MB/s), so the copy always finds bytes
    // waiting; past the drain deadline only what is already buffered is
    // read, once. Before, the copy went on while a poll found bytes: here
    // until the byte cap, 128 MiB, some 20 s.
    let (mut slow_end, sink) = std::io::pipe().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while matches!(slow_end.read(&mut buf), Ok(n) if n > 0) {
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let (got, elapsed) = stream_leaving(
        "exec cat /dev/zero",
        std::fs::File::from(std::os::fd::OwnedFd::from(sink)),
    );
    reader.join().unwrap();
    let err = got.expect_err("a stream that never reached its end reported success");
    assert!(
        matches!(err, RunError::OutputDidNotEnd { .. }),
        "after {elapsed:?}: {err}"
    );
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[test]
fn the_stdin_writer_is_gone_when_the_call_returns() {
    // Item 20: more input than a pipe holds; the shell exits at once and
    // leaves a process holding stdin unread, which starts reading it well
    // after the call returned. A writer thread left behind (before: it
    // held a thread and the input until the pipe moved) then feeds it the
    // rest; one that ended by the deadline closed the pipe, so the reader
    // gets at most what the pipe held.
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    let input = 4 << 20;
    let script = format!(
        "exec 3<&0; (sleep 6; wc -c <&3 > {}.tmp; mv {0}.tmp {0}) & echo $!",
        count.display()
    );
    let started = Instant::now();
    let out = Runner
        .run(
            &Cmd::new("sh")
                .args(["-c", &script])
                .stdin(vec![b'x'; input]),
        )
        .unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
    let until = Instant::now() + Duration::from_secs(20);
    while !count.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let reader: i32 = out.stdout.trim().parse().unwrap();
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(reader).unwrap(),
        rustix::process::Signal::KILL,
    );
    let got: usize = std::fs::read_to_string(&count)
        .expect("the late reader never got to the end of stdin")
        .trim()
        .parse()
        .unwrap();
    assert!(
        got < input,
        "a writer left behind by the call fed the late reader all {got} bytes"
    );
}

/// Open `/proc/<pid>/fd/<fd>` as the uid a tool runs as can (the child
/// is dumpable after setuid+exec): another reader, or another writer, on
/// the runner's own pipe.
fn reopen(pid: i32, fd: i32, write: bool) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open(format!("/proc/{pid}/fd/{fd}"))
        .expect("reopening the child's descriptor")
}

/// Whether a thread of this process sits in `read(2)` on a descriptor of
/// `pipe` (`pipe:[inode]`) other than `except`, seen twice 10 ms apart.
fn caught_reading(pipe: &Path, except: i32) -> bool {
    let reading = || {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return false;
        };
        tasks.flatten().any(|task| {
            let Ok(call) = std::fs::read_to_string(task.path().join("syscall")) else {
                return false;
            };
            let mut words = call.split_whitespace();
            if words.next() != Some(&libc::SYS_read.to_string()) {
                return false;
            }
            let fd = words
                .next()
                .and_then(|fd| i32::from_str_radix(fd.trim_start_matches("0x"), 16).ok())
                .filter(|fd| *fd != except);
            fd.and_then(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok())
                .is_some_and(|target| target == pipe)
        })
    };
    reading() && {
        std::thread::sleep(Duration::from_millis(10));
        reading()
    }
}

/// The pid a child wrote into `file`, waiting for it until `until`.
fn pid_written(file: &Path, until: Instant) -> i32 {
    loop {
        let read = std::fs::read_to_string(file).unwrap_or_default();
        if let Ok(pid) = read.trim().parse() {
            return pid;
        }
        assert!(Instant::now() < until, "the child never wrote its pid");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_second_reader_on_a_childs_stderr_does_not_pin_the_call() {
    // Review of item 20 (medium): the uid a tool runs as reopens the
    // tool's stderr through /proc: a second reader (blocked in a read)
    // and a writer on the runner's pipe. Each byte written wakes both the
    // runner's poll and that reader; when the reader takes it first the
    // runner's read finds the pipe empty. A blocking read then waited for
    // as long as a writer stayed, and the call with it (before: until
    // this test's watchdog closed its writer).
    use std::os::fd::AsRawFd as _;
    const TIMEOUT: Duration = Duration::from_secs(5);
    const WATCHDOG: Duration = Duration::from_secs(12);
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!(
        "echo $$ > {}; echo started >&2; exec sleep 1",
        pid_file.display()
    );
    let cmd = Cmd::new("sh").args(["-c", &script]).timeout(TIMEOUT);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let call = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let got = Runner.output(&cmd);
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            (got, started.elapsed())
        })
    };
    let pid = pid_written(&pid_file, started + TIMEOUT);
    let pipe = std::fs::read_link(format!("/proc/{pid}/fd/2")).unwrap();
    let mut reader = reopen(pid, 2, false);
    let reader_fd = reader.as_raw_fd();
    let mut writer = reopen(pid, 2, true);
    // The second reader keeps reading until every writer is gone.
    let stealer = std::thread::spawn(move || {
        let mut stolen = 0usize;
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            stolen += n;
        }
        stolen
    });
    // Write until the runner is caught in a read of the empty pipe (or
    // the drain deadline is near), then only hold the pipe open.
    let mut caught = false;
    while !caught && started.elapsed() < Duration::from_secs(3) {
        let _ = writer.write(b"x");
        std::thread::sleep(Duration::from_millis(1));
        caught = caught_reading(&pipe, reader_fd);
    }
    while !done.load(std::sync::atomic::Ordering::SeqCst) && started.elapsed() < WATCHDOG {
        std::thread::sleep(Duration::from_millis(10));
    }
    // The watchdog: with the last writer gone a blocked read ends.
    drop(writer);
    let (got, elapsed) = call.join().unwrap();
    let stolen = stealer.join().unwrap();
    assert!(stolen > 0, "the test never read from the child's stderr");
    assert!(
        elapsed < TIMEOUT + DRAIN_AFTER_EXIT,
        "the call returned only after {elapsed:?} (watchdog {WATCHDOG:?}; runner caught \
         in a read of the empty pipe: {caught}): {got:?}"
    );
    let out = got.expect("the call failed");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_stdin_write_error_other_than_the_child_leaving_fails_the_call() {
    // Review of item 20 (info): only logged before, so `nft -f -` could
    // "succeed" fed nothing. A real pipe gives the writer no such error
    // (it sees EPIPE or the deadline), so the writer's result is injected.
    let writer = |e: Option<std::io::ErrorKind>| {
        Some(std::thread::spawn(move || match e {
            Some(kind) => Err(std::io::Error::from(kind)),
            None => Ok(()),
        }))
    };
    let argv = "nft -f -";
    let err = finish_feeding(writer(Some(std::io::ErrorKind::Other)), argv).unwrap_err();
    assert!(matches!(err, RunError::Stdin { .. }), "{err}");
    assert!(
        err.to_string().contains("writing stdin to `nft -f -`"),
        "{err}"
    );
    let panicked = Some(std::thread::spawn(|| -> std::io::Result<()> {
        panic!("the writer panicked")
    }));
    assert!(finish_feeding(panicked, argv).is_err());
    // The child's leaving is its own status's to report.
    for fine in [
        None,
        Some(std::io::ErrorKind::BrokenPipe),
        Some(std::io::ErrorKind::TimedOut),
    ] {
        finish_feeding(writer(fine), argv).unwrap();
    }
    // Review of item 20 (info): the writer fails after a first line, and
    // the child must not go on as if fed everything. A prefix cut at a
    // line break is a valid `nft -f -` batch (the `delete table` lines
    // alone, say). Before, the writer closed stdin first: the child read
    // the line, saw EOF and finished (here: wrote its marker, exit 0).
    // It is killed before stdin is closed now.
    fn fail_after_a_line(
        pipe: &std::os::fd::OwnedFd,
        input: &[u8],
        _: &OnceLock<Instant>,
    ) -> std::io::Result<()> {
        let line = input.iter().position(|b| *b == b'\n').unwrap() + 1;
        assert_eq!(rustix::io::write(pipe, &input[..line])?, line);
        Err(std::io::Error::other("injected after a line"))
    }
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("applied");
    let script = format!(
        "while IFS= read -r line; do echo \"$line\" >&2; done; echo applied > {}",
        marker.display()
    );
    let err = Runner
        .output_with(
            &Cmd::new("sh")
                .args(["-c", &script])
                .stdin("delete table ip banger\nadd table ip banger\n")
                .timeout(Duration::from_secs(20)),
            fail_after_a_line,
        )
        .unwrap_err();
    assert!(matches!(err, RunError::Stdin { .. }), "{err}");
    // The call returns after the child was reaped: it never got past EOF.
    assert!(
        !marker.exists(),
        "the child read the first line to EOF and finished as if fed it all"
    );
}

/// Start a process that ptrace-attaches to `pid` (`PTRACE_SEIZE`) and then
/// never waits. A traced child's exit is reported to its tracer first: its
/// parent cannot reap it while the tracer lives (what the uid a tool runs
/// as can do to it, given ptrace rights over its own processes). Returns
/// the tracer's pid once `/proc/<pid>/status` names it; stop it with
/// [`stop_tracer`].
fn trace_without_waiting(pid: i32) -> i32 {
    // SAFETY: fork has no memory-safety preconditions of its own; what the
    // child of this multi-threaded process may do is bounded below.
    let tracer = unsafe { libc::fork() };
    assert!(tracer >= 0, "fork: {}", std::io::Error::last_os_error());
    if tracer == 0 {
        // SAFETY: the forked child makes only raw, async-signal-safe
        // syscalls (ptrace, pause, _exit): it takes no lock, allocates
        // nothing and never returns into the test harness.
        unsafe {
            let seized = libc::syscall(
                libc::SYS_ptrace,
                libc::c_long::from(libc::PTRACE_SEIZE),
                libc::c_long::from(pid),
                0 as libc::c_long,
                0 as libc::c_long,
            );
            if seized != 0 {
                libc::_exit(1);
            }
            loop {
                libc::pause();
            }
        }
    }
    let until = Instant::now() + Duration::from_secs(5);
    let tracer_line = format!("TracerPid:\t{tracer}");
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if status.lines().any(|l| l == tracer_line) {
            return tracer;
        }
        if Instant::now() >= until {
            stop_tracer(tracer);
            panic!("the tracer {tracer} never attached to {pid}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// SIGKILL the test's own tracer by its pid and reap it: its tracee is
/// then its parent's to reap again.
fn stop_tracer(tracer: i32) {
    let tracer = rustix::process::Pid::from_raw(tracer).unwrap();
    let _ = rustix::process::kill_process(tracer, rustix::process::Signal::KILL);
    rustix::process::waitpid(Some(tracer), rustix::process::WaitOptions::empty()).unwrap();
}

/// Wait for `call` while `tracer` holds the child it waits on, at most
/// `watchdog` (with the tracer gone a blocked wait ends); then stop the
/// tracer and join the call.
fn join_then_untrace<T>(call: std::thread::JoinHandle<T>, tracer: i32) -> T {
    const WATCHDOG: Duration = Duration::from_secs(12);
    let started = Instant::now();
    while !call.is_finished() && started.elapsed() < WATCHDOG {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop_tracer(tracer);
    call.join().unwrap()
}

/// `pid` is gone within a few seconds: reaped, no zombie left.
fn assert_reaped(pid: i32) {
    let until = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < until,
            "{pid} was never reaped: {}",
            std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_timed_out_child_held_by_a_tracer_does_not_hold_the_call() {
    // Review of item 20 (medium): the uid a tool runs as ptrace-attaches to
    // it and never waits, so after the timeout's SIGKILL its zombie is
    // reported to the tracer only and the runner's reap waited for as long
    // as the tracer lived (before: until this test's watchdog stopped it).
    const TIMEOUT: Duration = Duration::from_secs(1);
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 30", pid_file.display());
    let cmd = Cmd::new("sh").args(["-c", &script]).timeout(TIMEOUT);
    let started = Instant::now();
    let call = std::thread::spawn(move || {
        let got = Runner.output(&cmd);
        (got, started.elapsed())
    });
    let pid = pid_written(&pid_file, started + TIMEOUT);
    let tracer = trace_without_waiting(pid);
    assert!(
        !call.is_finished(),
        "the call ended before the tracer attached"
    );
    let (got, elapsed) = join_then_untrace(call, tracer);
    assert!(matches!(got, Err(RunError::Timeout { .. })), "{got:?}");
    assert!(
        elapsed < TIMEOUT + DRAIN_AFTER_EXIT + Duration::from_secs(1),
        "the call returned only after {elapsed:?}"
    );
    // With the tracer gone, the reaper the runner left behind reaps it.
    assert_reaped(pid);
}

#[test]
fn killing_a_spawned_child_held_by_a_tracer_returns_and_it_is_reaped_later() {
    // Review of item 20: `Spawned::kill` (stopping a VMM that runs as
    // another uid) reaped with an unbounded wait, held the same way.
    let mut child = Runner
        .spawn(&Cmd::new("sleep").arg("30"), SpawnOptions::default())
        .unwrap();
    let pid = i32::try_from(child.pid()).unwrap();
    let tracer = trace_without_waiting(pid);
    let started = Instant::now();
    let call = std::thread::spawn(move || {
        let got = child.kill();
        (got, started.elapsed(), child)
    });
    let (got, elapsed, mut child) = join_then_untrace(call, tracer);
    assert!(
        elapsed < DRAIN_AFTER_EXIT + Duration::from_secs(1),
        "kill returned only after {elapsed:?}: {got:?}"
    );
    let err = got.expect_err("a child that was not reaped was reported killed");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    // With the tracer gone the reaper reaps it, and says how it ended.
    let until = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < until, "the reaper never reaped {pid}");
        std::thread::sleep(Duration::from_millis(10));
    };
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert_reaped(pid);
}

/// Hostile read of the jailed driver, the pidfd gap: a child whose pidfd
/// cannot be opened (`EMFILE`) is killed; reaped in time, that is a plain
/// spawn error and the child is gone (its kill is confirmed). Not reaped
/// in time it is `RunError::StillRunning`, which the VMM drivers turn into
/// `VmmError::StillRunning` (`banger_vmm::spawn_failed`'s test).
#[test]
fn a_child_without_a_pidfd_is_killed_and_a_confirmed_kill_is_a_spawn_error() {
    let child = base_command(&Cmd::new("sleep").arg("30"))
        .unwrap()
        .spawn()
        .unwrap();
    let pid = child.id();
    let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
    let e = no_pidfd(Piped::Std(child), "sleep 30", emfile);
    assert!(
        matches!(&e, RunError::Spawn { source, .. } if source.raw_os_error() == Some(libc::EMFILE)),
        "{e:?}"
    );
    let gone =
        rustix::process::test_kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap());
    assert_eq!(
        gone,
        Err(rustix::io::Errno::SRCH),
        "pid {pid} is still there"
    );
}
