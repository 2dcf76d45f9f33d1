//! `RUN --mount=type=cache` contents kept in a registry repository
//! (`--cache-mount-repo`), so a fresh pod starts from the last build's
//! caches instead of nothing. Each cache is an image in that repository,
//! tagged by its directory's name (the hash of its id and what it starts
//! from): its layers, applied in order, are the contents. A build fetches a
//! cache before the first step that mounts it; after the build, what its
//! steps changed is pushed as one more layer (the whole cache as one layer
//! once the chain is long), blobs first and the manifest last, so a reader
//! always sees a whole version and the last writer wins. Every failure is a
//! warning: the build goes on with an empty cache.

use super::{io, CacheError};
use crate::image::model::manifest_for;
use crate::image::spec::{Descriptor, Manifest};
use crate::image::{Digest, ManifestFormat, Reference};
use crate::layer::writer::{Compression, LayerWriter};
use crate::registry::{Registry, RegistryError};
use crate::rootfs::apply::ScratchRoot;
use crate::rootfs::keep::Keep;
use crate::sandbox::inplace::{self, Snapshot};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// A stored chain longer than this is replaced by one layer of the whole cache.
const MAX_CHAIN: usize = 8;

/// A cache this build mounted: what it held when the build took it.
struct Taken {
    instance: PathBuf,
    /// The stored layers it was made from (with their diff_ids); empty
    /// when it was not made from the repository (a local cache dir's).
    layers: Vec<(Descriptor, Digest)>,
    from_store: bool,
    before: Snapshot,
}

/// The caches of one build and where they are kept.
pub(crate) struct MountStore {
    repo: Reference,
    taken: tokio::sync::Mutex<BTreeMap<PathBuf, Taken>>,
}

impl MountStore {
    pub(crate) fn new(repo: Reference) -> MountStore {
        MountStore {
            repo,
            taken: tokio::sync::Mutex::new(BTreeMap::new()),
        }
    }

    fn reference(&self, dir: &Path) -> Reference {
        let tag = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.repo.with_object(Some(tag), None)
    }

    /// Before a step mounts the cache whose instances live in `dir`: its
    /// shared instance (`dir/0`) is filled from the repository once per
    /// build, unless it is there already (a `--cache-dir` kept it).
    /// `make_root` makes an empty cache's directory, as the step expects it.
    pub(crate) async fn prepare(
        &self,
        registry: &Registry,
        dir: &Path,
        make_root: &(dyn Fn(&Path) -> std::io::Result<()> + Sync),
        tmp: &Path,
    ) {
        let mut taken = self.taken.lock().await;
        if taken.contains_key(dir) {
            return;
        }
        let instance = dir.join("0");
        let r = self.reference(dir);
        let fetched = if instance.is_dir() {
            Ok(None)
        } else {
            self.fetch(registry, &r, (dir, &instance), make_root, tmp)
                .await
        };
        let (layers, from_store) = match fetched {
            Ok(Some(layers)) => (layers, true),
            Ok(None) => (Vec::new(), false),
            Err(e) => {
                crate::log_warn!("cache mount {r}: {e}; the step starts from an empty cache");
                let _ = std::fs::remove_dir_all(&instance);
                (Vec::new(), false)
            }
        };
        let before = if instance.is_dir() {
            Snapshot::take(&instance, &Keep::default()).unwrap_or_default()
        } else {
            Snapshot::default()
        };
        taken.insert(
            dir.to_path_buf(),
            Taken {
                instance,
                layers,
                from_store,
                before,
            },
        );
    }

