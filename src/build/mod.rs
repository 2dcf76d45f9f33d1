//! Runs a Dockerfile: stages in dependency order, one handler per instruction
//! group (`copy`, `meta`), each step either changing the config or adding a layer.

pub mod copy;
pub mod meta;
pub mod stage;
pub mod users;

use crate::context::{BuildContext, ContextError};
use crate::dockerfile::shell::{self, Env, ShellError};
use crate::dockerfile::{Dockerfile, Instruction, InstructionError, Location, Stage};
use crate::image::remote::{self, ManifestFormat, RemoteError};
use crate::image::spec::{History, ImageConfig, Platform};
use crate::image::{Layer, Reference};
use crate::layer::reader::ReadError;
use crate::layer::writer::WriteError;
use crate::registry::{Registry, RegistryError};
use crate::rootfs::apply::ApplyError;
use crate::rootfs::ResolveError;
use stage::StageFs;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Dockerfile(#[from] InstructionError),
    #[error("Dockerfile:{line}: {message}: {text}")]
    Step {
        line: usize,
        text: String,
        message: String,
    },
    // Boxed: registry errors carry several names and would bloat every Result.
    #[error(transparent)]
    Registry(Box<RegistryError>),
    #[error(transparent)]
    Remote(Box<RemoteError>),
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
    #[error("{0}")]
    Source(String),
    #[error("{op}: {source}")]
    Io { op: String, source: std::io::Error },
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
            e @ (BuildError::Dockerfile(_) | BuildError::Step { .. }) => e,
            other => BuildError::Step {
                line: loc.line,
                text: loc.text.trim().to_string(),
                message: other.to_string(),
            },
        }
    }
}

impl From<RegistryError> for BuildError {
    fn from(e: RegistryError) -> Self {
        BuildError::Registry(Box::new(e))
    }
}

impl From<RemoteError> for BuildError {
    fn from(e: RemoteError) -> Self {
        BuildError::Remote(Box::new(e))
    }
}

impl From<ShellError> for BuildError {
    fn from(e: ShellError) -> Self {
        BuildError::Source(e.to_string())
    }
}

/// What a build needs to know, validated once by the CLI.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub dockerfile: PathBuf,
    pub context: PathBuf,
    pub build_args: Vec<(String, String)>,
    pub target: Option<String>,
    pub labels: Vec<(String, String)>,
    pub platform: Platform,
    pub reproducible: bool,
    pub scratch_dir: PathBuf,
    pub compression_level: u32,
}

/// Shared state of one build: clients, scratch space, options.
pub struct Session {
    pub registry: Registry,
    pub blobs_dir: PathBuf,
    pub download_lock: tokio::sync::Mutex<()>,
    pub compression_level: u32,
    pub created: String,
    pub now: u64,
}

/// The image a build produced: config, layers, manifest flavour.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub config: ImageConfig,
    pub layers: Vec<Layer>,
    pub format: ManifestFormat,
    /// Base image reference, when the target stage came from a registry image.
    pub base: Option<Reference>,
}

/// Predefined platform ARGs BuildKit provides.
fn platform_args(p: &Platform) -> Vec<(String, String)> {
    let plat = p.to_string();
    let variant = p.variant.clone().unwrap_or_default();
    let mut v = Vec::new();
    for prefix in ["TARGET", "BUILD"] {
        v.push((format!("{prefix}PLATFORM"), plat.clone()));
        v.push((format!("{prefix}OS"), p.os.clone()));
        v.push((format!("{prefix}ARCH"), p.architecture.clone()));
        v.push((format!("{prefix}VARIANT"), variant.clone()));
    }
    v
}

