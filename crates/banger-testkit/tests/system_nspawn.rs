//! `banger system install | status | restart | uninstall` under a real
//! systemd, in the container of `nspawn/mod.rs` (Debian bookworm under
//! `systemd-nspawn --private-network`).
//!
//! What it shows: both units reach `active` (`Type=notify`); the owner runs
//! `banger doctor`, `banger host status`, `banger image ls` and
//! `banger kernel import` without sudo; `bangerd` runs as the owner's uid with
//! no effective, permitted, ambient or bounding capabilities; another user is
//! refused by both sockets (by file mode), and a user in the owner's group,
//! who can connect to the helper's 0660 socket, is refused by the helper's
//! uid check; `system restart` replaces both processes and keeps the store
//! (the kernel imported before is still listed) and the host network; a
//! SIGKILLed helper is restarted by systemd while the VMM processes in its
//! cgroup keep running (`KillMode=process`), as they do through a
//! `system restart`, and the new helper re-adopts the journaled one
//! (`vmm_status`: running, adopted) and can kill it;
//! `system uninstall` removes the bridge, taps and nft tables through
//! `host teardown`, kills what its stop left in the helper's cgroup, and
//! leaves no unit, binary, install metadata, socket, runtime directory,
//! banger link or nft table, and no process of the owner, behind.
//!
//! The container has its own network namespace (`--private-network`), so
//! the bridge and nft tables the helper creates never touch the host's.
//!
//! No guest is booted here (system_guest_nspawn.rs boots one). The owner
//! registers an image and creates a VM with `--no-start`: the helper makes
//! its disks and writes its guest files (tools run as the owner, files all
//! the owner's), and `vm rm` deletes them. The VMMs of the
//! restart checks are stand-ins (`sleep`, as in network.rs): the test moves
//! them into the helper's cgroup, where the VMMs it launches live, and
//! writes one into the helper's journal the way `launch_vm` records a launch
//! (pid + start time).
//!
//! Fails (never skips) without root, `systemd-nspawn`, `nsenter` or
//! `debugfs`.
#![allow(clippy::disallowed_methods)] // these tests spawn the binaries under test directly

use std::time::{Duration, Instant};

use nspawn::{Container, text};
use serde_json::Value;

mod nspawn;

const OWNER: &str = "bangerowner";
/// Not in the owner's group: both sockets refuse it by file mode.
const STRANGER: &str = "bangerstranger";
/// In the owner's group: the helper socket's 0660 lets it connect, so only
/// the helper's SO_PEERCRED check stands in its way.
const GROUPED: &str = "bangergrouped";
const KERNEL_IN_CONTAINER: &str = "/opt/banger-image/vmlinuz";
const INITRD_IN_CONTAINER: &str = "/opt/banger-image/initrd.img";
const ROOTFS_IN_CONTAINER: &str = "/opt/banger-image/rootfs.ext4";

/// The container with its own image's kernel, initrd and root filesystem
/// at `/opt/banger-image`.
fn boot() -> Container {
    let img = nspawn::image();
    Container::boot(
        &[
            (img.kernel.clone(), KERNEL_IN_CONTAINER),
            (img.initrd.clone(), INITRD_IN_CONTAINER),
            (img.rootfs_ext4.clone(), ROOTFS_IN_CONTAINER),
        ],
        true,
    )
}

fn main_pid(c: &Container, unit: &str) -> u32 {
    c.ok(None, &format!("systemctl show -p MainPID --value {unit}"))
        .trim()
        .parse()
        .unwrap()
}

/// `Key:\tvalue` from /proc/PID/status in the container.
fn proc_status(c: &Container, pid: u32, key: &str) -> String {
    let status = c.ok(None, &format!("cat /proc/{pid}/status"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .trim()
        .to_string()
}

/// A `sleep` started in the container and moved into cgroup `cg` (the
/// helper's), in every hierarchy that has it; its pid in the container.
fn stand_in_vmm(c: &Container, cg: &str) -> u32 {
    let pid: u32 = c
        .ok(None, "sleep 3600 </dev/null >/dev/null 2>&1 & echo $!")
        .trim()
        .parse()
        .unwrap();
    let moved = c.ok(
        None,
        &format!(
            "n=0; for base in /sys/fs/cgroup /sys/fs/cgroup/unified /sys/fs/cgroup/systemd; do \
               f=$base{cg}/cgroup.procs; \
               if [ -f $f ] && echo {pid} > $f; then n=$((n+1)); fi; \
             done; echo $n"
        ),
    );
    assert_ne!(moved.trim(), "0", "could not move {pid} into {cg}");
    pid
}

/// Record `pid` as the running VMM of `vm_id` in the helper's journal, as
/// `LaunchVm` does (pid + start time, so re-adoption can tell it is the same
/// process). Written from the host side through the container's tree.
fn journal_vmm(c: &Container, vm_id: &str, pid: u32) {
    let stat = c.ok(None, &format!("cat /proc/{pid}/stat"));
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let start_time: u64 = rest.split(' ').nth(19).unwrap().parse().unwrap();
    let path = c.tree.path().join("root/var/lib/banger-root/journal.json");
    let mut journal: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    journal["vmms"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "vm_id": vm_id, "pid": pid, "start_time": start_time, "vmm": "qemu",
        }));
    std::fs::write(&path, journal.to_string()).unwrap();
}

