//! `banger doctor` report.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
}

impl std::fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "fail",
        })
    }
}

/// One host check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// Stable identifier (`kvm`, `device_mapper`, `nft`, ...).
    pub id: String,
    pub status: CheckStatus,
    /// Stable machine-readable finding (`usable`, `present_unusable`,
    /// `absent`, `present`, `found`, `missing`, ...).
    pub state: String,
    /// One line saying what was found.
    pub summary: String,
    /// One line saying how to fix it; absent on a pass.
    pub hint: Option<String>,
}

/// The VMM kind of the seam (same wire names).
pub use crate::vmops::VmmKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accel {
    Kvm,
    Tcg,
}

/// Whether a VMM backend can boot a stock guest on this host, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSupport {
    pub vmm: VmmKind,
    pub usable: bool,
    pub accel: Option<Accel>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoctorReport {
    pub checks: Vec<Check>,
    pub backends: Vec<BackendSupport>,
}

impl DoctorReport {
    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// Worst status over all checks.
    pub fn overall(&self) -> CheckStatus {
        self.checks
            .iter()
            .map(|c| c.status)
            .max_by_key(|s| match s {
                CheckStatus::Pass => 0,
                CheckStatus::Warn => 1,
                CheckStatus::Fail => 2,
            })
            .unwrap_or(CheckStatus::Pass)
    }
}
