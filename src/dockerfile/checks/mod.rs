//! BuildKit v0.21's build checks (its `frontend/dockerfile/linter` rules, run
//! where `dockerfile2llb` and `instructions` run them): the same rule names,
//! messages and reported lines, the `# check=` directive and the
//! `BUILDKIT_DOCKERFILE_CHECK` build arg that overrides it.
//!
//! `syntax` holds the rules that read the Dockerfile alone (every stage);
//! `flow` those that follow each stage's variables and base config (the FROM
//! lines of every stage, the steps of the stages the build dispatches).

mod flow;
mod syntax;

use super::parser::{Ast, Node};
use super::Dockerfile;

pub(crate) use flow::{BaseFacts, Scope};

/// The build arg that replaces the `# check=` directive (dockerui's
/// `build-arg:BUILDKIT_DOCKERFILE_CHECK`).
pub(crate) const CHECK_BUILD_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

/// What the parser saw that the checks need and the typed instructions drop.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    /// `# check=` as written.
    pub(crate) check: Option<String>,
    /// Last lines of instructions that had an empty continuation line.
    pub(crate) empty_continuations: Vec<usize>,
    /// Every instruction node, keywords as written.
    pub(crate) nodes: Vec<Node>,
}

impl Facts {
    pub(crate) fn of(ast: &Ast) -> Facts {
        Facts {
            check: ast.check.clone(),
            empty_continuations: ast.empty_continuations.clone(),
            nodes: ast.nodes.clone(),
        }
    }

    /// The node that starts on `line`.
    fn node_at(&self, line: usize) -> Option<&Node> {
        self.nodes.iter().find(|n| n.start_line == line)
    }
}

/// BuildKit v0.21's non-experimental rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rule {
    StageNameCasing,
    FromAsCasing,
    NoEmptyContinuation,
    ConsistentInstructionCasing,
    DuplicateStageName,
    ReservedStageName,
    JsonArgsRecommended,
    MaintainerDeprecated,
    UndefinedArgInFrom,
    WorkdirRelativePath,
    UndefinedVar,
    MultipleInstructionsDisallowed,
    LegacyKeyValueFormat,
    InvalidBaseImagePlatform,
    RedundantTargetPlatform,
    SecretsUsedInArgOrEnv,
    InvalidDefaultArgInFrom,
    FromPlatformFlagConstDisallowed,
}

impl Rule {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Rule::StageNameCasing => "StageNameCasing",
            Rule::FromAsCasing => "FromAsCasing",
            Rule::NoEmptyContinuation => "NoEmptyContinuation",
            Rule::ConsistentInstructionCasing => "ConsistentInstructionCasing",
            Rule::DuplicateStageName => "DuplicateStageName",
            Rule::ReservedStageName => "ReservedStageName",
            Rule::JsonArgsRecommended => "JSONArgsRecommended",
            Rule::MaintainerDeprecated => "MaintainerDeprecated",
            Rule::UndefinedArgInFrom => "UndefinedArgInFrom",
            Rule::WorkdirRelativePath => "WorkdirRelativePath",
            Rule::UndefinedVar => "UndefinedVar",
            Rule::MultipleInstructionsDisallowed => "MultipleInstructionsDisallowed",
            Rule::LegacyKeyValueFormat => "LegacyKeyValueFormat",
            Rule::InvalidBaseImagePlatform => "InvalidBaseImagePlatform",
            Rule::RedundantTargetPlatform => "RedundantTargetPlatform",
            Rule::SecretsUsedInArgOrEnv => "SecretsUsedInArgOrEnv",
            Rule::InvalidDefaultArgInFrom => "InvalidDefaultArgInFrom",
            Rule::FromPlatformFlagConstDisallowed => "FromPlatformFlagConstDisallowed",
        }
    }
}

/// One violation: the rule, BuildKit's message and the line it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Warning {
    pub(crate) rule: Rule,
    pub(crate) message: String,
    pub(crate) line: usize,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (Dockerfile:{})",
            self.rule.name(),
            self.message,
            self.line
        )
    }
}

fn warning(rule: Rule, line: usize, message: impl Into<String>) -> Warning {
    Warning {
        rule,
        message: message.into(),
        line,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("failed to parse {origin}: {reason}")]
    Options {
        origin: &'static str,
        reason: String,
    },
    /// `error=true` and at least one rule fired: the first line and every rule.
    #[error("Dockerfile:{line}: lint violation found for rules: {rules}")]
    Violations { line: usize, rules: String },
}

/// `# check=skip=…;error=…;experimental=…`, as BuildKit's `ParseLintOptions`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CheckConfig {
    pub(crate) skip_all: bool,
    pub(crate) skip: Vec<String>,
    pub(crate) experimental_all: bool,
    pub(crate) experimental: Vec<String>,
    pub(crate) error: bool,
}

impl CheckConfig {
    /// The build arg wins over the directive, as in BuildKit's dockerui.
    pub(crate) fn of(
        df: &Dockerfile,
        build_args: &std::collections::BTreeMap<String, String>,
    ) -> Result<CheckConfig, CheckError> {
        let (text, origin) = match build_args.get(CHECK_BUILD_ARG) {
            Some(v) => (v.as_str(), "build-arg:BUILDKIT_DOCKERFILE_CHECK"),
            None => (
                df.facts.check.as_deref().unwrap_or_default(),
                "check options",
            ),
        };
        CheckConfig::parse(text).map_err(|reason| CheckError::Options { origin, reason })
    }

