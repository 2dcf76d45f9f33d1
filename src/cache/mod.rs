//! The layer cache. Step results live in `--cache-repo` as one-layer images tagged
//! by their key; file indexes of layers (what COPY needs of a base) live there too,
//! tagged by layer digest, and under `--cache-dir` with downloaded base layers.
//! Every cache failure is a warning: the build goes on without it.

mod copies;
mod indexes;
pub(crate) mod key;
pub(crate) mod mounts;

use crate::image::model::manifest_with;
use crate::image::spec::{Descriptor, ImageConfig, Manifest};
use crate::image::ManifestFormat;
use crate::image::{Digest, Layer, LayerSource, Reference};
use crate::layer::reader::Entry;
use crate::registry::{Access, Registry, RegistryError, MAX_CONFIG_BYTES};
use key::CacheKey;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CacheError {
    #[error(transparent)]
    Registry(Box<RegistryError>),
    #[error("cache entry {tag}: {reason}")]
    Invalid { tag: String, reason: String },
    #[error("{op}: {source}")]
    Io { op: String, source: std::io::Error },
}

impl From<RegistryError> for CacheError {
    fn from(e: RegistryError) -> Self {
        CacheError::Registry(Box::new(e))
    }
}

pub(super) fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> CacheError {
    let op = op.into();
    move |source| CacheError::Io { op, source }
}

/// What the cache may use, from the flags.
#[derive(Debug, Clone, Default)]
pub struct CacheSettings {
    /// `--cache`: reuse and store step layers.
    pub layers: bool,
    pub repo: Option<Reference>,
    pub dir: Option<PathBuf>,
    pub ttl_secs: u64,
    /// False with `--no-push-cache`.
    pub push: bool,
    /// `--cache-mount-repo`: where `RUN --mount=type=cache` contents are kept.
    pub mounts_repo: Option<Reference>,
}

/// A stored file index being fetched (and decoded) early: its bytes, and its
/// entries when they decode.
type IndexFetch =
    tokio::task::JoinHandle<Result<Option<(Vec<u8>, Option<Vec<Entry>>)>, RegistryError>>;

/// A cache entry's config blob on its way up, started when its step was recorded.
type ConfigUpload = tokio::task::JoinHandle<Result<(), RegistryError>>;

/// An entry waiting to be written to the cache repository.
struct Pending {
    tag: String,
    blob: PathBuf,
    layer_digest: Digest,
    layer_media_type: String,
    diff_id: Digest,
    note: serde_json::Value,
    /// A step's layer, which the image's push puts in the destination first
    /// (then mounted from there, not uploaded again).
    after_push: bool,
    /// Its config's upload, when it started early (a step's entry).
    config_upload: Option<ConfigUpload>,
}

pub struct Cache {
    pub settings: CacheSettings,
    /// Set after the repository failed once: no more round trips to it.
    unreachable: AtomicBool,
    pending: Mutex<Vec<Pending>>,
    /// Stored file indexes of base layers on their way (gzip'd JSON).
    prefetched: Mutex<std::collections::HashMap<Digest, IndexFetch>>,
    /// zstd copies of base layers being made ([`copies`]).
    making: Mutex<Vec<copies::Making>>,
    now: u64,
    /// The caches of `RUN --mount=type=cache`, where they are kept in a repository.
    pub(crate) mounts: Option<mounts::MountStore>,
}

/// The config of a stored entry, read into a file of its own (two stages
/// may look the same key up at once).
pub(super) async fn config_of(
    registry: &Registry,
    r: &Reference,
    m: &Manifest,
    tmp: &Path,
) -> Result<ImageConfig, CacheError> {
    let cfg_path = crate::scratch::private_temp_file("cache-config-", tmp)
        .map_err(io("creating a cache config file"))?;
    registry
        .download_blob(
            r,
            &m.config.digest,
            m.config.size.min(MAX_CONFIG_BYTES),
            &cfg_path,
        )
        .await?;
    let bytes = std::fs::read(&cfg_path).map_err(io("reading cache config"))?;
    serde_json::from_slice(&bytes).map_err(|e| CacheError::Invalid {
        tag: r.to_string(),
        reason: e.to_string(),
    })
}

