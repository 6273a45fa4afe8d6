//! Install metadata (`/etc/banger/install.toml`), written by
//! `banger system install` and read by both daemons: it is how `bangerd-root`
//! learns the one uid it serves and how `bangerd` learns its layout.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default location of the install metadata.
pub const DEFAULT_INSTALL_FILE: &str = "/etc/banger/install.toml";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallMeta {
    pub owner: Owner,
    /// banger version that wrote this file.
    pub version: String,
    /// RFC 3339 time of the install.
    pub installed_at: String,
    pub paths: InstallPaths,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallPaths {
    pub bin_dir: PathBuf,
    /// Owner-owned state: store, images, kernels, VMs.
    pub state_dir: PathBuf,
    /// Runtime directory holding `bangerd.sock`.
    pub runtime_dir: PathBuf,
    /// The helper's socket.
    pub root_socket: PathBuf,
    /// Root-owned state of the helper (its journal of host objects).
    pub root_state_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallMetaError {
    #[error("reading install metadata {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("install metadata {path} is invalid")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
}

impl InstallMeta {
    pub fn load(path: &Path) -> Result<InstallMeta, InstallMetaError> {
        let text = std::fs::read_to_string(path).map_err(|source| InstallMetaError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<InstallMeta, InstallMetaError> {
        toml::from_str(text).map_err(|source| InstallMetaError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("install metadata always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InstallMeta {
        InstallMeta {
            owner: Owner {
                name: "dev".into(),
                uid: 1000,
                gid: 1000,
            },
            version: "0.1.0".into(),
            installed_at: "2026-11-26T20:00:00Z".into(),
            paths: InstallPaths {
                bin_dir: "/usr/local/bin".into(),
                state_dir: "/var/lib/banger".into(),
                runtime_dir: "/run/banger".into(),
                root_socket: "/run/banger-root/root.sock".into(),
                root_state_dir: "/var/lib/banger-root".into(),
            },
        }
    }

    #[test]
    fn round_trips_through_toml() {
        let m = sample();
        let back = InstallMeta::parse(&m.to_toml(), Path::new("/x")).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn typo_names_the_key_and_file() {
        let text = sample().to_toml().replace("uid = 1000", "uuid = 1000");
        let err = InstallMeta::parse(&text, Path::new("/etc/banger/install.toml")).unwrap_err();
        let chain = crate::error::chain(&err).join(": ");
        assert!(chain.contains("/etc/banger/install.toml"), "{chain}");
        assert!(chain.contains("uuid"), "{chain}");
    }
}
