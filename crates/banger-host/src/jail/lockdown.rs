//! The root helper's own seccomp filter, installed right after it forks the
//! jail spawner ([`super::spawner::start`]) and before its first thread, so
//! every thread and child it ever has inherits it: no mount system call and
//! no new namespace. Only the spawner keeps those (hostile review F1: with
//! `CAP_SYS_ADMIN` and `@mount`, code running in the helper could unmount
//! the unit's read-only `/proc/sys` and write `kernel.core_pattern`).
//!
//! `EPERM` for `mount`, `umount2`, `pivot_root`, the new mount API
//! (`fsopen`, `fsconfig`, `fsmount`, `fspick`, `open_tree` with
//! `OPEN_TREE_CLONE`, `move_mount`, `mount_setattr`, `open_tree_attr`
//! whatever its flags), `setns`, the calls that reach into
//! another process (`ptrace`, `process_vm_readv`, `process_vm_writev`,
//! `pidfd_getfd`), kernel code and programs (`bpf`, `perf_event_open`,
//! `kexec_load`, `kexec_file_load`, `init_module`, `finit_module`,
//! `delete_module`), and `clone`/`unshare` with any `CLONE_NEW*`
//! flag; `ENOSYS` for `clone3` (its flags are behind a pointer; glibc then
//! falls back to `clone`) and for every call newer than the newest this
//! filter was written against. `unshare` without one stays allowed: the VMM
//! launch gives one thread its own working directory with
//! `unshare(CLONE_FS)`. x32 numbers are refused, another architecture's
//! calls kill the process. Built the way [`super::filter`] builds the
//! jailed tool's.

use super::filter::{
    ARG0_LOW, ARG2_LOW, Insn, JEQ_K, JGE_K, JSET_K, Label, RET_ALLOW, RET_KILL_PROCESS, at, errno,
    install, jump, ld, prologue, resolve, ret,
};

/// Calls refused outright with `EPERM`.
#[cfg(target_arch = "x86_64")]
const DENIED: [libc::c_long; 15] = [
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_mount_setattr,
    // open_tree_attr (Linux 6.15): open_tree with attributes, a clone of
    // a tree (a writable /proc/sys) with no move_mount after it.
    OPEN_TREE_ATTR,
    libc::SYS_setns,
    // Reaching into the spawner (a fork of this process, same uid): its
    // memory, its descriptors (hostile review of F1, finding 1).
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_ptrace,
    libc::SYS_pidfd_getfd,
];

/// Kernel code and kernel-side programs, refused with `EPERM` like
/// [`DENIED`]: the unit's `SystemCallFilter=` refuses them too; this holds
/// for a helper started outside it (second read of F1, finding 7). The
/// helper and the tools it runs (nft, ip, dmsetup, QEMU, Firecracker) use
/// none.
#[cfg(target_arch = "x86_64")]
const KERNEL_CODE: [libc::c_long; 7] = [
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
];

/// The capabilities the helper unit's `CapabilityBoundingSet=` grants
/// (`crates/banger/src/cmd/system/units.rs` checks it names these), by
/// number and name. [`lock_down`] drops every other from every set, so a
/// helper started outside systemd (tests, hosts without it) holds what
/// the unit would give it, less `CAP_SETPCAP`: never `CAP_SYS_PTRACE`,
/// which would let it into the non-dumpable spawner.
pub const HELPER_CAPS: [(u32, &str); 10] = [
    (12, "CAP_NET_ADMIN"),
    (10, "CAP_NET_BIND_SERVICE"),
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (3, "CAP_FOWNER"),
    (7, "CAP_SETUID"),
    (6, "CAP_SETGID"),
    (5, "CAP_KILL"),
    (21, "CAP_SYS_ADMIN"),
    (SETPCAP, "CAP_SETPCAP"),
];
const SETPCAP: u32 = 8;

/// `open_tree_attr`'s number on x86_64 (the libc crate may not name it).
const OPEN_TREE_ATTR: libc::c_long = 467;