/// Annotations of a cache entry's manifest: when it was made (Unix seconds)
/// and its layer's diff_id, which its config holds too.
const ANNOTATION_CREATED: &str = "dev.kiln.cache.created";
const ANNOTATION_DIFF_ID: &str = "dev.kiln.cache.diff-id";

/// Media type of a stored file index (gzip'd JSON list of entries).
pub(crate) const MT_FILE_INDEX: &str = "application/vnd.kiln.file-index.v1+json+gzip";

impl Cache {
    pub fn new(settings: CacheSettings, now: u64) -> Cache {
        Cache {
            mounts: settings.mounts_repo.clone().map(mounts::MountStore::new),
            settings,
            unreachable: AtomicBool::new(false),
            pending: Mutex::new(Vec::new()),
            prefetched: Mutex::default(),
            making: Mutex::new(Vec::new()),
            now,
        }
    }

    /// After the build: the changed `RUN --mount=type=cache` contents to
    /// their repository (warnings on failure).
    async fn store_mounts(
        &self,
        registry: &Registry,
        tmp: &Path,
        compression: crate::layer::writer::Compression,
    ) {
        if let (Some(m), true) = (&self.mounts, self.settings.push) {
            m.store(registry, tmp, compression).await;
        }
    }

    fn repo(&self) -> Option<&Reference> {
        if self.unreachable.load(Ordering::Relaxed) {
            return None;
        }
        self.settings.repo.as_ref()
    }

    fn give_up(&self, what: &str, e: &dyn std::fmt::Display) {
        if !self.unreachable.swap(true, Ordering::Relaxed) {
            crate::log_warn!("cache repository unusable ({what}: {e}); building without it");
        }
    }

    /// Looks a step up by key: the layer and when it was made; `None` on a miss,
    /// an expired entry or any error.
    pub(crate) async fn lookup(
        &self,
        registry: &Registry,
        key: &CacheKey,
        tmp: &Path,
    ) -> Option<(Layer, u64)> {
        if !self.settings.layers {
            return None;
        }
        let repo = self.repo()?;
        match self.fetch_entry(registry, repo, &key.hex, tmp).await {
            Ok(found) => found,
            Err(e) => {
                self.give_up("lookup", &e);
                None
            }
        }
    }

    async fn fetch_entry(
        &self,
        registry: &Registry,
        repo: &Reference,
        tag: &str,
        tmp: &Path,
    ) -> Result<Option<(Layer, u64)>, CacheError> {
        let r = repo.with_object(Some(tag.to_string()), None);
        let raw = match registry.manifest(&r).await {
            Ok(raw) => raw,
            Err(RegistryError::Status { status, .. })
                if status == reqwest::StatusCode::NOT_FOUND =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        };
        let invalid = |reason: String| CacheError::Invalid {
            tag: tag.to_string(),
            reason,
        };
        let m: Manifest = serde_json::from_slice(&raw.bytes).map_err(|e| invalid(e.to_string()))?;
        let layer = m
            .layers
            .first()
            .ok_or_else(|| invalid("no layer".into()))?
            .clone();
        // Entries stored since these annotations need no second request.
        let noted = m.annotations.as_ref().and_then(|a| {
            let created = a.get(ANNOTATION_CREATED)?.parse::<u64>().ok()?;
            Some((created, Digest::parse(a.get(ANNOTATION_DIFF_ID)?).ok()?))
        });
        let (created, diff_id) = match noted {
            Some(noted) => noted,
            None => self.entry_config(registry, &r, &m, tmp, tag).await?,
        };
        if created + self.settings.ttl_secs < self.now {
            crate::log_info!("cache entry {tag} expired (older than --cache-ttl)");
            return Ok(None);
        }
        Ok(Some((
            Layer {
                descriptor: layer,
                diff_id,
                source: LayerSource::Remote(r),
            },
            created,
        )))
    }

    /// When an entry was made and its layer's diff_id, from its config.
    async fn entry_config(
        &self,
        registry: &Registry,
        r: &Reference,
        m: &Manifest,
        tmp: &Path,
        tag: &str,
    ) -> Result<(u64, Digest), CacheError> {
        let invalid = |reason: String| CacheError::Invalid {
            tag: tag.to_string(),
            reason,
        };
        let cfg = config_of(registry, r, m, tmp).await?;
        let created = cfg
            .other
            .get("kiln.cache")
            .and_then(|c| c.get("created_unix"))
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        let diff_id = cfg
            .rootfs
            .diff_ids
            .first()
            .ok_or_else(|| invalid("no diff_id".into()))?
            .clone();
        Ok((created, diff_id))
    }

