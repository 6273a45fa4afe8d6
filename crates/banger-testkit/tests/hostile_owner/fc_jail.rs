//! Issue #13 finding 11 for Firecracker (docs/jail.md "Firecracker
//! jailed"): Firecracker ran unjailed as the owner. It now runs jailed as
//! the VM slot's uid, as QEMU does, pid 1 of its own namespaces, seeing
//! `/usr`, a minimal `/dev` (`/dev/kvm`, `/dev/net/tun`), copies of its
//! kernel and initrd, its drives bound at `/drive-<id>` (reachable to its
//! uid through an ACL grant that lasts only for the launch) and its
//! slot's `run/` at `/run`.
//!
//! A Perl probe is configured as the Firecracker binary: it serves
//! Firecracker's API on its `--api-sock` path (the executor checks the
//! connection's peer credentials and each answer's status), opens its
//! root drive at `PUT /drives/root` and its tap at `PUT
//! /network-interfaces` as Firecracker does, and, asked by the test over
//! that socket once the launch is over (`PUT /probe`), tries what an
//! escaped guest would, printing one line per try to its stdout (the VM's
//! `serial.log`).

use std::io::{BufRead as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use banger_proto::net::TapSpec;
use banger_proto::privops::{DeleteVmDisks, KillVm, NetOp, PrivOp, StopVm, VmOp};
use banger_proto::vmops::VmmKind;

use crate::jailed_vmm::{
    KilledOnDrop, as_uid, assert_jailed, assert_reached_nothing,
    outliving_its_kill_stays_journaled, perl_targets, pid_and_uid, survives_a_helper_restart,
};
use crate::lab::*;

/// The second VM's tap.
const TAP_B: &str = "bangertap1";

/// The probe: a Firecracker stand-in (see the module docs). `targets`
/// (kind, what) are tried at `PUT /probe`, each printing `KIND:WHAT
/// reached` or `KIND:WHAT refused: errno=N`; so are `taps` other than its
/// own (`TUNSETIFF`), a new open of `/drive-root` (read-write, then
/// read-only) and a write through the descriptor it opened at `PUT
/// /drives/root`; before them its ids, group count and capabilities.
pub(crate) fn fc_probe(targets: &[(&str, String)], taps: &[&str]) -> String {
    fc_probe_then(targets, taps, "")
}

/// A stand-in Firecracker that attaches its tap at `PUT
/// /network-interfaces` as Firecracker does (in its jail's network
/// namespace, where the tap is moved for that request), prints `tap
/// attached as <uid>` (or `TUNSETIFF: <errno>`) to its stdout (the VM's
/// serial log) and exits without answering: the launch fails.
pub(crate) fn attaching_firecracker() -> String {
    fc_probe_then(
        &[],
        &[],
        r#"print $tap ? "tap attached as $<\n" : "TUNSETIFF: $errno\n"; exit 1;"#,
    )
}

/// [`fc_probe`], running the Perl `after_own_tap` once it tried its own
/// tap (`$tap` its descriptor or undef, `$errno`).
fn fc_probe_then(targets: &[(&str, String)], taps: &[&str], after_own_tap: &str) -> String {
    let list = perl_targets(targets);
    let taps: Vec<String> = taps.iter().map(|t| format!("\"{t}\"")).collect();
    r#"exec perl -e '
use strict; use warnings; use Socket; use IO::Socket::UNIX; use IO::Socket::INET;
$| = 1;
my @targets = (
@TARGETS@);
my @taps = (@TAPS@);
my $api;
for my $i (0 .. $#ARGV - 1) { $api = $ARGV[$i + 1] if $ARGV[$i] eq "--api-sock"; }
die "no --api-sock argument" unless defined $api;
my ($drive, $own, $tap);
# TUNSETIFF of tap $_[0] (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) on a new tun descriptor.
sub attach {
    open(my $t, "+<", "/dev/net/tun") or return (undef, $! + 0);
    my $req = pack("Z16 s x22", $_[0], 0x5002);
    return ioctl($t, 0x400454ca, $req) ? ($t, 0) : (undef, $! + 0);
}
sub probe {
    print "ids: $< $> $( $)\n";
    my $groups = syscall(115, 0, 0);
    print "groups: $groups\n";
    my $hdr = pack("Li", 0x20080522, 0);
    my $caps = "\0" x 24;
    my $rc = syscall(125, $hdr, $caps);
    print "caps: rc=$rc " . join(" ", unpack("L6", $caps)) . "\n";
    for my $t (@targets) {
        my ($kind, $what) = @$t;
        my $ok;
        if ($kind eq "unix") {
            $ok = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $what);
        } elsif ($kind eq "tcp") {
            $ok = IO::Socket::INET->new(PeerAddr => $what, Timeout => 2);
        } elsif ($kind eq "dir") {
            $ok = opendir(my $d, $what);
        } else {
            $ok = open(my $f, "<", $what);
        }
        print $ok ? "$kind:$what reached\n" : "$kind:$what refused: errno=" . ($! + 0) . "\n";
    }
    for my $name (@taps) {
        next if defined $own && $name eq $own;
        my ($t, $errno) = attach($name);
        print $t ? "tap:$name reached\n" : "tap:$name refused: errno=$errno\n";
    }
    for my $mode ("+<", "<") {
        my $ok = open(my $f, $mode, "/drive-root");
        print $ok ? "reopen$mode/drive-root reached\n" : "reopen$mode/drive-root refused: errno=" . ($! + 0) . "\n";
    }
    if (defined $drive && sysseek($drive, 0, 0) && syswrite($drive, "FCPROBE") == 7) {
        print "held-write: ok\n";
    } else {
        print "held-write: failed: $!\n";
    }
    print "probe done\n";
}
my $l = IO::Socket::UNIX->new(Type => SOCK_STREAM, Local => $api, Listen => 8)
    or die "binding $api: $! $@";
while (1) {
    my $c = $l->accept or next;
    my $head = "";
    while (defined(my $line = <$c>)) { $head .= $line; last if $line eq "\r\n"; }
    next unless $head =~ m{^(\w+) (\S+) HTTP};
    my ($method, $path) = ($1, $2);
    my $len = $head =~ /content-length: *(\d+)/i ? $1 : 0;
    my $body = "";
    read($c, $body, $len) if $len;
    if ($path eq "/drives/root") {
        if (open($drive, "+<", "/drive-root")) { print "drive-open-at-put: ok\n"; }
        else { print "drive-open-at-put: refused: errno=" . ($! + 0) . "\n"; undef $drive; }
    } elsif ($path =~ m{^/network-interfaces/} && $body =~ /"host_dev_name": *"([^"]+)"/) {
        $own = $1;
        my $errno;
        ($tap, $errno) = attach($own);
        print $tap ? "own-tap: attached\n" : "own-tap: refused: errno=$errno\n";
        @AFTER_OWN_TAP@
    } elsif ($path eq "/probe") {
        probe();
    }
    if ($method eq "GET") {
        my $j = "{\"app_name\": \"Firecracker\", \"id\": \"probe\", \"state\": \"Running\", \"vmm_version\": \"1.16.1\"}";
        print $c "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " . length($j) . "\r\n\r\n$j";
    } else {
        print $c "HTTP/1.1 204 No Content\r\n\r\n";
    }
    close $c;
    exit 0 if $body =~ /SendCtrlAltDel/;
}
' -- "$@"
"#
    .replace("@TARGETS@", &list)
    .replace("@TAPS@", &taps.join(", "))
    .replace("@AFTER_OWN_TAP@", after_own_tap)
}