fn socket_health<'a>(status: &'a Value, daemon: &str) -> &'a Value {
    status["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["daemon"] == daemon)
        .unwrap_or_else(|| panic!("no {daemon} socket in {status:#}"))
}

#[test]
fn install_restart_and_uninstall_under_systemd() {
    let c = boot();
    c.ok(
        None,
        &format!(
            "useradd -m -s /bin/sh {OWNER} && useradd -m -s /bin/sh {STRANGER} \
             && useradd -m -s /bin/sh -G {OWNER} {GROUPED}"
        ),
    );
    let owner_uid: u32 = c
        .ok(None, &format!("id -u {OWNER}"))
        .trim()
        .parse()
        .unwrap();

    // Install: both units come up and report ready.
    let out = c.run(
        None,
        &format!("/opt/banger/banger system install --owner {OWNER} --json"),
    );
    assert!(
        out.status.success(),
        "install failed: {}\n{}\n{}\n{}",
        text(&out.stderr),
        text(&out.stdout),
        c.journal("bangerd-root.service"),
        c.journal("bangerd.service")
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["services"]["ready"], true, "{report:#}");
    assert_eq!(
        c.ok(
            None,
            "systemctl is-active bangerd-root.service bangerd.service"
        ),
        "active\nactive\n"
    );

    // Status, as root: healthy; root is refused by the helper (it serves
    // only the owner) and that still counts as alive.
    let status = c.json(None, "banger system status --json");
    assert_eq!(status["healthy"], true, "{status:#}");
    assert_eq!(status["host_guard"]["udev_rule"], "current", "{status:#}");
    assert_eq!(socket_health(&status, "bangerd")["health"], "serving");
    assert_eq!(socket_health(&status, "bangerd-root")["health"], "refused");
    assert_eq!(
        socket_health(&status, "bangerd-root")["running_version"],
        banger_proto::BANGER_VERSION
    );
    println!("{}", c.ok(None, "banger system status"));
    // As the owner, both daemons serve and say their version.
    let status = c.json(Some(OWNER), "banger system status --json --no-doctor");
    for d in ["bangerd", "bangerd-root"] {
        let s = socket_health(&status, d);
        assert_eq!(s["health"], "serving", "{status:#}");
        assert_eq!(s["running_version"], banger_proto::BANGER_VERSION);
    }

    // The owner's daily commands, without sudo.
    let out = c.run(Some(OWNER), "banger doctor --json");
    assert!(
        matches!(out.status.code(), Some(0 | 10)),
        "doctor: {}",
        text(&out.stderr)
    );
    let doctor: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!doctor["checks"].as_array().unwrap().is_empty());
    // The owner's daemon reads the installed udev rule (and LVM's filter,
    // where lvm2 is installed) and finds them current.
    let guard = doctor["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "host_guard")
        .unwrap_or_else(|| panic!("no host_guard check: {doctor:#}"));
    assert_eq!(guard["state"], "current", "{guard:#}");
    let host = c.json(Some(OWNER), "banger host status --json");
    println!("host status in the container: {host}");
    assert_eq!(host["ready"], true, "{host:#}");
    assert_eq!(host["bridge_present"], true, "{host:#}");
    c.json(Some(OWNER), "banger image ls --json");
    c.ok(
        Some(OWNER),
        &format!(
            "banger kernel import {KERNEL_IN_CONTAINER} --initrd {INITRD_IN_CONTAINER} --name k1 --json"
        ),
    );
    assert!(c.ok(Some(OWNER), "banger kernel ls").contains("k1"));
    c.ok(
        Some(OWNER),
        &format!("banger image register img --rootfs {ROOTFS_IN_CONTAINER} --kernel k1 --json"),
    );

    // A VM's disks and guest files through the helper (root disk copy, work
    // disk and guest files made by tools the helper runs as the owner); a
    // booted guest is system_guest_nspawn.rs's business.
    let created = c.json(
        Some(OWNER),
        "banger vm create v1 --image img --no-start --wait --json",
    );
    assert_eq!(created["vm"]["state"], "created", "{created:#}");
    let vm_dir = format!(
        "/var/lib/banger/vms/{}",
        created["vm"]["id"].as_str().unwrap()
    );
    let files = c.ok(None, &format!("find {vm_dir} -type f -printf '%u %p\\n'"));
    assert!(files.lines().count() >= 2, "VM files: {files}");
    assert!(
        files.lines().all(|l| l.starts_with(&format!("{OWNER} "))),
        "VM files not all the owner's: {files}"
    );
    c.ok(Some(OWNER), "banger vm rm v1");
    c.ok(None, &format!("test ! -e {vm_dir}"));

    // bangerd: the owner's uid, no capability of any kind.
    let pid = main_pid(&c, "bangerd.service");
    let uid = proc_status(&c, pid, "Uid");
    assert!(
        uid.split_whitespace().all(|u| u == owner_uid.to_string()),
        "bangerd uids: {uid}"
    );
    for key in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        assert_eq!(
            proc_status(&c, pid, key),
            "0000000000000000",
            "bangerd {key}"
        );
    }

    // Of all home directories bangerd sees only the owner's (workspaces,
    // keys, config), and none of the other users'.
    let homes = c.ok(None, &format!("nsenter -t {pid} -m ls /home"));
    assert_eq!(homes.trim(), OWNER, "homes bangerd sees");

    // Other users: refused by both sockets.
    let out = c.run(Some(STRANGER), "banger host status");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    let status = c.json(
        Some(STRANGER),
        "banger system status --json --no-doctor || true",
    );
    for d in ["bangerd", "bangerd-root"] {
        let s = socket_health(&status, d);
        assert_eq!(s["health"], "broken", "{status:#}");
        assert!(
            s["detail"].as_str().unwrap().contains("Permission denied"),
            "{s}"
        );
    }
    let status = c.json(
        Some(GROUPED),
        "banger system status --json --no-doctor || true",
    );
    let helper = socket_health(&status, "bangerd-root");
    assert_eq!(helper["health"], "refused", "{status:#}");
    assert!(
        helper["detail"]
            .as_str()
            .unwrap()
            .contains("may not use the banger root helper"),
        "{helper}"
    );
    assert_eq!(socket_health(&status, "bangerd")["health"], "broken");

    // Restart: new processes, same state.
    let before = (
        main_pid(&c, "bangerd-root.service"),
        main_pid(&c, "bangerd.service"),
    );
    let restarted = c.json(None, "banger system restart --json");
    println!("restart: {restarted}");
    let after = (
        main_pid(&c, "bangerd-root.service"),
        main_pid(&c, "bangerd.service"),
    );
    assert_ne!(before.0, after.0, "the helper was not restarted");
    assert_ne!(before.1, after.1, "bangerd was not restarted");
    assert!(c.ok(Some(OWNER), "banger kernel ls").contains("k1"));
    let host = c.json(Some(OWNER), "banger host status --json");
    assert_eq!(host["bridge_present"], true, "{host:#}");
    let status = c.json(None, "banger system status --json --no-doctor");
    assert_eq!(status["healthy"], true, "{status:#}");

    // A helper crash leaves VMMs running, and the restarted helper manages
    // them. Stand-in VMMs (`sleep`, as in network.rs) are placed in the
    // helper's cgroup, where the VMMs it launches live, and one is written
    // into its journal the way `LaunchVm` records a launch. With bangerd
    // stopped, nothing else touches the journal meanwhile.
    c.ok(None, "systemctl stop bangerd.service");
    let cgroup = c
        .ok(
            None,
            "systemctl show -p ControlGroup --value bangerd-root.service",
        )
        .trim()
        .to_string();
    let vmm = stand_in_vmm(&c, &cgroup);
    let straggler = stand_in_vmm(&c, &cgroup);
    let vm_id = "5e1f".repeat(8);
    journal_vmm(&c, &vm_id, vmm);
    let helper_before = main_pid(&c, "bangerd-root.service");
    c.ok(None, &format!("kill -KILL {helper_before}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pid = main_pid(&c, "bangerd-root.service");
        let active = c.run(None, "systemctl is-active --quiet bangerd-root.service");
        if pid != 0 && pid != helper_before && active.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bangerd-root was not restarted after SIGKILL:\n{}",
            c.journal("bangerd-root.service")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for p in [vmm, straggler] {
        assert!(
            c.run(None, &format!("kill -0 {p}")).status.success(),
            "stand-in VMM {p} died with the helper (KillMode?)"
        );
    }
    let vmm_op = |op: &str| {
        let script = format!(
            "/opt/banger/banger-rawclient /run/banger-root/root.sock hello-priv read=1 \
             'json={{\"type\":\"op\",\"body\":{{\"op\":\"{op}\",\"args\":{{\"vm_id\":\"{vm_id}\"}}}}}}' read=1"
        );
        let out = c.ok(Some(OWNER), &script);
        let last: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert_eq!(last["recv"]["type"], "ok", "{op}: {out}");
        last["recv"]["body"]["result"].clone()
    };
    let state = vmm_op("vmm_status");
    assert_eq!(state["running"], true, "{state}");
    assert_eq!(state["adopted"], true, "{state}");
    assert_eq!(state["pid"], vmm, "{state}");

    // `system restart` (both services) keeps them too, and the helper after
    // it re-adopts the VMM again.
    c.ok(None, "systemctl start bangerd.service");
    let helper_before = main_pid(&c, "bangerd-root.service");
    c.json(None, "banger system restart --json");
    assert_ne!(main_pid(&c, "bangerd-root.service"), helper_before);
    for p in [vmm, straggler] {
        assert!(
            c.run(None, &format!("kill -0 {p}")).status.success(),
            "stand-in VMM {p} died in `system restart`"
        );
    }
    let state = vmm_op("vmm_status");
    assert_eq!(
        (&state["running"], &state["adopted"]),
        (&Value::Bool(true), &Value::Bool(true)),
        "{state}"
    );
    vmm_op("kill_vm");
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.run(None, &format!("kill -0 {vmm}")).status.success() {
        assert!(Instant::now() < deadline, "kill_vm left {vmm} running");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(vmm_op("vmm_status")["running"], false);

    // Uninstall: nothing of banger's is left running or installed.
    let out = c.run(None, "banger system uninstall --json");
    assert!(
        out.status.success(),
        "uninstall: {}\n{}",
        text(&out.stderr),
        text(&out.stdout)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("uninstall: {report}");
    let removed: Vec<&str> = report["host_objects_removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(removed.iter().any(|r| r.contains("banger0")), "{report:#}");
    // The straggler was left in the helper's cgroup by its stop
    // (KillMode=process) and killed by the uninstall. Under load a process
    // that was already exiting (a tool the helper ran at teardown) can be
    // listed beside it; whatever was listed must be gone afterwards.
    let killed: Vec<u64> = report["leftover_processes_killed"]
        .as_array()
        .unwrap_or_else(|| panic!("{report:#}"))
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(killed.contains(&u64::from(straggler)), "{report:#}");
    for p in &killed {
        assert!(
            !c.run(None, &format!("kill -0 {p}")).status.success(),
            "uninstall reported {p} killed but it runs: {report:#}"
        );
    }
    assert!(
        !c.run(None, &format!("kill -0 {straggler}"))
            .status
            .success()
    );
    for unit in ["bangerd.service", "bangerd-root.service"] {
        assert_eq!(
            c.ok(None, &format!("systemctl show -p LoadState --value {unit}"))
                .trim(),
            "not-found",
            "{unit} is still known to systemd"
        );
    }
    // (/etc/banger itself stays: the tree is a banger guest image, whose
    // /etc/banger/guest-contract the uninstall must not touch.)
    let leftovers = c.ok(
        None,
        "ls -d /etc/systemd/system/bangerd* /usr/local/bin/banger* /etc/banger/install.toml \
         /etc/udev/rules.d/10-banger.rules /run/banger /run/banger-root /run/banger/bangerd.sock \
         /run/banger-root/root.sock 2>/dev/null || true",
    );
    assert_eq!(leftovers, "", "left behind");
    let links = c.ok(None, "ip -o link show");
    assert!(!links.contains("banger"), "links left: {links}");
    let tables = c.ok(None, "nft list tables");
    assert!(!tables.contains("banger"), "nft tables left: {tables}");
    let procs = c.ok(None, &format!("ps -o pid=,comm= -u {OWNER} || true"));
    assert_eq!(procs.trim(), "", "owner processes left");
    // Data stays without --purge.
    c.ok(None, "test -d /var/lib/banger/kernels");
}
