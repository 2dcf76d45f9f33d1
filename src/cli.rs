//! Command-line flags with Kaniko's names, validated once into options.

use clap::{ArgAction, Parser};
use kiln::cache::CacheSettings;
use kiln::context::source::{GitOptions, Source, SourceError};
use kiln::dispatch::mounts::Secret;
use kiln::image::spec::Platform;
use kiln::image::Reference;
use kiln::layer::writer::Compression;
use kiln::registry::RegistryOptions;
use std::path::{Path, PathBuf};

/// Builds a container image from a Dockerfile and pushes it, without a Docker daemon.
#[derive(Debug, Parser)]
#[command(
    name = "executor",
    version,
    about,
    args_override_self = true,
    after_help = "Example:\n  executor --context . --dockerfile Dockerfile \\\n    --destination registry.example:5000/team/app:v1 --cache\n\nEvery Kaniko executor flag is accepted; those not listed here get a notice or an error naming them."
)]
pub struct Cli {
    /// Path to the Dockerfile (relative paths are tried against the context too; - reads stdin).
    #[arg(
        help_heading = "Build",
        short = 'f',
        long,
        default_value = "Dockerfile"
    )]
    pub dockerfile: String,
    /// Build context: a directory (or dir://DIR), tar://FILE (plain or gzip),
    /// tar://stdin, https://URL of a tar, git://HOST/REPO[#REF[#COMMIT]].
    #[arg(help_heading = "Build", short = 'c', long, default_value = ".")]
    pub context: String,
    /// A bucket holding the context tarball (gs:// unless a scheme is given; its
    /// context.tar.gz unless an object is named), as Kaniko's --bucket.
    #[arg(help_heading = "Build", short = 'b', long)]
    pub bucket: Option<String>,
    /// For a git:// context (repeatable): branch=NAME, insecure-skip-tls=BOOL,
    /// single-branch=BOOL, depth=N. Credentials: GIT_TOKEN, or GIT_USERNAME and GIT_PASSWORD.
    #[arg(help_heading = "Build", long = "git", action = ArgAction::Append)]
    pub git: Vec<String>,
    /// Where to push the image (repeatable): registry/repository:tag.
    #[arg(help_heading = "Push", short = 'd', long = "destination", action = ArgAction::Append)]
    pub destinations: Vec<String>,
    /// Build argument KEY=VALUE (repeatable); KEY alone takes the value from the environment.
    #[arg(help_heading = "Build", long = "build-arg", action = ArgAction::Append)]
    pub build_args: Vec<String>,
    /// Secret for `RUN --mount=type=secret` (repeatable, buildx's syntax):
    /// id=NAME,src=PATH or id=NAME,env=VARIABLE.
    #[arg(help_heading = "Build", long = "secret", action = ArgAction::Append)]
    pub secrets: Vec<String>,
    /// Stage to build (default: the last one).
    #[arg(help_heading = "Build", long)]
    pub target: Option<String>,
    /// Build without pushing (also KANIKO_NO_PUSH).
    #[arg(help_heading = "Push", long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool, env = "KANIKO_NO_PUSH")]
    pub no_push: bool,
    /// Also write the image as a docker-archive tarball (docker load).
    #[arg(help_heading = "Output", long, alias = "tarPath")]
    pub tar_path: Option<PathBuf>,
    /// Also write the image into an OCI layout directory.
    #[arg(help_heading = "Output", long)]
    pub oci_layout_path: Option<PathBuf>,
    /// Write the image digest to this file.
    #[arg(help_heading = "Output", long)]
    pub digest_file: Option<PathBuf>,
    /// Write `repository@digest` of every destination to this file.
    #[arg(help_heading = "Output", long)]
    pub image_name_with_digest_file: Option<PathBuf>,
    /// Write `repository:tag@digest` of every destination to this file.
    #[arg(help_heading = "Output", long)]
    pub image_name_tag_with_digest_file: Option<PathBuf>,
    /// A directory inside the context to build from.
    #[arg(help_heading = "Build", long)]
    pub context_sub_path: Option<PathBuf>,
    /// Merge the target stage's own layers into one, above its base image's.
    #[arg(help_heading = "Build", long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub single_snapshot: bool,
    /// Leave changes at or under this path out of RUN layers (repeatable), as Kaniko's snapshots do.
    #[arg(help_heading = "Build", long = "ignore-path", action = ArgAction::Append)]
    pub ignore_paths: Vec<String>,
    /// Annotation KEY=VALUE on the image manifest (repeatable).
    #[arg(help_heading = "Build", long = "annotation", action = ArgAction::Append)]
    pub annotations: Vec<String>,
    /// Label KEY=VALUE added to the image (repeatable).
    #[arg(help_heading = "Build", long = "label", action = ArgAction::Append)]
    pub labels: Vec<String>,
    /// Push to plain-HTTP registries.
    #[arg(help_heading = "Registries", long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub insecure: bool,
    /// Pull from plain-HTTP registries.
    #[arg(help_heading = "Registries", long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub insecure_pull: bool,
    /// Registry HOST[:PORT] reached over plain HTTP for pull and push (repeatable).
    #[arg(help_heading = "Registries", long = "insecure-registry", action = ArgAction::Append)]
    pub insecure_registries: Vec<String>,
    /// Do not verify TLS certificates when pushing.
    #[arg(help_heading = "Registries", long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub skip_tls_verify: bool,
    /// Do not verify TLS certificates when pulling.
    #[arg(help_heading = "Registries", long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub skip_tls_verify_pull: bool,
    /// Registry HOST[:PORT] whose TLS certificate is not verified (repeatable).
    #[arg(help_heading = "Registries", long = "skip-tls-verify-registry", action = ArgAction::Append)]
    pub skip_tls_verify_registries: Vec<String>,
    /// Do not check push access to the destinations before building.
    #[arg(help_heading = "Push", long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub skip_push_permission_check: bool,
    /// Platforms to build for, os/arch[/variant], comma-separated (default: this machine's); more than one pushes an image index.
    #[arg(
        help_heading = "Build",
        long,
        alias = "customPlatform",
        visible_alias = "platform"
    )]
    pub custom_platform: Option<String>,
    /// Zero timestamps in layers and config, for reproducible digests.
    #[arg(help_heading = "Build", long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub reproducible: bool,
    /// Log level, as Kaniko names them.
    #[arg(help_heading = "Logging", short = 'v', long, value_enum, default_value_t = Verbosity::Info)]
    pub verbosity: Verbosity,
    /// Log lines as color (levels in color on a terminal, text elsewhere), text, or JSON (one object per line).
    #[arg(help_heading = "Logging", long, value_enum, default_value_t = LogFormat::Color)]
    pub log_format: LogFormat,
    /// The terminal view, as BuildKit names it: auto (bars and step timers when stderr is a terminal), plain (never), tty (always), rawjson (JSON log lines, as --log-format=json).
    #[arg(help_heading = "Logging", long, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,
    /// Start each text log line with its time (RFC 3339).
    #[arg(help_heading = "Logging", long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub log_timestamp: bool,
    /// A push the registry refuses because the tag is immutable there (Artifact Registry, ECR) counts as done.
    #[arg(help_heading = "Push", long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub push_ignore_immutable_tag_errors: bool,
    /// Retries for registry requests after 5xx, 429, resets and timeouts.
    #[arg(help_heading = "Push", long, default_value_t = 3)]
    pub push_retry: u32,
    /// gzip level for new layers (0-9; -1, Kaniko's default, is 6).
    #[arg(help_heading = "Build", long, default_value_t = -1, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-1..=9))]
    pub compression_level: i32,
    /// Layer compression: gzip, or zstd (the image then has OCI media types).
    #[arg(help_heading = "Build", long, default_value = "gzip")]
    pub compression: String,
    /// Retries for downloading a base image (Kiln's registry retries take the larger of this and --push-retry).
    #[arg(help_heading = "Registries", long, default_value_t = 0)]
    pub image_download_retry: u32,
    #[command(flatten)]
    pub registries: RegistryFlags,
    #[command(flatten)]
    pub kaniko: KanikoOnly,
    /// Directory for the scratch root (default: the system temp dir).
    #[arg(
        help_heading = "Build",
        long = "kaniko-dir",
        alias = "scratch-dir",
        env = "KANIKO_DIR"
    )]
    pub kaniko_dir: Option<PathBuf>,
    /// Reuse step layers from the cache repository and store new ones there.
    #[arg(help_heading = "Cache", long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub cache: bool,
    /// Repository for cached layers (default: <first destination's repository>/cache).
    #[arg(help_heading = "Cache", long)]
    pub cache_repo: Option<String>,
    /// Local directory for base layers and file indexes (a PVC in Kubernetes); see `executor warmer`.
    #[arg(help_heading = "Cache", long)]
    pub cache_dir: Option<PathBuf>,
    /// Repository that keeps `RUN --mount=type=cache` contents between builds (default with --cache and no --cache-dir: <cache repository>/mounts).
    #[arg(help_heading = "Cache", long)]
    pub cache_mount_repo: Option<String>,
    /// How long cached layers stay valid (Go duration).
    #[arg(help_heading = "Cache", long, default_value = "336h")]
    pub cache_ttl: String,
    /// Accepted for Kaniko compatibility: Kiln caches COPY layers by default.
    #[arg(help_heading = "Cache", long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub cache_copy_layers: bool,
    /// Read the cache but do not write new entries to it.
    #[arg(help_heading = "Cache", long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub no_push_cache: bool,
    /// Accepted for Kaniko compatibility: the scratch root is always removed.
    #[arg(help_heading = "Output", long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub cleanup: bool,
    /// Print the plan (stages to build, their steps) and stop: nothing is fetched, built or pushed.
    #[arg(help_heading = "Build", long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub dryrun: bool,
    /// Manifest and layer media types of the result: docker or oci (default: the base image's).
    #[arg(help_heading = "Output", long, value_enum)]
    pub image_format: Option<ImageFormat>,
}

