//! A child of [`super::Runner::output`] or [`super::Runner::stream_stdout`]:
//! started by std, or cloned into a jail.

use std::os::fd::OwnedFd;
use std::process::{Child, ExitStatus};

#[derive(Debug)]
pub(super) enum Piped {
    Std(Child),
    Jailed(crate::jail::Child),
}

impl Piped {
    /// The write end of stdin, as a descriptor the writer sets non-blocking.
    pub(super) fn take_stdin(&mut self) -> Option<OwnedFd> {
        match self {
            Piped::Std(c) => c.stdin.take().map(OwnedFd::from),
            Piped::Jailed(c) => c.stdin.take().map(OwnedFd::from),
        }
    }

    /// The read end of stdout, or of stderr with `stderr`.
    pub(super) fn take_output(&mut self, stderr: bool) -> Option<std::fs::File> {
        match (self, stderr) {
            (Piped::Std(c), false) => c.stdout.take().map(OwnedFd::from).map(Into::into),
            (Piped::Std(c), true) => c.stderr.take().map(OwnedFd::from).map(Into::into),
            (Piped::Jailed(c), false) => c.stdout.take(),
            (Piped::Jailed(c), true) => c.stderr.take(),
        }
    }

    pub(super) fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        match self {
            Piped::Std(c) => c.try_wait(),
            Piped::Jailed(c) => c.try_wait(),
        }
    }

    /// A pidfd of the child (ours and unreaped, so its pid is still its
    /// own): opened for a std child, a copy of the jail's own.
    pub(super) fn pidfd(&self) -> std::io::Result<OwnedFd> {
        match self {
            Piped::Std(c) => Ok(rustix::process::pidfd_open(
                rustix::process::Pid::from_child(c),
                rustix::process::PidfdFlags::empty(),
            )?),
            Piped::Jailed(c) => c.pidfd().try_clone_to_owned(),
        }
    }

    pub(super) fn id(&self) -> u32 {
        match self {
            Piped::Std(c) => c.id(),
            Piped::Jailed(c) => c.pid(),
        }
    }

    /// SIGKILL by the handle held (a jailed child: its whole pid
    /// namespace goes with it).
    pub(super) fn kill(&mut self) -> std::io::Result<()> {
        match self {
            Piped::Std(c) => c.kill(),
            Piped::Jailed(c) => c.kill(),
        }
    }

    pub(super) fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            Piped::Std(c) => c.wait(),
            Piped::Jailed(c) => c.wait(),
        }
    }
}
