//! Publishing a built image: to registries (blobs in parallel, base layers checked
//! or cross-mounted, manifest last), to a docker-archive tarball, to an OCI layout.

use crate::image::spec::is_foreign;
use crate::image::{Digest, Image, Layer, LayerSource, Reference, Serialized};
use crate::registry::{Access, Registry, RegistryError};
use crate::source::{BlobStore, StoreError};
use std::io::Write;
use std::path::{Path, PathBuf};

pub mod index;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    // Boxed: registry errors are large and would bloat every Result.
    #[error(transparent)]
    Registry(Box<RegistryError>),
    #[error("{op}: {source}")]
    Io { op: String, source: std::io::Error },
    #[error(transparent)]
    Store(Box<StoreError>),
    #[error("serializing {what}: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
}

impl From<StoreError> for PublishError {
    fn from(e: StoreError) -> Self {
        PublishError::Store(Box::new(e))
    }
}

impl From<RegistryError> for PublishError {
    fn from(e: RegistryError) -> Self {
        PublishError::Registry(Box::new(e))
    }
}

fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> PublishError {
    let op = op.into();
    move |source| PublishError::Io { op, source }
}

/// The config and manifest bytes of a built image.
pub fn serialize(
    image: &Image,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<Serialized, PublishError> {
    image
        .serialize(annotations)
        .map_err(|source| PublishError::Json {
            what: "image",
            source,
        })
}

/// Where publishing reads from: the registry client and the build's blob store.
pub struct Publisher<'a> {
    pub registry: &'a Registry,
    pub store: &'a BlobStore,
    /// For the config file an upload streams from.
    pub tmp: &'a Path,
}

/// Makes sure `dest`'s repository has one layer blob, moving as little as
/// possible; once per blob and repository ([`Registry::place_once`]).
async fn ensure_layer(
    p: &Publisher<'_>,
    dest: &Reference,
    layer: &Layer,
) -> Result<&'static str, PublishError> {
    if is_foreign(&layer.descriptor) {
        // Registries may refuse them; pullers fetch them from their `urls`.
        return Ok("foreign, not pushed");
    }
    let digest = &layer.descriptor.digest;
    let placed = p
        .registry
        .place_once(dest, digest, || place_layer(p, dest, layer))
        .await?;
    Ok(placed.unwrap_or("exists"))
}

async fn place_layer(
    p: &Publisher<'_>,
    dest: &Reference,
    layer: &Layer,
) -> Result<&'static str, PublishError> {
    let registry = p.registry;
    let digest = &layer.descriptor.digest;
    match &layer.source {
        LayerSource::Remote(src) if src.registry == dest.registry => {
            if src.repository == dest.repository
                || registry.blob_exists(dest, digest, Access::Push).await?
            {
                return Ok("exists");
            }
            if registry.mount_blob(dest, digest, &src.repository).await? {
                return Ok("mounted");
            }
        }
        _ => {
            if registry.blob_exists(dest, digest, Access::Push).await? {
                return Ok("exists");
            }
        }
    }
    let path = layer.compressed(p.store).await?;
    registry.upload_layer(dest, digest, &path).await?;
    Ok("uploaded")
}

/// Gives one destination every blob of the image (in parallel). Manifests go up
/// only once every destination has every blob (`push_manifest`), so a failure
/// moves no tag anywhere.
pub async fn push_blobs(
    p: &Publisher<'_>,
    dest: &Reference,
    image: &Image,
    s: &Serialized,
) -> Result<(), PublishError> {
    let (registry, tmp) = (p.registry, p.tmp);
    let started = std::time::Instant::now();
    let uploaded = std::sync::atomic::AtomicU64::new(0);
    let uploads = std::sync::atomic::AtomicUsize::new(0);
    let uploaded = &uploaded;
    let uploads = &uploads;
    let layer_jobs = image.layers.iter().map(|l| async move {
        let phase = registry.transfer.push.begin();
        let how = ensure_layer(p, dest, l).await?;
        if how == "uploaded" {
            phase.done(l.descriptor.size, 1);
            uploaded.fetch_add(l.descriptor.size, std::sync::atomic::Ordering::Relaxed);
            uploads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        crate::log_info!(
            "layer {} ({} bytes): {how}",
            l.descriptor.digest,
            l.descriptor.size
        );
        Ok::<_, PublishError>(())
    });
    let config_job = async {
        if !registry
            .blob_exists(dest, &s.config_digest, Access::Push)
            .await?
        {
            let p = tmp.join(format!("config-out-{}", s.config_digest.file_name()));
            crate::scratch::write_whole(&p, &s.config)
                .map_err(io(format!("writing {}", p.display())))?;
            registry.upload_blob(dest, &s.config_digest, &p).await?;
        }
        Ok::<_, PublishError>(())
    };
    let (layers, config) =
        futures_util::future::join(futures_util::future::join_all(layer_jobs), config_job).await;
    for r in layers {
        r?;
    }
    config?;
    let (n, bytes) = (
        uploads.load(std::sync::atomic::Ordering::Relaxed),
        uploaded.load(std::sync::atomic::Ordering::Relaxed),
    );
    let took = started.elapsed();
    crate::log::emit_with(
        crate::log::Level::Info,
        format_args!(
            "{dest}: blobs in place in {}, {n} of {} layers sent ({}{})",
            crate::report::seconds(took),
            image.layers.len(),
            crate::report::bytes(bytes),
            crate::report::rate(bytes, took)
        ),
        serde_json::json!({"destination": dest.to_string(), "seconds": took.as_secs_f64(), "layers_sent": n, "bytes_sent": bytes}),
    );
    Ok(())
}

/// Puts the manifest under `dest`'s tag, after `push_blobs`.
pub async fn push_manifest(
    p: &Publisher<'_>,
    dest: &Reference,
    s: &Serialized,
) -> Result<Digest, PublishError> {
    Ok(p.registry
        .put_manifest(dest, &s.manifest, s.manifest_media_type)
        .await?)
}

/// What registries say when a tag may not move (Kaniko's list): Google's
/// Artifact Registry and Amazon ECR.
const IMMUTABLE_TAG: [&str; 2] = [
    "The repository has enabled tag immutability",
    "cannot be overwritten because the repository is immutable",
];

/// Whether a manifest push failed because the tag is immutable there
/// (`--push-ignore-immutable-tag-errors` lets such a push count as done).
pub fn is_immutable_tag_error(e: &PublishError) -> bool {
    let text = e.to_string();
    IMMUTABLE_TAG.iter().any(|m| text.contains(m))
}

/// Local blob files for every layer (tarball and layout outputs).
async fn local_blobs(store: &BlobStore, image: &Image) -> Result<Vec<PathBuf>, PublishError> {
    let mut out = Vec::new();
    for l in &image.layers {
        out.push(l.compressed(store).await?);
    }
    Ok(out)
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    path: &Path,
) -> Result<(), PublishError> {
    let mut f = std::fs::File::open(path).map_err(io(format!("reading {}", path.display())))?;
    let len = f
        .metadata()
        .map_err(io(format!("reading {}", path.display())))?
        .len();
    let mut h = tar::Header::new_ustar();
    h.set_size(len);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, name, &mut f)
        .map_err(io(format!("writing {name}")))
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
) -> Result<(), PublishError> {
    let mut h = tar::Header::new_ustar();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, name, bytes)
        .map_err(io(format!("writing {name}")))
}

