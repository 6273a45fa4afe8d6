//! The kernel catalog: `banger_imagebuild::Catalog::parse` (the shipped
//! `catalog/kernels.toml` and an owner's override file have this format),
//! then the override merge and lookups the daemon makes with it.
//!
//! A parsed catalog's entries are each checked: names unique, every URL
//! http(s), every sha256 64 hex digits (the download is verified against
//! it, and the name becomes a file name under `kernels/`).

#![no_main]

use banger_imagebuild::Catalog;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let c = match Catalog::parse(text, "fuzz") {
        Ok(c) => c,
        Err(e) => {
            let _ = banger_proto::error::chain(&e);
            return;
        }
    };
    let mut names = std::collections::BTreeSet::new();
    for e in &c.entries {
        assert!(names.insert(e.name.as_str()), "a name given twice: {c:?}");
        assert!(
            !e.name.is_empty() && !e.name.contains('/') && e.name != "." && e.name != "..",
            "a name that is not one path component: {:?}",
            e.name
        );
        for (url, sha) in
            std::iter::once((&e.url, &e.sha256)).chain(e.initrd.iter().map(|i| (&i.url, &i.sha256)))
        {
            assert!(
                url.starts_with("http://") || url.starts_with("https://"),
                "{url:?}"
            );
            assert!(
                sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                "{sha:?}"
            );
        }
        assert_eq!(c.get(&e.name), Some(e));
    }
    let merged = Catalog::builtin().overridden_by(c.clone());
    for e in &c.entries {
        assert_eq!(
            merged.get(&e.name),
            Some(e),
            "an override that did not take"
        );
    }
});