/// The newest x86_64 call this filter was written against:
/// `file_setattr` (Linux 6.17). Every later number is refused with
/// `ENOSYS`, so a mount or namespace call added after it fails closed;
/// the helper uses none past it.
const NEWEST_AUDITED: u32 = 469;

/// Every `CLONE_NEW*` flag `clone` and `unshare` take in their first
/// argument. `CLONE_NEWTIME` (0x80) only `unshare` reads: in `clone` those
/// bits are the exit signal.
const CLONE_NEW: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;
const CLONE_NEWTIME: u32 = 0x80;

/// The helper's filter for this architecture.
fn program() -> Option<Vec<Insn>> {
    #[cfg(target_arch = "x86_64")]
    {
        Some(x86_64())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

#[cfg(target_arch = "x86_64")]
fn x86_64() -> Vec<Insn> {
    use Label::*;
    let nr = |n: libc::c_long| n as u32;
    let mut p = prologue();
    p.push(jump(JGE_K, NEWEST_AUDITED + 1, Enosys, Next));
    p.extend(
        DENIED
            .iter()
            .chain(&KERNEL_CODE)
            .map(|&n| jump(JEQ_K, nr(n), Eperm, Next)),
    );
    p.extend([
        jump(JEQ_K, nr(libc::SYS_open_tree), OpenTree, Next),
        jump(JEQ_K, nr(libc::SYS_clone3), Enosys, Next),
        jump(JEQ_K, nr(libc::SYS_clone), NewNs, Next),
        jump(JEQ_K, nr(libc::SYS_unshare), NewUser, Allow),
        // unshare(2): CLONE_NEWTIME too.
        at(NewUser, ld(ARG0_LOW)),
        jump(JSET_K, CLONE_NEWTIME, Eperm, Next),
        jump(JSET_K, CLONE_NEW, Eperm, Allow),
        // open_tree(2): no OPEN_TREE_CLONE in its flags (the third
        // argument); without it the call only opens a mount as a path.
        at(OpenTree, ld(ARG2_LOW)),
        jump(JSET_K, libc::OPEN_TREE_CLONE, Eperm, Allow),
        // clone(2): no CLONE_NEW* flag.
        at(NewNs, ld(ARG0_LOW)),
        jump(JSET_K, CLONE_NEW, Eperm, Allow),
        at(Allow, ret(RET_ALLOW)),
        at(Eperm, ret(errno(libc::EPERM))),
        at(Enosys, ret(errno(libc::ENOSYS))),
        at(Kill, ret(RET_KILL_PROCESS)),
    ]);
    resolve(&p)
}

/// Lock this process out of mounts and namespaces for good: drop every
/// capability outside [`HELPER_CAPS`] and `CAP_SETPCAP`, set
/// `no_new_privs` and install the helper's filter. Call after
/// [`super::spawner::start`] and before the first thread (a filter binds
/// the calling thread and the threads and children it makes later):
/// refused with more than one.
pub fn lock_down() -> std::io::Result<()> {
    super::spawner::one_thread()?;
    let filter = program().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "no helper seccomp filter for this architecture",
        )
    })?;
    let keep: Vec<u32> = HELPER_CAPS
        .iter()
        .map(|&(cap, _)| cap)
        .filter(|&cap| cap != SETPCAP)
        .collect();
    super::caps::drop_capabilities(&keep)?;
    rustix::thread::set_no_new_privs(true)?;
    install(&filter).map_err(std::io::Error::from_raw_os_error)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::super::filter::{AUDIT_ARCH_X86_64, RET_ERRNO, X32_SYSCALL_BIT, verdict};
    use super::*;

    /// The verdict on call `n` whose third argument's low 32 bits are `a2`
    /// and whose first two are a `dfd` and a pointer's low half.
    fn verdict3(p: &[Insn], n: u32, a2: u32) -> u32 {
        verdict(p, AUDIT_ARCH_X86_64, n, [libc::AT_FDCWD as u32, 0x1000, a2])
    }

    #[test]
    fn the_helper_filter_answers_each_call_as_written() {
        let p = program().unwrap();
        let arch = AUDIT_ARCH_X86_64;
        let eperm = RET_ERRNO | libc::EPERM as u32;
        let nr = |n: libc::c_long| n as u32;
        let first = |n: libc::c_long, a0: u32| verdict(&p, arch, nr(n), [a0, !a0]);
        for n in DENIED {
            assert_eq!(first(n, 0), eperm, "{n}");
        }
        // Not left to the unit alone (second read of F1, finding 7).
        for n in [libc::SYS_bpf, libc::SYS_perf_event_open]
            .into_iter()
            .chain(KERNEL_CODE)
        {
            assert_eq!(first(n, 0), eperm, "{n}");
        }
        assert_eq!(first(libc::SYS_clone3, 0), RET_ERRNO | libc::ENOSYS as u32);
        let fork = libc::SIGCHLD as u32;
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u32;
        assert_eq!(first(libc::SYS_clone, fork), RET_ALLOW);
        assert_eq!(first(libc::SYS_clone, thread), RET_ALLOW);
        assert_eq!(first(libc::SYS_unshare, libc::CLONE_FS as u32), RET_ALLOW);
        for flag in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWCGROUP,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
        ] {
            let flag = flag as u32;
            assert_eq!(first(libc::SYS_clone, fork | flag), eperm, "{flag:#x}");
            assert_eq!(first(libc::SYS_unshare, flag), eperm, "{flag:#x}");
        }
        assert_eq!(first(libc::SYS_unshare, CLONE_NEWTIME), eperm);
        // A clone whose exit signal shares CLONE_NEWTIME's bit is a fork.
        assert_eq!(first(libc::SYS_clone, 0x80 | fork), RET_ALLOW);
        for n in [
            libc::SYS_read,
            libc::SYS_execve,
            libc::SYS_socket,
            libc::SYS_setresuid,
            libc::SYS_prctl,
            libc::SYS_ioctl,
        ] {
            assert_eq!(first(n, 0), RET_ALLOW, "{n}");
        }
        // open_tree refused only when it clones (its flags: the third
        // argument); open_tree_attr whatever its flags.
        let third = |n: libc::c_long, a2: u32| verdict3(&p, nr(n), a2);
        let clone = libc::OPEN_TREE_CLONE;
        let recursive = libc::AT_RECURSIVE as u32;
        let cloexec = libc::OPEN_TREE_CLOEXEC;
        for flags in [clone, clone | recursive, clone | cloexec, clone | 1 << 31] {
            assert_eq!(third(libc::SYS_open_tree, flags), eperm, "{flags:#x}");
        }
        for flags in [0, cloexec, recursive, libc::AT_EMPTY_PATH as u32] {
            assert_eq!(third(libc::SYS_open_tree, flags), RET_ALLOW, "{flags:#x}");
            assert_eq!(third(OPEN_TREE_ATTR, flags), eperm, "{flags:#x}");
        }
        // open_tree_attr, and every call past the newest audited.
        assert_eq!(first(OPEN_TREE_ATTR, 0), eperm);
        let enosys = RET_ERRNO | libc::ENOSYS as u32;
        for n in [NEWEST_AUDITED + 1, NEWEST_AUDITED + 2, 600, 1023] {
            assert_eq!(first(n as libc::c_long, 0), enosys, "{n}");
        }
        assert_eq!(first(NEWEST_AUDITED as libc::c_long, 0), RET_ALLOW);
        let x32 = |n: libc::c_long| verdict(&p, arch, nr(n) | X32_SYSCALL_BIT, [0, 0]);
        assert_eq!(x32(libc::SYS_mount), eperm);
        assert_eq!(x32(libc::SYS_read), eperm);
        assert_eq!(verdict(&p, 0x4000_0003, 0, [0, 0]), RET_KILL_PROCESS);
    }
}
