//! The per-VM half of the guest contract (docs/guest.md): network config,
//! hostname, resolver, the owner's public key, and SSH host keys banger
//! generates so `known_hosts` is exact and checking strict.
//!
//! Keys: banger's client key pair lives in `ssh/` beside the owner's config
//! (`Layout::client_key`; versions before the move kept it in
//! `state_dir/ssh/`, copied over on first use), owner-owned, 0700;
//! `state_dir/ssh/known_hosts` holds one `NAME.vm` line per VM.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use banger_host::runner::{Cmd, Runner};
use banger_proto::RpcError;
use banger_proto::vmops::GuestFile;

use super::internal;
use crate::layout::Layout;

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

fn keygen(path: &Path, comment: &str) -> Result<(), RpcError> {
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

fn read(p: &Path) -> Result<String, RpcError> {
    std::fs::read_to_string(p).map_err(|e| internal(format!("reading {}: {e}", p.display())))
}

/// A fresh ed25519 host key pair for a guest: (private, public).
pub fn host_key(name: &str) -> Result<(String, String), RpcError> {
    let dir = tempfile::tempdir().map_err(|e| internal(format!("temp dir: {e}")))?;
    let key = dir.path().join("host");
    keygen(&key, &format!("{name}.vm"))?;
    Ok((read(&key)?, read(&key.with_extension("pub"))?))
}

/// What the guest needs to come up as `name` at `ip`.
pub struct GuestNet {
    pub name: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub mac: String,
    pub gateway: Ipv4Addr,
}

pub fn files(net: &GuestNet, owner_keys: &str, host_key: &(String, String)) -> Vec<GuestFile> {
    let root = |path: &str, mode: u32, content: String| GuestFile {
        path: path.to_string(),
        mode,
        uid: 0,
        gid: 0,
        content,
    };
    let GuestNet {
        name,
        ip,
        prefix,
        mac,
        gateway,
    } = net;
    vec![
        root("/etc/hostname", 0o644, format!("{name}\n")),
        root(
            "/etc/hosts",
            0o644,
            format!(
                "127.0.0.1 localhost\n127.0.1.1 {name}.vm {name}\n::1 localhost ip6-localhost\n"
            ),
        ),
        root(
            "/etc/systemd/network/10-banger.network",
            0o644,
            format!(
                "# Written by banger for this VM.\n[Match]\nMACAddress={mac}\n\n[Network]\n\
                 Address={ip}/{prefix}\nGateway={gateway}\nDNS={gateway}\nDomains=vm\n"
            ),
        ),
        root(
            "/etc/resolv.conf",
            0o644,
            format!("# Written by banger: the host's .vm DNS.\nnameserver {gateway}\nsearch vm\n"),
        ),
        root("/etc/banger/authorized_keys", 0o644, owner_keys.to_string()),
        root("/etc/ssh/ssh_host_ed25519_key", 0o600, host_key.0.clone()),
        root(
            "/etc/ssh/ssh_host_ed25519_key.pub",
            0o644,
            host_key.1.clone(),
        ),
    ]
}

/// Replace `alias`'s line in banger's known_hosts with `public_key`.
pub fn set_known_host(
    known_hosts: &Path,
    alias: &str,
    public_key: Option<&str>,
) -> Result<(), RpcError> {
    // One writer at a time: two VM creates at once each read the file,
    // wrote the same `.tmp` and renamed it, so one rename found it gone
    // (ENOENT) and the other's line could be lost.
    static WRITER: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _writer = WRITER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let old = std::fs::read_to_string(known_hosts).unwrap_or_default();
    let mut lines: Vec<String> = old
        .lines()
        .filter(|l| l.split_whitespace().next() != Some(alias))
        .map(str::to_string)
        .collect();
    if let Some(k) = public_key {
        // `ssh-ed25519 AAAA… comment` → `alias ssh-ed25519 AAAA…`.
        let mut parts = k.split_whitespace();
        let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
            return Err(internal("generated host key has an unexpected format"));
        };
        lines.push(format!("{alias} {kind} {blob}"));
    }
    let dir = known_hosts.parent().expect("known_hosts has a parent");
    std::fs::create_dir_all(dir)
        .map_err(|e| internal(format!("creating {}: {e}", dir.display())))?;
    let tmp = known_hosts.with_extension("tmp");
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    std::fs::write(&tmp, text).map_err(|e| internal(format!("writing {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, known_hosts)
        .map_err(|e| internal(format!("replacing {}: {e}", known_hosts.display())))
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

    #[test]
    fn known_hosts_lines_are_replaced_not_duplicated() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        set_known_host(&kh, "a.vm", Some("ssh-ed25519 AAAA1 a.vm")).unwrap();
        set_known_host(&kh, "b.vm", Some("ssh-ed25519 BBBB b.vm")).unwrap();
        set_known_host(&kh, "a.vm", Some("ssh-ed25519 AAAA2 a.vm")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&kh).unwrap(),
            "b.vm ssh-ed25519 BBBB\na.vm ssh-ed25519 AAAA2\n"
        );
        set_known_host(&kh, "b.vm", None).unwrap();
        assert_eq!(
            std::fs::read_to_string(&kh).unwrap(),
            "a.vm ssh-ed25519 AAAA2\n"
        );
    }

    #[test]
    fn guest_files_carry_the_lease() {
        let net = GuestNet {
            name: "dev".into(),
            ip: Ipv4Addr::new(172, 30, 0, 5),
            prefix: 24,
            mac: "02:ba:ac:1e:00:05".into(),
            gateway: Ipv4Addr::new(172, 30, 0, 1),
        };
        let f = files(&net, "ssh-ed25519 K me\n", &("priv".into(), "pub".into()));
        let get = |p: &str| f.iter().find(|g| g.path == p).unwrap();
        assert!(
            get("/etc/systemd/network/10-banger.network")
                .content
                .contains("Address=172.30.0.5/24\nGateway=172.30.0.1\nDNS=172.30.0.1")
        );
        assert_eq!(get("/etc/ssh/ssh_host_ed25519_key").mode, 0o600);
        assert_eq!(get("/etc/hostname").content, "dev\n");
    }
}
