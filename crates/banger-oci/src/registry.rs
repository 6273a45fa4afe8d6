//! Talking to the registry: credentials, the client, the linux/amd64
//! manifest, and blobs streamed to disk while they are hashed.

use std::net::IpAddr;
use std::path::Path;

use base64::Engine as _;
use futures_util::StreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{Arch, Os};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::{Credentials, OciError, Progress, ProgressFn, PullOptions, Stage};

/// Parse a reference the way `docker pull` does (`debian` means
/// `docker.io/library/debian:latest`).
pub fn parse_reference(reference: &str) -> Result<Reference, OciError> {
    reference
        .parse::<Reference>()
        .map_err(|source| OciError::InvalidReference {
            reference: reference.into(),
            source,
        })
}

/// Host part of `registry[:port]`, `[v6]:port` included.
fn registry_host(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.rsplit_once(':').map_or(registry, |(h, _)| h)
}

fn is_loopback(registry: &str) -> bool {
    let host = registry_host(registry);
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The client for one pull. `insecure` selects plain HTTP, and only for a
/// loopback registry.
pub fn client(reference: &Reference, opts: &PullOptions) -> Result<Client, OciError> {
    // reqwest is built without a bundled TLS provider; ring is the one the
    // workspace already links. Installing twice is a harmless no-op error.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = reference.resolve_registry().to_string();
    let protocol = if opts.insecure {
        if !is_loopback(&registry) {
            return Err(OciError::InsecureNotLoopback { registry });
        }
        ClientProtocol::HttpsExcept(vec![registry])
    } else {
        ClientProtocol::Https
    };
    Ok(Client::new(ClientConfig {
        protocol,
        // Platform selection is done here, so that a missing platform is
        // reported with what the index does offer.
        platform_resolver: None,
        connect_timeout: Some(std::time::Duration::from_secs(30)),
        read_timeout: Some(std::time::Duration::from_secs(300)),
        ..Default::default()
    }))
}

#[derive(serde::Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, DockerAuth>,
}

#[derive(serde::Deserialize, Default)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    registrytoken: Option<String>,
}

/// Normalise a `~/.docker/config.json` key (`https://host/v1/`, `host`) to
/// `host[:port]`.
fn config_key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// Credentials for `reference`: explicit ones first, then the caller's
/// docker config file (inline `auth`, `username`/`password` or
/// `registrytoken`), else anonymous. A bearer-token challenge from the
/// registry is answered by the client with whichever of these it has.
pub fn credentials(reference: &Reference, opts: &PullOptions) -> Result<RegistryAuth, OciError> {
    if let Some(c) = &opts.credentials {
        return Ok(match c {
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credentials::Bearer(token) => RegistryAuth::Bearer(token.clone()),
        });
    }
    let Some(path) = &opts.docker_config else {
        return Ok(RegistryAuth::Anonymous);
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistryAuth::Anonymous),
        Err(source) => {
            return Err(OciError::DockerConfig {
                path: path.clone(),
                source,
            });
        }
    };
    let cfg: DockerConfig = serde_json::from_str(&text).map_err(|e| OciError::DockerConfig {
        path: path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    let want = reference.resolve_registry();
    let docker_hub = ["docker.io", "index.docker.io", "registry-1.docker.io"];
    let Some(a) = cfg.auths.iter().find_map(|(k, v)| {
        let h = config_key_host(k);
        (h == want || (docker_hub.contains(&h) && docker_hub.contains(&want))).then_some(v)
    }) else {
        return Ok(RegistryAuth::Anonymous);
    };
    if let Some(token) = &a.registrytoken {
        return Ok(RegistryAuth::Bearer(token.clone()));
    }
    if let (Some(u), Some(p)) = (&a.username, &a.password) {
        return Ok(RegistryAuth::Basic(u.clone(), p.clone()));
    }
    if let Some(auth) = &a.auth {
        let bad = |why: &str| OciError::DockerConfig {
            path: path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("`auth` for {want}: {why}"),
            ),
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad("not base64"))?;
        let s = String::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
        let (u, p) = s.split_once(':').ok_or_else(|| bad("not user:password"))?;
        return Ok(RegistryAuth::Basic(u.into(), p.into()));
    }
    Ok(RegistryAuth::Anonymous)
}

/// Fetch the image manifest for linux/amd64 (choosing from an index when
/// the reference names one). Returns the manifest and its digest.
pub async fn manifest(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    shown: &str,
) -> Result<(OciImageManifest, String), OciError> {
    let err = |source| OciError::Manifest {
        reference: shown.into(),
        source,
    };
    let (m, digest) = client.pull_manifest(reference, auth).await.map_err(err)?;
    match m {
        OciManifest::Image(m) => Ok((m, digest)),
        OciManifest::ImageIndex(idx) => {
            let chosen = idx.manifests.iter().find(|e| {
                e.platform
                    .as_ref()
                    .is_some_and(|p| p.os == Os::Linux && p.architecture == Arch::Amd64)
            });
            let Some(entry) = chosen else {
                let found: Vec<String> = idx
                    .manifests
                    .iter()
                    .map(|e| match &e.platform {
                        Some(p) => format!("{}/{}", p.os, p.architecture),
                        None => "unknown platform".into(),
                    })
                    .collect();
                return Err(OciError::WrongArchitecture {
                    reference: shown.into(),
                    found: if found.is_empty() {
                        "nothing".into()
                    } else {
                        found.join(", ")
                    },
                });
            };
            let r = reference.clone_with_digest(entry.digest.clone());
            match client.pull_manifest(&r, auth).await.map_err(err)? {
                (OciManifest::Image(m), d) => Ok((m, d)),
                (OciManifest::ImageIndex(_), _) => Err(OciError::WrongArchitecture {
                    reference: shown.into(),
                    found: "a nested index instead of a linux/amd64 manifest".into(),
                }),
            }
        }
    }
}

