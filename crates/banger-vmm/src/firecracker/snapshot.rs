//! Snapshots with Firecracker (issue #15 item 1).
//!
//! * Save: `PUT /snapshot/create` of the paused guest, a full snapshot,
//!   into its own `run/` (the only directory a jailed Firecracker can
//!   write: [`paths::SAVED_STATE`], [`paths::SAVED_MEMORY`]). Root reads
//!   each file back through its descriptor of `run/` — a regular file of
//!   the VMM's uid with one link, reached without following a link,
//!   never a name looked up again — copies it into its own descriptor of
//!   the snapshot's file, and removes both names whatever happened.
//! * Restore: a Firecracker configured with a logger only loads the
//!   snapshot's state and memory (bound read-only in its jail,
//!   [`paths::RESTORE_STATE`], [`paths::RESTORE_MEMORY`]) with `PUT
//!   /snapshot/load`, paused and on the launch's tap; the guest is resumed
//!   and its agent, reached over vsock ([`AGENT_VSOCK_PORT`]), applies the
//!   new VM's identity before the launch returns (`crate::agent`).
//!
//! Drives come back at the paths they were saved with: every jail binds
//! drive `id` at `/drive-<id>` and `run/` at `/run`, so a restore names
//! them again without an override.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::models::snapshot_create;
use super::paths;
use super::{ApiClient, FirecrackerVm, VMM};
use crate::VmmError;
use crate::driver::SaveTo;

pub use banger_proto::guest::AGENT_VSOCK_PORT;

/// The saved state and memory a restore loads, root's checked read-only
/// descriptors of the snapshot's files: bound read-only in the jail
/// (the caller grants the VM's slot uid read access for the launch:
/// Firecracker opens both at `PUT /snapshot/load`).
#[derive(Debug)]
pub struct RestoreFiles {
    pub state: File,
    pub memory: File,
}

/// What a restoring launch does once the snapshot is loaded: the identity
/// the guest agent applies, the nonce its answer must carry, and how long
/// it gets.
#[derive(Debug)]
pub struct Incoming {
    pub identity: crate::agent::Identity,
    pub nonce: String,
    pub agent_timeout: Duration,
}

/// How long a line of the vsock handshake (`OK <port>`) may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest handshake answer read (`OK ` and a port number).
const MAX_HANDSHAKE: usize = 32;

impl ApiClient {
    /// Save the paused guest into `to` (see the module docs), `saved`
    /// being Firecracker's paths of the two files in `run/`, within
    /// `timeout`: the bytes copied. Firecracker refuses a guest that is
    /// not paused, in its own words.
    pub fn save_snapshot(
        &self,
        saved: (&str, &str),
        to: SaveTo<'_>,
        timeout: Duration,
    ) -> Result<u64, VmmError> {
        let snap = |what: String| VmmError::Snapshot { vmm: VMM, what };
        let state_to = to.state.ok_or_else(|| {
            snap("Firecracker saves its device state apart; no file was given for it".into())
        })?;
        let deadline = Instant::now() + timeout;
        // The memory file is exactly the guest's memory: asked of this
        // Firecracker (a launch by an older helper, or a restore, knows its
        // own), and it must fit under its `RLIMIT_FSIZE`, or the write
        // would end it with SIGXFSZ half-way.
        // The size is what the (possibly escaped) Firecracker says, bounded
        // by the address-space limit root gave its jail (guest memory plus
        // overhead; the jailed process can only lower it).
        let memory = self.memory_bytes()?;
        let pid = self.peer().pid;
        let space = limit_of(pid, "Max address space", Column::Hard)?;
        if space.is_some_and(|l| memory > l) {
            return Err(snap(format!(
                "it reports {memory} bytes of memory, more than its address space limit"
            )));
        }
        let limit = limit_of(pid, "Max file size", Column::Soft)?;
        if limit.is_some_and(|l| l < memory) {
            return Err(snap(format!(
                "its file size limit ({} bytes) is below its memory ({memory} bytes): it was \
                 launched by an older helper; stop and start the VM to snapshot it",
                limit.unwrap_or_default()
            )));
        }
        let run = self.run_dir();
        let names = [paths::SAVED_STATE, paths::SAVED_MEMORY];
        // Leftovers of a save cut short: Firecracker would write over
        // them, but the checks below must see only what it wrote now.
        remove_saved(run, &names);
        let left = deadline.saturating_duration_since(Instant::now());
        let made = self.send_within(&snapshot_create(saved.0, saved.1), left);
        let copied = made.and_then(|_| {
            let uid = self.peer().uid;
            let state = copy_out(
                run,
                paths::SAVED_STATE,
                uid,
                state_to,
                Size::AtMost(MAX_VMSTATE),
                deadline,
            )?;
            let memory = copy_out(
                run,
                paths::SAVED_MEMORY,
                uid,
                to.memory,
                Size::Exactly(memory),
                deadline,
            )?;
            Ok(state + memory)
        });
        remove_saved(run, &names);
        copied
    }

