//! The install metadata (`/etc/banger/install.toml`), which both daemons
//! read: `banger_proto::install::InstallMeta::parse`, and
//! `InstallJail::parse` (`--jail-uids BASE:COUNT`) on the same text.
//!
//! Metadata that parses is written back by `banger system install` through
//! `InstallMeta::to_toml` (which `expect`s to succeed); that text must
//! parse to the same metadata, less the `state_dev` it never writes. A
//! parsed jail range must hold checked uids only.

#![no_main]

use std::path::Path;

use banger_proto::install::{InstallJail, InstallMeta};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(j) = InstallJail::parse(text) {
        assert!(j.check().is_ok(), "{j:?}");
        assert!(j.uid_base >= 65_536 && j.count >= 1, "{j:?}");
    }
    let path = Path::new("/fuzz/install.toml");
    let meta = match InstallMeta::parse(text, path) {
        Ok(m) => m,
        Err(e) => {
            let _ = banger_proto::error::chain(&e);
            return;
        }
    };
    let _ = meta.network.bridge_spec();
    let written = meta.to_toml();
    let back = InstallMeta::parse(&written, path)
        .unwrap_or_else(|e| panic!("metadata's own TOML is refused: {e:?}\n{written}"));
    let mut expected = meta.clone();
    expected.paths.state_dev = None;
    assert_eq!(
        back, expected,
        "metadata changed through its own TOML:\n{written}"
    );
});
