//! Writing files into a VM's root disk with `debugfs -w`, without mounting
//! it: no host mount, no host path resolution of the guest's symlinks
//! (debugfs resolves guest paths inside the filesystem image).
//!
//! Each file is removed first (a previous version, or a symlink the image
//! shipped in its place), written from a staging copy, then given its mode
//! and owner. Missing parent directories are created. debugfs reports most
//! failures only as messages, so every file is read back and compared
//! afterwards; a mismatch fails the operation.
//!
//! debugfs runs jailed (`jailed`): the disk is root's checked descriptor
//! bound at `/disk`, the staging copies a directory bound read-only at
//! `/staging`, and the script names only those.

use std::fmt::Write as _;

use banger_host::runner::Cmd;
use banger_proto::vmops::GuestFilesSpec;

use super::VmHost;
use super::error::{VmOpError, io};
use super::jailed;
use super::validate;

impl VmHost {
    pub(crate) fn write_guest_files(&self, spec: &GuestFilesSpec) -> Result<(), VmOpError> {
        validate::id("VM id", &spec.vm_id)?;
        for f in &spec.files {
            validate::guest_file(f)?;
        }
        // The root disk as its backend serves it: a file reached without
        // symlinks, or the VM's dm-snapshot device (given to the owner).
        let disk = self.root_disk(&spec.vm_id)?.path;
        let disk_file = self.open_disk(&disk, "root disk")?;
        let staging = tempfile::Builder::new()
            .prefix("banger-guestfs-")
            .tempdir()
            .map_err(io(
                "creating a staging directory",
                std::path::Path::new("/tmp"),
            ))?;
        let sdir = staging.path();
        let mut script = String::new();
        let mut made = std::collections::BTreeSet::new();
        for (i, f) in spec.files.iter().enumerate() {
            let host = sdir.join(i.to_string());
            std::fs::write(&host, &f.content).map_err(io("staging", &host))?;
            let jailed_copy = format!("{}/{i}", jailed::STAGING);
            let parts: Vec<&str> = f.path[1..].split('/').collect();
            for depth in 1..parts.len() {
                let dir = format!("/{}", parts[..depth].join("/"));
                if made.insert(dir.clone()) {
                    let _ = writeln!(script, "mkdir {dir}");
                }
            }
            let p = &f.path;
            let _ = writeln!(script, "rm {p}");
            let _ = writeln!(script, "write {jailed_copy} {p}");
            let _ = writeln!(script, "sif {p} mode 0{:o}", 0o100000 | f.mode);
            let _ = writeln!(script, "sif {p} uid {}", f.uid);
            let _ = writeln!(script, "sif {p} gid {}", f.gid);
        }
        let script_path = sdir.join("script");
        std::fs::write(&script_path, &script).map_err(io("staging", &script_path))?;
        // debugfs runs as the tool uid: let it read the staging copies.
        // The entries first, while the directory (0700, from tempdir) is
        // still root's and nobody else can rename anything in it; then the
        // directory itself through a descriptor, which is what the jail
        // binds: nothing by its path afterwards.
        let uid = self.jail.tool_uid();
        for entry in std::fs::read_dir(sdir)
            .map_err(io("listing", sdir))?
            .flatten()
        {
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(uid))
                .map_err(io("handing over", &entry.path()))?;
        }
        let dir = std::fs::File::open(sdir).map_err(io("opening", sdir))?;
        std::os::unix::fs::fchown(&dir, Some(uid), Some(uid)).map_err(io("handing over", sdir))?;
        let grant = self.grant_disk(&disk_file, &disk, None, true)?;
        grant.run(
            "writing guest files",
            Cmd::new("debugfs")
                .args(["-w", "-f"])
                .arg(format!("{}/script", jailed::STAGING))
                .arg(jailed::DISK)
                .timeout(std::time::Duration::from_secs(300)),
            Some(&dir),
        )?;
        // Read everything back.
        for f in &spec.files {
            let out = grant.run(
                &format!("reading back {}", f.path),
                Cmd::new("debugfs")
                    .arg("-R")
                    .arg(format!("cat {}", f.path))
                    .arg(jailed::DISK)
                    // An inode of the owner's image may claim terabytes
                    // (a directory `sif`ed into a file): never keep more
                    // than the file written plus one byte.
                    .max_output(f.content.len() + 1),
                None,
            )?;
            if out.stdout != f.content {
                return Err(VmOpError::GuestFs {
                    disk: disk.display().to_string(),
                    detail: format!(
                        "{} reads back different from what was written: {}",
                        f.path,
                        out.stderr.lines().last().unwrap_or("")
                    ),
                });
            }
        }
        Ok(())
    }

    /// The disk at `path` (`what` names it) opened read-only for a jailed
    /// tool or VMM: a regular file beneath the state dir (the owner's, one
    /// link: its ACL may change), or a dm-snapshot device
    /// `/dev/mapper/banger-*`, opened by its device number
    /// (`snapshot::dmnode`).
    pub(super) fn open_disk(
        &self,
        path: &std::path::Path,
        what: &'static str,
    ) -> Result<std::fs::File, VmOpError> {
        use rustix::fs::OFlags;
        if let Ok(rel) = path.strip_prefix(&self.state_dir) {
            let f = self.open_beneath(rel, OFlags::RDONLY)?;
            super::snapshot::dm::checked_owners(self, &f, path, what)?;
            return Ok(f);
        }
        // A dm-snapshot device: by its dm name, never through the
        // `/dev/mapper` link udev makes.
        let name = path
            .strip_prefix("/dev/mapper")
            .ok()
            .and_then(|n| n.to_str())
            .filter(|n| super::snapshot::dm::check_dm_name(n).is_ok())
            .ok_or_else(|| VmOpError::Invalid {
                what,
                value: path.display().to_string(),
                reason: "neither a file beneath the state directory nor a banger dm device".into(),
            })?;
        super::snapshot::dmnode::open_dm_device(
            std::path::Path::new("/sys"),
            std::path::Path::new("/dev"),
            name,
        )
        .map_err(io("opening", path))
    }
}
