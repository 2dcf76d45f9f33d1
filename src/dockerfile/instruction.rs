//! Typed instructions grouped into stages, each with its line; words stay
//! unexpanded (expansion needs the ARG/ENV state at build time). `parse`
//! makes them from the parser's nodes.

use super::parser::Heredoc;

/// An error in one instruction, with its Dockerfile line and text.
#[derive(Debug, thiserror::Error)]
#[error("Dockerfile:{line}: {message}{}", if text.is_empty() { String::new() } else { format!(": {text}") })]
pub struct InstructionError {
    pub(crate) line: usize,
    pub(crate) text: String,
    pub(crate) message: String,
}

/// Where an instruction stands in the Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub(crate) line: usize,
    /// The instruction as written, continuations joined.
    pub(crate) text: String,
}

impl Location {
    pub(crate) fn error(&self, message: impl Into<String>) -> InstructionError {
        InstructionError {
            line: self.line,
            text: self.text.trim().to_string(),
            message: message.into(),
        }
    }
}

/// A command line: exec form (`["a","b"]`) or shell form (`a b`).
#[derive(Debug, Clone, PartialEq)]
pub enum CommandLine {
    Exec(Vec<String>),
    Shell(String),
}

/// COPY's (and ADD's) source and destination words plus flags, unexpanded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Copy {
    /// ADD, with its flags: URLs, git and archives as sources.
    pub(crate) add: Option<AddFlags>,
    pub(crate) sources: Vec<String>,
    pub(crate) dest: String,
    pub(crate) from: Option<String>,
    pub(crate) chown: Option<String>,
    pub(crate) chmod: Option<String>,
    pub(crate) link: bool,
    pub(crate) excludes: Vec<String>,
    pub(crate) heredocs: Vec<Heredoc>,
}

/// The flags only ADD takes, unexpanded.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct AddFlags {
    /// `--checksum=sha256:…` of a URL source.
    pub(crate) checksum: Option<String>,
    /// `--keep-git-dir`: a git source keeps its `.git`.
    pub(crate) keep_git_dir: bool,
}

/// Whether an ADD source is a URL BuildKit downloads.
pub(crate) fn is_url_source(src: &str) -> bool {
    src.starts_with("http://") || src.starts_with("https://")
}

/// Whether an ADD source names a git repository (BuildKit's `ParseGitRef`:
/// `git@`, `git://`, `ssh://`, or an HTTP(S) URL whose path ends in `.git`).
pub(crate) fn is_git_source(src: &str) -> bool {
    let path = src.split('#').next().unwrap_or(src);
    src.starts_with("git@")
        || src.starts_with("git://")
        || src.starts_with("ssh://")
        || (is_url_source(src) && path.trim_end_matches('/').ends_with(".git"))
}

/// HEALTHCHECK: the test and the durations in nanoseconds, unset ones `None`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Healthcheck {
    pub(crate) test: Vec<String>,
    pub(crate) interval: Option<i64>,
    pub(crate) timeout: Option<i64>,
    pub(crate) start_period: Option<i64>,
    pub(crate) start_interval: Option<i64>,
    pub(crate) retries: Option<i64>,
}

impl Healthcheck {
    /// As an image config holds it (Docker's `HealthConfig`), leaving out what
    /// the instruction does not set.
    pub(crate) fn to_config(&self) -> serde_json::Value {
        let mut hc = serde_json::Map::new();
        hc.insert("Test".into(), self.test.clone().into());
        for (key, value) in [
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
            ("Retries", self.retries),
        ] {
            if let Some(v) = value {
                hc.insert(key.into(), v.into());
            }
        }
        serde_json::Value::Object(hc)
    }
}

/// RUN: the command and its flags, unexpanded.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub(crate) command: CommandLine,
    pub(crate) heredocs: Vec<Heredoc>,
    /// `--mount` specs, each read once into its fields.
    pub(crate) mounts: Vec<super::mount::RunMount>,
    /// `--network=default|none|host`.
    pub(crate) network: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Instruction {
    Run(Run),
    Arg(ArgList),
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Workdir(String),
    Copy(Copy),
    Entrypoint(CommandLine),
    Cmd(CommandLine),
    Expose(Vec<String>),
    User(String),
    Volume(Vec<String>),
    StopSignal(String),
    Maintainer(String),
    Shell(Vec<String>),
    Healthcheck(Healthcheck),
    Onbuild(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub(crate) at: Location,
    pub(crate) instruction: Instruction,
}

/// `FROM image [AS name]` and the steps under it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub(crate) index: usize,
    pub(crate) at: Location,
    pub(crate) image: String,
    pub(crate) name: Option<String>,
    pub(crate) platform: Option<String>,
    pub(crate) steps: Vec<Step>,
}

/// `ARG` declarations: name and optional default.
pub(crate) type ArgList = Vec<(String, Option<String>)>;

/// A Dockerfile ready to plan: global ARGs, stages, and its escape character.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    pub(crate) escape: char,
    /// `# syntax=` as written: Kiln has one frontend and says so when asked for another.
    pub syntax: Option<String>,
    pub(crate) global_args: Vec<(Location, ArgList)>,
    pub(crate) stages: Vec<Stage>,
    /// What the build checks read that the instructions drop.
    pub(crate) facts: super::checks::Facts,
}

impl Dockerfile {
    /// Whether any stage has a RUN (the build may then need a sandbox).
    pub fn has_run(&self) -> bool {
        self.stages
            .iter()
            .flat_map(|s| &s.steps)
            .any(|s| matches!(s.instruction, Instruction::Run(_)))
    }

    /// The stage named `name` (case-insensitively, as BuildKit names them) among
    /// the first `before` stages.
    pub(crate) fn stage_named(&self, name: &str, before: usize) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        self.stages[..before.min(self.stages.len())]
            .iter()
            .position(|s| s.name.as_deref() == Some(&lower))
    }
}
