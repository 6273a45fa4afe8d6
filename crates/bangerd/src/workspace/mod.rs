//! WorkspaceService: a host git checkout in a VM and back (ARCHITECTURE.md,
//! "Bird's-eye view" and code map; docs/workspaces.md).
//!
//! **prepare** copies the working tree as it is (tracked files with their
//! uncommitted changes, untracked-not-ignored files, the `.git` directory)
//! into `~/NAME` on the guest's work disk with `rsync` over banger's SSH
//! channel, then syncs the owner's public keys, git identity and
//! `[[file_sync]]` entries. A later prepare of the same checkout sends only
//! what changed and removes what the host no longer has.
//!
//! **export** turns the guest's commits since the prepared `HEAD` (plus
//! uncommitted guest changes, as a final commit marked as such) into a git
//! bundle in the guest, copies it back and fetches it into a new branch of
//! the host repository, or writes a `git format-patch` file. The host's
//! working tree, index and checked-out branch are never touched.
//!
//! Locks (ARCHITECTURE.md, "Locks"): the VM's lock only while the VM row
//! and lease are read, then this service's per-VM workspace lock for the
//! guest I/O, never both at once, so `vm stop`/`rm` never wait behind a
//! copy.

mod export;
mod files;
mod guest;
mod record;
pub mod repo;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use banger_proto::rpc::{Progress, Response};
use banger_proto::workspace::{
    PrepareReport, PrepareWorkspace, WorkspaceRequest, WorkspaceResponse,
};
use banger_proto::{ErrorCode, RpcError};

use crate::config::Config;
use crate::layout::Layout;
use crate::locks::VmLocks;
use crate::server::ProgressSink;
use crate::ssh_masters::SshMasters;
use crate::store::{Store, VmState};
use crate::vm::VmmCache;

use export::parse_fields;
pub use files::{FILE_SYNC_MAX_BYTES, Home};
pub(crate) use guest::{Control, Guest};
use guest::{Multiplexed, sh_quote};
use record::Record;

/// Below the guest user's home: one file per workspace directory, holding
/// the host checkout it belongs to.
const MARKERS: &str = ".cache/banger/workspaces";

/// Largest bundle or patch an export copies back from a guest.
const EXPORT_MAX_BYTES: u64 = 8 << 30;

pub use crate::progress::Emit;

pub(crate) fn internal(msg: impl Into<String>) -> RpcError {
    RpcError::new(ErrorCode::Internal, msg)
}

fn bad(msg: impl Into<String>) -> RpcError {
    RpcError::new(ErrorCode::BadRequest, msg)
}

fn progress(stage: &str, message: impl Into<String>, done: u64, total: Option<u64>) -> Progress {
    Progress {
        stage: stage.to_string(),
        message: message.into(),
        done,
        total,
    }
}

#[derive(Debug)]
pub struct WorkspaceService {
    store: Arc<Store>,
    layout: Layout,
    config: Config,
    vm_locks: Arc<VmLocks>,
    workspace_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The owner's home (`$HOME` of the daemon): file_sync and public keys
    /// are read beneath it; `None` disables both.
    owner_home: Option<PathBuf>,
    /// Where each running VM's SSH master lives (`crate::ssh_masters`).
    ssh: Arc<SshMasters>,
    /// Each VM's VMM as the VM service last saw it running: a master is
    /// one VMM's (one boot's).
    vmms: Arc<VmmCache>,
}

/// What prepare/export read under the VM lock.
struct VmSnapshot {
    id: String,
    /// Its VMM's pid, when the VM service knows it: the key of the VM's
    /// SSH master.
    pid: Option<u32>,
    guest: Guest,
}

impl WorkspaceService {
    pub fn new(
        store: Arc<Store>,
        layout: Layout,
        config: Config,
        vm_locks: Arc<VmLocks>,
        owner_home: Option<PathBuf>,
        ssh: (Arc<SshMasters>, Arc<VmmCache>),
    ) -> Arc<WorkspaceService> {
        Arc::new(WorkspaceService {
            store,
            config,
            vm_locks,
            workspace_locks: Mutex::new(HashMap::new()),
            owner_home: owner_home.filter(|h| h.is_absolute()),
            layout,
            ssh: ssh.0,
            vmms: ssh.1,
        })
    }

