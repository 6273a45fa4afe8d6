//! Requests that span services, each a short flow above the services it
//! uses, so that no service owns another (issue #14 item 5):
//!
//! * `vm create`: the image, pulled first when the request names it by a
//!   reference no image here was pulled from (item 8); `--workspace`
//!   inspected before anything is allocated and copied in, from that same
//!   inspection, once the VM runs — a step of the create operation, whose
//!   failure removes the VM again;
//! * `image promote`: a stopped VM's root disk, held under the VM's lock by
//!   the VM service, published as an image by the image service.
//!
//! The services stay unaware of each other: [`VmService`] runs a follow-up
//! step it is handed ([`AfterBuild`]) and lends a stopped VM's disk
//! ([`VmService::with_stopped_root_disk`]); it holds neither the image nor
//! the workspace service.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use banger_proto::image::{ImageInfo, PullImage};
use banger_proto::rpc::Progress;
use banger_proto::vm::{CreateVm, VmCreated};
use banger_proto::{ErrorCode, RpcError};

use crate::image::ImageService;
use crate::progress::Emit;
use crate::server::ProgressSink;
use crate::vm::VmService;
use crate::workspace::WorkspaceService;

/// A step the create operation runs once the VM is built (and booted):
/// given the VM's id and the operation's progress, it finishes the VM or
/// fails the create (which then removes the VM).
pub type AfterBuild = Box<
    dyn FnOnce(String, Emit) -> Pin<Box<dyn Future<Output = Result<(), RpcError>> + Send>> + Send,
>;

#[derive(Debug)]
pub struct Flows {
    vms: Arc<VmService>,
    images: Arc<ImageService>,
    workspaces: Arc<WorkspaceService>,
    /// One pull for `vm create` at a time: a second create naming the
    /// same reference waits, then finds the image the first one pulled.
    auto_pull: tokio::sync::Mutex<()>,
}

impl Flows {
    pub fn new(
        vms: Arc<VmService>,
        images: Arc<ImageService>,
        workspaces: Arc<WorkspaceService>,
    ) -> Flows {
        Flows {
            vms,
            images,
            workspaces,
            auto_pull: tokio::sync::Mutex::new(()),
        }
    }

    /// `banger vm create`.
    pub async fn create_vm(
        &self,
        mut req: CreateVm,
        sink: ProgressSink,
    ) -> Result<VmCreated, RpcError> {
        // What fails fast fails before a pull that may take minutes.
        self.vms.check_new_vm(&req)?;
        let after = match req.workspace.clone() {
            Some(path) => {
                let snapshot = self.workspaces.inspect(&path).await?;
                let workspaces = Arc::clone(&self.workspaces);
                let step: AfterBuild = Box::new(move |vm_id, emit| {
                    Box::pin(async move {
                        workspaces
                            .prepare_new_vm(&vm_id, snapshot, emit)
                            .await
                            .map(drop)
                            .map_err(|e| {
                                e.context("preparing the workspace (the VM is removed again)")
                            })
                    })
                });
                Some(step)
            }
            None => None,
        };
        if let Some(asked) = req.image.take() {
            req.image = Some(self.image_for(asked, req.insecure, &sink).await?);
        }
        self.vms.create(req, sink, after).await
    }

    /// The name of the image `asked` stands for: `asked` itself when it is
    /// not a reference (a name: the create finds it or says it is missing);
    /// else the image pulled from that reference, pulled now when there is
    /// none. No image is named like a reference (`is_reference`).
    async fn image_for(
        &self,
        asked: String,
        insecure: bool,
        sink: &ProgressSink,
    ) -> Result<String, RpcError> {
        if !is_reference(&asked) {
            return Ok(asked);
        }
        let _one = self.auto_pull.lock().await;
        if let Some(found) = self.images.pulled_from(&asked)? {
            return Ok(found.name);
        }
        sink.emit(Progress {
            stage: "pull".into(),
            message: format!("no image here was pulled from {asked}; pulling it"),
            done: 0,
            total: None,
        })
        .await;
        let images = Arc::clone(&self.images);
        let request = PullImage {
            reference: asked.clone(),
            name: None,
            kernel: None,
            insecure,
            docker_config: None,
        };
        let progress = sink.clone();
        let pulled: Result<ImageInfo, RpcError> =
            tokio::task::spawn_blocking(move || images.pull(&request, &progress))
                .await
                .map_err(|e| RpcError::new(ErrorCode::Internal, format!("pull task: {e}")))?
                .map_err(|e| e.to_rpc());
        match pulled {
            Ok(info) => Ok(info.name),
            // `image pull` of the same reference may have won the race.
            Err(e) => match self.images.pulled_from(&asked)? {
                Some(found) => Ok(found.name),
                None => Err(e.context(format!(
                    "pulling {asked} for the VM (or pull it yourself: `banger image pull {asked} --name NAME`, then `--image NAME`)"
                ))),
            },
        }
    }

    /// `banger image promote VM NAME`.
    pub async fn promote(
        &self,
        vm: &str,
        name: &str,
        progress: ProgressSink,
    ) -> Result<ImageInfo, RpcError> {
        let (vms, images) = (Arc::clone(&self.vms), Arc::clone(&self.images));
        let (vm, name) = (vm.to_string(), name.to_string());
        // To its end in a task of its own: a client that goes away must not
        // drop the VM's lock while its disk is being read.
        tokio::spawn(async move {
            vms.with_stopped_root_disk(&vm, move |vm_name, disk, image| {
                images
                    .promote(&vm_name, &disk, &image, &name, &progress)
                    .map_err(|e| e.to_rpc())
            })
            .await
        })
        .await
        .map_err(|e| RpcError::new(ErrorCode::Internal, format!("promote task failed: {e}")))?
    }
}

/// Whether `image` is a reference to pull from rather than an image name:
/// a bundle (URL or absolute path) or an OCI reference, which has a
/// registry or repository path, a tag or a digest — none of which an image
/// name can contain (`[a-z0-9._-]`).
pub fn is_reference(image: &str) -> bool {
    crate::image::is_bundle_ref(image) || image.contains(['/', ':', '@'])
}

#[cfg(test)]
mod tests {
    use super::is_reference;

    #[test]
    fn references_are_told_from_image_names() {
        for name in ["debian", "debian-trixie", "my.img_2"] {
            assert!(!is_reference(name), "{name}");
        }
        for reference in [
            "localhost:5000/banger/test:1",
            "ghcr.io/org/tool",
            "alpine:3",
            "debian@sha256:0123",
            "https://example.invalid/x.bundle",
            "file:///tmp/x.bundle",
            "/srv/images/x.bundle",
        ] {
            assert!(is_reference(reference), "{reference}");
        }
    }
}
