//! The spawner's and `Jail::cgroup`'s refusals of a cgroup descriptor.

use super::*;

/// A jail's cgroup descriptor is written `0` by its child: the spawner
/// takes only a cgroup2 `cgroup.procs` opened for writing. Any other
/// cgroup2 file (`cgroup.freeze`, `pids.max`, ... written `0` would
/// change a cgroup, not join one), a file elsewhere, or `cgroup.procs`
/// opened read-only is refused, by the spawner and by `Jail::cgroup`.
#[test]
fn a_cgroup_descriptor_other_than_a_writable_cgroup_procs_is_refused() {
    let dir = crate::probe::own_cgroup2_dir().unwrap();
    let open = |name: &str, write: bool| {
        std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .open(dir.join(name))
            .unwrap()
    };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("cgroup.procs"), "").unwrap();
    let plain = std::fs::OpenOptions::new()
        .write(true)
        .open(tmp.path().join("cgroup.procs"))
        .unwrap();
    let own = own_dir();
    let other = crate::jail::testing::TestCgroup::new("wire");
    let tmp_dir = std::fs::File::open(tmp.path()).unwrap();
    let cases = [
        ("cgroup.procs read-only", &own, open("cgroup.procs", false)),
        ("cgroup.max.depth", &own, open("cgroup.max.depth", true)),
        (
            "cgroup.subtree_control",
            &own,
            open("cgroup.subtree_control", true),
        ),
        ("cgroup.procs on a tmpfs", &tmp_dir, plain),
        (
            "/dev/null",
            &own,
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")
                .unwrap(),
        ),
        (
            "another cgroup's cgroup.procs",
            &own,
            other.procs_for_writing(),
        ),
    ];
    for (what, dir, fd) in &cases {
        let e = Jail::new(4100, 4100)
            .cgroup(dir.as_fd(), fd.as_fd())
            .unwrap_err();
        assert!(e.to_string().contains("cgroup descriptor"), "{what}: {e}");
        let mut jail = Jail::new(4100, 4100);
        jail.cgroup = Some(Arc::new(crate::jail::CgroupFds {
            dir: dir.as_fd().try_clone_to_owned().unwrap(),
            procs: fd.as_fd().try_clone_to_owned().unwrap(),
        }));
        let e = round_trip(&request(jail), 4096..4112).unwrap_err();
        assert!(e.to_string().contains("cgroup descriptor"), "{what}: {e}");
    }
    // The directory's own cgroup.procs, opened for writing, is taken.
    let jail = Jail::new(4100, 4100)
        .cgroup(own.as_fd(), own_procs().as_fd())
        .unwrap();
    round_trip(&request(jail), 4096..4112).unwrap();
}
