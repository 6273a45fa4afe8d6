//! The bench's baseline: the same guest booted by a hand-written QEMU
//! command line (banger's argv, its descriptors named as paths), on a tap
//! of its own in the bench's namespace.

use super::*;

/// A tap owned by root on banger's bridge, deleted on drop.
struct Tap<'a> {
    ns: &'a NetNs,
    name: &'static str,
}

impl<'a> Tap<'a> {
    fn new(ns: &'a NetNs, name: &'static str, bridge: &str) -> Tap<'a> {
        let t = Tap { ns, name };
        for args in [
            vec!["tuntap", "add", name, "mode", "tap"],
            vec!["link", "set", name, "master", bridge],
            vec!["link", "set", name, "up"],
        ] {
            run_ok(
                Command::new("ip").args(["-n", &ns.name]).args(&args),
                "ip (tap)",
            );
        }
        t
    }
}

impl Drop for Tap<'_> {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["-n", &self.ns.name, "link", "del", self.name])
            .stderr(Stdio::null())
            .status();
    }
}

pub(super) struct HandRun {
    pub(super) to_exec: Duration,
    pub(super) to_qmp: Duration,
    pub(super) marker_seen: Duration,
    pub(super) ssh_ready: Duration,
}

/// banger's QEMU argv with this run's name, serial log, QMP socket, disk
/// copies, tap and MAC substituted.
/// banger's QEMU argv as a hand-written, path-based one for the baseline:
/// a jailed QEMU gets its console, drives, tap and QMP socket as
/// descriptors (`-add-fd`, `/dev/fdset/N`, `fd=`) and its kernel at the
/// jail's `/kernel`; the baseline names the same files by path instead
/// (`dir`: its copies of the disks; `kernel`/`initrd`: banger's files).
fn hand_argv(
    banger: &[String],
    dir: &Path,
    kernel: &Path,
    initrd: Option<&Path>,
    tap: &str,
    mac: &str,
) -> Vec<String> {
    use banger_proto::layout::{ROOT_DISK, WORK_DISK};
    let dir_s = dir.display().to_string();
    let mut out = Vec::new();
    let mut prev = "";
    for a in banger.iter().skip(1) {
        if a == "-add-fd" {
            prev = a;
            continue;
        }
        let v = match prev {
            "-add-fd" => {
                prev = "";
                continue;
            }
            "-name" => "bbench,process=bbench".to_string(),
            "-chardev" if a.starts_with("file,") => {
                format!("file,id=serial0,append=on,path={dir_s}/serial.log")
            }
            // QMP's and the guest agent's: each a socket of its own name.
            "-chardev" if a.starts_with("socket,") => {
                let id = a
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("id="))
                    .unwrap_or("qmp");
                format!("socket,id={id},path={dir_s}/{id}.sock,server=on,wait=off")
            }
            "-kernel" => kernel.display().to_string(),
            "-initrd" => initrd
                .expect("banger's QEMU has an initrd")
                .display()
                .to_string(),
            "-drive" => {
                let file = if a.contains("id=root,") {
                    ROOT_DISK
                } else {
                    WORK_DISK
                };
                let rest = a.split_once(',').map_or("", |(_, r)| r);
                format!("file={dir_s}/{file},{rest}")
            }
            "-netdev" => format!("tap,id=net0,ifname={tap},script=no,downscript=no"),
            "-device" if a.starts_with("virtio-net-pci") => {
                format!("virtio-net-pci,netdev=net0,mac={mac}")
            }
            _ => a.clone(),
        };
        prev = a;
        out.push(v);
    }
    out
}

fn qmp_answers(sock: &Path) -> bool {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 64];
    s.read(&mut buf)
        .is_ok_and(|n| buf[..n].starts_with(b"{\"QMP\""))
}

