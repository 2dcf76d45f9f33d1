//! zstd copies of base layers, kept in the cache repository beside their file
//! indexes so a fresh pod inflates zstd instead of gzip (5× faster here). A copy
//! is tagged by the layer's diff_id and trusted only once its tar hashes to it
//! while it is unpacked; the first build that unpacks the gzip layer makes it,
//! on a blocking thread while the build goes on, and `flush` (after the image
//! is pushed) waits for it and stores it.

use super::{Cache, Pending};
use crate::image::spec::{Manifest, MT_OCI_LAYER_ZSTD};
use crate::image::{Digest, Layer, LayerSource};
use crate::layer::{HashingReader, HashingWriter};
use crate::registry::{Registry, RegistryError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// zstd's level for copies: its default, a quarter of gzip's inflate time to read.
const COPY_LEVEL: i32 = 3;

/// A copy being made (of the layer with this diff_id): the entry that
/// stores it once it is.
pub(super) type Making = (Digest, tokio::task::JoinHandle<Option<Pending>>);

fn copy_tag(diff_id: &Digest) -> String {
    format!("zstd-{}", diff_id.encoded())
}

/// Whether a layer is one a copy would serve: from a registry, not zstd already.
fn wants_copy(layer: &Layer) -> bool {
    matches!(layer.source, LayerSource::Remote(_))
        && layer.descriptor.media_type != MT_OCI_LAYER_ZSTD
}

impl Cache {
    /// The zstd copy of `layer` the cache repository holds, as a layer to
    /// download (its blob verified against its descriptor, its tar against
    /// `layer`'s diff_id when unpacked); `None` without one or without `--cache`.
    pub(crate) async fn zstd_copy(&self, registry: &Registry, layer: &Layer) -> Option<Layer> {
        if !self.settings.layers || !wants_copy(layer) {
            return None;
        }
        let r = self
            .repo()?
            .with_object(Some(copy_tag(&layer.diff_id)), None);
        let raw = match registry.manifest(&r).await {
            Ok(raw) => raw,
            Err(RegistryError::Status { status, .. })
                if status == reqwest::StatusCode::NOT_FOUND =>
            {
                return None
            }
            Err(e) => {
                self.give_up("zstd copy lookup", &e);
                return None;
            }
        };
        let m: Manifest = serde_json::from_slice(&raw.bytes).ok()?;
        let descriptor = m.layers.first()?.clone();
        if descriptor.media_type != MT_OCI_LAYER_ZSTD {
            return None;
        }
        crate::log_debug!(
            "layer {} from its zstd copy {} ({} bytes)",
            layer.descriptor.digest,
            descriptor.digest,
            descriptor.size
        );
        Some(Layer {
            descriptor,
            diff_id: layer.diff_id.clone(),
            source: LayerSource::Remote(r),
        })
    }

    /// Starts making the zstd copy of `layer` from its blob file, when the
    /// cache repository is to get one; `flush` stores it.
    pub(crate) fn make_zstd_copy(&self, layer: &Layer, blob: PathBuf, tmp: &Path) {
        if !self.settings.layers
            || !self.settings.push
            || !wants_copy(layer)
            || self.repo().is_none()
        {
            return;
        }
        let diff_id = layer.diff_id.clone();
        let mut making = self.making.lock().unwrap_or_else(|e| e.into_inner());
        // Stages FROM one base unpack it each: one copy.
        if making.iter().any(|(d, _)| *d == diff_id) {
            return;
        }
        let Ok(out) = crate::scratch::private_temp_file("copy-", tmp)
            .and_then(|p| p.keep().map_err(|e| io::Error::other(e.to_string())))
        else {
            return;
        };
        let now = self.now;
        let id = diff_id.clone();
        let job = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            match compress(&blob, &out, &diff_id) {
                Ok(digest) => {
                    crate::log_debug!("zstd copy of {diff_id} made in {:?}", started.elapsed());
                    Some(Pending {
                        tag: copy_tag(&diff_id),
                        blob: out,
                        layer_digest: digest,
                        layer_media_type: MT_OCI_LAYER_ZSTD.into(),
                        note: serde_json::json!({ "created_unix": now, "zstd_copy_of": diff_id.as_str() }),
                        diff_id,
                        after_push: false,
                        config_upload: None,
                    })
                }
                Err(e) => {
                    crate::log_warn!("making a zstd copy of layer {diff_id}: {e}");
                    None
                }
            }
        });
        making.push((id, job));
    }

    /// Waits for the copies being made and queues them for storing.
    pub(super) async fn copies_made(&self) {
        let making = std::mem::take(&mut *self.making.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, m) in making {
            if let Ok(Some(p)) = m.await {
                self.queue(p);
            }
        }
    }
}

/// Writes the zstd copy of the gzip blob at `gzip` to `out`: its digest. The
/// tar must hash to `diff_id`, or no copy is made.
fn compress(gzip: &Path, out: &Path, diff_id: &Digest) -> io::Result<Digest> {
    let mut tar = HashingReader::new(crate::layer::reader::open_decompressed(gzip)?);
    let seen = tar.result();
    let file = io::BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    let mut z = zstd::stream::write::Encoder::new(HashingWriter::new(file), COPY_LEVEL)?;
    io::copy(&mut tar, &mut z)?;
    let (mut file, digest, _) = z.finish()?.finish();
    file.flush()?;
    match seen.get() {
        Some(d) if d == diff_id => Ok(digest),
        got => Err(io::Error::other(format!(
            "its tar hashes to {}, not {diff_id}",
            got.map_or("nothing".into(), |d| d.to_string())
        ))),
    }
}
