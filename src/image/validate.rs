//! The check any image Kiln writes must pass, as go-containerregistry's
//! `validate.Image`: manifest, config and every layer agree with each other and
//! with their digests. It reads the bytes as a registry or a layout holds them
//! and decompresses with flate2 and zstd itself, not with `layer::reader`, so the
//! code that writes layers does not judge them; the tests run it beside the
//! Python oracle (`integration/oracle`).

use super::spec::{
    ImageConfig, Manifest, MT_DOCKER_CONFIG, MT_DOCKER_FOREIGN, MT_DOCKER_LAYER,
    MT_DOCKER_MANIFEST, MT_OCI_CONFIG, MT_OCI_LAYER, MT_OCI_LAYER_TAR, MT_OCI_LAYER_ZSTD,
    MT_OCI_MANIFEST,
};
use super::Digest;
use sha2::{Digest as _, Sha256};
use std::io::{self, Read};

/// What is wrong with an image, naming the part.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

fn invalid(what: impl Into<String>, reason: impl Into<String>) -> ValidateError {
    ValidateError::Invalid {
        what: what.into(),
        reason: reason.into(),
    }
}

/// How a layer blob is compressed, by its media type.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Compression {
    Gzip,
    Zstd,
    Plain,
}

/// The layer media types a manifest of `manifest_type` may hold (zstd exists
/// only in OCI's).
fn layer_compression(manifest_type: &str, layer_type: &str) -> Option<Compression> {
    match (manifest_type, layer_type) {
        (MT_DOCKER_MANIFEST, MT_DOCKER_LAYER | MT_DOCKER_FOREIGN) => Some(Compression::Gzip),
        (MT_DOCKER_MANIFEST, "application/vnd.docker.image.rootfs.diff.tar") => {
            Some(Compression::Plain)
        }
        (MT_OCI_MANIFEST, MT_OCI_LAYER) => Some(Compression::Gzip),
        (MT_OCI_MANIFEST, "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip") => {
            Some(Compression::Gzip)
        }
        (MT_OCI_MANIFEST, MT_OCI_LAYER_ZSTD) => Some(Compression::Zstd),
        (MT_OCI_MANIFEST, MT_OCI_LAYER_TAR) => Some(Compression::Plain),
        _ => None,
    }
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    fn digest(&self) -> Digest {
        Digest::from_sha256(self.hasher.clone().finalize().into())
    }
}

/// Checks an image: `manifest` and `config` as stored, `blob` opening a layer
/// blob by digest. The manifest's media types must be one format's; the config
/// descriptor and every layer descriptor must match their bytes; each layer
/// must decompress to a whole tar whose digest is the config's diff_id; the
/// config must name its platform and, when it has history, one entry with a
/// layer per layer. A layer with `urls` (a foreign one) may be absent.
pub fn image(
    manifest: &[u8],
    config: &[u8],
    blob: &dyn Fn(&Digest) -> io::Result<Box<dyn Read>>,
) -> Result<(), ValidateError> {
    let m: Manifest =
        serde_json::from_slice(manifest).map_err(|e| invalid("manifest", e.to_string()))?;
    let mt = m.media_type.as_deref().unwrap_or(MT_OCI_MANIFEST);
    let config_type = match mt {
        MT_DOCKER_MANIFEST => MT_DOCKER_CONFIG,
        MT_OCI_MANIFEST => MT_OCI_CONFIG,
        other => return Err(invalid("manifest", format!("media type {other}"))),
    };
    if m.schema_version != 2 {
        return Err(invalid(
            "manifest",
            format!("schemaVersion {}", m.schema_version),
        ));
    }
    if m.config.media_type != config_type {
        return Err(invalid(
            "config descriptor",
            format!("media type {} in a {mt}", m.config.media_type),
        ));
    }
    if Digest::sha256_of(config) != m.config.digest || config.len() as u64 != m.config.size {
        return Err(invalid("config", "bytes do not match the descriptor"));
    }
    let c: ImageConfig =
        serde_json::from_slice(config).map_err(|e| invalid("config", e.to_string()))?;
    check_config(&c, m.layers.len())?;
    for (i, (d, diff_id)) in m.layers.iter().zip(&c.rootfs.diff_ids).enumerate() {
        let what = format!("layer {i} ({})", d.digest);
        let compression = layer_compression(mt, &d.media_type)
            .ok_or_else(|| invalid(&what, format!("media type {} in a {mt}", d.media_type)))?;
        let io_err = |source| ValidateError::Io {
            what: what.clone(),
            source,
        };
        let opened = match blob(&d.digest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && d.urls.is_some() => continue,
            opened => opened.map_err(io_err)?,
        };
        let mut compressed = Hashing::new(opened);
        let tar_digest = {
            let inner: Box<dyn Read + '_> = match compression {
                Compression::Gzip => Box::new(flate2::read::GzDecoder::new(&mut compressed)),
                Compression::Zstd => {
                    Box::new(zstd::stream::read::Decoder::new(&mut compressed).map_err(io_err)?)
                }
                Compression::Plain => Box::new(&mut compressed),
            };
            let mut tar = Hashing::new(inner);
            read_tar(&mut tar).map_err(io_err)?;
            // Whatever follows the end-of-archive blocks counts toward the diff_id.
            io::copy(&mut tar, &mut io::sink()).map_err(io_err)?;
            tar.digest()
        };
        io::copy(&mut compressed, &mut io::sink()).map_err(io_err)?;
        if compressed.digest() != d.digest || compressed.len != d.size {
            return Err(invalid(&what, "bytes do not match the descriptor"));
        }
        if &tar_digest != diff_id {
            return Err(invalid(
                &what,
                format!("uncompressed digest {tar_digest}, the config's diff_id {diff_id}"),
            ));
        }
    }
    Ok(())
}

