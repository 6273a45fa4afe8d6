//! Stats history (issue #14 item 9): a ticker samples every running VM's
//! counters every [`STATS_INTERVAL`] into a bounded per-VM history
//! ([`STATS_KEEP`] samples, the last minutes), so `vm stats` shows rates
//! over them and `--json` gives the series.
//!
//! A sample reads what the daemon can read without asking root: the VMM's
//! CPU time and resident memory from `/proc/<pid>` (the pid from the VMM
//! cache, `handles_cache`), the disks' allocated blocks, the tap's counters.
//! Each sample names the VMM process it read, and rates are taken over the
//! samples of the latest one only, so a restart never shows as a negative
//! or a jump. A VM that is not running loses its history at the next tick.
//! The table's mutex is subsystem-local, never held across an await.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use banger_proto::vm::{VmRates, VmSample};

use super::VmService;
use super::info::{cpu_ms, rss_bytes, tap_counters};
use crate::store::{VmRow, VmState};

/// How often running VMs are sampled.
pub const STATS_INTERVAL: Duration = Duration::from_secs(5);
/// Samples kept per VM: ten minutes at [`STATS_INTERVAL`].
pub const STATS_KEEP: usize = 120;

/// VM id → its samples, oldest first, at most [`STATS_KEEP`].
#[derive(Debug, Default)]
pub(super) struct StatsHistory(Mutex<HashMap<String, VecDeque<VmSample>>>);

impl StatsHistory {
    fn table(&self) -> MutexGuard<'_, HashMap<String, VecDeque<VmSample>>> {
        // Every write is one map or queue operation: nothing half-done.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn push(&self, vm_id: &str, sample: VmSample) {
        let mut t = self.table();
        let q = t.entry(vm_id.to_string()).or_default();
        if q.len() == STATS_KEEP {
            q.pop_front();
        }
        q.push_back(sample);
    }

    /// Keep only the histories of `live` VMs.
    pub(super) fn retain(&self, live: &[String]) {
        self.table().retain(|id, _| live.contains(id));
    }

    pub(super) fn series(&self, vm_id: &str) -> Vec<VmSample> {
        self.table()
            .get(vm_id)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Rates between the first and the last sample of the latest VMM process
/// in `series` (oldest first); `None` with fewer than two such samples.
pub fn rates(series: &[VmSample]) -> Option<VmRates> {
    let last = series.last()?;
    let first = series
        .iter()
        .find(|s| s.pid == last.pid && s.pid.is_some())?;
    let window_ms = last.at_ms.checked_sub(first.at_ms).filter(|w| *w > 0)?;
    let per_s = |a: Option<u64>, b: Option<u64>| {
        let delta = b?.checked_sub(a?)?;
        Some(delta.saturating_mul(1000) / window_ms)
    };
    Some(VmRates {
        window_ms,
        cpu_ms_per_s: per_s(first.cpu_ms, last.cpu_ms),
        net_rx_bytes_per_s: per_s(first.net_rx_bytes, last.net_rx_bytes),
        net_tx_bytes_per_s: per_s(first.net_tx_bytes, last.net_tx_bytes),
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl VmService {
    /// `vm`'s counters now, its VMM as `pid` (running) or `None`.
    pub(super) fn sample(&self, vm: &VmRow, pid: Option<u32>) -> VmSample {
        use banger_proto::layout::{COW_FILE, ROOT_DISK, WORK_DISK};
        let dir = self.vm_dir(&vm.id);
        let allocated = |f: &str| {
            use std::os::unix::fs::MetadataExt as _;
            std::fs::metadata(dir.join(f))
                .ok()
                .map(|m| m.blocks() * 512)
        };
        let tap = self.network.tap_of(&vm.id);
        let (rx, tx) = tap.as_deref().and_then(tap_counters).unzip();
        VmSample {
            at_ms: now_ms(),
            pid,
            cpu_ms: pid.and_then(cpu_ms),
            rss_bytes: pid.and_then(rss_bytes),
            // With dm-snapshot the VM's own blocks are its COW file.
            root_disk_allocated: allocated(ROOT_DISK).or_else(|| allocated(COW_FILE)),
            work_disk_allocated: allocated(WORK_DISK),
            net_rx_bytes: rx,
            net_tx_bytes: tx,
        }
    }

    /// One tick: sample every running VM (its VMM from the cache, no
    /// privileged call), forget the others' histories.
    pub(crate) async fn sample_running(self: &Arc<Self>) {
        let Ok(vms) = self.store.list_vms() else {
            return;
        };
        let svc = Arc::clone(self);
        let _ = tokio::task::spawn_blocking(move || {
            let running: Vec<VmRow> = vms
                .into_iter()
                .filter(|v| v.state == VmState::Running)
                .collect();
            for vm in &running {
                let sample = svc.sample(vm, svc.vmms.pid(&vm.id));
                svc.stats.push(&vm.id, sample);
            }
            let live: Vec<String> = running.into_iter().map(|v| v.id).collect();
            svc.stats.retain(&live);
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(at_ms: u64, pid: u32, cpu_ms: u64, rx: u64) -> VmSample {
        VmSample {
            at_ms,
            pid: Some(pid),
            cpu_ms: Some(cpu_ms),
            rss_bytes: None,
            root_disk_allocated: None,
            work_disk_allocated: None,
            net_rx_bytes: Some(rx),
            net_tx_bytes: None,
        }
    }

    #[test]
    fn rates_span_the_latest_run_only() {
        assert_eq!(rates(&[]), None);
        assert_eq!(rates(&[at(0, 1, 0, 0)]), None);
        let r = rates(&[at(0, 1, 0, 0), at(10_000, 1, 5_000, 20_000)]).unwrap();
        assert_eq!(r.window_ms, 10_000);
        assert_eq!(r.cpu_ms_per_s, Some(500), "half a CPU");
        assert_eq!(r.net_rx_bytes_per_s, Some(2_000));
        assert_eq!(r.net_tx_bytes_per_s, None, "unknown stays unknown");
        // A restart (another pid, counters from zero): the old run's
        // samples are not part of the rate.
        let restarted = [
            at(0, 1, 90_000, 9_000_000),
            at(5_000, 2, 100, 0),
            at(10_000, 2, 1_100, 5_000),
        ];
        let r = rates(&restarted).unwrap();
        assert_eq!((r.window_ms, r.cpu_ms_per_s), (5_000, Some(200)));
        // Counters that went backwards give no rate, never a wrapped one.
        let back = rates(&[at(0, 1, 5_000, 10), at(1_000, 1, 4_000, 5)]).unwrap();
        assert_eq!((back.cpu_ms_per_s, back.net_rx_bytes_per_s), (None, None));
    }

    #[test]
    fn a_history_keeps_the_last_samples_of_live_vms() {
        let h = StatsHistory::default();
        for i in 0..(STATS_KEEP as u64 + 5) {
            h.push("a", at(i, 1, i, 0));
        }
        h.push("b", at(0, 2, 0, 0));
        let a = h.series("a");
        assert_eq!(a.len(), STATS_KEEP);
        assert_eq!(a.first().unwrap().at_ms, 5, "the oldest went first");
        h.retain(&["a".to_string()]);
        assert!(h.series("b").is_empty());
        assert_eq!(h.series("a").len(), STATS_KEEP);
    }
}
