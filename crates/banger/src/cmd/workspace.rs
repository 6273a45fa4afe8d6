//! `banger workspace prepare VM [PATH] | export VM [--branch NAME | --patch FILE]`.

use std::path::{Path, PathBuf};

use banger_proto::rpc::{Request, Response};
use banger_proto::workspace::{
    ExportReport, ExportTarget, ExportWorkspace, PrepareReport, PrepareWorkspace, WorkspaceRequest,
    WorkspaceResponse,
};
use clap::{Args, Subcommand};

use super::image::{absolute, call_with_progress, human_bytes as human};
use crate::client::response_name;
use crate::error::CliError;
use crate::exit::Exit;
use crate::output;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct WorkspaceArgs {
    #[command(subcommand)]
    pub command: WorkspaceCommand,
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Copy a git checkout (working tree as it is, plus .git) into a VM;
    /// a later prepare sends only what changed
    Prepare {
        vm: String,
        /// Any directory of the checkout (default: the current directory)
        path: Option<PathBuf>,
        /// Overwrite guest commits that were never exported
        #[arg(long)]
        force: bool,
    },
    /// Bring the VM's work back as a new branch (default `banger/VM`) or a
    /// patch file; the host's working tree, index and branch are untouched
    Export {
        vm: String,
        /// Branch to create in the host repository
        #[arg(long, conflicts_with = "patch")]
        branch: Option<String>,
        /// Write a `git format-patch` mbox here instead of a branch
        #[arg(long)]
        patch: Option<PathBuf>,
        /// Replace an existing branch or patch file
        #[arg(long)]
        force: bool,
    },
}

pub fn run(args: &WorkspaceArgs, settings: &Settings) -> Result<Exit, CliError> {
    let req = match &args.command {
        WorkspaceCommand::Prepare { vm, path, force } => {
            WorkspaceRequest::Prepare(PrepareWorkspace {
                vm: vm.clone(),
                path: absolute(path.as_deref().unwrap_or(Path::new("."))),
                force: *force,
            })
        }
        WorkspaceCommand::Export {
            vm,
            branch,
            patch,
            force,
        } => WorkspaceRequest::Export(ExportWorkspace {
            vm: vm.clone(),
            target: match patch {
                Some(p) => ExportTarget::Patch { path: absolute(p) },
                None => ExportTarget::Branch {
                    name: branch.clone(),
                },
            },
            force: *force,
        }),
    };
    let mut client = super::connect(settings)?;
    let resp = match call_with_progress(&mut client, &Request::Workspace(req))? {
        Response::Workspace(r) => r,
        other => {
            return Err(client
                .unexpected("a workspace result", response_name(&other))
                .into());
        }
    };
    match &resp {
        WorkspaceResponse::Prepared(r) if settings.json => output::json(r)?,
        WorkspaceResponse::Exported(r) if settings.json => output::json(r)?,
        WorkspaceResponse::Prepared(r) => output::stdout(prepared(r).as_bytes())?,
        WorkspaceResponse::Exported(r) => output::stdout(exported(r).as_bytes())?,
    }
    Ok(Exit::Ok)
}

fn short(commit: Option<&str>) -> &str {
    commit.map_or("(no commits)", |c| &c[..c.len().min(12)])
}

fn prepared(r: &PrepareReport) -> String {
    let mut out = format!(
        "prepared {} in {}:{}\n  head     {}{}\n  files    {} ({} dirty, {} submodules)\n  sent     {} of {}{}\n",
        r.repo.display(),
        r.vm,
        r.guest_path,
        short(r.head.as_deref()),
        r.branch
            .as_deref()
            .map(|b| format!(" ({b})"))
            .unwrap_or_default(),
        r.files,
        r.dirty,
        r.submodules,
        human(r.sent_bytes),
        human(r.total_bytes),
        if r.incremental { " (incremental)" } else { "" },
    );
    if let Some(id) = &r.git_identity {
        out.push_str(&format!("  git      {id}\n"));
    }
    if r.auth_keys > 0 || r.file_sync > 0 {
        out.push_str(&format!(
            "  owner    {} new public key(s), {} file_sync entr{}\n",
            r.auth_keys,
            r.file_sync,
            if r.file_sync == 1 { "y" } else { "ies" }
        ));
    }
    out.push_str(&format!(
        "  took     {:.1} s\n",
        r.duration_ms as f64 / 1000.0
    ));
    for w in &r.warnings {
        out.push_str(&format!("  warning  {w}\n"));
    }
    out
}

fn exported(r: &ExportReport) -> String {
    let what = match (&r.branch, &r.patch) {
        (Some(b), _) => format!("branch {b} in {}", r.repo.display()),
        (None, Some(p)) => format!("patch {}", p.display()),
        (None, None) => "nothing".to_string(),
    };
    format!(
        "exported {} commit{} from {} to {what}{}\n  base {}\n  tip  {}\n",
        r.commits,
        if r.commits == 1 { "" } else { "s" },
        r.vm,
        if r.uncommitted {
            " (the last one holds uncommitted guest changes)"
        } else {
            ""
        },
        short(r.base.as_deref()),
        short(Some(&r.tip)),
    )
}
