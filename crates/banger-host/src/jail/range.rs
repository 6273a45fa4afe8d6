//! Whether a uid range owns nothing on the host.

/// Why a uid range cannot be a jail range: something on the host already
/// uses one of its ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeInUse {
    #[error("{kind} id {id} is known to the host's account database (NSS)")]
    Account { kind: &'static str, id: u32 },
    #[error("{file} line {line:?} delegates ids in the range")]
    Delegated { file: &'static str, line: String },
    #[error("process {pid} runs with id {id}")]
    Process { pid: String, id: u32 },
    #[error("looking {kind} id {id} up in the host's account database (NSS) failed: {}", std::io::Error::from_raw_os_error(*errno))]
    Lookup {
        kind: &'static str,
        id: u32,
        errno: i32,
    },
}

/// Check that no id in `base..base+count` (as uid or gid) is an account or
/// group, is delegated in `/etc/subuid`/`/etc/subgid`, or — with
/// `processes` — is the real, effective, saved or file-system id of a
/// running process. Files owned by these ids elsewhere are not searched
/// (docs/jail.md).
///
/// The process check is for `banger system install`, where another
/// program's use of the range shows. A daemon starting skips it: only
/// root can start a process with these ids, and the jailed tools of
/// another banger daemon on the same host (dev daemons, tests) are such
/// processes.
pub fn check_unused(base: u32, count: u32, processes: bool) -> Result<(), RangeInUse> {
    let end = base.saturating_add(count);
    let inside = |id: u32| (base..end).contains(&id);
    for id in base..end {
        for (kind, known) in [("user", uid_known(id)), ("group", gid_known(id))] {
            match known {
                Ok(false) => {}
                Ok(true) => return Err(RangeInUse::Account { kind, id }),
                Err(errno) => return Err(RangeInUse::Lookup { kind, id, errno }),
            }
        }
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines() {
            let mut f = line.trim().split(':').skip(1);
            let (Some(Ok(start)), Some(Ok(n))) = (
                f.next().map(str::parse::<u64>),
                f.next().map(str::parse::<u64>),
            ) else {
                continue;
            };
            if start < u64::from(end) && u64::from(base) < start + n {
                return Err(RangeInUse::Delegated {
                    file,
                    line: line.to_string(),
                });
            }
        }
    }
    if !processes {
        return Ok(());
    }
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // Bytes: a process's name need not be UTF-8 (it would hide it).
        let Ok(status) = std::fs::read(e.path().join("status")) else {
            continue;
        };
        let status = String::from_utf8_lossy(&status);
        for l in status.lines() {
            let Some(ids) = l.strip_prefix("Uid:").or_else(|| l.strip_prefix("Gid:")) else {
                continue;
            };
            if let Some(id) = ids
                .split_whitespace()
                .filter_map(|w| w.parse::<u32>().ok())
                .find(|id| inside(*id))
            {
                return Err(RangeInUse::Process { pid, id });
            }
        }
    }
    Ok(())
}

/// Whether NSS knows `id` as a user; `Err(errno)` when the lookup failed.
fn uid_known(id: u32) -> Result<bool, i32> {
    nss_lookup(|buf, pw: &mut libc::passwd, out| {
        // SAFETY: getpwuid_r writes into `pw` and `buf` (valid for the
        // lengths given) and sets `out` to `pw` or null.
        unsafe { libc::getpwuid_r(id, pw, buf.as_mut_ptr(), buf.len(), out) }
    })
}

/// Whether NSS knows `id` as a group; `Err(errno)` when the lookup failed.
fn gid_known(id: u32) -> Result<bool, i32> {
    nss_lookup(|buf, gr: &mut libc::group, out| {
        // SAFETY: as in `uid_known`, for getgrgid_r.
        unsafe { libc::getgrgid_r(id, gr, buf.as_mut_ptr(), buf.len(), out) }
    })
}

/// The largest buffer a lookup is retried with after `ERANGE`.
const NSS_BUF_MAX: usize = 1 << 20;

/// One `get*id_r` lookup (`call(buf, entry, result)`, returning its error
/// number): whether it found an entry. Fails closed: a buffer too small
/// is retried with a bigger one (up to [`NSS_BUF_MAX`]), and any other
/// error — or no answer within that — is an error, never "unused".
fn nss_lookup<T>(
    mut call: impl FnMut(&mut [libc::c_char], &mut T, &mut *mut T) -> libc::c_int,
) -> Result<bool, i32> {
    let mut len = 4096;
    loop {
        let mut entry = std::mem::MaybeUninit::<T>::zeroed();
        let mut buf = vec![0 as libc::c_char; len];
        let mut out = std::ptr::null_mut();
        // SAFETY: `entry` is zeroed memory (a C struct of integers and
        // pointers, for which all zeroes is valid) the call only writes into.
        let err = call(&mut buf, unsafe { entry.assume_init_mut() }, &mut out);
        match err {
            0 => return Ok(!out.is_null()),
            libc::ERANGE if len < NSS_BUF_MAX => len *= 4,
            e => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The buffer sizes a scripted lookup was given.
    type Sizes = std::rc::Rc<std::cell::RefCell<Vec<usize>>>;

    /// A lookup that answers `answers` in turn (error number, found),
    /// then `ERANGE` for ever, recording the buffer sizes it was given.
    fn scripted(
        answers: &[(libc::c_int, bool)],
    ) -> (
        impl FnMut(&mut [libc::c_char], &mut u8, &mut *mut u8) -> libc::c_int,
        Sizes,
    ) {
        let sizes = Sizes::default();
        let seen = sizes.clone();
        let mut answers = answers.iter().copied();
        let call = move |buf: &mut [libc::c_char], entry: &mut u8, out: &mut *mut u8| {
            seen.borrow_mut().push(buf.len());
            let (err, found) = answers.next().unwrap_or((libc::ERANGE, false));
            *out = if found { entry } else { std::ptr::null_mut() };
            err
        };
        (call, sizes)
    }

    #[test]
    fn an_nss_lookup_fails_closed() {
        // Found, not found: the two answers that decide.
        assert_eq!(nss_lookup(scripted(&[(0, true)]).0), Ok(true));
        assert_eq!(nss_lookup(scripted(&[(0, false)]).0), Ok(false));
        // A buffer too small: retried with a bigger one.
        let (call, sizes) = scripted(&[(libc::ERANGE, false), (0, true)]);
        assert_eq!(nss_lookup(call), Ok(true));
        let sizes = sizes.borrow();
        assert!(sizes.len() == 2 && sizes[1] > sizes[0], "{sizes:?}");
        // Always too small, or any other error: not "unused".
        assert!(nss_lookup(scripted(&[]).0).is_err());
        assert!(nss_lookup(scripted(&[(libc::EIO, false)]).0).is_err());
        assert!(nss_lookup(scripted(&[(libc::ENOENT, false)]).0).is_err());
        assert!(nss_lookup(scripted(&[(libc::EMFILE, false)]).0).is_err());
    }

    #[test]
    fn the_host_accounts_are_found_through_nss() {
        assert_eq!(uid_known(0), Ok(true));
        assert_eq!(gid_known(0), Ok(true));
    }
}
