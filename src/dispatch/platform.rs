//! The platform side of one build: which stages run foreign code (their RUN
//! needs an emulator, asked before anything is fetched), and how a build of
//! several platforms names its log lines and directories.

use super::FrontError;
use super::{BuildError, BuildOptions};
use crate::dockerfile::shell;
use crate::dockerfile::shell::Env;
use crate::dockerfile::{Dockerfile, Instruction, Stage};
use crate::emulation::{self, BINFMT_DIR};
use crate::image::spec::Platform;
use crate::image::Reference;
use crate::plan::Plan;
use std::path::Path;

/// What a stage's FROM names, expanded with the global ARGs.
pub(super) enum Base {
    Stage(usize),
    Scratch,
    Image(Reference),
}

/// A stage's base and platform.
pub(super) fn base_of(
    df: &Dockerfile,
    stage: &Stage,
    global: &Env,
    opts: &BuildOptions,
) -> Result<(Base, Platform), BuildError> {
    let image = shell::expand(&stage.image, df.escape, global)?;
    let platform = match &stage.platform {
        Some(p) => {
            let p = shell::expand(p, df.escape, global)?;
            Platform::parse(&p).ok_or_else(|| FrontError::Platform(p.clone()))?
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

/// Fails when a stage to build has a RUN for a platform this machine can run
/// neither natively nor through binfmt_misc. With a layer cache the RUNs may
/// all be hits, so then only a warning now; the RUN that misses fails.
pub(super) fn check_plan(
    df: &Dockerfile,
    plan: &Plan,
    opts: &BuildOptions,
    cache_may_hold: bool,
) -> Result<(), BuildError> {
    for &i in &plan.stages {
        let stage = &df.stages[i];
        if !stage
            .steps
            .iter()
            .any(|s| matches!(s.instruction, Instruction::Run(_)))
        {
            continue;
        }
        let (_, platform) = base_of(df, stage, &plan.global, opts).map_err(|e| e.at(&stage.at))?;
        match emulation::check(&platform, Path::new(BINFMT_DIR), &opts.scratch_dir) {
            Ok(()) => {}
            Err(e) if cache_may_hold => {
                crate::log_warn!(
                    "{e}; the build goes on in case the cache holds every RUN of this stage"
                )
            }
            Err(e) => return Err(BuildError::from(e).at(&stage.at)),
        }
    }
    Ok(())
}

/// Before a RUN of stage `i` runs (a cache miss): its platform's binaries must run here.
pub(super) fn check_run(
    df: &Dockerfile,
    i: usize,
    global: &Env,
    opts: &BuildOptions,
) -> Result<(), BuildError> {
    let Some(stage) = df.stages.get(i) else {
        return Ok(());
    };
    let (_, platform) = base_of(df, stage, global, opts)?;
    Ok(emulation::check(
        &platform,
        Path::new(BINFMT_DIR),
        &opts.scratch_dir,
    )?)
}

/// `linux/arm64 ` before a step's number when several platforms are built,
/// as BuildKit's progress names them.
pub(super) fn log_prefix(opts: &BuildOptions) -> String {
    match opts.multi_platform {
        true => format!("{} ", opts.platform),
        false => String::new(),
    }
}

/// `-linux-arm64` after a stage's directory name when several platforms are built.
pub(super) fn dir_suffix(opts: &BuildOptions) -> String {
    match opts.multi_platform {
        true => format!("-{}", opts.platform).replace('/', "-"),
        false => String::new(),
    }
}
