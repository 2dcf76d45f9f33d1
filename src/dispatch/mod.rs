//! Runs a Dockerfile: a scheduler that starts each stage once the stages it
//! reads are built and hands each step to its instruction group's handler
//! (`handlers`), whose effect either changes the config or adds a layer.

pub(crate) mod chmod;
pub(crate) mod copy;
mod effect;
mod handlers;
mod history;
mod live;
pub mod mounts;
pub mod multi;
mod platform;
mod run;
mod shared;
mod squash;
pub mod stage;
pub(crate) mod users;

use crate::cache::Cache;
use crate::context::{BuildContext, ContextError};
use crate::dockerfile::checks::{self, CheckConfig};
use crate::dockerfile::shell::{self, Env, ShellError};
use crate::dockerfile::{Dockerfile, InstructionError, Location, Stage};
use crate::image::spec::{ImageConfig, Platform, DEFAULT_PATH};
use crate::image::{Digest, Image, ManifestFormat, Reference};
use crate::layer::reader::ReadError;
use crate::layer::writer::WriteError;
use crate::registry::{Registry, RegistryError};
use crate::rootfs::apply::ApplyError;
use crate::rootfs::ResolveError;
use crate::sandbox::Isolation;
use crate::source::remote::{self, RemoteError, RemoteImage};
use crate::source::StoreError;
use stage::StageFs;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Dockerfile(#[from] InstructionError),
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    #[error(transparent)]
    Checks(#[from] crate::dockerfile::checks::CheckError),
    /// Any error of one instruction, with its Dockerfile line; the cause stays
    /// reachable through `source()`.
    #[error("Dockerfile:{line}: {}: {text}", crate::log::one_line(source.as_ref()))]
    At {
        line: usize,
        text: String,
        source: Box<BuildError>,
    },
    // Boxed: registry errors carry several names and would bloat every Result.
    #[error(transparent)]
    Registry(Box<RegistryError>),
    #[error(transparent)]
    Remote(Box<RemoteError>),
    #[error(transparent)]
    Store(Box<StoreError>),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Shell(#[from] ShellError),
    #[error("{path:?}: not found in the {label}")]
    SourceNotFound { path: String, label: String },
    #[error("{path:?}: excluded by .dockerignore from the {label}")]
    SourceExcluded { path: String, label: String },
    #[error("/{path} exists in the image and is not a directory")]
    NotADirectory { path: String },
    #[error(
        "stage {0} is defined after this COPY --from; a stage can only copy from earlier stages"
    )]
    LaterStage(String),
    #[error("stage {0} was not built")]
    StageNotBuilt(String),
    #[error("--from={name} is neither a stage nor an image")]
    FromNeither {
        name: String,
        source: crate::image::reference::ReferenceError,
    },
    #[error(transparent)]
    Reference(#[from] crate::image::reference::ReferenceError),
    #[error("invalid platform {0:?}")]
    Platform(String),
    #[error(
        "invalid --chmod={0}: expected an octal mode up to 7777 or a symbolic one like u+x,go=r"
    )]
    Chmod(String),
    #[error("invalid port specification: {0:?}")]
    Port(String),
    #[error("ENV names can not be blank")]
    BlankEnvName,
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    #[error("process \"{command}\" did not complete successfully: {cause}")]
    RunFailed { command: String, cause: String },
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error(transparent)]
    Emulation(#[from] crate::emulation::EmulationError),
    #[error(transparent)]
    Upper(#[from] crate::sandbox::upper::UpperError),
    #[error("{0}")]
    Owner(String),
    #[error("the stage's file index or root was not made (a bug in Kiln)")]
    NotReady,
    #[error("reading layer {digest}")]
    LayerTask {
        digest: Digest,
        source: tokio::task::JoinError,
    },
    #[error("{op}: {source}")]
    Io { op: String, source: std::io::Error },
    #[error(transparent)]
    Archive(#[from] crate::rootfs::archive::ArchiveError),
    #[error(transparent)]
    Fetch(#[from] crate::registry::files::FileError),
    #[error("{0}")]
    Checksum(String),
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
    #[error(transparent)]
    Mount(#[from] crate::dockerfile::mount::MountError),
    #[error("secret {0}: not found")]
    SecretNotFound(String),
    #[error("RUN --mount target {0} is a path this container keeps (the executor's files, a volume or a mount of its own); in Kiln's image without namespaces a mount cannot go there")]
    MountKept(String),
}

impl BuildError {
    pub fn io(op: impl Into<String>, source: std::io::Error) -> BuildError {
        BuildError::Io {
            op: op.into(),
            source,
        }
    }

    /// Attaches the Dockerfile line to errors that do not carry one.
    fn at(self, loc: &Location) -> BuildError {
        match self {
            e @ (BuildError::Dockerfile(_) | BuildError::Plan(_) | BuildError::At { .. }) => e,
            other => BuildError::At {
                line: loc.line,
                text: loc.text.trim().to_string(),
                source: Box::new(other),
            },
        }
    }
}

impl From<RegistryError> for BuildError {
    fn from(e: RegistryError) -> Self {
        BuildError::Registry(Box::new(e))
    }
}

impl Session {
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
    fn sandbox_probed(&self, scratch: &std::path::Path) -> &Result<Isolation, String> {
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

/// Runs CPU-bound work (tar, gzip, unpacking, hashing a context) so the runtime
/// moves its other tasks (downloads, uploads, signals) to other workers meanwhile.
pub(crate) fn cpu<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl From<StoreError> for BuildError {
    fn from(e: StoreError) -> Self {
        BuildError::Store(Box::new(e))
    }
}

impl From<RemoteError> for BuildError {
    fn from(e: RemoteError) -> Self {
        BuildError::Remote(Box::new(e))
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
    sandbox: std::sync::OnceLock<Result<Isolation, String>>,
    /// The executor's own root, when RUN runs in place: a stage holds it from
    /// its first RUN to its end (stages never wait for each other mid-way, so
    /// this cannot deadlock), so concurrent stages do not clear it by turns.
    live: tokio::sync::Mutex<Option<live::LiveRoot>>,
    /// Steps the platforms of a multi-platform build share.
    shared: shared::SharedSteps,
}

struct StageState {
    /// Cache key of the state so far (base digest, then one link per step).
    key: String,
    /// When the newest layer this build added was made (a cached one keeps its
    /// time), so an all-hit rebuild reproduces the same config and digest.
    newest: Option<u64>,
    /// History entries before this index came from the base image.
    history_base: usize,
    /// Layers before this index are the base image's.
    layer_base: usize,
    config: ImageConfig,
    fs: StageFs,
    /// ARGs declared in the stage with a value.
    args: Env,
    /// Every ARG the stage declared, in order (RUN's history names those in scope).
    arg_names: Vec<String>,
    cmd_set: bool,
    format: ManifestFormat,
    base: Option<Reference>,
    /// The step this stage is making for every platform of the build, held
    /// until its layer is recorded ([`shared`]).
    claim: Option<tokio::sync::OwnedMutexGuard<shared::Made>>,
}

impl StageState {
    /// Variables visible to expansion. BuildKit's rule is "last assignment wins": an
    /// ARG declared after an ENV of the same name shadows it, and a later ENV removes
    /// the ARG from `args` (see `run_step`).
    fn env(&self) -> Env {
        let mut e: Env = self.config.config.env_pairs().into_iter().collect();
        e.extend(self.args.clone());
        e
    }
}

/// Builds the target stage of `df` and returns its image. A stage starts as soon
/// as the stages it reads are built, so independent stages run concurrently (as
/// BuildKit runs them).
pub async fn build(
    session: &Session,
    df: &Dockerfile,
    ctx: &BuildContext,
    opts: &BuildOptions,
) -> Result<Image, BuildError> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let overrides: BTreeMap<String, String> = opts.build_args.iter().cloned().collect();
    let check_config = CheckConfig::of(df, &overrides)?;
    let mut plan = crate::plan::plan(df, &overrides, opts.target.as_deref(), &opts.platform)?;
    // A RUN no emulator can run fails now, before anything is fetched or pushed.
    platform::check_plan(df, &plan, opts, session.cache.settings.layers)?;
    let mut bases = fetch_bases(session, df, &mut plan, opts).await?;
    run_checks(df, &plan, &bases, opts, &check_config)?;
    let b = Build {
        session,
        df,
        ctx,
        opts,
        overrides: &overrides,
        global: &plan.global,
        global_declared: &plan.declared,
        predefined: &plan.predefined,
        used_args: std::sync::Mutex::new(plan.used.iter().cloned().collect()),
        steps_total: plan
            .stages
            .iter()
            .map(|&i| df.stages[i].steps.len() + 1)
            .sum(),
        steps_started: AtomicUsize::new(0),
    };
    // Where RUN cannot be isolated, say so before anything is fetched, unless a
    // cache may still hold every RUN's layer.
    if let (Some(at), false) = (&plan.first_run, session.cache.settings.layers) {
        b.sandbox_ready().map_err(|e| e.at(at))?;
    } else if plan.first_run.is_some() && session.trees.is_some() {
        // Whether roots may share kept trees must be known before the first
        // root is made; a refusal still waits for the first uncached RUN.
        let _ = b.sandbox_ready();
    }
    let mut built: HashMap<usize, Arc<StageState>> = HashMap::new();
    let mut waiting = plan.stages.clone();
    let mut running = FuturesUnordered::new();
    loop {
        let (ready, rest): (Vec<usize>, Vec<usize>) = waiting
            .into_iter()
            .partition(|&i| plan.deps[i].iter().all(|d| built.contains_key(d)));
        waiting = rest;
        for i in ready {
            // Each stage gets the finished stages it reads; nothing else is shared.
            let inputs: HashMap<usize, Arc<StageState>> = plan.deps[i]
                .iter()
                .filter_map(|d| built.get(d).map(|s| (*d, s.clone())))
                .collect();
            let b = &b;
            let base = bases.remove(&i);
            running.push(async move { (i, build_stage(b, i, &inputs, base).await) });
        }
        match running.next().await {
            Some((i, result)) => {
                built.insert(i, Arc::new(result?));
            }
            None => break,
        }
    }
    let used = b.used_args.lock().map(|u| u.clone()).unwrap_or_default();
    for k in overrides.keys() {
        if !used.contains(k) && !run::is_proxy_arg(k) && k != checks::CHECK_BUILD_ARG {
            crate::log_warn!("build argument {k} was not consumed by any ARG");
        }
    }
    let st = built
        .get(&plan.target)
        .ok_or_else(|| BuildError::StageNotBuilt(format!("{}", plan.target)))?;
    let mut config = st.config.clone();
    for (k, v) in &opts.labels {
        config
            .config
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(k.clone(), v.clone());
    }
    let mut own_history = config.history.split_off(st.history_base);
    let mut layers = st.fs.layers.clone();
    let mut own_layers = layers.split_off(st.layer_base);
    if opts.single_snapshot && own_layers.len() > 1 {
        let dir = opts
            .scratch_dir
            .join(format!("single-snapshot{}", platform::dir_suffix(opts)));
        own_layers = vec![squash::squash(session, &own_layers, &dir, st.format).await?];
        // One history entry keeps the layer: the stage's last that had one.
        let mut with_layer: Vec<_> = own_history.iter_mut().filter(|h| !h.empty_layer).collect();
        if let Some(last) = with_layer.pop() {
            for h in with_layer {
                h.empty_layer = true;
            }
            last.empty_layer = false;
        }
    }
    let mut image = Image::on_base(config, layers, st.format);
    let mut own_layers = own_layers.into_iter();
    for h in own_history {
        let layer = if h.empty_layer {
            None
        } else {
            own_layers.next()
        };
        image.append(layer, h);
    }
    debug_assert!(
        own_layers.next().is_none(),
        "a layer without its history entry"
    );
    let zstd = matches!(
        session.compression,
        crate::layer::writer::Compression::Zstd(_)
    );
    // zstd layers exist only in OCI's media types: the whole image goes OCI.
    // The fork's --image-format converts the base's media types too (its
    // applyImageFormat); the CLI has turned zstd off for Docker's.
    let format = match (opts.image_format, zstd) {
        (Some(f), _) => f,
        (None, true) => ManifestFormat::Oci,
        (None, false) => st.format,
    };
    let created = match st.newest {
        Some(t) if !opts.reproducible => crate::times::rfc3339(t),
        _ => session.created.clone(),
    };
    Ok(image.finish(format, &created))
}

/// BuildKit's build checks, once the bases are resolved and before any step
/// runs (where BuildKit runs them): each violation is a warning line, and with
/// `error=true` any of them fails the build.
fn run_checks(
    df: &Dockerfile,
    plan: &crate::plan::Plan,
    bases: &HashMap<usize, RemoteImage>,
    opts: &BuildOptions,
    config: &CheckConfig,
) -> Result<(), BuildError> {
    let overrides: BTreeMap<String, String> = opts.build_args.iter().cloned().collect();
    let overrides = &overrides;
    let facts: HashMap<usize, checks::BaseFacts> = bases
        .iter()
        .map(|(&i, image)| {
            let stage = &df.stages[i];
            let expected = base_of(df, stage, &plan.global, opts).ok().map(|(_, p)| p);
            let c = &image.config;
            let facts = checks::BaseFacts {
                name: shell::expand(&stage.image, df.escape, &plan.global).unwrap_or_default(),
                env: c.config.env_pairs(),
                shell: c.config.shell.as_ref().is_some_and(|s| !s.is_empty()),
                expected,
                actual: (!c.os.is_empty()).then(|| Platform {
                    architecture: c.architecture.clone(),
                    os: c.os.clone(),
                    variant: None,
                }),
            };
            (i, facts)
        })
        .collect();
    let scope = checks::Scope {
        build_args: overrides,
        predefined: &plan.predefined,
        global: &plan.global,
        stages: &plan.stages,
        bases: &facts,
    };
    let kept = config.keep(checks::collect(df, &scope));
    for w in &kept {
        crate::log_warn!("{w}");
    }
    Ok(config.verdict(&kept)?)
}

/// The registry bases of the stages to build, fetched at once before any stage
/// starts, as BuildKit resolves every reachable stage's image first: a base's
/// ONBUILD triggers may read stages nothing else needs (`initOnBuildTriggers`),
/// and those join the build — and their bases are fetched in turn.
async fn fetch_bases(
    session: &Session,
    df: &Dockerfile,
    plan: &mut crate::plan::Plan,
    opts: &BuildOptions,
) -> Result<HashMap<usize, RemoteImage>, BuildError> {
    let mut bases = HashMap::new();
    let mut seen = HashSet::new();
    loop {
        let mut todo = Vec::new();
        for &i in &plan.stages {
            if !seen.insert(i) {
                continue;
            }
            let stage = &df.stages[i];
            if let (Base::Image(reference), platform) =
                base_of(df, stage, &plan.global, opts).map_err(|e| e.at(&stage.at))?
            {
                todo.push(async move {
                    let image =
                        remote::fetch(&session.registry, &reference, &platform, &session.blobs_dir)
                            .await
                            .map_err(|e| BuildError::from(e).at(&stage.at))?;
                    Ok::<_, BuildError>((i, image))
                });
            }
        }
        if todo.is_empty() {
            return Ok(bases);
        }
        for (i, image) in futures_util::future::try_join_all(todo).await? {
            if let Some(triggers) = &image.config.config.on_build {
                let more = crate::plan::trigger_deps(df, i, triggers);
                plan.add_deps(df, i, more);
            }
            bases.insert(i, image);
        }
    }
}

/// What a stage's FROM names, expanded with the global ARGs.
enum Base {
    Stage(usize),
    Scratch,
    Image(Reference),
}

/// A stage's base and platform.
fn base_of(
    df: &Dockerfile,
    stage: &Stage,
    global: &Env,
    opts: &BuildOptions,
) -> Result<(Base, Platform), BuildError> {
    let image = shell::expand(&stage.image, df.escape, global)?;
    let platform = match &stage.platform {
        Some(p) => {
            let p = shell::expand(p, df.escape, global)?;
            Platform::parse(&p).ok_or_else(|| BuildError::Platform(p.clone()))?
        }
        None => opts.platform.clone(),
    };
    let base = if let Some(prev) = df.stage_named(&image, stage.index) {
        Base::Stage(prev)
    } else if image == "scratch" {
        Base::Scratch
    } else {
        Base::Image(Reference::parse(&image)?)
    };
    Ok((base, platform))
}

/// Builds one stage from the finished stages it reads; `base` is its registry
/// base, fetched already.
async fn build_stage(
    b: &Build<'_>,
    i: usize,
    built: &HashMap<usize, Arc<StageState>>,
    base: Option<RemoteImage>,
) -> Result<StageState, BuildError> {
    let stage = &b.df.stages[i];
    let clock = b.log_step(&stage.at);
    let started = start_stage(b, stage, built, base).await;
    b.end_step(clock, started.as_ref().map(|_| false));
    let mut st = started.map_err(|e| e.at(&stage.at))?;
    // The base's ONBUILD triggers run first, then are gone (BuildKit).
    let triggers = st.config.config.on_build.take().unwrap_or_default();
    let triggers = crate::dockerfile::parse_triggers(&triggers, &stage.at)?;
    let mut hold: LiveHold = None;
    for step in triggers.iter().chain(&stage.steps) {
        let clock = b.log_step(&step.at);
        let env = st.env();
        let s = handlers::Step {
            b,
            built,
            st: &mut st,
            step,
            stage: i,
            hold: &mut hold,
            env,
        };
        let done = handlers::run_step(s).await;
        b.end_step(clock, done.as_ref().map(|c| *c));
        done.map_err(|e| e.at(&step.at))?;
    }
    Ok(st)
}

/// A stage's state before its first step: an earlier stage's, scratch's or a
/// registry base's (`fetched` already, else fetched now).
async fn start_stage(
    b: &Build<'_>,
    stage: &Stage,
    built: &HashMap<usize, Arc<StageState>>,
    fetched: Option<RemoteImage>,
) -> Result<StageState, BuildError> {
    let (session, df, global, opts) = (b.session, b.df, b.global, b.opts);
    let (base, platform) = base_of(df, stage, global, opts)?;
    let dir = opts.scratch_dir.join(format!(
        "stage-{}{}",
        stage.index,
        platform::dir_suffix(opts)
    ));
    crate::scratch::private_dir_all(&dir)
        .map_err(|e| BuildError::io(format!("creating {}", dir.display()), e))?;
    let reference = match base {
        // FROM an earlier stage: continue from its state.
        Base::Stage(prev) => {
            let p = built.get(&prev).ok_or_else(|| {
                BuildError::StageNotBuilt(df.stages[prev].name.clone().unwrap_or_default())
            })?;
            return Ok(StageState {
                key: p.key.clone(),
                newest: p.newest,
                history_base: p.history_base,
                layer_base: p.layer_base,
                config: p.config.clone(),
                fs: StageFs::new(p.fs.layers.clone(), dir),
                // BuildKit's stage state carries its ARGs into a stage built FROM it:
                // RUN sees them and names them in its history.
                args: p.args.clone(),
                arg_names: p.arg_names.clone(),
                cmd_set: false,
                format: p.format,
                base: p.base.clone(),
                claim: None,
            });
        }
        Base::Scratch => {
            let mut config = ImageConfig {
                architecture: platform.architecture.clone(),
                os: platform.os.clone(),
                variant: platform.variant.clone(),
                ..Default::default()
            };
            config.config.env = Some(vec![format!("PATH={DEFAULT_PATH}")]);
            config.config.working_dir = Some("/".into());
            return Ok(StageState {
                key: format!("scratch {platform}"),
                newest: None,
                history_base: 0,
                layer_base: 0,
                config,
                fs: StageFs::new(Vec::new(), dir),
                args: Env::new(),
                arg_names: Vec::new(),
                cmd_set: false,
                format: ManifestFormat::Docker,
                base: None,
                claim: None,
            });
        }
        Base::Image(reference) => reference,
    };
    let base = match fetched {
        Some(image) => image,
        None => remote::fetch(&session.registry, &reference, &platform, &session.blobs_dir).await?,
    };
    let mut config = base.config.clone();
    config.keep_buildkit_fields();
    if opts.explicit_platform || stage.platform.is_some() {
        config.architecture = platform.architecture.clone();
        config.os = platform.os.clone();
        config.variant = platform.variant.clone();
    }
    if config.config.get_env("PATH").is_none() {
        config.config.set_env("PATH", DEFAULT_PATH);
    }
    // BuildKit sets a base's WorkingDir as a WORKDIR of itself (no layer, no
    // history): a relative one is joined to itself, `relwd` → `/relwd/relwd`.
    if let Some(wd) = config.config.working_dir.clone() {
        if !wd.is_empty() && !wd.starts_with('/') {
            config.config.working_dir = Some(handlers::absolute(&wd, Some(&wd)));
        }
    }
    Ok(StageState {
        // With the platform: a single-platform base taken for two targets
        // must not give both the same steps.
        key: format!("{} {platform}", base.manifest_digest),
        newest: None,
        history_base: config.history.len(),
        layer_base: base.layers.len(),
        config,
        fs: StageFs::new(base.layers, dir),
        args: Env::new(),
        arg_names: Vec::new(),
        cmd_set: false,
        format: base.format,
        base: Some(reference),
        claim: None,
    })
}

/// What every step of one build reads, shared by the stages running at once.
struct Build<'a> {
    session: &'a Session,
    df: &'a Dockerfile,
    ctx: &'a BuildContext,
    opts: &'a BuildOptions,
    overrides: &'a BTreeMap<String, String>,
    /// What FROM lines see.
    global: &'a Env,
    /// ARGs declared before the first FROM.
    global_declared: &'a Env,
    /// BuildKit's predefined ARGs (platforms, `TARGETSTAGE`).
    predefined: &'a Env,
    /// Build args some ARG consumed (the rest are warned about).
    used_args: std::sync::Mutex<HashSet<String>>,
    steps_total: usize,
    steps_started: AtomicUsize,
}

/// A stage's hold on the live root, taken at its first in-place RUN.
type LiveHold<'a> = Option<tokio::sync::MutexGuard<'a, Option<live::LiveRoot>>>;

impl Build<'_> {
    /// Probes once per build how RUN can be isolated here.
    fn sandbox_ready(&self) -> Result<Isolation, BuildError> {
        let probed = self.session.sandbox_probed(&self.opts.scratch_dir);
        probed.clone().map_err(|cause| {
            BuildError::Sandbox(crate::sandbox::SandboxError::Unavailable { cause })
        })
    }

    /// What the live root keeps besides mounts and the executor's directory.
    fn keep_extra(&self) -> Vec<PathBuf> {
        let mut extra = vec![self.opts.scratch_dir.clone(), self.ctx.root().to_path_buf()];
        extra.extend(
            self.session
                .trees
                .as_ref()
                .and_then(|t| t.parent())
                .map(PathBuf::from),
        );
        extra.extend(std::env::var_os("DOCKER_CONFIG").map(PathBuf::from));
        extra.extend(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
        extra
    }

    fn log_step(&self, at: &Location) -> StepClock {
        let n = self.steps_started.fetch_add(1, Ordering::Relaxed) + 1;
        crate::log_info!(
            "[{}{n}/{}] {}",
            platform::log_prefix(self.opts),
            self.steps_total,
            at.text.trim()
        );
        self.session
            .steps
            .start(n, self.steps_total, at.text.trim());
        StepClock {
            n,
            text: at.text.trim().to_string(),
            started: std::time::Instant::now(),
        }
    }

    /// The step's end line, `[n/total] DONE 0.3s` (`CACHED` when its layer
    /// came from the cache, `ERROR` when it failed), kept for the summary.
    fn end_step<E>(&self, clock: StepClock, result: Result<bool, &E>) {
        use crate::report::Outcome;
        self.session.steps.finish(crate::report::StepTime {
            n: clock.n,
            total: self.steps_total,
            text: clock.text,
            took: clock.started.elapsed(),
            outcome: match result {
                Ok(true) => Outcome::Cached,
                Ok(false) => Outcome::Done,
                Err(_) => Outcome::Failed,
            },
        });
    }
}

/// A step under way: its number and when it started.
struct StepClock {
    n: usize,
    text: String,
    started: std::time::Instant,
}

impl Build<'_> {}
