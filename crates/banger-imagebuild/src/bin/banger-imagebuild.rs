//! `banger-imagebuild debian [--suite S] [--cache-dir DIR] [--package P]...`
//!
//! Builds (or finds in the cache) the default Debian image — the same
//! [`banger_imagebuild::build_debian`] that `banger image build debian`
//! runs inside the daemon — and prints the cache entry's paths as JSON.
//!
//! It exists for places where the daemon cannot reach a Debian mirror but
//! the caller can: `make demo` runs its dev daemon in a private network
//! namespace with no route out, so it fills the cache here first, in the
//! host's namespace, and the daemon's `image build debian` then finds the
//! image by its inputs. Needs root (mmdebstrap `--mode=root`).

use std::path::PathBuf;
use std::process::ExitCode;

use banger_imagebuild::{DebianOptions, Progress, build_debian, default_cache_dir, error_chain};

const USAGE: &str =
    "usage: banger-imagebuild debian [--suite SUITE] [--cache-dir DIR] [--package PKG]...";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("debian") {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let mut opts = DebianOptions::new(default_cache_dir());
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else {
            eprintln!("{flag} needs a value\n{USAGE}");
            return ExitCode::from(2);
        };
        match flag.as_str() {
            "--suite" => opts.suite = value,
            "--cache-dir" => opts.cache_dir = PathBuf::from(value),
            "--package" => opts.packages.push(value),
            _ => {
                eprintln!("unknown argument {flag:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let built = build_debian(&opts, &mut |p| {
        if let Progress::Step(s) = p {
            eprintln!("  {s}");
        }
    });
    match built {
        Ok(img) => {
            let out = serde_json::json!({
                "cache_key": img.cache_key,
                "rootfs": img.rootfs_ext4,
                "kernel": img.kernel,
                "initrd": img.initrd,
                "kernel_version": img.kernel_version,
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
