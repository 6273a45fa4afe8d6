//! Writing bundles: manifest first, then the members, optionally
//! zstd-compressed.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use super::{BundleError, INITRD, KERNEL, MANIFEST, Manifest, ROOTFS};

/// What goes into a bundle.
#[derive(Debug, Clone, Copy)]
pub struct BundleFiles<'a> {
    /// Suggested image name.
    pub name: Option<&'a str>,
    pub rootfs: &'a Path,
    pub kernel: Option<&'a Path>,
    pub initrd: Option<&'a Path>,
}

impl<'a> BundleFiles<'a> {
    /// The whole of a built image (root filesystem, kernel, initrd), named
    /// `name`.
    pub fn of_image(name: &'a str, img: &'a crate::BuiltImage) -> Self {
        BundleFiles {
            name: Some(name),
            rootfs: &img.rootfs_ext4,
            kernel: Some(&img.kernel),
            initrd: Some(&img.initrd),
        }
    }
}

/// Write a bundle of `files` to `out` (zstd-compressed when `zstd_level`
/// is given), manifest first. Returns the manifest written.
pub fn write_bundle(
    out: impl Write,
    files: &BundleFiles<'_>,
    zstd_level: Option<i32>,
) -> Result<Manifest, BundleError> {
    let mut list: Vec<(&str, &Path)> = vec![(ROOTFS, files.rootfs)];
    if let Some(k) = files.kernel {
        list.push((KERNEL, k));
    }
    if let Some(i) = files.initrd {
        list.push((INITRD, i));
    }
    let manifest = Manifest::describe(files.name, &list)?;
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BundleError::Output(std::io::Error::other(e)))?;
    let sink: Box<dyn Write> = match zstd_level {
        Some(level) => Box::new(
            zstd::stream::write::Encoder::new(out, level)
                .map_err(BundleError::Output)?
                .auto_finish(),
        ),
        None => Box::new(out),
    };
    let mut tar = tar::Builder::new(sink);
    append(&mut tar, MANIFEST, json.len() as u64, &json[..])?;
    for (member, path) in &list {
        let f = File::open(path).map_err(|source| BundleError::Input {
            path: path.to_path_buf(),
            source,
        })?;
        let len = manifest.members[*member].size;
        append(&mut tar, member, len, f)?;
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(BundleError::Output)?;
    Ok(manifest)
}

/// Append one regular member (mode 0644, owned by 0:0).
pub fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    data: impl Read,
) -> Result<(), BundleError> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    tar.append_data(&mut h, name, data)
        .map_err(BundleError::Output)
}