/// `--image-format`'s values (Kaniko's fork).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImageFormat {
    Docker,
    Oci,
}

/// Mirrors and certificates of registries (executor and warmer).
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryFlags {
    /// Mirror of Docker Hub to pull from first (repeatable; HOST[/PREFIX], ;-separated in KANIKO_REGISTRY_MIRROR).
    #[arg(help_heading = "Registries", long = "registry-mirror", action = ArgAction::Append, env = "KANIKO_REGISTRY_MIRROR")]
    pub registry_mirror: Vec<String>,
    /// REGISTRY=MIRROR[;MIRROR…]: pull REGISTRY's images from the mirrors first, in order (repeatable).
    #[arg(help_heading = "Registries", long = "registry-map", action = ArgAction::Append, env = "KANIKO_REGISTRY_MAP")]
    pub registry_map: Vec<String>,
    /// Fail when every mirror fails, rather than pull from the registry itself.
    #[arg(help_heading = "Registries", long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub skip_default_registry_fallback: bool,
    /// REGISTRY=CA.pem: trust this CA for REGISTRY (repeatable).
    #[arg(help_heading = "Registries", long = "registry-certificate", action = ArgAction::Append)]
    pub registry_certificate: Vec<String>,
    /// REGISTRY=CERT.pem,KEY.pem: a client certificate for REGISTRY (mutual TLS; repeatable).
    #[arg(help_heading = "Registries", long = "registry-client-cert", action = ArgAction::Append)]
    pub registry_client_cert: Vec<String>,
}

