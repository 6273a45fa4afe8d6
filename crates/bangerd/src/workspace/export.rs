//! `workspace export`: the guest's work back as a branch or a patch file
//! (docs/workspaces.md).

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

use banger_proto::workspace::{ExportReport, ExportTarget, ExportWorkspace};
use banger_proto::{ErrorCode, RpcError};

use super::guest::sh_quote;
use super::{
    EXPORT_MAX_BYTES, Emit, VmSnapshot, WorkspaceService, bad, internal, progress, record, repo,
};

impl WorkspaceService {
    pub async fn export(
        self: &Arc<Self>,
        req: &ExportWorkspace,
        emit: Emit,
    ) -> Result<ExportReport, RpcError> {
        if let ExportTarget::Patch { path } = &req.target
            && !path.is_absolute()
        {
            return Err(bad(format!(
                "patch path {} is not absolute",
                path.display()
            )));
        }
        let vm = self.snapshot_vm(&req.vm).await?;
        let lock = self.workspace_lock(&vm.id);
        let _g = lock.lock().await;
        let svc = Arc::clone(self);
        let req = req.clone();
        tokio::task::spawn_blocking(move || svc.export_blocking(&vm, &req, &emit))
            .await
            .map_err(|e| internal(format!("export task: {e}")))?
    }

    fn export_blocking(
        &self,
        vm: &VmSnapshot,
        req: &ExportWorkspace,
        emit: &Emit,
    ) -> Result<ExportReport, RpcError> {
        let g = &self.connect(vm)?;
        let dir = self.vm_dir(&vm.id);
        let rec = record::load(&dir)?.ok_or_else(|| {
            RpcError::new(
                ErrorCode::InvalidState,
                format!(
                    "VM {} has no workspace; run `banger workspace prepare {} PATH` first",
                    g.name, g.name
                ),
            )
        })?;
        // Check the host side before any guest work.
        let branch = match &req.target {
            ExportTarget::Branch { name } => {
                let b = name.clone().unwrap_or_else(|| format!("banger/{}", g.name));
                repo::check_branch(&rec.repo, &b, req.force)?;
                Some(b)
            }
            ExportTarget::Patch { path } => {
                if path.symlink_metadata().is_ok() && !req.force {
                    return Err(RpcError::new(
                        ErrorCode::AlreadyExists,
                        format!(
                            "{} exists; pick another path or replace it with --force",
                            path.display()
                        ),
                    ));
                }
                let parent = path.parent().filter(|p| p.is_dir()).ok_or_else(|| {
                    bad(format!(
                        "the directory of {} does not exist",
                        path.display()
                    ))
                })?;
                let _ = parent;
                None
            }
        };

        emit(progress(
            "commit",
            format!("collecting the work in {}", g.name),
            0,
            None,
        ));
        let mode = if branch.is_some() { "bundle" } else { "patch" };
        let script = export_script(&rec.guest_dir, rec.head.as_deref(), &g.name, mode);
        let out = g.exec(&script, None, std::time::Duration::from_secs(600))?;
        let fields = parse_fields(&out.stdout);
        match out.status.code() {
            Some(0) => {}
            Some(3) => {
                return Err(RpcError::new(
                    ErrorCode::InvalidState,
                    format!(
                        "VM {} has no checkout at ~/{} (was it removed in the guest?)",
                        g.name, rec.guest_dir
                    ),
                ));
            }
            Some(4) => {
                return Err(RpcError::new(
                    ErrorCode::InvalidState,
                    format!(
                        "nothing to export: VM {}'s checkout has no commits and no changes since it was prepared",
                        g.name
                    ),
                ));
            }
            _ => {
                return Err(RpcError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "collecting the work in VM {}: {}",
                        g.name,
                        out.stderr.trim()
                    ),
                ));
            }
        }
        let tip = fields.get("tip").cloned().ok_or_else(|| {
            internal(format!(
                "the guest did not report a tip: {}",
                out.stdout.trim()
            ))
        })?;
        let commits = fields
            .get("commits")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let uncommitted = fields.get("uncommitted").map(String::as_str) == Some("1");

        emit(progress(
            "fetch",
            format!("copying {mode} from {}", g.name),
            0,
            None,
        ));
        let tmp = tempfile::tempdir_in(&dir)
            .map_err(|e| internal(format!("temp dir in {}: {e}", dir.display())))?;
        let local = tmp.path().join(format!("export.{mode}"));
        // A new file of ours, filled with the guest's bytes as a plain
        // stream (no rsync: a hostile guest's rsync sender has had host-side
        // read/write bugs), capped.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&local)
            .map_err(|e| internal(format!("creating {}: {e}", local.display())))?;
        let fetched = g.fetch_file(
            &format!(".cache/banger/export.{mode}"),
            file,
            EXPORT_MAX_BYTES,
            std::time::Duration::from_secs(3600),
        )?;
        if fetched.is_none() {
            return Err(RpcError::new(
                ErrorCode::InvalidState,
                format!(
                    "VM {}'s export is larger than {} GiB; export a smaller range or copy it by hand",
                    g.name,
                    EXPORT_MAX_BYTES >> 30
                ),
            ));
        }
        let _ = g.exec(
            "rm -f \"$HOME/.cache/banger/export.bundle\" \"$HOME/.cache/banger/export.patch\"",
            None,
            std::time::Duration::from_secs(30),
        );
        let patch = match (&branch, &req.target) {
            (Some(b), _) => {
                repo::fetch_bundle(&rec.repo, &local, b, req.force)?;
                None
            }
            (None, ExportTarget::Patch { path }) => {
                write_patch(&local, path, req.force)?;
                Some(path.clone())
            }
            (None, ExportTarget::Branch { .. }) => unreachable!(),
        };
        // Commits up to the guest's HEAD are now on the host: a later
        // prepare may replace them without --force.
        let mut rec = rec;
        rec.exported_head = fields.get("head").cloned().filter(|h| !h.is_empty());
        record::store_record(&dir, &rec)?;
        Ok(ExportReport {
            vm: g.name.clone(),
            repo: rec.repo,
            branch,
            patch,
            base: rec.head,
            tip,
            commits,
            uncommitted,
        })
    }
}

