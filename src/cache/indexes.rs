//! File indexes of layers (what COPY needs of a base, path → type, mode,
//! owner): kept as gzip'd JSON under `--cache-dir/index` and in the cache
//! repository tagged `index-<layer digest>`, fetched and decoded ahead of the
//! step that needs them, stored after the push.

use super::{write_local, Cache, Pending, MT_FILE_INDEX};
use crate::image::spec::Manifest;
use crate::image::{Digest, Layer, Reference};
use crate::layer::reader::Entry;
use crate::registry::{Registry, RegistryError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

impl Cache {
    pub(super) fn index_tag(layer_digest: &Digest) -> String {
        format!("index-{}", layer_digest.encoded())
    }

    pub(super) fn local_index_path(&self, layer_digest: &Digest) -> Option<PathBuf> {
        self.settings.dir.as_ref().map(|d| {
            d.join("index")
                .join(format!("{}.json.gz", layer_digest.encoded()))
        })
    }

    /// A layer's entries from `--cache-dir` or the cache repository, if stored there.
    pub(crate) async fn layer_entries(
        &self,
        registry: &Registry,
        layer_digest: &Digest,
        tmp: &Path,
    ) -> Option<Vec<Entry>> {
        if let Some(p) = self.local_index_path(layer_digest) {
            if let Ok(bytes) = std::fs::read(&p) {
                if let Ok(e) = decode_entries(&bytes) {
                    return Some(e);
                }
            }
        }
        if !self.settings.layers {
            return None;
        }
        let repo = self.repo()?;
        let r = repo.with_object(Some(Self::index_tag(layer_digest)), None);
        let early = self
            .prefetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(layer_digest);
        let fetched = match early {
            Some(h) => match h.await {
                Ok(r) => r,
                Err(_) => fetch_index(registry, &r, tmp).await.map(decoded),
            },
            None => fetch_index(registry, &r, tmp).await.map(decoded),
        };
        let (bytes, entries) = match fetched {
            Ok(found) => found?,
            Err(e) => {
                self.give_up("index lookup", &e);
                return None;
            }
        };
        let entries = entries?;
        if let Some(local) = self.local_index_path(layer_digest) {
            let _ = write_local(&local, &bytes);
        }
        Some(entries)
    }

    /// Starts fetching the stored file indexes of a base's layers as soon as
    /// the base is known, so they arrive while its first steps are looked up
    /// (COPY needs them); [`Cache::layer_entries`] takes them.
    pub(crate) fn prefetch_layer_entries(
        &self,
        registry: &std::sync::Arc<Registry>,
        layers: &[Layer],
        tmp: &Path,
    ) {
        let Some(repo) = self.repo().filter(|_| self.settings.layers) else {
            return;
        };
        let mut early = self.prefetched.lock().unwrap_or_else(|e| e.into_inner());
        for l in layers {
            let d = &l.descriptor.digest;
            let local = self.local_index_path(d).is_some_and(|p| p.exists());
            if local || early.contains_key(d) {
                continue;
            }
            let r = repo.with_object(Some(Self::index_tag(d)), None);
            let (registry, tmp) = (registry.clone(), tmp.to_path_buf());
            // Decoded (about 2 µs a path) on a blocking thread as soon as it
            // arrives: off the path of the COPY that waits for it.
            let fetch = async move {
                match fetch_index(&registry, &r, &tmp).await? {
                    Some(bytes) => Ok(tokio::task::spawn_blocking(move || decoded(Some(bytes)))
                        .await
                        .ok()
                        .flatten()),
                    None => Ok(None),
                }
            };
            early.insert(d.clone(), tokio::spawn(fetch));
        }
    }

    /// Keeps a layer's entries under `--cache-dir` and queues them for the repository.
    pub(crate) fn store_layer_entries(&self, layer_digest: &Digest, entries: &[Entry], tmp: &Path) {
        let Ok(bytes) = encode_entries(entries) else {
            return;
        };
        if let Some(local) = self.local_index_path(layer_digest) {
            if let Err(e) = write_local(&local, &bytes) {
                crate::log_warn!("writing {}: {e}", local.display());
            }
        }
        if !self.settings.layers || !self.settings.push {
            return;
        }
        let blob = tmp.join(format!("index-out-{}", layer_digest.file_name()));
        // Stages sharing a base store the same index: each write lands whole.
        if crate::scratch::write_whole(&blob, &bytes).is_err() {
            return;
        }
        let digest = Digest::sha256_of(&bytes);
        self.queue(Pending {
            tag: Self::index_tag(layer_digest),
            blob,
            layer_digest: digest.clone(),
            layer_media_type: MT_FILE_INDEX.into(),
            diff_id: digest,
            note: serde_json::json!({ "created_unix": self.now, "file_index_of": layer_digest.as_str() }),
            after_push: false,
            config_upload: None,
        });
    }
}

/// A stored file index's bytes (gzip'd JSON) under the tag `r`; `None` when
/// there is none (or it cannot be read).
async fn fetch_index(
    registry: &Registry,
    r: &Reference,
    tmp: &Path,
) -> Result<Option<Vec<u8>>, RegistryError> {
    let raw = match registry.manifest(r).await {
        Ok(raw) => raw,
        Err(RegistryError::Status { status, .. }) if status == reqwest::StatusCode::NOT_FOUND => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let Some(l) = serde_json::from_slice::<Manifest>(&raw.bytes)
        .ok()
        .and_then(|m| m.layers.into_iter().next())
    else {
        return Ok(None);
    };
    // Stages sharing a base read its layers' indexes at once: a file each.
    let Ok(p) = crate::scratch::private_temp_file("index-", tmp) else {
        return Ok(None);
    };
    registry.download_blob(r, &l.digest, l.size, &p).await?;
    Ok(std::fs::read(&p).ok())
}

/// A fetched index's bytes with their entries, `None` where they do not decode.
fn decoded(bytes: Option<Vec<u8>>) -> Option<(Vec<u8>, Option<Vec<Entry>>)> {
    bytes.map(|b| {
        let entries = decode_entries(&b).ok();
        (b, entries)
    })
}

pub(super) fn encode_entries(entries: &[Entry]) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_vec(entries).map_err(std::io::Error::other)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&json)?;
    gz.finish()
}

pub(super) fn decode_entries(bytes: &[u8]) -> std::io::Result<Vec<Entry>> {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut json)?;
    serde_json::from_slice(&json).map_err(std::io::Error::other)
}
