//! One image value and one serializer. An [`Image`] is a config plus layers that
//! each know their descriptor, diff_id and where their bytes are (like
//! go-containerregistry's `v1.Image`); [`Image::serialize`] gives the exact config and manifest bytes
//! that publish (registry, tarball, OCI layout), cache entries and the tests use.

use super::reference::Reference;
use super::spec::{
    Descriptor, History, ImageConfig, Manifest, MT_DOCKER_CONFIG, MT_DOCKER_LAYER,
    MT_DOCKER_MANIFEST, MT_OCI_CONFIG, MT_OCI_LAYER, MT_OCI_MANIFEST,
};
use super::Digest;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where a layer's bytes are.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerSource {
    /// In a registry repository (registry and repository of the reference).
    Remote(Reference),
    /// A blob file this build wrote or downloaded.
    Local(PathBuf),
}

/// A layer: descriptor and diff_id known, bytes opened on demand.
#[derive(Debug, Clone)]
pub struct Layer {
    pub(crate) descriptor: Descriptor,
    pub(crate) diff_id: Digest,
    pub(crate) source: LayerSource,
}

/// Whether a manifest uses Docker's or OCI's media types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    Docker,
    Oci,
}

/// OCI's name for a layer media type (Docker's gzip and foreign layers have
/// OCI twins; others are OCI's already).
pub(crate) fn oci_layer_type(media_type: &str) -> &str {
    match media_type {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        }
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        }
        "application/vnd.docker.image.rootfs.diff.tar" => "application/vnd.oci.image.layer.v1.tar",
        other => other,
    }
}

/// Docker's name for a layer media type, the inverse of [`oci_layer_type`]
/// (OCI's zstd layers have no Docker twin and keep their type).
pub(crate) fn docker_layer_type(media_type: &str) -> &str {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar+gzip" => {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        }
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => {
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        }
        "application/vnd.oci.image.layer.v1.tar" => "application/vnd.docker.image.rootfs.diff.tar",
        other => other,
    }
}

/// An image: config, layers, manifest flavour. Built as go-containerregistry's
/// `mutate.Append` builds one: a base ([`Image::on_base`]), the steps appended
/// ([`Image::append`]), then [`Image::finish`] once, which derives what the
/// config says about the layers.
#[derive(Debug, Clone)]
pub struct Image {
    pub(crate) config: ImageConfig,
    pub(crate) layers: Vec<Layer>,
    pub(crate) format: ManifestFormat,
    /// History entries before this index are the base's; `finish` dates the rest.
    base_history: usize,
}

/// The exact bytes of an image's config and manifest, computed once.
#[derive(Debug, Clone)]
pub struct Serialized {
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
    pub(crate) manifest_media_type: &'static str,
}

impl ManifestFormat {
    /// Media types of (manifest, config, gzip layer).
    pub(crate) fn media_types(self) -> (&'static str, &'static str, &'static str) {
        match self {
            ManifestFormat::Docker => (MT_DOCKER_MANIFEST, MT_DOCKER_CONFIG, MT_DOCKER_LAYER),
            ManifestFormat::Oci => (MT_OCI_MANIFEST, MT_OCI_CONFIG, MT_OCI_LAYER),
        }
    }
}

impl Image {
    /// An image to append to: `config` (with the base's history) and the base's
    /// layers, in the base's manifest format.
    pub(crate) fn on_base(
        config: ImageConfig,
        layers: Vec<Layer>,
        format: ManifestFormat,
    ) -> Image {
        Image {
            base_history: config.history.len(),
            config,
            layers,
            format,
        }
    }

    /// Appends one step: its history entry and, unless the entry is an empty
    /// layer's, its layer.
    pub(crate) fn append(&mut self, layer: Option<Layer>, history: History) {
        debug_assert_eq!(layer.is_none(), history.empty_layer);
        self.layers.extend(layer);
        self.config.history.push(history);
    }

    /// The image as published, in `format`: layer media types named in it
    /// (a base's too; zstd layers have no Docker name and keep theirs), the
    /// config's diff_ids taken from the layers, and `created` on the config and
    /// on every appended history entry.
    pub(crate) fn finish(mut self, format: ManifestFormat, created: &str) -> Image {
        if format != self.format {
            for l in &mut self.layers {
                let mt = &l.descriptor.media_type;
                l.descriptor.media_type = match format {
                    ManifestFormat::Oci => oci_layer_type(mt),
                    ManifestFormat::Docker => docker_layer_type(mt),
                }
                .to_string();
            }
            self.format = format;
        }
        self.config.rootfs.kind = "layers".into();
        self.config.rootfs.diff_ids = self.layers.iter().map(|l| l.diff_id.clone()).collect();
        for h in self.config.history.iter_mut().skip(self.base_history) {
            h.created = Some(created.to_string());
        }
        self.config.created = Some(created.to_string());
        self
    }

