//! Issue #13 finding 11: the VMM parses everything a guest does, and it
//! ran as the owner (system mode) or root (dev mode), so a guest escaping
//! into QEMU had the owner's or root's rights. QEMU now runs jailed: as a
//! per-VM uid of the install's jail range, pid 1 of its own namespaces,
//! seeing `/usr`, a minimal `/dev` and copies of its kernel and initrd,
//! every other file by descriptor (QMP's listening socket included: it
//! can write no file of the host).
//!
//! A probe stand-in is configured as the QEMU binary (a Perl program: it
//! serves enough QMP for the launch to succeed) and tries what an escaped
//! guest would: the helper's and the daemon's sockets, the owner's state,
//! the other VM's disk and QMP socket, the host's `/proc`, TCP to a
//! listener in the helper's network namespace, signalling the other VMM.
//! It prints what it reached to its stdout (the VM's `vmm.log`).

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use banger_proto::net::TapSpec;
use banger_proto::privops::{DeleteVmDisks, KillVm, NetOp, PrivOp, VmOp, VmmStatus};
use banger_proto::vmops::{LaunchVmSpec, VmmKind};

use crate::jailed_vmm::{
    KilledOnDrop, as_uid, assert_jailed, assert_reached_nothing,
    outliving_its_kill_stays_journaled, perl_targets, pid_and_uid, survives_a_helper_restart,
};
use crate::lab::*;

/// Whether `pid` runs: its `/proc` entry is there and not a zombie's
/// (this host's pid 1 reaps nothing, so a killed process keeps its entry).
fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3));
    state.is_some_and(|s| s != "Z")
}

/// The probe: tries each of `targets` (kind, what), prints `NAME
/// reached` or `NAME refused: why` per line to its stdout (`vmm.log`),
/// then serves QMP on the listening descriptor root passed it
/// (`-chardev socket,id=qmp,fd=N`); a `probe-signal` command makes it
/// signal that pid and print `signal:PID reached|refused: why`.
pub(crate) fn probe(targets: &[(&str, String)]) -> String {
    probe_after("", targets)
}

/// [`probe`], running the Perl code `prelude` first (`@ARGV` is QEMU's
/// argument list; it must not use single quotes).
pub(crate) fn probe_after(prelude: &str, targets: &[(&str, String)]) -> String {
    assert!(!prelude.contains('\''), "{prelude:?} needs quoting");
    let list = perl_targets(targets);
    format!(
        r#"exec perl -e '
use strict; use warnings; use Socket; use IO::Socket::UNIX; use IO::Socket::INET;
$| = 1;
{prelude}
my @targets = (
{list});
# The QMP listening descriptor, as QEMU would get it.
my $fd;
for my $i (0 .. $#ARGV - 1) {{
    $fd = $1 if $ARGV[$i] eq "-chardev" && $ARGV[$i + 1] =~ m{{^socket,id=qmp,fd=(\d+),}};
}}
die "no -chardev socket,id=qmp,fd= argument" unless defined $fd;
my $out = "";
for my $t (@targets) {{
    my ($kind, $what) = @$t;
    my $ok; my $why = "";
    if ($kind eq "unix") {{
        $ok = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $what); $why = "$! $@";
    }} elsif ($kind eq "tcp") {{
        $ok = IO::Socket::INET->new(PeerAddr => $what, Timeout => 2); $why = "$! $@";
    }} elsif ($kind eq "dir") {{
        $ok = opendir(my $d, $what); $why = "$!";
    }} else {{
        $ok = open(my $f, "<", $what); $why = "$!";
    }}
    $out .= $ok ? "$kind:$what reached\n" : "$kind:$what refused: $why\n";
}}
print $out;
open(my $l, "<&=", $fd) or die "qmp: $!";
while (1) {{
    accept(my $c, $l) or next;
    $c->autoflush(1);
    print $c "{{\"QMP\": {{\"version\": {{}}, \"capabilities\": []}}}}\n";
    while (my $line = <$c>) {{
        if ($line =~ /probe-signal.*"pid": *(\d+)/) {{
            my $pid = $1;
            my $r = kill(0, $pid) ? "reached" : "refused: $!";
            print "signal:$pid $r\n";
            print $c "{{\"return\": {{}}}}\n";
        }} elsif ($line =~ /query-status/) {{
            print $c "{{\"return\": {{\"status\": \"running\", \"running\": true}}}}\n";
        }} else {{
            print $c "{{\"return\": {{}}}}\n";
        }}
        exit 0 if $line =~ /quit|system_powerdown/;
    }}
}}
' -- "$@"
"#
    )
}