    pub(crate) fn parse(text: &str) -> Result<CheckConfig, String> {
        let text = text.trim();
        let mut c = CheckConfig::default();
        if text.is_empty() {
            return Ok(c);
        }
        let list = |v: &str| v.split(',').map(|r| r.trim().to_string()).collect();
        // BuildKit splits into at most three parts; a fourth stays in the third.
        for part in text.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!("invalid check option {part:?}"));
            };
            match k.trim() {
                "skip" if v.trim() == "all" => c.skip_all = true,
                "skip" => c.skip = list(v.trim()),
                "experimental" if v.trim() == "all" => c.experimental_all = true,
                "experimental" => c.experimental = list(v.trim()),
                "error" => {
                    c.error = parse_go_bool(v.trim()).ok_or_else(|| {
                        format!(
                            "failed to parse check option {part:?}: strconv.ParseBool: parsing {:?}: invalid syntax",
                            v.trim()
                        )
                    })?
                }
                other => return Err(format!("invalid check option {other:?}")),
            }
        }
        Ok(c)
    }

    /// The warnings that are not skipped (every rule here is non-experimental).
    pub(crate) fn keep(&self, warnings: Vec<Warning>) -> Vec<Warning> {
        warnings
            .into_iter()
            .filter(|w| !self.skip_all && !self.skip.iter().any(|s| s == w.rule.name()))
            .collect()
    }

    /// With `error=true`, any kept warning fails the build.
    pub(crate) fn verdict(&self, kept: &[Warning]) -> Result<(), CheckError> {
        let Some(first) = kept.iter().map(|w| w.line).min().filter(|_| self.error) else {
            return Ok(());
        };
        let mut rules: Vec<&str> = kept.iter().map(|w| w.rule.name()).collect();
        rules.sort_unstable();
        rules.dedup();
        Err(CheckError::Violations {
            line: first,
            rules: rules.join(", "),
        })
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Every rule's warnings for a build, in the order BuildKit reports them.
pub(crate) fn collect(df: &Dockerfile, scope: &Scope<'_>) -> Vec<Warning> {
    let mut out = syntax::check(df);
    out.extend(flow::check(df, scope));
    out
}

/// BuildKit's `suggest.Search` (case-sensitive): the closest option within
/// Levenshtein distance 2, none on an exact match.
fn suggest<'o>(val: &str, options: impl IntoIterator<Item = &'o String>) -> Option<String> {
    let mut best = None;
    let mut min = 3;
    for opt in options {
        if opt == val {
            return None;
        }
        let d = levenshtein(val, opt);
        if d < min {
            min = d;
            best = Some(opt.clone());
        }
    }
    best
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_as_buildkit_does() {
        let c = CheckConfig::parse("skip=JSONArgsRecommended, StageNameCasing;error=true").unwrap();
        assert_eq!(c.skip, ["JSONArgsRecommended", "StageNameCasing"]);
        assert!(c.error);
        assert!(CheckConfig::parse("skip=all").unwrap().skip_all);
        assert!(CheckConfig::parse("error=T").unwrap().error);
        assert_eq!(
            CheckConfig::parse("bogus").unwrap_err(),
            "invalid check option \"bogus\""
        );
        assert_eq!(
            CheckConfig::parse("level=1").unwrap_err(),
            "invalid check option \"level\""
        );
        assert!(CheckConfig::parse("error=maybe").is_err());
        assert_eq!(CheckConfig::parse(" ").unwrap(), CheckConfig::default());
    }

    #[test]
    fn the_build_arg_wins_over_the_directive() {
        let df = crate::dockerfile::parse_dockerfile("# check=error=true\nFROM scratch\n").unwrap();
        let none = std::collections::BTreeMap::new();
        assert!(CheckConfig::of(&df, &none).unwrap().error);
        let arg = [(CHECK_BUILD_ARG.to_string(), "skip=all".to_string())].into();
        let c = CheckConfig::of(&df, &arg).unwrap();
        assert!(!c.error && c.skip_all);
        let bad = [(CHECK_BUILD_ARG.to_string(), "x".to_string())].into();
        let e = CheckConfig::of(&df, &bad).unwrap_err().to_string();
        assert!(
            e.starts_with("failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK"),
            "{e}"
        );
    }

    #[test]
    fn skip_and_error_decide_the_verdict() {
        let w = vec![
            warning(Rule::UndefinedVar, 5, "x"),
            warning(Rule::JsonArgsRecommended, 3, "y"),
            warning(Rule::UndefinedVar, 7, "z"),
        ];
        let c = CheckConfig::parse("skip=JSONArgsRecommended;error=true").unwrap();
        let kept = c.keep(w.clone());
        assert_eq!(kept.len(), 2);
        let e = c.verdict(&kept).unwrap_err().to_string();
        assert_eq!(
            e,
            "Dockerfile:5: lint violation found for rules: UndefinedVar"
        );
        let c = CheckConfig::parse("error=true").unwrap();
        let e = c.verdict(&c.keep(w.clone())).unwrap_err().to_string();
        assert_eq!(
            e,
            "Dockerfile:3: lint violation found for rules: JSONArgsRecommended, UndefinedVar"
        );
        assert!(CheckConfig::default().verdict(&w).is_ok());
        assert!(CheckConfig::parse("skip=all;error=true")
            .unwrap()
            .keep(w)
            .is_empty());
    }

    #[test]
    fn suggestions_are_within_two_edits() {
        let opts = ["PATH".to_string(), "VERSION".to_string()];
        assert_eq!(suggest("VERSON", &opts).as_deref(), Some("VERSION"));
        assert_eq!(suggest("NOPE", &opts), None);
        assert_eq!(suggest("PATH", &opts), None);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }
}
