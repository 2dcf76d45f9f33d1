//! Nodes → typed instructions grouped into stages: one `parse_x` per
//! instruction, BuildKit's flag rules, and the refusals BuildKit makes at parse
//! time (blank ARG and ENV names, an empty VOLUME), with the step's line.

use super::instruction::*;
use super::parser::{Ast, Node};

/// Parses a base image's ONBUILD triggers into steps that run first in a stage
/// whose FROM is at `from`, as BuildKit prepends them. Errors name that FROM line
/// and the trigger.
pub fn parse_triggers(triggers: &[String], from: &Location) -> Result<Vec<Step>, InstructionError> {
    let relocate = |text: &str| Location {
        line: from.line,
        text: format!("ONBUILD {}", text.trim()),
    };
    let df = parse_dockerfile(&format!("FROM scratch\n{}\n", triggers.join("\n")))
        .map_err(|e| from.error(format!("the base image's ONBUILD trigger: {}", e.message)))?;
    if df.stages.len() != 1 {
        return Err(from.error("an ONBUILD trigger of the base image holds a FROM"));
    }
    let steps = df.stages.into_iter().flat_map(|s| s.steps);
    Ok(steps
        .map(|s| Step {
            at: relocate(&s.at.text),
            instruction: s.instruction,
        })
        .collect())
}

/// Parses text into stages.
pub fn parse_dockerfile(text: &str) -> Result<Dockerfile, InstructionError> {
    let ast: Ast = super::parser::parse(text).map_err(|e| InstructionError {
        line: e.line,
        text: String::new(),
        message: e.message,
    })?;
    let mut df = Dockerfile {
        escape: ast.escape,
        syntax: ast.syntax.clone(),
        global_args: Vec::new(),
        stages: Vec::new(),
        facts: super::checks::Facts::of(&ast),
    };
    for node in &ast.nodes {
        let at = Location {
            line: node.start_line,
            text: node.original.clone(),
        };
        if node.keyword == "from" {
            df.stages.push(parse_from(node, &at, df.stages.len())?);
            continue;
        }
        let instruction = parse_instruction(node, &at)?;
        match (df.stages.last_mut(), instruction) {
            (Some(stage), instruction) => stage.steps.push(Step { at, instruction }),
            (None, Instruction::Arg(args)) => df.global_args.push((at, args)),
            (None, _) => {
                return Err(at.error(
                    "no build stage in current context (the first instruction must be FROM or ARG)",
                ))
            }
        }
    }
    if df.stages.is_empty() {
        return Err(InstructionError {
            line: 1,
            text: String::new(),
            message: "the Dockerfile has no FROM instruction".into(),
        });
    }
    Ok(df)
}

/// Flags as `--name=value`, checked against what the instruction allows.
struct Flags<'n> {
    at: &'n Location,
    values: Vec<(String, Option<String>)>,
}

impl<'n> Flags<'n> {
    fn new(node: &Node, at: &'n Location, allowed: &[&str]) -> Result<Self, InstructionError> {
        let mut values = Vec::new();
        for f in &node.flags {
            let body = f.strip_prefix("--").unwrap_or(f);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            if !allowed.contains(&name.as_str()) {
                return Err(at.error(format!("unknown flag: --{name}")));
            }
            values.push((name, value));
        }
        Ok(Flags { at, values })
    }

    fn string(&self, name: &str) -> Result<Option<String>, InstructionError> {
        match self.values.iter().rev().find(|(n, _)| n == name) {
            None => Ok(None),
            Some((_, Some(v))) => Ok(Some(v.clone())),
            Some((_, None)) => Err(self.at.error(format!("missing a value on flag: --{name}"))),
        }
    }

    fn strings(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| v.clone())
            .collect()
    }

    fn bool(&self, name: &str) -> Result<bool, InstructionError> {
        match self.values.iter().rev().find(|(n, _)| n == name) {
            None => Ok(false),
            Some((_, None)) => Ok(true),
            Some((_, Some(v))) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(self.at.error(format!(
                    "expecting boolean value for flag --{name}, not: {v}"
                ))),
            },
        }
    }
}