/// The QMP socket root listens on for VM `id` (in the helper's own
/// state directory, beside its journal).
fn qmp_path(lab: &Lab, id: &str) -> std::path::PathBuf {
    lab.root
        .join("root-state/vmm-qmp")
        .join(format!("{id}.sock"))
}

/// Ask the probe serving VM `id`'s QMP to signal `pid` (as root, the
/// socket's only client).
fn probe_signal(lab: &Lab, id: &str, pid: u32) {
    use std::io::{BufRead as _, Write as _};
    let s = std::os::unix::net::UnixStream::connect(qmp_path(lab, id)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = std::io::BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("QMP"), "{line}");
    writeln!(
        &s,
        "{{\"execute\": \"probe-signal\", \"arguments\": {{\"pid\": {pid}}}}}"
    )
    .unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("return"), "{line}");
}

#[test]
fn qemu_runs_jailed_as_a_uid_of_its_own_and_reaches_nothing_of_the_host() {
    let lab = Lab::new();
    let (a, b) = (
        "3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a",
        "3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b",
    );
    let (adir, bdir) = (lab.vm(a), lab.vm(b));
    // A daemon socket anyone may connect to: only the jail keeps the
    // probe out.
    let daemon_run = lab.root.join("run");
    std::fs::create_dir_all(&daemon_run).unwrap();
    std::fs::set_permissions(&daemon_run, std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon_sock = daemon_run.join("bangerd.sock");
    let _daemon = UnixListener::bind(&daemon_sock).unwrap();
    std::fs::set_permissions(&daemon_sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    let root_sock = lab.root.join("root-run").join("root.sock");
    // A TCP listener in the helper's network namespace, on every address.
    let tcp = lab
        .ns
        .run(|| std::net::TcpListener::bind("0.0.0.0:0").unwrap());
    let port = tcp.local_addr().unwrap().port();
    let mut targets = vec![
        ("unix", root_sock.display().to_string()),
        ("unix", daemon_sock.display().to_string()),
        ("dir", lab.state().display().to_string()),
        ("file", "/proc/1/status".to_string()),
        ("dir", "/home".to_string()),
        ("tcp", format!("127.0.0.1:{port}")),
        ("tcp", format!("10.213.7.1:{port}")),
    ];
    for (dir, id) in [(&adir, a), (&bdir, b)] {
        targets.push(("file", dir.join("work.ext4").display().to_string()));
        targets.push(("unix", qmp_path(&lab, id).display().to_string()));
    }
    lab.stand_in("qemu", &probe(&targets));
    let lab = lab.start();
    let owner = (lab.owner.uid, lab.owner.gid);
    lab.call(PrivOp::Net(NetOp::EnsureTap(TapSpec {
        name: "bangertap1".into(),
        bridge: BRIDGE.into(),
        owner_uid: owner.0,
    })))
    .expect("EnsureTap");
    let launch = |id: &str, tap: &str, mac: &str| {
        lab.call(PrivOp::Vm(VmOp::LaunchVm(LaunchVmSpec {
            vm_id: id.into(),
            image_id: IMAGE.into(),
            kernel_id: KERNEL.into(),
            vmm: VmmKind::Qemu,
            vcpus: 1,
            memory_mib: 128,
            tap: tap.into(),
            mac: mac.into(),
            force_kvm: false,
            restore: None,
        })))
        .unwrap_or_else(|e| panic!("LaunchVm {id}: {e}"))
    };
    let va = launch(a, TAP, "02:ba:0a:d5:07:02");
    let vb = launch(b, "bangertap1", "02:ba:0a:d5:07:03");
    let pid = |v: &serde_json::Value| v["result"]["pid"].as_u64().unwrap() as u32;
    let pids = [pid(&va), pid(&vb)];
    let _vmms = KilledOnDrop::new(&pids);
    eprintln!("VMM pids {pids:?}");

    // The host's view of each VMM.
    let uids: Vec<u32> = pids.iter().map(|&p| assert_jailed(p, owner)).collect();
    assert_ne!(uids[0], uids[1], "two VMMs share a uid");
    // Each signals the other.
    for (id, other) in [(a, pids[1]), (b, pids[0])] {
        probe_signal(&lab, id, other);
    }
    let mut results = String::new();
    for dir in [&adir, &bdir] {
        let deadline = Instant::now() + Duration::from_secs(30);
        let log = loop {
            let log = std::fs::read_to_string(dir.join("vmm.log")).unwrap_or_default();
            if log.contains("signal:") {
                break log;
            }
            assert!(
                Instant::now() < deadline,
                "the probe in {} never finished: {log}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        results.push_str(&log);
    }
    eprintln!("{results}");
    assert_reached_nothing(&results);
    assert_eq!(
        results.lines().count(),
        2 * (targets.len() + 1),
        "{results}"
    );
    // A jailed QEMU gets no run/: nothing of the VM directory is its.
    for dir in [&adir, &bdir] {
        assert!(!dir.join("run").exists(), "{}", dir.display());
    }
    for id in [a, b] {
        lab.call(PrivOp::Vm(VmOp::KillVm(KillVm { vm_id: id.into() })))
            .unwrap();
    }
}

/// Finding 11, with the jail: the helper's start-up sweep killed every
/// process of the jail range, so a jailed VMM never survived a helper
/// restart. A journaled VMM is spared and re-adopted (same pid, its jail
/// uid checked); a stray process of its uid is still killed.
#[test]
fn a_jailed_vmm_survives_a_helper_restart_and_a_stray_of_its_uid_does_not() {
    let lab = Lab::new();
    let id = "3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c";
    lab.vm(id);
    lab.stand_in("qemu", &probe(&[]));
    survives_a_helper_restart(lab.start(), id, VmmKind::Qemu);
}

/// Hostile review of the VMM jail, finding 1: root decided by one `lstat`
/// that `run/` was a jailed QEMU's (a slot uid's) and then removed the
/// name, looked up again, with root's own rights. The owner owns the VM
/// directory, so it can exchange (`RENAME_EXCHANGE`) a directory of its
/// own — holding one of root's — with `run` in between: root emptied the
/// owner's directory, root's subdirectory included. A jailed QEMU has no
/// `run/` now (its QMP socket is root's, elsewhere) and `run/` goes with
/// the owner's ids only, so a slot-owned one the owner cannot enter stays
/// (the deletion fails) and root's file is never reached.
#[test]
fn a_directory_exchanged_with_a_jailed_run_leads_root_to_remove_nothing_of_roots() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let lab = Lab::new();
    let id = "3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d";
    let dir = lab.vm(id);
    lab.stand_in("qemu", &probe(&[]));
    // The owner's directory, holding root's.
    let decoy = dir.join("decoy");
    lab.owner_dir(&decoy);
    let roots = decoy.join("roots");
    std::fs::create_dir(&roots).unwrap();
    std::fs::set_permissions(&roots, std::fs::Permissions::from_mode(0o755)).unwrap();
    root_file(&roots.join("keep"), "root's\n");
    let lab = lab.start();
    // A jailed VMM leaves a run/ of its slot uid.
    let v = lab.launch(id, VmmKind::Qemu).expect("LaunchVm");
    let (_, uid) = pid_and_uid(&v);
    lab.call(PrivOp::Vm(VmOp::KillVm(KillVm { vm_id: id.into() })))
        .unwrap();
    // Whichever of the two names is missing (root removed it) gets a
    // fresh run/ of the slot uid, as a jailed VMM leaves it.
    let names = [dir.join("run"), decoy.clone()];
    // Made aside and renamed into place (never replacing): the racer
    // exchanges the names meanwhile.
    let slot_runs = || {
        for n in &names {
            let aside = dir.join("aside");
            let _ = std::fs::remove_dir_all(&aside);
            std::fs::create_dir(&aside).unwrap();
            std::fs::write(aside.join("qmp.sock"), b"").unwrap();
            std::os::unix::fs::chown(aside.join("qmp.sock"), Some(uid), Some(uid)).unwrap();
            std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&aside, Some(uid), Some(uid)).unwrap();
            let _ = rustix::fs::renameat_with(
                rustix::fs::CWD,
                &aside,
                rustix::fs::CWD,
                n,
                rustix::fs::RenameFlags::NOREPLACE,
            );
        }
    };
    // Looked for under both names, a few times: the racer may exchange
    // them between the two looks.
    let kept = || (0..50).any(|_| names.iter().any(|n| n.join("roots/keep").exists()));
    let stop = AtomicBool::new(false);
    let swaps = AtomicUsize::new(0);
    let mut results = (0, 0);
    std::thread::scope(|s| {
        s.spawn(|| {
            become_owner_fs(&lab.owner);
            let vm = std::fs::File::open(&dir).unwrap();
            while !stop.load(Ordering::Relaxed) {
                if exchange(&vm, "decoy", "run") {
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        // The racer stops even when this thread panics.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = Stop(&stop);
        for _ in 0..300 {
            slot_runs();
            match lab.call(PrivOp::Vm(VmOp::DeleteVmDisks(DeleteVmDisks {
                vm_id: id.into(),
            }))) {
                Ok(_) => results.0 += 1,
                Err(_) => results.1 += 1,
            }
            if !kept() {
                break;
            }
        }
    });
    eprintln!(
        "{} deletions succeeded, {} failed; {} swaps",
        results.0,
        results.1,
        swaps.load(Ordering::Relaxed)
    );
    assert!(
        kept(),
        "root removed its own file from the owner's directory exchanged with run/"
    );
}

/// Hostile review of the VMM jail, finding 2: the kernel and initrd a
/// jailed QEMU gets were opened beneath the state dir without symlinks
/// but checked only for being regular files, then copied into the jail by
/// root: a hard link the owner planted at `images/<id>/initrd` (or a
/// kernel's name) to a root-only file (where `fs.protected_hardlinks` is
/// off; the test plants it as root) put that file's bytes into the guest's
/// memory. Both must be the owner's regular file with one link now; the
/// stand-in prints what it got to its `vmm.log`, and nothing of the file
/// arrives.
#[test]
fn a_hard_linked_kernel_or_initrd_never_reaches_the_jail() {
    let lab = Lab::new();
    let (a, b) = (
        "3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e",
        "3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f",
    );
    let secret = "ROOT-ONLY-initrd-5e1f0d";
    let victim = lab.root.join("shadow");
    root_file(&victim, &format!("{secret}\n"));
    let before = identity(&victim);
    // The initrd of the image every launch uses, a hard link to it.
    let image = lab.state().join("images").join(IMAGE);
    std::fs::hard_link(&victim, image.join("initrd")).unwrap();
    // A second kernel, itself a hard link to it.
    let k = "4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c";
    let kdir = lab.state().join("kernels").join(k);
    lab.owner_dir(&kdir);
    std::fs::hard_link(&victim, kdir.join("kernel")).unwrap();
    let (adir, bdir) = (lab.vm(a), lab.vm(b));
    lab.stand_in("qemu", "cat /kernel /initrd 2>&1\nexit 1\n");
    let lab = lab.start();
    let via_initrd = lab.launch(a, VmmKind::Qemu);
    std::fs::remove_file(image.join("initrd")).unwrap();
    let via_kernel = lab.launch_from(b, VmmKind::Qemu, IMAGE, k);
    eprintln!("initrd: {via_initrd:?}\nkernel: {via_kernel:?}");
    for dir in [&adir, &bdir] {
        let seen = std::fs::read_to_string(dir.join("vmm.log")).unwrap_or_default();
        assert!(
            !seen.contains(secret),
            "the hard-linked file reached the jail of {}",
            dir.display()
        );
    }
    let via_initrd = via_initrd.expect_err("a hard-linked initrd");
    assert!(
        via_initrd.contains("initrd") && via_initrd.contains("refusing"),
        "{via_initrd}"
    );
    let via_kernel = via_kernel.expect_err("a hard-linked kernel");
    assert!(
        via_kernel.contains("kernel") && via_kernel.contains("refusing"),
        "{via_kernel}"
    );
    assert_eq!(identity(&victim), before);
}

/// Hostile review of the VMM jail, finding 3: nothing held one VM's
/// launches apart from the "not running" check to the journal, so two
/// concurrent `LaunchVm`s of one VM both started a QEMU; the second
/// journal entry replaced the first, whose QEMU ran on unjournaled (never
/// stopped, its slot uid given again). Exactly one launch succeeds now,
/// and no VMM but the journaled one is left.
#[test]
fn two_concurrent_launches_of_one_vm_start_one_vmm() {
    let lab = Lab::new();
    let id = "3a4a3a4a3a4a3a4a3a4a3a4a3a4a3a4a";
    lab.vm(id);
    lab.stand_in("qemu", &probe(&[]));
    let lab = lab.start();
    for round in 0..3 {
        let results: Vec<_> = std::thread::scope(|s| {
            let launches: Vec<_> = (0..2)
                .map(|_| s.spawn(|| lab.launch(id, VmmKind::Qemu)))
                .collect();
            launches.into_iter().map(|t| t.join().unwrap()).collect()
        });
        eprintln!("round {round}: {results:?}");
        let pids: Vec<u32> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|v| pid_and_uid(v).0)
            .collect();
        let st = lab
            .call(PrivOp::Vm(VmOp::VmmStatus(VmmStatus { vm_id: id.into() })))
            .unwrap();
        let journaled = st["result"]["pid"].as_u64().map(|p| p as u32);
        let stray: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|p| Some(*p) != journaled && alive(*p))
            .collect();
        // Not the helper's to stop any more: killed here, by pid.
        for p in &stray {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(*p as i32).unwrap(),
                rustix::process::Signal::KILL,
            );
        }
        lab.call(PrivOp::Vm(VmOp::KillVm(KillVm { vm_id: id.into() })))
            .unwrap();
        assert_eq!(
            stray,
            Vec::<u32>::new(),
            "VMMs left unjournaled: {results:?}"
        );
        assert_eq!(
            pids.len(),
            1,
            "not exactly one of two launches of one VM succeeded: {results:?}"
        );
        assert_eq!(journaled, pids.first().copied(), "{st}");
    }
}

/// Hostile review of the VMM-jail fixes, finding 1: a jailed QEMU got its
/// VM's `run/` (its slot uid's, 0700) read-write for its QMP socket. An
/// escape `chmod 000`ed it or a directory it made there, and the slot-uid
/// emptying of `run/` failed with `EACCES` for ever: the VM could never be
/// relaunched and `DeleteVmDisks` always failed. The VMM gets no writable
/// path under `vms/<id>/` now: root listens on QMP itself and passes the
/// listening descriptor. The "escape" is a process of the VMM's slot uid
/// started beside it.
#[test]
fn a_vmm_escape_cannot_make_its_vm_unrelaunchable_or_undeletable() {
    let lab = Lab::new();
    let id = "3b4b3b4b3b4b3b4b3b4b3b4b3b4b3b4b";
    let dir = lab.vm(id);
    lab.stand_in("qemu", &probe(&[]));
    let lab = lab.start();
    let v = lab.launch(id, VmmKind::Qemu).expect("LaunchVm");
    let (_, uid) = pid_and_uid(&v);
    let as_slot = |script: &str| as_uid(uid, script, &dir);
    // Nothing under the VM directory is writable by the VMM's uid.
    let writable = as_slot(r#"find "$1" -writable"#);
    let writable = String::from_utf8_lossy(&writable.stdout).to_string();
    // What an escape would do to make the VM's directory its own.
    let escape = as_slot(r#"mkdir "$1/run/x" && chmod 000 "$1/run/x"; chmod 000 "$1/run""#);
    eprintln!(
        "writable by uid {uid}: {writable:?}; escape: {:?} {}",
        escape.status,
        String::from_utf8_lossy(&escape.stderr)
    );
    lab.call(PrivOp::Vm(VmOp::KillVm(KillVm { vm_id: id.into() })))
        .unwrap();
    let relaunch = lab.launch(id, VmmKind::Qemu);
    if relaunch.is_ok() {
        lab.call(PrivOp::Vm(VmOp::KillVm(KillVm { vm_id: id.into() })))
            .unwrap();
    }
    let delete = lab.call(PrivOp::Vm(VmOp::DeleteVmDisks(DeleteVmDisks {
        vm_id: id.into(),
    })));
    assert!(
        relaunch.is_ok(),
        "the VM cannot be relaunched: {relaunch:?}"
    );
    assert!(
        delete.is_ok(),
        "the VM's disks cannot be deleted: {delete:?}"
    );
    assert_eq!(
        writable, "",
        "the VMM's uid can write under the VM directory"
    );
    assert!(!escape.status.success(), "the escape chmodded run/");
}

/// Hostile review of the VMM-jail fixes, finding 3: one VM's launches were
/// held apart, but `DeleteVmDisks` (and `WriteGuestFiles`,
/// `GrowWorkDisk`) checked "not running" and went on while a launch of
/// the same VM was between that check and its journal entry, so a VMM
/// could start on disks being deleted. Every VM-scoped operation now
/// takes the VM's operation lock in the executor's dispatch: a second is
/// refused while one is in flight.
#[test]
fn a_deletion_racing_a_launch_never_deletes_the_disks_of_a_running_vmm() {
    let lab = Lab::new();
    let id = "3c4c3c4c3c4c3c4c3c4c3c4c3c4c3c4c";
    let dir = lab.vm(id);
    lab.stand_in("qemu", &probe(&[]));
    let lab = lab.start();
    let mut under_a_vmm = Vec::new();
    for round in 0..12u64 {
        let (launched, deleted, disks) = std::thread::scope(|s| {
            let launch = s.spawn(|| lab.launch(id, VmmKind::Qemu));
            std::thread::sleep(Duration::from_millis(round * 5));
            let deleted = lab.call(PrivOp::Vm(VmOp::DeleteVmDisks(DeleteVmDisks {
                vm_id: id.into(),
            })));
            let launched = launch.join().unwrap();
            let disks = ["root.ext4", "work.ext4"].map(|d| dir.join(d).exists());
            (launched, deleted, disks)
        });
        eprintln!("round {round}: launch {launched:?}, delete {deleted:?}, disks {disks:?}");
        if launched.is_ok() && disks != [true, true] {
            under_a_vmm.push(round);
        }
        lab.call(PrivOp::Vm(VmOp::KillVm(KillVm { vm_id: id.into() })))
            .unwrap();
        lab.vm(id);
    }
    assert_eq!(
        under_a_vmm,
        Vec::<u64>::new(),
        "rounds whose VMM runs on deleted disks"
    );
}

/// Hostile read of the VMM table, finding 3: a launch whose QEMU might
/// outlive its kill (`StillRunning`) kept the slot but journaled nothing,
/// so status said "not running" while it ran and the VM's disks were
/// free for tools and launches. A stand-in that never serves QMP is held
/// as soon as it runs (a script whose shell waits in the kernel for its
/// next line: it outlives `SIGKILL` while held): the launch fails, and
/// status reports the VMM running; released, it dies of the pending kill
/// and status forgets it.
#[test]
fn a_launch_whose_vmm_outlives_its_kill_leaves_it_journaled() {
    outliving_its_kill_stays_journaled("3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f", VmmKind::Qemu);
}
