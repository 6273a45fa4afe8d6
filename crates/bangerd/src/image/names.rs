//! Names of images and kernels: what is accepted, and the default name of an
//! imported kernel.

use std::path::Path;

use super::error::ImageError;

/// Longest accepted name (the store's CHECK agrees).
pub const MAX_NAME_LEN: usize = 128;

/// Accept `name` as the name of a `kind` ("image", "kernel"): 1-128
/// characters of `[a-z0-9._-]`, starting with a letter or digit, with no
/// `..` anywhere. Names never become paths (directories are named after
/// ids), but they show up in tables, logs and DNS-adjacent places, so they
/// stay boring.
pub fn validate_name(kind: &'static str, name: &str) -> Result<(), ImageError> {
    let invalid = |reason: &'static str| ImageError::InvalidName {
        kind,
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("it is longer than 128 characters"));
    }
    let first = name.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(invalid("it must start with a lowercase letter or a digit"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "it may only contain lowercase letters, digits, '.', '_' and '-'",
        ));
    }
    if name.contains("..") {
        return Err(invalid("it contains \"..\""));
    }
    Ok(())
}

/// The name a kernel imported from `path` gets without `--name`: the file
/// name, lowercased, without a trailing all-letter extension (`vmlinux.bin`
/// → `vmlinux`, but `vmlinuz-6.1.0-28-cloud-amd64` keeps its version).
pub fn default_kernel_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?.to_ascii_lowercase();
    let name = match file.rsplit_once('.') {
        Some((stem, ext))
            if !stem.is_empty()
                && !ext.is_empty()
                && ext.bytes().all(|b| b.is_ascii_alphabetic()) =>
        {
            stem.to_owned()
        }
        _ => file,
    };
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(name: &str) {
        validate_name("image", name).unwrap_or_else(|e| panic!("{name:?}: {e}"));
    }

    fn bad(name: &str, why: &str) {
        let err = validate_name("image", name).unwrap_err().to_string();
        assert!(err.contains(why), "{name:?}: {err}");
        assert!(
            err.contains(&format!("{name:?}")),
            "error names the input: {err}"
        );
    }

    #[test]
    fn accepted_names() {
        for n in [
            "a",
            "debian",
            "debian-12",
            "deb_12.1",
            "0",
            "x".repeat(128).as_str(),
        ] {
            ok(n);
        }
    }

    #[test]
    fn refused_names_say_why() {
        bad("", "empty");
        bad(&"x".repeat(129), "longer than 128");
        bad("-deb", "must start");
        bad(".hidden", "must start");
        bad("Debian", "must start");
        bad("deb ian", "may only contain");
        bad("deb/ian", "may only contain");
        bad("débian", "may only contain");
        bad("a..b", "\"..\"");
        bad("a..", "\"..\"");
    }

    #[test]
    fn default_kernel_names() {
        let d = |p: &str| default_kernel_name(Path::new(p));
        assert_eq!(d("/boot/vmlinux.bin").as_deref(), Some("vmlinux"));
        assert_eq!(d("/x/bzImage").as_deref(), Some("bzimage"));
        assert_eq!(
            d("/boot/vmlinuz-6.1.0-28-cloud-amd64").as_deref(),
            Some("vmlinuz-6.1.0-28-cloud-amd64")
        );
        assert_eq!(d("/x/.bin").as_deref(), Some(".bin"));
        assert_eq!(d("/"), None);
    }
}
