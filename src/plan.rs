//! The plan step between parsing and dispatch: the global ARG scope, the target
//! stage, the stages it needs (FROM expanded with the global ARGs first, `COPY
//! --from` edges), and early refusal of what Kiln cannot build yet, before any
//! image is fetched or any layer written.

use crate::dockerfile::mount::MountKind;
use crate::dockerfile::shell::{self, Env, ShellError};
use crate::dockerfile::{Dockerfile, Instruction, Location, Step};
use crate::image::spec::Platform;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("Dockerfile:{line}: {source}: {text}")]
    Expand {
        line: usize,
        text: String,
        source: ShellError,
    },
    #[error("Dockerfile:{line}: {source}: {text}")]
    Mount {
        line: usize,
        text: String,
        source: crate::dockerfile::mount::MountError,
    },
    #[error("target stage {0:?} could not be found")]
    NoTarget(String),
    #[error("Dockerfile:{line}: {keyword} is not supported yet by Kiln: {text}")]
    Unsupported {
        line: usize,
        text: String,
        keyword: String,
    },
}

fn expand_error(at: &Location) -> impl FnOnce(ShellError) -> PlanError + '_ {
    move |source| PlanError::Expand {
        line: at.line,
        text: at.text.trim().to_string(),
        source,
    }
}

/// What dispatch needs to know before it starts.
#[derive(Debug)]
pub struct Plan {
    /// What FROM lines see: the platform ARGs, then the global ARGs.
    pub(crate) global: Env,
    /// ARGs declared before the first FROM (a stage's `ARG X` imports these).
    pub(crate) declared: Env,
    /// BuildKit's predefined ARGs (platforms, `TARGETSTAGE`), build args applied:
    /// what a stage's `ARG X` without a value takes when no global ARG names it.
    pub(crate) predefined: Env,
    /// Build args the global ARGs consumed.
    pub(crate) used: Vec<String>,
    /// The stage whose image is the result.
    pub(crate) target: usize,
    /// The stages to build, in Dockerfile order.
    pub(crate) stages: Vec<usize>,
    /// For each stage, the earlier stages it reads (FROM, `COPY --from`): it can
    /// start once they are built, concurrently with the others.
    pub(crate) deps: Vec<Vec<usize>>,
    /// The first RUN of the stages to build (RUN needs a sandbox).
    pub(crate) first_run: Option<Location>,
}

/// Plans a build of `df` for `platform`, with `--build-arg`s and `--target`.
pub fn plan(
    df: &Dockerfile,
    overrides: &BTreeMap<String, String>,
    target: Option<&str>,
    platform: &Platform,
) -> Result<Plan, PlanError> {
    let g = global_args(df, overrides, platform, target)?;
    let target = match target {
        Some(t) => df
            .stage_named(t, df.stages.len())
            .ok_or_else(|| PlanError::NoTarget(t.to_string()))?,
        None => df.stages.len() - 1,
    };
    let deps = stage_deps(df, &g.visible)?;
    let stages = needed_stages(target, &deps);
    // Refuse now what would fail later: nothing is fetched or pushed first.
    for &i in &stages {
        for step in &df.stages[i].steps {
            let keyword = match &step.instruction {
                Instruction::Run(r) if r.mounts.iter().any(|m| m.kind() == MountKind::Ssh) => {
                    "RUN --mount=type=ssh".into()
                }
                _ => continue,
            };
            return Err(PlanError::Unsupported {
                line: step.at.line,
                text: step.at.text.trim().to_string(),
                keyword,
            });
        }
    }
    let first_run = first_run(df, &stages);
    Ok(Plan {
        first_run,
        global: g.visible,
        declared: g.declared,
        predefined: g.predefined,
        used: g.used,
        target,
        stages,
        deps,
    })
}

impl Plan {
    /// `--dryrun`'s report: each stage to build, in Dockerfile order, with its
    /// FROM line and steps as written. A registry base's ONBUILD triggers are not
    /// known here, since a dry run fetches nothing.
    pub fn describe(&self, df: &Dockerfile) -> String {
        let mut out = String::new();
        for &i in &self.stages {
            let Some(stage) = df.stages.get(i) else {
                continue;
            };
            let target = if i == self.target { " (target)" } else { "" };
            out.push_str(&format!("stage {i}{target}: {}\n", stage.at.text.trim()));
            for step in &stage.steps {
                out.push_str(&format!("  {}\n", step.at.text.trim()));
            }
        }
        out
    }

    /// Adds what stage `i` reads besides its own steps (its base image's ONBUILD
    /// triggers, known once the base is fetched): the stages to build grow to
    /// those the target now needs. Whether any stage was added.
    pub(crate) fn add_deps(&mut self, df: &Dockerfile, i: usize, more: Vec<usize>) -> bool {
        let Some(deps) = self.deps.get_mut(i) else {
            return false;
        };
        deps.extend(more);
        deps.sort_unstable();
        deps.dedup();
        let stages = needed_stages(self.target, &self.deps);
        if stages == self.stages {
            return false;
        }
        self.stages = stages;
        self.first_run = first_run(df, &self.stages);
        true
    }
}