    /// `vm`'s guest with every connection of the operation riding the VM's
    /// SSH master (`crate::ssh_masters`), opened by the first connection
    /// unless one answers already; a master of the operation's own when
    /// the VM's cannot be used.
    fn connect(&self, vm: &VmSnapshot) -> Result<Multiplexed, RpcError> {
        match vm.pid.and_then(|pid| self.ssh.path(&vm.id, pid)) {
            Some(path) => {
                let reused = crate::ssh_masters::control(&path, "check");
                let mut g = vm.guest.clone();
                g.control = Some(Control {
                    path,
                    persist_secs: crate::ssh_masters::KEEP_SECS,
                    until_ended: false,
                });
                Ok(Multiplexed::kept(g, reused))
            }
            None => vm.guest.multiplexed(),
        }
    }

    pub async fn handle(
        self: &Arc<Self>,
        req: WorkspaceRequest,
        sink: ProgressSink,
    ) -> Result<Response, RpcError> {
        let sink = Arc::new(sink);
        let emit: Emit = Arc::new(move |p| sink.try_emit(p));
        let r = match req {
            WorkspaceRequest::Prepare(p) => {
                WorkspaceResponse::Prepared(self.prepare(&p, emit).await?)
            }
            WorkspaceRequest::Export(e) => {
                WorkspaceResponse::Exported(self.export(&e, emit).await?)
            }
        };
        Ok(Response::Workspace(r))
    }

