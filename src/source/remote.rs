//! Lazy remote images: a base is its manifest, config and layer descriptors;
//! layer bytes are fetched only when a step needs them.

use crate::image::model::{Layer, LayerSource, ManifestFormat};
use crate::image::reference::Reference;
use crate::image::spec::{
    is_index, is_layer, is_schema1, Descriptor, ImageConfig, Index, Manifest, Platform,
};
use crate::image::Digest;
use crate::registry::{Registry, RegistryError, MAX_CONFIG_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{reference}: {reason}")]
    Invalid { reference: String, reason: String },
    #[error("{reference}: no manifest for platform {platform} (the index has {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("{op}: {source}")]
    Io { op: String, source: std::io::Error },
    #[error("{reference}: not found on any mirror ({tried}), and --skip-default-registry-fallback forbids {registry} itself")]
    NoMirror {
        reference: String,
        tried: String,
        registry: String,
    },
}

const MAX_INDEX_DEPTH: usize = 4;

/// A base image as fetched: config and layers, nothing downloaded yet.
#[derive(Debug, Clone)]
pub struct RemoteImage {
    pub(crate) reference: Reference,
    /// Digest of the image manifest (after platform selection).
    pub(crate) manifest_digest: Digest,
    pub(crate) format: ManifestFormat,
    pub(crate) config: ImageConfig,
    pub layers: Vec<Layer>,
}

/// Fetches manifest (resolving an index to `platform`) and config of
/// `reference`: from its mirrors first (`--registry-mirror`, `--registry-map`),
/// in order, then from its own registry unless that fallback is off. The image
/// returned names where it came from, so its layers come from there too.
pub async fn fetch(
    registry: &Registry,
    reference: &Reference,
    platform: &Platform,
    tmp: &std::path::Path,
) -> Result<RemoteImage, RemoteError> {
    let mirrors = registry.mirrors_of(reference);
    for m in &mirrors {
        match fetch_from(registry, m, platform, tmp).await {
            Ok(image) => {
                crate::log_info!("{reference}: pulled from the mirror {m}");
                return Ok(image);
            }
            Err(e) => crate::log_warn!(
                "{reference}: the mirror {m} failed ({}); trying the next mirror or the registry itself",
                crate::log::one_line(&e)
            ),
        }
    }
    if !mirrors.is_empty() && registry.skip_default_registry_fallback() {
        return Err(RemoteError::NoMirror {
            reference: reference.to_string(),
            tried: mirrors
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            registry: reference.registry.clone(),
        });
    }
    fetch_from(registry, reference, platform, tmp).await
}

async fn fetch_from(
    registry: &Registry,
    reference: &Reference,
    platform: &Platform,
    tmp: &std::path::Path,
) -> Result<RemoteImage, RemoteError> {
    let invalid = |reason: String| RemoteError::Invalid {
        reference: reference.to_string(),
        reason,
    };
    let mut raw = registry.manifest(reference).await?;
    // An index may hold indexes (BuildKit follows them); a few levels are plenty.
    for _ in 0..MAX_INDEX_DEPTH {
        if is_schema1(&raw.media_type, &raw.bytes) {
            return Err(invalid(
                "schema 1 manifests are not supported; push the image again with a current client"
                    .into(),
            ));
        }
        if !is_index(&raw.media_type) {
            break;
        }
        let index: Index =
            serde_json::from_slice(&raw.bytes).map_err(|e| invalid(format!("bad index: {e}")))?;
        let matching = |d: &&Descriptor| d.platform.as_ref().is_some_and(|p| p.matches(platform));
        let chosen = index
            .manifests
            .iter()
            .filter(|d| !is_index(&d.media_type))
            .find(matching)
            .or_else(|| {
                index
                    .manifests
                    .iter()
                    .filter(|d| is_index(&d.media_type))
                    .find(|d| d.platform.is_none() || matching(d))
            })
            .ok_or_else(|| RemoteError::NoPlatform {
                reference: reference.to_string(),
                platform: platform.to_string(),
                available: index
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        raw = registry
            .manifest(&reference.with_object(None, Some(chosen.digest.clone())))
            .await?;
    }
    if is_index(&raw.media_type) {
        return Err(invalid(format!(
            "indexes nested more than {MAX_INDEX_DEPTH} deep"
        )));
    }
    let manifest: Manifest = serde_json::from_slice(&raw.bytes)
        .map_err(|e| invalid(format!("bad manifest ({}): {e}", raw.media_type)))?;
    let format = if raw.media_type.contains("oci") || manifest.config.media_type.contains("oci") {
        ManifestFormat::Oci
    } else {
        ManifestFormat::Docker
    };
    // A name of its own: stages FROM one base fetch its config at once, and a
    // shared name let one truncate the file while another read it.
    let cfg_path =
        crate::scratch::private_temp_file("config-", tmp).map_err(|source| RemoteError::Io {
            op: format!("creating a file in {}", tmp.display()),
            source,
        })?;
    registry
        .download_blob(
            reference,
            &manifest.config.digest,
            manifest.config.size.min(MAX_CONFIG_BYTES),
            &cfg_path,
        )
        .await?;
    let cfg_bytes = std::fs::read(&cfg_path).map_err(|source| RemoteError::Io {
        op: format!("reading {}", cfg_path.display()),
        source,
    })?;
    let config: ImageConfig =
        serde_json::from_slice(&cfg_bytes).map_err(|e| invalid(format!("bad config: {e}")))?;
    if let Some(d) = manifest.layers.iter().find(|d| !is_layer(&d.media_type)) {
        return Err(invalid(format!(
            "layer {} has media type {:?}, which is not a layer Kiln reads",
            d.digest, d.media_type
        )));
    }
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(invalid(format!(
            "config lists {} diff_ids but the manifest {} layers",
            config.rootfs.diff_ids.len(),
            manifest.layers.len()
        )));
    }
    let layers = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(d, diff_id)| Layer {
            descriptor: d.clone(),
            diff_id: diff_id.clone(),
            source: LayerSource::Remote(reference.clone()),
        })
        .collect();
    Ok(RemoteImage {
        reference: reference.clone(),
        manifest_digest: raw.digest,
        format,
        config,
        layers,
    })
}
