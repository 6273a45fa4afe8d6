//! ImageService: kernels and images on disk and in the store.
//!
//! On-disk convention (derived from ids by [`Layout`]; the VM service and
//! the executor rely on it):
//!
//! ```text
//! <state>/kernels/<kernel_id>/kernel         kernel image (bzImage or vmlinux)
//! <state>/kernels/<kernel_id>/initrd         optional
//! <state>/images/<image_id>/rootfs.ext4      root filesystem
//! <state>/images/<image_id>/work-seed.ext4   the managed work seed
//! <state>/images/<image_id>/work-seed.sha256 hash of the seed's inputs
//! <state>/images/<image_id>/initrd           optional, overrides the kernel's
//! <state>/{kernels,images}/.staging/<random>/ work in progress
//! ```
//!
//! Everything new is built in a staging directory with no lock held and
//! published by [`ImageService::publish_kernel`] /
//! [`ImageService::publish_image`] (module `publish`), the only code that
//! takes `image_ops_mu`. OCI pull, bundle pull, `image build` and promote
//! reuse those two helpers.
//!
//! All methods except [`ImageService::handle_image`] /
//! [`ImageService::handle_kernel`] are blocking (file I/O, SQLite, e2fsck).

mod build;
mod bundle;
mod error;
mod files;
mod kernel_pull;
mod names;
mod ops;
mod publish;
mod pull;
mod seed;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use banger_host::runner::Runner;
use banger_proto::image::{ImageRequest, ImageResponse, KernelRequest, KernelResponse};
use banger_proto::rpc::Response;
use banger_proto::{ErrorCode, RpcError};

use crate::layout::Layout;
use crate::server::ProgressSink;
use crate::store::{ImageRow, Store};

pub use bundle::is_bundle_ref;
pub use error::ImageError;
pub use files::human_bytes;
pub use names::{MAX_NAME_LEN, default_kernel_name, validate_name};
pub use publish::{PublishImage, PublishKernel, Staging};
pub use seed::WORK_SEED_HASH_FILE;

#[derive(Debug)]
pub struct ImageService {
    store: Arc<Store>,
    layout: Layout,
    runner: Runner,
    /// Held only for the publication atom (re-check name, rename, insert)
    /// and for row deletion plus the rename out of place. Never across a
    /// copy, a download, an fsck or an ext4 build.
    image_ops_mu: Mutex<()>,
    /// The seam to root, for `image build` in system mode (`build.rs`).
    privileged: Option<Arc<dyn crate::privileged::PrivilegedOps>>,
}

impl ImageService {
    pub fn new(store: Arc<Store>, layout: Layout, runner: Runner) -> Self {
        ImageService {
            store,
            layout,
            runner,
            image_ops_mu: Mutex::new(()),
            privileged: None,
        }
    }

