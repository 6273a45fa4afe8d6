//! What more than one target needs.

use std::path::Path;
use std::sync::OnceLock;

/// A scratch directory for the whole run, on tmpfs where there is one
/// (the code under test `fsync`s what it writes: there that costs
/// nothing), named `banger-fuzz-<what>-*`.
pub fn scratch(what: &str) -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        tempfile::Builder::new()
            .prefix(&format!("banger-fuzz-{what}-"))
            .tempdir_in(base)
            .expect("making the scratch directory")
    })
    .path()
}
