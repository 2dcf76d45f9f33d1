//! Command-line flags with Kaniko's names, validated once into options.

use clap::{ArgAction, Parser};
use kiln::cache::CacheSettings;
use kiln::dispatch::mounts::Secret;
use kiln::image::spec::Platform;
use kiln::image::Reference;
use kiln::registry::RegistryOptions;
use std::path::{Path, PathBuf};

/// Builds a container image from a Dockerfile and pushes it, without a Docker daemon.
#[derive(Debug, Parser)]
#[command(name = "executor", version, about, args_override_self = true)]
pub struct Cli {
    /// Path to the Dockerfile (relative paths are tried against the context too).
    #[arg(short = 'f', long, default_value = "Dockerfile")]
    pub dockerfile: String,
    /// Build context: a directory path or dir://path.
    #[arg(short = 'c', long, default_value = ".")]
    pub context: String,
    /// Where to push the image (repeatable): registry/repository:tag.
    #[arg(short = 'd', long = "destination", action = ArgAction::Append)]
    pub destinations: Vec<String>,
    /// Build argument KEY=VALUE (repeatable); KEY alone takes the value from the environment.
    #[arg(long = "build-arg", action = ArgAction::Append)]
    pub build_args: Vec<String>,
    /// Secret for `RUN --mount=type=secret` (repeatable, buildx's syntax):
    /// id=NAME,src=PATH or id=NAME,env=VARIABLE.
    #[arg(long = "secret", action = ArgAction::Append)]
    pub secrets: Vec<String>,
    /// Stage to build (default: the last one).
    #[arg(long)]
    pub target: Option<String>,
    /// Build without pushing.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub no_push: bool,
    /// Also write the image as a docker-archive tarball (docker load).
    #[arg(long)]
    pub tar_path: Option<PathBuf>,
    /// Also write the image into an OCI layout directory.
    #[arg(long)]
    pub oci_layout_path: Option<PathBuf>,
    /// Write the image digest to this file.
    #[arg(long)]
    pub digest_file: Option<PathBuf>,
    /// Write `repository@digest` of every destination to this file.
    #[arg(long)]
    pub image_name_with_digest_file: Option<PathBuf>,
    /// Label KEY=VALUE added to the image (repeatable).
    #[arg(long = "label", action = ArgAction::Append)]
    pub labels: Vec<String>,
    /// Push to plain-HTTP registries.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub insecure: bool,
    /// Pull from plain-HTTP registries.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub insecure_pull: bool,
    /// Registry HOST[:PORT] reached over plain HTTP for pull and push (repeatable).
    #[arg(long = "insecure-registry", action = ArgAction::Append)]
    pub insecure_registries: Vec<String>,
    /// Do not verify TLS certificates when pushing.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub skip_tls_verify: bool,
    /// Do not verify TLS certificates when pulling.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub skip_tls_verify_pull: bool,
    /// Registry HOST[:PORT] whose TLS certificate is not verified (repeatable).
    #[arg(long = "skip-tls-verify-registry", action = ArgAction::Append)]
    pub skip_tls_verify_registries: Vec<String>,
    /// Do not check push access to the destinations before building.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub skip_push_permission_check: bool,
    /// Platform to build for, os/arch[/variant] (default: this machine's).
    #[arg(long)]
    pub custom_platform: Option<String>,
    /// Zero timestamps in layers and config, for reproducible digests.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub reproducible: bool,
    /// Log level, as Kaniko names them.
    #[arg(short = 'v', long, value_enum, default_value_t = Verbosity::Info)]
    pub verbosity: Verbosity,
    /// Log lines as text (Kaniko's `color` is taken as text) or JSON, one object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Retries for registry requests after 5xx, 429, resets and timeouts.
    #[arg(long, default_value_t = 3)]
    pub push_retry: u32,
    /// gzip level for new layers (0-9).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub compression_level: u32,
    /// Directory for the scratch root (default: the system temp dir).
    #[arg(long = "kaniko-dir", alias = "scratch-dir", env = "KANIKO_DIR")]
    pub kaniko_dir: Option<PathBuf>,
    /// Reuse step layers from the cache repository and store new ones there.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub cache: bool,
    /// Repository for cached layers (default: <first destination's repository>/cache).
    #[arg(long)]
    pub cache_repo: Option<String>,
    /// Local directory for base layers and file indexes (a PVC in Kubernetes); see `executor warmer`.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// How long cached layers stay valid (Go duration).
    #[arg(long, default_value = "336h")]
    pub cache_ttl: String,
    /// Accepted for Kaniko compatibility: Kiln caches COPY layers by default.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub cache_copy_layers: bool,
    /// Read the cache but do not write new entries to it.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub no_push_cache: bool,
    /// Accepted for Kaniko compatibility: the scratch root is always removed.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub cleanup: bool,
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
    /// The directory to fill.
    #[arg(long, required = true)]
    pub cache_dir: PathBuf,
    /// Platform to warm for, os/arch[/variant].
    #[arg(long)]
    pub custom_platform: Option<String>,
    /// Registry HOST[:PORT] reached over plain HTTP (repeatable).
    #[arg(long = "insecure-registry", action = ArgAction::Append)]
    pub insecure_registries: Vec<String>,
    /// Pull from plain-HTTP registries.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub insecure_pull: bool,
    /// Do not verify TLS certificates when pulling.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub skip_tls_verify_pull: bool,
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

/// `dir://path` or a plain path.
pub fn context_dir(s: &str) -> Result<PathBuf, FlagError> {
    if let Some(p) = s.strip_prefix("dir://") {
        return Ok(PathBuf::from(p));
    }
    if let Some((scheme, _)) = s.split_once("://") {
        return Err(FlagError::new(
            "context",
            s,
            format!("{scheme}:// contexts are not supported yet; use a directory or dir://"),
        ));
    }
    Ok(PathBuf::from(s))
}

/// Everything a build run needs, checked once: paths exist, names parse, values
/// are in range (ripgrep's low-level flags → high-level options).
#[derive(Debug)]
pub struct Options {
    pub context: PathBuf,
    pub dockerfile: PathBuf,
    pub destinations: Vec<Reference>,
    pub platform: Platform,
    /// `--custom-platform` was given (the image is then labelled with it).
    pub explicit_platform: bool,
    pub build_args: Vec<(String, String)>,
    pub secrets: std::collections::BTreeMap<String, Secret>,
    pub labels: Vec<(String, String)>,
    pub target: Option<String>,
    pub reproducible: bool,
    pub compression_level: u32,
    pub cache: CacheSettings,
    pub registry: RegistryOptions,
    /// Check push access to every destination before building.
    pub check_push: bool,
    /// Where the scratch root is made.
    pub scratch_parent: PathBuf,
    pub outputs: Outputs,
}

/// What the run leaves behind besides pushed images.
#[derive(Debug)]
pub struct Outputs {
    pub push: bool,
    pub tar_path: Option<PathBuf>,
    pub oci_layout_path: Option<PathBuf>,
    pub digest_file: Option<PathBuf>,
    pub image_name_with_digest_file: Option<PathBuf>,
    /// A progress line on a terminal (never with JSON logs).
    pub progress: bool,
}

impl Cli {
    pub fn validate(self) -> Result<Options, FlagError> {
        let context = context_dir(&self.context)?;
        if !context.is_dir() {
            return Err(FlagError::new(
                "context",
                context.display().to_string(),
                "not a directory",
            ));
        }
        let dockerfile = find_dockerfile(&self.dockerfile, &context)?;
        let destinations = self
            .destinations
            .iter()
            .map(|d| {
                Reference::parse(d).map_err(|e| FlagError::new("destination", d, e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if destinations.is_empty() && !self.no_push {
            return Err(FlagError::new(
                "destination",
                "",
                "none given; pass one or more, or --no-push",
            ));
        }
        let platform = platform(&self.custom_platform)?;
        let cache = self.cache_settings(&destinations)?;
        let json_log = self.log_format == LogFormat::Json;
        Ok(Options {
            build_args: key_values("build-arg", &self.build_args, true)?,
            secrets: secrets(&self.secrets)?,
            labels: key_values("label", &self.labels, false)?,
            context,
            dockerfile,
            destinations,
            platform,
            explicit_platform: self.custom_platform.is_some(),
            target: self.target,
            reproducible: self.reproducible,
            compression_level: self.compression_level,
            cache,
            registry: RegistryOptions {
                insecure_push: self.insecure,
                insecure_pull: self.insecure_pull,
                insecure_registries: self.insecure_registries,
                skip_tls_verify_push: self.skip_tls_verify,
                skip_tls_verify_pull: self.skip_tls_verify_pull,
                skip_tls_verify_registries: self.skip_tls_verify_registries,
                retries: self.push_retry,
            },
            check_push: !self.no_push && !self.skip_push_permission_check,
            scratch_parent: self.kaniko_dir.unwrap_or_else(std::env::temp_dir),
            outputs: Outputs {
                push: !self.no_push,
                tar_path: self.tar_path,
                oci_layout_path: self.oci_layout_path,
                digest_file: self.digest_file,
                image_name_with_digest_file: self.image_name_with_digest_file,
                progress: !json_log && std::io::IsTerminal::is_terminal(&std::io::stderr()),
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
        Ok(CacheSettings {
            layers: self.cache,
            repo,
            dir: self.cache_dir.clone(),
            ttl_secs: (ttl / 1_000_000_000).max(0) as u64,
            push: !self.no_push_cache,
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

/// `--custom-platform`, or this machine's.
pub fn platform(flag: &Option<String>) -> Result<Platform, FlagError> {
    match flag {
        Some(p) => Platform::parse(p)
            .ok_or_else(|| FlagError::new("custom-platform", p, "expected os/arch[/variant]")),
        None => Ok(Platform::host()),
    }
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
    /// Whether debug lines are printed.
    pub fn debug(self) -> bool {
        matches!(self, Verbosity::Debug | Verbosity::Trace)
    }
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    /// Kaniko's default; Kiln writes plain text.
    Color,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(context_dir(&c.context).unwrap(), PathBuf::from("/ws"));
        assert!(Cli::try_parse_from(["executor", "--bogus"]).is_err());
        assert!(context_dir("git://x").is_err());
        assert!(key_values("label", &["=x".into()], false).is_err());
        // Kaniko's default log format and every logrus level are taken.
        let c = Cli::try_parse_from(["executor", "--log-format=color", "-v", "trace"]).unwrap();
        assert_eq!(c.log_format, LogFormat::Color);
        assert!(c.verbosity.debug());
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