    /// Config and manifest bytes; `annotations` (Kaniko's `--annotation`) go
    /// on the manifest when there are any.
    pub(crate) fn serialize(
        &self,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Serialized, serde_json::Error> {
        let config = serde_json::to_vec(&self.config)?;
        let descriptors: Vec<Descriptor> =
            self.layers.iter().map(|l| l.descriptor.clone()).collect();
        let annotations = (!annotations.is_empty()).then(|| annotations.clone());
        manifest_with(config, &descriptors, self.format, annotations)
    }
}

/// The manifest of config bytes and layer descriptors. The one place a manifest
/// is assembled; test inputs with hand-written configs come through here too.
pub fn manifest_for(
    config: Vec<u8>,
    layers: &[Descriptor],
    format: ManifestFormat,
) -> Result<Serialized, serde_json::Error> {
    manifest_with(config, layers, format, None)
}

/// [`manifest_for`] with `annotations` on the manifest.
pub(crate) fn manifest_with(
    config: Vec<u8>,
    layers: &[Descriptor],
    format: ManifestFormat,
    annotations: Option<BTreeMap<String, String>>,
) -> Result<Serialized, serde_json::Error> {
    let (mt, cmt, _) = format.media_types();
    let config_digest = Digest::sha256_of(&config);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(mt.to_string()),
        config: Descriptor {
            media_type: cmt.into(),
            digest: config_digest.clone(),
            size: config.len() as u64,
            platform: None,
            annotations: None,
            urls: None,
        },
        layers: layers.to_vec(),
        annotations,
    };
    let manifest = serde_json::to_vec(&manifest)?;
    let manifest_digest = Digest::sha256_of(&manifest);
    Ok(Serialized {
        config,
        config_digest,
        manifest,
        manifest_digest,
        manifest_media_type: mt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_serializer_for_every_image() {
        let d = Digest::sha256_of(b"x");
        let img = Image::on_base(
            ImageConfig::default(),
            vec![Layer {
                descriptor: Descriptor {
                    media_type: MT_OCI_LAYER.into(),
                    digest: d.clone(),
                    size: 1,
                    platform: None,
                    annotations: None,
                    urls: None,
                },
                diff_id: d,
                source: LayerSource::Local("/nonexistent".into()),
            }],
            ManifestFormat::Oci,
        );
        let s = img.serialize(&Default::default()).unwrap();
        let m: Manifest = serde_json::from_slice(&s.manifest).unwrap();
        assert_eq!(m.layers[0].media_type, MT_OCI_LAYER);
        assert_eq!(m.config.media_type, MT_OCI_CONFIG);
        assert_eq!(m.config.digest, Digest::sha256_of(&s.config));
        assert_eq!(s.manifest_digest, Digest::sha256_of(&s.manifest));
    }

    #[test]
    fn finish_names_types_in_the_format_and_dates_only_appended_history() {
        let d = Digest::sha256_of(b"x");
        let layer = |mt: &str| Layer {
            descriptor: Descriptor {
                media_type: mt.into(),
                digest: d.clone(),
                size: 1,
                platform: None,
                annotations: None,
                urls: None,
            },
            diff_id: d.clone(),
            source: LayerSource::Local("/nonexistent".into()),
        };
        let base = ImageConfig {
            history: vec![History {
                created: Some("base".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut img = Image::on_base(base, vec![layer(MT_DOCKER_LAYER)], ManifestFormat::Docker);
        let step = |empty_layer| History {
            empty_layer,
            ..Default::default()
        };
        img.append(
            Some(layer(super::super::spec::MT_OCI_LAYER_ZSTD)),
            step(false),
        );
        img.append(None, step(true));
        let img = img.finish(ManifestFormat::Oci, "now");
        let types: Vec<_> = img
            .layers
            .iter()
            .map(|l| l.descriptor.media_type.as_str())
            .collect();
        assert_eq!(types, [MT_OCI_LAYER, super::super::spec::MT_OCI_LAYER_ZSTD]);
        assert_eq!(img.config.rootfs.diff_ids, [d.clone(), d]);
        let created: Vec<_> = img
            .config
            .history
            .iter()
            .map(|h| h.created.as_deref())
            .collect();
        assert_eq!(created, [Some("base"), Some("now"), Some("now")]);
        assert_eq!(img.config.created.as_deref(), Some("now"));
        assert_eq!(img.format, ManifestFormat::Oci);
    }
}