/// The config's own rules, for an image of `layers` layers.
fn check_config(c: &ImageConfig, layers: usize) -> Result<(), ValidateError> {
    if c.rootfs.kind != "layers" {
        return Err(invalid(
            "config",
            format!("rootfs.type {:?}", c.rootfs.kind),
        ));
    }
    if c.rootfs.diff_ids.len() != layers {
        return Err(invalid(
            "config",
            format!("{} diff_ids for {layers} layers", c.rootfs.diff_ids.len()),
        ));
    }
    if c.architecture.is_empty() || c.os.is_empty() {
        return Err(invalid("config", "no architecture or os"));
    }
    let with_layer = c.history.iter().filter(|h| !h.empty_layer).count();
    if !c.history.is_empty() && with_layer != layers {
        return Err(invalid(
            "config",
            format!("{with_layer} history entries with a layer for {layers} layers"),
        ));
    }
    Ok(())
}

/// Reads a tar stream entry by entry to its end-of-archive marker: a layer
/// whose headers do not parse fails here.
fn read_tar(r: &mut dyn Read) -> io::Result<()> {
    for e in tar::Archive::new(r).entries()? {
        io::copy(&mut e?, &mut io::sink())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::spec::Descriptor;
    use crate::image::{Image, Layer, LayerSource, ManifestFormat};
    use std::collections::HashMap;
    use std::io::Write;

    /// A one-file tar, gzipped, and its layer.
    fn layer() -> (Vec<u8>, Layer) {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "f", &b"hi"[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let blob = gz.finish().unwrap();
        let layer = Layer {
            descriptor: Descriptor {
                media_type: MT_DOCKER_LAYER.into(),
                digest: Digest::sha256_of(&blob),
                size: blob.len() as u64,
                platform: None,
                annotations: None,
                urls: None,
            },
            diff_id: Digest::sha256_of(&tar),
            source: LayerSource::Local("/nonexistent".into()),
        };
        (blob, layer)
    }

    fn check(image: &Image, blobs: &HashMap<Digest, Vec<u8>>) -> Result<(), ValidateError> {
        let s = image.serialize(&Default::default()).unwrap();
        let open = |d: &Digest| -> io::Result<Box<dyn Read>> {
            let b = blobs.get(d).cloned().ok_or(io::ErrorKind::NotFound)?;
            Ok(Box::new(io::Cursor::new(b)))
        };
        super::image(&s.manifest, &s.config, &open)
    }

    fn built(format: ManifestFormat) -> (Image, HashMap<Digest, Vec<u8>>) {
        let (blob, l) = layer();
        let blobs = HashMap::from([(l.descriptor.digest.clone(), blob)]);
        let config = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            ..Default::default()
        };
        let mut image = Image::on_base(config, Vec::new(), ManifestFormat::Docker);
        image.append(
            Some(l),
            crate::image::spec::History {
                created_by: Some("COPY f /".into()),
                ..Default::default()
            },
        );
        (image.finish(format, "2020-01-01T00:00:00Z"), blobs)
    }

    #[test]
    fn a_finished_image_passes_in_either_format() {
        for format in [ManifestFormat::Docker, ManifestFormat::Oci] {
            let (image, blobs) = built(format);
            check(&image, &blobs).unwrap();
        }
    }

    #[test]
    fn each_disagreement_is_named() {
        let (image, blobs) = built(ManifestFormat::Docker);
        let mut wrong = image.clone();
        wrong.config.rootfs.diff_ids[0] = Digest::sha256_of(b"other");
        assert!(check(&wrong, &blobs)
            .unwrap_err()
            .to_string()
            .contains("diff_id"));
        let mut wrong = image.clone();
        wrong.layers[0].descriptor.size += 1;
        assert!(check(&wrong, &blobs)
            .unwrap_err()
            .to_string()
            .contains("descriptor"));
        let mut wrong = image.clone();
        wrong.layers[0].descriptor.media_type = MT_OCI_LAYER_ZSTD.into();
        assert!(check(&wrong, &blobs)
            .unwrap_err()
            .to_string()
            .contains("media type"));
        let mut wrong = image.clone();
        wrong.config.history[0].empty_layer = true;
        assert!(check(&wrong, &blobs)
            .unwrap_err()
            .to_string()
            .contains("history"));
        let mut wrong = image;
        wrong.config.os.clear();
        let e = check(&wrong, &blobs).unwrap_err().to_string();
        assert!(e.contains("no architecture or os"), "{e}");
    }
}