fn parse_from(node: &Node, at: &Location, index: usize) -> Result<Stage, InstructionError> {
    let flags = Flags::new(node, at, &["platform"])?;
    let (image, name) = match node.args.as_slice() {
        [image] => (image.clone(), None),
        [image, kw, name] if kw.eq_ignore_ascii_case("as") => {
            let valid = !name.is_empty()
                && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !valid {
                return Err(at.error(format!("invalid name for build stage: {name:?}, name can't start with a number or contain symbols")));
            }
            (image.clone(), Some(name.to_ascii_lowercase()))
        }
        _ => return Err(at.error("FROM requires either one or three arguments")),
    };
    Ok(Stage {
        index,
        at: at.clone(),
        image,
        name,
        platform: flags.string("platform")?,
        steps: Vec::new(),
    })
}

fn no_flags(node: &Node, at: &Location) -> Result<(), InstructionError> {
    Flags::new(node, at, &[]).map(|_| ())
}

fn one_arg(node: &Node, at: &Location) -> Result<String, InstructionError> {
    no_flags(node, at)?;
    match node.args.as_slice() {
        [a] => Ok(a.clone()),
        _ => Err(at.error(format!(
            "{} requires exactly one argument",
            node.keyword.to_ascii_uppercase()
        ))),
    }
}

fn command_line(node: &Node, at: &Location) -> Result<CommandLine, InstructionError> {
    no_flags(node, at)?;
    Ok(if node.json {
        CommandLine::Exec(node.args.clone())
    } else {
        CommandLine::Shell(node.args.first().cloned().unwrap_or_default())
    })
}

fn triples(node: &Node, at: &Location) -> Result<Vec<(String, String)>, InstructionError> {
    no_flags(node, at)?;
    if node.args.is_empty() {
        return Err(at.error(format!(
            "{} requires at least one argument",
            node.keyword.to_ascii_uppercase()
        )));
    }
    Ok(node
        .args
        .chunks(3)
        .map(|c| (c[0].clone(), c.get(1).cloned().unwrap_or_default()))
        .collect())
}

fn parse_instruction(node: &Node, at: &Location) -> Result<Instruction, InstructionError> {
    let kw = node.keyword.as_str();
    Ok(match kw {
        "arg" => parse_arg(node, at)?,
        "env" => parse_env(node, at)?,
        "label" => Instruction::Label(triples(node, at)?),
        "workdir" => Instruction::Workdir(one_arg(node, at)?),
        "user" => Instruction::User(one_arg(node, at)?),
        "stopsignal" => Instruction::StopSignal(one_arg(node, at)?),
        "maintainer" => Instruction::Maintainer(one_arg(node, at)?),
        "entrypoint" => Instruction::Entrypoint(command_line(node, at)?),
        "cmd" => Instruction::Cmd(command_line(node, at)?),
        "shell" => parse_shell(node, at)?,
        "expose" | "volume" => parse_expose_or_volume(node, at, kw)?,
        "copy" | "add" => parse_copy(node, at, kw)?,
        "healthcheck" => parse_healthcheck(node, at)?,
        "onbuild" => parse_onbuild(node, at)?,
        "run" => parse_run(node, at)?,
        _ => return Err(at.error(format!("unknown instruction: {}", node.original_keyword))),
    })
}

/// ARG: names with optional defaults, no blank name.
fn parse_arg(node: &Node, at: &Location) -> Result<Instruction, InstructionError> {
    no_flags(node, at)?;
    if node.args.is_empty() {
        return Err(at.error("ARG requires at least one argument"));
    }
    let args: ArgList = node
        .args
        .iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (w.clone(), None),
        })
        .collect();
    if args.iter().any(|(k, _)| k.is_empty()) {
        return Err(at.error("ARG names can not be blank"));
    }
    Ok(Instruction::Arg(args))
}

/// ENV: name and value pairs, no blank name.
fn parse_env(node: &Node, at: &Location) -> Result<Instruction, InstructionError> {
    let pairs = triples(node, at)?;
    // BuildKit's parseKvps refuses a blank name before anything runs.
    if pairs.iter().any(|(k, _)| k.is_empty()) {
        return Err(at.error("ENV names can not be blank"));
    }
    Ok(Instruction::Env(pairs))
}

/// SHELL: its JSON argument list.
fn parse_shell(node: &Node, at: &Location) -> Result<Instruction, InstructionError> {
    no_flags(node, at)?;
    if !node.json || node.args.is_empty() {
        return Err(at.error("SHELL requires the arguments to be in JSON form"));
    }
    Ok(Instruction::Shell(node.args.clone()))
}

