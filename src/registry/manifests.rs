//! Manifests and tags: fetched by tag or digest (verified against the
//! digest asked for), pushed under a tag, listed.

use super::{Access, RawManifest, Registry, RegistryError, Scope, MAX_MANIFEST_BYTES};
use crate::image::reference::Reference;
use crate::image::spec::MANIFEST_ACCEPT;
use crate::image::Digest;
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;

impl Registry {
    /// Fetches a manifest or index by tag or digest; the digest is checked when named.
    pub async fn manifest(&self, r: &Reference) -> Result<RawManifest, RegistryError> {
        let scope = Scope::of(r, Access::Pull);
        let op = format!("fetching manifest {}", r.object());
        let url_path = format!("/v2/{}/manifests/{}", r.repository, r.object());
        let mut resp = self
            .send(&op, &scope, |c, base| {
                Ok(c.get(format!("{base}{url_path}"))
                    .header("Accept", MANIFEST_ACCEPT))
            })
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(Self::status_error(&op, &scope, status, body));
        }
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_string())
            .unwrap_or_default();
        // distribution's own limit for manifests; nothing larger is read.
        let mut bytes = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > MAX_MANIFEST_BYTES {
                        return Err(RegistryError::TooLarge {
                            what: format!("manifest {}", r.object()),
                            registry: r.registry.clone(),
                            repository: r.repository.clone(),
                            limit: MAX_MANIFEST_BYTES as u64,
                        });
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(Self::request_error(&op, &scope, e)),
            }
        }
        let digest = Digest::sha256_of(&bytes);
        if let Some(want) = &r.digest {
            if *want != digest {
                return Err(RegistryError::DigestMismatch {
                    what: "manifest".into(),
                    registry: r.registry.clone(),
                    repository: r.repository.clone(),
                    expected: want.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        let media_type = if media_type.is_empty() || media_type == "application/json" {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.get("mediaType")
                        .and_then(|m| m.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_default()
        } else {
            media_type
        };
        Ok(RawManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Puts a manifest under `target`'s tag (or digest); returns its digest.
    pub async fn put_manifest(
        &self,
        target: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        let scope = Scope::of(target, Access::Push);
        let digest = Digest::sha256_of(bytes);
        let object = target.tag.clone().unwrap_or_else(|| digest.to_string());
        let op = format!("pushing manifest {object}");
        let path = format!("/v2/{}/manifests/{object}", target.repository);
        let body = bytes.to_vec();
        let mut attempt = 0;
        loop {
            let resp = self
                .send(&op, &scope, |c, base| {
                    Ok(c.put(format!("{base}{path}"))
                        .header(CONTENT_TYPE, media_type)
                        .body(body.clone()))
                })
                .await?;
            if resp.status().is_success() {
                return Ok(digest);
            }
            let s = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if s == StatusCode::BAD_REQUEST && link_read_empty(&text) && attempt < self.opts.retries
            {
                super::wait_to_retry(&op, &scope, &mut attempt, None).await;
                continue;
            }
            return Err(Self::status_error(&op, &scope, s, text));
        }
    }

    /// Lists tags (used by tests and the cache).
    pub async fn tags(&self, r: &Reference) -> Result<Vec<String>, RegistryError> {
        let scope = Scope::of(r, Access::Pull);
        let op = "listing tags".to_string();
        let path = format!("/v2/{}/tags/list", r.repository);
        let resp = self
            .send(&op, &scope, |c, base| Ok(c.get(format!("{base}{path}"))))
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !resp.status().is_success() {
            let s = resp.status();
            return Err(Self::status_error(&op, &scope, s, String::new()));
        }
        #[derive(serde::Deserialize)]
        struct Tags {
            tags: Option<Vec<String>>,
        }
        let t: Tags = resp.json().await.map_err(|source| RegistryError::Http {
            op,
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            source,
        })?;
        Ok(t.tags.unwrap_or_default())
    }
}

/// Whether a refused manifest put says what distribution's filesystem storage
/// says when it read a blob's link while another client rewrote it in place
/// (another build placing the same blob in the repository at that moment): a
/// digest that would not parse beside the blob it could not find. A blob
/// really missing is MANIFEST_BLOB_UNKNOWN alone, and is not tried again.
fn link_read_empty(body: &str) -> bool {
    body.contains("DIGEST_INVALID") && body.contains("MANIFEST_BLOB_UNKNOWN")
}