    /// The guest's memory in bytes, as this Firecracker reports it (`GET
    /// /machine-config`).
    fn memory_bytes(&self) -> Result<u64, VmmError> {
        #[derive(serde::Deserialize)]
        struct Machine {
            mem_size_mib: u64,
        }
        let resp = self.send(&super::ApiRequest::get("/machine-config"))?;
        let m: Machine = serde_json::from_slice(&resp.body).map_err(|e| VmmError::Api {
            vmm: VMM,
            what: format!(
                "GET /machine-config answered {:?}: {}",
                crate::quoted(&String::from_utf8_lossy(&resp.body)),
                crate::quoted(&e.to_string())
            ),
        })?;
        m.mem_size_mib
            .checked_mul(1 << 20)
            .ok_or_else(|| VmmError::Api {
                vmm: VMM,
                what: format!("GET /machine-config: {} MiB of memory", m.mem_size_mib),
            })
    }

    /// Connect to the guest's vsock port `port` through Firecracker's
    /// host-side socket (`run/vsock.sock`, served by this Firecracker:
    /// `SO_PEERCRED`): `CONNECT <port>`, answered `OK <host port>` once
    /// a listener in the guest accepted, within [`HANDSHAKE_TIMEOUT`].
    /// The stream is blocking afterwards.
    pub fn connect_guest(&self, port: u32) -> Result<UnixStream, VmmError> {
        let err = |what: String| VmmError::Agent {
            vmm: VMM,
            what: format!("vsock port {port}: {what}"),
        };
        let run = self.run_dir();
        let mut s = run
            .connect(crate::VSOCK_SOCKET, self.peer())
            .and_then(|s| s.set_nonblocking(false).map(|()| s))
            .and_then(|s| {
                s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
                    .and_then(|()| s.set_write_timeout(Some(HANDSHAKE_TIMEOUT)))
                    .map(|()| s)
            })
            .map_err(|e| {
                err(format!(
                    "connecting to {}: {e}",
                    run.join(crate::VSOCK_SOCKET).display()
                ))
            })?;
        s.write_all(format!("CONNECT {port}\n").as_bytes())
            .map_err(|e| err(format!("sending CONNECT: {e}")))?;
        // Byte by byte up to the newline: what follows is the agent's.
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            match s.read(&mut byte) {
                Ok(0) => {
                    return Err(err(
                        "Firecracker closed the connection: no listener in the guest (banger's \
                         images do not serve the agent over vsock yet: docs/guest.md)"
                            .into(),
                    ));
                }
                Ok(_) if byte[0] == b'\n' => break,
                Ok(_) if line.len() < MAX_HANDSHAKE => line.push(byte[0]),
                Ok(_) => return Err(err("an answer longer than a handshake".into())),
                Err(e) if crate::timed_out(&e) => {
                    return Err(err(format!(
                        "no OK within {} s: no listener in the guest answered (is the guest \
                         running? banger's images do not serve the agent over vsock yet: \
                         docs/guest.md)",
                        HANDSHAKE_TIMEOUT.as_secs()
                    )));
                }
                Err(e) => return Err(err(format!("waiting for OK: {e}"))),
            }
        }
        if !line.starts_with(b"OK ") {
            return Err(err(format!(
                "answered {:?}, not OK",
                crate::quoted(&String::from_utf8_lossy(&line))
            )));
        }
        s.set_read_timeout(None)
            .and_then(|()| s.set_write_timeout(None))
            .map_err(|e| err(e.to_string()))?;
        Ok(s)
    }
}

