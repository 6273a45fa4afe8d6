//! `banger snapshot ls | show NAME | rm NAME`. A snapshot is made by
//! `banger vm snapshot VM [NAME]` and restored by `banger vm create NEW
//! --from NAME`.

use banger_proto::rpc::{Request, Response};
use banger_proto::snapshot::{SnapshotInfo, SnapshotRequest, SnapshotResponse};
use clap::{Args, Subcommand};

use super::image::{call_with_progress, human_bytes, table};
use crate::client::response_name;
use crate::error::CliError;
use crate::exit::Exit;
use crate::output;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// List snapshots
    Ls,
    /// Show one snapshot: its source VM, image, kernel, VMM and size
    Show { name: String },
    /// Remove a snapshot (VMs made from it keep their own disks)
    Rm { name: String },
}

pub fn run(args: &SnapshotArgs, settings: &Settings) -> Result<Exit, CliError> {
    let req = match &args.command {
        SnapshotCommand::Ls => SnapshotRequest::List,
        SnapshotCommand::Show { name } => SnapshotRequest::Show { name: name.clone() },
        SnapshotCommand::Rm { name } => SnapshotRequest::Remove { name: name.clone() },
    };
    let mut client = super::connect(settings)?;
    let resp = match call_with_progress(&mut client, &Request::Snapshot(req))? {
        Response::Snapshot(r) => r,
        other => {
            return Err(client
                .unexpected("a snapshot result", response_name(&other))
                .into());
        }
    };
    match resp {
        SnapshotResponse::List(list) if settings.json => output::json(&list)?,
        SnapshotResponse::Snapshot(s) if settings.json => output::json(&s)?,
        SnapshotResponse::Removed { name } if settings.json => {
            output::json(&serde_json::json!({ "removed": name }))?
        }
        SnapshotResponse::List(list) => output::stdout(list_text(&list).as_bytes())?,
        SnapshotResponse::Snapshot(s) => output::stdout(show(&s).as_bytes())?,
        SnapshotResponse::Removed { name } => {
            output::stdout(format!("removed snapshot {name}\n").as_bytes())?
        }
    }
    Ok(Exit::Ok)
}

fn list_text(list: &[SnapshotInfo]) -> String {
    if list.is_empty() {
        return "no snapshots; save a VM with `banger vm snapshot VM`\n".into();
    }
    let mut rows = vec![vec![
        "NAME".to_string(),
        "SOURCE VM".into(),
        "IMAGE".into(),
        "VMM".into(),
        "VCPUS".into(),
        "MEM".into(),
        "SIZE".into(),
    ]];
    rows.extend(list.iter().map(|s| {
        vec![
            s.name.clone(),
            s.source_vm.clone(),
            s.image.clone(),
            s.vmm.to_string(),
            s.vcpus.to_string(),
            format!("{}M", s.memory_mib),
            human_bytes(s.size_bytes),
        ]
    }));
    table(&rows)
}

/// `snapshot show` and `vm snapshot` for a person.
pub fn show(s: &SnapshotInfo) -> String {
    format!(
        "name      {}\nid        {}\nsource vm {}\nimage     {}\nkernel    {}\nvmm       {}\n\
         vcpus     {}\nmemory    {} MiB\ndisk      {}\nstate     {} of memory and devices\n\
         size      {} on this host\n",
        s.name,
        s.id,
        s.source_vm,
        s.image,
        s.kernel,
        s.vmm,
        s.vcpus,
        s.memory_mib,
        human_bytes(s.disk_bytes),
        human_bytes(s.memory_bytes),
        human_bytes(s.size_bytes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_a_table() {
        let s = SnapshotInfo {
            id: "ab".repeat(16),
            name: "dev-1".into(),
            source_vm: "dev".into(),
            image: "debian".into(),
            kernel: "debian-6.1".into(),
            vmm: banger_proto::vmops::VmmKind::Qemu,
            vcpus: 1,
            memory_mib: 512,
            disk_bytes: 8 << 30,
            memory_bytes: 100 << 20,
            size_bytes: 700 << 20,
            created_at: 1,
        };
        assert_eq!(
            list_text(std::slice::from_ref(&s)),
            "NAME   SOURCE VM  IMAGE   VMM   VCPUS  MEM   SIZE\n\
             dev-1  dev        debian  qemu  1      512M  700 MiB\n"
        );
        assert!(show(&s).contains("source vm dev\n"), "{}", show(&s));
    }
}
