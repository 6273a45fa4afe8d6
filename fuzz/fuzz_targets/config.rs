//! The owner configuration file: `bangerd::config::Config::parse`, the
//! TOML parse and every check behind it, and the error text it builds
//! (which points at the line and key of a bad value). Also
//! `bangerd::config::parse_size` on the same text.
//!
//! What the daemon relies on after a successful parse is checked: the
//! limits are within `banger_proto::limits`, and every `[[file_sync]]`
//! path is relative, not empty and without `..` (they are joined under
//! the owner's and the guest user's home).

#![no_main]

use std::path::{Component, Path};

use banger_proto::limits;
use bangerd::config::{Config, parse_size};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_size(text);
    match Config::parse(text, Path::new("/fuzz/config.toml")) {
        Ok(c) => check(&c),
        Err(e) => {
            let _ = banger_proto::error::chain(&e);
        }
    }
});

fn check(c: &Config) {
    let vcpus = u32::from(limits::MIN_VCPUS)..=u32::from(limits::MAX_VCPUS);
    assert!(vcpus.contains(&c.vm.default_vcpus), "{c:?}");
    let memory = limits::MIN_MEMORY_MIB..=limits::MAX_MEMORY_MIB;
    assert!(memory.contains(&c.vm.default_memory_mib), "{c:?}");
    let disk = limits::MIN_DISK_BYTES..=limits::MAX_DISK_BYTES;
    assert!(disk.contains(&c.vm.default_disk_bytes), "{c:?}");
    for f in &c.file_sync {
        for p in [&f.host, &f.guest] {
            assert!(!p.as_os_str().is_empty(), "an empty file_sync path: {c:?}");
            assert!(
                p.components().all(|c| matches!(c, Component::Normal(_))),
                "a file_sync path that is not plainly relative: {p:?}"
            );
        }
    }
}
