//! The managed work seed of every image, and `banger image refresh NAME`.
//!
//! Every published image has `images/<id>/work-seed.ext4` (built by
//! `banger-imagebuild::seed` when the producer did not bring one) and,
//! beside it, `work-seed.sha256`: one line, the
//! [`banger_imagebuild::work_seed_hash`] of the inputs the seed was built
//! from (banger's public key and banger's version). A sidecar file rather
//! than a store column: the seed and its record live and die together in
//! the image directory, and comparing is one small read.
//!
//! `refresh` compares the recorded hash with the hash of today's inputs.
//! Equal: nothing to do. Different (or nothing recorded, or no seed): a new
//! seed is built in a staging directory with no lock held, then, under
//! `image_ops_mu`, the image is looked up again by id and the seed and
//! then its hash are renamed into the image directory. A VM being created
//! meanwhile clones either the old or the new file, never half of one. A
//! crash between the two renames leaves the new seed with the old hash,
//! which the next refresh rebuilds again (conservative).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use banger_proto::image::RefreshedImage;
use banger_proto::rpc::Progress;

use crate::layout::WORK_SEED_FILE;
use crate::server::ProgressSink;

use super::ImageService;
use super::error::ImageError;
use super::publish::rename;

/// The sidecar holding the seed's input hash, in the image directory.
pub const WORK_SEED_HASH_FILE: &str = "work-seed.sha256";

impl ImageService {
    /// The seed's inputs as they are now: banger's public key (created on
    /// first use) and banger's version; and their hash.
    fn seed_inputs(&self) -> Result<(Vec<String>, String), ImageError> {
        // `ensure_identity` serializes key generation itself.
        let key =
            crate::identity::ensure_identity(&self.layout).map_err(|e| ImageError::Build {
                what: "preparing banger's SSH key for the work seed".into(),
                detail: Some(e.render()),
            })?;
        let keys = vec![key];
        let hash = banger_imagebuild::work_seed_hash(&keys, banger_proto::BANGER_VERSION);
        Ok((keys, hash))
    }

    /// Build `dir/work-seed.ext4` and `dir/work-seed.sha256` from today's
    /// inputs; returns the hash. Slow (mkfs, debugfs, e2fsck): never call
    /// it under `image_ops_mu`.
    pub(super) fn build_seed_in(&self, dir: &Path) -> Result<String, ImageError> {
        let (keys, _) = self.seed_inputs()?;
        let seed = banger_imagebuild::build_work_seed(
            &keys,
            banger_proto::BANGER_VERSION,
            &dir.join(WORK_SEED_FILE),
        )
        .map_err(|e| ImageError::Build {
            what: "building the work seed".into(),
            detail: Some(banger_proto::error::chain(&e).join(": ")),
        })?;
        let hash_path = dir.join(WORK_SEED_HASH_FILE);
        let write_err = |source| ImageError::Copy {
            what: "work seed hash",
            from: dir.join(WORK_SEED_FILE),
            to: hash_path.clone(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&hash_path)
            .map_err(write_err)?;
        f.write_all(format!("{}\n", seed.hash).as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(write_err)?;
        Ok(seed.hash)
    }

    /// The input hash recorded beside image `id`'s seed, if any.
    pub fn recorded_seed_hash(&self, id: &str) -> Option<String> {
        let text =
            std::fs::read_to_string(self.layout.image_dir(id).join(WORK_SEED_HASH_FILE)).ok()?;
        let hash = text.trim();
        banger_imagebuild::fetch::is_sha256(hash).then(|| hash.to_owned())
    }

    /// `banger image refresh NAME`: rebuild the work seed when its inputs
    /// changed (or it has none), else report it up to date.
    pub fn refresh(
        &self,
        name: &str,
        progress: &ProgressSink,
    ) -> Result<RefreshedImage, ImageError> {
        let row = self
            .store
            .get_image_by_name(name)?
            .ok_or_else(|| ImageError::NoImage { name: name.into() })?;
        let (_, wanted) = self.seed_inputs()?;
        let has_seed = self.layout.image_work_seed(&row.id).is_file();
        if has_seed && self.recorded_seed_hash(&row.id).as_deref() == Some(wanted.as_str()) {
            return Ok(RefreshedImage {
                image: self.image_info(row, None)?,
                rebuilt: false,
                seed_hash: wanted,
            });
        }
        progress.emit_blocking(Progress {
            stage: "seed".into(),
            message: format!("rebuilding the work seed of {name}"),
            done: 0,
            total: None,
        });
        let staging = self.stage_image()?;
        let hash = self.build_seed_in(staging.path())?;
        {
            let _atom = self.ops_lock();
            // Removed (or removed and re-created) meanwhile: nothing to
            // refresh; the staging directory goes when `staging` drops.
            if self.store.get_image(&row.id)?.is_none() {
                return Err(ImageError::NoImage { name: name.into() });
            }
            let dir = self.layout.image_dir(&row.id);
            rename(&staging.file(WORK_SEED_FILE), &dir.join(WORK_SEED_FILE))?;
            rename(
                &staging.file(WORK_SEED_HASH_FILE),
                &dir.join(WORK_SEED_HASH_FILE),
            )?;
        }
        drop(staging);
        Ok(RefreshedImage {
            image: self.image_info(row, None)?,
            rebuilt: true,
            seed_hash: hash,
        })
    }
}
