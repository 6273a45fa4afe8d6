//! `banger`: the command-line client of the banger daemon.

mod args;
mod client;
mod cmd;
mod error;
mod exit;
mod output;
mod settings;

use std::process::ExitCode;

use clap::Parser;

use crate::args::Cli;
use crate::exit::Exit;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Usage errors go to stderr, --help and --version to stdout.
            let _ = e.print();
            return Exit::for_clap(&e).into();
        }
    };
    let json = cli.global.json;
    match cmd::run(cli) {
        Ok(exit) => exit.into(),
        Err(err) => {
            error::report(&err, json);
            Exit::for_error(&err).into()
        }
    }
}