    /// Queues a step's layer for storing under its key. The entry's config goes
    /// up now, so that once the image's push has put the layer in the destination
    /// only a mount and the entry's manifest are left.
    pub(crate) fn record(
        &self,
        registry: &std::sync::Arc<Registry>,
        key: &CacheKey,
        layer: &Layer,
        tmp: &Path,
    ) {
        if !self.settings.layers || !self.settings.push {
            return;
        }
        let LayerSource::Local(blob) = &layer.source else {
            return;
        };
        let mut p = Pending {
            tag: key.hex.clone(),
            blob: blob.clone(),
            layer_digest: layer.descriptor.digest.clone(),
            layer_media_type: layer.descriptor.media_type.clone(),
            diff_id: layer.diff_id.clone(),
            note: serde_json::json!({ "created_unix": self.now, "key": key.hex, "inputs": key.inputs }),
            after_push: true,
            config_upload: None,
        };
        p.config_upload = self.upload_config_early(registry, &p, tmp);
        self.queue(p);
    }

    /// Starts uploading an entry's config (a blob no manifest names yet, so a
    /// build that fails later leaves nothing a lookup finds).
    fn upload_config_early(
        &self,
        registry: &std::sync::Arc<Registry>,
        p: &Pending,
        tmp: &Path,
    ) -> Option<ConfigUpload> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let r = self.repo()?.with_object(Some(p.tag.clone()), None);
        let entry = self.entry_of(p).ok()?;
        let cfg_path = write_config(&entry, tmp).ok()?;
        let registry = registry.clone();
        Some(runtime.spawn(async move {
            ensure_blob(&registry, &r, &entry.config_digest, &cfg_path, None).await
        }))
    }

    fn queue(&self, p: Pending) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(p);
    }

    /// Writes every queued entry (blobs first, each manifest last), in parallel.
    /// Blobs the destination `pushed` already holds are mounted, not sent again.
    /// Failures are warnings.
    pub async fn flush(&self, registry: &Registry, tmp: &Path, pushed: Option<&Reference>) {
        self.copies_made().await;
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        self.store_all(registry, pending, tmp, pushed).await;
    }

    /// Writes the queued entries that need nothing of the image's push (file
    /// indexes), while the push goes on; `flush` writes the rest after it.
    /// What is stored while the image is pushed (changed cache mounts, file
    /// indexes); failures are warnings, never the build's.
    pub async fn beside_push(
        &self,
        registry: &Registry,
        tmp: &Path,
        compression: crate::layer::writer::Compression,
    ) {
        tokio::join!(
            self.store_mounts(registry, tmp, compression),
            self.flush_beside_push(registry, tmp)
        );
    }

    async fn flush_beside_push(&self, registry: &Registry, tmp: &Path) {
        let early: Vec<Pending> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let (early, later) = std::mem::take(&mut *pending)
                .into_iter()
                .partition(|p| !p.after_push);
            *pending = later;
            early
        };
        self.store_all(registry, early, tmp, None).await;
    }

    async fn store_all(
        &self,
        registry: &Registry,
        pending: Vec<Pending>,
        tmp: &Path,
        pushed: Option<&Reference>,
    ) {
        let Some(repo) = self.repo() else { return };
        // One write per tag: stages on one base queue its file index alike,
        // and stages that ran one key at once queue two entries (either serves).
        let mut tags = std::collections::HashSet::new();
        let jobs = pending
            .into_iter()
            .filter(|p| tags.insert(p.tag.clone()))
            .map(|p| self.store(registry, repo, p, tmp, pushed));
        for r in futures_util::future::join_all(jobs).await {
            if let Err(e) = r {
                self.give_up("store", &e);
            }
        }
    }

    async fn store(
        &self,
        registry: &Registry,
        repo: &Reference,
        mut p: Pending,
        tmp: &Path,
        pushed: Option<&Reference>,
    ) -> Result<(), CacheError> {
        let r = repo.with_object(Some(p.tag.clone()), None);
        let from = pushed
            .filter(|d| d.registry == r.registry && d.repository != r.repository)
            .map(|d| d.repository.as_str());
        let blob = async {
            ensure_blob(registry, &r, &p.layer_digest, &p.blob, from)
                .await
                .map_err(CacheError::from)
        };
        let entry = self.entry_of(&p)?;
        // The layer and the config go up at once; the manifest names both.
        let early = p.config_upload.take();
        let config = async {
            let done = match early {
                Some(upload) => upload.await.ok(),
                None => None,
            };
            match done {
                Some(uploaded) => uploaded?,
                None => {
                    let cfg_path = write_config(&entry, tmp)?;
                    ensure_blob(registry, &r, &entry.config_digest, &cfg_path, None).await?;
                }
            }
            Ok::<_, CacheError>(())
        };
        futures_util::future::try_join(blob, config).await?;
        registry
            .put_manifest(&r, &entry.manifest, entry.manifest_media_type)
            .await?;
        if crate::log::debug_enabled() {
            crate::log_debug!("cache stored {}", p.tag);
        }
        Ok(())
    }

    /// An entry's config and manifest: the same bytes however often made.
    fn entry_of(&self, p: &Pending) -> Result<crate::image::Serialized, CacheError> {
        let invalid = |e: serde_json::Error| CacheError::Invalid {
            tag: p.tag.clone(),
            reason: e.to_string(),
        };
        let mut cfg = serde_json::json!({
            "architecture": "", "os": "linux",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": [p.diff_id] },
        });
        cfg["kiln.cache"] = p.note.clone();
        let cfg = serde_json::to_vec(&cfg).map_err(invalid)?;
        let size = std::fs::metadata(&p.blob)
            .map_err(io("reading cache blob"))?
            .len();
        let layer = Descriptor {
            media_type: p.layer_media_type.clone(),
            digest: p.layer_digest.clone(),
            size,
            platform: None,
            annotations: None,
            urls: None,
        };
        // What a lookup needs, on the manifest: a hit is one request.
        let annotations = [
            (ANNOTATION_CREATED.to_string(), self.now.to_string()),
            (ANNOTATION_DIFF_ID.to_string(), p.diff_id.to_string()),
        ];
        manifest_with(cfg, &[layer], ManifestFormat::Oci, Some(annotations.into())).map_err(invalid)
    }

    /// Where a base layer blob is kept under `--cache-dir`.
    pub fn local_blob_path(&self, digest: &Digest) -> Option<PathBuf> {
        self.settings
            .dir
            .as_ref()
            .map(|d| d.join("blobs").join(digest.file_name()))
    }
}

