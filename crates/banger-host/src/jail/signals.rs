//! The calling thread's signals blocked across a clone, as `posix_spawn`
//! does: the jail's child must not run a handler of its parent's before
//! it resets them all.

/// This thread's signal mask with every signal blocked (the kernel keeps
/// `SIGKILL` and `SIGSTOP` deliverable), until dropped, which puts the
/// mask it had back. Raw `rt_sigprocmask`, as the child uses.
pub(super) struct SignalsBlocked {
    old: u64,
}

impl SignalsBlocked {
    pub(super) fn all() -> std::io::Result<SignalsBlocked> {
        let all: u64 = !0;
        let mut old: u64 = 0;
        // SAFETY: rt_sigprocmask(SIG_SETMASK) from and into valid 8-byte
        // sets, the kernel's sigset size.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &all as *const u64,
                &mut old as *mut u64,
                8usize,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(SignalsBlocked { old })
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: as in `all`; the set is the one saved there.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &self.old as *const u64,
                std::ptr::null_mut::<u64>(),
                8usize,
            );
        }
    }
}
