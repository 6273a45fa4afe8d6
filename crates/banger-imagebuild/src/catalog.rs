//! The kernel catalog: named kernels banger can download (`banger kernel
//! pull NAME`), shipped as `catalog/kernels.toml` and overridable by a file
//! of the same format whose entries replace same-named ones.
//!
//! ```toml
//! version = 1
//!
//! [[kernel]]
//! name = "debian-bookworm-cloud"
//! arch = "x86_64"
//! kind = "deb"            # "deb" | "bzimage" | "vmlinux"
//! url = "http://deb.debian.org/..."
//! sha256 = "<64 hex digits>"
//! description = "..."     # optional
//! initrd = { url = "...", sha256 = "..." }   # optional; not with kind = "deb"
//! ```
//!
//! A `deb` entry goes through [`crate::kernel_from_deb`] after download;
//! `bzimage` and `vmlinux` are used as they are.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::fetch::is_sha256;

/// The catalog shipped with banger.
pub const BUILTIN: &str = include_str!("../catalog/kernels.toml");

/// The only catalog format version this build reads.
pub const CATALOG_VERSION: u32 = 1;

/// What the downloaded file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelKind {
    /// A Debian `linux-image-*` package: kernel + generated initramfs.
    Deb,
    /// A compressed x86 bzImage (QEMU; Firecracker after extract_vmlinux).
    Bzimage,
    /// An uncompressed ELF kernel.
    Vmlinux,
}

/// A file to download and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Download {
    pub url: String,
    pub sha256: String,
}

/// One catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    pub name: String,
    pub arch: String,
    pub kind: KernelKind,
    pub url: String,
    pub sha256: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub initrd: Option<Download>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    #[serde(default)]
    kernel: Vec<CatalogEntry>,
}

/// A parsed, validated catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    pub entries: Vec<CatalogEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("reading the kernel catalog {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel catalog {source_name}: {message}")]
    Syntax {
        source_name: String,
        message: String,
    },
    #[error(
        "kernel catalog {source_name}: version {found} is not supported (this banger reads {CATALOG_VERSION})"
    )]
    Version { source_name: String, found: u32 },
    #[error("kernel catalog {source_name}, entry {index} ({name:?}): {problem}")]
    Entry {
        source_name: String,
        index: usize,
        name: String,
        problem: String,
    },
}

const ARCHES: &[&str] = &["x86_64", "aarch64"];

fn check_url(u: &str) -> Result<(), String> {
    if !(u.starts_with("http://") || u.starts_with("https://")) {
        return Err(format!("url {u:?} must be http:// or https://"));
    }
    if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("url {u:?} contains whitespace"));
    }
    Ok(())
}

fn check_entry(e: &CatalogEntry) -> Result<(), String> {
    let name_ok = !e.name.is_empty()
        && e.name.len() <= 64
        && e.name
            .starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && e.name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_'));
    if !name_ok {
        return Err("name must be 1-64 of a-z 0-9 . _ - starting with a letter or digit".into());
    }
    if !ARCHES.contains(&e.arch.as_str()) {
        return Err(format!(
            "arch {:?} is not one of {}",
            e.arch,
            ARCHES.join(", ")
        ));
    }
    check_url(&e.url)?;
    if !is_sha256(&e.sha256) {
        return Err(format!("sha256 {:?} is not 64 hex digits", e.sha256));
    }
    if let Some(i) = &e.initrd {
        if e.kind == KernelKind::Deb {
            return Err("a deb entry builds its own initrd; drop `initrd`".into());
        }
        check_url(&i.url).map_err(|m| format!("initrd {m}"))?;
        if !is_sha256(&i.sha256) {
            return Err(format!("initrd sha256 {:?} is not 64 hex digits", i.sha256));
        }
    }
    Ok(())
}

