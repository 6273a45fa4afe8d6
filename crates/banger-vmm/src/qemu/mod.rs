//! QEMU driver: Debian's `qemu-system-x86_64`, `-M q35` with virtio-pci
//! block and net devices (LAB.md: `-M microvm` did not find its virtio-mmio
//! disk with the Debian kernel), KVM when the caller says it is usable and TCG
//! otherwise, the serial console to a file, and QMP on a Unix socket for
//! status and graceful power-down.

mod qmp;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use banger_host::runner::{Cmd, Runner, SpawnOptions, Spawned};

pub use qmp::{Qmp, QmpError};

use crate::dir::{OwnerDir, Peer};
use crate::{LaunchSpec, QMP_SOCKET, VmmError};

const VMM: &str = "qemu";

/// The `-sandbox` value: every optional group of QEMU's filter denied.
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// How long QEMU gets to open its QMP socket after it is spawned.
const QMP_APPEAR_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct QemuDriver {
    /// `qemu-system-x86_64`, or a path.
    pub binary: PathBuf,
}

impl Default for QemuDriver {
    fn default() -> Self {
        QemuDriver {
            binary: PathBuf::from("qemu-system-x86_64"),
        }
    }
}

impl QemuDriver {
    /// The complete argument vector (without the program) for `spec`.
    pub fn argv(&self, spec: &LaunchSpec) -> Vec<OsString> {
        let id = short(&spec.vm_id);
        let (accel, cpu) = if spec.kvm {
            ("kvm", "host")
        } else {
            ("tcg", "max")
        };
        let mut a: Vec<OsString> = [
            "-name".to_string(),
            format!("banger-{id},process=banger-{id}"),
            "-M".into(),
            "q35".into(),
            "-accel".into(),
            accel.into(),
            "-cpu".into(),
            cpu.into(),
            "-smp".into(),
            spec.vcpus.to_string(),
            "-m".into(),
            format!("{}M", spec.memory_mib),
            // Nothing QEMU would add by itself (VGA, default NIC, monitor).
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            // A guest reboot ends the process too, so `restart` is always
            // banger's decision.
            "-no-reboot".into(),
            // QEMU's own seccomp filter (no_new_privs, then filter mode)
            // before the guest runs: no execve/fork, no setuid-style
            // privilege changes, no scheduler/affinity changes, no
            // obsolete system calls. Needs QEMU built with libseccomp.
            "-sandbox".into(),
            SANDBOX.into(),
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        // Appended, so the log keeps earlier boots; readers track the
        // offset at which this boot began.
        a.push("-chardev".into());
        a.push(cat2(
            "file,id=serial0,append=on,path=",
            qemu_escape(&spec.serial_log),
            "",
        ));
        a.push("-serial".into());
        a.push("chardev:serial0".into());
        a.push("-qmp".into());
        a.push(cat2("unix:", spec.qmp_socket(), ",server=on,wait=off"));
        a.push("-kernel".into());
        a.push(spec.kernel.clone().into());
        if let Some(initrd) = &spec.initrd {
            a.push("-initrd".into());
            a.push(initrd.clone().into());
        }
        a.push("-append".into());
        a.push(spec.cmdline.clone().into());
        for d in &spec.drives {
            a.push("-drive".into());
            let mut v = OsString::from("file=");
            v.push(qemu_escape(&d.path));
            v.push(format!(
                ",if=none,id={},format=raw,cache=writeback,discard=unmap{}",
                d.id,
                if d.read_only { ",readonly=on" } else { "" }
            ));
            a.push(v);
            a.push("-device".into());
            a.push(format!("virtio-blk-pci,drive={}", d.id).into());
        }
        a.push("-netdev".into());
        a.push(format!("tap,id=net0,ifname={},script=no,downscript=no", spec.tap).into());
        a.push("-device".into());
        a.push(format!("virtio-net-pci,netdev=net0,mac={}", spec.mac).into());
        // Guest entropy early in boot (sshd, systemd).
        a.push("-device".into());
        a.push("virtio-rng-pci".into());
        a
    }

    /// Spawn QEMU for `spec` and wait until its QMP socket answers. QEMU's
    /// own stdout/stderr go to `vmm_log`. `run` is the caller's descriptor
    /// of `spec.run_dir`: QMP is reached through it only, and only when
    /// served by the spawned process. On failure nothing is left running.
    pub fn launch(
        &self,
        spec: &LaunchSpec,
        vmm_log: std::fs::File,
        run: OwnerDir,
    ) -> Result<QemuVm, VmmError> {
        let program = banger_host::runner::resolve(self.binary.as_os_str()).ok_or_else(|| {
            VmmError::BinaryMissing {
                vmm: VMM,
                path: self.binary.display().to_string(),
            }
        })?;
        let cmd = Cmd::new(&program).args(self.argv(spec));
        let child = Runner
            .spawn(
                &cmd,
                SpawnOptions {
                    output: Some(vmm_log),
                    run_as: spec.run_as,
                },
            )
            .map_err(|e| VmmError::Spawn {
                vmm: VMM,
                source: std::io::Error::other(banger_proto_free_chain(&e)),
            })?;
        let mut vm = QemuVm {
            peer: Peer {
                uid: spec.vmm_uid(),
                pid: child.pid(),
            },
            child,
            run,
        };
        let deadline = Instant::now() + QMP_APPEAR_TIMEOUT;
        loop {
            if let Some(status) = vm.child.try_wait().map_err(|source| VmmError::Io {
                what: "waiting for qemu".into(),
                source,
            })? {
                return Err(VmmError::EarlyExit {
                    vmm: VMM,
                    status: status.to_string(),
                    tail: String::new(),
                });
            }
            match vm.qmp() {
                Ok(_) => return Ok(vm),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => {
                    let _ = vm.child.kill();
                    return Err(VmmError::Api {
                        vmm: VMM,
                        what: format!(
                            "QMP socket {} never answered: {}",
                            vm.run.join(QMP_SOCKET).display(),
                            banger_proto_free_chain(&e)
                        ),
                    });
                }
            }
        }
    }
}

/// A running QEMU process the caller owns.
#[derive(Debug)]
pub struct QemuVm {
    child: Spawned,
    /// `run_dir`, where QEMU serves QMP.
    run: OwnerDir,
    /// QEMU itself, as it must be serving QMP.
    peer: Peer,
}

impl QemuVm {
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// A QMP session with this QEMU.
    pub fn qmp(&self) -> Result<Qmp, QmpError> {
        Qmp::connect(&self.run, self.peer, Duration::from_secs(2))
    }