struct StageState {
    config: ImageConfig,
    fs: StageFs,
    /// ARGs declared in the stage with a value.
    args: Env,
    cmd_set: bool,
    format: ManifestFormat,
    base: Option<Reference>,
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

/// Builds the target stage of `df` and returns its image.
pub async fn build(
    session: &Session,
    df: &Dockerfile,
    ctx: &BuildContext,
    opts: &BuildOptions,
) -> Result<BuiltImage, BuildError> {
    let overrides: BTreeMap<String, String> = opts.build_args.iter().cloned().collect();
    let mut used_args: std::collections::HashSet<String> = std::collections::HashSet::new();

    // Global scope: predefined platform args, then ARGs before the first FROM.
    let mut global: Env = platform_args(&opts.platform).into_iter().collect();
    let mut global_declared: Env = Env::new();
    for (at, args) in &df.global_args {
        for (k, default) in args {
            let value = match overrides.get(k) {
                Some(v) => {
                    used_args.insert(k.clone());
                    Some(v.clone())
                }
                None => match default {
                    Some(d) => Some(
                        shell::expand(d, df.escape, &global)
                            .map_err(|e| BuildError::from(e).at(at))?,
                    ),
                    None => None,
                },
            };
            if let Some(v) = value {
                global.insert(k.clone(), v.clone());
                global_declared.insert(k.clone(), v);
            }
        }
    }

    let target = match &opts.target {
        Some(t) => df
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(&t.to_ascii_lowercase()))
            .ok_or_else(|| BuildError::Source(format!("target stage {t:?} could not be found")))?,
        None => df.stages.len() - 1,
    };
    let needed = needed_stages(df, target);
    let mut built: HashMap<usize, StageState> = HashMap::new();
    let total_steps: usize = needed.iter().map(|&i| df.stages[i].steps.len() + 1).sum();
    let mut step_no = 0;
    for &i in &needed {
        let stage = &df.stages[i];
        step_no += 1;
        eprintln!("INFO [{step_no}/{total_steps}] {}", stage.at.text.trim());
        let mut st = start_stage(session, df, stage, &global, &built, opts)
            .await
            .map_err(|e| e.at(&stage.at))?;
        for step in &stage.steps {
            step_no += 1;
            eprintln!("INFO [{step_no}/{total_steps}] {}", step.at.text.trim());
            run_step(
                session,
                df,
                &mut st,
                step,
                &overrides,
                &global_declared,
                &mut used_args,
                &mut built,
                ctx,
                opts,
                i,
            )
            .await
            .map_err(|e| e.at(&step.at))?;
        }
        built.insert(i, st);
    }
    for k in overrides.keys() {
        if !used_args.contains(k) {
            eprintln!("WARN build argument {k} was not consumed by any ARG");
        }
    }
    let mut st = built.remove(&target).expect("target stage was built");
    for (k, v) in &opts.labels {
        st.config
            .config
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(k.clone(), v.clone());
    }
    st.config.rootfs.kind = "layers".into();
    st.config.rootfs.diff_ids = st.fs.layers.iter().map(|l| l.diff_id.clone()).collect();
    st.config.created = Some(session.created.clone());
    Ok(BuiltImage {
        config: st.config,
        layers: st.fs.layers,
        format: st.format,
        base: st.base,
    })
}

/// The target and every stage it copies from, in Dockerfile order.
fn needed_stages(df: &Dockerfile, target: usize) -> Vec<usize> {
    let mut need = vec![false; df.stages.len()];
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if need[i] {
            continue;
        }
        need[i] = true;
        let from_names = df.stages[i]
            .steps
            .iter()
            .filter_map(|s| match &s.instruction {
                Instruction::Copy(c) => c.from.clone(),
                _ => None,
            });
        let base = std::iter::once(df.stages[i].image.clone());
        for name in from_names.chain(base) {
            if name.contains('$') {
                // Unknown until expanded: keep every earlier stage.
                todo.extend(0..i);
                continue;
            }
            let lower = name.to_ascii_lowercase();
            if let Some(j) = df.stages[..i]
                .iter()
                .position(|s| s.name.as_deref() == Some(&lower))
            {
                todo.push(j);
            } else if let Ok(j) = name.parse::<usize>() {
                if j < i {
                    todo.push(j);
                }
            }
        }
    }
    (0..df.stages.len()).filter(|&i| need[i]).collect()
}

