//! The managed work seed: a small ext4 (label `banger-work`) holding the
//! home directory of the guest user, copied to make every VM's work disk
//! (mounted at `/home/banger`, see docs/guest.md).
//!
//! The tree is packed with `mkfs.ext4 -d`, then every inode is given to
//! uid/gid 1000 with `debugfs`, so the result is the same whether the
//! builder is root or the unprivileged owner daemon. [`work_seed_hash`]
//! names the inputs; the daemon rebuilds the seed when it changes.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use crate::ext4::{self, Ext4Error};
use crate::guest::{GUEST_CONTRACT_VERSION, GUEST_GID, GUEST_UID, WORK_LABEL};
use crate::hex;

/// Size of the seed image (the daemon grows each VM's copy as asked).
pub const WORK_SEED_SIZE: u64 = 64 << 20;

/// Bump when the skeleton below changes.
const SEED_LAYOUT_VERSION: u32 = 1;

const BASHRC: &str = "\
# ~/.bashrc of a banger VM
case $- in *i*) ;; *) return ;; esac
HISTCONTROL=ignoreboth
HISTSIZE=5000
shopt -s histappend checkwinsize
PS1='\\u@\\h:\\w\\$ '
alias ls='ls --color=auto'
alias ll='ls -alF'
";

const PROFILE: &str = "\
# ~/.profile of a banger VM
if [ -n \"$BASH_VERSION\" ] && [ -f \"$HOME/.bashrc\" ]; then
    . \"$HOME/.bashrc\"
fi
if [ -d \"$HOME/.local/bin\" ]; then
    PATH=\"$HOME/.local/bin:$PATH\"
fi
";

/// A built seed and the hash of its inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkSeed {
    pub path: PathBuf,
    /// [`work_seed_hash`] of the inputs, also stored in the seed as
    /// `.banger/seed`.
    pub hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("public key {index} is not one OpenSSH public key line: {why}")]
    BadKey { index: usize, why: &'static str },
    #[error("no owner public key given; the guest would accept no login")]
    NoKeys,
    #[error("preparing the seed tree in {}", path.display())]
    Tree {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("building the work seed {}", path.display())]
    Image {
        path: PathBuf,
        #[source]
        source: Box<Ext4Error>,
    },
    #[error("publishing the work seed at {}", path.display())]
    Publish {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn normalized_keys(keys: &[String]) -> Result<Vec<String>, SeedError> {
    let mut out = Vec::new();
    for (index, k) in keys.iter().enumerate() {
        let k = k.trim();
        if k.is_empty() {
            continue;
        }
        if k.contains(['\n', '\r', '\0']) {
            return Err(SeedError::BadKey {
                index,
                why: "it spans several lines",
            });
        }
        let kind = k.split_whitespace().next().unwrap_or("");
        let known = kind.starts_with("ssh-")
            || kind.starts_with("ecdsa-sha2-")
            || kind.starts_with("sk-ssh-")
            || kind.starts_with("sk-ecdsa-");
        if !known || k.split_whitespace().count() < 2 {
            return Err(SeedError::BadKey {
                index,
                why: "expected `TYPE BASE64 [comment]` with an ssh-*/ecdsa-*/sk-* type",
            });
        }
        out.push(k.to_string());
    }
    if out.is_empty() {
        return Err(SeedError::NoKeys);
    }
    Ok(out)
}

/// sha256 of everything that goes into the seed: the keys (trimmed, in
/// order), the banger version and the guest contract and layout versions.
pub fn work_seed_hash(owner_pubkeys: &[String], banger_version: &str) -> String {
    let keys: Vec<&str> = owner_pubkeys
        .iter()
        .map(|k| k.trim())
        .filter(|k| !k.is_empty())
        .collect();
    let text = format!(
        "banger work seed\nlayout={SEED_LAYOUT_VERSION}\ncontract={GUEST_CONTRACT_VERSION}\nversion={banger_version}\nkeys:\n{}\n",
        keys.join("\n")
    );
    hex(&sha2::Sha256::digest(text.as_bytes()))
}

/// Build the work seed at `out` (through a temporary file beside it and a
/// rename). Works as root or as an unprivileged user.
pub fn build_work_seed(
    owner_pubkeys: &[String],
    banger_version: &str,
    out: &Path,
) -> Result<WorkSeed, SeedError> {
    let keys = normalized_keys(owner_pubkeys)?;
    let hash = work_seed_hash(owner_pubkeys, banger_version);
    let dir = out.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".banger-seed-")
        .tempdir_in(dir)
        .map_err(|source| SeedError::Tree {
            path: dir.to_path_buf(),
            source,
        })?;
    let tree = tmp.path().join("home");
    let files: [(&str, u32, String); 4] = [
        (".bashrc", 0o644, BASHRC.to_string()),
        (".profile", 0o644, PROFILE.to_string()),
        (".ssh/authorized_keys", 0o600, keys.join("\n") + "\n"),
        (
            ".banger/seed",
            0o644,
            format!("hash={hash}\nbanger={banger_version}\n"),
        ),
    ];
    (|| -> std::io::Result<()> {
        for d in ["", ".ssh", ".banger"] {
            let p = tree.join(d);
            std::fs::create_dir_all(&p)?;
            let mode = if d == ".ssh" { 0o700 } else { 0o755 };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        }
        for (name, mode, body) in &files {
            let p = tree.join(name);
            std::fs::write(&p, body)?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))?;
        }
        Ok(())
    })()
    .map_err(|source| SeedError::Tree {
        path: tree.clone(),
        source,
    })?;

    let image = tmp.path().join("seed.ext4");
    let image_err = |source| SeedError::Image {
        path: out.to_path_buf(),
        source: Box::new(source),
    };
    ext4::mkfs_from_tree(&tree, &image, WORK_LABEL, WORK_SEED_SIZE).map_err(image_err)?;
    let mut requests = String::new();
    for p in ["/", "/.ssh", "/.banger"]
        .into_iter()
        .chain(files.iter().map(|(n, _, _)| *n))
    {
        let p = if p.starts_with('/') {
            p.to_string()
        } else {
            format!("/{p}")
        };
        requests.push_str(&format!(
            "sif {p} uid {GUEST_UID}\nsif {p} gid {GUEST_GID}\n"
        ));
    }
    ext4::debugfs_write(&image, &requests).map_err(image_err)?;
    ext4::fsck(&image).map_err(image_err)?;
    std::fs::rename(&image, out).map_err(|source| SeedError::Publish {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(WorkSeed {
        path: out.to_path_buf(),
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ0 owner@host";

    #[test]
    fn hash_follows_keys_and_version_not_whitespace() {
        let a = work_seed_hash(&[KEY.into()], "0.1.0");
        assert_eq!(
            a,
            work_seed_hash(&[format!("  {KEY}\n"), String::new()], "0.1.0")
        );
        assert_ne!(a, work_seed_hash(&[KEY.into()], "0.1.1"));
        assert_ne!(
            a,
            work_seed_hash(&[KEY.into(), KEY.replace("J0", "J1")], "0.1.0")
        );
    }

    #[test]
    fn keys_are_checked_and_named_by_position() {
        assert!(matches!(normalized_keys(&[]), Err(SeedError::NoKeys)));
        let err = normalized_keys(&[KEY.into(), "hello".into()]).unwrap_err();
        assert!(err.to_string().contains("public key 1"), "{err}");
        let err = normalized_keys(&[format!("{KEY}\n{KEY}")]).unwrap_err();
        assert!(err.to_string().contains("several lines"), "{err}");
    }
}
