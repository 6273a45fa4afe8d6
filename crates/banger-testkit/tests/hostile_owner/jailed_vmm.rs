//! What the jailed-VMM tests of both VMMs (`vmm_jail`, `fc_jail`) share:
//! the host's view of a jailed VMM, killing stand-ins by pidfd whatever
//! the test does, the probes' target lists and verdict, an escape's
//! commands as a slot uid, and the helper-restart test's body.

use std::time::{Duration, Instant};

use banger_proto::privops::{PrivOp, ProbeJailScope, ProbeOp, StopVm, VmOp, VmmStatus};
use banger_proto::vmops::VmmKind;

use crate::lab::*;

/// The value of `key` in `/proc/<pid>/status`.
pub(crate) fn status_field(pid: u32, key: &str) -> String {
    banger_host::jail::testing::status_field_of(&pid.to_string(), key)
}

/// VMMs killed by pidfd when dropped (a test that panics leaves no jailed
/// stand-in behind: the helper does not stop its VMMs when it goes).
pub(crate) struct KilledOnDrop(Vec<std::os::fd::OwnedFd>);

impl KilledOnDrop {
    /// Hold `pids` by pidfd now, while they name the launched VMMs.
    pub(crate) fn new(pids: &[u32]) -> KilledOnDrop {
        let fds = pids
            .iter()
            .filter_map(|&p| rustix::process::Pid::from_raw(p as i32))
            .filter_map(|p| {
                rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
            })
            .collect();
        KilledOnDrop(fds)
    }
}

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        for fd in &self.0 {
            let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::KILL);
        }
    }
}

/// The host's view of the jailed VMM `p`: one uid and gid of its own
/// (neither root's nor the `owner`'s), no supplementary groups, no
/// capabilities, no new privileges, a seccomp filter, pid 1 of a pid
/// namespace of its own. Returns its uid.
pub(crate) fn assert_jailed(p: u32, owner: (u32, u32)) -> u32 {
    let uid = status_field(p, "Uid");
    let gid = status_field(p, "Gid");
    let ids: Vec<u32> = uid
        .split_whitespace()
        .chain(gid.split_whitespace())
        .map(|w| w.parse().unwrap())
        .collect();
    assert!(
        ids.iter()
            .all(|&i| i == ids[0] && i != 0 && i != owner.0 && i != owner.1),
        "VMM {p}: Uid {uid}, Gid {gid} (owner {owner:?})"
    );
    assert_eq!(
        status_field(p, "Groups"),
        "",
        "VMM {p}: supplementary groups"
    );
    assert_eq!(status_field(p, "NoNewPrivs"), "1", "VMM {p}");
    assert_eq!(status_field(p, "Seccomp"), "2", "VMM {p}");
    assert_eq!(status_field(p, "CapEff"), "0000000000000000", "VMM {p}");
    let nspid = status_field(p, "NSpid");
    assert_eq!(
        nspid.split_whitespace().collect::<Vec<_>>(),
        [p.to_string().as_str(), "1"],
        "VMM {p}: not pid 1 of a namespace of its own"
    );
    ids[0]
}

/// `sh -c script escape dir` run as `uid` (uid = gid; std drops the
/// supplementary groups: an escaped VMM's slot uid), its output.
pub(crate) fn as_uid(uid: u32, script: &str, dir: &std::path::Path) -> std::process::Output {
    use std::os::unix::process::CommandExt as _;
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("escape")
        .arg(dir)
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap()
}

/// The pid of a launched VMM (`LaunchVm`'s answer `v`) and its real uid.
pub(crate) fn pid_and_uid(v: &serde_json::Value) -> (u32, u32) {
    let pid = v["result"]["pid"].as_u64().unwrap() as u32;
    let uid = status_field(pid, "Uid")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (pid, uid)
}

/// `targets` (kind, what) as the elements of a Perl list of pairs, one a
/// line; `what` must need no quoting.
pub(crate) fn perl_targets(targets: &[(&str, String)]) -> String {
    let mut list = String::new();
    for (kind, what) in targets {
        assert!(
            what.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-:".contains(&b)),
            "{what:?} needs quoting"
        );
        list.push_str(&format!("[\"{kind}\", \"{what}\"],\n"));
    }
    list
}

/// Nothing in the probes' `results` ends ` reached`.
pub(crate) fn assert_reached_nothing(results: &str) {
    let reached: Vec<&str> = results
        .lines()
        .filter(|l| l.ends_with(" reached"))
        .collect();
    assert_eq!(
        reached,
        Vec::<&str>::new(),
        "the jailed VMM reached:\n{results}"
    );
}

