//! `banger image ls | show NAME | register NAME --rootfs F --kernel K
//! [--initrd I] | build | pull REF | promote | refresh NAME | rm NAME`, plus the helpers `kernel` shares: tables, sizes,
//! absolute paths, calls that draw byte progress.

use std::path::{Path, PathBuf};

use banger_proto::image::{
    BuildImage, ImageInfo, ImageOrigin, ImageRequest, ImageResponse, PullImage, RegisterImage,
};
use banger_proto::rpc::{Progress, Request, Response};
use clap::{Args, Subcommand};

use crate::client::{Client, response_name};
use crate::error::CliError;
use crate::exit::Exit;
use crate::output::{self, ProgressLine};
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images
    Ls,
    /// Show one image: kernel, files, size, source and the VMs using it
    Show {
        /// Image name
        name: String,
    },
    /// Register a local ext4 root filesystem as an image
    #[command(
        long_about = "Copy (reflink where the filesystem allows) an ext4 root filesystem \
                      into the image store, check the copy with `e2fsck -fn`, and record it \
                      with a kernel. The daemon reads the files itself, so they must be \
                      readable by its user."
    )]
    Register {
        /// Name of the new image (a-z, 0-9, '.', '_', '-')
        name: String,
        /// ext4 filesystem image to copy
        #[arg(long, value_name = "FILE")]
        rootfs: PathBuf,
        /// Kernel to boot it with (see `banger kernel ls`)
        #[arg(long, value_name = "KERNEL")]
        kernel: String,
        /// An initrd to boot with instead of the kernel's own
        #[arg(long, value_name = "FILE")]
        initrd: Option<PathBuf>,
    },
    /// Build a VM-ready image (the default `debian` image)
    #[command(
        long_about = "Build a VM-ready image with mmdebstrap: systemd, openssh-server and the \
                      guest contract banger needs (docs/guest.md), the distribution's kernel \
                      with an initramfs for its virtio drivers, and a work seed. Builds are \
                      cached by their inputs ($BANGER_CACHE_DIR, else /var/cache/banger), so a \
                      second build of the same suite is a copy. Needs a root daemon (dev mode)."
    )]
    Build {
        /// Distribution (only `debian`)
        distro: String,
        /// Debian suite
        #[arg(long, default_value = "bookworm")]
        suite: String,
        /// Image name (default: `debian`, or `debian-SUITE`)
        #[arg(long)]
        name: Option<String>,
    },
    /// Pull an OCI image from a registry, or an image bundle from a URL or a file
    #[command(
        long_about = "Pull REF from an OCI/distribution registry (anonymous, or with the \
                      credentials in ~/.docker/config.json), flatten its layers into an ext4 \
                      root filesystem and record it as an image. The image must carry an init \
                      and an SSH server (and follow docs/guest.md to become ready). It boots with \
                      --kernel, else the kernel of the `debian` image.\n\n\
                      When REF is an http://, https:// or file:// URL, an absolute path, or a \
                      path starting with ./ or ../, it is an image bundle (docs/images.md): a tar \
                      (optionally zstd-compressed) of a manifest, an ext4 root filesystem and \
                      optionally a kernel and initrd, each checked against the manifest's sha256."
    )]
    Pull {
        /// `registry/repository[:tag|@digest]`, or a bundle URL or path
        reference: String,
        /// Image name (default: the repository's last component)
        #[arg(long)]
        name: Option<String>,
        /// Kernel to boot it with (see `banger kernel ls`)
        #[arg(long)]
        kernel: Option<String>,
        /// Plain HTTP, for a registry on loopback
        #[arg(long)]
        insecure: bool,
    },
    /// Make a new image from a stopped VM's root disk
    Promote {
        /// The (stopped) VM
        vm: String,
        /// Name of the new image
        name: String,
    },
    /// Rebuild an image's work seed if its inputs changed
    #[command(
        long_about = "Rebuild the image's work seed (the ext4 every new VM's work disk starts \
                      from) when what went into it — banger's public key, banger's version — \
                      changed since it was built; else say it is up to date. VMs created \
                      afterwards get the new seed; existing VMs keep their work disks."
    )]
    Refresh {
        /// Image name
        name: String,
    },
    /// Remove an image no VM uses
    Rm {
        /// Image name
        name: String,
    },
}

