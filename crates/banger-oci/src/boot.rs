//! Does the flattened image carry what a banger guest needs to boot: an init
//! system and an SSH server? Paths are resolved in the image model,
//! following the image's own symlinks (never the host's).

use crate::tree::{Kind, Tree};

/// Where banger looks for an init, in order.
pub const INIT_PATHS: [&str; 6] = [
    "/sbin/init",
    "/lib/systemd/systemd",
    "/usr/lib/systemd/systemd",
    "/usr/sbin/init",
    "/bin/init",
    "/init",
];

/// Where banger looks for an SSH server, in order.
pub const SSHD_PATHS: [&str; 5] = [
    "/usr/sbin/sshd",
    "/sbin/sshd",
    "/usr/bin/sshd",
    "/usr/sbin/dropbear",
    "/usr/bin/dropbear",
];

/// A boot requirement an image may miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootRequirement {
    Init,
    SshServer,
}

/// The result of the boot check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootCheck {
    /// The init found: (path looked up, the file it resolves to).
    pub init: Option<(String, String)>,
    /// The SSH server found: (path looked up, the file it resolves to).
    pub ssh_server: Option<(String, String)>,
}

impl BootCheck {
    pub fn missing(&self) -> Vec<BootRequirement> {
        let mut m = Vec::new();
        if self.init.is_none() {
            m.push(BootRequirement::Init);
        }
        if self.ssh_server.is_none() {
            m.push(BootRequirement::SshServer);
        }
        m
    }

    pub fn is_bootable(&self) -> bool {
        self.missing().is_empty()
    }

    /// One line for the user, `None` when nothing is missing.
    pub fn message(&self) -> Option<String> {
        let parts: Vec<String> = self
            .missing()
            .iter()
            .map(|r| match r {
                BootRequirement::Init => {
                    format!("no init system (looked for {})", INIT_PATHS.join(", "))
                }
                BootRequirement::SshServer => {
                    format!("no SSH server (looked for {})", SSHD_PATHS.join(", "))
                }
            })
            .collect();
        (!parts.is_empty())
            .then(|| format!("image cannot boot as a banger VM: {}", parts.join("; ")))
    }
}

/// Check `tree` for an executable regular file at the usual places.
pub fn check(tree: &Tree) -> BootCheck {
    let find = |paths: &[&str]| {
        paths.iter().find_map(|p| {
            let (id, real) = tree.resolve(p)?;
            let n = &tree.nodes[id];
            (matches!(n.kind, Kind::File { .. }) && n.meta.perm & 0o111 != 0)
                .then(|| (p.to_string(), real))
        })
    };
    BootCheck {
        init: find(&INIT_PATHS),
        ssh_server: find(&SSHD_PATHS),
    }
}