    /// Fills `instance` from the stored layers of `r`; `None` when none are
    /// stored.
    async fn fetch(
        &self,
        registry: &Registry,
        r: &Reference,
        (dir, instance): (&Path, &Path),
        make_root: &(dyn Fn(&Path) -> std::io::Result<()> + Sync),
        tmp: &Path,
    ) -> Result<Option<Vec<(Descriptor, Digest)>>, CacheError> {
        let raw = match registry.manifest(r).await {
            Ok(raw) => raw,
            Err(RegistryError::Status { status, .. })
                if status == reqwest::StatusCode::NOT_FOUND =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        };
        let tag = r.to_string();
        let invalid = |reason: String| CacheError::Invalid {
            tag: tag.clone(),
            reason,
        };
        let m: Manifest = serde_json::from_slice(&raw.bytes).map_err(|e| invalid(e.to_string()))?;
        let cfg = super::config_of(registry, r, &m, tmp).await?;
        if cfg.rootfs.diff_ids.len() != m.layers.len() {
            return Err(invalid("layers and diff_ids differ in number".into()));
        }
        crate::scratch::private_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let fill = dir.join(format!("fetch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&fill);
        make_root(&fill).map_err(io(format!("creating {}", fill.display())))?;
        let started = std::time::Instant::now();
        let mut bytes = 0;
        for l in &m.layers {
            let blob = crate::scratch::private_temp_file("mount-layer-", tmp)
                .map_err(io("creating a cache layer file"))?;
            bytes += registry.download_blob(r, &l.digest, l.size, &blob).await?;
            let root = ScratchRoot::new(&fill);
            let applied =
                tokio::task::block_in_place(|| root.apply_layer(&blob, l.digest.as_str()));
            let _ = std::fs::remove_file(&blob);
            applied.map_err(|e| invalid(e.to_string()))?;
        }
        std::fs::rename(&fill, instance).map_err(io(format!("making {}", instance.display())))?;
        crate::log_info!(
            "cache mount {r}: {} layer(s), {bytes} bytes, in {:.1}s",
            m.layers.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(Some(
            m.layers
                .into_iter()
                .zip(cfg.rootfs.diff_ids)
                .collect::<Vec<_>>(),
        ))
    }

    /// After the build: each cache's change since it was taken, pushed as
    /// one more layer of its chain. Failures are warnings.
    pub(crate) async fn store(&self, registry: &Registry, tmp: &Path, compression: Compression) {
        let taken = std::mem::take(&mut *self.taken.lock().await);
        let jobs = taken
            .iter()
            .map(|(dir, t)| self.store_one(registry, dir, t, tmp, compression));
        for (r, result) in futures_util::future::join_all(jobs).await {
            if let Err(e) = result {
                crate::log_warn!("cache mount {r} not stored: {e}");
            }
        }
    }

    async fn store_one(
        &self,
        registry: &Registry,
        dir: &Path,
        t: &Taken,
        tmp: &Path,
        compression: Compression,
    ) -> (Reference, Result<(), CacheError>) {
        let r = self.reference(dir);
        let result = self.push_change(registry, &r, t, tmp, compression).await;
        (r, result)
    }

    async fn push_change(
        &self,
        registry: &Registry,
        r: &Reference,
        t: &Taken,
        tmp: &Path,
        compression: Compression,
    ) -> Result<(), CacheError> {
        if !t.instance.is_dir() {
            return Ok(());
        }
        let none = HashSet::new();
        let (change, _) = tokio::task::block_in_place(|| {
            inplace::changes(&t.instance, &t.before, &Keep::default(), &none)
        })
        .map_err(|e| io("reading a cache's change")(std::io::Error::other(e)))?;
        if change.is_empty() {
            return Ok(());
        }
        // A chain made elsewhere, or grown long, is stored anew as one layer.
        let whole = !t.from_store || t.layers.len() >= MAX_CHAIN;
        let entries = if whole {
            tokio::task::block_in_place(|| {
                inplace::changes(&t.instance, &Snapshot::default(), &Keep::default(), &none)
            })
            .map_err(|e| io("reading a cache")(std::io::Error::other(e)))?
            .0
        } else {
            change
        };
        let blob = crate::scratch::private_temp_file("mount-out-", tmp)
            .map_err(io("creating a cache layer file"))?;
        let file = tokio::task::block_in_place(|| {
            let mut w = LayerWriter::create_with(&blob, compression)?;
            for (key, p) in &entries {
                w.append(&key.0, &p.meta, &p.body)?;
            }
            w.finish()
        })
        .map_err(|e| io("writing a cache layer")(std::io::Error::other(e)))?;
        let mut layers: Vec<(Descriptor, Digest)> =
            if whole { Vec::new() } else { t.layers.clone() };
        layers.push((
            Descriptor {
                media_type: compression
                    .media_type(ManifestFormat::Oci.media_types().2)
                    .to_string(),
                digest: file.digest.clone(),
                size: file.size,
                platform: None,
                annotations: None,
                urls: None,
            },
            file.diff_id.clone(),
        ));
        super::ensure_blob(registry, r, &file.digest, &file.path, None).await?;
        let cfg = serde_json::json!({
            "architecture": "", "os": "linux",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|(_, d)| d).collect::<Vec<_>>() },
        });
        let invalid = |e: serde_json::Error| CacheError::Invalid {
            tag: r.to_string(),
            reason: e.to_string(),
        };
        let cfg = serde_json::to_vec(&cfg).map_err(invalid)?;
        let descriptors: Vec<Descriptor> = layers.into_iter().map(|(d, _)| d).collect();
        let entry = manifest_for(cfg, &descriptors, ManifestFormat::Oci).map_err(invalid)?;
        let cfg_path = crate::scratch::private_temp_file("mount-config-out-", tmp)
            .map_err(io("creating a cache config file"))?;
        crate::scratch::write_whole(&cfg_path, &entry.config)
            .map_err(io("writing a cache config"))?;
        super::ensure_blob(registry, r, &entry.config_digest, &cfg_path, None).await?;
        registry
            .put_manifest(r, &entry.manifest, entry.manifest_media_type)
            .await?;
        let _ = std::fs::remove_file(&blob);
        crate::log_info!(
            "cache mount {r}: stored {} ({} bytes{})",
            file.digest,
            file.size,
            if whole { ", the whole cache" } else { "" }
        );
        Ok(())
    }
}