    /// Whether the process still runs (reaps it if not).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Ask the guest to power off (ACPI) and wait up to `timeout`; then kill.
    /// Returns true when the guest shut down by itself.
    pub fn shutdown(&mut self, timeout: Duration) -> Result<bool, VmmError> {
        if !self.running() {
            return Ok(true);
        }
        if let Ok(mut q) = self.qmp() {
            let _ = q.execute("system_powerdown");
        }
        let exited = self
            .child
            .wait_timeout(timeout)
            .map_err(|source| VmmError::Io {
                what: "waiting for qemu to power off".into(),
                source,
            })?;
        if exited.is_some() {
            return Ok(true);
        }
        self.kill()?;
        Ok(false)
    }

    /// SIGKILL through the pidfd and reap.
    pub fn kill(&mut self) -> Result<(), VmmError> {
        self.child.kill().map_err(|source| VmmError::Io {
            what: "killing qemu".into(),
            source,
        })?;
        Ok(())
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

fn cat(prefix: &str, p: &std::path::Path) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(p);
    s
}

fn cat2(prefix: &str, p: impl AsRef<std::path::Path>, suffix: &str) -> OsString {
    let p = p.as_ref();
    let mut s = cat(prefix, p);
    s.push(suffix);
    s
}

/// QEMU option values separate with `,`; a literal comma is written `,,`.
fn qemu_escape(p: &std::path::Path) -> OsString {
    use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
    let mut out = Vec::new();
    for &b in p.as_os_str().as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

fn banger_proto_free_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests;
