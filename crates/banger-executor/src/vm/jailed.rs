//! Disk tools (e2fsck, resize2fs, mkfs.ext4, debugfs) run jailed
//! (`banger_host::jail`) in both modes: as the install's tool uid, which
//! owns nothing, in their own namespaces, seeing `/usr`, a minimal `/dev`
//! and the one disk at [`DISK`] — the inode behind root's checked
//! descriptor, never a path. The tool uid reaches that inode through an
//! access ACL set on the descriptor for the grant's lifetime ([`DiskGrant`])
//! and removed afterwards, with the original permission bits put back.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_host::jail::Jail;
use banger_host::runner::{Cmd, Output, Runner};

use super::VmHost;
use super::error::{VmOpError, io};

/// Where the disk appears inside the jail.
pub(super) const DISK: &str = "/disk";
/// Where a read-only staging directory appears inside the jail.
pub(super) const STAGING: &str = "/staging";

/// The tool uid's access to one disk, revoked on drop.
pub(super) struct DiskGrant<'a> {
    host: &'a VmHost,
    disk: &'a File,
    path: PathBuf,
    /// Taken by the drop that revokes it.
    grant: Option<banger_host::jail::Grant>,
}

impl VmHost {
    /// Grant the tool uid read-write access to the disk behind `disk` (a
    /// descriptor the caller opened beneath the state dir and checked).
    pub(super) fn grant_disk<'a>(
        &'a self,
        disk: &'a File,
        path: &Path,
    ) -> Result<DiskGrant<'a>, VmOpError> {
        let range = self.jail.uid_base..self.jail.uid_base + self.jail.count;
        let grant = banger_host::jail::grant(disk.as_fd(), self.jail.tool_uid(), true, range)
            .map_err(io("granting the disk tools access to", path))?;
        Ok(DiskGrant {
            host: self,
            disk,
            path: path.to_path_buf(),
            grant: Some(grant),
        })
    }

    /// Run one tool jailed on `disk` (its argument naming the disk is
    /// [`DISK`]), for up to five minutes.
    pub(super) fn tool(
        &self,
        what: &str,
        cmd: Cmd,
        disk: &File,
        path: &Path,
    ) -> Result<(), VmOpError> {
        self.grant_disk(disk, path)?
            .run(what, cmd.timeout(Duration::from_secs(300)), None)
            .map(drop)
    }
}

impl DiskGrant<'_> {
    /// Run `cmd` in a jail holding the disk at [`DISK`] (read-write) and,
    /// when given, the directory `staging` at [`STAGING`] (read-only);
    /// success required.
    pub(super) fn run(
        &self,
        what: &str,
        cmd: Cmd,
        staging: Option<&File>,
    ) -> Result<Output, VmOpError> {
        let uid = self.host.jail.tool_uid();
        let bound = |e| io("binding into the tool jail", &self.path)(e);
        let mut jail = Jail::new(uid, uid)
            .bind(self.disk.as_fd(), &DISK[1..], true)
            .map_err(bound)?;
        if let Some(dir) = staging {
            jail = jail
                .bind(dir.as_fd(), &STAGING[1..], false)
                .map_err(bound)?;
        }
        // No /proc in the jail: e2fsprogs' "is it mounted?" check reads
        // /proc/mounts and would refuse without this.
        Runner
            .run(&cmd.env("EXT2FS_NO_MTAB_OK", "1").jail(jail))
            .map_err(|source| VmOpError::Tool {
                what: what.to_string(),
                source,
            })
    }
}

impl Drop for DiskGrant<'_> {
    fn drop(&mut self) {
        let Some(grant) = self.grant.take() else {
            return;
        };
        if let Err(e) = banger_host::jail::revoke(self.disk.as_fd(), grant) {
            tracing::error!(path = %self.path.display(), error = %e, "revoking the disk tools' access");
        }
    }
}