impl FirecrackerVm {
    /// [`ApiClient::save_snapshot`] into this VM's `run/`.
    pub fn save_state(&mut self, to: SaveTo<'_>, timeout: Duration) -> Result<u64, VmmError> {
        if self.exited()?.is_some() {
            return Err(VmmError::NotRunning {
                vmm: VMM,
                pid: self.pid(),
                what: "snapshot",
            });
        }
        let saved = (
            self.paths.saved_state.clone(),
            self.paths.saved_memory.clone(),
        );
        self.api.save_snapshot((&saved.0, &saved.1), to, timeout)
    }

    /// After `PUT /snapshot/load` (the guest paused): resume it, have its
    /// agent apply `incoming`'s identity over vsock, with the clock set to
    /// now.
    pub(super) fn finish_restore(&mut self, incoming: Incoming) -> Result<(), VmmError> {
        let began = Instant::now();
        self.set_vcpus(crate::driver::Vcpus::Running)?;
        let mut stream = self.api.connect_guest(AGENT_VSOCK_PORT)?;
        crate::agent::apply_now(
            VMM,
            &mut stream,
            incoming.identity,
            &incoming.nonce,
            incoming.agent_timeout,
        )?;
        tracing::info!(
            pid = self.pid(),
            agent_ms = began.elapsed().as_millis() as u64,
            "snapshot restored"
        );
        Ok(())
    }
}

/// The most bytes of device state a save takes (a 1-vCPU guest's is
/// about 14 KiB).
const MAX_VMSTATE: u64 = 64 << 20;
/// The most bytes copied between two looks at the deadline and at the
/// room left.
const CHUNK: u64 = 16 << 20;

/// How long a saved file must be.
#[derive(Debug, Clone, Copy)]
enum Size {
    Exactly(u64),
    AtMost(u64),
}

