//! Rules that read the Dockerfile alone, for every stage (BuildKit runs them in
//! its parser, `instructions.Parse`, `validateStageNames` and
//! `validateCommandCasing`, before anything is resolved).

use super::{warning, Rule, Warning};
use crate::dockerfile::Dockerfile;
use std::collections::HashSet;

pub(super) fn check(df: &Dockerfile) -> Vec<Warning> {
    let mut out: Vec<Warning> = df
        .facts
        .empty_continuations
        .iter()
        .map(|&line| warning(Rule::NoEmptyContinuation, line, "Empty continuation line"))
        .collect();
    for node in &df.facts.nodes {
        let line = node.start_line;
        match node.keyword.as_str() {
            "maintainer" => out.push(warning(
                Rule::MaintainerDeprecated,
                line,
                "Maintainer instruction is deprecated in favor of using label",
            )),
            "from" if node.args.len() >= 3 => {
                let name = &node.args[2];
                if node.args.len() == 3 && *name != name.to_lowercase() {
                    out.push(warning(
                        Rule::StageNameCasing,
                        line,
                        format!("Stage name '{name}' should be lowercase"),
                    ));
                }
                let from = &node.original_keyword;
                let as_kw = &node.args[1];
                // An inconsistently cased FROM is ConsistentInstructionCasing's.
                let mismatch = if *from == from.to_lowercase() {
                    *as_kw != as_kw.to_lowercase()
                } else if *from == from.to_uppercase() {
                    *as_kw != as_kw.to_uppercase()
                } else {
                    false
                };
                if mismatch {
                    out.push(warning(
                        Rule::FromAsCasing,
                        line,
                        format!("'{as_kw}' and '{from}' keywords' casing do not match"),
                    ));
                }
            }
            _ => {}
        }
    }
    stage_names(df, &mut out);
    command_casing(df, &mut out);
    out
}

fn stage_names(df: &Dockerfile, out: &mut Vec<Warning>) {
    let mut seen = HashSet::new();
    for stage in &df.stages {
        let Some(name) = &stage.name else { continue };
        if matches!(name.as_str(), "context" | "scratch") {
            out.push(warning(
                Rule::ReservedStageName,
                stage.at.line,
                format!("Stage name should not use the same name as reserved stage {name:?}"),
            ));
        }
        if !seen.insert(name) {
            out.push(warning(
                Rule::DuplicateStageName,
                stage.at.line,
                format!("Duplicate stage name {name:?}, stage names should be unique"),
            ));
        }
    }
}

/// The keywords as written of FROM and every instruction after it (the global
/// ARGs are not a stage's commands), with their lines.
fn stage_keywords(df: &Dockerfile) -> Vec<(&str, usize)> {
    let nodes = &df.facts.nodes;
    let first_from = nodes
        .iter()
        .position(|n| n.keyword == "from")
        .unwrap_or(nodes.len());
    nodes[first_from..]
        .iter()
        .map(|n| (n.original_keyword.as_str(), n.start_line))
        .collect()
}

fn command_casing(df: &Dockerfile, out: &mut Vec<Warning>) {
    let keywords = stage_keywords(df);
    let (mut lower, mut upper) = (0, 0);
    for (k, _) in &keywords {
        if *k == k.to_lowercase() {
            lower += 1;
        } else if *k == k.to_uppercase() {
            upper += 1;
        }
    }
    let majority_lower = lower > upper;
    for (k, line) in keywords {
        let casing = if majority_lower && k != k.to_lowercase() {
            "lowercase"
        } else if !majority_lower && k != k.to_uppercase() {
            "uppercase"
        } else {
            continue;
        };
        out.push(warning(
            Rule::ConsistentInstructionCasing,
            line,
            format!("Command '{k}' should match the case of the command majority ({casing})"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::parse_dockerfile;

    fn rules(text: &str) -> Vec<(&'static str, usize, String)> {
        let df = parse_dockerfile(text).unwrap();
        check(&df)
            .into_iter()
            .map(|w| (w.rule.name(), w.line, w.message))
            .collect()
    }

    #[test]
    fn empty_continuation_is_reported_at_the_instructions_last_line() {
        assert_eq!(
            rules("FROM scratch\nENV A=1 \\\n\n  B=2\nENV C=3\n"),
            [("NoEmptyContinuation", 4, "Empty continuation line".into())]
        );
        // A comment inside a continuation is not an empty line.
        assert!(rules("FROM scratch\nENV A=1 \\\n# c\n  B=2\n").is_empty());
    }

    #[test]
    fn stage_name_and_as_casing() {
        assert_eq!(
            rules("FROM scratch as Build\n"),
            [
                (
                    "StageNameCasing",
                    1,
                    "Stage name 'Build' should be lowercase".into()
                ),
                (
                    "FromAsCasing",
                    1,
                    "'as' and 'FROM' keywords' casing do not match".into()
                )
            ]
        );
        assert!(rules("FROM scratch AS build\nfrom build as two\n")
            .iter()
            .all(|r| r.0 == "ConsistentInstructionCasing"));
        assert_eq!(
            rules("from scratch AS x\n"),
            [(
                "FromAsCasing",
                1,
                "'AS' and 'from' keywords' casing do not match".into()
            )]
        );
    }

    #[test]
    fn maintainer_is_deprecated() {
        assert_eq!(
            rules("FROM scratch\nMAINTAINER me\n"),
            [(
                "MaintainerDeprecated",
                2,
                "Maintainer instruction is deprecated in favor of using label".into()
            )]
        );
    }

    #[test]
    fn reserved_and_duplicate_stage_names() {
        assert_eq!(
            rules("FROM scratch AS context\nFROM scratch AS a\nFROM scratch AS A\n"),
            [
                (
                    "StageNameCasing",
                    3,
                    "Stage name 'A' should be lowercase".into()
                ),
                (
                    "ReservedStageName",
                    1,
                    "Stage name should not use the same name as reserved stage \"context\"".into()
                ),
                (
                    "DuplicateStageName",
                    3,
                    "Duplicate stage name \"a\", stage names should be unique".into()
                ),
            ]
        );
    }

    #[test]
    fn casing_follows_the_majority() {
        assert_eq!(
            rules("arg x\nFROM scratch\nenv a=1\nlabel b=2\nCopy a b\n"),
            [
                (
                    "ConsistentInstructionCasing",
                    2,
                    "Command 'FROM' should match the case of the command majority (lowercase)"
                        .into()
                ),
                (
                    "ConsistentInstructionCasing",
                    5,
                    "Command 'Copy' should match the case of the command majority (lowercase)"
                        .into()
                ),
            ]
        );
        // A tie goes to upper case.
        assert_eq!(
            rules("FROM scratch\nenv a=1\n")[0].2,
            "Command 'env' should match the case of the command majority (uppercase)"
        );
    }
}
