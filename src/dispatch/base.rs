//! A stage's start: its registry bases fetched first, all at once (their
//! ONBUILD triggers may add stages to the build), then each stage's state made
//! from an earlier stage, scratch or its base image.

use super::platform::{self, base_of, Base};
use super::stage::StageFs;
use super::StepError;
use super::{handlers, Build, BuildError, BuildOptions, Session, StageState};
use crate::dockerfile::shell::Env;
use crate::dockerfile::{Dockerfile, Stage};
use crate::image::spec::{ImageConfig, Platform, DEFAULT_PATH};
use crate::image::{ManifestFormat, Reference};
use crate::source::remote::{self, RemoteImage};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The registry bases of the stages to build, fetched at once before any stage
/// starts, as BuildKit resolves every reachable stage's image first: a base's
/// ONBUILD triggers may read stages nothing else needs (`initOnBuildTriggers`),
/// and those join the build — and their bases are fetched in turn.
pub(super) async fn fetch_bases(
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
            // Its layers' file indexes are on their way while the first steps
            // are looked up (COPY needs them).
            session.cache.prefetch_layer_entries(
                &session.registry,
                &image.layers,
                &session.blobs_dir,
            );
            if let Some(triggers) = &image.config.config.on_build {
                let more = crate::plan::trigger_deps(df, i, triggers);
                plan.add_deps(df, i, more);
            }
            bases.insert(i, image);
        }
    }
}

/// A stage's state before its first step: an earlier stage's, scratch's or a
/// registry base's (`fetched` already, else fetched now).
pub(super) async fn start_stage(
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
    match base {
        // FROM an earlier stage: continue from its state.
        Base::Stage(prev) => {
            let p = built.get(&prev).ok_or_else(|| {
                StepError::StageNotBuilt(df.stages[prev].name.clone().unwrap_or_default())
            })?;
            Ok(after_stage(p, dir))
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
            let fs = StageFs::new(Vec::new(), dir);
            let key = format!("scratch {platform}");
            Ok(StageState::fresh(
                key,
                config,
                fs,
                ManifestFormat::Docker,
                None,
            ))
        }
        Base::Image(reference) => {
            let image = match fetched {
                Some(image) => image,
                None => {
                    remote::fetch(&session.registry, &reference, &platform, &session.blobs_dir)
                        .await?
                }
            };
            let explicit = opts.explicit_platform || stage.platform.is_some();
            Ok(on_image(image, reference, &platform, explicit, dir))
        }
    }
}

/// A stage FROM an earlier one: its state, in a directory of its own.
fn after_stage(p: &StageState, dir: std::path::PathBuf) -> StageState {
    StageState {
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
    }
}

/// A stage on a registry image: its config as BuildKit keeps it (the target
/// platform's names where one was asked for, a PATH, a relative WorkingDir
/// joined to itself), its layers.
fn on_image(
    image: RemoteImage,
    reference: Reference,
    platform: &Platform,
    explicit_platform: bool,
    dir: std::path::PathBuf,
) -> StageState {
    let mut config = image.config.clone();
    config.keep_buildkit_fields();
    if explicit_platform {
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
    // With the platform: a single-platform base taken for two targets must
    // not give both the same steps.
    let key = format!("{} {platform}", image.manifest_digest);
    let fs = StageFs::new(image.layers, dir);
    StageState::fresh(key, config, fs, image.format, Some(reference))
}

impl StageState {
    /// A stage's first state on `config` and `fs`: everything in them is the
    /// base's, nothing declared yet.
    fn fresh(
        key: String,
        config: ImageConfig,
        fs: StageFs,
        format: ManifestFormat,
        base: Option<Reference>,
    ) -> StageState {
        StageState {
            key,
            newest: None,
            history_base: config.history.len(),
            layer_base: fs.layers.len(),
            config,
            fs,
            args: Env::new(),
            arg_names: Vec::new(),
            cmd_set: false,
            format,
            base,
            claim: None,
        }
    }
}
