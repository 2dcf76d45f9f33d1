//! Rules that follow variables and base configs: FROM lines of every stage with
//! the global ARGs (as BuildKit's `toDispatchState` expands them), then the
//! steps of the stages the build dispatches, each with its stage's variables as
//! BuildKit's `dispatch` has them when it expands a word.

use super::{suggest, warning, Rule, Warning};
use crate::dockerfile::shell::{self, Env, Matches};
use crate::dockerfile::{CommandLine, Dockerfile, Instruction, Stage};
use crate::image::spec::{Platform, DEFAULT_PATH};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Build args that never become variables (BuildKit's `nonEnvArgs`).
const NON_ENV_ARGS: [&str; 2] = ["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// A stage's registry base as the build resolved it.
#[derive(Debug, Clone, Default)]
pub(crate) struct BaseFacts {
    /// The FROM image, expanded.
    pub(crate) name: String,
    /// The base config's `Env`.
    pub(crate) env: Vec<(String, String)>,
    /// Whether the base config sets `Shell`.
    pub(crate) shell: bool,
    /// The platform asked for, and the one the config says.
    pub(crate) expected: Option<Platform>,
    pub(crate) actual: Option<Platform>,
}

/// What the build knows before it dispatches: arguments and resolved bases.
pub(crate) struct Scope<'a> {
    /// `--build-arg`s.
    pub(crate) build_args: &'a BTreeMap<String, String>,
    /// The predefined ARGs, build args applied (BuildKit's `defaultArgs`).
    pub(crate) predefined: &'a Env,
    /// What FROM lines see: predefined and global ARGs, build args applied.
    pub(crate) global: &'a Env,
    /// The stages the build dispatches, in Dockerfile order.
    pub(crate) stages: &'a [usize],
    /// Registry bases by stage.
    pub(crate) bases: &'a HashMap<usize, BaseFacts>,
}

pub(super) fn check(df: &Dockerfile, scope: &Scope<'_>) -> Vec<Warning> {
    let mut out = Vec::new();
    default_base_names(df, scope, &mut out);
    for stage in &df.stages {
        from_line(df, stage, scope, &mut out);
    }
    let mut finals: HashMap<usize, StageVars> = HashMap::new();
    for &i in scope.stages {
        let Some(stage) = df.stages.get(i) else {
            continue;
        };
        let start = start_vars(df, stage, scope, &finals);
        let end = steps(df, stage, scope, start, &mut out);
        finals.insert(i, end);
        if let Some(b) = scope.bases.get(&i) {
            base_platform(b, stage.at.line, &mut out);
        }
    }
    out
}

/// BuildKit's `validateBaseImagesWithDefaultArgs`: each FROM expanded with the
/// ARG defaults alone must name an image.
fn default_base_names(df: &Dockerfile, scope: &Scope<'_>, out: &mut Vec<Warning>) {
    let mut args = scope.predefined.clone();
    for (_, list) in &df.global_args {
        for (k, default) in list {
            if let Some(d) = default {
                let Ok(v) = shell::expand(d, df.escape, &args) else {
                    return;
                };
                args.insert(k.clone(), v);
            }
        }
    }
    for stage in &df.stages {
        let Ok(name) = shell::expand(&stage.image, df.escape, &args) else {
            return;
        };
        if !is_image_name(&name) {
            out.push(warning(
                Rule::InvalidDefaultArgInFrom,
                stage.at.line,
                format!(
                    "Default value for ARG {} results in empty or invalid base image name",
                    stage.image
                ),
            ));
        }
    }
}

/// Whether `name` parses as distribution's `ParseNormalizedNamed` parses it:
/// Kiln's reference grammar, and a repository path in lower case.
fn is_image_name(name: &str) -> bool {
    if crate::image::reference::Reference::parse(name).is_err() {
        return false;
    }
    let repo = name.split('@').next().unwrap_or_default();
    let mut parts: Vec<&str> = repo.split('/').collect();
    let domain = parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost");
    if domain {
        parts.remove(0);
    }
    let path = parts.join("/");
    // The tag (after the last colon of the path) may hold upper case.
    let path = path.rsplit_once(':').map_or(path.as_str(), |(p, _)| p);
    path == path.to_lowercase()
}

/// UndefinedArgInFrom, RedundantTargetPlatform and
/// FromPlatformFlagConstDisallowed for one FROM line.
fn from_line(df: &Dockerfile, stage: &Stage, scope: &Scope<'_>, out: &mut Vec<Warning>) {
    let line = stage.at.line;
    // Declared global ARGs count even without a value.
    let mut known: BTreeSet<String> = scope.global.keys().cloned().collect();
    known.extend(
        df.global_args
            .iter()
            .flat_map(|(_, l)| l.iter().map(|(k, _)| k.clone())),
    );
    let undefined = |m: &Matches, out: &mut Vec<Warning>| {
        for arg in m.unmatched.iter().filter(|a| !known.contains(*a)) {
            let mut msg = format!("FROM argument '{arg}' is not declared");
            if let Some(s) = suggest(arg, &known) {
                msg.push_str(&format!(" (did you mean {s}?)"));
            }
            out.push(warning(Rule::UndefinedArgInFrom, line, msg));
        }
    };
    let (_, m) = shell::process_with_matches(&stage.image, df.escape, scope.global);
    undefined(&m, out);
    let Some(platform) = &stage.platform else {
        return;
    };
    let (result, m) = shell::process_with_matches(platform, df.escape, scope.global);
    undefined(&m, out);
    let Ok(result) = result.map(|r| r.word) else {
        return;
    };
    if m.unmatched.is_empty()
        && m.matched.len() == 1
        && m.matched.contains("TARGETPLATFORM")
        && scope.global.get("TARGETPLATFORM") == Some(&result)
    {
        out.push(warning(
            Rule::RedundantTargetPlatform,
            line,
            format!("Setting platform to predefined {platform} in FROM is redundant as this is the default behavior"),
        ));
    }
    if m.matched.is_empty() && m.unmatched.is_empty() {
        let Some((os, arch)) = parse_platform(&result) else {
            return;
        };
        let name = stage.name.as_deref().unwrap_or_default();
        if !name.contains(&os) && !name.contains(&arch) {
            out.push(warning(
                Rule::FromPlatformFlagConstDisallowed,
                line,
                format!("FROM --platform flag should not use constant value {result:?}"),
            ));
        }
    }
}

/// containerd's `platforms.Parse`, normalized: OS and architecture, or None
/// where it would fail. One part names an OS or else an architecture.
fn parse_platform(s: &str) -> Option<(String, String)> {
    let parts: Vec<String> = s.split('/').map(str::to_lowercase).collect();
    let valid = |p: &String| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if parts.len() > 3 || !parts.iter().all(valid) {
        return None;
    }
    const OSES: [&str; 12] = [
        "aix",
        "android",
        "darwin",
        "dragonfly",
        "freebsd",
        "illumos",
        "ios",
        "js",
        "linux",
        "netbsd",
        "openbsd",
        "windows",
    ];
    let host = Platform::host();
    Some(match parts.as_slice() {
        [one] if OSES.contains(&one.as_str()) => (one.clone(), host.architecture),
        [one] => ("linux".into(), normalize_arch(one).0),
        [os, arch, ..] => (os.clone(), normalize_arch(arch).0),
        [] => return None,
    })
}

/// containerd's architecture and variant normalization.
fn normalize_arch(arch: &str) -> (String, Option<String>) {
    let a = match arch {
        "i386" => "386",
        "x86_64" | "x86-64" | "amd64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "armhf" | "armel" | "arm" => "arm",
        other => other,
    };
    let variant = match arch {
        "armhf" => Some("v7".to_string()),
        "armel" => Some("v6".to_string()),
        _ => None,
    };
    (a.to_string(), variant)
}

/// `os/arch[/variant]` as BuildKit prints a normalized platform.
fn format_platform(p: &Platform) -> String {
    let (arch, implied) = normalize_arch(&p.architecture);
    let variant =
        p.variant.clone().or(implied).filter(|v| {
            !(arch == "arm64" && (v == "v8" || v == "8") || arch == "amd64" && v == "v1")
        });
    let variant = match (arch.as_str(), variant) {
        ("arm", None) => Some("v7".to_string()),
        (_, v) => v,
    };
    match variant {
        Some(v) if !v.is_empty() => format!("{}/{arch}/{v}", p.os),
        _ => format!("{}/{arch}", p.os),
    }
}

fn base_platform(b: &BaseFacts, line: usize, out: &mut Vec<Warning>) {
    let (Some(expected), Some(actual)) = (&b.expected, &b.actual) else {
        return;
    };
    let arch = |p: &Platform| normalize_arch(&p.architecture).0;
    if expected.os != actual.os || arch(expected) != arch(actual) {
        out.push(warning(
            Rule::InvalidBaseImagePlatform,
            line,
            format!(
                "Base image {} was pulled with platform {:?}, expected {:?} for current build",
                b.name,
                format_platform(actual),
                format_platform(expected)
            ),
        ));
    }
}

/// A stage's variables while its steps are dispatched.
#[derive(Debug, Clone, Default)]
struct StageVars {
    env: Env,
    /// Names the stage's ARGs declared so far (with or without a value).
    args: Vec<String>,
    /// A SHELL is set (by the base or a step).
    shell: bool,
}

fn start_vars(
    df: &Dockerfile,
    stage: &Stage,
    scope: &Scope<'_>,
    finals: &HashMap<usize, StageVars>,
) -> StageVars {
    let image = shell::expand(&stage.image, df.escape, scope.global).unwrap_or_default();
    // A stage built on another continues from its state, ARGs included.
    let mut vars = match df.stage_named(&image, stage.index) {
        Some(parent) => StageVars {
            args: Vec::new(),
            ..finals.get(&parent).cloned().unwrap_or_default()
        },
        None => match scope.bases.get(&stage.index) {
            Some(b) => StageVars {
                env: b.env.iter().cloned().collect(),
                args: Vec::new(),
                shell: b.shell,
            },
            None => StageVars::default(),
        },
    };
    vars.env
        .entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    vars
}

/// Uses of one instruction kind, so a second one reports the first.
#[derive(Default)]
struct Once {
    cmd: Option<usize>,
    entrypoint: Option<usize>,
    healthcheck: Option<usize>,
}

fn steps(
    df: &Dockerfile,
    stage: &Stage,
    scope: &Scope<'_>,
    mut vars: StageVars,
    out: &mut Vec<Warning>,
) -> StageVars {
    let mut workdir_set = false;
    let mut once = Once::default();
    for step in &stage.steps {
        let line = step.at.line;
        let node = df.facts.node_at(line);
        let written = node.map_or_else(String::new, |n| n.original_keyword.clone());
        let legacy = node.is_some_and(|n| {
            n.args
                .chunks(3)
                .any(|c| c.get(2).is_some_and(String::is_empty))
        });
        // Expands one word as dispatch does, reporting variables nothing defines.
        let expand = |vars: &StageVars, word: &str, out: &mut Vec<Warning>| -> String {
            let (result, m) = shell::process_with_matches(word, df.escape, &vars.env);
            undefined_vars(vars, &m, line, out);
            result.map(|r| r.word).unwrap_or_default()
        };
        match &step.instruction {
            Instruction::Env(pairs) => {
                let expanded: Vec<(String, String)> = pairs
                    .iter()
                    .map(|(k, v)| (expand(&vars, k, out), expand(&vars, v, out)))
                    .collect();
                for (k, v) in expanded {
                    if legacy {
                        out.push(legacy_key_value(&written, line));
                    }
                    secret("ENV", &k, line, out);
                    vars.env.insert(k, v);
                }
            }
            Instruction::Label(pairs) => {
                for (k, v) in pairs {
                    expand(&vars, k, out);
                    expand(&vars, v, out);
                }
                if legacy {
                    out.push(legacy_key_value(&written, line));
                }
            }
            Instruction::Copy(c) => {
                let add = c.add.as_ref();
                let flags = [
                    c.chown.as_deref(),
                    c.chmod.as_deref(),
                    add.and_then(|a| a.checksum.as_deref()),
                ];
                for w in flags.into_iter().flatten() {
                    expand(&vars, w, out);
                }
                for w in c.sources.iter().chain([&c.dest]) {
                    expand(&vars, w, out);
                }
            }
            Instruction::Workdir(p) => {
                let p = expand(&vars, p, out);
                if !workdir_set && !p.starts_with('/') {
                    out.push(warning(
                        Rule::WorkdirRelativePath,
                        line,
                        format!("Relative workdir {p:?} can have unexpected results if the base image changes"),
                    ));
                }
                workdir_set = true;
            }
            Instruction::Run(r) => {
                for m in &r.mounts {
                    expand(&vars, &m.text, out);
                }
            }
            Instruction::User(w) | Instruction::StopSignal(w) => {
                expand(&vars, w, out);
            }
            Instruction::Volume(ws) => {
                for w in ws {
                    expand(&vars, w, out);
                }
            }
            Instruction::Arg(list) => {
                for (k, default) in list {
                    secret("ARG", k, line, out);
                    let value = match (scope_build_arg(scope, k), default) {
                        (Some(v), _) => Some(v),
                        (None, Some(d)) => Some(expand(&vars, d, out)),
                        (None, None) => scope.global.get(k).cloned(),
                    };
                    if let Some(v) = value.filter(|_| !NON_ENV_ARGS.contains(&k.as_str())) {
                        vars.env.insert(k.clone(), v);
                    }
                    vars.args.push(k.clone());
                }
            }
            Instruction::Cmd(cl) | Instruction::Entrypoint(cl) => {
                let slot = if matches!(step.instruction, Instruction::Cmd(_)) {
                    &mut once.cmd
                } else {
                    &mut once.entrypoint
                };
                used_once(slot, &written, line, out);
                if matches!(cl, CommandLine::Shell(_)) && !vars.shell {
                    out.push(warning(
                        Rule::JsonArgsRecommended,
                        line,
                        format!("JSON arguments recommended for {written} to prevent unintended behavior related to OS signals"),
                    ));
                }
            }
            Instruction::Healthcheck(_) => used_once(&mut once.healthcheck, &written, line, out),
            Instruction::Shell(_) => vars.shell = true,
            Instruction::Expose(_) | Instruction::Maintainer(_) | Instruction::Onbuild(_) => {}
        }
    }
    vars
}

/// A build arg's value for a stage ARG. Kiln's scope holds them applied to the
/// global ARGs; a stage ARG takes the build arg whatever the global scope says.
fn scope_build_arg(scope: &Scope<'_>, key: &str) -> Option<String> {
    scope.build_args.get(key).cloned()
}

fn used_once(slot: &mut Option<usize>, written: &str, line: usize, out: &mut Vec<Warning>) {
    // BuildKit reports the earlier one: that is the one the image loses.
    if let Some(previous) = slot.replace(line) {
        out.push(warning(
            Rule::MultipleInstructionsDisallowed,
            previous,
            format!("Multiple {written} instructions should not be used in the same stage because only the last one will be used"),
        ));
    }
}

fn legacy_key_value(written: &str, line: usize) -> Warning {
    warning(
        Rule::LegacyKeyValueFormat,
        line,
        format!("\"{written} key=value\" should be used instead of legacy \"{written} key value\" format"),
    )
}

fn undefined_vars(vars: &StageVars, m: &Matches, line: usize, out: &mut Vec<Warning>) {
    for name in &m.unmatched {
        if vars.args.contains(name) || NON_ENV_ARGS.contains(&name.as_str()) {
            continue;
        }
        let mut msg = format!("Usage of undefined variable '${name}'");
        if let Some(s) = suggest(name, vars.env.keys()) {
            msg.push_str(&format!(" (did you mean ${s}?)"));
        }
        out.push(warning(Rule::UndefinedVar, line, msg));
    }
}

/// BuildKit's secret-name test: a token of the name (split on `_`) names a
/// secret and none says `public`, case-insensitively.
fn secret(instruction: &str, key: &str, line: usize, out: &mut Vec<Warning>) {
    const DENY: [&str; 10] = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    let lower = key.to_lowercase();
    let denied = DENY.iter().any(|t| edge_inner(&lower, t));
    let allowed = edge_inner(&lower, "public");
    if denied && !allowed {
        out.push(warning(
            Rule::SecretsUsedInArgOrEnv,
            line,
            format!(
                "Do not use ARG or ENV instructions for sensitive data ({instruction} {key:?})"
            ),
        ));
    }
}

/// `(?:_|^)TOKEN(?:_|$)`: the token between underscores or the name's ends.
fn edge_inner(name: &str, token: &str) -> bool {
    name.match_indices(token).any(|(i, _)| {
        let before = i == 0 || name.as_bytes()[i - 1] == b'_';
        let end = i + token.len();
        let after = end == name.len() || name.as_bytes()[end] == b'_';
        before && after
    })
}

#[cfg(test)]
mod tests;
