//! The guest agent's bash script (`guest::AGENT_SCRIPT`, guest contract
//! 4) run by the host's bash on the very lines the host sends
//! (`banger_proto::guest::agent::Identity::lines`), its port a pty and
//! every command that would change a system a recording stand-in on
//! `PATH` (sshd a stand-in process with a pid file and a listener table):
//! what it installs (an empty file included), the network, hostname,
//! clock and sshd steps it takes, its answer to each request,
//! and that a malformed request applies nothing. The real guest runs it
//! in the snapshot end-to-end test (`banger-testkit`'s `vm` tests).

#![allow(clippy::disallowed_methods)] // the test drives bash itself, with a cleared environment

use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use banger_imagebuild::guest::AGENT_SCRIPT;
use banger_proto::guest::agent::Identity;
use banger_proto::vmops::GuestFile;

/// The commands the agent runs that would change a system: each records
/// its arguments; `install` also keeps what it was given to install.
const STUBS: &[&str] = &[
    "date",
    "ip",
    "networkctl",
    "hostname",
    "systemctl",
    "sync",
    "install",
];

/// A pty in raw mode: (master, path of the slave).
fn pty() -> (std::fs::File, String) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors into the two ints it is given;
    // no name buffer, termios or winsize is passed.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both are descriptors openpty just opened for this process.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    // SAFETY: `t` is a plain C struct tcgetattr fills; the descriptor is
    // the slave opened above.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(slave.as_raw_fd(), &mut t), 0);
        libc::cfmakeraw(&mut t);
        assert_eq!(libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t), 0);
    }
    let path = std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd()))
        .unwrap()
        .display()
        .to_string();
    // The slave stays open in this process until the agent opened it.
    std::mem::forget(slave);
    (std::fs::File::from(master), path)
}