pub fn run(args: &ImageArgs, settings: &Settings) -> Result<Exit, CliError> {
    let req = match &args.command {
        ImageCommand::Ls => ImageRequest::List,
        ImageCommand::Show { name } => ImageRequest::Show { name: name.clone() },
        ImageCommand::Register {
            name,
            rootfs,
            kernel,
            initrd,
        } => ImageRequest::Register(RegisterImage {
            name: name.clone(),
            rootfs: absolute(rootfs),
            kernel: kernel.clone(),
            initrd: initrd.as_deref().map(absolute),
        }),
        ImageCommand::Rm { name } => ImageRequest::Remove { name: name.clone() },
        ImageCommand::Promote { vm, name } => ImageRequest::Promote {
            vm: vm.clone(),
            name: name.clone(),
        },
        ImageCommand::Pull {
            reference,
            name,
            kernel,
            insecure,
        } => ImageRequest::Pull(PullImage {
            reference: pull_reference(reference),
            name: name.clone(),
            kernel: kernel.clone(),
            insecure: *insecure,
            docker_config: std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".docker/config.json"))
                .filter(|p| p.is_file()),
        }),
        ImageCommand::Refresh { name } => ImageRequest::Refresh { name: name.clone() },
        ImageCommand::Build {
            distro,
            suite,
            name,
        } => ImageRequest::Build(BuildImage {
            distro: distro.clone(),
            suite: Some(suite.clone()),
            name: name.clone(),
        }),
    };
    let mut client = super::connect(settings)?;
    let resp = match call_with_progress(&mut client, &Request::Image(req))? {
        Response::Image(r) => r,
        other => {
            return Err(client
                .unexpected("an image result", response_name(&other))
                .into());
        }
    };
    match resp {
        ImageResponse::List(list) if settings.json => output::json(&list)?,
        ImageResponse::List(list) => output::stdout(list_text(&list).as_bytes())?,
        ImageResponse::Show(i)
        | ImageResponse::Registered(i)
        | ImageResponse::Removed(i)
        | ImageResponse::Built(i)
        | ImageResponse::Pulled(i)
        | ImageResponse::Promoted(i)
            if settings.json =>
        {
            output::json(&i)?
        }
        ImageResponse::Refreshed(r) if settings.json => output::json(&r)?,
        ImageResponse::Refreshed(r) => output::stdout(
            if r.rebuilt {
                format!("rebuilt the work seed of image {}\n", r.image.name)
            } else {
                format!("the work seed of image {} is up to date\n", r.image.name)
            }
            .as_bytes(),
        )?,
        ImageResponse::Show(i) => output::stdout(show_text(&i).as_bytes())?,
        ImageResponse::Registered(i) => output::stdout(
            format!(
                "registered image {} ({}, kernel {})\n",
                i.name,
                human_bytes(i.size_bytes),
                i.kernel
            )
            .as_bytes(),
        )?,
        ImageResponse::Removed(i) => {
            output::stdout(format!("removed image {}\n", i.name).as_bytes())?
        }
        ImageResponse::Promoted(i) => output::stdout(
            format!(
                "promoted to image {} ({}, kernel {})\n",
                i.name,
                human_bytes(i.size_bytes),
                i.kernel
            )
            .as_bytes(),
        )?,
        ImageResponse::Pulled(i) => output::stdout(
            format!(
                "pulled image {} ({}, kernel {})\n",
                i.name,
                human_bytes(i.size_bytes),
                i.kernel
            )
            .as_bytes(),
        )?,
        ImageResponse::Built(i) => output::stdout(
            format!(
                "built image {} ({}, kernel {})\n",
                i.name,
                human_bytes(i.size_bytes),
                i.kernel
            )
            .as_bytes(),
        )?,
    }
    Ok(Exit::Ok)
}

/// `image pull REF` as the daemon must see it: a local bundle path
/// (`./x`, `../x`) made absolute; URLs, absolute paths and OCI references
/// as given.
pub(crate) fn pull_reference(reference: &str) -> String {
    if reference.starts_with("./") || reference.starts_with("../") {
        absolute(Path::new(reference)).display().to_string()
    } else {
        reference.to_string()
    }
}

/// Send `req`, drawing its progress on a terminal: byte counts become a bar.
pub(crate) fn call_with_progress(client: &mut Client, req: &Request) -> Result<Response, CliError> {
    let mut line = ProgressLine::stderr();
    let answer = client.call(req, |p| line.update(&as_bar(p)));
    line.finish();
    Ok(answer?)
}

/// A byte-counted event as a percentage with a bar: `[42/100] copy:
/// ########------------ rootfs r.ext4 (1.0 GiB)`.
fn as_bar(p: &Progress) -> Progress {
    let barred = p.stage == "copy" || p.stage == "download";
    let Some(total) = p.total.filter(|t| *t > 0 && barred) else {
        return p.clone();
    };
    let pct = (p.done.min(total) * 100 / total) as usize;
    let filled = pct / 5;
    Progress {
        stage: p.stage.clone(),
        message: format!(
            "{}{} {}",
            "#".repeat(filled),
            "-".repeat(20 - filled),
            p.message
        ),
        done: pct as u64,
        total: Some(100),
    }
}

