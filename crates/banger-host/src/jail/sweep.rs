//! Killing what a jail uid left running.
//!
//! A jailed tool is pid 1 of its own pid namespace with a parent-death
//! signal, so it dies with the daemon that waits for it — unless it was
//! exploited and cleared that signal. Such a process, or anything it
//! started, keeps the jail uid after a helper crash; the next start kills
//! it. Each process is held by a pidfd before its ids are read, and
//! killed through that pidfd: a pid reused between the check and the
//! signal is never hit.

use std::io::Read as _;
use std::os::fd::{AsFd as _, OwnedFd};

/// How many passes over `/proc` a sweep makes before it gives up.
pub const MAX_PASSES: usize = 50;

/// A process the sweep must leave alive: a VMM the daemon journaled and
/// will re-adopt, identified as re-adoption identifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spare {
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` when it was journaled.
    pub start_time: u64,
    /// The one uid (real, effective, saved and file-system) it runs as.
    pub uid: u32,
}

/// Kill every process whose real, effective, saved or file-system uid is
/// in `base..base+count` except the processes of `spare` that are still
/// exactly what was journaled (held by a pidfd, same start time, all four
/// uids the journaled one); the pids killed (as this pid namespace sees
/// them). Processes that exit meanwhile are skipped.
///
/// One pass over `/proc` is not enough: a process of the range that
/// forks can put a child at a pid the pass has already read past (pids
/// wrap). Passes repeat until one finds no live process of the range but
/// the spared; if `MAX_PASSES` do not get there, the sweep fails naming
/// what is left.
pub fn kill_range(base: u32, count: u32, spare: &[Spare]) -> std::io::Result<Vec<u32>> {
    let held: Vec<(u32, OwnedFd)> = spare
        .iter()
        .filter_map(|s| hold(s).transpose())
        .collect::<std::io::Result<_>>()?;
    // A listed pid is a spared process only while that process lives: its
    // pid cannot then name another.
    let spared = |pid: u32| held.iter().any(|(p, fd)| *p == pid && alive(fd, 0));
    let end = u64::from(base) + u64::from(count);
    let inside = |id: u32| u64::from(id) >= u64::from(base) && u64::from(id) < end;
    let matches = |s: &Status| s.uids.into_iter().any(inside);
    repeat_passes(|killed| pass(&matches, false, killed, &spared))
}

/// A pidfd of `s`'s process if it still is what was journaled; an error
/// other than "it has exited" (no descriptor left) fails the sweep rather
/// than leave a journaled VMM unspared.
fn hold(s: &Spare) -> std::io::Result<Option<(u32, OwnedFd)>> {
    let Some(pid) = i32::try_from(s.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return Ok(None);
    };
    let fd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(e) if gone_before_open(&e.into()) => return Ok(None),
        Err(e) => return Err(failed("holding", pid, e.into())),
    };
    // Read after the pidfd is taken: while it lives, the pid is its.
    let same = is_journaled(s.pid, s.start_time, Some(s.uid))? && alive(&fd, 0);
    Ok(same.then_some((s.pid, fd)))
}

/// Whether `pid` still is the process journaled with `start_time` and
/// (when given) all four uids `uid`: `Ok(false)` when it has exited or
/// the pid is another process's. Any other error reading it (no
/// descriptor left, no memory) says nothing about the process and is
/// returned: a caller keeps what it journaled.
pub fn is_journaled(pid: u32, start_time: u64, uid: Option<u32>) -> std::io::Result<bool> {
    let gone = |e: std::io::Error| if exited(&e) { Ok(false) } else { Err(e) };
    match self::start_time(pid) {
        Ok(t) if t == start_time => {}
        Ok(_) => return Ok(false),
        Err(e) => return gone(e),
    }
    let Some(uid) = uid else {
        return Ok(true);
    };
    match uids_of(pid as i32) {
        Ok(ids) => Ok(ids.iter().all(|&u| u == uid)),
        Err(e) => gone(e),
    }
}

/// Field 22 of `/proc/<pid>/stat`: start time in clock ticks since boot.
/// `ENOENT`/`ESRCH` when the process has exited.
pub fn start_time(pid: u32) -> std::io::Result<u64> {
    // Bytes, not UTF-8: the command name is whatever the process set
    // (`/proc/self/comm`), and a byte that is not UTF-8 must not make the
    // read fail. It may contain spaces and ')'; fields resume after the
    // last ')'.
    let stat = std::fs::read(format!("/proc/{pid}/stat"))?;
    let stat = String::from_utf8_lossy(&stat);
    let field = stat
        .rfind(')')
        .and_then(|end| stat.get(end + 2..))
        .and_then(|rest| rest.split(' ').nth(19))
        .and_then(|t| t.parse().ok());
    field.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat: no start time"),
        )
    })
}

/// After the helper gave up on the spawner mid-request (which it has
/// killed, and reaped if it could): kill every process of jail uid
/// `uid`, and every child of this process in a pid namespace of its own
/// still with root's uids — a clone of the spawner's before its uid
/// change: this request's, or an earlier request's clone that failed
/// before its uid change and is exiting, for which the kill changes
/// nothing (this process, locked down, makes no namespace itself) — and
/// reap those of them that are this process's children and no `Child`
/// holds. A jailed child of another uid (a QEMU of
/// another VM, cloned for this helper) is left alone: it is a child in a
/// pid namespace of its own too. The pids killed.
pub(super) fn kill_jailed(uid: u32) -> std::io::Result<Vec<u32>> {
    let me = std::process::id();
    let matches =
        |s: &Status| s.uids.contains(&uid) || (s.ppid == me && s.nested && s.uids == [0; 4]);
    repeat_passes(|killed| pass(&matches, true, killed, &|_| false))
}

/// Run `pass` (which kills what it finds, adding it to `killed`, and
/// returns the live processes of the range it found) until one finds
/// none.
fn repeat_passes(
    mut pass: impl FnMut(&mut Vec<u32>) -> std::io::Result<Vec<u32>>,
) -> std::io::Result<Vec<u32>> {
    let mut killed = Vec::new();
    let mut found = Vec::new();
    for _ in 0..MAX_PASSES {
        found = pass(&mut killed)?;
        if found.is_empty() {
            return Ok(killed);
        }
    }
    Err(std::io::Error::other(format!(
        "jail sweep: processes of the range still running after {MAX_PASSES} passes: {found:?}"
    )))
}

/// One pass over `/proc`: every live process that `matches` is killed
/// (its pid added to `killed`) and waited for briefly, then, with `reap`,
/// reaped when it is this process's child and has exited; the pids
/// found.
fn pass(
    matches: &dyn Fn(&Status) -> bool,
    reap: bool,
    killed: &mut Vec<u32>,
    spared: &dyn Fn(u32) -> bool,
) -> std::io::Result<Vec<u32>> {
    let mut found = Vec::new();
    let mut dying = Vec::new();
    let mut dying_pids = Vec::new();
    for e in std::fs::read_dir("/proc")? {
        // An error reading the directory ends std's iteration: every
        // process after it would go unseen.
        let e = e.map_err(|e| std::io::Error::new(e.kind(), format!("jail sweep: /proc: {e}")))?;
        let Some(pid) = e
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw)
        else {
            continue;
        };
        let pidfd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(e) if gone_before_open(&e.into()) => continue,
            Err(e) => return Err(failed("holding", pid, e.into())),
        };
        let status = match status_of(pid.as_raw_nonzero().get()) {
            Ok(status) => status,
            Err(e) if exited(&e) => continue,
            Err(e) => return Err(failed("reading the ids of", pid, e)),
        };
        // The status was read after the pidfd was taken: while that
        // process lives, the pid is its, so the status is its.
        if !alive(&pidfd, 0) || !matches(&status) {
            continue;
        }
        let raw = pid.as_raw_nonzero().get() as u32;
        if spared(raw) {
            continue;
        }
        found.push(raw);
        match rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL) {
            Ok(()) => {
                killed.push(raw);
                dying.push(pidfd);
                dying_pids.push(raw);
            }
            Err(rustix::io::Errno::SRCH) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Let what was killed exit before the next pass looks (one still
    // alive then is found, and killed, again).
    wait_exits(&dying, EXIT_WAIT_MS);
    if reap {
        // Only what no caller holds to reap itself (a late clone nobody
        // got an answer for): another thread's tool is that thread's.
        let mine = dying_pids.iter().map(|&p| !super::spawner::owned(p));
        for (pidfd, _) in dying.iter().zip(mine).filter(|(_, mine)| *mine) {
            // Not this process's child (ECHILD), or not exited yet (the
            // next pass finds it again): nothing to reap now.
            let _ = rustix::process::waitid(
                rustix::process::WaitId::PidFd(pidfd.as_fd()),
                rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOHANG,
            );
        }
    }
    Ok(found)
}

/// How long a pass waits for what it killed to exit, in all.
const EXIT_WAIT_MS: i64 = 1000;

/// Wait until every process behind `pidfds` has exited or `wait_ms` has
/// passed, polling them all at once against that one deadline; how many
/// are still alive then. Each descriptor with any event (exited, reaped or
/// not) is dropped from the wait and the rest waited for; an error polling,
/// or a descriptor that is none, counts what is left as alive.
fn wait_exits(pidfds: &[OwnedFd], wait_ms: i64) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(wait_ms as u64);
    let mut left: Vec<&OwnedFd> = pidfds.iter().collect();
    while !left.is_empty() {
        let now = std::time::Instant::now();
        if now >= deadline {
            break;
        }
        let wait = rustix::event::Timespec::try_from(deadline - now)
            .expect("a deadline of at most seconds fits");
        let mut fds: Vec<_> = left
            .iter()
            .map(|fd| rustix::event::PollFd::new(*fd, rustix::event::PollFlags::IN))
            .collect();
        match rustix::event::poll(&mut fds, Some(&wait)) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        }
        // Any event says that one has exited: `POLLIN` for a zombie,
        // `POLLIN|POLLHUP` for one already reaped (Linux 6.9 on). Only
        // `POLLNVAL` (not a descriptor) ends the wait, with what is left
        // counted alive.
        if fds
            .iter()
            .any(|f| f.revents().contains(rustix::event::PollFlags::NVAL))
        {
            break;
        }
        let exited: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        let mut gone = exited.into_iter();
        left.retain(|_| !gone.next().unwrap_or(false));
    }
    left.len()
}

/// Whether `e`, from holding a process or reading its status, says only
/// that the process has exited: it is then skipped. Any other error (no
/// descriptor left, access refused, a status not understood) could hide a
/// live process of the range, so the sweep fails and the daemon does not
/// start.
fn exited(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ENOENT))
}

/// `pidfd_open` of a pid `/proc` listed as a process: besides [`exited`],
/// `EINVAL` says the pid now names a thread that leads no process — the
/// listed process is gone and its pid taken by another's thread.
pub fn gone_before_open(e: &std::io::Error) -> bool {
    exited(e) || e.raw_os_error() == Some(libc::EINVAL)
}

fn failed(what: &str, pid: rustix::process::Pid, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(
        e.kind(),
        format!(
            "jail sweep: {what} process {}: {e}",
            pid.as_raw_nonzero().get()
        ),
    )
}

/// What a sweep reads of a process in `/proc/<pid>/status`.
struct Status {
    /// The four uids of `Uid:`.
    uids: [u32; 4],
    /// `PPid:`.
    ppid: u32,
    /// Whether `NSpid:` names more than one pid: the process is in a pid
    /// namespace below this one's.
    nested: bool,
}

/// The four uids (real, effective, saved, file-system) of `Uid:` in
/// `/proc/<pid>/status`.
pub fn uids_of(pid: i32) -> std::io::Result<[u32; 4]> {
    Ok(status_of(pid)?.uids)
}

/// The most of `/proc/<pid>/status` read ([`status_of`]).
const STATUS_CAP: u64 = 2 << 20;

/// `Uid:`, `PPid:` and `NSpid:` of `/proc/<pid>/status`.
fn status_of(pid: i32) -> std::io::Result<Status> {
    // Bytes, not UTF-8: `Name:` is whatever the process set (see
    // `start_time`); the lines read here are the kernel's ASCII.
    let mut bytes = Vec::new();
    // Bounded, but above the largest file the kernel writes: `Groups:`
    // (before `NSpid:`) lists up to 65536 supplementary groups, about
    // 720 KiB, and any user with subordinate gids can hold that many in
    // a user namespace (last read before landing: a 64 KiB cap cut
    // `NSpid:` off and failed the sweep).
    std::fs::File::open(format!("/proc/{pid}/status"))?
        .take(STATUS_CAP)
        .read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let line = |key: &str| text.lines().find_map(|l| l.strip_prefix(key));
    let uids = line("Uid:").and_then(|line| {
        let mut ids = line.split_whitespace().map(|w| w.parse::<u32>().ok());
        Some([ids.next()??, ids.next()??, ids.next()??, ids.next()??])
    });
    let ppid = line("PPid:").and_then(|l| l.trim().parse::<u32>().ok());
    let nested = line("NSpid:").map(|l| l.split_whitespace().count() > 1);
    match (uids, ppid, nested) {
        (Some(uids), Some(ppid), Some(nested)) => Ok(Status { uids, ppid, nested }),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no Uid: line of four ids, PPid: or NSpid: line",
        )),
    }
}

/// Whether the process behind `pidfd` exits (reaped or not) within
/// `wait`; an error polling counts as not.
pub(super) fn exited_within(pidfd: &OwnedFd, wait: std::time::Duration) -> bool {
    let ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
    wait_exits(std::slice::from_ref(pidfd), ms) == 0
}

/// Kill the process behind `pidfd` (`ESRCH`: already gone), wait up to
/// `wait` for it to exit and reap it if it can be now (`ECHILD`: not this
/// process's child, or already reaped; not reapable while another process
/// traces it). `what` names it in the error.
pub(super) fn kill_and_reap(
    pidfd: &OwnedFd,
    wait: std::time::Duration,
    what: &str,
) -> std::io::Result<()> {
    match rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(e) => return Err(e.into()),
    }
    if !exited_within(pidfd, wait) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the killed {what} did not exit within {wait:?}"),
        ));
    }
    match rustix::process::waitid(
        rustix::process::WaitId::PidFd(pidfd.as_fd()),
        rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOHANG,
    ) {
        Ok(_) | Err(rustix::io::Errno::CHILD) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether the process behind `pidfd` has not exited (its pidfd is not
/// readable) within `wait_ms`. An error polling counts as alive.
fn alive(pidfd: &OwnedFd, wait_ms: i64) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        pidfd,
        rustix::event::PollFlags::IN,
    )];
    let wait = rustix::event::Timespec {
        tv_sec: wait_ms / 1000,
        tv_nsec: (wait_ms % 1000) * 1_000_000,
    };
    !matches!(rustix::event::poll(&mut fds, Some(&wait)), Ok(n) if n > 0)
}

#[cfg(test)]
mod tests;
