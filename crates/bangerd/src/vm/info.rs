//! Read-only views of VMs: ls/show, ssh target, console logs, ports, stats.

use crate::ssh_masters::SshMasters;
use banger_proto::privops::VmmStatus;
use std::sync::Arc;
use std::time::Duration;

use banger_host::runner::{Cmd, Runner};

use banger_proto::vm::{GuestPort, SshTarget, VmInfo, VmLogs, VmPorts, VmStats};
use banger_proto::{ErrorCode, RpcError};

use super::{GUEST_USER, VmService, internal, store_err};
use crate::store::{VmRow, VmState};

impl VmService {
    pub(super) fn info(&self, vm: &VmRow) -> VmInfo {
        let lease = self.store.get_lease(&vm.id).ok().flatten();
        let image = self
            .store
            .get_image(&vm.image_id)
            .ok()
            .flatten()
            .map_or_else(|| vm.image_id.clone(), |i| i.name);
        // Both from memory, for every VM of a `vm ls`: the tap HostNetwork
        // assigned, and the VMM's pid as the executor last reported it
        // (`handles_cache`), while the VM runs. No file, no privileged call.
        let tap = self.network.tap_of(&vm.id);
        let pid = self.vmms.pid(&vm.id).filter(|_| vm.state.vmm_may_run());
        VmInfo {
            id: vm.id.clone(),
            name: vm.name.clone(),
            state: vm.state,
            state_reason: vm.state_reason.clone(),
            image,
            vmm: vm.vmm,
            vcpus: vm.vcpus,
            memory_mib: vm.memory_mib,
            disk_bytes: vm.disk_bytes,
            nat: vm.nat,
            ip: lease.as_ref().map(|l| l.ip),
            mac: lease.map(|l| l.mac),
            dns_name: format!("{}.vm", vm.name),
            tap,
            pid,
            saved: vm.state == VmState::Stopped
                && self.store.saved_state(&vm.id).ok().flatten().is_some(),
            created_at: vm.created_at,
            updated_at: vm.updated_at,
        }
    }

    pub(super) fn list(&self) -> Result<Vec<VmInfo>, RpcError> {
        let rows = self.store.list_vms().map_err(store_err)?;
        let pooled: std::collections::HashSet<String> = self
            .store
            .pool_vms()
            .map_err(store_err)?
            .into_iter()
            .map(|p| p.vm_id)
            .collect();
        Ok(rows
            .iter()
            .filter(|r| !pooled.contains(&r.id))
            .map(|r| self.info(r))
            .collect())
    }

    pub(super) fn show(&self, name: &str) -> Result<VmInfo, RpcError> {
        Ok(self.info(&self.vm_by_name(name)?))
    }

    pub(super) fn ssh_target(&self, name: &str) -> Result<SshTarget, RpcError> {
        let vm = self.vm_by_name(name)?;
        if vm.state != VmState::Running {
            return Err(not_running(name, vm.state));
        }
        let lease = self
            .store
            .get_lease(&vm.id)
            .map_err(store_err)?
            .ok_or_else(|| internal(format!("VM {name} has no lease")))?;
        Ok(SshTarget {
            name: vm.name.clone(),
            ip: lease.ip,
            user: GUEST_USER.to_string(),
            identity: crate::identity::identity(&self.layout)
                .display()
                .to_string(),
            known_hosts: self.layout.known_hosts.display().to_string(),
            host_key_alias: format!("{}.vm", vm.name),
            control_path: self
                .vmms
                .pid(&vm.id)
                .and_then(|pid| self.ssh.path(&vm.id, pid))
                .map(|p| p.display().to_string()),
        })
    }

    /// End the SSH masters that are not the current one of a running or
    /// paused VM (`crate::ssh_masters`): after every lifecycle change,
    /// whatever it stopped, restarted or removed.
    pub(super) fn sweep_ssh_masters(&self) {
        let Ok(vms) = self.store.list_vms() else {
            return;
        };
        let (mut live, mut unknown) = (Vec::new(), Vec::new());
        for v in vms
            .into_iter()
            .filter(|v| matches!(v.state, VmState::Running | VmState::Paused))
        {
            match self.vmms.pid(&v.id) {
                Some(pid) => live.push((v.id, pid)),
                None => unknown.push(v.id),
            }
        }
        self.ssh.sweep(
            &SshMasters::live(live.iter().map(|(id, pid)| (id.as_str(), *pid))),
            &SshMasters::unknown(unknown.iter().map(String::as_str)),
        );
    }

    /// End every SSH master (daemon shutdown).
    pub fn close_ssh_masters(&self) {
        self.ssh.close_all();
    }

