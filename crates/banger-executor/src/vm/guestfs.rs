//! Writing files into a VM's root disk with `debugfs -w`, without mounting
//! it: no host mount, no host path resolution of the guest's symlinks
//! (debugfs resolves guest paths inside the filesystem image).
//!
//! Each file is removed first (a previous version, or a symlink the image
//! shipped in its place), written from a staging copy, then given its mode
//! and owner. Missing parent directories are created. debugfs reports most
//! failures only as messages, so every file is read back and compared
//! afterwards; a mismatch fails the operation.

use std::fmt::Write as _;

use banger_host::runner::{Cmd, Runner};
use banger_proto::vmops::GuestFilesSpec;

use super::VmHost;
use super::error::{VmOpError, io};
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
            let parts: Vec<&str> = f.path[1..].split('/').collect();
            for depth in 1..parts.len() {
                let dir = format!("/{}", parts[..depth].join("/"));
                if made.insert(dir.clone()) {
                    let _ = writeln!(script, "mkdir {dir}");
                }
            }
            let p = &f.path;
            let _ = writeln!(script, "rm {p}");
            let _ = writeln!(script, "write {} {p}", host.display());
            let _ = writeln!(script, "sif {p} mode 0{:o}", 0o100000 | f.mode);
            let _ = writeln!(script, "sif {p} uid {}", f.uid);
            let _ = writeln!(script, "sif {p} gid {}", f.gid);
        }
        let script_path = sdir.join("script");
        std::fs::write(&script_path, &script).map_err(io("staging", &script_path))?;
        // debugfs runs with the owner's uid: let it read the staging copies.
        // The entries first, while the directory (0700, from tempdir) is
        // still root's and nobody else can rename anything in it; then the
        // directory itself through a descriptor, and nothing by its path
        // afterwards: once it is the owner's, in sticky /tmp, the owner may
        // move it and put a symlink at its name.
        if let Some((uid, gid)) = self.tool_ids() {
            for entry in std::fs::read_dir(sdir)
                .map_err(io("listing", sdir))?
                .flatten()
            {
                let _ = std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid));
            }
            let dir = std::fs::File::open(sdir).map_err(io("opening", sdir))?;
            let _ = std::os::unix::fs::fchown(&dir, Some(uid), Some(gid));
        }
        self.tool(
            "writing guest files",
            Cmd::new("debugfs")
                .arg("-w")
                .arg("-f")
                .arg(&script_path)
                .arg(&disk),
        )?;
        // Read everything back.
        for f in &spec.files {
            let out = Runner
                .run(
                    &Cmd::new("debugfs")
                        .arg("-R")
                        .arg(format!("cat {}", f.path))
                        .arg(&disk)
                        .run_as(self.tool_ids())
                        // An inode of the owner's image may claim terabytes
                        // (a directory `sif`ed into a file): never keep more
                        // than the file written plus one byte.
                        .max_output(f.content.len() + 1),
                )
                .map_err(|source| VmOpError::Tool {
                    what: format!("reading back {}", f.path),
                    source,
                })?;
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
}
