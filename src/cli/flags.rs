//! The flags as clap defines them, with Kaniko's names and spellings; help is
//! grouped by heading. Values are checked in `options`.

use super::KanikoOnly;
use clap::{ArgAction, Parser};
use std::path::PathBuf;

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
    /// Retries for registry requests after 5xx, 429, resets and timeouts, and for a
    /// manifest put that met a blob link another client was rewriting (distribution's 400).
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