struct Agent {
    child: Child,
    sshd: Child,
    port: std::fs::File,
    pending: Vec<u8>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        for c in [&mut self.child, &mut self.sshd] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Agent {
    fn start(dir: &Path) -> Agent {
        let stubs = dir.join("bin");
        std::fs::create_dir_all(&stubs).unwrap();
        for name in STUBS {
            let extra = if *name == "install" {
                // install -D -m MODE -o UID -g GID SRC DEST
                "cp \"$8\" \"$KEPT/$(echo \"$9\" | tr / _)\"\n"
            } else {
                ""
            };
            let path = stubs.join(name);
            std::fs::write(
                &path,
                format!("#!/bin/sh\necho \"{name}${{*:+ $*}}\" >>\"$LOG\"\n{extra}"),
            )
            .unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let net = dir.join("net/eth0");
        std::fs::create_dir_all(net.join("device")).unwrap();
        std::fs::write(net.join("type"), "1\n").unwrap();
        std::fs::create_dir_all(dir.join("net/lo")).unwrap();
        std::fs::write(dir.join("net/lo/type"), "772\n").unwrap();
        std::fs::create_dir_all(dir.join("kept")).unwrap();
        std::fs::create_dir_all(dir.join("run")).unwrap();
        // sshd's stand-in: its pid file, and the listener table it
        // rewrites with a new socket inode when it gets SIGHUP (as sshd
        // listens anew after re-executing itself).
        let tcp = dir.join("tcp");
        let listener = |inode: u32| {
            format!(
                "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
            )
        };
        std::fs::write(&tcp, listener(1111)).unwrap();
        std::fs::write(dir.join("new-tcp"), listener(2222)).unwrap();
        let sshd = Command::new("bash")
            .args([
                "-c",
                "trap 'cp \"$1/new-tcp\" \"$1/tcp\"; echo hup >>\"$1/sshd-log\"' HUP; \
                 echo $$ >\"$1/sshd.pid\"; while :; do sleep 0.05; done",
                "sshd",
            ])
            .arg(dir)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !dir.join("sshd.pid").exists() {
            assert!(Instant::now() < deadline, "the sshd stand-in did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        let (port, slave) = pty();
        let child = Command::new("bash")
            .args(["-c", AGENT_SCRIPT])
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", stubs.display()))
            .env("BANGER_AGENT_PORT", &slave)
            .env("BANGER_AGENT_RUN", dir.join("run"))
            .env("BANGER_AGENT_SYSNET", dir.join("net"))
            .env("BANGER_AGENT_SSHD_PID", dir.join("sshd.pid"))
            .env("BANGER_AGENT_TCP", &tcp)
            .env("LOG", dir.join("log"))
            .env("KEPT", dir.join("kept"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Agent {
            child,
            sshd,
            port,
            pending: Vec::new(),
        }
    }

    /// Send `lines`; the agent's next line.
    fn ask(&mut self, lines: &str) -> String {
        self.port.write_all(lines.as_bytes()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let fd = self.port.as_raw_fd();
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return String::from_utf8_lossy(&line).trim_end().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not answer {lines:?}"
            );
            let mut fds = [libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: one valid pollfd for the master this struct owns.
            unsafe { libc::poll(fds.as_mut_ptr(), 1, 200) };
            if fds[0].revents & libc::POLLIN != 0 {
                let mut buf = [0u8; 4096];
                let n = self.port.read(&mut buf).unwrap();
                self.pending.extend_from_slice(&buf[..n]);
            }
        }
    }
}

fn identity() -> Identity {
    let file = |path: &str, mode: u32, content: &str| GuestFile {
        path: path.into(),
        mode,
        uid: 0,
        gid: 0,
        content: content.into(),
    };
    Identity {
        files: vec![
            file("/etc/hostname", 0o644, "dev2\n"),
            file(
                "/etc/ssh/ssh_host_ed25519_key",
                0o600,
                "PRIVATE KEY\nline two\n",
            ),
            file("/etc/machine-id", 0o444, ""),
        ],
        mac: "02:ba:0a:00:00:07".into(),
        ip: "10.0.0.7".parse().unwrap(),
        prefix: 24,
        gateway: "10.0.0.1".parse().unwrap(),
        hostname: "dev2".into(),
        clock: SystemTime::UNIX_EPOCH + Duration::new(1_765_000_000, 5),
    }
}

#[test]
fn the_agent_applies_the_hosts_lines_and_refuses_a_malformed_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(dir.path());
    let log = || std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();

    // A malformed request: nothing applied, the reason named.
    let answer = agent.ask("file /etc/../x 644 0 0 eA==\napply 1f\n");
    assert!(answer.starts_with("failed 1f bad file line"), "{answer}");
    assert_eq!(log(), "", "a refused request ran something");
    // An answer is only ever for its own nonce.
    let answer = agent.ask("hostname x\napply NOTHEX\nhostname y\napply 2e\n");
    assert_eq!(answer, "applied 2e");
    assert!(
        log().contains("hostname y\n") && !log().contains("hostname x"),
        "{}",
        log()
    );
    // No host key in it: sshd keeps running as it is.
    assert!(!log().contains("systemctl"), "{}", log());

    std::fs::write(dir.path().join("log"), "").unwrap();
    let answer = agent.ask(&identity().lines("ab12").unwrap());
    assert_eq!(answer, "applied ab12");
    let log = log();
    for want in [
        "date -s @1765000000.000000005\n",
        "install -D -m 644 -o 0 -g 0 ",
        "sync\n",
        "ip link set dev eth0 address 02:ba:0a:00:00:07\n",
        "ip -4 addr flush dev eth0\n",
        "ip addr add 10.0.0.7/24 dev eth0\n",
        "ip route replace default via 10.0.0.1 dev eth0\n",
        "networkctl reload\n",
        "hostname dev2\n",
    ] {
        assert!(log.contains(want), "no {want:?} in:\n{log}");
    }
    // The clock first; sshd got SIGHUP (no restart through systemd) and
    // the answer came once it listened anew.
    assert!(log.starts_with("date "), "{log}");
    assert!(!log.contains("systemctl"), "{log}");
    let hups = std::fs::read_to_string(dir.path().join("sshd-log")).unwrap_or_default();
    assert_eq!(hups, "hup\n");
    assert!(
        std::fs::read_to_string(dir.path().join("tcp"))
            .unwrap()
            .contains(" 2222 ")
    );
    let kept = |dest: &str| {
        std::fs::read_to_string(dir.path().join("kept").join(dest.replace('/', "_"))).unwrap()
    };
    assert_eq!(kept("/etc/hostname"), "dev2\n");
    assert_eq!(
        kept("/etc/ssh/ssh_host_ed25519_key"),
        "PRIVATE KEY\nline two\n"
    );
    assert_eq!(kept("/etc/machine-id"), "");
    assert!(log.contains("install -D -m 600 -o 0 -g 0 "), "{log}");
}
