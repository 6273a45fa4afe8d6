//! `banger-imagebuild debian [--suite S] [--cache-dir DIR] [--package P]... [--bundle FILE]`
//!
//! Builds (or finds in the cache) the default Debian image — the same
//! [`banger_imagebuild::build_debian`] that `banger image build debian`
//! runs inside the daemon — and prints the cache entry's paths as JSON.
//! With `--bundle FILE` it also writes the image as a bundle (docs/images.md)
//! that `banger image pull FILE` publishes.
//!
//! It exists for places where the daemon cannot build: `make demo` runs its
//! dev daemon in a private network namespace with no route to the mirror,
//! so it fills the cache here first and the daemon's `image build debian`
//! then finds the image by its inputs; and in system mode the owner's
//! daemon cannot run mmdebstrap (it needs root), so the root helper runs
//! this program (installed beside it) in a transient systemd unit and reads
//! the JSON line it prints (`ImageOp::BuildDebianImage`). Needs root (mmdebstrap `--mode=root`).

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use banger_imagebuild::bundle::{BundleFiles, write_bundle};
use banger_imagebuild::{DebianOptions, Progress, build_debian, default_cache_dir, error_chain};

const USAGE: &str = "usage: banger-imagebuild debian [--suite SUITE] [--cache-dir DIR] \
                     [--package PKG]... [--bundle FILE] [--cached-only] | --version";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    if matches!(first.as_deref(), Some("--version" | "-V")) {
        // `banger system status` asks every installed binary for this.
        println!("banger-imagebuild {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if first.as_deref() != Some("debian") {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let mut opts = DebianOptions::new(default_cache_dir());
    let mut bundle: Option<PathBuf> = None;
    while let Some(flag) = args.next() {
        if flag == "--cached-only" {
            opts.cached_only = true;
            continue;
        }
        let Some(value) = args.next() else {
            eprintln!("{flag} needs a value\n{USAGE}");
            return ExitCode::from(2);
        };
        match flag.as_str() {
            "--suite" => opts.suite = value,
            "--cache-dir" => opts.cache_dir = PathBuf::from(value),
            "--package" => opts.packages.push(value),
            "--bundle" => bundle = Some(PathBuf::from(value)),
            _ => {
                eprintln!("unknown argument {flag:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let built = build_debian(&opts, &mut |p| {
        if let Progress::Step(s) = p {
            // Not eprintln!: a reader gone away (the helper that started a
            // build restarted) must not abort the build half-way.
            let _ = writeln!(std::io::stderr(), "  {s}");
        }
    });
    match built {
        Ok(img) => {
            if let Some(out) = &bundle
                && let Err(e) = write_bundle_file(&img, out)
            {
                eprintln!("banger-imagebuild: {e}");
                return ExitCode::FAILURE;
            }
            let out = serde_json::json!({
                "cache_key": img.cache_key,
                "rootfs": img.rootfs_ext4,
                "kernel": img.kernel,
                "initrd": img.initrd,
                "kernel_version": img.kernel_version,
                "cached": img.cached,
            });
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("banger-imagebuild: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Write `img` as a bundle at `out`: into a temporary file beside it, then
/// renamed over, so a failed or interrupted write leaves no half bundle.
fn write_bundle_file(img: &banger_imagebuild::BuiltImage, out: &Path) -> Result<(), String> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let fail = |what: &str, e: &dyn std::error::Error| {
        format!("{what} {}: {}", out.display(), error_chain(e))
    };
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| fail("creating", &e))?;
    write_bundle(
        std::io::BufWriter::new(tmp.as_file()),
        // The name `image build debian` gives the default image.
        &BundleFiles::of_image("debian", img),
        None,
    )
    .map_err(|e| fail("writing the bundle", &e))?;
    // Readable by the owner who pulls it (the temporary file is 0600).
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
        .map_err(|e| fail("setting the mode of", &e))?;
    tmp.persist(out)
        .map_err(|e| fail("renaming into", &e.error))?;
    eprintln!("  wrote the bundle {}", out.display());
    Ok(())
}
