//! The command line, as plain data. Nothing here looks at the host; the
//! resolved configuration (which socket, for instance) is in `settings`.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::cmd::{
    completions, doctor, host, image, kernel, man, op, snapshot, system, version, vm, workspace,
};
use crate::exit;

/// Disposable Linux microVMs on this host.
#[derive(Debug, Parser)]
#[command(
    name = "banger",
    version,
    long_about = "banger runs disposable Linux microVMs on this host, managed by the bangerd \
                  daemon. This client talks to bangerd over its Unix socket.",
    after_long_help = exit::help_table(),
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted by every subcommand.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Socket of the daemon [default: /run/banger/bangerd.sock if it exists,
    /// else /run/banger-dev/bangerd.sock]
    #[arg(long, global = true, env = "BANGER_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Machine-readable JSON on stdout, errors included
    #[arg(long, global = true)]
    pub json: bool,
    /// Say more about what banger is doing, on stderr (repeatable)
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that this host can run banger VMs, with a fix for each problem
    #[command(
        long_about = "Ask the daemon to check this host (KVM, tun, vsock, loop, \
                            device-mapper, nft, e2fsprogs, VMM binaries, cgroup v2, \
                            systemd-resolved, ...) and print each finding with a fix hint, \
                            then which VMM backends can boot a guest. Exits 10 when a check \
                            fails; warnings alone exit 0."
    )]
    Doctor(doctor::DoctorArgs),
    /// Show or tear down the host network banger manages
    Host(host::HostArgs),
    /// Kernels VMs boot: ls, import, pull, rm
    Kernel(kernel::KernelArgs),
    /// Images VMs are made from: ls, show, register, build, pull, promote, refresh, rm
    Image(image::ImageArgs),
    /// Create, run and reach VMs
    Vm(vm::VmArgs),
    /// Saved VMs (`vm snapshot`) that `vm create --from` restores: ls, show, rm
    Snapshot(snapshot::SnapshotArgs),
    /// Asynchronous operations (VM create) and their progress
    Op(op::OpArgs),
    /// Put a git checkout into a VM and bring the work back as a branch
    Workspace(workspace::WorkspaceArgs),
    /// banger's services on this host: install, status, restart, uninstall
    System(system::SystemArgs),
    /// Print the versions of banger and of the running daemon
    Version(version::VersionArgs),
    /// Print a shell completion script
    Completions(completions::CompletionsArgs),
    /// Print or write the manual pages
    Man(man::ManArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every subcommand of a group: in the Commands of the rendered
    /// `banger GROUP --help`, in the group's line of the rendered `banger
    /// --help` when that line lists them (`…: a, b, c`), and in docs/cli.md's
    /// table.
    #[test]
    fn every_subcommand_is_in_its_group_help_and_in_cli_md() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli.md"),
        )
        .unwrap();
        // `banger GROUP a\|b\|c …` cells of the table: GROUP -> {a, b, c}.
        let mut documented: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for cell in doc.split('`').skip(1).step_by(2) {
            let mut words = cell.split_whitespace();
            if words.next() != Some("banger") {
                continue;
            }
            let Some(group) = words.next() else { continue };
            // Lower-case words are commands (`ID\|wait` holds `wait`);
            // arguments are upper case, options start with `-` or `[`.
            let subs = words
                .flat_map(|w| w.split("\\|"))
                .filter(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()));
            documented
                .entry(group.to_string())
                .or_default()
                .extend(subs.map(str::to_string));
        }
        // Help text as printed, whitespace squashed (`wrap_help` may wrap).
        let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut cli = Cli::command();
        cli.build();
        let top = squash(&cli.render_long_help().to_string());
        let groups: Vec<String> = cli
            .get_subcommands()
            .map(|g| g.get_name().to_string())
            .collect();
        for name in &groups {
            let group = cli.find_subcommand_mut(name).unwrap();
            let about = group.get_about().map(|a| a.to_string()).unwrap_or_default();
            let help = group.render_long_help().to_string();
            // The first word of each line under `Commands:`.
            let listed: Vec<&str> = help
                .split_once("Commands:")
                .map(|(_, rest)| {
                    rest.lines()
                        .skip(1)
                        .take_while(|l| !l.trim().is_empty())
                        .filter_map(|l| l.split_whitespace().next())
                        .collect()
                })
                .unwrap_or_default();
            for sub in group.get_subcommands() {
                let sub = sub.get_name();
                assert!(
                    listed.contains(&sub),
                    "`banger {name} --help` does not list {sub}:\n{help}"
                );
                if let Some((_, list)) = about.split_once(": ") {
                    assert!(
                        list.split(", ").any(|w| w == sub),
                        "`banger --help` lists {name}'s commands as {list:?} without {sub}"
                    );
                    assert!(
                        top.contains(&squash(&about)),
                        "`banger --help` has no line {about:?} for {name}"
                    );
                }
                assert!(
                    documented
                        .get(name)
                        .is_some_and(|d| d.iter().any(|d| d == sub)),
                    "docs/cli.md has no row for `banger {name} {sub}`"
                );
            }
        }
    }

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_parse_after_the_subcommand() {
        let cli =
            Cli::try_parse_from(["banger", "doctor", "--json", "--socket", "/s", "-vv"]).unwrap();
        assert!(cli.global.json);
        assert_eq!(
            cli.global.socket.as_deref(),
            Some(std::path::Path::new("/s"))
        );
        assert_eq!(cli.global.verbose, 2);
        assert!(matches!(cli.command, Command::Doctor(_)));
    }

    #[test]
    fn only_present_capabilities_are_commands() {
        let names: Vec<_> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "doctor",
                "host",
                "kernel",
                "image",
                "vm",
                "snapshot",
                "op",
                "workspace",
                "system",
                "version",
                "completions",
                "man"
            ]
        );
    }
}
