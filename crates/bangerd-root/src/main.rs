//! `bangerd-root`: the narrow root helper.
//!
//! Serves the closed privileged-ops enum (`banger_proto::privops`) on its own
//! socket to exactly one uid, the installed owner read from install metadata,
//! and hands every request to the shared executor. It has no other surface:
//! no configuration beyond the install metadata (owner, paths, VMM binaries,
//! the bridge and its subnet) and root's image cache directory, no outbound
//! connections of its own (the default-image build it starts in a transient
//! unit downloads from Debian's mirror), no shell.

mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use banger_executor::image::{BuildLaunch, ImageBuildConfig};
use banger_proto::install::{DEFAULT_INSTALL_FILE, InstallMeta};

/// Root's image cache unless `BANGER_CACHE_DIR` says otherwise.
const IMAGE_CACHE_DIR: &str = "/var/cache/banger";

const USAGE: &str = "\
usage: bangerd-root [--install-file FILE] [--socket PATH]

The banger root helper. Started by systemd (bangerd-root.service); serves
privileged operations to the owner recorded in the install metadata.

  --install-file FILE  install metadata (default /etc/banger/install.toml)
  --socket PATH        socket to serve (default: paths.root_socket from it)
  -h, --help           this help
  -V, --version        print the version";

#[derive(Debug)]
struct Args {
    install_file: PathBuf,
    socket: Option<PathBuf>,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut install_file = PathBuf::from(DEFAULT_INSTALL_FILE);
    let mut socket = None;
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        let arg = arg.to_string_lossy().into_owned();
        let mut value = |name: &str| {
            it.next()
                .map(PathBuf::from)
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--install-file" => install_file = value("--install-file")?,
            "--socket" => socket = Some(value("--socket")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("bangerd-root {}", banger_proto::BANGER_VERSION);
                return Ok(None);
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    Ok(Some(Args {
        install_file,
        socket,
    }))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bangerd-root: {e}");
            return ExitCode::from(2);
        }
    };
    // While this process has one thread: fork the jail spawner, then lock
    // this process (and every thread and child it will have) out of mounts
    // and namespaces. Only the spawner keeps them.
    let meta = match start_spawner(&args) {
        Ok(m) => m,
        Err(e) => {
            let chain = banger_proto::error::chain(e.as_ref()).join(": ");
            eprintln!("bangerd-root: {chain}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BANGER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        // A log line that cannot be written (nobody reads stderr any more)
        // is dropped. The default reports it with `eprintln!`, which panics
        // on that same closed stderr and kills the logging thread — the
        // signal thread included, after which SIGTERM no longer stops us.
        .log_internal_errors(false)
        .init();
    match run(args, meta) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain = banger_proto::error::chain(e.as_ref()).join(": ");
            eprintln!("bangerd-root: {chain}");
            ExitCode::FAILURE
        }
    }
}

/// Read the install metadata, fork the jail spawner with its jail range
/// and lock this process down (`banger_host::jail::lock_down`). Before any
/// thread: the spawner is forked, and the filter binds only the threads
/// made after it.
fn start_spawner(args: &Args) -> Result<InstallMeta, Box<dyn std::error::Error + 'static>> {
    if !rustix::process::geteuid().is_root() {
        return Err("bangerd-root must run as root (it is started by bangerd-root.service)".into());
    }
    let meta = InstallMeta::load(&args.install_file)?;
    let range = meta.jail.uid_base..meta.jail.uid_base.saturating_add(meta.jail.count);
    // The jailed tools' binds: disks beneath the state dir, staging
    // directories in the temporary directory (the executor's `tempfile`).
    let bind_dirs = [meta.paths.state_dir.as_path(), &std::env::temp_dir()];
    banger_host::jail::spawner::start(range, &bind_dirs)
        .map_err(|e| format!("starting the jail spawner: {e}"))?;
    banger_host::jail::lock_down().map_err(|e| format!("locking the helper down: {e}"))?;
    Ok(meta)
}

fn run(args: Args, meta: InstallMeta) -> Result<(), Box<dyn std::error::Error + 'static>> {
    let socket = args
        .socket
        .unwrap_or_else(|| meta.paths.root_socket.clone());
    serve::serve(serve::Settings {
        socket,
        owner_uid: meta.owner.uid,
        owner_gid: meta.owner.gid,
        journal: meta.paths.root_state_dir.join("journal.json"),
        state_dir: meta.paths.state_dir.clone(),
        qemu_bin: meta.vmm.qemu_bin.clone(),
        firecracker_bin: meta.vmm.firecracker_bin.clone(),
        jail: meta.jail,
        // The builder the install copied beside this binary (root-owned);
        // its cache is root's, the same one `sudo banger-imagebuild debian`
        // fills: `$BANGER_CACHE_DIR` as root's unit sets it, else
        // /var/cache/banger.
        image_builds: ImageBuildConfig {
            exe: meta.paths.bin_dir.join("banger-imagebuild"),
            cache_dir: match std::env::var_os("BANGER_CACHE_DIR") {
                Some(d) if !d.is_empty() => PathBuf::from(d),
                _ => PathBuf::from(IMAGE_CACHE_DIR),
            },
            launch: BuildLaunch::detect(),
        },
        bridge: meta.network.bridge_spec(),
    })?;
    Ok(())
}