    pub(super) fn logs(&self, name: &str, lines: u32) -> Result<VmLogs, RpcError> {
        let vm = self.vm_by_name(name)?;
        let path = self.vm_dir(&vm.id).join(banger_proto::layout::SERIAL_LOG);
        let text = match std::fs::read(&path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(internal(format!("reading {}: {e}", path.display()))),
        };
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines as usize);
        let mut text = all[start..].join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        Ok(VmLogs {
            name: vm.name,
            path: path.display().to_string(),
            text,
        })
    }

    /// Run a command in the guest over SSH (daemon side, strict host keys).
    pub(super) async fn guest_exec(&self, name: &str, command: &str) -> Result<String, RpcError> {
        let t = self.ssh_target(name)?;
        let cmd = Cmd::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", t.known_hosts))
            .arg("-o")
            .arg(format!("HostKeyAlias={}", t.host_key_alias))
            .args(["-o", "ConnectTimeout=10", "-i"])
            .arg(&t.identity)
            .arg(format!("{}@{}", t.user, t.ip))
            .arg(command)
            .timeout(Duration::from_secs(60));
        let out = tokio::task::spawn_blocking(move || Runner.run(&cmd))
            .await
            .map_err(|e| internal(format!("ssh task: {e}")))?
            .map_err(|e| {
                RpcError::from_error(ErrorCode::Unavailable, &e)
                    .context(format!("running a command in VM {name}"))
            })?;
        Ok(out.stdout)
    }

    pub(super) async fn ports(self: &Arc<Self>, name: &str) -> Result<VmPorts, RpcError> {
        let out = self.guest_exec(name, "sudo -n ss -H -tulnp").await?;
        Ok(VmPorts {
            name: name.to_string(),
            ports: parse_ss(name, &out),
        })
    }

    pub(super) async fn stats(self: &Arc<Self>, name: &str) -> Result<VmStats, RpcError> {
        let vm = self.vm_by_name(name)?;
        // The answer refreshes the VMM cache only when no lifecycle change
        // runs meanwhile (`handles_cache`): the lock is tried, never
        // waited for, and held for the status call alone.
        let lock = self.lock_for(&vm.id);
        let held = lock.try_lock().ok();
        let status = self
            .privileged(VmmStatus {
                vm_id: vm.id.clone(),
            })
            .await?;
        if held.is_some() {
            self.vmms.record(&status);
        }
        drop(held);
        let (running, pid) = (status.running, status.pid.filter(|_| status.running));
        let now = self.sample(&vm, pid);
        let mut history = self.stats.series(&vm.id);
        let mut span = history.clone();
        span.push(now.clone());
        if !running {
            history.clear();
        }
        Ok(VmStats {
            name: vm.name,
            running,
            cpu_ms: now.cpu_ms,
            rss_bytes: now.rss_bytes,
            root_disk_allocated: now.root_disk_allocated,
            work_disk_allocated: now.work_disk_allocated,
            net_rx_bytes: now.net_rx_bytes,
            net_tx_bytes: now.net_tx_bytes,
            rates: if running {
                super::stats::rates(&span)
            } else {
                None
            },
            history,
        })
    }
}

/// `ss -H -tulnp` lines: `tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=1,fd=3))`.
pub fn parse_ss(name: &str, out: &str) -> Vec<GuestPort> {
    let mut ports = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            continue;
        }
        let Some((addr, port)) = f[4].rsplit_once(':') else {
            continue;
        };
        let Ok(port) = port.parse::<u16>() else {
            continue;
        };
        let process = f
            .get(6)
            .and_then(|u| u.split('"').nth(1))
            .map(str::to_string);
        ports.push(GuestPort {
            proto: f[0].to_string(),
            address: addr.to_string(),
            port,
            process,
            endpoint: format!("{name}.vm:{port}"),
        });
    }
    ports.sort_by(|a, b| (a.port, &a.proto).cmp(&(b.port, &b.proto)));
    ports.dedup_by(|a, b| a.port == b.port && a.proto == b.proto && a.process == b.process);
    ports
}

pub(super) fn cpu_ms(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ: the unit of /proc/<pid>/stat times (100 on Linux).
    let hz = 100;
    Some(ticks * 1000 / hz)
}

pub(super) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// (rx, tx) bytes of an interface in the daemon's network namespace
/// (`/proc/net/dev` follows the reader's namespace; `/sys/class/net` may not).
pub(super) fn tap_counters(tap: &str) -> Option<(u64, u64)> {
    let dev = std::fs::read_to_string("/proc/net/dev").ok()?;
    let line = dev
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{tap}:")))?;
    let f: Vec<&str> = line.split(':').nth(1)?.split_whitespace().collect();
    Some((f.first()?.parse().ok()?, f.get(8)?.parse().ok()?))
}

/// A VM that must be running is not: what to do about it.
pub(crate) fn not_running(name: &str, state: VmState) -> RpcError {
    let fix = if state == VmState::Paused {
        format!("resume it first (`banger vm resume {name}`)")
    } else {
        format!("start it first (`banger vm start {name}`)")
    };
    RpcError::new(
        ErrorCode::InvalidState,
        format!("VM {name} is {state}; {fix}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ss_output_becomes_ports() {
        let out = "tcp   LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:((\"sshd\",pid=210,fd=3))\n\
                   tcp   LISTEN 0 128 [::]:22 [::]:* users:((\"sshd\",pid=210,fd=4))\n\
                   udp   UNCONN 0 0 127.0.0.1:323 0.0.0.0:*\n\
                   tcp   LISTEN 0 5 *:8080 *:* users:((\"python3\",pid=9,fd=3))\n";
        let p = parse_ss("dev", out);
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!(p[0].port, 22);
        assert_eq!(p[0].process.as_deref(), Some("sshd"));
        assert_eq!(p[2].endpoint, "dev.vm:8080");
        assert_eq!(p[2].process.as_deref(), Some("python3"));
        assert_eq!(p[1].proto, "udp");
    }
}
