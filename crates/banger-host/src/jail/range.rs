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
        if known_uid(id) {
            return Err(RangeInUse::Account { kind: "user", id });
        }
        if known_gid(id) {
            return Err(RangeInUse::Account { kind: "group", id });
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
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
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

fn known_uid(id: u32) -> bool {
    let mut pw = std::mem::MaybeUninit::<libc::passwd>::uninit();
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut out = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into `pw` and `buf` (valid for the lengths
    // given) and sets `out` to `pw` or null; nothing is read from `pw`.
    unsafe { libc::getpwuid_r(id, pw.as_mut_ptr(), buf.as_mut_ptr(), buf.len(), &mut out) };
    !out.is_null()
}

fn known_gid(id: u32) -> bool {
    let mut gr = std::mem::MaybeUninit::<libc::group>::uninit();
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut out = std::ptr::null_mut();
    // SAFETY: as in `known_uid`, for getgrgid_r.
    unsafe { libc::getgrgid_r(id, gr.as_mut_ptr(), buf.as_mut_ptr(), buf.len(), &mut out) };
    !out.is_null()
}