/// The first RUN of `stages` (RUN needs a sandbox).
fn first_run(df: &Dockerfile, stages: &[usize]) -> Option<Location> {
    stages
        .iter()
        .flat_map(|&i| &df.stages[i].steps)
        .find(|s| matches!(s.instruction, Instruction::Run(_)))
        .map(|s| s.at.clone())
}

/// Predefined platform ARGs BuildKit provides: TARGET* the platform built for,
/// BUILD* the machine building it (a `--platform=$BUILDPLATFORM` stage runs natively).
fn platform_args(target: &Platform) -> Vec<(String, String)> {
    let build = Platform::host();
    let mut v = Vec::new();
    for (prefix, p) in [("TARGET", target), ("BUILD", &build)] {
        let plat = p.to_string();
        let variant = p.variant.clone().unwrap_or_default();
        v.push((format!("{prefix}PLATFORM"), plat));
        v.push((format!("{prefix}OS"), p.os.clone()));
        // Windows' field; empty for Linux, but declared all the same.
        v.push((format!("{prefix}OSVERSION"), String::new()));
        v.push((format!("{prefix}ARCH"), p.architecture.clone()));
        v.push((format!("{prefix}VARIANT"), variant));
    }
    v
}

/// BuildKit's predefined ARGs (`defaultArgs`): the platform ones and
/// `TARGETSTAGE`, the target's name as given (else the last stage's name, else
/// `default`); a build arg of the same name replaces each.
fn predefined_args(
    df: &Dockerfile,
    overrides: &BTreeMap<String, String>,
    platform: &Platform,
    target: Option<&str>,
) -> Env {
    let stage = target
        .map(str::to_string)
        .or_else(|| df.stages.last().and_then(|s| s.name.clone()))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "default".into());
    let mut args: Env = platform_args(platform).into_iter().collect();
    args.insert("TARGETSTAGE".into(), stage);
    for (k, v) in args.iter_mut() {
        if let Some(o) = overrides.get(k) {
            *v = o.clone();
        }
    }
    args
}

/// The global scope: predefined platform args, then ARGs before the first FROM.
struct GlobalArgs {
    /// What FROM lines may expand.
    visible: Env,
    /// ARGs declared before the first FROM (a stage's `ARG X` imports these).
    declared: Env,
    /// The predefined ARGs.
    predefined: Env,
    /// Build args consumed.
    used: Vec<String>,
}

fn global_args(
    df: &Dockerfile,
    overrides: &BTreeMap<String, String>,
    platform: &Platform,
    target: Option<&str>,
) -> Result<GlobalArgs, PlanError> {
    let predefined = predefined_args(df, overrides, platform, target);
    let mut g = GlobalArgs {
        visible: predefined.clone(),
        declared: Env::new(),
        predefined,
        used: Vec::new(),
    };
    for (at, args) in &df.global_args {
        for (k, default) in args {
            let value = match overrides.get(k) {
                Some(v) => {
                    g.used.push(k.clone());
                    Some(v.clone())
                }
                None => match default {
                    Some(d) => {
                        Some(shell::expand(d, df.escape, &g.visible).map_err(expand_error(at))?)
                    }
                    None => None,
                },
            };
            if let Some(v) = value {
                g.visible.insert(k.clone(), v.clone());
                g.declared.insert(k.clone(), v);
            }
        }
    }
    Ok(g)
}

/// Every registry image the Dockerfile's FROM lines name (for `executor warmer`).
pub fn base_images(
    df: &Dockerfile,
    build_args: &[(String, String)],
    platform: &Platform,
) -> Result<Vec<String>, PlanError> {
    let overrides: BTreeMap<String, String> = build_args.iter().cloned().collect();
    let g = global_args(df, &overrides, platform, None)?;
    let mut out = Vec::new();
    for (i, stage) in df.stages.iter().enumerate() {
        let image =
            shell::expand(&stage.image, df.escape, &g.visible).map_err(expand_error(&stage.at))?;
        let is_stage = df.stage_named(&image, i).is_some();
        if image != "scratch" && !is_stage && !out.contains(&image) {
            out.push(image);
        }
    }
    Ok(out)
}

/// The earlier stages each stage reads: its FROM, `COPY --from` and `RUN --mount
/// from=` sources (a mount's `from` may hold no variable), and when its FROM is a
/// stage, those its ONBUILD triggers read, since they run first here. FROM
/// is expanded with the global ARGs first (all it can see), so `FROM ${REPO}img`
/// does not pull in unrelated stages; a `--from` with a variable depends on every
/// earlier stage, since stage ARGs decide it.
fn stage_deps(df: &Dockerfile, global: &Env) -> Result<Vec<Vec<usize>>, PlanError> {
    (0..df.stages.len())
        .map(|i| {
            let stage = &df.stages[i];
            let base = shell::expand(&stage.image, df.escape, global)
                .unwrap_or_else(|_| stage.image.clone());
            let mut deps = resolve(df, i, from_names(&stage.steps)?.into_iter());
            deps.extend(resolve(df, i, std::iter::once(base.clone())));
            if let Some(j) = df.stage_named(&base, i) {
                // BuildKit's initOnBuildTriggers: a stage's ONBUILD commands run
                // first in a stage FROM it, and what they read joins the build.
                let triggers: Vec<String> = df.stages[j]
                    .steps
                    .iter()
                    .filter_map(|s| match &s.instruction {
                        Instruction::Onbuild(t) => Some(t.clone()),
                        _ => None,
                    })
                    .collect();
                deps.extend(trigger_deps(df, i, &triggers));
            }
            deps.sort_unstable();
            deps.dedup();
            Ok(deps)
        })
        .collect()
}