impl RegistryFlags {
    /// Registry → mirrors, Docker Hub's under `index.docker.io` as references name it.
    fn mirrors(&self) -> Result<Vec<(String, Vec<String>)>, FlagError> {
        let list = |v: &str| -> Vec<String> {
            v.split(';')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect()
        };
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        let mut add = |from: &str, to: Vec<String>| {
            let from = match from {
                "docker.io" | "registry-1.docker.io" => "index.docker.io",
                f => f,
            };
            match out.iter_mut().find(|(f, _)| f == from) {
                Some((_, v)) => v.extend(to),
                None => out.push((from.to_string(), to)),
            }
        };
        for m in &self.registry_map {
            let (from, to) = m
                .split_once('=')
                .filter(|(f, t)| !f.is_empty() && !t.is_empty())
                .ok_or_else(|| {
                    FlagError::new("registry-map", m, "expected REGISTRY=MIRROR[;MIRROR…]")
                })?;
            add(from, list(to));
        }
        for m in &self.registry_mirror {
            add("index.docker.io", list(m));
        }
        Ok(out)
    }

    /// Fills `o`'s mirrors and certificates.
    pub fn apply(&self, o: &mut RegistryOptions) -> Result<(), FlagError> {
        o.mirrors = self.mirrors()?;
        o.skip_default_registry_fallback = self.skip_default_registry_fallback;
        for c in &self.registry_certificate {
            let (registry, ca) = c
                .split_once('=')
                .filter(|(r, p)| !r.is_empty() && !p.is_empty())
                .ok_or_else(|| {
                    FlagError::new("registry-certificate", c, "expected REGISTRY=CA.pem")
                })?;
            o.certificates
                .push((registry.to_string(), PathBuf::from(ca)));
        }
        for c in &self.registry_client_cert {
            let bad = || {
                FlagError::new(
                    "registry-client-cert",
                    c,
                    "expected REGISTRY=CERT.pem,KEY.pem",
                )
            };
            let (registry, files) = c.split_once('=').ok_or_else(bad)?;
            let (cert, key) = files.split_once(',').ok_or_else(bad)?;
            if registry.is_empty() || cert.is_empty() || key.is_empty() {
                return Err(bad());
            }
            o.client_certs
                .push((registry.to_string(), cert.into(), key.into()));
        }
        Ok(())
    }
}

/// Kaniko flags Kiln takes so that a Kaniko job runs unchanged: knobs Kiln has
/// no use for, each named by `notices` when given.
#[derive(Debug, clap::Args)]
pub struct KanikoOnly {
    #[arg(long, alias = "snapshotMode", hide = true)]
    pub snapshot_mode: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub use_new_run: Option<bool>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub compressed_caching: Option<bool>,
    #[arg(long, alias = "whitelist-var-run", hide = true, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub ignore_var_run: Option<bool>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub force: Option<bool>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub skip_unused_stages: Option<bool>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub cache_run_layers: Option<bool>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub force_build_metadata: Option<bool>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub preserve_context: Option<bool>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub materialize: Option<bool>,
    #[arg(long, hide = true)]
    pub image_fs_extract_retry: Option<u32>,
    #[arg(long = "credential-helpers", hide = true, action = ArgAction::Append)]
    pub credential_helpers: Vec<String>,
    #[arg(long = "azure-container-registry-config", hide = true)]
    pub azure_container_registry_config: Option<String>,
    #[arg(long, hide = true, env = "KANIKO_PRE_CLEANUP", num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub pre_cleanup: Option<bool>,
    // Meaning something Kiln does not do yet.
}

