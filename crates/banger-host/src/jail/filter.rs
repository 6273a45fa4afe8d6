//! The seccomp filter a jailed tool runs under: built in the parent (it
//! allocates), installed by the child just before `execve`.
//!
//! A deny list, not an allow list: the tools are ordinary programs (e2fsck,
//! debugfs, a shell in tests) and the jail's namespaces, uid and mounts do
//! the confining. It shuts what those leave: the uid's keyrings (shared by
//! every jail of the uid), user namespaces (the way to capabilities inside
//! one), `bpf`, `perf_event_open`, `userfaultfd` and `io_uring` (kernel
//! attack surface no disk tool uses), `ptrace`, sockets other than
//! `AF_UNIX` (its network namespace holds only a loopback, but netlink and
//! packet sockets reach kernel code), and `fallocate` with
//! `FALLOC_FL_KEEP_SIZE` but not `FALLOC_FL_PUNCH_HOLE` (blocks past the end
//! of the file, which `RLIMIT_FSIZE` does not bound), and the `ioctl`s
//! that reserve space the same way (`FS_IOC_RESVSP`, `FS_IOC_RESVSP64`,
//! `FS_IOC_ZERO_RANGE`). Hand-written rather than from a crate: it is
//! about thirty instructions, and it must also refuse the x32 system-call
//! numbers (bit 30) and answer `clone3` with `ENOSYS` (its flags are behind
//! a pointer no filter can read; `ENOSYS` sends libc back to `clone`, whose
//! flags it can) — two things a generic rule builder would need extra
//! filters for.

#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

/// A classic BPF instruction (`struct sock_filter`).
pub(super) type Insn = libc::sock_filter;

pub(super) const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
pub(super) const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
pub(super) const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
pub(super) const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
pub(super) const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// `struct seccomp_data` offsets: the call's number, its architecture, the
/// low 32 bits of its first, second and third arguments (little-endian).
pub(super) const NR: u32 = 0;
pub(super) const ARCH: u32 = 4;
pub(super) const ARG0_LOW: u32 = 16;
const ARG1_LOW: u32 = 24;
pub(super) const ARG2_LOW: u32 = 32;

/// The `ioctl`s that reserve blocks (`struct space_resv`): the kernel
/// turns each into `fallocate` with `FALLOC_FL_KEEP_SIZE`.
const FS_IOC_RESVSP: u32 = 0x4030_5828;
const FS_IOC_RESVSP64: u32 = 0x4030_582a;
const FS_IOC_ZERO_RANGE: u32 = 0x4030_5839;
/// XFS's older `ioctl`s (`struct xfs_flock64`, 48 bytes): before Linux
/// 5.17 they reserved blocks from the end of the file to `l_start` before
/// the size change that RLIMIT_FSIZE stops; later kernels answer `ENOTTY`.
const XFS_IOC_ALLOCSP: u32 = 0x4030_580a;
const XFS_IOC_ALLOCSP64: u32 = 0x4030_5824;

pub(super) const RET_ALLOW: u32 = 0x7fff_0000;
pub(super) const RET_ERRNO: u32 = 0x0005_0000;
pub(super) const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub(super) const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
pub(super) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Calls refused outright with `EPERM`.
#[cfg(target_arch = "x86_64")]
const DENIED: [libc::c_long; 12] = [
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_ptrace,
    libc::SYS_setns,
    libc::SYS_process_vm_writev,
];

/// Where a jump goes: an instruction emitted later.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Label {
    Next,
    Allow,
    Eperm,
    Enosys,
    Kill,
    Socket,
    NewUser,
    Fallocate,
    Ioctl,
    /// `clone`/`unshare` with a `CLONE_NEW*` flag (the helper's filter).
    NewNs,
    /// `open_tree` with `OPEN_TREE_CLONE` (the helper's filter).
    OpenTree,
}