/// Copy `run/<name>` (a regular file of `uid`'s with one link, of the
/// length `size` asks) into `to` by `deadline`, holes left holes, and
/// only when the file system of `to` has room for it that any user could
/// use (root's reserved blocks are not the owner's): the bytes copied.
fn copy_out(
    run: &crate::dir::OwnerDir,
    name: &str,
    uid: u32,
    to: BorrowedFd<'_>,
    size: Size,
    deadline: Instant,
) -> Result<u64, VmmError> {
    let path = run.join(name);
    let snap = |what: String| VmmError::Snapshot {
        vmm: VMM,
        what: format!("{}: {what}", path.display()),
    };
    let io = |e: std::io::Error| VmmError::Io {
        what: format!("copying {} into the snapshot", path.display()),
        source: e,
    };
    let src = run.open_read(name, Some((uid, uid)))?;
    let st = rustix::fs::fstat(&src).map_err(|e| io(e.into()))?;
    let len = u64::try_from(st.st_size).unwrap_or(0);
    match size {
        Size::Exactly(want) if len != want => {
            return Err(snap(format!("{len} bytes, not the guest's {want}")));
        }
        Size::AtMost(max) if len > max => {
            return Err(snap(format!("{len} bytes, more than {max}")));
        }
        _ => {}
    }
    let used = u64::try_from(st.st_blocks)
        .unwrap_or(u64::MAX)
        .saturating_mul(512);
    // Room any user could use (root's reserved blocks are not the
    // owner's) for what is left to copy: before the copy, and again
    // before each chunk (the file's holes can change under it).
    let room_for = |bytes: u64| -> Result<(), VmmError> {
        let vfs = rustix::fs::fstatvfs(to).map_err(|e| io(e.into()))?;
        let room = vfs.f_bavail.saturating_mul(vfs.f_frsize);
        if room < bytes {
            return Err(snap(format!(
                "{bytes} bytes to copy, {room} free for users where the snapshot is"
            )));
        }
        Ok(())
    };
    room_for(used.min(len))?;
    let late = || snap("not copied by the save's deadline (the state file system is slow)".into());
    let mut off = 0u64;
    while off < len {
        if Instant::now() >= deadline {
            return Err(late());
        }
        let data = match rustix::fs::seek(&src, rustix::fs::SeekFrom::Data(off)) {
            Ok(d) => d,
            // Nothing but a hole from `off` on.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(io(e.into())),
        };
        let hole = rustix::fs::seek(&src, rustix::fs::SeekFrom::Hole(data))
            .map_err(|e| io(e.into()))?
            .min(len);
        let end = hole.min(data.saturating_add(CHUNK));
        room_for(end.saturating_sub(data))?;
        let (mut from, mut at) = (data, data);
        while from < end {
            if Instant::now() >= deadline {
                return Err(late());
            }
            let n = usize::try_from(end - from).unwrap_or(usize::MAX);
            match rustix::fs::copy_file_range(&src, Some(&mut from), to, Some(&mut at), n) {
                Ok(0) => return Err(snap("it shrank while being copied".into())),
                Ok(_) => {}
                Err(e) => return Err(io(e.into())),
            }
        }
        off = end;
    }
    rustix::fs::ftruncate(to, len).map_err(|e| io(e.into()))?;
    Ok(len)
}

/// Which column of `/proc/<pid>/limits`.
#[derive(Debug, Clone, Copy)]
enum Column {
    Soft,
    Hard,
}

/// The limit `name` ("Max file size", "Max address space") of process
/// `pid` from `/proc/<pid>/limits`, in its unit (bytes for these two),
/// `None` when unlimited.
fn limit_of(pid: u32, name: &str, column: Column) -> Result<Option<u64>, VmmError> {
    let path = format!("/proc/{pid}/limits");
    let text = std::fs::read_to_string(&path).map_err(|source| VmmError::Io {
        what: format!("reading {path}"),
        source,
    })?;
    let mut values = text
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|rest| rest.split_whitespace())
        .into_iter()
        .flatten();
    let value = match column {
        Column::Soft => values.next(),
        Column::Hard => values.nth(1),
    };
    match value {
        Some("unlimited") => Ok(None),
        Some(n) => n.parse().map(Some).map_err(|_| VmmError::Snapshot {
            vmm: VMM,
            what: format!("{path}: {name} {:?}", crate::quoted(n)),
        }),
        None => Err(VmmError::Snapshot {
            vmm: VMM,
            what: format!("{path} gives no {name:?}"),
        }),
    }
}

/// Remove what a save leaves in `run/` (missing is fine).
fn remove_saved(run: &crate::dir::OwnerDir, names: &[&str]) {
    for name in names {
        match rustix::fs::unlinkat(run, *name, rustix::fs::AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => {
                tracing::warn!(path = %run.join(name).display(), error = %e, "removing a saved snapshot file from run/");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's own limits parse, in both columns, as the kernel
    /// words them; a limit it does not list is an error.
    #[test]
    fn proc_limits_parse_in_both_columns() {
        let me = std::process::id();
        for name in ["Max file size", "Max address space"] {
            for column in [Column::Soft, Column::Hard] {
                limit_of(me, name, column).unwrap();
            }
        }
        assert!(limit_of(me, "Max nothing", Column::Soft).is_err());
    }
}
