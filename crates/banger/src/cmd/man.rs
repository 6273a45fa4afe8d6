//! `banger man [--out-dir DIR]`: manual pages generated from the command line
//! definition.

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory};
use clap_mangen::Man;

use crate::args::Cli;
use crate::error::CliError;
use crate::exit::Exit;
use crate::output;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write one page per command (banger.1, banger-doctor.1, ...) into DIR
    /// instead of printing banger(1) to stdout
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

pub fn run(args: &ManArgs, settings: &Settings) -> Result<Exit, CliError> {
    let mut cmd = Cli::command();
    cmd.build();
    let Some(dir) = &args.out_dir else {
        output::stdout(&render(&cmd)?)?;
        return Ok(Exit::Ok);
    };
    std::fs::create_dir_all(dir).map_err(|source| CliError::CreateDir {
        path: dir.clone(),
        source,
    })?;
    let mut written = Vec::new();
    write_pages(&cmd, dir, &mut written)?;
    if settings.json {
        output::json(&serde_json::json!({ "pages": written }))?;
    } else {
        let list: String = written
            .iter()
            .map(|p| format!("{}\n", p.display()))
            .collect();
        output::stdout(list.as_bytes())?;
    }
    Ok(Exit::Ok)
}

fn page(cmd: &clap::Command) -> Man {
    Man::new(cmd.clone()).source(format!("banger {}", banger_proto::BANGER_VERSION))
}

fn render(cmd: &clap::Command) -> Result<Vec<u8>, CliError> {
    let mut roff = Vec::new();
    page(cmd)
        .render(&mut roff)
        .map_err(|source| CliError::RenderManPage {
            page: cmd.get_display_name().unwrap_or(cmd.get_name()).to_string(),
            source,
        })?;
    Ok(roff)
}

/// Write the page of `cmd` and of every visible subcommand, recursively.
fn write_pages(
    cmd: &clap::Command,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<(), CliError> {
    let path = dir.join(page(cmd).get_filename());
    std::fs::write(&path, render(cmd)?).map_err(|source| CliError::WriteManPage {
        path: path.clone(),
        source,
    })?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}