/// The filter, for this architecture; `None` where none is written (the
/// jail then refuses to start).
pub(super) fn program() -> Option<Vec<Insn>> {
    #[cfg(target_arch = "x86_64")]
    {
        Some(x86_64())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// One instruction before its jumps are resolved: opcode, constant,
/// where it jumps when true and when false, and the label it carries.
pub(super) type Row = (u16, u32, Label, Label, Option<Label>);

pub(super) fn ld(offset: u32) -> Row {
    (LD_W_ABS, offset, Label::Next, Label::Next, None)
}

pub(super) fn jump(code: u16, k: u32, yes: Label, no: Label) -> Row {
    (code, k, yes, no, None)
}

pub(super) fn ret(k: u32) -> Row {
    (RET_K, k, Label::Next, Label::Next, None)
}

pub(super) fn at(label: Label, row: Row) -> Row {
    (row.0, row.1, row.2, row.3, Some(label))
}

pub(super) fn errno(e: i32) -> u32 {
    RET_ERRNO | (e as u32 & 0xffff)
}

/// The start every filter here shares: another architecture's calls
/// kill the process, x32 calls get `EPERM`, and the system call number is
/// left loaded for what follows.
#[cfg(target_arch = "x86_64")]
pub(super) fn prologue() -> Vec<Row> {
    use Label::*;
    vec![
        ld(ARCH),
        jump(JEQ_K, AUDIT_ARCH_X86_64, Next, Kill),
        ld(NR),
        jump(JGE_K, X32_SYSCALL_BIT, Eperm, Next),
    ]
}

#[cfg(target_arch = "x86_64")]
fn x86_64() -> Vec<Insn> {
    use Label::*;
    let nr = |n: libc::c_long| n as u32;
    let mut p = prologue();
    p.extend(DENIED.iter().map(|&n| jump(JEQ_K, nr(n), Eperm, Next)));
    p.extend([
        jump(JEQ_K, nr(libc::SYS_clone3), Enosys, Next),
        jump(JEQ_K, nr(libc::SYS_socket), Socket, Next),
        jump(JEQ_K, nr(libc::SYS_socketpair), Socket, Next),
        jump(JEQ_K, nr(libc::SYS_clone), NewUser, Next),
        jump(JEQ_K, nr(libc::SYS_unshare), NewUser, Next),
        jump(JEQ_K, nr(libc::SYS_fallocate), Fallocate, Next),
        jump(JEQ_K, nr(libc::SYS_ioctl), Ioctl, Next),
        ret(RET_ALLOW),
        // socket(2), socketpair(2): only AF_UNIX.
        at(Socket, ld(ARG0_LOW)),
        jump(JEQ_K, libc::AF_UNIX as u32, Allow, Eperm),
        // clone(2), unshare(2): no CLONE_NEWUSER.
        at(NewUser, ld(ARG0_LOW)),
        jump(JSET_K, libc::CLONE_NEWUSER as u32, Eperm, Allow),
        // fallocate(2): KEEP_SIZE allocates past the end of the file,
        // which RLIMIT_FSIZE does not bound; only with PUNCH_HOLE (which
        // frees) may it be set.
        at(Fallocate, ld(ARG1_LOW)),
        jump(JSET_K, libc::FALLOC_FL_KEEP_SIZE as u32, Next, Allow),
        jump(JSET_K, libc::FALLOC_FL_PUNCH_HOLE as u32, Allow, Eperm),
        // ioctl(2): the reservations that are fallocate with KEEP_SIZE by
        // another name, and XFS's older ALLOCSP (the command is 32 bits).
        at(Ioctl, ld(ARG1_LOW)),
        jump(JEQ_K, FS_IOC_RESVSP, Eperm, Next),
        jump(JEQ_K, FS_IOC_RESVSP64, Eperm, Next),
        jump(JEQ_K, FS_IOC_ZERO_RANGE, Eperm, Next),
        jump(JEQ_K, XFS_IOC_ALLOCSP, Eperm, Next),
        jump(JEQ_K, XFS_IOC_ALLOCSP64, Eperm, Allow),
        at(Allow, ret(RET_ALLOW)),
        at(Eperm, ret(errno(libc::EPERM))),
        at(Enosys, ret(errno(libc::ENOSYS))),
        at(Kill, ret(RET_KILL_PROCESS)),
    ]);
    resolve(&p)
}

/// Jump offsets from labels: a jump's offset counts the instructions
/// between it and its target. Every target follows its jump.
pub(super) fn resolve(p: &[Row]) -> Vec<Insn> {
    let at = |l: Label, from: usize| -> u8 {
        if l == Label::Next {
            return 0;
        }
        let target = p
            .iter()
            .position(|i| i.4 == Some(l))
            .expect("every label is marked");
        assert!(target > from, "jumps go forward");
        u8::try_from(target - from - 1).expect("a jump within 255 instructions")
    };
    p.iter()
        .enumerate()
        .map(|(i, &(code, k, yes, no, _))| Insn {
            code,
            jt: at(yes, i),
            jf: at(no, i),
            k,
        })
        .collect()
}

/// Install `filter` on the calling thread (`no_new_privs` or
/// `CAP_SYS_ADMIN` first). Raw: the jailed child calls it after its clone.
pub(super) fn install(filter: &[Insn]) -> Result<(), i32> {
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len()).map_err(|_| libc::E2BIG)?,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // prctl(PR_SET_SECCOMP), not seccomp(2): systemd's @system-service
    // group has prctl but not seccomp; banger's units add `seccomp` to
    // their SystemCallFilter=, a unit without it still works.
    // SAFETY: PR_SET_SECCOMP reads `prog` and the instructions it points
    // to, both alive across the call (the kernel copies them); the unused
    // arguments are zero.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if r < 0 {
        // SAFETY: reads this thread's errno slot, always valid.
        Err(unsafe { *libc::__errno_location() })
    } else {
        Ok(())
    }
}

