//! The dm driver against an owner that plants files in its own VM
//! directory.

use super::*;

/// A root-only secret on the state directory's file system, as the
/// owner's hard link to it would be (`fs.protected_hardlinks=0`).
const SECRET: &str = "root:$y$j9T$SECRETSALT$SECRETHASH";

fn plant_secret(e: &Env) -> PathBuf {
    let secret = e.state.join("shadow");
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    secret
}

fn forget_devices(e: &Env) {
    let mut st = e.tools.st();
    st.loops.clear();
    st.dms.clear();
}

fn assert_no_secret(err: &VmOpError) {
    let text = banger_proto::error::chain(err).join(": ");
    assert!(
        !text.contains("SECRET") && !text.contains("root:"),
        "the file's bytes reached the error: {text}"
    );
}

/// Hostile review (final), finding 1: attach read the image id from the
/// owner-writable `root.origin` and echoed what it read in the error, so a
/// hard link to a root-only file there returned its first 64 bytes. The
/// image id is now root's record (the journal); the marker is not read.
#[test]
fn a_hard_linked_origin_marker_never_reaches_the_error() {
    let e = env();
    DmSnapshot.create(&e.host, VM, IMG).unwrap();
    forget_devices(&e);
    let secret = plant_secret(&e);
    std::fs::remove_file(e.vm_file("root.origin")).unwrap();
    std::fs::hard_link(&secret, e.vm_file("root.origin")).unwrap();
    match e.host.root_disk(VM) {
        // Root's record names the image: the marker is not even opened.
        Ok(disk) => assert_eq!(disk.bytes, IMAGE_BYTES),
        Err(err) => {
            assert_no_secret(&err);
            panic!("attach failed: {err}");
        }
    }
}

/// A VM created before root kept the image id (no journal record): the
/// marker is read once, only as the owner's single-link file, and what it
/// holds is never echoed.
#[test]
fn an_old_marker_is_read_only_as_the_owners_single_link_file() {
    let e = env();
    DmSnapshot.create(&e.host, VM, IMG).unwrap();
    forget_devices(&e);
    let old_journal = |e: &Env| {
        let mut txn = e.host.journal.open().unwrap();
        txn.state.dm_origins.clear();
        txn.save().unwrap();
    };
    old_journal(&e);
    // A hard link to root's file: refused by its link count, unread.
    let secret = plant_secret(&e);
    std::fs::remove_file(e.vm_file("root.origin")).unwrap();
    std::fs::hard_link(&secret, e.vm_file("root.origin")).unwrap();
    let err = e.host.root_disk(VM).unwrap_err();
    assert_no_secret(&err);
    assert!(err.to_string().contains("2 hard links"), "{err}");
    // The owner's own file with something else in it: not echoed either.
    std::fs::remove_file(e.vm_file("root.origin")).unwrap();
    std::fs::write(e.vm_file("root.origin"), SECRET).unwrap();
    let err = e.host.root_disk(VM).unwrap_err();
    assert_no_secret(&err);
    assert!(err.to_string().contains("not a valid image id"), "{err}");
    // A good marker attaches and is recorded: the marker is not read again.
    std::fs::write(e.vm_file("root.origin"), format!("{IMG}\n")).unwrap();
    e.host.root_disk(VM).unwrap();
    let txn = e.host.journal.open().unwrap();
    assert_eq!(txn.state.dm_origins.get(VM).map(String::as_str), Some(IMG));
}
