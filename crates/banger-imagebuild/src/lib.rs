//! Builds what banger's VMs boot.
//!
//! * [`kernel`]: a kernel plus initramfs from a Debian `linux-image-*`
//!   package ([`kernel_from_deb`]), and [`extract_vmlinux`] for VMMs that
//!   want an uncompressed ELF.
//! * [`debian`]: a Debian root filesystem with banger's guest contract
//!   (docs/guest.md) baked in ([`build_debian`]), cached by its inputs.
//! * [`seed`]: the managed work seed, the ext4 every VM's work disk starts
//!   from ([`build_work_seed`]).
//! * [`catalog`], [`fetch`] and [`pull`]: the kernel catalog, verified
//!   downloads, and [`pull_kernel`] which turns an entry into boot files.
//! * [`bundle`]: image bundles (a tar, optionally zstd-compressed, of a
//!   manifest, a root filesystem and optionally a kernel and an initrd),
//!   read as a stream ([`read_bundle`]) and written ([`write_bundle`]).
//!
//! Everything runs child processes through [`banger_host::runner::Runner`]
//! and writes only below the output or cache directory it is given. Nothing
//! here mounts a filesystem or sets up a loop device: trees are packed with
//! `mkfs.ext4 -d` and adjusted with `debugfs`.

pub mod bundle;
pub mod catalog;
mod cpio;
pub mod debian;
mod ext4;
pub mod fetch;
pub mod guest;
pub mod kernel;
mod modules;
pub mod pull;
pub mod seed;
mod vmlinux;

use std::path::PathBuf;

pub use bundle::{Bundle, BundleError, read_bundle, write_bundle};
pub use catalog::{Catalog, CatalogEntry, KernelKind};
pub use debian::{BuiltImage, DebianOptions, build_debian};
pub use fetch::fetch_verified;
pub use kernel::{BuiltKernel, extract_vmlinux, kernel_from_deb};
pub use pull::{PulledKernel, pull_kernel};
pub use seed::{WorkSeed, build_work_seed, work_seed_hash};

/// What long work reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A new step started (human-readable, one line).
    Step(String),
    /// Bytes transferred so far, and the total when the server said.
    Bytes { done: u64, total: Option<u64> },
}

/// A progress sink that drops everything.
pub fn no_progress(_: Progress) {}

/// The cache directory for built images and downloaded packages:
/// `$BANGER_CACHE_DIR`, else `/var/cache/banger`.
pub fn default_cache_dir() -> PathBuf {
    match std::env::var_os("BANGER_CACHE_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("/var/cache/banger"),
    }
}

/// Lowercase hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// An error and its sources, `: `-joined (tests and logs).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