pub(super) fn hand_run(ns: &NetNs, d: &Daemon, banger_argv: &[String], name: &str) -> HandRun {
    // A VM created but not started: banger prepared its disks (network
    // config, host keys, the owner's key) and leased its address.
    let v = d.json(
        ns,
        &[
            "vm",
            "create",
            name,
            "--no-start",
            "--wait",
            "--vcpus",
            "1",
            "--memory",
            "512",
            "--disk",
            "256M",
        ],
    );
    let v = if v["vm"].is_object() { &v["vm"] } else { &v };
    let (id, ip, mac) = (
        v["id"].as_str().expect("id").to_string(),
        v["ip"].as_str().expect("ip").to_string(),
        v["mac"].as_str().expect("mac").to_string(),
    );
    use banger_proto::layout::{ROOT_DISK, VMS_DIR, WORK_DISK};
    let vm_dir = d.state().join(VMS_DIR).join(&id);
    let work = shared_tempdir();
    for f in [ROOT_DISK, WORK_DISK] {
        run_ok(
            Command::new("cp")
                .arg("--sparse=always")
                .arg(vm_dir.join(f))
                .arg(work.path().join(f)),
            "cp (disk copy)",
        );
    }
    // banger's kernel and initrd (the bench imports one kernel).
    // The directory that holds a kernel (not whatever read_dir lists
    // first: the kernels directory may hold other entries).
    let kernel_dir = std::fs::read_dir(d.state().join(banger_proto::layout::KERNELS_DIR))
        .expect("the state's kernels")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join(banger_proto::layout::KERNEL).is_file())
        .expect("an imported kernel");
    let initrd = std::fs::read_dir(d.state().join(banger_proto::layout::IMAGES_DIR))
        .expect("the state's images")
        .flatten()
        .map(|e| e.path().join(banger_proto::layout::INITRD))
        .chain([kernel_dir.join(banger_proto::layout::INITRD)])
        .find(|p| p.exists());
    let argv = hand_argv(
        banger_argv,
        work.path(),
        &kernel_dir.join(banger_proto::layout::KERNEL),
        initrd.as_deref(),
        "bbench0",
        &mac,
    );
    let _tap = Tap::new(ns, "bbench0", "banger0");
    let key = d.dir.join(".config/banger/ssh/id_ed25519");
    let known = d.state().join("ssh").join("known_hosts");
    let (serial, qmp) = (work.path().join("serial.log"), work.path().join("qmp.sock"));

    let t0 = Instant::now();
    let mut cmd = ns.exec("qemu-system-x86_64");
    cmd.args(&argv);
    let qemu = Proc::spawn("qemu (hand-written)", cmd);
    let pid = qemu.pid();
    while !is_qemu(&cmdline(pid)) {
        std::thread::sleep(Duration::from_micros(200));
    }
    let to_exec = t0.elapsed();
    while !qmp_answers(&qmp) {
        assert!(t0.elapsed() < Duration::from_secs(30), "QMP never answered");
        std::thread::sleep(POLL);
    }
    let to_qmp = t0.elapsed();
    let stop = Arc::new(AtomicBool::new(false));
    let marker = Arc::new(Mutex::new(None));
    {
        let (stop, marker, serial) = (Arc::clone(&stop), Arc::clone(&marker), serial.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if marker_in(&serial) {
                    *marker.lock().unwrap() = Some(t0.elapsed());
                    return;
                }
                std::thread::sleep(POLL);
            }
        });
    }
    loop {
        let ok = ns
            .exec("ssh")
            .arg("-i")
            .arg(&key)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known.display()))
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
            .args(["-o", "ConnectTimeout=10", "-o"])
            .arg(format!("HostKeyAlias={name}.vm"))
            .arg(format!("banger@{ip}"))
            .arg("true")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "ssh into the hand-run guest; serial tail: {}",
            String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ssh_ready = t0.elapsed();
    // sshd may answer before the guest's ready unit writes the marker.
    let wait = Instant::now();
    while marker.lock().unwrap().is_none() && wait.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    drop(qemu); // SIGTERM by the handle held here, then reaped
    d.ok(ns, &["vm", "rm", name]);
    let marker_seen = marker.lock().unwrap().unwrap_or_default();
    HandRun {
        to_exec,
        to_qmp,
        marker_seen,
        ssh_ready,
    }
}
