//! `banger kernel ls | import PATH [--initrd I] [--name N] | pull NAME
//! [--catalog FILE] | rm NAME`.

use std::path::PathBuf;

use banger_proto::image::{
    ImportKernel, KernelInfo, KernelOrigin, KernelRequest, KernelResponse, PullKernel,
};
use banger_proto::rpc::{Request, Response};
use clap::{Args, Subcommand};

use super::image::{absolute, call_with_progress, table, users_text};
use crate::client::response_name;
use crate::error::CliError;
use crate::exit::Exit;
use crate::output;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct KernelArgs {
    #[command(subcommand)]
    pub command: KernelCommand,
}

#[derive(Debug, Subcommand)]
pub enum KernelCommand {
    /// List kernels
    Ls,
    /// Import a kernel image (bzImage or ELF vmlinux), with an optional initrd
    #[command(
        long_about = "Copy a kernel image (a bzImage or an ELF vmlinux) and an optional \
                      initrd into the kernel store, recording its sha256. The daemon reads \
                      the files itself, so they must be readable by its user."
    )]
    Import {
        /// The kernel image
        path: PathBuf,
        /// An initrd to keep with it
        #[arg(long, value_name = "FILE")]
        initrd: Option<PathBuf>,
        /// Name of the kernel [default: the file name, lowercased, without an
        /// extension such as .bin]
        #[arg(long)]
        name: Option<String>,
    },
    /// Download a kernel of the kernel catalog
    #[command(
        long_about = "Download the kernel catalog entry NAME (the catalog shipped with banger, \
                      whose entries a --catalog file replaces by name or extends), verify its \
                      sha256 and publish it as kernel NAME. A Debian package entry becomes a \
                      kernel plus an initramfs that loads its virtio modules."
    )]
    Pull {
        /// Catalog entry (also the kernel's name)
        name: String,
        /// A catalog file (same TOML format) overriding the shipped one
        #[arg(long, value_name = "FILE")]
        catalog: Option<PathBuf>,
    },
    /// Remove a kernel no image uses
    Rm {
        /// Kernel name
        name: String,
    },
}

pub fn run(args: &KernelArgs, settings: &Settings) -> Result<Exit, CliError> {
    let req = match &args.command {
        KernelCommand::Ls => KernelRequest::List,
        KernelCommand::Import { path, initrd, name } => KernelRequest::Import(ImportKernel {
            path: absolute(path),
            initrd: initrd.as_deref().map(absolute),
            name: name.clone(),
        }),
        KernelCommand::Rm { name } => KernelRequest::Remove { name: name.clone() },
        KernelCommand::Pull { name, catalog } => KernelRequest::Pull(PullKernel {
            name: name.clone(),
            catalog: catalog.as_deref().map(absolute),
        }),
    };
    let mut client = super::connect(settings)?;
    let resp = match call_with_progress(&mut client, &Request::Kernel(req))? {
        Response::Kernel(r) => r,
        other => {
            return Err(client
                .unexpected("a kernel result", response_name(&other))
                .into());
        }
    };
    match resp {
        KernelResponse::List(list) if settings.json => output::json(&list)?,
        KernelResponse::List(list) => output::stdout(list_text(&list).as_bytes())?,
        KernelResponse::Imported(k) | KernelResponse::Removed(k) | KernelResponse::Pulled(k)
            if settings.json =>
        {
            output::json(&k)?
        }
        KernelResponse::Pulled(k) => output::stdout(kernel_line("pulled", &k).as_bytes())?,
        KernelResponse::Imported(k) => output::stdout(kernel_line("imported", &k).as_bytes())?,
        KernelResponse::Removed(k) => {
            output::stdout(format!("removed kernel {}\n", k.name).as_bytes())?
        }
    }
    Ok(Exit::Ok)
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn origin(o: KernelOrigin) -> &'static str {
    match o {
        KernelOrigin::Import => "import",
        KernelOrigin::Pull => "pull",
        KernelOrigin::Bundle => "bundle",
    }
}

fn list_text(list: &[KernelInfo]) -> String {
    if list.is_empty() {
        return "no kernels; add one with `banger kernel import`\n".into();
    }
    let mut rows = vec![vec![
        "NAME".to_string(),
        "ARCH".into(),
        "INITRD".into(),
        "SOURCE".into(),
        "SHA256".into(),
        "USED BY".into(),
    ]];
    rows.extend(list.iter().map(|k| {
        vec![
            k.name.clone(),
            k.arch.clone(),
            if k.initrd.is_some() { "yes" } else { "no" }.into(),
            origin(k.source).into(),
            short(&k.sha256).into(),
            users_text(&k.used_by),
        ]
    }));
    table(&rows)
}

/// `imported kernel NAME (ARCH, sha256 PREFIX) with initrd`.
fn kernel_line(verb: &str, k: &banger_proto::image::KernelInfo) -> String {
    format!(
        "{verb} kernel {} ({}, sha256 {}){}\n",
        k.name,
        k.arch,
        short(&k.sha256),
        if k.initrd.is_some() {
            " with initrd"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_a_table() {
        let k = KernelInfo {
            id: "ab".repeat(16),
            name: "cloud".into(),
            arch: "x86_64".into(),
            kernel: "/s/kernels/x/kernel".into(),
            initrd: Some("/s/kernels/x/initrd".into()),
            sha256: "0123456789abcdef".repeat(4),
            source: KernelOrigin::Import,
            created_at: 1,
            used_by: vec![],
        };
        assert_eq!(
            list_text(&[k]),
            "NAME   ARCH    INITRD  SOURCE  SHA256        USED BY\n\
             cloud  x86_64  yes     import  0123456789ab  -\n"
        );
    }
}
