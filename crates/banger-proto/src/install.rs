//! Install metadata (`/etc/banger/install.toml`), written by
//! `banger system install` and read by both daemons: it is how `bangerd-root`
//! learns the one uid it serves and how `bangerd` learns its layout.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cidr::Ipv4Cidr;
use crate::net::{self, BridgeSpec};

/// Default location of the install metadata.
pub const DEFAULT_INSTALL_FILE: &str = "/etc/banger/install.toml";

/// The root helper's systemd unit, as `banger system install` writes it.
/// Only a `bangerd-root` running in this unit's cgroup holds its sibling
/// [`VMS_UNIT`]'s cgroup for its VMs.
pub const HELPER_UNIT: &str = "bangerd-root.service";
/// The holder of the VMs' cgroups (`Delegate=`): a unit that runs nothing
/// and is never restarted by banger, so the helper's own unit delegates
/// nothing and a restart of the helper always finds its cgroup a leaf.
pub const VMS_UNIT: &str = "banger-vms.service";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallMeta {
    pub owner: Owner,
    /// banger version that wrote this file.
    pub version: String,
    /// RFC 3339 time of the install.
    pub installed_at: String,
    pub paths: InstallPaths,
    /// The VMM binaries the helper launches and bangerd checks. Absent in
    /// metadata written before banger recorded them (then no VMM is
    /// available until `banger system install` runs again).
    #[serde(default, skip_serializing_if = "InstallVmm::is_empty")]
    pub vmm: InstallVmm,
    /// The bridge and guest subnet. Absent in metadata written before
    /// banger recorded them: then banger's defaults.
    #[serde(default)]
    pub network: InstallNetwork,
    /// The uids the helper runs hostile-input parsers as (docs/jail.md).
    /// Absent in metadata written before banger recorded them: then
    /// banger's default range.
    #[serde(default)]
    pub jail: InstallJail,
}

/// First uid of banger's default jail range: far above the ranges
/// `useradd` and `/etc/subuid` hand out. The range is checked to own
/// nothing before it is used (`banger_host::jail::check_unused`).
pub const DEFAULT_JAIL_UID_BASE: u32 = 1_990_000_000;
/// How many uids the default range holds.
pub const DEFAULT_JAIL_UID_COUNT: u32 = 1024;
/// The most uids a range may hold: every one is looked up in NSS at each
/// daemon start.
pub const MAX_JAIL_UID_COUNT: u32 = 65_536;

/// A range of uids (each with the gid of the same number) that own nothing
/// on the host, chosen by root at `banger system install --jail-uids
/// BASE:COUNT`. Slot 0 (`uid_base`) runs the disk tools; later slots are
/// for per-VM VMM jails (docs/jail.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallJail {
    pub uid_base: u32,
    pub count: u32,
}

impl Default for InstallJail {
    fn default() -> Self {
        InstallJail {
            uid_base: DEFAULT_JAIL_UID_BASE,
            count: DEFAULT_JAIL_UID_COUNT,
        }
    }
}

impl InstallJail {
    /// The uid (and gid) the disk tools run as.
    pub fn tool_uid(&self) -> u32 {
        self.uid_base
    }

    /// `BASE:COUNT` as `--jail-uids` takes it.
    pub fn parse(text: &str) -> Result<InstallJail, InstallJailError> {
        let bad = || InstallJailError::Syntax {
            text: text.to_string(),
        };
        let (base, count) = text.split_once(':').ok_or_else(bad)?;
        let jail = InstallJail {
            uid_base: base.parse().map_err(|_| bad())?,
            count: count.parse().map_err(|_| bad())?,
        };
        jail.check()?;
        Ok(jail)
    }

    /// The owner's uid is not in the range.
    pub fn check_owner(&self, owner_uid: u32) -> Result<(), InstallJailError> {
        let end = u64::from(self.uid_base) + u64::from(self.count);
        if (u64::from(self.uid_base)..end).contains(&u64::from(owner_uid)) {
            return Err(InstallJailError::HoldsOwner {
                base: self.uid_base,
                count: self.count,
                owner_uid,
            });
        }
        Ok(())
    }

