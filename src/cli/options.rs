//! The flags validated once into [`Options`] (paths found, references,
//! durations and platforms parsed, cache and registry settings made, secrets
//! read); errors name the flag and the value. The options build the library's
//! own values (`build_options`).

use super::{Cli, ImageFormat, RegistryFlags};
use kiln::cache::CacheSettings;
use kiln::context::source::{GitOptions, Source, SourceError};
use kiln::dispatch::mounts::Secret;
use kiln::image::spec::Platform;
use kiln::image::Reference;
use kiln::layer::writer::Compression;
use kiln::registry::RegistryOptions;
use std::path::{Path, PathBuf};

impl RegistryFlags {
    /// Registry → mirrors, Docker Hub's under `index.docker.io` as references name it.
    pub(super) fn mirrors(&self) -> Result<Vec<(String, Vec<String>)>, FlagError> {
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
    pub image_format: Option<kiln::image::ManifestFormat>,
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

impl Options {
    /// What the build reads of these options; its own files go under `scratch_dir`.
    pub fn build_options(&self, scratch_dir: &Path) -> kiln::dispatch::BuildOptions {
        kiln::dispatch::BuildOptions {
            build_args: self.build_args.clone(),
            target: self.target.clone(),
            labels: self.labels.clone(),
            platform: self.platform.clone(),
            explicit_platform: self.explicit_platform,
            reproducible: self.reproducible,
            scratch_dir: scratch_dir.to_path_buf(),
            secrets: self.secrets.clone(),
            ignore_paths: self.ignore_paths.clone(),
            single_snapshot: self.single_snapshot,
            image_format: self.image_format,
            multi_platform: false,
        }
    }
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
                ImageFormat::Docker => kiln::image::ManifestFormat::Docker,
                ImageFormat::Oci => kiln::image::ManifestFormat::Oci,
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
    pub(super) fn cache_settings(
        &self,
        destinations: &[Reference],
    ) -> Result<CacheSettings, FlagError> {
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
