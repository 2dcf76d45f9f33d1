//! Manifest, index and config types. Unknown fields are kept, so a config read
//! from a registry and written back loses nothing (Healthcheck, Shell, OnBuild …).

use super::Digest;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// BuildKit's default PATH for Linux: what a stage's config gets when its base
/// sets none, and where a command is looked for when its environment has none.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MT_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const MT_DOCKER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub(crate) const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub(crate) const MT_OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Media types a manifest GET may answer with.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// `os/arch[/variant]`.
    pub fn parse(s: &str) -> Option<Platform> {
        let mut it = s.split('/');
        let os = it.next().filter(|s| !s.is_empty())?.to_string();
        let architecture = it.next().filter(|s| !s.is_empty())?.to_string();
        let variant = it.next().map(str::to_string);
        Some(Platform {
            architecture,
            os,
            variant,
        })
    }

    /// containerd's spelling (`platforms.Normalize`): `aarch64` is arm64 (whose
    /// v8 goes unsaid), `x86_64` amd64, `arm` without a variant v7.
    pub fn normalize(mut self) -> Platform {
        self.os = self.os.to_ascii_lowercase();
        let lower = self.architecture.to_ascii_lowercase();
        let (arch, variant) = match (lower.as_str(), self.variant.as_deref()) {
            ("aarch64" | "arm64", Some("8" | "v8" | "v8.0") | None) => ("arm64", None),
            ("aarch64" | "arm64", v) => ("arm64", v.map(str::to_string)),
            ("x86_64" | "x86-64" | "amd64", Some("v1") | None) => ("amd64", None),
            ("x86_64" | "x86-64" | "amd64", v) => ("amd64", v.map(str::to_string)),
            ("i386" | "i686" | "386", _) => ("386", None),
            ("armhf", _) => ("arm", Some("v7".to_string())),
            ("armel", _) => ("arm", Some("v6".to_string())),
            ("arm", None) => ("arm", Some("v7".to_string())),
            ("arm", Some(v)) => (
                "arm",
                Some(if v.starts_with('v') {
                    v.to_string()
                } else {
                    format!("v{v}")
                }),
            ),
            (other, v) => (other, v.map(str::to_string)),
        };
        self.architecture = arch.to_string();
        self.variant = variant;
        self
    }

    /// The platform this executor runs on, as OCI names it.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "arm" => "arm",
            "s390x" => "s390x",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            architecture: architecture.into(),
            os: "linux".into(),
            variant: (architecture == "arm64").then(|| "v8".to_string()),
        }
    }

    pub(crate) fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && match (&self.variant, &other.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// The image config (`application/vnd.docker.container.image.v1+json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) author: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub(crate) os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) variant: Option<String>,
    #[serde(default)]
    pub config: ContainerConfig,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    #[serde(flatten)]
    pub(crate) other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default = "layers")]
    pub(crate) kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

fn layers() -> String {
    "layers".into()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// The runtime part of the config; field names as Docker writes them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) volumes: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) shell: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) healthcheck: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) on_build: Option<Vec<String>>,
    #[serde(flatten)]
    pub(crate) other: Map<String, Value>,
}

impl ImageConfig {
    /// Rewrites a base's config as BuildKit writes its own: only the fields of its
    /// config struct, none of them empty (Go's `omitempty`). `docker import`
    /// bases carry `"Hostname": ""`, `container_config`, `docker_version` and the
    /// like; none of that reaches BuildKit's output, so none reaches Kiln's.
    pub(crate) fn keep_buildkit_fields(&mut self) {
        self.other
            .retain(|k, v| matches!(k.as_str(), "os.version" | "os.features") && !is_empty(v));
        if self.author.as_deref() == Some("") {
            self.author = None;
        }
        if self.variant.as_deref() == Some("") {
            self.variant = None;
        }
        let c = &mut self.config;
        c.other
            .retain(|k, v| k == "ArgsEscaped" && *v == Value::Bool(true));
        for s in [&mut c.user, &mut c.working_dir, &mut c.stop_signal] {
            if s.as_deref() == Some("") {
                *s = None;
            }
        }
        for v in [
            &mut c.env,
            &mut c.entrypoint,
            &mut c.cmd,
            &mut c.shell,
            &mut c.on_build,
        ] {
            if v.as_ref().is_some_and(Vec::is_empty) {
                *v = None;
            }
        }
        for m in [&mut c.exposed_ports, &mut c.volumes] {
            if m.as_ref().is_some_and(BTreeMap::is_empty) {
                *m = None;
            }
        }
        if c.labels.as_ref().is_some_and(BTreeMap::is_empty) {
            c.labels = None;
        }
        if c.healthcheck.as_ref().is_some_and(is_empty) {
            c.healthcheck = None;
        }
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(_) => false,
    }
}