/// Run a filter on one call the way the kernel would: `args` are the low
/// halves of its first arguments (a load past them panics).
#[cfg(all(test, target_arch = "x86_64"))]
pub(super) fn verdict<const N: usize>(p: &[Insn], arch: u32, nr: u32, args: [u32; N]) -> u32 {
    let data = |off: u32| match off {
        NR => nr,
        ARCH => arch,
        ARG0_LOW => args[0],
        ARG1_LOW => args[1],
        ARG2_LOW => args[2],
        _ => panic!("load at {off}"),
    };
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = p[pc];
        pc += 1;
        let taken = match i.code {
            LD_W_ABS => {
                acc = data(i.k);
                continue;
            }
            RET_K => return i.k,
            JEQ_K => acc == i.k,
            JGE_K => acc >= i.k,
            JSET_K => acc & i.k != 0,
            c => panic!("opcode {c:#x}"),
        };
        pc += usize::from(if taken { i.jt } else { i.jf });
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn the_filter_answers_each_call_as_written() {
        let p = program().unwrap();
        let arch = AUDIT_ARCH_X86_64;
        let eperm = RET_ERRNO | libc::EPERM as u32;
        let nr = |n: libc::c_long| n as u32;
        // A call with its first argument `a0` and a second that is not it.
        let first = |n: libc::c_long, a0: u32| verdict(&p, arch, nr(n), [a0, !a0]);
        // A call on descriptor 3 with its second argument `a1`.
        let second = |n: libc::c_long, a1: u32| verdict(&p, arch, nr(n), [3, a1]);
        for n in DENIED {
            assert_eq!(first(n, 0), eperm, "{n}");
        }
        let x32 = |n: libc::c_long| verdict(&p, arch, nr(n) | X32_SYSCALL_BIT, [0, 0]);
        assert_eq!(x32(libc::SYS_keyctl), eperm);
        assert_eq!(x32(libc::SYS_read), eperm);
        assert_eq!(first(libc::SYS_clone3, 0), RET_ERRNO | libc::ENOSYS as u32);
        let unix = libc::AF_UNIX as u32;
        let inet = libc::AF_INET as u32;
        assert_eq!(first(libc::SYS_socket, unix), RET_ALLOW);
        assert_eq!(first(libc::SYS_socket, inet), eperm);
        assert_eq!(first(libc::SYS_socketpair, inet), eperm);
        let user = libc::CLONE_NEWUSER as u32;
        let fork = libc::SIGCHLD as u32;
        // `first` gives a clone of plain `fork` a second argument with
        // CLONE_NEWUSER set: only the first is read.
        assert_eq!(first(libc::SYS_clone, fork), RET_ALLOW);
        assert_eq!(first(libc::SYS_clone, fork | user), eperm);
        assert_eq!(first(libc::SYS_unshare, user), eperm);
        assert_eq!(first(libc::SYS_unshare, 0), RET_ALLOW);
        assert_eq!(first(libc::SYS_read, 0), RET_ALLOW);
        assert_eq!(first(libc::SYS_execve, 0), RET_ALLOW);
        // fallocate's mode is its second argument.
        let keep = libc::FALLOC_FL_KEEP_SIZE as u32;
        let punch = libc::FALLOC_FL_PUNCH_HOLE as u32;
        let zero = libc::FALLOC_FL_ZERO_RANGE as u32;
        let fallocate = libc::SYS_fallocate;
        assert_eq!(second(fallocate, 0), RET_ALLOW);
        assert_eq!(second(fallocate, zero), RET_ALLOW);
        assert_eq!(second(fallocate, punch | keep), RET_ALLOW);
        assert_eq!(second(fallocate, keep), eperm);
        assert_eq!(second(fallocate, zero | keep), eperm);
        assert_eq!(verdict(&p, arch, nr(fallocate), [keep, 0]), RET_ALLOW);
        // The space-reservation ioctls allocate as fallocate with
        // KEEP_SIZE does; unreserving and other ioctls pass.
        let ioctl = libc::SYS_ioctl;
        for cmd in [
            FS_IOC_RESVSP,
            FS_IOC_RESVSP64,
            FS_IOC_ZERO_RANGE,
            XFS_IOC_ALLOCSP,
            XFS_IOC_ALLOCSP64,
        ] {
            assert_eq!(second(ioctl, cmd), eperm, "{cmd:#x}");
            assert_eq!(verdict(&p, arch, nr(ioctl), [cmd, 0]), RET_ALLOW);
        }
        assert_eq!(second(ioctl, 0x4030_582b), RET_ALLOW); // FS_IOC_UNRESVSP
        assert_eq!(second(ioctl, 0x4030_580b), RET_ALLOW); // XFS_IOC_FREESP
        assert_eq!(second(ioctl, libc::TCGETS as u32), RET_ALLOW);
        // Another architecture's numbers: the process is killed.
        assert_eq!(verdict(&p, 0x4000_0003, 0, [0, 0]), RET_KILL_PROCESS);
    }
}