    fn workspace_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .workspace_locks
            .lock()
            .expect("workspace locks poisoned");
        Arc::clone(locks.entry(id.to_string()).or_default())
    }

    /// Under the VM's lock: the VM must be running; read how to reach it.
    async fn snapshot_vm(&self, name: &str) -> Result<VmSnapshot, RpcError> {
        // A pooled clone of the warm pool is nobody's yet.
        let vm = match self
            .store
            .get_vm_by_name(name)
            .map_err(crate::store::rpc_err)?
        {
            Some(vm)
                if self
                    .store
                    .is_pooled(&vm.id)
                    .map_err(crate::store::rpc_err)? =>
            {
                None
            }
            vm => vm,
        };
        let vm = vm.ok_or_else(|| {
            RpcError::new(
                ErrorCode::NotFound,
                format!("no VM named {name:?} (see `banger vm ls`)"),
            )
        })?;
        self.snapshot_vm_id(&vm.id).await
    }

    /// [`Self::snapshot_vm`] of the VM with id `id`.
    async fn snapshot_vm_id(&self, id: &str) -> Result<VmSnapshot, RpcError> {
        let vm = self
            .store
            .get_vm(id)
            .map_err(crate::store::rpc_err)?
            .ok_or_else(|| RpcError::new(ErrorCode::NotFound, format!("VM {id} is gone")))?;
        let name = vm.name.clone();
        let lock = self.vm_locks.get(&vm.id);
        let _g = lock.lock().await;
        let vm = self
            .store
            .get_vm(&vm.id)
            .map_err(crate::store::rpc_err)?
            .ok_or_else(|| RpcError::new(ErrorCode::NotFound, format!("VM {name} is gone")))?;
        if vm.state != VmState::Running {
            return Err(crate::vm::not_running(&name, vm.state));
        }
        let lease = self
            .store
            .get_lease(&vm.id)
            .map_err(crate::store::rpc_err)?
            .ok_or_else(|| internal(format!("VM {name} has no lease")))?;
        Ok(VmSnapshot {
            id: vm.id.clone(),
            pid: self.vmms.pid(&vm.id),
            guest: Guest {
                name: vm.name.clone(),
                ip: lease.ip,
                user: banger_proto::guest::GUEST_USER.to_string(),
                identity: crate::identity::identity(&self.layout),
                known_hosts: self.layout.known_hosts.clone(),
                control: None,
            },
        })
    }

    /// Inspect the checkout at `path` (for `vm create --workspace`, before
    /// anything is allocated; the prepare then copies what it found).
    pub async fn inspect(&self, path: &Path) -> Result<repo::RepoSnapshot, RpcError> {
        if !path.is_absolute() {
            return Err(bad(format!(
                "workspace path {} is not absolute",
                path.display()
            )));
        }
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || repo::inspect(&path))
            .await
            .map_err(|e| internal(format!("inspect task: {e}")))?
    }

    /// The prepare of `vm create --workspace`: the new VM by id, the
    /// checkout as [`Self::inspect`] found it.
    pub async fn prepare_new_vm(
        self: &Arc<Self>,
        vm_id: &str,
        snapshot: repo::RepoSnapshot,
        emit: Emit,
    ) -> Result<PrepareReport, RpcError> {
        let vm = self.snapshot_vm_id(vm_id).await?;
        let lock = self.workspace_lock(&vm.id);
        let _g = lock.lock().await;
        let svc = Arc::clone(self);
        tokio::task::spawn_blocking(move || svc.prepare_blocking(&vm, snapshot, false, &emit))
            .await
            .map_err(|e| internal(format!("prepare task: {e}")))?
    }

    pub async fn prepare(
        self: &Arc<Self>,
        req: &PrepareWorkspace,
        emit: Emit,
    ) -> Result<PrepareReport, RpcError> {
        if !req.path.is_absolute() {
            return Err(bad(format!(
                "workspace path {} is not absolute",
                req.path.display()
            )));
        }
        let vm = self.snapshot_vm(&req.vm).await?;
        let lock = self.workspace_lock(&vm.id);
        let _g = lock.lock().await;
        let svc = Arc::clone(self);
        let (path, force) = (req.path.clone(), req.force);
        tokio::task::spawn_blocking(move || {
            emit(progress(
                "inspect",
                format!("inspecting {}", path.display()),
                0,
                None,
            ));
            let snapshot = repo::inspect(&path)?;
            svc.prepare_blocking(&vm, snapshot, force, &emit)
        })
        .await
        .map_err(|e| internal(format!("prepare task: {e}")))?
    }

    fn vm_dir(&self, id: &str) -> PathBuf {
        self.layout.vms_dir.join(id)
    }

    fn prepare_blocking(
        &self,
        vm: &VmSnapshot,
        snap: repo::RepoSnapshot,
        force: bool,
        emit: &Emit,
    ) -> Result<PrepareReport, RpcError> {
        let started = Instant::now();
        let g = &self.connect(vm)?;
        let dir = self.vm_dir(&vm.id);
        let previous = record::load(&dir)?.filter(|r| r.repo == snap.root);
        let guest_dir = self.choose_guest_dir(g, &snap, previous.as_ref(), force)?;
        let prev_files = match &previous {
            Some(_) => record::load_files(&dir)?,
            None => Vec::new(),
        };

        // The list rsync copies: today's files, yesterday's (so rsync
        // deletes those now missing), and `.git` (recursively).
        let mut list: Vec<u8> = Vec::new();
        let mut all: std::collections::BTreeSet<&[u8]> =
            snap.files.iter().map(Vec::as_slice).collect();
        all.extend(prev_files.iter().map(Vec::as_slice));
        for f in all {
            list.extend_from_slice(f);
            list.push(0);
        }
        list.extend_from_slice(b".git\0");
        let list_file = tempfile::NamedTempFile::new_in(&dir)
            .map_err(|e| internal(format!("list file in {}: {e}", dir.display())))?;
        std::fs::write(list_file.path(), &list)
            .map_err(|e| internal(format!("writing {}: {e}", list_file.path().display())))?;

        // The guest directory is marked this checkout's before anything is
        // copied: a copy cut short (the daemon killed mid-rsync) leaves a
        // directory the next prepare knows as its own and finishes, not
        // one it takes for someone else's.
        g.exec_ok(
            "recording the workspace",
            &format!(
                "mkdir -p \"$HOME/{MARKERS}\" && printf '%s' {} > \"$HOME/{MARKERS}/\"{}",
                sh_quote(&snap.root.to_string_lossy()),
                sh_quote(&guest_dir)
            ),
            None,
        )?;
        emit(progress(
            "copy",
            format!(
                "copying {} files ({}) into {}:~/{guest_dir}",
                snap.files.len(),
                human(snap.total_bytes),
                g.name
            ),
            0,
            Some(snap.total_bytes),
        ));
        let mut src = snap.root.clone().into_os_string();
        src.push("/");
        let mut files_from = OsString::from("--files-from=");
        files_from.push(list_file.path());
        let stats = g.rsync(
            &[
                "-rlpt".into(),
                "--from0".into(),
                files_from,
                "--delete".into(),
                "--delete-missing-args".into(),
                src,
                format!(":{guest_dir}/").into(),
            ],
            "copying the workspace",
        )?;
        crate::crashpoint::hit("workspace.copied");
        record::store(
            &dir,
            &Record {
                repo: snap.root.clone(),
                guest_dir: guest_dir.clone(),
                head: snap.head.clone(),
                branch: snap.branch.clone(),
                exported_head: None,
            },
            &snap.files,
        )?;
        emit(progress(
            "copy",
            format!("sent {} to {}", human(stats.sent), g.name),
            snap.total_bytes,
            Some(snap.total_bytes),
        ));

        emit(progress(
            "owner",
            "syncing keys, git identity and file_sync",
            0,
            None,
        ));
        let home = self.owner_home.as_deref().map(Home::open).transpose()?;
        let auth_keys = match &home {
            Some(h) => self.sync_keys(g, &h.public_keys())?,
            None => 0,
        };
        let git_identity = self.sync_identity(g, &snap.root)?;
        let file_sync = match &home {
            Some(h) => self.file_sync(g, h)?,
            None => 0,
        };
        Ok(PrepareReport {
            vm: g.name.clone(),
            repo: snap.root,
            guest_path: format!("/home/{}/{guest_dir}", g.user),
            head: snap.head,
            branch: snap.branch,
            files: snap.files.len() as u64,
            dirty: snap.dirty,
            submodules: snap.submodules,
            total_bytes: snap.total_bytes,
            sent_bytes: stats.sent,
            incremental: previous.is_some(),
            ssh_reused: g.reused,
            auth_keys,
            git_identity,
            file_sync,
            duration_ms: started.elapsed().as_millis() as u64,
            warnings: stats.vanished,
        })
    }

    /// The guest directory for this checkout: the one an earlier prepare of
    /// it used, else the checkout's name — unless another checkout (or
    /// something banger did not put there) already holds that name, then
    /// the name plus a hash of the host path. Refuses (without `force`) to
    /// overwrite guest commits that were never exported.
    fn choose_guest_dir(
        &self,
        g: &Guest,
        snap: &repo::RepoSnapshot,
        previous: Option<&Record>,
        force: bool,
    ) -> Result<String, RpcError> {
        let plain = previous
            .map(|r| r.guest_dir.clone())
            .unwrap_or_else(|| guest::guest_dir_name(&snap.root));
        let probe = |d: &str| -> Result<(Option<String>, bool, Option<String>), RpcError> {
            let out = g.exec_ok(
                "looking at the guest checkout",
                &format!(
                    r#"d="$HOME"/{d}; m="$HOME/{MARKERS}"/{d}
if [ -f "$m" ]; then printf 'owner=%s\n' "$(cat "$m")"; fi
if [ -e "$d" ]; then echo exists=1; fi
if [ -d "$d/.git" ]; then printf 'head=%s\n' "$(git -C "$d" rev-parse -q --verify 'HEAD^{{commit}}' || true)"; fi"#,
                    d = sh_quote(d)
                ),
                None,
            )?;
            let f = parse_fields(&out.stdout);
            Ok((
                f.get("owner").cloned(),
                f.contains_key("exists"),
                f.get("head").cloned().filter(|h| !h.is_empty()),
            ))
        };
        let root = snap.root.to_string_lossy().into_owned();
        let (owner, exists, head) = probe(&plain)?;
        let dir = match owner {
            Some(o) if o == root => plain,
            None if !exists => plain,
            // Someone else's directory: a name of this checkout's own.
            _ => {
                use sha2::Digest as _;
                let h = sha2::Sha256::digest(root.as_bytes());
                let hashed = format!(
                    "{plain}-{}",
                    h[..4]
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                );
                let (owner, exists, _) = probe(&hashed)?;
                if exists && owner.as_deref() != Some(root.as_str()) {
                    return Err(RpcError::new(
                        ErrorCode::InvalidState,
                        format!(
                            "VM {} already has ~/{plain} and ~/{hashed} from elsewhere; remove one in the guest",
                            g.name
                        ),
                    ));
                }
                return Ok(hashed);
            }
        };
        // Ours: were there guest commits since the last prepare? A guest
        // HEAD that is the host's own (a copy cut short after `.git` went
        // over) is not one.
        if let (Some(prev), Some(head)) = (previous, head)
            && prev.head.as_deref() != Some(head.as_str())
            && prev.exported_head.as_deref() != Some(head.as_str())
            && snap.head.as_deref() != Some(head.as_str())
            && !force
        {
            return Err(RpcError::new(
                ErrorCode::InvalidState,
                format!(
                    "VM {} has commits in ~/{dir} that were not exported (HEAD {head:.12}, prepared {}): \
                     export them first (`banger workspace export {}`) or overwrite them with --force",
                    g.name,
                    prev.head
                        .as_deref()
                        .map_or("(no commits)", |h| &h[..h.len().min(12)]),
                    g.name
                ),
            ));
        }
        Ok(dir)
    }

    /// Append the owner's public keys the guest does not have yet; returns
    /// how many were added.
    fn sync_keys(&self, g: &Guest, keys: &[String]) -> Result<u32, RpcError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let script = r#"umask 077; mkdir -p "$HOME/.ssh"; f="$HOME/.ssh/authorized_keys"; touch "$f"; n=0
