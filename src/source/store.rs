//! Where layer bytes come from: a blob store over the registry, `--cache-dir` and
//! this build's scratch directory. A [`Layer`] opens its own bytes through it
//! (compressed or not), the way go-containerregistry's `Layer` does, so dispatch,
//! publish and the warmer share one way in and no module reaches into another.

use crate::image::model::{Layer, LayerSource};
use crate::image::spec::is_foreign;
use crate::image::Digest;
use crate::registry::{Registry, RegistryError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // Boxed: registry errors carry several names and would bloat every Result.
    #[error(transparent)]
    Registry(Box<RegistryError>),
    #[error("{op}: {source}")]
    Io { op: String, source: std::io::Error },
}

impl From<RegistryError> for StoreError {
    fn from(e: RegistryError) -> Self {
        StoreError::Registry(Box::new(e))
    }
}

/// One lock per blob digest; each holds whether this build has verified the
/// blob's file (downloaded it, or hashed the copy found in `--cache-dir`).
#[derive(Default)]
struct BlobLocks(Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<bool>>>>);

impl BlobLocks {
    async fn lock(&self, digest: &Digest) -> tokio::sync::OwnedMutexGuard<bool> {
        let m = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(digest.clone())
            .or_default()
            .clone();
        m.lock_owned().await
    }
}

/// Blob files of one build: downloaded once each, verified before use.
pub struct BlobStore {
    registry: Arc<Registry>,
    /// `--cache-dir`'s `blobs/`, shared by builds and the warmer.
    cache_dir: Option<PathBuf>,
    /// This build's own downloads.
    scratch: PathBuf,
    locks: BlobLocks,
}

impl BlobStore {
    pub(crate) fn new(
        registry: Arc<Registry>,
        cache_dir: Option<PathBuf>,
        scratch: PathBuf,
    ) -> Self {
        BlobStore {
            registry,
            cache_dir,
            scratch,
            locks: BlobLocks::default(),
        }
    }

    fn path_of(&self, digest: &Digest) -> PathBuf {
        match &self.cache_dir {
            Some(d) => d.join("blobs").join(digest.file_name()),
            None => self.scratch.join(digest.file_name()),
        }
    }

    /// The blob file of a layer, downloading it once per build (or keeping it in
    /// `--cache-dir`, where a warmer may already have put it).
    pub(crate) async fn layer_file(&self, layer: &Layer) -> Result<PathBuf, StoreError> {
        let r = match &layer.source {
            LayerSource::Local(p) => return Ok(p.clone()),
            LayerSource::Remote(r) => r,
        };
        let digest = &layer.descriptor.digest;
        let path = self.path_of(digest);
        let mut verified = self.locks.lock(digest).await;
        if *verified {
            return Ok(path);
        }
        // A file already there (another build's, a warmer's) is used only once its
        // bytes are seen to match the digest.
        if path.exists() {
            if blob_matches(&path, digest, layer.descriptor.size).await {
                *verified = true;
                return Ok(path);
            }
            crate::log_warn!(
                "{} does not match {digest}; downloading it again",
                path.display()
            );
        }
        let parent = path.parent().unwrap_or(&self.scratch);
        let io = |op: String| move |source| StoreError::Io { op, source };
        crate::scratch::private_dir_all(parent)
            .map_err(io(format!("creating {}", parent.display())))?;
        // A name of its own, so builds sharing a cache dir never write one file.
        let part = tempfile::Builder::new()
            .prefix(".part-")
            .tempfile_in(parent)
            .map_err(io(format!("creating a file in {}", parent.display())))?
            .into_temp_path();
        let size = layer.descriptor.size;
        crate::log_info!("downloading layer {digest} ({size} bytes)");
        let phase = self.registry.transfer.pull.begin();
        match layer.descriptor.urls.as_deref().unwrap_or_default() {
            [url, ..] if is_foreign(&layer.descriptor) => {
                self.registry
                    .download_url(r, url, digest, size, &part)
                    .await?
            }
            _ => self.registry.download_blob(r, digest, size, &part).await?,
        };
        part.persist(&path).map_err(|e| StoreError::Io {
            op: format!("storing blob {digest}"),
            source: e.error,
        })?;
        *verified = true;
        let took = phase.done(size, 1);
        crate::log_info!(
            "downloaded layer {digest} ({size} bytes) in {}{}",
            crate::report::seconds(took),
            crate::report::rate(size, took)
        );
        Ok(path)
    }
}

impl Layer {
    /// The layer's blob as stored (gzip, zstd or plain tar), as a file.
    pub async fn compressed(&self, store: &BlobStore) -> Result<PathBuf, StoreError> {
        store.layer_file(self).await
    }
}

/// Whether a blob file has the descriptor's size and digest.
async fn blob_matches(path: &Path, digest: &Digest, size: u64) -> bool {
    if std::fs::metadata(path).map(|m| m.len()).ok() != Some(size) {
        return false;
    }
    let (path, digest) = (path.to_path_buf(), digest.clone());
    tokio::task::spawn_blocking(move || digest.matches_file(&path).unwrap_or(false))
        .await
        .unwrap_or(false)
}