/// The stages a base's ONBUILD `triggers` read when they run first in stage `i`.
/// A trigger that does not parse reads nothing here: dispatch refuses it at
/// stage `i`'s FROM with the parser's message.
pub(crate) fn trigger_deps(df: &Dockerfile, i: usize, triggers: &[String]) -> Vec<usize> {
    let Some(stage) = df.stages.get(i) else {
        return Vec::new();
    };
    let names = crate::dockerfile::parse_triggers(triggers, &stage.at)
        .ok()
        .and_then(|steps| from_names(&steps).ok())
        .unwrap_or_default();
    resolve(df, i, names.into_iter())
}

/// The `--from` names `steps` read: `COPY --from` and `RUN --mount from=`.
fn from_names(steps: &[Step]) -> Result<Vec<String>, PlanError> {
    let mut names = Vec::new();
    for s in steps {
        match &s.instruction {
            Instruction::Copy(c) => names.extend(c.from.clone()),
            Instruction::Run(r) => {
                for m in &r.mounts {
                    let from = m.from().map_err(|source| PlanError::Mount {
                        line: s.at.line,
                        text: s.at.text.trim().to_string(),
                        source,
                    })?;
                    names.extend(from);
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

/// The stages before `i` that `names` denote (by name or index; a variable
/// may denote any of them); other names are images.
fn resolve(df: &Dockerfile, i: usize, names: impl Iterator<Item = String>) -> Vec<usize> {
    let mut deps = Vec::new();
    for name in names {
        if name.contains('$') {
            deps.extend(0..i);
        } else if let Some(j) = df.stage_named(&name, i) {
            deps.push(j);
        } else if let Some(j) = name.parse::<usize>().ok().filter(|&j| j < i) {
            deps.push(j);
        }
    }
    deps
}

/// The target and every stage it needs, in Dockerfile order.
fn needed_stages(target: usize, deps: &[Vec<usize>]) -> Vec<usize> {
    let mut need = vec![false; deps.len()];
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if !need[i] {
            need[i] = true;
            todo.extend(&deps[i]);
        }
    }
    (0..deps.len()).filter(|&i| need[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::parse_dockerfile;

    fn planned(text: &str, target: Option<&str>) -> Result<Plan, PlanError> {
        let df = parse_dockerfile(text).unwrap();
        plan(&df, &BTreeMap::new(), target, &Platform::host())
    }

    #[test]
    fn stages_the_target_needs() {
        let p = planned(
            "ARG P=\nFROM a AS one\nFROM b AS unused\nFROM ${P}one AS two\nCOPY --from=0 /x /x\nFROM c\n",
            Some("two"),
        )
        .unwrap();
        assert_eq!(
            p.stages,
            [0, 2],
            "FROM ${{P}}one is stage one once expanded"
        );
        assert_eq!(p.target, 2);
        assert_eq!(p.deps[2], [0], "stage two reads stage 0 only");
        assert_eq!(p.deps[3], Vec::<usize>::new());
        let p = planned(
            "FROM a AS one\nFROM b AS two\nFROM c\nRUN --mount=from=two,target=/t true\n",
            None,
        )
        .unwrap();
        assert_eq!(p.stages, [1, 2], "a mount's from is a dependency");
        // A parent stage's ONBUILD triggers run in its child: what they read joins.
        let p = planned(
            "FROM a AS base\nONBUILD COPY --from=src /x /x\nONBUILD RUN --mount=from=mnt,target=/m true\nFROM b AS src\nFROM b AS mnt\nFROM base\n",
            None,
        )
        .unwrap();
        assert_eq!(p.stages, [0, 1, 2, 3]);
        assert_eq!(p.deps[3], [0, 1, 2]);
        assert!(matches!(
            planned("FROM a\n", Some("nope")),
            Err(PlanError::NoTarget(_))
        ));
    }

    #[test]
    fn unsupported_steps_are_refused_before_anything_runs() {
        let e = planned(
            "FROM x\nRUN --mount=type=cache,target=/c true\nRUN --mount=type=ssh ssh-add -l\n",
            None,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Dockerfile:3: RUN --mount=type=ssh is not supported yet by Kiln: RUN --mount=type=ssh ssh-add -l"
        );
        // A stage the target does not need may hold anything.
        assert!(planned("FROM a AS x\nRUN --mount=type=ssh x\nFROM b\n", None).is_ok());
    }
}