/// EXPOSE and VOLUME: their words (a VOLUME none of them blank).
fn parse_expose_or_volume(
    node: &Node,
    at: &Location,
    kw: &str,
) -> Result<Instruction, InstructionError> {
    no_flags(node, at)?;
    if node.args.is_empty() {
        return Err(at.error(format!(
            "{} requires at least one argument",
            kw.to_ascii_uppercase()
        )));
    }
    Ok(if kw == "expose" {
        Instruction::Expose(node.args.clone())
    } else {
        // BuildKit's parseVolume; an expansion that comes out empty
        // is refused when the step runs.
        if node.args.iter().any(|a| a.trim().is_empty()) {
            return Err(at.error("VOLUME specified can not be an empty string"));
        }
        Instruction::Volume(node.args.clone())
    })
}

/// COPY and ADD: sources, destination and flags (ADD's own flags only for ADD).
fn parse_copy(node: &Node, at: &Location, kw: &str) -> Result<Instruction, InstructionError> {
    // BuildKit v0.21's flags: ADD has no --from (nor --unpack yet).
    let allowed: &[&str] = if kw == "add" {
        &[
            "chown",
            "chmod",
            "link",
            "exclude",
            "checksum",
            "keep-git-dir",
        ]
    } else {
        &["from", "chown", "chmod", "link", "exclude", "parents"]
    };
    let flags = Flags::new(node, at, allowed)?;
    let keyword = kw.to_ascii_uppercase();
    if flags.bool("parents")? {
        return Err(at.error("COPY --parents is not supported yet"));
    }
    let n = node.args.len();
    let min = if node.heredocs.is_empty() { 2 } else { 1 };
    if n < min {
        return Err(at.error(format!("{keyword} requires at least two arguments, but only one was provided. Destination could not be determined")));
    }
    let add = if kw == "add" {
        Some(AddFlags {
            checksum: flags.string("checksum")?,
            keep_git_dir: flags.bool("keep-git-dir")?,
        })
    } else {
        None
    };
    Ok(Instruction::Copy(Copy {
        add,
        sources: node.args[..n - 1].to_vec(),
        dest: node.args[n - 1].clone(),
        from: flags.string("from")?,
        chown: flags.string("chown")?,
        chmod: flags.string("chmod")?,
        link: flags.bool("link")?,
        excludes: flags.strings("exclude"),
        heredocs: node.heredocs.clone(),
    }))
}

/// HEALTHCHECK: its test and durations; `NONE` turns a base's check off.
fn parse_healthcheck(node: &Node, at: &Location) -> Result<Instruction, InstructionError> {
    // Carried into the config as BuildKit writes it; Kiln runs no containers.
    let flags = Flags::new(
        node,
        at,
        &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
    )?;
    let test = match node.args.first().map(|s| s.to_ascii_uppercase()) {
        Some(t) if t == "NONE" => vec!["NONE".to_string()],
        Some(t) if t == "CMD" => {
            if node.json {
                std::iter::once("CMD".to_string())
                    .chain(node.args[1..].iter().cloned())
                    .collect()
            } else {
                vec![
                    "CMD-SHELL".to_string(),
                    node.args.get(1).cloned().unwrap_or_default(),
                ]
            }
        }
        _ => return Err(at.error("HEALTHCHECK requires CMD or NONE")),
    };
    let duration = |flag: &str| -> Result<Option<i64>, InstructionError> {
        let Some(v) = flags.string(flag)? else {
            return Ok(None);
        };
        crate::times::parse_go_duration(&v)
            .map(Some)
            .ok_or_else(|| at.error(format!("invalid duration for --{flag}: {v}")))
    };
    let hc = Healthcheck {
        test,
        interval: duration("interval")?,
        timeout: duration("timeout")?,
        start_period: duration("start-period")?,
        start_interval: duration("start-interval")?,
        retries: match flags.string("retries")? {
            Some(r) => Some(
                r.parse()
                    .map_err(|_| at.error(format!("invalid --retries: {r}")))?,
            ),
            None => None,
        },
    };
    Ok(Instruction::Healthcheck(hc))
}

/// ONBUILD: the trigger as written, with its heredoc bodies.
fn parse_onbuild(node: &Node, at: &Location) -> Result<Instruction, InstructionError> {
    let sub = node
        .sub
        .as_ref()
        .ok_or_else(|| at.error("ONBUILD requires an instruction"))?;
    if matches!(sub.keyword.as_str(), "onbuild" | "from" | "maintainer") {
        return Err(at.error(format!(
            "{} isn't allowed as an ONBUILD trigger",
            sub.keyword.to_ascii_uppercase()
        )));
    }
    let text = node.original.trim();
    let mut trigger = text
        .split_once(char::is_whitespace)
        .map(|(_, r)| r.trim())
        .unwrap_or_default()
        .to_string();
    // BuildKit keeps a trigger's heredoc bodies in the trigger text.
    for h in &node.heredocs {
        trigger.push('\n');
        trigger.push_str(&h.raw);
        trigger.push_str(&h.name);
    }
    Ok(Instruction::Onbuild(trigger))
}