impl KanikoOnly {
    /// Flags given that Kiln has no such knob for, each with why.
    pub fn notices(&self) -> Vec<String> {
        let given =
            |set: bool, flag: &str, why: &str| set.then(|| format!("--{flag}: {why}; ignored"));
        [
            given(
                self.snapshot_mode.is_some(),
                "snapshot-mode",
                "Kiln reads a RUN's change from its overlay, there is no snapshot to tune",
            ),
            given(
                self.use_new_run.is_some(),
                "use-new-run",
                "Kiln has one RUN implementation",
            ),
            given(
                self.compressed_caching.is_some(),
                "compressed-caching",
                "cached layers are always the compressed blobs",
            ),
            given(
                self.ignore_var_run.is_some(),
                "ignore-var-run",
                "RUN's layer holds what the command changed, as BuildKit's",
            ),
            given(
                self.force.is_some(),
                "force",
                "Kiln never builds in the host's own root",
            ),
            given(
                self.skip_unused_stages.is_some(),
                "skip-unused-stages",
                "Kiln always builds only the stages the target needs",
            ),
            given(
                self.cache_run_layers.is_some(),
                "cache-run-layers",
                "RUN layers are cached with --cache",
            ),
            given(
                self.force_build_metadata.is_some(),
                "force-build-metadata",
                "build metadata is always written",
            ),
            given(
                self.preserve_context.is_some(),
                "preserve-context",
                "the context is never changed by a build",
            ),
            given(
                self.materialize.is_some(),
                "materialize",
                "Kiln writes no filesystem for the final stage",
            ),
            given(
                self.image_fs_extract_retry.is_some(),
                "image-fs-extract-retry",
                "layers are verified once downloaded and unpacked locally",
            ),
            given(
                !self.credential_helpers.is_empty(),
                "credential-helpers",
                "Kiln uses the helpers the Docker config names",
            ),
            given(
                self.pre_cleanup.is_some(),
                "pre-cleanup",
                "Kiln builds in its own scratch dir, and a root a RUN shares with it is brought to the stage's layers first",
            ),
            given(
                self.azure_container_registry_config.is_some(),
                "azure-container-registry-config",
                "Kiln uses the Docker config's credentials",
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Go's `strconv.ParseBool`, as Kaniko's flags take booleans (`=TRUE`, `=1`, `=t`).
pub fn go_bool(s: &str) -> Result<bool, String> {
    kiln::context::source::go_bool(s)
        .ok_or_else(|| format!("{s:?} is not a boolean (true, false, 1, 0, t, f)"))
}

/// `executor warmer`: fills `--cache-dir` with base layers and their file indexes.
#[derive(Debug, Parser)]
#[command(
    name = "executor warmer",
    about = "Downloads base images' layers and file indexes into a cache directory"
)]
pub struct WarmerCli {
    /// Image to warm (repeatable).
    #[arg(short = 'i', long = "image", action = ArgAction::Append)]
    pub images: Vec<String>,
    /// Also warm every base image a Dockerfile names.
    #[arg(short = 'f', long)]
    pub dockerfile: Option<PathBuf>,
    /// Build argument KEY=VALUE for the Dockerfile's FROM lines (repeatable).
    #[arg(long = "build-arg", action = ArgAction::Append)]
    pub build_args: Vec<String>,
    /// The directory to fill (Kaniko's default, /cache).
    #[arg(short = 'c', long, default_value = "/cache")]
    pub cache_dir: PathBuf,
    /// Platforms to warm for, os/arch[/variant], comma-separated.
    #[arg(long, alias = "customPlatform", visible_alias = "platform")]
    pub custom_platform: Option<String>,
    /// Kaniko's warmer flags with no meaning here: entries are verified by
    /// digest, so neither an age nor a forced download changes what is kept.
    #[arg(long, hide = true)]
    pub cache_ttl: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub force: Option<bool>,
    /// Registry HOST[:PORT] reached over plain HTTP (repeatable).
    #[arg(long = "insecure-registry", action = ArgAction::Append)]
    pub insecure_registries: Vec<String>,
    /// Pull from plain-HTTP registries.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub insecure_pull: bool,
    /// Do not verify TLS certificates when pulling.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub skip_tls_verify_pull: bool,
    #[command(flatten)]
    pub registries: RegistryFlags,
}

/// A flag value that is wrong, with the flag and the value named.
#[derive(Debug, thiserror::Error)]
#[error("--{flag}{}: {reason}", if value.is_empty() { String::new() } else { format!(" {value}") })]
pub struct FlagError {
    pub flag: &'static str,
    pub value: String,
    pub reason: String,
}

impl FlagError {
    fn new(flag: &'static str, value: impl Into<String>, reason: impl Into<String>) -> FlagError {
        FlagError {
            flag,
            value: value.into(),
            reason: reason.into(),
        }
    }
}

/// `K=V` pairs; `K` alone reads the environment (Docker's rule for --build-arg).
pub fn key_values(
    flag: &'static str,
    items: &[String],
    from_env: bool,
) -> Result<Vec<(String, String)>, FlagError> {
    items
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            None if from_env && !s.is_empty() => {
                Ok((s.clone(), std::env::var(s).unwrap_or_default()))
            }
            _ => Err(FlagError::new(flag, format!("{s:?}"), "expected KEY=VALUE")),
        })
        .collect()
}

/// `--secret`s as buildx reads them: `id=`, `src=`/`source=`, `env=`,
/// `type=file|env`; with neither a file nor a variable named, the id is the
/// variable's name when it is set, else the file's path. Each is read now.
pub fn secrets(items: &[String]) -> Result<std::collections::BTreeMap<String, Secret>, FlagError> {
    let mut out = std::collections::BTreeMap::new();
    for item in items {
        let bad = |why: &str| FlagError::new("secret", item.clone(), why.to_string());
        let (mut id, mut file, mut env, mut kind) = (None, None, None, None);
        for field in item.split(',') {
            match field.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => file = Some(v.to_string()),
                Some(("env", v)) => env = Some(v.to_string()),
                Some(("type", v @ ("file" | "env"))) => kind = Some(v.to_string()),
                _ => return Err(bad("expected id=NAME,src=PATH or id=NAME,env=VARIABLE")),
            }
        }
        let id = id
            .filter(|i| !i.is_empty())
            .ok_or_else(|| bad("no id= given"))?;
        if kind.as_deref() == Some("env") && env.is_none() {
            env = file.take();
        }
        if file.is_none() && env.is_none() {
            match std::env::var_os(&id) {
                Some(_) => env = Some(id.clone()),
                None => file = Some(id.clone()),
            }
        }
        let value = match (file, env) {
            (Some(f), _) => std::fs::read(&f).map_err(|e| bad(&format!("reading {f}: {e}")))?,
            (None, Some(v)) => std::env::var_os(&v)
                .map(|v| std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec())
                .ok_or_else(|| bad(&format!("${v} is not set")))?,
            (None, None) => return Err(bad("no src= or env= given")),
        };
        out.insert(id, Secret::new(value));
    }
    Ok(out)
}

/// The context directory (`--context-sub-path` inside it) and the Dockerfile
/// (None: stdin), checked: for a local context before the build, for a fetched
/// one once it is fetched.
pub fn locate(
    dir: &Path,
    sub: Option<&Path>,
    dockerfile: &str,
) -> Result<(PathBuf, Option<PathBuf>), FlagError> {
    let context = match sub {
        Some(sub) => dir.join(sub),
        None => dir.to_path_buf(),
    };
    if !context.is_dir() {
        return Err(FlagError::new(
            "context",
            context.display().to_string(),
            "not a directory",
        ));
    }
    if dockerfile == "-" {
        return Ok((context, None));
    }
    let dockerfile = find_dockerfile(dockerfile, &context)?;
    Ok((context, Some(dockerfile)))
}