/// Move the fetched patch to `dest` (same-directory temp file + rename, so
/// a reader never sees half a patch).
fn write_patch(local: &Path, dest: &Path, force: bool) -> Result<(), RpcError> {
    let parent = dest.parent().unwrap_or(Path::new("/"));
    let tmp = tempfile::NamedTempFile::new_in(parent)
        .map_err(|e| bad(format!("writing beside {}: {e}", dest.display())))?;
    std::fs::copy(local, tmp.path())
        .map_err(|e| internal(format!("writing {}: {e}", tmp.path().display())))?;
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644));
    if force {
        tmp.persist(dest)
            .map_err(|e| internal(format!("writing {}: {}", dest.display(), e.error)))?;
    } else {
        tmp.persist_noclobber(dest).map_err(|e| {
            RpcError::new(
                ErrorCode::AlreadyExists,
                format!("writing {}: {}", dest.display(), e.error),
            )
        })?;
    }
    Ok(())
}

/// `key=value` lines the guest scripts print.
pub(super) fn parse_fields(stdout: &str) -> HashMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The guest half of export. Exit 3: no checkout; 4: nothing to export.
/// Uncommitted changes (respecting the guest's ignore rules) are committed
/// through a temporary index, so the guest's own index and branch stay as
/// they were.
fn export_script(guest_dir: &str, base: Option<&str>, vm: &str, mode: &str) -> String {
    let base = base.unwrap_or("");
    format!(
        r#"set -eu
cd "$HOME"/{dir} 2>/dev/null && [ -d .git ] || exit 3
base={base}
vm={vm}
git config user.name >/dev/null || export GIT_AUTHOR_NAME=banger GIT_COMMITTER_NAME=banger
git config user.email >/dev/null || export GIT_AUTHOR_EMAIL="banger@$vm.vm" GIT_COMMITTER_EMAIL="banger@$vm.vm"
tip=$(git rev-parse -q --verify 'HEAD^{{commit}}' || true)
head=$tip
idx=$(mktemp)
trap 'rm -f "$idx"' EXIT
if [ -f .git/index ]; then cp .git/index "$idx"; else rm -f "$idx"; fi
GIT_INDEX_FILE="$idx" git add -A
tree=$(GIT_INDEX_FILE="$idx" git write-tree)
uncommitted=0
if [ -z "$tip" ] || [ "$tree" != "$(git rev-parse "$tip^{{tree}}")" ]; then
  if [ -n "$tip" ]; then parent="-p $tip"; else parent=""; fi
  tip=$(git commit-tree "$tree" $parent -m "banger: uncommitted changes from VM $vm" -m "Work that was not committed in the guest when it was exported.")
  uncommitted=1
fi
if [ -n "$base" ] && [ "$tip" = "$base" ]; then exit 4; fi
if [ -n "$base" ]; then range="$base..$tip"; commits=$(git rev-list --count "$tip" "^$base"); else range="$tip"; commits=$(git rev-list --count "$tip"); fi
mkdir -p "$HOME/.cache/banger"
if [ {mode} = bundle ]; then
  git update-ref refs/banger/export "$tip"
  if [ -n "$base" ]; then git bundle create -q "$HOME/.cache/banger/export.bundle" refs/banger/export "^$base"
  else git bundle create -q "$HOME/.cache/banger/export.bundle" refs/banger/export; fi
  git update-ref -d refs/banger/export
else
  if [ -n "$base" ]; then git format-patch --binary --stdout "$range" > "$HOME/.cache/banger/export.patch"
  else git format-patch --binary --stdout --root "$tip" > "$HOME/.cache/banger/export.patch"; fi
fi
echo "tip=$tip"
echo "head=$head"
echo "commits=$commits"
echo "uncommitted=$uncommitted"
"#,
        dir = sh_quote(guest_dir),
        base = sh_quote(base),
        vm = sh_quote(vm),
        mode = mode,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_script_quotes_its_inputs() {
        let s = export_script("repo", Some("abc"), "dev", "bundle");
        assert!(s.contains("base='abc'"));
        assert!(s.contains("vm='dev'"));
        assert!(s.contains("cd \"$HOME\"/'repo'"));
        let s = export_script("repo", None, "it's", "patch");
        assert!(s.contains("base=''"));
        assert!(s.contains(r"vm='it'\''s'"));
    }

    #[test]
    fn fields_are_key_value_lines() {
        let f = parse_fields("tip=abc\ncommits=3\nnoise\nuncommitted=1\n");
        assert_eq!(f["tip"], "abc");
        assert_eq!(f["commits"], "3");
        assert_eq!(f["uncommitted"], "1");
    }
}
