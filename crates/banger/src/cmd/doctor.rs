//! `banger doctor`: the daemon's host checks, as a table or as JSON.

use banger_proto::doctor::{Accel, CheckStatus, DoctorReport};
use banger_proto::rpc::{Request, Response};
use clap::Args;

use crate::client::response_name;
use crate::error::CliError;
use crate::exit::Exit;
use crate::output::{self, ProgressLine};
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct DoctorArgs {}

pub fn run(_args: &DoctorArgs, settings: &Settings) -> Result<Exit, CliError> {
    let mut client = super::connect(settings)?;
    let mut line = ProgressLine::stderr();
    let answer = client.call(&Request::Doctor, |p| line.update(p));
    line.finish();
    let report = match answer? {
        Response::Doctor(report) => report,
        other => {
            return Err(client
                .unexpected("a doctor report", response_name(&other))
                .into());
        }
    };
    if settings.json {
        output::json(&report)?;
    } else {
        output::stdout(render(&report).as_bytes())?;
    }
    Ok(exit_status(&report))
}

/// Failing checks fail the command; warnings alone do not.
fn exit_status(report: &DoctorReport) -> Exit {
    match report.overall() {
        CheckStatus::Fail => Exit::DoctorFailures,
        CheckStatus::Pass | CheckStatus::Warn => Exit::Ok,
    }
}

fn accel_name(a: Option<Accel>) -> &'static str {
    match a {
        Some(Accel::Kvm) => "kvm",
        Some(Accel::Tcg) => "tcg",
        None => "-",
    }
}

/// Rows padded into columns separated by two spaces; the last column is
/// left unpadded.
fn columns(rows: &[Vec<String>]) -> Vec<String> {
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..ncols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let mut line = String::new();
            for (i, cell) in r.iter().enumerate() {
                if i + 1 == r.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
                }
            }
            line
        })
        .collect()
}

/// The human report: checks with their fix hints, then the VMM backends.
pub fn render(report: &DoctorReport) -> String {
    let mut rows = vec![vec!["STATUS".to_string(), "CHECK".into(), "SUMMARY".into()]];
    rows.extend(
        report
            .checks
            .iter()
            .map(|c| vec![c.status.to_string(), c.id.clone(), c.summary.clone()]),
    );
    let lines = columns(&rows);
    let status_width = rows.iter().map(|r| r[0].chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    out.push_str(&lines[0]);
    out.push('\n');
    for (check, line) in report.checks.iter().zip(&lines[1..]) {
        out.push_str(line);
        out.push('\n');
        if let (CheckStatus::Warn | CheckStatus::Fail, Some(hint)) = (check.status, &check.hint) {
            out.push_str(&format!("{:w$}  fix: {hint}\n", "", w = status_width));
        }
    }

    let count = |s: CheckStatus| report.checks.iter().filter(|c| c.status == s).count();
    out.push_str(&format!(
        "\n{} check{}: {} passed, {} warned, {} failed\n",
        report.checks.len(),
        if report.checks.len() == 1 { "" } else { "s" },
        count(CheckStatus::Pass),
        count(CheckStatus::Warn),
        count(CheckStatus::Fail),
    ));

    out.push_str("\nVMM backends\n");
    if report.backends.is_empty() {
        out.push_str("(none reported)\n");
        return out;
    }
    let mut rows = vec![vec![
        "BACKEND".to_string(),
        "USABLE".into(),
        "ACCEL".into(),
        "REASON".into(),
    ]];
    rows.extend(report.backends.iter().map(|b| {
        vec![
            b.vmm.as_str().to_string(),
            if b.usable { "yes" } else { "no" }.into(),
            accel_name(b.accel).into(),
            b.reason.clone(),
        ]
    }));
    for line in columns(&rows) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_proto::doctor::{BackendSupport, Check, VmmKind};

    fn check(id: &str, status: CheckStatus, hint: Option<&str>) -> Check {
        Check {
            id: id.into(),
            status,
            state: "x".into(),
            summary: format!("{id} summary"),
            hint: hint.map(Into::into),
        }
    }

    fn report(checks: Vec<Check>) -> DoctorReport {
        DoctorReport {
            checks,
            backends: vec![BackendSupport {
                vmm: VmmKind::Qemu,
                usable: true,
                accel: Some(Accel::Tcg),
                reason: "no usable KVM; TCG is slow".into(),
            }],
        }
    }

    #[test]
    fn table_shows_hints_under_failing_and_warning_rows_only() {
        let r = report(vec![
            check("kvm", CheckStatus::Pass, Some("never shown")),
            check(
                "resolved",
                CheckStatus::Warn,
                Some("start systemd-resolved"),
            ),
            check("nft", CheckStatus::Fail, Some("apt-get install nftables")),
        ]);
        let text = render(&r);
        let expected = "\
STATUS  CHECK     SUMMARY
pass    kvm       kvm summary
warn    resolved  resolved summary
        fix: start systemd-resolved
fail    nft       nft summary
        fix: apt-get install nftables

3 checks: 1 passed, 1 warned, 1 failed

VMM backends
BACKEND  USABLE  ACCEL  REASON
qemu     yes     tcg    no usable KVM; TCG is slow
";
        assert_eq!(text, expected);
    }

    #[test]
    fn only_failures_fail_the_command() {
        let warn = report(vec![check("resolved", CheckStatus::Warn, None)]);
        assert_eq!(exit_status(&warn), Exit::Ok);
        let fail = report(vec![check("nft", CheckStatus::Fail, None)]);
        assert_eq!(exit_status(&fail), Exit::DoctorFailures);
        assert_eq!(exit_status(&report(vec![])), Exit::Ok);
    }
}
