//! Verified downloads: stream an HTTP(S) body to a temporary file beside
//! the destination while hashing it, and publish it with a rename only when
//! its sha256 is the expected one. A failed or mismatched download leaves
//! nothing behind; the body is never held in memory.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::Digest as _;

use crate::{Progress, hex};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("expected sha256 {0:?} is not 64 hex digits")]
    BadDigest(String),
    #[error("creating a temporary file in {}", dir.display())]
    Temp {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the CA bundle {} for {url} (install ca-certificates)", path.display())]
    CaBundle {
        url: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("requesting {url}")]
    Request {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("reading the body of {url} after {done} bytes")]
    Body {
        url: String,
        done: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{url}: sha256 mismatch: expected {expected}, got {actual} ({size} bytes); nothing was kept"
    )]
    Mismatch {
        url: String,
        expected: String,
        actual: String,
        size: u64,
    },
}

/// The system's CA bundle, trusted for https downloads.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// TLS settings: rustls with ring, roots from [`CA_BUNDLE`] (read only for
/// https URLs; a plain-http download needs no roots).
fn tls_config(url: &str) -> Result<ureq::tls::TlsConfig, FetchError> {
    use ureq::tls::{PemItem, RootCerts, TlsConfig, parse_pem};
    let mut roots = Vec::new();
    if url.starts_with("https://") {
        let pem = std::fs::read(CA_BUNDLE).map_err(|source| FetchError::CaBundle {
            url: url.to_string(),
            path: CA_BUNDLE.into(),
            source,
        })?;
        roots = parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
    }
    Ok(TlsConfig::builder()
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .build())
}

/// True for 64 lowercase or uppercase hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A streamed HTTP(S) response body.
pub type Body = Box<dyn std::io::Read + Send>;

/// GET `url` (same client and TLS settings as [`fetch_verified`]) and
/// return its body as a stream, with its length when the server said. The
/// caller verifies what it reads.
pub fn open_url(url: &str) -> Result<(Body, Option<u64>), FetchError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .tls_config(tls_config(url)?)
        .build()
        .into();
    let resp = agent
        .get(url)
        .call()
        .map_err(|source| FetchError::Request {
            url: url.to_string(),
            source: Box::new(source),
        })?;
    let total = resp.body().content_length();
    Ok((Box::new(resp.into_body().into_reader()), total))
}

/// Download `url` to `dest`, verifying `sha256` (hex). Reports
/// [`Progress::Bytes`] about every MiB. `dest` appears only complete and
/// verified, through a rename in its own directory.
pub fn fetch_verified(
    url: &str,
    sha256: &str,
    dest: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, FetchError> {
    if !is_sha256(sha256) {
        return Err(FetchError::BadDigest(sha256.to_string()));
    }
    let expected = sha256.to_ascii_lowercase();
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".banger-fetch-")
        .tempfile_in(dir)
        .map_err(|source| FetchError::Temp {
            dir: dir.to_path_buf(),
            source,
        })?;
    let (mut body, total) = open_url(url)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut done = 0u64;
    let mut reported = 0u64;
    progress(Progress::Bytes { done, total });
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(FetchError::Body {
                    url: url.to_string(),
                    done,
                    source,
                });
            }
        };
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .map_err(|source| FetchError::Write {
                path: tmp.path().to_path_buf(),
                source,
            })?;
        done += n as u64;
        if done - reported >= 1 << 20 {
            reported = done;
            progress(Progress::Bytes { done, total });
        }
    }
    progress(Progress::Bytes { done, total });
    let actual = hex(&hasher.finalize());
    if actual != expected {
        // `tmp` is removed on drop.
        return Err(FetchError::Mismatch {
            url: url.to_string(),
            expected,
            actual,
            size: done,
        });
    }
    let write_err = |source| FetchError::Write {
        path: dest.to_path_buf(),
        source,
    };
    tmp.as_file().sync_all().map_err(write_err)?;
    tmp.persist(dest).map_err(|e| write_err(e.error))?;
    Ok(dest.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_trusts_the_system_bundle_and_http_needs_none() {
        let https = tls_config("https://deb.debian.org/x").unwrap();
        let ureq::tls::RootCerts::Specific(roots) = https.root_certs() else {
            panic!("specific roots expected");
        };
        assert!(
            roots.len() > 50,
            "only {} roots from {CA_BUNDLE}",
            roots.len()
        );
        let http = tls_config("http://127.0.0.1/x").unwrap();
        assert!(matches!(http.root_certs(), ureq::tls::RootCerts::Specific(r) if r.is_empty()));
    }
}
