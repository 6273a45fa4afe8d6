//! `banger completions SHELL`: a completion script on stdout.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::args::Cli;
use crate::error::CliError;
use crate::exit::Exit;
use crate::output;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// Shell to complete for
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: &CompletionsArgs) -> Result<Exit, CliError> {
    // Render into memory first: clap_complete panics on a failed write, and
    // a closed pipe must end quietly instead.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "banger", &mut script);
    output::stdout(&script)?;
    Ok(Exit::Ok)
}
