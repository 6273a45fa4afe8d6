//! Jail uid ranges for the daemons tests start.

/// A jail uid range of this daemon's own (16 ids, distinct per test
/// process and per call): every daemon kills whatever runs with its range's
/// uids at start (docs/jail.md), so two daemons of concurrent tests must
/// not share one.
pub fn test_jail() -> banger_proto::install::InstallJail {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 256;
    banger_proto::install::InstallJail {
        uid_base: 1_900_000_000 + (std::process::id() % 10_000) * 4096 + n * 16,
        count: 16,
    }
}

/// [`test_jail`] as the `BANGER_DEV_JAIL_UIDS` variable `bangerd --dev`
/// reads.
pub fn dev_jail_env() -> (&'static str, String) {
    let j = test_jail();
    (
        "BANGER_DEV_JAIL_UIDS",
        format!("{}:{}", j.uid_base, j.count),
    )
}
