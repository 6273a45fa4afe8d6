//! One module per subcommand. Each `run` returns the exit status of a
//! command that ran to its end (doctor's failures, for instance) or the error
//! that stopped it; `main` reports the error.

pub mod completions;
pub mod doctor;
pub mod host;
pub mod image;
pub mod kernel;
pub mod man;
pub mod op;
pub mod snapshot;
pub mod system;
pub mod version;
pub mod vm;
pub mod workspace;

use std::io::Write;

use crate::args::{Cli, Command};
use crate::client::{Client, ClientError};
use crate::error::CliError;
use crate::exit::Exit;
use crate::settings::Settings;

pub fn run(cli: Cli) -> Result<Exit, CliError> {
    let settings = Settings::resolve(&cli.global);
    match cli.command {
        Command::Doctor(args) => doctor::run(&args, &settings),
        Command::Host(args) => host::run(&args, &settings),
        Command::Kernel(args) => kernel::run(&args, &settings),
        Command::Image(args) => image::run(&args, &settings),
        Command::Vm(args) => vm::run(&args, &settings),
        Command::Op(args) => op::run(&args, &settings),
        Command::Snapshot(args) => snapshot::run(&args, &settings),
        Command::Workspace(args) => workspace::run(&args, &settings),
        Command::System(args) => system::run(&args, &settings),
        Command::Version(args) => version::run(&args, &settings),
        Command::Completions(args) => completions::run(&args),
        Command::Man(args) => man::run(&args, &settings),
    }
}

/// Connect to the daemon the settings point at, saying so with `-v`.
pub fn connect(settings: &Settings) -> Result<Client, ClientError> {
    note(settings, || {
        format!(
            "socket {} ({})",
            settings.socket.display(),
            settings.socket_source
        )
    });
    let client = Client::connect(&settings.socket)?;
    note(settings, || {
        let s = client.server();
        format!(
            "connected to bangerd {} (protocol {}, {} mode)",
            s.daemon_version, s.protocol, s.mode
        )
    });
    Ok(client)
}

/// A `-v` line on stderr.
fn note(settings: &Settings, msg: impl FnOnce() -> String) {
    if settings.verbose > 0 {
        let _ = writeln!(std::io::stderr(), "banger: {}", msg());
    }
}