/// Ask VM `id`'s probe to run its tries (`PUT /probe` on its API socket,
/// as root), and wait for its `probe done` line in the VM's serial log:
/// what it printed.
fn run_probe(lab: &Lab, id: &str) -> String {
    let dir = lab.vm_dir(id);
    let s = std::os::unix::net::UnixStream::connect(dir.join("run/firecracker.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        &s,
        "PUT /probe HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(&s).read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 204"), "{line}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(dir.join("serial.log")).unwrap_or_default();
        if log.contains("probe done") {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "the probe of {id} never finished: {log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value after `key: ` on the probe's line starting with it.
fn line_of<'a>(log: &'a str, key: &str) -> &'a str {
    log.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {key} line in {log}"))
}

/// Launch VM `id`'s Firecracker on `tap` with `mac`: its answer.
fn launch_on(lab: &Lab, id: &str, tap: &str, mac: &str) -> serde_json::Value {
    lab.launch_fc_on(id, tap, mac)
        .unwrap_or_else(|e| panic!("LaunchVm {id}: {e}"))
}

/// The owner's disk `name` of VM directory `dir`, mode 0600: no uid but
/// the owner's (and a grant's) opens it.
fn private_disk(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

#[test]
fn firecracker_runs_jailed_as_a_uid_of_its_own_and_reaches_nothing_of_the_host() {
    let lab = Lab::new();
    let (a, b) = (
        "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
        "5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b",
    );
    let (adir, bdir) = (lab.vm(a), lab.vm(b));
    let root_sock = lab.root.join("root-run").join("root.sock");
    // A TCP listener in the helper's network namespace, on every address.
    let tcp = lab
        .ns
        .run(|| std::net::TcpListener::bind("0.0.0.0:0").unwrap());
    let port = tcp.local_addr().unwrap().port();
    let targets = vec![
        ("unix", root_sock.display().to_string()),
        ("dir", lab.state().display().to_string()),
        ("dir", adir.display().to_string()),
        ("dir", bdir.display().to_string()),
        ("file", adir.join("work.ext4").display().to_string()),
        ("file", bdir.join("work.ext4").display().to_string()),
        ("dir", "/home".to_string()),
        ("dir", "/root".to_string()),
        ("file", "/proc/1/status".to_string()),
        ("tcp", format!("127.0.0.1:{port}")),
        ("tcp", format!("10.213.7.1:{port}")),
    ];
    lab.stand_in("firecracker", &fc_probe(&targets, &[TAP, TAP_B]));
    let disks: Vec<_> = [&adir, &bdir]
        .iter()
        .flat_map(|d| [private_disk(d, "root.ext4"), private_disk(d, "work.ext4")])
        .collect();
    let lab = lab.start();
    let owner = (lab.owner.uid, lab.owner.gid);
    lab.call(PrivOp::Net(NetOp::EnsureTap(TapSpec {
        name: TAP_B.into(),
        bridge: BRIDGE.into(),
        owner_uid: owner.0,
    })))
    .expect("EnsureTap");
    let acl = |p: &std::path::Path| {
        let f = std::fs::File::open(p).unwrap();
        let mode = rustix::fs::fstat(&f).unwrap().st_mode;
        (
            banger_host::jail::read_acl(std::os::fd::AsFd::as_fd(&f)).unwrap(),
            mode,
        )
    };
    let before: Vec<_> = disks.iter().map(|d| acl(d)).collect();
    let va = launch_on(&lab, a, TAP, "02:ba:0a:d5:07:02");
    let vb = launch_on(&lab, b, TAP_B, "02:ba:0a:d5:07:03");
    let (pa, ua) = pid_and_uid(&va);
    let (pb, ub) = pid_and_uid(&vb);
    let _vmms = KilledOnDrop::new(&[pa, pb]);
    eprintln!("VMM pids {pa} {pb}, uids {ua} {ub}");
    // The host's view: each jailed as a uid of its own.
    assert_eq!(assert_jailed(pa, owner), ua);
    assert_eq!(assert_jailed(pb, owner), ub);
    assert_ne!(ua, ub, "two VMMs share a uid");
    // The grants went with the launch: each disk's ACL bytes and mode
    // are as before.
    let after: Vec<_> = disks.iter().map(|d| acl(d)).collect();
    assert_eq!(after, before, "a drive grant outlived its launch");
    // run/ is the slot's own, 0700.
    for (dir, uid) in [(&adir, ua), (&bdir, ub)] {
        let m = std::fs::metadata(dir.join("run")).unwrap();
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (uid, uid, 0o700));
    }
    let mut results = String::new();
    for (id, dir, uid) in [(a, &adir, ua), (b, &bdir, ub)] {
        let log = run_probe(&lab, id);
        eprintln!("{id}:\n{log}");
        let ids = line_of(&log, "ids");
        assert!(
            ids.split_whitespace().all(|w| w == uid.to_string()),
            "{id}: ids {ids}, slot {uid}"
        );
        assert_eq!(line_of(&log, "groups"), "0", "{id}");
        assert_eq!(line_of(&log, "caps"), "rc=0 0 0 0 0 0 0", "{id}");
        assert_eq!(line_of(&log, "drive-open-at-put"), "ok", "{id}");
        assert_eq!(line_of(&log, "own-tap"), "attached", "{id}");
        assert_eq!(line_of(&log, "held-write"), "ok", "{id}");
        let other = if id == a { TAP_B } else { TAP };
        assert_eq!(
            line_of(&log, &format!("tap:{other} refused")),
            "errno=1",
            "{id}: the other VM's tap"
        );
        for mode in ["+<", "<"] {
            assert_eq!(
                line_of(&log, &format!("reopen{mode}/drive-root refused")),
                "errno=13",
                "{id}: its root drive opened again after the launch"
            );
        }
        // The write through the descriptor it held reached the disk.
        let head = std::fs::read(dir.join("root.ext4")).unwrap();
        assert_eq!(&head[..7], b"FCPROBE", "{id}");
        results.push_str(&log);
    }
    assert_reached_nothing(&results);
    assert_eq!(
        results
            .lines()
            .filter(|l| l.contains(" refused: errno="))
            .count(),
        2 * (targets.len() + 1 + 2),
        "{results}"
    );
    // Stopped, its run/ (the slot's) goes with a relaunch and with the
    // VM's deletion, though the owner's ids cannot enter it.
    for id in [a, b] {
        lab.call(PrivOp::Vm(VmOp::KillVm(KillVm { vm_id: id.into() })))
            .unwrap();
    }
    let again = lab.launch(a, VmmKind::Firecracker);
    if let Ok(v) = &again {
        let _again = KilledOnDrop::new(&[pid_and_uid(v).0]);
        lab.call(PrivOp::Vm(VmOp::KillVm(KillVm { vm_id: a.into() })))
            .unwrap();
    }
    assert!(again.is_ok(), "relaunch: {again:?}");
    for (id, dir) in [(a, &adir), (b, &bdir)] {
        lab.call(PrivOp::Vm(VmOp::DeleteVmDisks(DeleteVmDisks {
            vm_id: id.into(),
        })))
        .unwrap_or_else(|e| panic!("DeleteVmDisks {id}: {e}"));
        assert!(!dir.join("run").exists(), "{}", dir.display());
    }
}

/// Finding 11, with the jail, for Firecracker: a journaled jailed
/// Firecracker is spared by the helper's restart and re-adopted (same
/// pid, its slot uid checked, its cgroup kept); a stray of its uid is
/// killed.
#[test]
fn a_jailed_firecracker_survives_a_helper_restart_and_a_stray_of_its_uid_does_not() {
    let lab = Lab::new();
    let id = "5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c";
    lab.vm(id);
    lab.stand_in("firecracker", &fc_probe(&[], &[]));
    survives_a_helper_restart(lab.start(), id, VmmKind::Firecracker);
}

/// What the escape of [`a_firecracker_escape_cannot_make_its_vm_unrelaunchable_or_undeletable`]
/// also leaves in `$1/run` (a shell command list): a file and a locked
/// directory (with a file in it) whose names are not UTF-8, and a chain
/// of 24 nested directories with a file at its bottom, its deepest ten
/// (past the removal's depth limit) locked 000, innermost first.
const ESCAPE_LEAVES: &str = r#"r="$1/run" && odd="$r/$(printf 'x\377')" && mkdir "$odd" && touch "$odd/f" "$r/$(printf 'f\376')" && chmod 000 "$odd" && p="$r" && i=0 && while [ $i -lt 24 ]; do p="$p/d"; i=$((i+1)); done && mkdir -p "$p" && touch "$p/f" && while [ $i -gt 14 ]; do chmod 000 "$p"; p="${p%/d}"; i=$((i-1)); done"#;

/// The Firecracker twin of
/// `vmm_jail::a_vmm_escape_cannot_make_its_vm_unrelaunchable_or_undeletable`:
/// a jailed Firecracker's `run/` is its slot's and writable by it (its API
/// socket is bound there), so an escape can leave a directory of its own
/// there that its uid cannot enter (mode 000) and take the search and
/// write bits off `run/` itself. The stopped VM must still relaunch and
/// its disks still be deleted. The "escape" is a process of the VMM's
/// slot uid started beside it.
///
/// Hostile read of fcexec, F2: names that are not UTF-8 (`run/x\xff`)
/// were skipped and a chain deeper than the removal's depth limit refused
/// (`ELOOP`), so `run/` stayed, not empty, the slot's 0700: the escape
/// leaves both too ([`ESCAPE_LEAVES`]).
#[test]
fn a_firecracker_escape_cannot_make_its_vm_unrelaunchable_or_undeletable() {
    let lab = Lab::new();
    let id = "5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d";
    let dir = lab.vm(id);
    lab.stand_in("firecracker", &fc_probe(&[], &[]));
    let lab = lab.start();
    let v = lab.launch(id, VmmKind::Firecracker).expect("LaunchVm");
    let (pid, uid) = pid_and_uid(&v);
    let _vmm = KilledOnDrop::new(&[pid]);
    // What the escape does, as the slot uid: it must succeed.
    let escape = |script: &str| {
        let out = as_uid(uid, script, &dir);
        assert!(
            out.status.success(),
            "the escape failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    escape(&format!(
        r#"mkdir -p "$1/run/x/y" && touch "$1/run/x/y/f" && chmod 000 "$1/run/x/y" "$1/run/x" && {ESCAPE_LEAVES} && chmod 000 "$1/run""#
    ));
    lab.call(PrivOp::Vm(VmOp::KillVm(KillVm { vm_id: id.into() })))
        .unwrap();
    let relaunch = lab.launch(id, VmmKind::Firecracker);
    if let Ok(v) = &relaunch {
        let _again = KilledOnDrop::new(&[pid_and_uid(v).0]);
        lab.call(PrivOp::Vm(VmOp::KillVm(KillVm { vm_id: id.into() })))
            .unwrap();
    }
    assert!(
        relaunch.is_ok(),
        "the VM cannot be relaunched: {relaunch:?}"
    );
    // The relaunch's run/ is fresh (the same slot's: the lowest free):
    // the escape locks it again before the deletion.
    escape(&format!(
        r#"mkdir -p "$1/run/x" && chmod 000 "$1/run/x" && {ESCAPE_LEAVES} && chmod 000 "$1/run""#
    ));
    let delete = lab.call(PrivOp::Vm(VmOp::DeleteVmDisks(DeleteVmDisks {
        vm_id: id.into(),
    })));
    assert!(
        delete.is_ok(),
        "the VM's disks cannot be deleted: {delete:?}"
    );
    assert!(!dir.join("run").exists(), "run/ is left");
}

/// The Firecracker twin of
/// `vmm_jail::a_launch_whose_vmm_outlives_its_kill_leaves_it_journaled`:
/// a jailed Firecracker that never serves its API and outlives its kill
/// is journaled with its slot (`VmHost::keep_still_running`, shared with
/// QEMU's launch), never left running unreported.
#[test]
fn a_launch_whose_firecracker_outlives_its_kill_leaves_it_journaled() {
    outliving_its_kill_stays_journaled("5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e", VmmKind::Firecracker);
}

/// Hostile read of fcexec, F3: nothing tested that `VmHost::adopted_api`
/// refuses what is not the adopted Firecracker's own. After a helper
/// restart, VM a's API socket is one an escape of its slot uid serves
/// from another process (the socket file is the slot's, the listener is
/// not the adopted pid: `SO_PEERCRED`), and VM b's `run/` is opened up to
/// 0755 by its escape (not the slot's 0700). Neither stop goes through
/// that API: the impostor is connected to and dropped before a byte is
/// sent, and b's probe (which exits on `SendCtrlAltDel`) is killed after
/// the timeout; both stops are not graceful.
#[test]
fn an_adopted_firecracker_is_stopped_through_its_api_only_when_its_run_and_listener_are_its_own() {
    use std::os::unix::process::CommandExt as _;
    let lab = Lab::new();
    let (a, b) = (
        "5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f",
        "6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f",
    );
    let (adir, bdir) = (lab.vm(a), lab.vm(b));
    lab.stand_in("firecracker", &fc_probe(&[], &[]));
    let mut lab = lab.start();
    lab.call(PrivOp::Net(NetOp::EnsureTap(TapSpec {
        name: TAP_B.into(),
        bridge: BRIDGE.into(),
        owner_uid: lab.owner.uid,
    })))
    .expect("EnsureTap");
    let (pa, ua) = pid_and_uid(&launch_on(&lab, a, TAP, "02:ba:0a:d5:07:02"));
    let (pb, ub) = pid_and_uid(&launch_on(&lab, b, TAP_B, "02:ba:0a:d5:07:03"));
    let _vmms = KilledOnDrop::new(&[pa, pb]);
    let opened = as_uid(ub, r#"chmod 755 "$1/run""#, &bdir);
    assert!(opened.status.success(), "{opened:?}");
    let helper = lab.helper.as_mut().unwrap();
    helper.restart_in(&lab.ns);
    // The impostor: a process of a's slot uid serving a's API socket name.
    let mut impostor = std::process::Command::new("perl")
        .args([
            "-e",
            r#"use IO::Socket::UNIX; $| = 1; unlink $ARGV[0];
my $l = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Local => $ARGV[0], Listen => 8) or die "bind: $!";
print "listening\n";
while (my $c = $l->accept) {
    print "connection\n";
    my $n = sysread($c, my $buf, 4096);
    print "got: $buf\n" if $n;
    print $c "HTTP/1.1 204 No Content\r\n\r\n";
    close $c;
}"#,
        ])
        .arg(adir.join("run/firecracker.sock"))
        .uid(ua)
        .gid(ua)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _impostor = KilledOnDrop::new(&[impostor.id()]);
    let mut out = std::io::BufReader::new(impostor.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "listening\n");
    for id in [a, b] {
        let stopped = lab
            .call(PrivOp::Vm(VmOp::StopVm(StopVm {
                vm_id: id.into(),
                timeout_secs: 2,
            })))
            .unwrap();
        assert_eq!(
            (
                &stopped["result"]["was_running"],
                &stopped["result"]["graceful"]
            ),
            (&serde_json::json!(true), &serde_json::json!(false)),
            "{id}: {stopped}"
        );
    }
    let _ = impostor.kill();
    let _ = impostor.wait();
    let mut said = String::new();
    std::io::Read::read_to_string(&mut out, &mut said).unwrap();
    assert!(
        said.contains("connection") && !said.contains("got:"),
        "the impostor was not dropped before a byte was sent: {said:?}"
    );
}
