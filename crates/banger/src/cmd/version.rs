//! `banger version`: this client's version and, when reachable, the daemon's.
//!
//! JSON shape: `{"client":{"version":"...","protocol":N},"daemon":DaemonInfo}`;
//! when the daemon cannot be asked, `"daemon"` is null and an `"error"` object
//! (the same one every command prints with `--json`) sits beside it.

use banger_proto::rpc::{DaemonInfo, PROTOCOL_VERSION, Request, Response};
use clap::Args;

use crate::client::{ClientError, response_name};
use crate::error::CliError;
use crate::exit::Exit;
use crate::output;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct VersionArgs {}

pub fn run(_args: &VersionArgs, settings: &Settings) -> Result<Exit, CliError> {
    let daemon = ask_daemon(settings).map_err(CliError::from);
    let client = serde_json::json!({
        "version": banger_proto::BANGER_VERSION,
        "protocol": PROTOCOL_VERSION,
    });
    match (daemon, settings.json) {
        (Ok(info), true) => {
            output::json(&serde_json::json!({ "client": client, "daemon": info }))?;
            Ok(Exit::Ok)
        }
        (Ok(info), false) => {
            output::stdout(format!("{}{}", client_line(), daemon_lines(&info)).as_bytes())?;
            Ok(Exit::Ok)
        }
        (Err(err), true) => {
            let mut doc = err.to_json();
            doc["client"] = client;
            doc["daemon"] = serde_json::Value::Null;
            output::json(&doc)?;
            Ok(Exit::for_error(&err))
        }
        // The client's own version is still worth printing; `main` then
        // reports the error on stderr.
        (Err(err), false) => {
            output::stdout(client_line().as_bytes())?;
            Err(err)
        }
    }
}

fn ask_daemon(settings: &Settings) -> Result<DaemonInfo, ClientError> {
    let mut client = super::connect(settings)?;
    match client.call(&Request::Ping, |_| {})? {
        Response::Pong(info) => Ok(info),
        other => Err(client.unexpected("a pong", response_name(&other))),
    }
}

fn client_line() -> String {
    format!(
        "banger {} (protocol {PROTOCOL_VERSION})\n",
        banger_proto::BANGER_VERSION
    )
}

fn daemon_lines(info: &DaemonInfo) -> String {
    format!(
        "bangerd {} (protocol {}, {} mode)\n  pid        {}\n  uid        {}\n  socket     {}\n  state dir  {}\n",
        info.daemon_version,
        info.protocol,
        info.mode,
        info.pid,
        info.uid,
        info.socket,
        info.state_dir,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_proto::rpc::DaemonMode;

    #[test]
    fn daemon_lines_name_every_field() {
        let info = DaemonInfo {
            daemon_version: "1.2.3".into(),
            protocol: 1,
            mode: DaemonMode::System,
            pid: 77,
            uid: 1000,
            state_dir: "/var/lib/banger".into(),
            socket: "/run/banger/bangerd.sock".into(),
        };
        assert_eq!(
            daemon_lines(&info),
            "bangerd 1.2.3 (protocol 1, system mode)\n  pid        77\n  uid        1000\n  \
             socket     /run/banger/bangerd.sock\n  state dir  /var/lib/banger\n"
        );
    }
}
