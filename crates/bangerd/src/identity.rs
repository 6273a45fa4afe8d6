//! banger's SSH client identity: the key pair `vm ssh`, workspace transfers
//! and guests' `authorized_keys` share, in `ssh/` beside the owner's config
//! (`Layout::client_key`; versions before the move kept it in
//! `state_dir/ssh/`, copied over on first use), owner-owned, 0700. Its own
//! module: the VM, image (work seeds) and workspace services all use it, and
//! none of them owns it.

use std::path::{Path, PathBuf};

use banger_host::runner::{Cmd, Runner};
use banger_proto::{ErrorCode, RpcError};

use crate::layout::Layout;

fn internal(msg: String) -> RpcError {
    RpcError::new(ErrorCode::Internal, msg)
}

/// banger's client private key (`Layout::client_key`: beside the owner's
/// config in a running daemon, see startup).
pub fn identity(layout: &Layout) -> PathBuf {
    layout.client_key.clone()
}

/// Where versions before the move kept the key.
fn legacy_identity(layout: &Layout) -> PathBuf {
    Layout::state_client_key(&layout.state_dir)
}

/// Make sure banger's client key pair exists; return its public half.
/// Serialized: two first callers (a VM create and a seed build, say) must
/// not both run `ssh-keygen` on the same file.
pub fn ensure_identity(layout: &Layout) -> Result<String, RpcError> {
    static KEYGEN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = KEYGEN.lock().unwrap_or_else(|e| e.into_inner());
    let key = identity(layout);
    let dir = key.parent().expect("key has a parent");
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|e| internal(format!("creating {}: {e}", dir.display())))?;
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let legacy = legacy_identity(layout);
    if !key.exists() && key != legacy && legacy.exists() {
        // Existing guests trust the key an earlier version made: move it.
        for ext in ["", ".pub"] {
            let (from, to) = (
                PathBuf::from(format!("{}{ext}", legacy.display())),
                PathBuf::from(format!("{}{ext}", key.display())),
            );
            std::fs::copy(&from, &to).map_err(|e| {
                internal(format!(
                    "moving {} to {}: {e}",
                    from.display(),
                    to.display()
                ))
            })?;
        }
        let _ = std::fs::remove_file(&legacy);
        let _ = std::fs::remove_file(legacy.with_extension("pub"));
    }
    if !key.exists() {
        keygen(&key, "banger")?;
    }
    read(&key.with_extension("pub"))
}

pub(crate) fn keygen(path: &Path, comment: &str) -> Result<(), RpcError> {
    Runner
        .run(
            &Cmd::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                .arg(path),
        )
        .map_err(|e| {
            RpcError::from_error(banger_proto::ErrorCode::Unavailable, &e)
                .context("generating an SSH key (is openssh-client installed?)")
        })?;
    Ok(())
}

pub(crate) fn read(p: &Path) -> Result<String, RpcError> {
    std::fs::read_to_string(p).map_err(|e| internal(format!("reading {}: {e}", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_key_lives_beside_the_owner_config() {
        let layout = Layout::dev(Some("/var/lib/b".into()), Some("/run/b".into())).unwrap();
        assert_eq!(identity(&layout), Path::new("/var/lib/b/ssh/id_ed25519"));
        let layout =
            layout.with_owner_config(Some(Path::new("/home/u/.config/banger/config.toml")));
        assert_eq!(
            identity(&layout),
            Path::new("/home/u/.config/banger/ssh/id_ed25519")
        );
        assert_eq!(
            legacy_identity(&layout),
            Path::new("/var/lib/b/ssh/id_ed25519")
        );
    }
}