/// Everything a build run needs, checked once: paths exist, names parse, values
/// are in range (ripgrep's low-level flags → high-level options).
#[derive(Debug)]
pub struct Options {
    pub context: Source,
    pub context_sub_path: Option<PathBuf>,
    /// `--dockerfile` as given; `-` reads it from stdin.
    pub dockerfile: String,
    pub git: GitOptions,
    pub destinations: Vec<Reference>,
    /// The first of `platforms`: what a single-platform build is for.
    pub platform: Platform,
    /// Every platform to build, in the order given (one, unless an index is wanted).
    pub platforms: Vec<Platform>,
    /// `--custom-platform` was given (the image is then labelled with it).
    pub explicit_platform: bool,
    pub build_args: Vec<(String, String)>,
    pub secrets: std::collections::BTreeMap<String, Secret>,
    pub labels: Vec<(String, String)>,
    pub annotations: std::collections::BTreeMap<String, String>,
    /// `--ignore-path`s, root-relative.
    pub ignore_paths: Vec<String>,
    pub single_snapshot: bool,
    pub target: Option<String>,
    pub reproducible: bool,
    pub compression: Compression,
    pub cache: CacheSettings,
    pub registry: RegistryOptions,
    /// Check push access to every destination before building.
    pub check_push: bool,
    /// Where the scratch root is made.
    pub scratch_parent: PathBuf,
    pub outputs: Outputs,
    /// `--dryrun`: print the plan and stop.
    pub dry_run: bool,
    /// `--image-format`: the result's media types; `None` keeps the base's.
    pub image_format: Option<kiln::image::remote::ManifestFormat>,
}

/// What the run leaves behind besides pushed images.
#[derive(Debug)]
pub struct Outputs {
    pub push: bool,
    pub tar_path: Option<PathBuf>,
    pub oci_layout_path: Option<PathBuf>,
    pub digest_file: Option<PathBuf>,
    pub image_name_with_digest_file: Option<PathBuf>,
    pub image_name_tag_with_digest_file: Option<PathBuf>,
    /// The terminal view: bars and step timers (never with JSON logs).
    pub progress: bool,
    /// `--push-ignore-immutable-tag-errors`.
    pub ignore_immutable_tags: bool,
}

