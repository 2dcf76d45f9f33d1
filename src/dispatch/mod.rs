//! Runs a Dockerfile: a scheduler that starts each stage once the stages it
//! reads are built and hands each step to its instruction group's handler
//! (`handlers`), whose effect either changes the config or adds a layer.

mod base;
mod build_state;
pub(crate) mod chmod;
pub(crate) mod copy;
mod effect;
mod error;
mod handlers;
mod history;
mod live;
pub mod mounts;
pub mod multi;
mod platform;
mod run;
mod session;
mod shared;
mod sources;
mod squash;
pub mod stage;
mod unpack;
pub(crate) mod users;

pub use error::{BuildError, FrontError, SessionError, StepError};
pub use session::{BuildOptions, Session};

use crate::context::BuildContext;
use crate::dockerfile::checks::{self, CheckConfig};
use crate::dockerfile::shell::{self, Env};
use crate::dockerfile::Dockerfile;
use crate::image::spec::{ImageConfig, Platform};
use crate::image::{Image, ManifestFormat, Reference};
use crate::source::remote::RemoteImage;
use base::{fetch_bases, start_stage};
use build_state::{Build, LiveHold};
use platform::base_of;
use stage::StageFs;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// Runs CPU-bound work (tar, gzip, unpacking, hashing a context) so the runtime
/// moves its other tasks (downloads, uploads, signals) to other workers meanwhile.
pub(crate) fn cpu<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
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
    let overrides: BTreeMap<String, String> = opts.build_args.iter().cloned().collect();
    let check_config = CheckConfig::of(df, &overrides)?;
    let mut plan = crate::plan::plan(df, &overrides, opts.target.as_deref(), &opts.platform)?;
    // A RUN no emulator can run fails now, before anything is fetched or pushed.
    platform::check_plan(df, &plan, opts, session.cache.settings.layers)?;
    let bases = fetch_bases(session, df, &mut plan, opts).await?;
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
    let built = run_stages(&b, &plan, bases).await?;
    let used = b.used_args.lock().map(|u| u.clone()).unwrap_or_default();
    for k in overrides.keys() {
        if !used.contains(k) && !run::is_proxy_arg(k) && k != checks::CHECK_BUILD_ARG {
            crate::log_warn!("build argument {k} was not consumed by any ARG");
        }
    }
    let st = built
        .get(&plan.target)
        .ok_or_else(|| StepError::StageNotBuilt(format!("{}", plan.target)))?;
    image_of(session, st, opts).await
}

/// Runs the plan's stages, each as soon as the stages it reads are built, and
/// returns them all.
async fn run_stages(
    b: &Build<'_>,
    plan: &crate::plan::Plan,
    mut bases: HashMap<usize, RemoteImage>,
) -> Result<HashMap<usize, Arc<StageState>>, BuildError> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
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
            let base = bases.remove(&i);
            running.push(async move { (i, build_stage(b, i, &inputs, base).await) });
        }
        match running.next().await {
            Some((i, result)) => {
                built.insert(i, Arc::new(result?));
            }
            None => return Ok(built),
        }
    }
}

/// The built target stage as an image: `--label`s added, its own layers
/// merged by `--single-snapshot`, its steps appended to its base, finished in
/// the output's format.
async fn image_of(
    session: &Session,
    st: &StageState,
    opts: &BuildOptions,
) -> Result<Image, BuildError> {
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