/// Writes a docker-archive tarball (`docker load` format) tagged with `tags`.
pub async fn write_tarball(
    store: &BlobStore,
    image: &Image,
    s: &Serialized,
    tags: &[String],
    path: &Path,
) -> Result<(), PublishError> {
    let blobs = local_blobs(store, image).await?;
    let f = std::fs::File::create(path).map_err(io(format!("creating {}", path.display())))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(f));
    let config_name = format!("{}.json", s.config_digest.encoded());
    append_bytes(&mut tar, &config_name, &s.config)?;
    let mut layer_names = Vec::new();
    for (l, blob) in image.layers.iter().zip(&blobs) {
        let name = format!("{}.tar.gz", l.descriptor.digest.encoded());
        if !layer_names.contains(&name) {
            append_file(&mut tar, &name, blob)?;
        }
        layer_names.push(name);
    }
    let manifest =
        serde_json::json!([{ "Config": config_name, "RepoTags": tags, "Layers": layer_names }]);
    append_bytes(&mut tar, "manifest.json", manifest.to_string().as_bytes())?;
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(io(format!("finishing {}", path.display())))
}

/// Writes (or adds to) an OCI image layout directory.
pub async fn write_oci_layout(
    store: &BlobStore,
    image: &Image,
    s: &Serialized,
    dir: &Path,
) -> Result<(), PublishError> {
    put_layout_blobs(store, image, s, dir).await?;
    write_layout_index(
        dir,
        s.manifest_media_type,
        &s.manifest_digest,
        s.manifest.len(),
    )
}

/// An OCI layout's blobs for one image: layers, config and manifest.
async fn put_layout_blobs(
    store: &BlobStore,
    image: &Image,
    s: &Serialized,
    dir: &Path,
) -> Result<(), PublishError> {
    let blobs = local_blobs(store, image).await?;
    for (l, blob) in image.layers.iter().zip(&blobs) {
        put_layout_blob(dir, &l.descriptor.digest, LayoutBlob::File(blob))?;
    }
    put_layout_blob(dir, &s.config_digest, LayoutBlob::Bytes(&s.config))?;
    put_layout_blob(dir, &s.manifest_digest, LayoutBlob::Bytes(&s.manifest))
}

/// What a layout blob is written from.
enum LayoutBlob<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

fn put_layout_blob(dir: &Path, digest: &Digest, from: LayoutBlob<'_>) -> Result<(), PublishError> {
    let blob_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir).map_err(io(format!("creating {}", blob_dir.display())))?;
    let p = blob_dir.join(digest.encoded());
    match from {
        LayoutBlob::Bytes(b) => std::fs::write(&p, b),
        LayoutBlob::File(f) => std::fs::copy(f, &p).map(|_| ()),
    }
    .map_err(io(format!("writing {}", p.display())))
}

/// The layout's `oci-layout` and `index.json`, naming the one top manifest
/// (an image's, or a multi-platform build's index).
fn write_layout_index(
    dir: &Path,
    media_type: &str,
    digest: &Digest,
    size: usize,
) -> Result<(), PublishError> {
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(io("writing oci-layout"))?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{ "mediaType": media_type, "digest": digest, "size": size }]
    });
    std::fs::write(dir.join("index.json"), index.to_string()).map_err(io("writing index.json"))
}