/// Launch VM `id`'s `kind` (its stand-in serving the launch) in `lab`
/// (started); check it runs in its VM's cgroup; restart the helper: the
/// journaled VMM is spared and re-adopted, a stray of its uid and a
/// planted VM cgroup are not; then stop it, gracefully through its own
/// socket: its cgroup goes.
pub(crate) fn survives_a_helper_restart(mut lab: Lab, id: &str, kind: VmmKind) {
    let v = lab.launch(id, kind).expect("LaunchVm");
    let (pid, uid) = pid_and_uid(&v);
    // Killed by its pidfd whatever happens below.
    let _vmm = KilledOnDrop::new(&[pid]);
    // Design part 3: the VMM runs in its VM's cgroup, beneath the one the
    // helper holds (not under systemd here: `banger-<hash of its journal's
    // path>` beneath the helper's own cgroup, which is this test's).
    let helper = lab.helper.as_ref().unwrap();
    let meta = banger_proto::install::InstallMeta::load(&helper.install_file).unwrap();
    let held =
        banger_host::probe::own_cgroup2_dir()
            .unwrap()
            .join(banger_executor::vm_cgroup_dev_name(
                &meta.paths.root_state_dir.join("journal.json"),
            ));
    let mount = banger_host::probe::probe_cgroup_v2().cgroup2_mount.unwrap();
    let vm_cgroup = format!("/{}/vm-{id}", held.strip_prefix(&mount).unwrap().display());
    let cgroup_of = |pid: u32| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        banger_host::probe::cgroup2_path_in(&text).map(str::to_string)
    };
    assert_eq!(cgroup_of(pid).as_deref(), Some(vm_cgroup.as_str()));
    // A stray process of the VM's jail uid, outside its jail, in a VM
    // cgroup no journaled VMM holds.
    use std::os::unix::process::CommandExt as _;
    let mut stray = std::process::Command::new("sleep")
        .arg("300")
        .uid(uid)
        .gid(uid)
        .spawn()
        .unwrap();
    let stray_pid = stray.id();
    let planted = held.join("vm-5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d");
    std::fs::create_dir(&planted).unwrap();
    std::fs::write(planted.join("cgroup.procs"), stray_pid.to_string()).unwrap();
    let helper = lab.helper.as_mut().unwrap();
    helper.restart_in(&lab.ns);
    // The helper binds its socket before its start-up sweep and accepts
    // only after it: an answer, not a connect, says the sweep is over
    // (the connect alone raced it under load: "the planted cgroup
    // survived the restart", seen in a cold CI run).
    lab.call(PrivOp::Probe(ProbeOp::ProbeJailScope(ProbeJailScope)))
        .expect("the restarted helper answers");
    // The sweep removed the planted cgroup; the VMM kept its own.
    assert!(!planted.exists(), "the planted cgroup survived the restart");
    assert_eq!(cgroup_of(pid).as_deref(), Some(vm_cgroup.as_str()));
    // The sweep ran before that answer: the stray is dead (reaped here,
    // its parent), the VMM is not.
    let stray_status = stray.try_wait().unwrap();
    let _ = stray.kill();
    let _ = stray.wait();
    assert!(
        stray_status.is_some(),
        "the stray process {stray_pid} of jail uid {uid} survived the restart"
    );
    // Alive, not a zombie (this host's pid 1 reaps nothing, so a killed
    // VMM would still have its /proc entry and start time).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3));
    assert_eq!(
        state,
        Some("S"),
        "the journaled VMM {pid} was killed by the restart: {stat}"
    );
    let st = lab
        .call(PrivOp::Vm(VmOp::VmmStatus(VmmStatus { vm_id: id.into() })))
        .unwrap();
    assert_eq!(st["result"]["running"], true, "{st}");
    assert_eq!(st["result"]["adopted"], true, "{st}");
    assert_eq!(st["result"]["pid"], pid, "{st}");
    // The adopted VMM stops gracefully: asked through its own socket
    // (QMP `system_powerdown`, Firecracker's `SendCtrlAltDel`), which its
    // stand-in answers by exiting.
    let stopped = lab
        .call(PrivOp::Vm(VmOp::StopVm(StopVm {
            vm_id: id.into(),
            timeout_secs: 10,
        })))
        .unwrap();
    assert_eq!(
        (
            &stopped["result"]["was_running"],
            &stopped["result"]["graceful"]
        ),
        (&serde_json::json!(true), &serde_json::json!(true)),
        "{stopped}"
    );
    // Stopped and seen gone: its cgroup goes too.
    assert!(
        !held.join(format!("vm-{id}")).exists(),
        "the VM's cgroup outlived its VMM"
    );
}

/// A launch of VM `id`'s `kind` whose VMM never serves its socket and
/// outlives its kill (`StillRunning`): the launch fails saying so, and the
/// VMM stays journaled (status reports it running) until its pidfd says
/// it exited. The stand-in is held as soon as it runs (a script whose
/// shell waits in the kernel for its next line: it outlives `SIGKILL`
/// while held); released, it dies of the pending kill and status forgets
/// it.
pub(crate) fn outliving_its_kill_stays_journaled(id: &str, kind: VmmKind) {
    let lab = Lab::new();
    lab.vm(id);
    // Never serves its socket: the launch gives up, then kills it.
    let held = banger_vmm::testing::Held::new(b"#!/bin/sh\n");
    let name = match kind {
        VmmKind::Qemu => "qemu",
        VmmKind::Firecracker => "firecracker",
    };
    lab.stand_in_link(name, &held.path());
    let lab = lab.start();
    let (launched, pid) = std::thread::scope(|s| {
        let launch = s.spawn(|| lab.launch(id, kind));
        let pid = held.reader(Duration::from_secs(8));
        held.assert_outlives_kill(pid);
        (launch.join().unwrap(), pid)
    });
    let st = lab
        .call(PrivOp::Vm(VmOp::VmmStatus(VmmStatus { vm_id: id.into() })))
        .unwrap();
    drop(held);
    let err = launched.expect_err("a launch without its socket succeeded");
    assert!(err.contains("may still be running"), "{err}");
    assert_eq!(
        (&st["result"]["running"], &st["result"]["pid"]),
        (&serde_json::json!(true), &serde_json::json!(pid)),
        "a VMM that may still run is not reported: {st}"
    );
    // Released, it dies of the launch's kill: its entry goes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = lab
            .call(PrivOp::Vm(VmOp::VmmStatus(VmmStatus { vm_id: id.into() })))
            .unwrap();
        if st["result"]["running"] == false {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running once released: {st}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