    /// Not system or ordinary-user uids (so never 0), at least one slot
    /// and at most [`MAX_JAIL_UID_COUNT`], below the kernel's invalid id
    /// (`u32::MAX`).
    pub fn check(&self) -> Result<(), InstallJailError> {
        let end = u64::from(self.uid_base) + u64::from(self.count);
        if self.uid_base < 65_536
            || self.count == 0
            || self.count > MAX_JAIL_UID_COUNT
            || end >= u64::from(u32::MAX)
        {
            return Err(InstallJailError::Range {
                base: self.uid_base,
                count: self.count,
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallJailError {
    #[error("jail uids {text:?}: expected BASE:COUNT, two decimal numbers")]
    Syntax { text: String },
    #[error(
        "jail uids {base}:{count}: the range must start at 65536 or above, hold at least \
         one uid and at most 65536, and end below 4294967295"
    )]
    Range { base: u32, count: u32 },
    #[error("jail uids {base}:{count}: the range holds the owner's uid {owner_uid}")]
    HoldsOwner {
        base: u32,
        count: u32,
        owner_uid: u32,
    },
}

/// The host network of an install, chosen by root at `banger system
/// install` (`--bridge`, `--subnet`; a reinstall keeps the recorded ones).
/// The helper sets up this bridge with this subnet and no other, and bangerd
/// in system mode uses them whatever the owner's configuration says: which
/// addresses the host gives to guests (and binds DNS on) is root's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallNetwork {
    pub bridge: String,
    pub subnet: Ipv4Cidr,
}

impl Default for InstallNetwork {
    fn default() -> Self {
        InstallNetwork {
            bridge: net::DEFAULT_BRIDGE.to_string(),
            subnet: net::default_subnet(),
        }
    }
}

impl InstallNetwork {
    /// The one bridge this install may have.
    pub fn bridge_spec(&self) -> BridgeSpec {
        BridgeSpec::for_subnet(&self.bridge, self.subnet)
    }

    /// A bridge name banger may create and a private subnet of an accepted
    /// size, or what is wrong.
    pub fn check(&self) -> Result<(), InstallNetworkError> {
        if !net::is_bridge_name(&self.bridge) {
            return Err(InstallNetworkError::Bridge {
                name: self.bridge.clone(),
            });
        }
        match net::subnet_problem(self.subnet) {
            Some(reason) => Err(InstallNetworkError::Subnet {
                subnet: self.subnet,
                reason,
            }),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallNetworkError {
    #[error(
        "bridge {name:?} is not a banger bridge name (`banger` followed by lowercase letters, \
         digits or `-`, at most 15 characters, not `bangertap...`)"
    )]
    Bridge { name: String },
    #[error("guest subnet {subnet}: {reason}")]
    Subnet { subnet: Ipv4Cidr, reason: String },
}

/// The VMM binaries of an install, chosen by root at `banger system install`
/// (`--qemu-bin`/`--firecracker-bin`, else found on `PATH` then). Absolute
/// paths; a VMM without an entry is not available to this install. The
/// helper never looks a VMM up on its own `PATH`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallVmm {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu_bin: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firecracker_bin: Option<PathBuf>,
}

impl InstallVmm {
    pub fn is_empty(&self) -> bool {
        self.qemu_bin.is_none() && self.firecracker_bin.is_none()
    }
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
    /// Read and ignored, never written: a development build recorded the
    /// state directory's device here, which is not stable (reboots,
    /// deploys, `--root` installs), so nothing holds the directory to it;
    /// metadata that has it still loads.
    #[serde(default, skip_serializing)]
    pub state_dev: Option<u64>,
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
    #[error("install metadata {path}: [network]")]
    Network {
        path: PathBuf,
        #[source]
        source: InstallNetworkError,
    },
    #[error("install metadata {path}: [jail]")]
    Jail {
        path: PathBuf,
        #[source]
        source: InstallJailError,
    },
    #[error("install metadata {path}: `vmm.{key}` = {value:?} must be an absolute path")]
    RelativeVmm {
        path: PathBuf,
        key: &'static str,
        value: PathBuf,
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
        let meta: InstallMeta = toml::from_str(text).map_err(|source| InstallMetaError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        for (key, value) in [
            ("qemu_bin", &meta.vmm.qemu_bin),
            ("firecracker_bin", &meta.vmm.firecracker_bin),
        ] {
            if let Some(v) = value
                && !v.is_absolute()
            {
                return Err(InstallMetaError::RelativeVmm {
                    path: path.to_path_buf(),
                    key,
                    value: v.clone(),
                });
            }
        }
        meta.network
            .check()
            .map_err(|source| InstallMetaError::Network {
                path: path.to_path_buf(),
                source,
            })?;
        meta.jail
            .check()
            .and_then(|()| meta.jail.check_owner(meta.owner.uid))
            .map_err(|source| InstallMetaError::Jail {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(meta)
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
                state_dev: None,
            },
            vmm: InstallVmm {
                qemu_bin: Some("/usr/bin/qemu-system-x86_64".into()),
                firecracker_bin: Some("/usr/local/bin/firecracker".into()),
            },
            network: InstallNetwork {
                bridge: "banger7".into(),
                subnet: "10.99.0.0/24".parse().unwrap(),
            },
            jail: InstallJail::default(),
        }
    }

    #[test]
    fn round_trips_through_toml() {
        let m = sample();
        let back = InstallMeta::parse(&m.to_toml(), Path::new("/x")).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn a_recorded_state_dir_device_still_loads_and_is_never_written() {
        let mut m = sample();
        m.paths.state_dev = Some(2049);
        let text = m.to_toml();
        assert!(!text.contains("state_dev"), "{text}");
        // Metadata a development build wrote with the device.
        let old = text.replace(
            "root_state_dir = \"/var/lib/banger-root\"\n",
            "root_state_dir = \"/var/lib/banger-root\"\nstate_dev = 2049\n",
        );
        assert!(old.contains("state_dev = 2049"), "{old}");
        let back = InstallMeta::parse(&old, Path::new("/x")).unwrap();
        assert_eq!(back.paths.state_dev, Some(2049));
        assert_eq!(back.to_toml(), text);
    }

    #[test]
    fn metadata_without_vmm_binaries_still_parses() {
        // Written before the `[vmm]` section existed.
        let mut m = sample();
        m.vmm = InstallVmm::default();
        let text = m.to_toml();
        assert!(!text.contains("[vmm]"), "{text}");
        let back = InstallMeta::parse(&text, Path::new("/x")).unwrap();
        assert_eq!(back.vmm, InstallVmm::default());
        // Only one of them recorded.
        let text = format!("{text}\n[vmm]\nqemu_bin = \"/usr/bin/qemu-system-x86_64\"\n");
        let back = InstallMeta::parse(&text, Path::new("/x")).unwrap();
        assert_eq!(back.vmm.firecracker_bin, None);
        assert!(back.vmm.qemu_bin.is_some());
    }

    #[test]
    fn the_network_is_recorded_checked_and_defaults_when_absent() {
        let text = sample().to_toml();
        assert!(
            text.contains("[network]\nbridge = \"banger7\"\nsubnet = \"10.99.0.0/24\"\n"),
            "{text}"
        );
        assert_eq!(
            sample().network.bridge_spec(),
            BridgeSpec {
                name: "banger7".into(),
                address: std::net::Ipv4Addr::new(10, 99, 0, 1),
                prefix_len: 24,
            }
        );
        // Written before the `[network]` section existed: banger's defaults.
        let old = text.split("[network]").next().unwrap();
        let back = InstallMeta::parse(old, Path::new("/x")).unwrap();
        assert_eq!(back.network, InstallNetwork::default());
        assert_eq!(back.network.bridge_spec().address.to_string(), "172.30.0.1");

        let path = Path::new("/etc/banger/install.toml");
        let chain = |t: &str| {
            let e = InstallMeta::parse(t, path).unwrap_err();
            crate::error::chain(&e).join(": ")
        };
        let public = text.replace("10.99.0.0/24", "8.8.8.0/24");
        assert_eq!(
            chain(&public),
            "install metadata /etc/banger/install.toml: [network]: guest subnet 8.8.8.0/24: \
             not in a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)"
        );
        assert!(chain(&text.replace("10.99.0.0/24", "10.99.0.0/30")).contains("/30 is outside"));
        assert!(chain(&text.replace("10.99.0.0/24", "10.99.0.1/24")).contains("host bits"));
        let bridge = chain(&text.replace("banger7", "eth0"));
        assert!(
            bridge.contains("\"eth0\" is not a banger bridge name"),
            "{bridge}"
        );
        assert!(InstallMeta::parse(&text.replace("subnet =", "net ="), path).is_err());
    }

    #[test]
    fn vmm_binaries_must_be_absolute() {
        let text = sample()
            .to_toml()
            .replace("\"/usr/local/bin/firecracker\"", "\"firecracker\"");
        let err = InstallMeta::parse(&text, Path::new("/etc/banger/install.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("vmm.firecracker_bin"), "{msg}");
        assert!(msg.contains("absolute"), "{msg}");
        let text = sample().to_toml().replace("qemu_bin", "kvm_bin");
        assert!(InstallMeta::parse(&text, Path::new("/x")).is_err());
    }

    #[test]
    fn typo_names_the_key_and_file() {
        let text = sample().to_toml().replace("uid = 1000", "uuid = 1000");
        let err = InstallMeta::parse(&text, Path::new("/etc/banger/install.toml")).unwrap_err();
        let chain = crate::error::chain(&err).join(": ");
        assert!(chain.contains("/etc/banger/install.toml"), "{chain}");
        assert!(chain.contains("uuid"), "{chain}");
    }

    #[test]
    fn a_jail_range_is_bounded_and_holds_neither_root_nor_the_owner() {
        assert!(InstallJail::parse("70000:10").is_ok());
        assert!(InstallJail::parse("70000:65536").is_ok());
        for bad in [
            "0:10",
            "65535:10",
            "70000:0",
            "70000:65537",
            "1990000000:4294967295",
            "4294967000:1000",
            "4294967294:1",
        ] {
            assert!(InstallJail::parse(bad).is_err(), "{bad}");
        }
        // The owner's uid inside the range: refused where both are known.
        let mut m = sample();
        m.jail = InstallJail {
            uid_base: 70_000,
            count: 10,
        };
        m.owner.uid = 70_009;
        let err = InstallMeta::parse(&m.to_toml(), Path::new("/x")).unwrap_err();
        let chain = crate::error::chain(&err).join(": ");
        assert!(chain.contains("owner"), "{chain}");
        m.owner.uid = 70_010;
        InstallMeta::parse(&m.to_toml(), Path::new("/x")).unwrap();
        assert!(m.jail.check_owner(70_000).is_err());
        assert!(m.jail.check_owner(69_999).is_ok());
    }
}