impl Catalog {
    /// Parse and validate catalog text; `source_name` names it in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Catalog, CatalogError> {
        let file: File = toml::from_str(text).map_err(|e| CatalogError::Syntax {
            source_name: source_name.to_string(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        if file.version != CATALOG_VERSION {
            return Err(CatalogError::Version {
                source_name: source_name.to_string(),
                found: file.version,
            });
        }
        let mut seen = BTreeSet::new();
        for (index, e) in file.kernel.iter().enumerate() {
            let entry_err = |problem: String| CatalogError::Entry {
                source_name: source_name.to_string(),
                index,
                name: e.name.clone(),
                problem,
            };
            check_entry(e).map_err(entry_err)?;
            if !seen.insert(e.name.clone()) {
                return Err(entry_err("the name is used by an earlier entry".into()));
            }
        }
        Ok(Catalog {
            entries: file.kernel,
        })
    }

    /// The catalog shipped with this build.
    pub fn builtin() -> Catalog {
        Catalog::parse(BUILTIN, "builtin").expect("the shipped catalog is valid (unit-tested)")
    }

    /// Read and parse a catalog file.
    pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Catalog::parse(&text, &path.display().to_string())
    }

    /// This catalog with `other`'s entries added, replacing same names.
    pub fn overridden_by(mut self, other: Catalog) -> Catalog {
        for e in other.entries {
            match self.entries.iter_mut().find(|x| x.name == e.name) {
                Some(slot) => *slot = e,
                None => self.entries.push(e),
            }
        }
        self
    }

    pub fn get(&self, name: &str) -> Option<&CatalogEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee";

    fn entry(name: &str, extra: &str) -> String {
        format!(
            "[[kernel]]\nname = \"{name}\"\narch = \"x86_64\"\nkind = \"bzimage\"\nurl = \"https://example.invalid/k\"\nsha256 = \"{SHA}\"\n{extra}\n"
        )
    }

    #[test]
    fn builtin_catalog_is_valid_and_has_the_debian_kernel() {
        let c = Catalog::builtin();
        let e = c.get("debian-bookworm-cloud").expect("debian entry");
        assert_eq!(e.kind, KernelKind::Deb);
        assert!(e.url.contains("linux-image-") && e.url.ends_with("_amd64.deb"));
    }

    #[test]
    fn errors_name_the_bad_entry() {
        let bad = |text: &str, want: &str| {
            let err = Catalog::parse(&format!("version = 1\n{text}"), "test.toml").unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(want), "{msg:?} lacks {want:?}");
            assert!(msg.contains("test.toml"), "{msg}");
        };
        let two = entry("good", "") + &entry("Bad Name", "");
        bad(&two, "entry 1 (\"Bad Name\")");
        bad(
            &entry("k", "").replace(SHA, "abc"),
            "sha256 \"abc\" is not 64 hex digits",
        );
        bad(&entry("k", "").replace("x86_64", "riscv"), "arch \"riscv\"");
        bad(
            &entry("k", "").replace("https://", "ftp://"),
            "must be http",
        );
        bad(
            &(entry("k", "") + &entry("k", "")),
            "entry 1 (\"k\"): the name is used",
        );
        bad(&entry("k", "colour = \"red\""), "unknown field `colour`");
        bad(
            &entry("k", "").replace("bzimage", "zip"),
            "unknown variant `zip`",
        );
        bad(
            &entry(
                "k",
                &format!("initrd = {{ url = \"https://x/i\", sha256 = \"{SHA}\" }}"),
            )
            .replace("bzimage", "deb"),
            "builds its own initrd",
        );
        let err = Catalog::parse("version = 2\n", "v.toml").unwrap_err();
        assert!(
            err.to_string().contains("version 2 is not supported"),
            "{err}"
        );
    }

    #[test]
    fn overrides_replace_by_name() {
        let base = Catalog::parse(&format!("version = 1\n{}", entry("a", "")), "a").unwrap();
        let over = Catalog::parse(
            &format!(
                "version = 1\n{}{}",
                entry("a", "description = \"new\""),
                entry("b", "")
            ),
            "b",
        )
        .unwrap();
        let c = base.overridden_by(over);
        assert_eq!(c.entries.len(), 2);
        assert_eq!(c.get("a").unwrap().description.as_deref(), Some("new"));
    }
}