/// RUN: the command, heredocs, mounts and network mode.
fn parse_run(node: &Node, at: &Location) -> Result<Instruction, InstructionError> {
    // No `--security` (nor `--device`): BuildKit v0.21 registers them only
    // in the labs syntax (build tags dfrunsecurity, dfrundevice), so the
    // stable one refuses them as unknown flags.
    let flags = Flags::new(node, at, &["mount", "network"])?;
    if node.args.is_empty() && node.heredocs.is_empty() {
        return Err(at.error("RUN requires at least one argument"));
    }
    let network = flags.string("network")?;
    if let Some(n) = &network {
        if !matches!(n.as_str(), "default" | "none" | "host") {
            return Err(at.error(format!("unsupported network mode: {n}")));
        }
    }
    Ok(Instruction::Run(Run {
        command: if node.json {
            CommandLine::Exec(node.args.clone())
        } else {
            CommandLine::Shell(node.args.first().cloned().unwrap_or_default())
        },
        heredocs: node.heredocs.clone(),
        mounts: flags
            .strings("mount")
            .into_iter()
            .map(super::mount::RunMount::new)
            .collect(),
        network,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_and_global_args() {
        let df = parse_dockerfile("ARG V=1\nFROM a:$V AS Build\nCOPY --from=x --chown=1:2 a b /d/\nFROM scratch\nENTRYPOINT [\"/x\"]\n").unwrap();
        assert_eq!(df.global_args.len(), 1);
        assert_eq!(df.stages.len(), 2);
        assert_eq!(df.stages[0].name.as_deref(), Some("build"));
        let Instruction::Copy(c) = &df.stages[0].steps[0].instruction else {
            panic!()
        };
        assert_eq!(
            (c.sources.clone(), c.dest.as_str()),
            (vec!["a".to_string(), "b".to_string()], "/d/")
        );
        assert_eq!(c.from.as_deref(), Some("x"));
        assert_eq!(df.stages[1].steps[0].at.line, 5);
    }

    #[test]
    fn healthcheck_is_typed_and_written_as_the_config_holds_it() {
        let df = parse_dockerfile("FROM a\nHEALTHCHECK --retries=3 --interval=5s CMD curl -f x\n")
            .unwrap();
        let Instruction::Healthcheck(h) = &df.stages[0].steps[0].instruction else {
            panic!()
        };
        assert_eq!(h.test, ["CMD-SHELL", "curl -f x"]);
        assert_eq!(
            (h.interval, h.retries, h.timeout),
            (Some(5_000_000_000), Some(3), None)
        );
        assert_eq!(
            h.to_config().to_string(),
            r#"{"Interval":5000000000,"Retries":3,"Test":["CMD-SHELL","curl -f x"]}"#
        );
    }

    #[test]
    fn blank_env_names_and_empty_volumes_are_refused_at_parse_time() {
        let e = parse_dockerfile("FROM a\nRUN x\nENV =x\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Dockerfile:3: ENV names can not be blank: ENV =x"
        );
        let e = parse_dockerfile("FROM a\nVOLUME [\"/a\", \" \"]\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(
            e.to_string()
                .contains("VOLUME specified can not be an empty string"),
            "{e}"
        );
    }

    #[test]
    fn blank_arg_names_are_refused_as_buildkit_does() {
        let e = parse_dockerfile("FROM a\nARG =x\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().contains("ARG names can not be blank"), "{e}");
        let e = parse_dockerfile("ARG A=1 =2\nFROM a\n").unwrap_err();
        assert_eq!(e.line, 1);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_dockerfile("FROM a\nCOPY --bogus=1 a b\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().contains("unknown flag: --bogus"), "{e}");
        let e = parse_dockerfile("FROM a\nRUN --security=sandbox true\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().contains("unknown flag: --security"), "{e}");
        let e = parse_dockerfile("FROM a\n\nFROBNICATE x\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Dockerfile:3: unknown instruction: FROBNICATE"),
            "{e}"
        );
        assert!(parse_dockerfile("COPY a b\n").is_err());
        assert!(parse_dockerfile("ENV A=1\n").is_err());
    }
}
