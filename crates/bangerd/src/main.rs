//! `bangerd`: the owner daemon binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The banger daemon: VM lifecycle, images, workspaces, host networking.
///
/// Installed as `bangerd.service` running as the owner user (system mode).
/// `--dev` runs a single root process with privileged operations in-process,
/// for development, tests and the demo.
#[derive(Debug, Parser)]
#[command(name = "bangerd", version)]
struct Args {
    /// Dev mode: run as root with the in-process privileged adapter.
    #[arg(long)]
    dev: bool,
    /// State directory (dev mode; default /var/lib/banger-dev).
    #[arg(long, value_name = "DIR", requires = "dev")]
    state_dir: Option<PathBuf>,
    /// Runtime directory holding the socket (dev mode; default /run/banger-dev).
    #[arg(long, value_name = "DIR", requires = "dev")]
    runtime_dir: Option<PathBuf>,
    /// Owner config file (default: $XDG_CONFIG_HOME/banger/config.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Install metadata (system mode).
    #[arg(long, value_name = "FILE", default_value = banger_proto::install::DEFAULT_INSTALL_FILE, conflicts_with = "dev")]
    install_file: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    bangerd::startup::init_logging();
    let opts = bangerd::startup::Options {
        dev: args.dev,
        state_dir: args.state_dir,
        runtime_dir: args.runtime_dir,
        config: args.config,
        install_file: args.install_file,
    };
    match bangerd::startup::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("bangerd: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}
