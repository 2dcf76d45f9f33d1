//! A multi-platform build's result: one OCI image index naming each platform's
//! manifest (`platform` set on each descriptor), pushed after every platform's
//! blobs and manifests, or written into an OCI layout.

use super::{io, put_layout_blob, put_layout_blobs, write_layout_index, PublishError, Publisher};
use crate::image::spec::{Descriptor, Index, Platform, MT_OCI_INDEX};
use crate::image::{Digest, Image, Reference, Serialized};
use crate::source::BlobStore;
use std::path::Path;

/// One platform's image, serialized.
pub struct PlatformImage {
    pub platform: Platform,
    pub image: Image,
    pub serialized: Serialized,
}

/// The index bytes and their digest.
pub struct SerializedIndex {
    pub bytes: Vec<u8>,
    pub digest: Digest,
}

impl SerializedIndex {
    pub const MEDIA_TYPE: &'static str = MT_OCI_INDEX;
}

/// The index of `images`, in their order.
pub fn serialize(images: &[PlatformImage]) -> Result<SerializedIndex, PublishError> {
    let index = Index {
        schema_version: 2,
        media_type: Some(MT_OCI_INDEX.to_string()),
        manifests: images
            .iter()
            .map(|p| Descriptor {
                media_type: p.serialized.manifest_media_type.to_string(),
                digest: p.serialized.manifest_digest.clone(),
                size: p.serialized.manifest.len() as u64,
                platform: Some(p.platform.clone()),
                annotations: None,
                urls: None,
            })
            .collect(),
    };
    let bytes = serde_json::to_vec(&index).map_err(|source| PublishError::Json {
        what: "image index",
        source,
    })?;
    Ok(SerializedIndex {
        digest: Digest::sha256_of(&bytes),
        bytes,
    })
}

/// Gives `dest` every platform's blobs and its manifest by digest: no tag
/// moves yet ([`push_index`] moves it, once every destination has these).
pub async fn push_images(
    p: &Publisher<'_>,
    dest: &Reference,
    images: &[PlatformImage],
) -> Result<(), PublishError> {
    let by_digest = Reference {
        tag: None,
        digest: None,
        ..dest.clone()
    };
    for i in images {
        super::push_blobs(p, dest, &i.image, &i.serialized).await?;
        p.registry
            .put_manifest(
                &by_digest,
                &i.serialized.manifest,
                i.serialized.manifest_media_type,
            )
            .await?;
        crate::log_info!("{}: {} manifest in place", dest, i.platform);
    }
    Ok(())
}

/// Puts the index under `dest`'s tag, after [`push_images`].
pub async fn push_index(
    p: &Publisher<'_>,
    dest: &Reference,
    index: &SerializedIndex,
) -> Result<Digest, PublishError> {
    Ok(p.registry
        .put_manifest(dest, &index.bytes, SerializedIndex::MEDIA_TYPE)
        .await?)
}

/// Writes (or adds to) an OCI layout whose `index.json` names the image index.
pub async fn write_oci_layout(
    store: &BlobStore,
    images: &[PlatformImage],
    index: &SerializedIndex,
    dir: &Path,
) -> Result<(), PublishError> {
    for i in images {
        put_layout_blobs(store, &i.image, &i.serialized, dir).await?;
    }
    put_layout_blob(dir, &index.digest, super::LayoutBlob::Bytes(&index.bytes))?;
    write_layout_index(
        dir,
        SerializedIndex::MEDIA_TYPE,
        &index.digest,
        index.bytes.len(),
    )
}

/// Writes an OCI layout as a tar file (what `docker load` of Docker 25 and
/// later, and `skopeo copy oci-archive:`, read): the index cannot be a
/// docker-archive, which holds one image per tag.
pub async fn write_oci_archive(
    store: &BlobStore,
    images: &[PlatformImage],
    index: &SerializedIndex,
    path: &Path,
    scratch: &Path,
) -> Result<(), PublishError> {
    let dir = crate::scratch::private_tempdir("oci-archive-", scratch)
        .map_err(io(format!("creating a directory in {}", scratch.display())))?;
    write_oci_layout(store, images, index, dir.path()).await?;
    let f = std::fs::File::create(path).map_err(io(format!("creating {}", path.display())))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(f));
    tar.mode(tar::HeaderMode::Deterministic);
    tar.append_dir_all(".", dir.path())
        .map_err(io(format!("writing {}", path.display())))?;
    tar.into_inner()
        .and_then(|mut w| std::io::Write::flush(&mut w))
        .map_err(io(format!("finishing {}", path.display())))
}