fn check_digest(digest: &str) -> Result<&str, OciError> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| OciError::UnsupportedDigest {
            digest: digest.into(),
        })
}

/// Stream blob `desc` into `dest` (created new, `0600`), hashing as it
/// goes: never more than one network chunk in memory. Enforces
/// `max_bytes`, the manifest's size and the digest.
pub async fn download(
    client: &Client,
    reference: &Reference,
    desc: &OciDescriptor,
    dest: &Path,
    max_bytes: u64,
    progress: &ProgressFn,
) -> Result<(), OciError> {
    let digest = desc.digest.clone();
    let want_hex = check_digest(&digest)?.to_ascii_lowercase();
    let expected = u64::try_from(desc.size).unwrap_or(0);
    if expected > max_bytes {
        return Err(OciError::LayerTooLarge {
            digest,
            size: expected,
            limit: max_bytes,
        });
    }
    let mut stream = client
        .pull_blob_stream(reference, desc)
        .await
        .map_err(|source| OciError::BlobFetch {
            digest: digest.clone(),
            source,
        })?;
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc_nofollow())
        .open(dest)
        .await
        .map_err(OciError::staging("creating blob file", dest))?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut hasher = Sha256::new();
    let mut got: u64 = 0;
    let mut last_report = 0u64;
    let stage = Stage::Download {
        digest: digest.clone(),
    };
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(source) => {
                // The client's own verifier fails the stream at its end; say
                // which check failed in our own terms.
                if got < expected {
                    return Err(OciError::LayerTruncated {
                        digest,
                        got,
                        expected,
                    });
                }
                let actual = hex(&hasher.finalize());
                if got == expected && actual != want_hex {
                    return Err(OciError::DigestMismatch {
                        digest,
                        actual: format!("sha256:{actual}"),
                    });
                }
                return Err(OciError::BlobStream {
                    digest,
                    got,
                    source,
                });
            }
        };
        got += chunk.len() as u64;
        if got > expected {
            return Err(OciError::LayerOversized { digest, expected });
        }
        hasher.update(&chunk);
        out.write_all(&chunk)
            .await
            .map_err(OciError::staging("writing blob file", dest))?;
        if got - last_report >= 1 << 20 || got == expected {
            last_report = got;
            progress(&Progress {
                stage: stage.clone(),
                done: got,
                total: Some(expected),
            });
        }
    }
    out.flush()
        .await
        .map_err(OciError::staging("writing blob file", dest))?;
    if got < expected {
        return Err(OciError::LayerTruncated {
            digest,
            got,
            expected,
        });
    }
    let actual = hex(&hasher.finalize());
    if actual != want_hex {
        return Err(OciError::DigestMismatch {
            digest,
            actual: format!("sha256:{actual}"),
        });
    }
    Ok(())
}

/// Fetch a small blob (the image configuration) into memory, capped.
pub async fn small_blob(
    client: &Client,
    reference: &Reference,
    desc: &OciDescriptor,
    cap: u64,
) -> Result<Vec<u8>, OciError> {
    let digest = desc.digest.clone();
    let want_hex = check_digest(&digest)?.to_ascii_lowercase();
    let size = u64::try_from(desc.size).unwrap_or(0);
    if size > cap {
        return Err(OciError::LayerTooLarge {
            digest,
            size,
            limit: cap,
        });
    }
    let mut buf = Vec::with_capacity(size as usize);
    client
        .pull_blob(reference, desc, &mut buf)
        .await
        .map_err(|source| OciError::BlobFetch {
            digest: digest.clone(),
            source,
        })?;
    if buf.len() as u64 != size {
        return Err(OciError::LayerTruncated {
            digest,
            got: buf.len() as u64,
            expected: size,
        });
    }
    let actual = hex(&Sha256::digest(&buf));
    if actual != want_hex {
        return Err(OciError::DigestMismatch {
            digest,
            actual: format!("sha256:{actual}"),
        });
    }
    Ok(buf)
}

fn libc_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_only_for_insecure() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.com:5000"));
        assert!(!is_loopback("10.0.0.1"));
    }

    #[test]
    fn docker_config_keys_normalise() {
        assert_eq!(
            config_key_host("https://index.docker.io/v1/"),
            "index.docker.io"
        );
        assert_eq!(config_key_host("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
