//! Crash points: places where a test build of bangerd kills itself, for the
//! kill tests (issue #15's kill matrix over snapshots, restores and the warm
//! pool; the failure-injection points issue #16 item 1 asks for).
//!
//! `crashpoint::hit("name")` marks a point. In a build with debug
//! assertions (the test builds), a daemon started with
//! `BANGER_CRASH_AT=name` in its environment writes `bangerd: crash point
//! name reached` to stderr there and SIGKILLs itself — an abrupt death
//! mid-operation, as a kill from outside would be, at a point the test
//! chose and can see was reached. Release builds (`make bench`, installs)
//! compile every point to nothing.
//!
//! The points, in the order an operation meets them:
//!
//! * `create.reserved`: a create's row, address and DNS name made, its
//!   operation not yet begun.
//! * `create.guest_files`: a create's guest files written into its disk.
//! * `boot.tap`: a start's tap attached (and its firewall rules), no VMM.
//! * `boot.ready`: the guest ready, the VM not yet `running`.
//! * `stop.stopping`: a stop recorded `stopping`, the VMM not yet asked.
//! * `stop.stopped`: the VMM stopped, its tap and the row not yet.
//! * `rm.disks`: a removal's disks deleted, its tap, DNS name,
//!   known_hosts line, directory and row not yet.
//! * `rm.removed`: those gone too but the directory and the row.
//! * `snapshot.dir_made`, `snapshot.saved`: a snapshot's directory made;
//!   the executor's save done, no row yet (`vm snapshot`, `vm stop
//!   --save`, a pool snapshot).
//! * `stop_save.killed`: `vm stop --save`'s VMM killed, its state not yet
//!   recorded.
//! * `create.disks`: a create's disks made (from a snapshot, for `--from`).
//! * `boot.launched`: a VMM launched (restored, for `--from`), the VM not
//!   yet `running`.
//! * `pool.restored`, `pool.paused`: a pooled clone restored; paused, not
//!   yet ready.
//! * `pool.taken`, `pool.resumed`: a clone taken by a create (renamed);
//!   resumed, not yet personalised.
//! * `workspace.copied`: a prepare's rsync done, its record not yet
//!   written.
//! * `pull.pulled`: an OCI pull's root filesystem built in its staging
//!   directory, not yet published.
//! * `publish.renamed`: a new image's staging directory renamed to
//!   `images/<id>/`, its row not yet inserted (every image pull, bundle
//!   import, build and promote publishes this way).

/// The environment variable naming the point to die at.
pub const ENV: &str = "BANGER_CRASH_AT";

/// Die here if this is the point the environment names (test builds).
#[cfg(debug_assertions)]
pub fn hit(point: &'static str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if AT.get_or_init(|| std::env::var(ENV).ok()).as_deref() == Some(point) {
        eprintln!("bangerd: crash point {point} reached");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        std::process::abort();
    }
}

/// Release builds have no crash points.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn hit(_point: &'static str) {}