/// The path as the daemon must see it: absolute, against the CLI's working
/// directory. If that cannot be read the path goes as given and the daemon
/// refuses it, naming it.
pub(crate) fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `1.5 GiB`, `12 MiB`, `512 B`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v >= 10.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Rows padded into columns two spaces apart; the last column unpadded.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..ncols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

pub(crate) fn users_text(users: &[String]) -> String {
    if users.is_empty() {
        "-".into()
    } else {
        users.join(",")
    }
}

fn origin(o: ImageOrigin) -> &'static str {
    match o {
        ImageOrigin::Register => "register",
        ImageOrigin::Oci => "oci",
        ImageOrigin::Bundle => "bundle",
        ImageOrigin::Build => "build",
        ImageOrigin::Promote => "promote",
    }
}

fn list_text(list: &[ImageInfo]) -> String {
    if list.is_empty() {
        return "no images; add one with `banger image register`\n".into();
    }
    let mut rows = vec![vec![
        "NAME".to_string(),
        "KERNEL".into(),
        "SIZE".into(),
        "SOURCE".into(),
        "USED BY".into(),
    ]];
    rows.extend(list.iter().map(|i| {
        vec![
            i.name.clone(),
            i.kernel.clone(),
            human_bytes(i.size_bytes),
            origin(i.source).into(),
            users_text(&i.used_by),
        ]
    }));
    table(&rows)
}

fn show_text(i: &ImageInfo) -> String {
    let opt = |p: &Option<PathBuf>| p.as_ref().map_or("-".into(), |p| p.display().to_string());
    let rows = vec![
        vec!["name".to_string(), i.name.clone()],
        vec!["id".into(), i.id.clone()],
        vec!["kernel".into(), format!("{} ({})", i.kernel, i.kernel_id)],
        vec!["rootfs".into(), i.rootfs.display().to_string()],
        vec!["initrd".into(), opt(&i.initrd)],
        vec!["work seed".into(), opt(&i.work_seed)],
        vec![
            "size".into(),
            format!("{} ({} bytes)", human_bytes(i.size_bytes), i.size_bytes),
        ],
        vec![
            "source".into(),
            match &i.source_ref {
                Some(r) => format!("{} {r}", origin(i.source)),
                None => origin(i.source).into(),
            },
        ],
        vec!["created".into(), format!("{} (unix)", i.created_at)],
        vec!["used by".into(), users_text(&i.used_by)],
    ];
    table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ImageInfo {
        ImageInfo {
            id: "ab".repeat(16),
            name: "deb".into(),
            kernel: "k".into(),
            kernel_id: "cd".repeat(16),
            rootfs: "/s/images/x/rootfs.ext4".into(),
            initrd: None,
            work_seed: None,
            size_bytes: 1 << 30,
            source: ImageOrigin::Register,
            source_ref: Some("/tmp/r.ext4".into()),
            created_at: 5,
            used_by: vec!["dev".into(), "web".into()],
        }
    }

    #[test]
    fn list_is_a_table() {
        assert_eq!(
            list_text(&[info()]),
            "NAME  KERNEL  SIZE     SOURCE    USED BY\ndeb   k       1.0 GiB  register  dev,web\n"
        );
        assert!(list_text(&[]).starts_with("no images"));
    }

    #[test]
    fn show_lists_every_field() {
        let t = show_text(&info());
        assert!(t.contains("rootfs     /s/images/x/rootfs.ext4\n"), "{t}");
        assert!(t.contains("initrd     -\n"), "{t}");
        assert!(t.contains("source     register /tmp/r.ext4\n"), "{t}");
    }

    #[test]
    fn byte_progress_becomes_a_bar() {
        let p = Progress {
            stage: "copy".into(),
            message: "rootfs r.ext4 (1.0 GiB)".into(),
            done: 1 << 29,
            total: Some(1 << 30),
        };
        let b = as_bar(&p);
        assert_eq!((b.done, b.total), (50, Some(100)));
        assert_eq!(
            b.message,
            format!(
                "{}{} rootfs r.ext4 (1.0 GiB)",
                "#".repeat(10),
                "-".repeat(10)
            )
        );
        let other = Progress {
            stage: "fsck".into(),
            message: "x".into(),
            done: 0,
            total: None,
        };
        assert_eq!(as_bar(&other), other);
    }

    #[test]
    fn local_bundle_paths_are_made_absolute() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            pull_reference("./b.tar"),
            cwd.join("b.tar").display().to_string()
        );
        assert!(pull_reference("../b.tar").starts_with('/'));
        for r in ["debian:12", "127.0.0.1:5000/t/b:1", "http://h/b", "/srv/b"] {
            assert_eq!(pull_reference(r), r);
        }
    }

    #[test]
    fn relative_paths_are_made_absolute() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(absolute(Path::new("r.ext4")), cwd.join("r.ext4"));
        assert_eq!(absolute(Path::new("/a/b")), Path::new("/a/b"));
    }
}