impl Cli {
    pub fn validate(self) -> Result<Options, FlagError> {
        for notice in self.kaniko.notices() {
            kiln::log_info!("{notice}");
        }
        // -1 is Kaniko's "the library's default": gzip's 6, zstd's 3.
        let level = u32::try_from(self.compression_level).ok();
        let compression = match self.compression.as_str() {
            "gzip" => Compression::Gzip(level.unwrap_or(6)),
            "zstd" if self.image_format == Some(ImageFormat::Docker) => {
                // The fork's rule: Docker's media types have no zstd layer.
                kiln::log_warn!("--compression=zstd: the docker image format has no zstd layer media type, so layers are gzip; use --image-format=oci for zstd");
                Compression::Gzip(level.unwrap_or(6))
            }
            "zstd" => Compression::Zstd(level.map_or(3, |l| l as i32)),
            other => {
                return Err(FlagError::new(
                    "compression",
                    other,
                    "Kiln writes gzip or zstd layers",
                ))
            }
        };
        // Kaniko's rule: a bucket replaces the default context or a URL one.
        let context_flag = match &self.bucket {
            Some(b) if self.context == "." || self.context.contains("://") => {
                if b.contains("://") {
                    b.clone()
                } else {
                    format!("gs://{b}")
                }
            }
            _ => self.context.clone(),
        };
        let context = Source::parse(&context_flag)
            .map_err(|e| FlagError::new("context", &context_flag, e.to_string()))?;
        if let Some(dir) = context.local() {
            // Wrong paths show before anything else happens.
            locate(dir, self.context_sub_path.as_deref(), &self.dockerfile)?;
        }
        if context == Source::Stdin && self.dockerfile == "-" {
            return Err(FlagError::new(
                "dockerfile",
                "-",
                "stdin carries the tar://stdin context; name the Dockerfile inside it",
            ));
        }
        let git = GitOptions::parse(&self.git).map_err(|e| match e {
            SourceError::GitFlag { value, reason } => FlagError::new("git", value, reason),
            e => FlagError::new("git", "", e.to_string()),
        })?;
        let destinations = self
            .destinations
            .iter()
            .map(|d| {
                Reference::parse(d).map_err(|e| FlagError::new("destination", d, e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(d) = destinations.iter().find(|d| d.digest.is_some()) {
            return Err(FlagError::new(
                "destination",
                d.to_string(),
                "a destination names a tag, not a digest (the digest is what the push makes)",
            ));
        }
        if destinations.is_empty() && !self.no_push && !self.dryrun {
            return Err(FlagError::new(
                "destination",
                "",
                "none given; pass one or more, or --no-push",
            ));
        }
        let platforms = platforms(&self.custom_platform)?;
        let platform = platforms[0].clone();
        let cache = self.cache_settings(&destinations)?;
        let progress = self.terminal_view();
        let mut registry = RegistryOptions {
            insecure_push: self.insecure,
            insecure_pull: self.insecure_pull,
            insecure_registries: self.insecure_registries,
            skip_tls_verify_push: self.skip_tls_verify,
            skip_tls_verify_pull: self.skip_tls_verify_pull,
            skip_tls_verify_registries: self.skip_tls_verify_registries,
            retries: self.push_retry.max(self.image_download_retry),
            ..Default::default()
        };
        self.registries.apply(&mut registry)?;
        Ok(Options {
            build_args: key_values("build-arg", &self.build_args, true)?,
            secrets: secrets(&self.secrets)?,
            labels: key_values("label", &self.labels, false)?,
            single_snapshot: self.single_snapshot,
            ignore_paths: self
                .ignore_paths
                .iter()
                .map(|p| {
                    let rel = p.trim_matches('/');
                    if rel.is_empty() {
                        return Err(FlagError::new(
                            "ignore-path",
                            p,
                            "ignoring / would leave every RUN layer empty",
                        ));
                    }
                    Ok(rel.to_string())
                })
                .collect::<Result<_, _>>()?,
            annotations: key_values("annotation", &self.annotations, false)?
                .into_iter()
                .collect(),
            context,
            context_sub_path: self.context_sub_path,
            dockerfile: self.dockerfile,
            git,
            destinations,
            platform,
            platforms,
            explicit_platform: self.custom_platform.is_some(),
            target: self.target,
            reproducible: self.reproducible,
            compression,
            cache,
            registry,
            check_push: !self.no_push && !self.skip_push_permission_check && !self.dryrun,
            dry_run: self.dryrun,
            image_format: self.image_format.map(|f| match f {
                ImageFormat::Docker => kiln::image::remote::ManifestFormat::Docker,
                ImageFormat::Oci => kiln::image::remote::ManifestFormat::Oci,
            }),
            scratch_parent: self.kaniko_dir.unwrap_or_else(std::env::temp_dir),
            outputs: Outputs {
                push: !self.no_push,
                tar_path: self.tar_path,
                oci_layout_path: self.oci_layout_path,
                digest_file: self.digest_file,
                image_name_with_digest_file: self.image_name_with_digest_file,
                image_name_tag_with_digest_file: self.image_name_tag_with_digest_file,
                progress,
                ignore_immutable_tags: self.push_ignore_immutable_tag_errors,
            },
        })
    }

    /// The cache's settings: `--cache-repo`, else `<first destination>/cache`.
    fn cache_settings(&self, destinations: &[Reference]) -> Result<CacheSettings, FlagError> {
        let ttl = kiln::times::parse_go_duration(&self.cache_ttl).ok_or_else(|| {
            FlagError::new(
                "cache-ttl",
                &self.cache_ttl,
                "expected a duration like 336h",
            )
        })?;
        let repo = match (&self.cache_repo, destinations.first()) {
            (Some(r), _) => Some(
                Reference::parse(r).map_err(|e| FlagError::new("cache-repo", r, e.to_string()))?,
            ),
            (None, Some(d)) => {
                Reference::parse(&format!("{}/{}/cache", d.registry, d.repository)).ok()
            }
            (None, None) => None,
        };
        if self.cache && repo.is_none() {
            kiln::log_warn!("--cache without --cache-repo or --destination: no cache repository, layers are not cached");
        }
        // A fresh pod has no --cache-dir: with --cache, its cache mounts are
        // kept beside the layer cache.
        let mounts_repo = match (&self.cache_mount_repo, &repo) {
            (Some(r), _) => Some(
                Reference::parse(r)
                    .map_err(|e| FlagError::new("cache-mount-repo", r, e.to_string()))?,
            ),
            (None, Some(repo)) if self.cache && self.cache_dir.is_none() => {
                Reference::parse(&format!("{}/{}/mounts", repo.registry, repo.repository)).ok()
            }
            (None, _) => None,
        };
        Ok(CacheSettings {
            layers: self.cache,
            repo,
            dir: self.cache_dir.clone(),
            ttl_secs: (ttl / 1_000_000_000).max(0) as u64,
            push: !self.no_push_cache,
            mounts_repo,
        })
    }
}

/// `--dockerfile` as given, else relative to the context.
fn find_dockerfile(flag: &str, context: &Path) -> Result<PathBuf, FlagError> {
    let p = PathBuf::from(flag);
    if p.is_file() {
        return Ok(p);
    }
    let in_ctx = context.join(flag);
    if p.is_relative() && in_ctx.is_file() {
        return Ok(in_ctx);
    }
    Err(FlagError::new(
        "dockerfile",
        flag,
        format!("no such file (also looked for {})", in_ctx.display()),
    ))
}

/// `--custom-platform` (buildx's `--platform` list: `linux/amd64,linux/arm64`,
/// names normalized as containerd does, duplicates dropped), or this machine's.
/// Never empty.
pub fn platforms(flag: &Option<String>) -> Result<Vec<Platform>, FlagError> {
    let Some(list) = flag else {
        return Ok(vec![Platform::host()]);
    };
    let mut out: Vec<Platform> = Vec::new();
    for p in list.split(',').map(str::trim) {
        let parsed = Platform::parse(p).map(Platform::normalize).ok_or_else(|| {
            FlagError::new(
                "custom-platform",
                list,
                "expected os/arch[/variant], comma-separated",
            )
        })?;
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    Ok(out)
}

/// `--verbosity` levels (logrus' names, as Kaniko takes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Verbosity {
    Panic,
    Fatal,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Verbosity {
    /// The least level printed (Kiln has no trace, fatal or panic lines).
    pub fn level(self) -> kiln::log::Level {
        use kiln::log::Level;
        match self {
            Verbosity::Panic | Verbosity::Fatal | Verbosity::Error => Level::Error,
            Verbosity::Warn => Level::Warn,
            Verbosity::Info => Level::Info,
            Verbosity::Debug | Verbosity::Trace => Level::Debug,
        }
    }
}

/// `--progress`, BuildKit's modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Progress {
    /// The terminal view only when stderr is a terminal.
    Auto,
    /// Log lines only, never the terminal view.
    Plain,
    /// The terminal view whatever stderr is.
    Tty,
    /// JSON log lines (Kiln's, as --log-format=json; not BuildKit's raw solve status).
    Rawjson,
}

impl Cli {
    /// JSON log lines: `--log-format=json`, or `--progress=rawjson`.
    pub fn json_log(&self) -> bool {
        self.log_format == LogFormat::Json || self.progress == Progress::Rawjson
    }

    /// Whether the terminal view is drawn: never among JSON lines.
    pub fn terminal_view(&self) -> bool {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        !self.json_log()
            && match self.progress {
                Progress::Auto => terminal,
                Progress::Tty => true,
                Progress::Plain | Progress::Rawjson => false,
            }
    }
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    /// Kaniko's default: the level in color on a terminal, plain text elsewhere.
    Color,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every executor flag of Kaniko v1.9.1, v1.24 and the maintained fork
    /// (osscontainertools/kaniko), each with a value as a job would pass it.
    const KANIKO_FLAGS: &[&str] = &[
        "--verbosity=debug",
        "-v=info",
        "--log-format=color",
        "--log-timestamp=true",
        "--force",
        "--whitelist-var-run=false",
        "--dockerfile=Dockerfile",
        "-f=Dockerfile",
        "--context=dir:///ws",
        "-c=/ws",
        "--context-sub-path=sub",
        "--bucket=b",
        "-b=b",
        "--destination=r.example/a:1",
        "-d=r.example/a:1",
        "--snapshot-mode=redo",
        "--custom-platform=linux/amd64",
        "--build-arg=A=1",
        "--insecure",
        "--skip-tls-verify",
        "--insecure-pull",
        "--skip-tls-verify-pull",
        "--push-retry=2",
        "--push-ignore-immutable-tag-errors",
        "--image-fs-extract-retry=2",
        "--image-download-retry=2",
        "--kaniko-dir=/kaniko",
        "--tar-path=/t.tar",
        "--single-snapshot",
        "--reproducible",
        "--target=s",
        "--no-push",
        "--no-push-cache",
        "--cache-repo=r.example/cache",
        "--cache-dir=/cache",
        "--digest-file=/d",
        "--image-name-with-digest-file=/n",
        "--image-name-tag-with-digest-file=/t",
        "--oci-layout-path=/o",
        "--compression=gzip",
        "--compression-level=-1",
        "--cache=TRUE",
        "--compressed-caching=false",
        "--cleanup",
        "--cache-ttl=6h",
        "--insecure-registry=r.example",
        "--skip-tls-verify-registry=r.example",
        "--registry-certificate=r.example=/c.pem",
        "--registry-client-cert=r.example=/c,/k",
        "--registry-map=index.docker.io=m.example",
        "--registry-mirror=m.example",
        "--skip-default-registry-fallback",
        "--ignore-var-run=false",
        "--label=a=b",
        "--skip-unused-stages=1",
        "--use-new-run",
        "--git=branch=main",
        "--cache-copy-layers=t",
        "--cache-run-layers=f",
        "--ignore-path=/p",
        "--skip-push-permission-check",
        "--annotation=a=b",
        "--preserve-context",
        "--materialize",
        "--credential-helpers=ecr",
        "--snapshotMode=time",
        "--customPlatform=linux/amd64",
        "--tarPath=/t.tar",
        "--force-build-metadata",
        "--secret=id=a,src=/s",
        "--azure-container-registry-config=/a",
    ];

    #[test]
    fn help_is_grouped_with_an_example() {
        use clap::CommandFactory;
        let help = Cli::command().render_help().to_string();
        let at = |h: &str| {
            help.find(h)
                .unwrap_or_else(|| panic!("{h} missing: {help}"))
        };
        for h in [
            "Build:",
            "Push:",
            "Output:",
            "Registries:",
            "Cache:",
            "Logging:",
        ] {
            at(h);
        }
        assert!(at("--destination") > at("Push:") && at("--cache-dir") > at("Cache:"));
        assert!(at("Example:") > at("Logging:"));
        // Kaniko-only knobs stay out of the help.
        assert!(!help.contains("--snapshot-mode"));
    }

    #[test]
    fn platform_lists_take_buildx_syntax_and_one_keeps_kanikos_meaning() {
        let names = |flag: &str| {
            let cli = Cli::try_parse_from(["executor", flag]).expect("parses");
            platforms(&cli.custom_platform)
                .map(|v| v.iter().map(|p| p.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            names("--custom-platform=linux/amd64,linux/arm64").unwrap(),
            ["linux/amd64", "linux/arm64"]
        );
        assert_eq!(
            names("--platform=linux/aarch64, linux/arm/v7,linux/arm64/v8").unwrap(),
            ["linux/arm64", "linux/arm/v7"]
        );
        assert_eq!(
            names("--custom-platform=linux/s390x").unwrap(),
            ["linux/s390x"]
        );
        assert!(names("--custom-platform=linux/amd64,,linux/arm64").is_err());
        assert!(names("--platform=linux").is_err());
        assert_eq!(platforms(&None).unwrap(), [Platform::host()]);
    }

    #[test]
    fn cache_mounts_are_kept_beside_the_layers_in_a_fresh_pod() {
        let repo = |flags: &[&str]| {
            let mut args = vec!["executor", "--destination=r.example/app:1"];
            args.extend(flags);
            let cli = Cli::try_parse_from(args).expect("parses");
            let dest = [Reference::parse("r.example/app:1").unwrap()];
            cli.cache_settings(&dest)
                .unwrap()
                .mounts_repo
                .map(|r| format!("{}/{}", r.registry, r.repository))
        };
        assert_eq!(
            repo(&["--cache", "--cache-repo=r.example/c"]).as_deref(),
            Some("r.example/c/mounts")
        );
        assert_eq!(
            repo(&["--cache"]).as_deref(),
            Some("r.example/app/cache/mounts")
        );
        assert_eq!(repo(&["--cache", "--cache-dir=/c"]), None);
        assert_eq!(repo(&[]), None);
        assert_eq!(
            repo(&["--cache-dir=/c", "--cache-mount-repo=r.example/m"]).as_deref(),
            Some("r.example/m")
        );
    }

    #[test]
    fn every_kaniko_flag_is_accepted() {
        for flag in KANIKO_FLAGS {
            let parsed = Cli::try_parse_from(["executor", flag]);
            assert!(
                parsed.is_ok(),
                "{flag}: {}",
                parsed.err().map(|e| e.to_string()).unwrap_or_default()
            );
        }
        let c =
            Cli::try_parse_from(["executor", "--cache=1", "--no-push=F", "--tarPath=/x"]).unwrap();
        assert!(c.cache && !c.no_push);
        assert_eq!(c.tar_path, Some(PathBuf::from("/x")));
        assert!(Cli::try_parse_from(["executor", "--cache=maybe"]).is_err());
        let c = Cli::try_parse_from(["executor", "--snapshotMode=redo", "--force"]).unwrap();
        assert_eq!(c.kaniko.notices().len(), 2);
        // A compression Kiln does not write stops the build, named.
        let c = Cli::try_parse_from(["executor", "--compression=lz4"]).unwrap();
        let e = c.validate().unwrap_err();
        assert_eq!(e.flag, "compression");
        // Mirrors and maps fold into one list per registry, Docker Hub's named
        // as references name it.
        let c = Cli::try_parse_from([
            "executor",
            "--registry-map=docker.io=a.example;b.example/p",
            "--registry-mirror=c.example",
            "--registry-map=r.example=d.example",
        ])
        .unwrap();
        assert_eq!(
            c.registries.mirrors().unwrap(),
            [
                (
                    "index.docker.io".to_string(),
                    vec!["a.example".into(), "b.example/p".into(), "c.example".into()]
                ),
                ("r.example".to_string(), vec!["d.example".to_string()]),
            ]
        );
    }

    #[test]
    fn a_destination_with_a_digest_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        let ctx = d.path().display().to_string();
        let dest = format!("r.example/a@sha256:{}", "0".repeat(64));
        let c = Cli::try_parse_from(["executor", "--context", &ctx, "-d", &dest]).unwrap();
        assert_eq!(c.validate().unwrap_err().flag, "destination");
    }

    #[test]
    fn secrets_as_buildx_reads_them() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("tok");
        std::fs::write(&f, b"file-value").unwrap();
        let got = secrets(&[
            format!("id=a,src={}", f.display()),
            "id=b,env=PATH".into(),
            "type=env,id=c,src=PATH".to_string(),
        ])
        .unwrap();
        assert_eq!(got["a"], Secret::new(b"file-value".to_vec()));
        let path = std::env::var("PATH").unwrap().into_bytes();
        assert_eq!(got["b"], Secret::new(path.clone()));
        assert_eq!(got["c"], Secret::new(path));
        assert_eq!(
            format!("{:?}", got["a"]),
            "Secret(10 bytes)",
            "Debug hides values"
        );
        for bad in ["src=/x", "id=a,color=red", "id=a,src=/nonexistent/x"] {
            let e = secrets(&[bad.to_string()]).unwrap_err();
            assert_eq!(e.flag, "secret", "{bad}");
        }
    }

    #[test]
    fn kaniko_style_flags() {
        let c = Cli::try_parse_from([
            "executor",
            "--dockerfile=D",
            "-c",
            "dir:///ws",
            "--destination",
            "a/b:c",
            "-d",
            "x/y",
            "--no-push",
            "--insecure=true",
            "--build-arg",
            "A=1",
        ])
        .unwrap();
        assert_eq!(c.destinations, ["a/b:c", "x/y"]);
        assert!(c.no_push && c.insecure);
        assert_eq!(
            Source::parse(&c.context).unwrap(),
            Source::Dir(PathBuf::from("/ws"))
        );
        assert!(Cli::try_parse_from(["executor", "--bogus"]).is_err());
        assert!(Source::parse("ftp://x").is_err());
        assert!(key_values("label", &["=x".into()], false).is_err());
        // BuildKit's --progress names.
        let c = Cli::try_parse_from(["executor", "--progress=plain"]).unwrap();
        assert!(!c.terminal_view() && !c.json_log());
        let c = Cli::try_parse_from(["executor", "--progress=tty"]).unwrap();
        assert!(c.terminal_view());
        let c = Cli::try_parse_from(["executor", "--progress=tty", "--log-format=json"]).unwrap();
        assert!(!c.terminal_view(), "never among JSON lines");
        let c = Cli::try_parse_from(["executor", "--progress=rawjson"]).unwrap();
        assert!(c.json_log() && !c.terminal_view());
        assert!(Cli::try_parse_from(["executor", "--progress=fancy"]).is_err());
        // Kaniko's default log format and every logrus level are taken.
        let c = Cli::try_parse_from(["executor", "--log-format=color", "-v", "trace"]).unwrap();
        assert_eq!(c.log_format, LogFormat::Color);
        assert_eq!(c.verbosity.level(), kiln::log::Level::Debug);
        assert!(Cli::try_parse_from(["executor", "--verbosity=loud"]).is_err());
    }

    #[test]
    fn validation_names_the_flag_and_value() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        let ctx = dir.path().to_str().unwrap().to_string();
        let err = |extra: &[&str]| {
            let mut args = vec!["executor", "-c", &ctx];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(&[]),
            "--destination: none given; pass one or more, or --no-push"
        );
        assert!(err(&["-d", "Not A/Ref"]).starts_with("--destination Not A/Ref: "));
        assert_eq!(
            err(&["--no-push", "--cache-ttl", "soon"]),
            "--cache-ttl soon: expected a duration like 336h"
        );
        assert!(err(&["--no-push", "-f", "Nope"]).starts_with("--dockerfile Nope: no such file"));
        let o = Cli::try_parse_from(["executor", "-c", &ctx, "-d", "reg:5000/a/b:t", "--cache"])
            .unwrap()
            .validate()
            .unwrap();
        // The cache repository defaults to <destination>/cache.
        let repo = o.cache.repo.unwrap();
        assert_eq!(repo.to_string(), "reg:5000/a/b/cache:latest");
        assert!(o.check_push && o.outputs.push);
    }
}