/// The file an entry's config uploads from.
fn write_config(entry: &crate::image::Serialized, tmp: &Path) -> Result<PathBuf, CacheError> {
    // Named by content: two stages may queue one key with layers that
    // differ (their files' times), and their uploads run at once.
    let cfg_path = tmp.join(format!("cache-out-{}", entry.config_digest.file_name()));
    crate::scratch::write_whole(&cfg_path, &entry.config).map_err(io("writing cache config"))?;
    Ok(cfg_path)
}

/// Puts a blob in the repository unless it holds it already: mounted from the
/// repository `from` if the registry agrees, else uploaded; once per build
/// ([`Registry::place_once`]).
pub(super) async fn ensure_blob(
    registry: &Registry,
    r: &Reference,
    digest: &Digest,
    path: &Path,
    from: Option<&str>,
) -> Result<(), RegistryError> {
    registry
        .place_once(r, digest, || async {
            if let Some(from) = from {
                if registry.mount_blob(r, digest, from).await? {
                    return Ok(());
                }
            }
            if !registry.blob_exists(r, digest, Access::Push).await? {
                registry.upload_blob(r, digest, path).await?;
            }
            Ok::<_, RegistryError>(())
        })
        .await?;
    Ok(())
}

/// Writes a `--cache-dir` file under a temporary name of its own, then renames it
/// into place: concurrent builds on one cache dir never see half a file.
fn write_local(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::scratch::private_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    crate::scratch::write_whole(path, bytes)
}

#[cfg(test)]
mod tests;
