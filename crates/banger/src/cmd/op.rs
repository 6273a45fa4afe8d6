//! `banger op ls | show ID | wait ID`: asynchronous operations (VM create).

use banger_proto::rpc::{Request, Response};
use banger_proto::vm::{OpInfo, OpRequest, OpResponse, OpState};
use clap::{Args, Subcommand};

use super::image::call_with_progress;
use crate::client::response_name;
use crate::error::CliError;
use crate::exit::Exit;
use crate::output;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct OpArgs {
    #[command(subcommand)]
    pub command: OpCommand,
}

#[derive(Debug, Subcommand)]
pub enum OpCommand {
    /// List operations, newest first
    Ls,
    /// Show one operation
    Show { id: String },
    /// Wait for an operation to finish, showing its progress
    Wait { id: String },
}

pub fn run(args: &OpArgs, settings: &Settings) -> Result<Exit, CliError> {
    let req = match &args.command {
        OpCommand::Ls => OpRequest::List,
        OpCommand::Show { id } => OpRequest::Show { id: id.clone() },
        OpCommand::Wait { id } => OpRequest::Wait { id: id.clone() },
    };
    let mut client = super::connect(settings)?;
    let resp = match call_with_progress(&mut client, &Request::Op(req))? {
        Response::Op(r) => r,
        other => {
            return Err(client
                .unexpected("an operation result", response_name(&other))
                .into());
        }
    };
    if settings.json {
        match &resp {
            OpResponse::List(ops) => output::json(ops)?,
            OpResponse::Op(o) => output::json(o)?,
        }
    } else {
        match &resp {
            OpResponse::List(ops) => {
                let mut out = format!(
                    "{:<32} {:<10} {:<10} {:<12} {}\n",
                    "ID", "KIND", "STATE", "VM", "STAGE"
                );
                for o in ops {
                    out.push_str(&format!(
                        "{:<32} {:<10} {:<10} {:<12} {}\n",
                        o.id,
                        o.kind,
                        o.state,
                        o.vm.as_deref().unwrap_or("-"),
                        o.stage.as_deref().unwrap_or("-")
                    ));
                }
                output::stdout(out.as_bytes())?;
            }
            OpResponse::Op(o) => output::stdout(one(o).as_bytes())?,
        }
    }
    // `op wait` on a failed operation exits non-zero.
    Ok(match resp {
        OpResponse::Op(o) if o.state == OpState::Failed => Exit::Failure,
        _ => Exit::Ok,
    })
}

fn one(o: &OpInfo) -> String {
    let mut out = format!(
        "id       {}\nkind     {}\nstate    {}\nvm       {}\nstage    {}\n",
        o.id,
        o.kind,
        o.state,
        o.vm.as_deref().unwrap_or("-"),
        o.stage.as_deref().unwrap_or("-")
    );
    if let Some(e) = &o.error {
        out.push_str(&format!("error    {}\n", e.join(": ")));
    }
    out
}