    /// Give the service the seam to root: in system mode `image build`
    /// asks the root helper to build.
    pub fn with_privileged(
        mut self,
        privileged: Arc<dyn crate::privileged::PrivilegedOps>,
    ) -> Self {
        self.privileged = Some(privileged);
        self
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn ops_lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic while holding it leaves nothing
        // inconsistent in memory.
        self.image_ops_mu
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The image pulled from `reference`, if any: a bundle's records the
    /// reference itself, an OCI image's the reference and the manifest
    /// digest it resolved to (`REF@sha256:…`).
    pub fn pulled_from(&self, reference: &str) -> Result<Option<ImageRow>, RpcError> {
        let images = self
            .store
            .list_images()
            .map_err(|e| ImageError::from(e).to_rpc())?;
        let digested = format!("{reference}@");
        Ok(images.into_iter().find(|i| {
            i.source_ref
                .as_deref()
                .is_some_and(|s| s == reference || s.starts_with(&digested))
        }))
    }

    /// Serve `banger image ...` on a blocking thread.
    pub async fn handle_image(
        self: &Arc<Self>,
        req: ImageRequest,
        progress: ProgressSink,
    ) -> Result<Response, RpcError> {
        let svc = Arc::clone(self);
        run_blocking(move || svc.image_request(req, &progress))
            .await
            .map(Response::Image)
    }

    /// Serve `banger kernel ...` on a blocking thread.
    pub async fn handle_kernel(
        self: &Arc<Self>,
        req: KernelRequest,
        progress: ProgressSink,
    ) -> Result<Response, RpcError> {
        let svc = Arc::clone(self);
        run_blocking(move || svc.kernel_request(req, &progress))
            .await
            .map(Response::Kernel)
    }

    /// Startup: [`Self::reconcile`] on a blocking thread, from the daemon's
    /// start time.
    pub async fn reconcile_at_startup(self: &Arc<Self>, started: std::time::SystemTime) {
        let svc = Arc::clone(self);
        match tokio::task::spawn_blocking(move || svc.reconcile(started)).await {
            Ok(removed) if removed.is_empty() => {}
            Ok(removed) => tracing::info!(
                count = removed.len(),
                "removed leftover staging and unrecorded image directories"
            ),
            Err(e) => tracing::error!(error = %e, "image reconcile panicked"),
        }
    }

    fn image_request(
        &self,
        req: ImageRequest,
        progress: &ProgressSink,
    ) -> Result<ImageResponse, ImageError> {
        match req {
            ImageRequest::List => self.list_images().map(ImageResponse::List),
            ImageRequest::Show { name } => self.show_image(&name).map(ImageResponse::Show),
            ImageRequest::Register(r) => self.register(&r, progress).map(ImageResponse::Registered),
            ImageRequest::Remove { name } => {
                let row = self.remove_image(&name)?;
                Ok(ImageResponse::Removed(self.image_info(row, None)?))
            }
            ImageRequest::Build(b) => self.build(&b, progress).map(ImageResponse::Built),
            ImageRequest::Pull(p) => self.pull(&p, progress).map(ImageResponse::Pulled),
            ImageRequest::Refresh { name } => {
                self.refresh(&name, progress).map(ImageResponse::Refreshed)
            }
            // Needs the VM's lock: the daemon routes it to VmService.
            ImageRequest::Promote { vm, .. } => Err(ImageError::Build {
                what: format!("promote of VM {vm} reached the image service directly"),
                detail: None,
            }),
        }
    }

    fn kernel_request(
        &self,
        req: KernelRequest,
        progress: &ProgressSink,
    ) -> Result<KernelResponse, ImageError> {
        match req {
            KernelRequest::List => self.list_kernels().map(KernelResponse::List),
            KernelRequest::Import(r) => self
                .import_kernel(&r, progress)
                .map(KernelResponse::Imported),
            KernelRequest::Remove { name } => {
                let row = self.remove_kernel(&name)?;
                Ok(KernelResponse::Removed(ops::kernel_info(row, Vec::new())))
            }
            KernelRequest::Pull(r) => self
                .pull_catalog_kernel(&r, progress)
                .map(KernelResponse::Pulled),
        }
    }
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, RpcError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RpcError::new(ErrorCode::Internal, format!("image task failed: {e}")))?
        .map_err(|e| e.to_rpc())
}

/// Forward banger-imagebuild's progress to the RPC stream: steps as
/// `stage` events (always delivered), byte counts as `download` events
/// carrying the last step's message (dropped when the client is slow).
pub(crate) fn forward_progress<'a>(
    progress: &'a ProgressSink,
    stage: &'static str,
    first_step: &str,
) -> impl FnMut(banger_imagebuild::Progress) + 'a {
    let mut step = first_step.to_string();
    move |p| match p {
        banger_imagebuild::Progress::Step(s) => {
            step = s.clone();
            progress.emit_blocking(banger_proto::rpc::Progress {
                stage: stage.into(),
                message: s,
                done: 0,
                total: None,
            });
        }
        banger_imagebuild::Progress::Bytes { done, total } => {
            progress.try_emit(banger_proto::rpc::Progress {
                stage: "download".into(),
                message: step.clone(),
                done,
                total,
            })
        }
    }
}