impl ContainerConfig {
    /// Env as an ordered list of (key, value).
    pub(crate) fn env_pairs(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .flatten()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), String::new()),
            })
            .collect()
    }

    /// Sets or replaces one variable, keeping the original order.
    pub(crate) fn set_env(&mut self, key: &str, value: &str) {
        let env = self.env.get_or_insert_with(Vec::new);
        let entry = format!("{key}={value}");
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(e) => *e = entry,
            None => env.push(entry),
        }
    }

    pub(crate) fn get_env(&self, key: &str) -> Option<String> {
        self.env_pairs()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// Whether a media type names a layer Kiln can read (tar, plain, gzip or zstd).
pub(crate) fn is_layer(mt: &str) -> bool {
    matches!(
        mt,
        MT_DOCKER_LAYER | MT_DOCKER_FOREIGN | MT_OCI_LAYER | MT_OCI_LAYER_TAR | MT_OCI_LAYER_ZSTD
    ) || mt.starts_with("application/vnd.oci.image.layer.nondistributable.v1.tar")
}

/// Whether a layer may not be pushed: foreign (Windows base) and non-distributable
/// layers live at their `urls`.
pub(crate) fn is_foreign(d: &Descriptor) -> bool {
    d.media_type == MT_DOCKER_FOREIGN || d.media_type.contains(".nondistributable.")
}

/// Whether a manifest is an index (a list of per-platform manifests).
pub(crate) fn is_index(mt: &str) -> bool {
    mt == MT_DOCKER_LIST || mt == MT_OCI_INDEX
}

/// Whether manifest bytes are Docker's long-retired schema 1.
pub(crate) fn is_schema1(media_type: &str, bytes: &[u8]) -> bool {
    media_type.starts_with("application/vnd.docker.distribution.manifest.v1")
        || serde_json::from_slice::<Value>(bytes)
            .ok()
            .and_then(|v| v.get("schemaVersion").and_then(Value::as_u64))
            == Some(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_unknown_fields() {
        let text = r#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"Healthcheck":{"Test":["NONE"]},"ArgsEscaped":true},"rootfs":{"type":"layers","diff_ids":[]},"moby.extra":1}"#;
        let c: ImageConfig = serde_json::from_str(text).unwrap();
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["moby.extra"], 1);
        assert_eq!(back["config"]["ArgsEscaped"], true);
        assert_eq!(back["config"]["Healthcheck"]["Test"][0], "NONE");
        let imported = r#"{"architecture":"amd64","os":"linux","docker_version":"20.10","container_config":{"Hostname":""},"config":{"Hostname":"","User":"","Tty":false,"Env":null,"Cmd":[],"WorkingDir":"","Labels":{},"ArgsEscaped":false},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let mut c: ImageConfig = serde_json::from_str(imported).unwrap();
        c.keep_buildkit_fields();
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["config"], serde_json::json!({}));
        assert!(back.get("docker_version").is_none() && back.get("container_config").is_none());
    }

    #[test]
    fn env_set_replaces_in_place() {
        let mut c = ContainerConfig {
            env: Some(vec!["A=1".into(), "B=2".into()]),
            ..Default::default()
        };
        c.set_env("A", "3");
        c.set_env("C", "x=y");
        assert_eq!(c.env.unwrap(), ["A=3", "B=2", "C=x=y"]);
    }
}
