//! A child of [`super::Runner::output`] or [`super::Runner::stream_stdout`]:
//! started by std, or cloned into a jail.

use std::os::fd::OwnedFd;
use std::process::{Child, ExitStatus};

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

    /// Kill it by the handle held (a jailed child: its whole pid
    /// namespace) and reap it.
    pub(super) fn kill_and_reap(&mut self) {
        match self {
            Piped::Std(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Piped::Jailed(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