async fn start_stage(
    session: &Session,
    df: &Dockerfile,
    stage: &Stage,
    global: &Env,
    built: &HashMap<usize, StageState>,
    opts: &BuildOptions,
) -> Result<StageState, BuildError> {
    let image = shell::expand(&stage.image, df.escape, global)?;
    let platform = match &stage.platform {
        Some(p) => {
            let p = shell::expand(p, df.escape, global)?;
            Platform::parse(&p)
                .ok_or_else(|| BuildError::Source(format!("invalid platform {p:?}")))?
        }
        None => opts.platform.clone(),
    };
    let dir = opts.scratch_dir.join(format!("stage-{}", stage.index));
    std::fs::create_dir_all(&dir)
        .map_err(|e| BuildError::io(format!("creating {}", dir.display()), e))?;
    // FROM an earlier stage: continue from its state.
    let lower = image.to_ascii_lowercase();
    if let Some(prev) = df.stages[..stage.index]
        .iter()
        .find(|s| s.name.as_deref() == Some(&lower))
    {
        let p = built
            .get(&prev.index)
            .ok_or_else(|| BuildError::Source(format!("stage {lower} was not built")))?;
        return Ok(StageState {
            config: p.config.clone(),
            fs: StageFs::new(p.fs.layers.clone(), dir),
            args: Env::new(),
            cmd_set: false,
            format: p.format,
            base: p.base.clone(),
        });
    }
    if image == "scratch" {
        let mut config = ImageConfig {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
            ..Default::default()
        };
        config.config.env = Some(vec![format!("PATH={DEFAULT_PATH}")]);
        config.config.working_dir = Some("/".into());
        return Ok(StageState {
            config,
            fs: StageFs::new(Vec::new(), dir),
            args: Env::new(),
            cmd_set: false,
            format: ManifestFormat::Docker,
            base: None,
        });
    }
    let reference = Reference::parse(&image).map_err(|e| BuildError::Source(e.to_string()))?;
    let base = remote::fetch(&session.registry, &reference, &platform, &session.blobs_dir).await?;
    let mut config = base.config.clone();
    config.history.retain(|_| true);
    if config.config.get_env("PATH").is_none() {
        config.config.set_env("PATH", DEFAULT_PATH);
    }
    if let Some(triggers) = config.config.on_build.take() {
        if !triggers.is_empty() {
            eprintln!("WARN base image {reference} has ONBUILD triggers; Kiln does not run them yet: {triggers:?}");
        }
    }
    Ok(StageState {
        config,
        fs: StageFs::new(base.layers, dir),
        args: Env::new(),
        cmd_set: false,
        format: base.format,
        base: Some(reference),
    })
}

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[allow(clippy::too_many_arguments)]
async fn run_step(
    session: &Session,
    df: &Dockerfile,
    st: &mut StageState,
    step: &crate::dockerfile::Step,
    overrides: &BTreeMap<String, String>,
    global_declared: &Env,
    used_args: &mut std::collections::HashSet<String>,
    built: &mut HashMap<usize, StageState>,
    ctx: &BuildContext,
    opts: &BuildOptions,
    stage_index: usize,
) -> Result<(), BuildError> {
    let esc = df.escape;
    let env = st.env();
    let created_by = step.at.text.trim().to_string();
    match &step.instruction {
        Instruction::Arg(args) => {
            for (k, default) in args {
                let value = if let Some(v) = overrides.get(k) {
                    used_args.insert(k.clone());
                    Some(v.clone())
                } else if let Some(d) = default {
                    Some(shell::expand(d, esc, &st.env())?)
                } else {
                    global_declared.get(k).cloned().or_else(|| {
                        platform_args(&opts.platform)
                            .into_iter()
                            .find(|(n, _)| n == k)
                            .map(|(_, v)| v)
                    })
                };
                if let Some(v) = value {
                    st.args.insert(k.clone(), v);
                }
            }
        }
        Instruction::Copy(c) => {
            meta::copy_step(session, df, st, c, &env, built, ctx, stage_index, opts).await?;
            push_history(st, session, format!("{created_by} # buildkit"), false);
        }
        Instruction::Workdir(w) => {
            let w = shell::expand(w, esc, &env)?;
            meta::workdir_step(session, st, &w).await?;
            push_history(st, session, created_by, false);
        }
        Instruction::Unsupported(kw) => {
            return Err(BuildError::Source(format!(
                "{kw} is not supported yet by Kiln"
            )));
        }
        other => {
            meta::config_step(st, other, esc, &env)?;
            if let Instruction::Env(pairs) = other {
                for (k, _) in pairs {
                    st.args.remove(&shell::expand(k, esc, &env)?);
                }
            }
            push_history(st, session, created_by, true);
        }
    }
    Ok(())
}

fn push_history(st: &mut StageState, session: &Session, created_by: String, empty_layer: bool) {
    st.config.history.push(History {
        created: Some(session.created.clone()),
        created_by: Some(created_by),
        author: None,
        comment: Some("buildkit.dockerfile.v0".into()),
        empty_layer,
    });
}
