//! What one build (or the platforms' builds of one run) shares: the clients,
//! the scratch and cache directories, the options, and how RUN is isolated.

use super::{cpu, live, mounts, shared};
use crate::cache::Cache;
use crate::image::spec::Platform;
use crate::image::ManifestFormat;
use crate::registry::Registry;
use crate::sandbox::Isolation;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

/// Shared state of one build: clients, scratch space, options.
pub struct Session {
    pub registry: std::sync::Arc<Registry>,
    pub cache: Cache,
    /// Scratch space for this build's temporary files.
    pub blobs_dir: PathBuf,
    /// Layer bytes: each blob downloaded once, verified before use.
    pub store: crate::source::BlobStore,
    /// Where RUN's helpers record the processes a signal handler or the next
    /// build must kill ([`crate::procs::dir`] of the scratch dir).
    pub(crate) procs: Option<PathBuf>,
    /// Unpacked base trees kept between builds (`--cache-dir/trees`).
    pub(crate) trees: Option<PathBuf>,
    /// Set when RUN writes to stage roots themselves ([`Isolation::OwnRoot`]):
    /// a root cloned from a kept tree shares its files' inodes, so no root may
    /// be cloned from or kept as a tree from then on.
    pub(crate) trees_off: std::sync::atomic::AtomicBool,
    /// `RUN --mount=type=cache` directories: `--cache-dir/mounts`, kept between
    /// builds, else in scratch for this build only.
    pub(crate) cache_mounts: PathBuf,
    pub compression: crate::layer::writer::Compression,
    pub created: String,
    pub now: u64,
    /// The steps under way (timers on the terminal view) and every finished
    /// step's time (for the summary).
    pub steps: std::sync::Arc<crate::report::Steps>,
    /// Unpacking layers into stage roots.
    pub unpack: crate::report::Phase,
    /// How RUN can be isolated here, probed at the first RUN (once for all
    /// the platforms of a run).
    pub(super) sandbox: std::sync::OnceLock<Result<Isolation, String>>,
    /// The executor's own root, when RUN runs in place: a stage holds it from
    /// its first RUN to its end (stages never wait for each other mid-way, so
    /// this cannot deadlock), so concurrent stages do not clear it by turns.
    pub(super) live: tokio::sync::Mutex<Option<live::LiveRoot>>,
    /// Steps the platforms of a multi-platform build share.
    pub(super) shared: shared::SharedSteps,
    /// Each layer's entries, read once per build: two platforms' copies of a
    /// `--platform=$BUILDPLATFORM` stage (or two stages on one base) index
    /// the same base without inflating it twice.
    pub(super) entries: std::sync::Mutex<
        std::collections::HashMap<crate::image::Digest, std::sync::Arc<LayerEntries>>,
    >,
}

/// A layer's entries, made by whichever stage reads them first.
pub(super) type LayerEntries =
    tokio::sync::OnceCell<std::sync::Arc<Vec<crate::layer::reader::Entry>>>;

impl Session {
    /// The cell a layer's entries are read into once per build.
    pub(super) fn entries_of(&self, digest: &crate::image::Digest) -> std::sync::Arc<LayerEntries> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(digest.clone())
            .or_default()
            .clone()
    }

    /// A session whose blobs live in the cache's `--cache-dir` when it has one, else in `scratch`,
    /// with `now` as the time of everything it creates.
    pub fn new(
        registry: Registry,
        cache: Cache,
        scratch: PathBuf,
        compression: crate::layer::writer::Compression,
        now: u64,
    ) -> Session {
        let registry = std::sync::Arc::new(registry);
        let cache_dir = cache.settings.dir.clone();
        Session {
            procs: None,
            trees: cache_dir.as_ref().map(|d| d.join("trees")),
            trees_off: std::sync::atomic::AtomicBool::new(false),
            cache_mounts: cache_dir.as_ref().unwrap_or(&scratch).join("mounts"),
            store: crate::source::BlobStore::new(registry.clone(), cache_dir, scratch.clone()),
            registry,
            cache,
            blobs_dir: scratch,
            compression,
            created: crate::times::rfc3339(now),
            now,
            steps: Default::default(),
            unpack: crate::report::Phase::default(),
            sandbox: std::sync::OnceLock::new(),
            live: tokio::sync::Mutex::new(None),
            shared: shared::SharedSteps::default(),
            entries: Default::default(),
        }
    }

    /// A session for several platforms' builds at once: steps with equal keys
    /// are made once ([`shared`]), and without `--cache-dir` a base unpacked
    /// for one platform's stage is kept in `scratch` for the next stage on the
    /// same layers (a `--platform=$BUILDPLATFORM` stage's copy for each target
    /// then clones it instead of unpacking it again).
    pub fn shared_between_platforms(mut self, scratch: &std::path::Path) -> Session {
        self.shared = shared::SharedSteps::new(true);
        if self.trees.is_none() {
            self.trees = Some(scratch.join("trees"));
        }
        self
    }

    /// How RUN can be isolated here, probed once per session (in `scratch`).
    pub(super) fn sandbox_probed(&self, scratch: &std::path::Path) -> &Result<Isolation, String> {
        self.sandbox.get_or_init(|| {
            let probed = cpu(|| crate::sandbox::probe(scratch));
            if let Ok(Isolation::OwnRoot | Isolation::Traced) = probed {
                self.trees_off.store(true, Ordering::SeqCst);
            }
            probed.map_err(|e| match e {
                crate::sandbox::SandboxError::Unavailable { cause } => cause,
                other => other.to_string(),
            })
        })
    }

    /// Records RUN's processes in `dir` (the scratch dir's `procs`): the
    /// blobs may live elsewhere than the scratch dir the cleanup looks in.
    pub fn with_procs(mut self, dir: PathBuf) -> Session {
        self.procs = Some(dir);
        self
    }
}

/// What a build needs to know, validated once by the CLI.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub build_args: Vec<(String, String)>,
    pub target: Option<String>,
    pub labels: Vec<(String, String)>,
    pub platform: Platform,
    /// `--custom-platform` was given: the result is labelled with it, as BuildKit
    /// labels an explicit target platform whatever a single-platform base says.
    pub explicit_platform: bool,
    pub reproducible: bool,
    pub scratch_dir: PathBuf,
    /// `--secret`s by id, read when the build started.
    pub secrets: BTreeMap<String, mounts::Secret>,
    /// `--ignore-path`s, root-relative: left out of RUN layers.
    pub ignore_paths: Vec<String>,
    /// `--single-snapshot`: the target stage's own layers merged into one.
    pub single_snapshot: bool,
    /// `--image-format` (Kaniko's fork): the result's manifest and layer media
    /// types, whatever the base's; `None` keeps the base's.
    pub image_format: Option<ManifestFormat>,
    /// One of several platforms built in this run: steps are logged with the
    /// platform and stage directories are the platform's own.
    pub multi_platform: bool,
}
