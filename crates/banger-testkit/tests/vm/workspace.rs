//! Workspaces end to end on a real guest: a real repository with every kind
//! of change → `vm create --workspace` → the guest sees exactly the host's
//! working tree → edits and commits in the guest → `workspace export` → a
//! host branch whose tree is the guest's, with the host's working tree,
//! index and branch byte-for-byte unchanged. Also: incremental prepare
//! (bytes measured), owner keys, git identity and file_sync in the guest,
//! patch export, and the refusals.

use std::path::{Path, PathBuf};
use std::process::Command;

use banger_testkit::*;
use serde_json::Value;

use super::support::*;

/// `git -C DIR ARGS` on the host with the test's identity; never writes
/// the index as a side effect of reading it.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Host Dev", "-c", "user.email=dev@host.test"])
        .args(args)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("HOME", dir.parent().unwrap())
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh(script: &str) -> String {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file and symlink below `.` except `.git`: type, mode, content
/// hash or link target — the same script on host and guest.
const MANIFEST: &str = r#"find . -path ./.git -prune -o \( -type f -o -type l \) -printf '%y %m %p\n' | LC_ALL=C sort
find . -path ./.git -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
find . -path ./.git -prune -o -type l -printf '%p -> %l\n' | LC_ALL=C sort"#;

fn host_manifest(dir: &Path) -> String {
    sh(&format!("cd '{}' && {MANIFEST}", dir.display()))
}

fn guest(ns: &NetNs, d: &Daemon, vm: &str, script: &str) -> String {
    ok(ns, d, &["vm", "ssh", vm, "--", script])
}

/// Host state that export must not change.
fn host_state(repo: &Path) -> (String, String, String, String, String) {
    (
        sh(&format!("sha256sum '{}/.git/index'", repo.display())),
        git(repo, &["rev-parse", "HEAD"]),
        git(repo, &["symbolic-ref", "HEAD"]),
        git(repo, &["status", "--porcelain=v1", "--untracked-files=all"]),
        host_manifest(repo),
    )
}

/// A repository with modified, untracked, ignored, binary, symlinked,
/// renamed, deleted and executable files.
fn make_repo(root: &Path) -> PathBuf {
    let repo = root.join("proj");
    std::fs::create_dir_all(repo.join("src")).unwrap();
    std::fs::create_dir_all(repo.join("bin")).unwrap();
    std::fs::create_dir_all(repo.join("data")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "# proj\n").unwrap();
    std::fs::write(repo.join("src/main.rs"), "fn main() {}\n").unwrap();
    std::fs::write(repo.join("bin/run.sh"), "#!/bin/sh\necho run\n").unwrap();
    sh(&format!("chmod 755 '{}/bin/run.sh'", repo.display()));
    // 3 MiB of incompressible bytes: what an incremental prepare must not
    // send again.
    sh(&format!(
        "head -c 3145728 /dev/urandom > '{}/data/blob.bin'",
        repo.display()
    ));
    std::os::unix::fs::symlink("README.md", repo.join("link-to-readme")).unwrap();
    std::fs::write(repo.join("old_name.txt"), "renamed later\n").unwrap();
    std::fs::write(repo.join("gone.txt"), "deleted later\n").unwrap();
    std::fs::write(repo.join(".gitignore"), "*.log\nbuild/\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "initial"]);
    // The working-tree changes.
    std::fs::write(repo.join("README.md"), "# proj\n\nmodified on the host\n").unwrap();
    git(&repo, &["mv", "old_name.txt", "new_name.txt"]);
    std::fs::remove_file(repo.join("gone.txt")).unwrap();
    std::fs::write(repo.join("notes.txt"), "untracked, not ignored\n").unwrap();
    std::fs::write(repo.join("debug.log"), "ignored\n").unwrap();
    std::fs::create_dir_all(repo.join("build")).unwrap();
    std::fs::write(repo.join("build/out.o"), "ignored too\n").unwrap();
    sh(&format!("chmod 755 '{}/src/main.rs'", repo.display()));
    repo
}

/// The owner's home (the daemon's `$HOME`): a public key, a git identity
/// and one file_sync entry.
fn make_home(home: &Path) {
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    sh(&format!(
        "ssh-keygen -q -t ed25519 -N '' -C owner@test -f '{}/.ssh/id_owner'",
        home.display()
    ));
    std::fs::write(
        home.join(".gitconfig"),
        "[user]\n\tname = Owner Person\n\temail = owner@example.test\n",
    )
    .unwrap();
    std::fs::create_dir_all(home.join(".config/tool")).unwrap();
    std::fs::write(home.join(".config/tool/settings"), "color = true\n").unwrap();
    std::fs::create_dir_all(home.join(".config/banger")).unwrap();
    std::fs::write(
        home.join(".config/banger/config.toml"),
        "[[file_sync]]\nhost = \"~/.config/tool\"\nguest = \"~/.config/tool\"\n",
    )
    .unwrap();
}

#[test]
fn workspace_round_trip() {
    require_root();
    let _slot = guest_slot();
    let ns = NetNs::new();
    let tmp = shared_tempdir();
    let _reaper = VmReaper(tmp.path().to_path_buf());
    make_home(tmp.path());
    let src = tmp.path().join("src");
    let repo = make_repo(&src);
    let mut d = start_daemon(&ns, tmp.path());
    register_default_image(&ns, &d);

    // Refused before anything is allocated.
    let (_, code, msg) = fails(
        &ns,
        &d,
        &[
            "vm",
            "create",
            "nope",
            "--workspace",
            tmp.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, "bad_request", "{msg}");
    assert!(msg.contains("not in a git working tree"), "{msg}");
    let vms = ok_json(&ns, &d, &["vm", "ls"]);
    assert_eq!(vms.as_array().unwrap().len(), 0, "{vms}");

    let before = host_state(&repo);
    ok_json(
        &ns,
        &d,
        &[
            "vm",
            "create",
            "ws",
            "--wait",
            "--vcpus",
            "1",
            "--memory",
            "512",
            "--disk",
            "512M",
            "--workspace",
            repo.join("src").to_str().unwrap(),
        ],
    );

    // The guest sees exactly the host's working tree (not the ignored files).
    let mut expected = host_manifest(&repo);
    expected = expected
        .lines()
        .filter(|l| !l.contains("debug.log") && !l.contains("build/out.o"))
        .map(|l| format!("{l}\n"))
        .collect();
    let seen = guest(&ns, &d, "ws", &format!("cd ~/proj && {MANIFEST}"));
    assert_eq!(seen, expected, "guest working tree differs from the host's");
    assert!(seen.contains("./bin/run.sh") && seen.contains("l 777 ./link-to-readme"));
    assert!(seen.contains("f 755 ./src/main.rs"), "{seen}");
    // Its git sees the same changes as the host's (the index came along).
    let guest_status = guest(
        &ns,
        &d,
        "ws",
        "cd ~/proj && git status --porcelain=v1 --untracked-files=all",
    );
    assert_eq!(guest_status, before.3, "git status differs");

    // Owner material: the public key, the git identity, file_sync.
    let pubkey = std::fs::read_to_string(tmp.path().join(".ssh/id_owner.pub")).unwrap();
    let keys = guest(&ns, &d, "ws", "cat ~/.ssh/authorized_keys");
    assert!(keys.contains(pubkey.trim()), "{keys}");
    let ident = guest(&ns, &d, "ws", "git config --global user.email");
    assert_eq!(ident.trim(), "owner@example.test");
    let synced = guest(&ns, &d, "ws", "cat ~/.config/tool/settings");
    assert_eq!(synced, "color = true\n");
    let private = guest(&ns, &d, "ws", "ls ~/.ssh");
    assert!(
        !private.contains("id_owner"),
        "a private key reached the guest: {private}"
    );

    // Incremental prepare: a full copy into an empty directory, then one
    // changed file.
    guest(&ns, &d, "ws", "rm -rf ~/proj");
    let full = ok_json(
        &ns,
        &d,
        &["workspace", "prepare", "ws", repo.to_str().unwrap()],
    );
    std::fs::write(repo.join("notes.txt"), "untracked, not ignored, edited\n").unwrap();
    let incr = ok_json(
        &ns,
        &d,
        &["workspace", "prepare", "ws", repo.to_str().unwrap()],
    );
    let (full_sent, incr_sent) = (
        full["sent_bytes"].as_u64().unwrap(),
        incr["sent_bytes"].as_u64().unwrap(),
    );
    eprintln!(
        "workspace prepare: full copy sent {full_sent} bytes in {} ms; after a one-file change \
         {incr_sent} bytes in {} ms ({:.2}% of full)",
        full["duration_ms"],
        incr["duration_ms"],
        incr_sent as f64 * 100.0 / full_sent as f64
    );
    assert!(full_sent > 3 << 20, "{full}");
    assert!(
        incr_sent * 20 < full_sent,
        "incremental sent too much: {incr}"
    );
    assert_eq!(incr["incremental"], true);
    // The re-prepare rode the SSH master the first one opened.
    assert_eq!(incr["ssh_reused"], true, "{incr}");
    let notes = guest(&ns, &d, "ws", "cat ~/proj/notes.txt");
    assert_eq!(notes, "untracked, not ignored, edited\n");
    // A file deleted on the host goes away in the guest on the next prepare.
    std::fs::remove_file(repo.join("notes.txt")).unwrap();
    ok(
        &ns,
        &d,
        &["workspace", "prepare", "ws", repo.to_str().unwrap()],
    );
    let gone = guest(
        &ns,
        &d,
        "ws",
        "test -e ~/proj/notes.txt && echo present || echo absent",
    );
    assert_eq!(gone.trim(), "absent");
    let before = host_state(&repo);

    // Work in the guest: one commit, then uncommitted edits.
    guest(
        &ns,
        &d,
        "ws",
        "cd ~/proj && echo 'fn main() { println!(\"guest\"); }' > src/main.rs \
         && git add src/main.rs && git commit -q -m 'guest: main prints' \
         && printf 'new in guest\\n' > added.txt && rm bin/run.sh \
         && printf 'more\\n' >> new_name.txt && printf 'x\\n' > scratch.log",
    );
    let guest_tree = guest(
        &ns,
        &d,
        "ws",
        "cd ~/proj && cp .git/index /tmp/i && GIT_INDEX_FILE=/tmp/i git add -A \
         && GIT_INDEX_FILE=/tmp/i git write-tree",
    );

    // A prepare now would overwrite the guest's unexported commit: refused.
    let (_, code, msg) = fails(
        &ns,
        &d,
        &["workspace", "prepare", "ws", repo.to_str().unwrap()],
    );
    assert_eq!(code, "invalid_state", "{msg}");
    assert!(
        msg.contains("not exported") && msg.contains("--force"),
        "{msg}"
    );

    // The export comes back as a plain byte stream: no rsync sender in the
    // guest ever talks to a client on the host (issue #13, finding 10). A
    // wrapper records any `rsync --server --sender` the host starts.
    guest(
        &ns,
        &d,
        "ws",
        r#"sudo mv /usr/bin/rsync /usr/bin/rsync.real && printf '%s\n' '#!/bin/sh' 'case "$*" in *--sender*) : > /tmp/rsync-sender-ran;; esac' 'exec /usr/bin/rsync.real "$@"' | sudo tee /usr/bin/rsync >/dev/null && sudo chmod 755 /usr/bin/rsync"#,
    );
    let exp = ok_json(&ns, &d, &["workspace", "export", "ws"]);
    let sender = guest(
        &ns,
        &d,
        "ws",
        "test -e /tmp/rsync-sender-ran && echo ran || echo never",
    );
    assert_eq!(
        sender.trim(),
        "never",
        "export used the guest's rsync sender"
    );
    assert_eq!(exp["branch"], "banger/ws", "{exp}");
    assert_eq!(exp["commits"], 2, "{exp}");
    assert_eq!(exp["uncommitted"], true, "{exp}");
    let host_tree = git(&repo, &["rev-parse", "banger/ws^{tree}"]);
    assert_eq!(host_tree.trim(), guest_tree.trim(), "exported tree differs");
    let log = git(&repo, &["log", "--format=%s", "banger/ws"]);
    assert!(
        log.starts_with("banger: uncommitted changes from VM ws\nguest: main prints\n"),
        "{log}"
    );
    assert_eq!(
        host_state(&repo),
        before,
        "export changed the host checkout"
    );

    // Refusals: an existing branch, a name git refuses, the checked-out branch.
    let (_, code, msg) = fails(&ns, &d, &["workspace", "export", "ws"]);
    assert_eq!(code, "already_exists", "{msg}");
    assert!(
        msg.contains("banger/ws") && msg.contains("--force"),
        "{msg}"
    );
    let (_, code, msg) = fails(
        &ns,
        &d,
        &["workspace", "export", "ws", "--branch", "bad..name"],
    );
    assert_eq!(code, "bad_request", "{msg}");
    let (_, code, msg) = fails(&ns, &d, &["workspace", "export", "ws", "--branch", "main"]);
    assert_eq!(code, "invalid_state", "{msg}");
    assert!(msg.contains("checked out"), "{msg}");
    // --force replaces the branch.
    ok_json(&ns, &d, &["workspace", "export", "ws", "--force"]);

    // A patch file instead of a branch.
    let patch = tmp.path().join("ws.patch");
    let exp: Value = ok_json(
        &ns,
        &d,
        &[
            "workspace",
            "export",
            "ws",
            "--patch",
            patch.to_str().unwrap(),
        ],
    );
    assert_eq!(exp["patch"], patch.to_str().unwrap());
    let text = std::fs::read_to_string(&patch).unwrap();
    assert!(text.starts_with("From "), "{text}");
    assert!(
        text.contains("Subject: [PATCH 2/2] banger: uncommitted changes"),
        "{text}"
    );
    let (_, code, _) = fails(
        &ns,
        &d,
        &[
            "workspace",
            "export",
            "ws",
            "--patch",
            patch.to_str().unwrap(),
        ],
    );
    assert_eq!(code, "already_exists");
    assert_eq!(
        host_state(&repo),
        before,
        "export changed the host checkout"
    );

    // Exported: a prepare may replace the guest's commits again.
    ok(
        &ns,
        &d,
        &["workspace", "prepare", "ws", repo.to_str().unwrap()],
    );
    assert_eq!(
        host_state(&repo),
        before,
        "prepare changed the host checkout"
    );

    // Another checkout with the same directory name gets a directory of its
    // own instead of replacing this one.
    let other = make_repo(&tmp.path().join("elsewhere"));
    let second = ok_json(
        &ns,
        &d,
        &["workspace", "prepare", "ws", other.to_str().unwrap()],
    );
    let gp = second["guest_path"].as_str().unwrap();
    assert!(
        gp.starts_with("/home/banger/proj-") && gp.len() == "/home/banger/proj-".len() + 8,
        "{second}"
    );
    let both = guest(&ns, &d, "ws", "ls -d ~/proj ~/proj-*");
    assert_eq!(both.lines().count(), 2, "{both}");

    // Prepare refusals.
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(broken.join(".git")).unwrap();
    let (_, code, msg) = fails(
        &ns,
        &d,
        &["workspace", "prepare", "ws", broken.to_str().unwrap()],
    );
    assert_eq!(code, "bad_request", "{msg}");

    // The VM's SSH master lives in the runtime dir (`vm ssh --json` names
    // it); `vm rm` ends it: its socket goes, and no ssh process holds it.
    let target = ok_json(&ns, &d, &["vm", "ssh", "ws"]);
    let control = std::path::PathBuf::from(target["control_path"].as_str().unwrap());
    assert!(control.starts_with(d.socket.parent().unwrap().join("ssh")));
    assert!(control.exists(), "no SSH master at {}", control.display());
    let master = control.to_str().unwrap();
    assert!(!pids_matching(&["ssh", master]).is_empty());
    ok(&ns, &d, &["vm", "rm", "ws"]);
    assert!(!control.exists(), "{master} outlived its VM");
    assert_eq!(pids_matching(&["ssh", master]), Vec::<u32>::new());
    d.proc.terminate();
}