while IFS= read -r k; do [ -n "$k" ] || continue; grep -qxF -- "$k" "$f" || { printf '%s\n' "$k" >> "$f"; n=$((n+1)); }; done
echo "$n""#;
        let mut input = keys.join("\n");
        input.push('\n');
        let out = g.exec_ok(
            "adding the owner's public keys",
            script,
            Some(input.into_bytes()),
        )?;
        Ok(out.stdout.trim().parse().unwrap_or(0))
    }

    /// Copy `user.name` / `user.email` into the guest's global git config.
    fn sync_identity(&self, g: &Guest, root: &Path) -> Result<Option<String>, RpcError> {
        let (name, email) = repo::identity(root, self.owner_home.as_deref())?;
        if name.is_none() && email.is_none() {
            return Ok(None);
        }
        let mut script = String::new();
        if let Some(n) = &name {
            script += &format!("git config --global user.name {}\n", sh_quote(n));
        }
        if let Some(e) = &email {
            script += &format!("git config --global user.email {}\n", sh_quote(e));
        }
        g.exec_ok("setting the git identity", &script, None)?;
        Ok(Some(match (name, email) {
            (Some(n), Some(e)) => format!("{n} <{e}>"),
            (Some(n), None) => n,
            (None, Some(e)) => format!("<{e}>"),
            (None, None) => unreachable!(),
        }))
    }

    /// Copy every `[[file_sync]]` entry; returns how many.
    fn file_sync(&self, g: &Guest, home: &Home) -> Result<u32, RpcError> {
        if self.config.file_sync.is_empty() {
            return Ok(0);
        }
        let mut items = Vec::new();
        for e in &self.config.file_sync {
            items.extend(home.read_entry(&e.host, &e.guest)?);
        }
        let total: u64 = items
            .iter()
            .map(|i| match i {
                files::Item::File { content, .. } => content.len() as u64,
                _ => 0,
            })
            .sum();
        if total > FILE_SYNC_MAX_BYTES {
            return Err(bad(format!(
                "file_sync entries hold {} in all, more than the {} MiB limit",
                human(total),
                FILE_SYNC_MAX_BYTES >> 20
            )));
        }
        let tar = files::tar(&items)?;
        g.exec_ok(
            "copying file_sync entries",
            r#"cd "$HOME" && tar -x --no-same-owner -f -"#,
            Some(tar),
        )?;
        Ok(self.config.file_sync.len() as u32)
    }
}

/// `12.3 MiB`.
fn human(n: u64) -> String {
    crate::image::human_bytes(n)
}
