//! The instructions that change only the image config (ENV, LABEL, CMD,
//! ENTRYPOINT, EXPOSE, VOLUME, USER, SHELL, STOPSIGNAL, HEALTHCHECK, ONBUILD,
//! MAINTAINER): the new config and BuildKit's history text.

use super::Step;
use crate::dispatch::effect::Effect;
use crate::dispatch::FrontError;
use crate::dispatch::{history, BuildError};
use crate::dockerfile::shell;
use crate::dockerfile::{CommandLine, Instruction};
use crate::image::spec::ImageConfig;
use std::collections::BTreeMap;

fn shell_form(config: &ImageConfig, cmd: &CommandLine) -> Vec<String> {
    match cmd {
        CommandLine::Exec(v) => v.clone(),
        CommandLine::Shell(s) => {
            let mut v = config
                .config
                .shell
                .clone()
                .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
            v.push(s.clone());
            v
        }
    }
}

/// Instructions that change only the config: the new config and the history text
/// BuildKit writes for it (none for ONBUILD, which BuildKit does not record).
/// An earlier CMD of the stage (`cmd_set`) is kept by a later ENTRYPOINT.
pub(super) fn config(s: &Step, ins: &Instruction) -> Result<Effect, BuildError> {
    let (config, cmd_set, esc, env) = (&s.st.config, s.st.cmd_set, s.b.df.escape, &s.env);
    let original = &s.text();
    let x = |w: &str| shell::expand(w, esc, env);
    let mut new = config.clone();
    let mut effect = Effect::default();
    let cfg = &mut new.config;
    let text = match ins {
        Instruction::Env(pairs) => {
            let expanded = expand_pairs(pairs, &x)?;
            for (k, v) in &expanded {
                // An expansion may leave a name empty; a written one is refused at parse time.
                if k.is_empty() {
                    return Err(FrontError::BlankEnvName.into());
                }
                cfg.set_env(k, v);
            }
            // Last assignment wins: this ENV ends an ARG of the same name.
            effect.unset_args = expanded.iter().map(|(k, _)| k.clone()).collect();
            history::pairs("ENV", &expanded)
        }
        Instruction::Label(pairs) => {
            let expanded = expand_pairs(pairs, &x)?;
            let labels = cfg.labels.get_or_insert_with(BTreeMap::new);
            labels.extend(expanded.iter().cloned());
            history::pairs("LABEL", &expanded)
        }
        Instruction::Entrypoint(c) => {
            let v = shell_form(config, c);
            let text = format!("ENTRYPOINT {}", history::quoted_list(&v));
            cfg.entrypoint = Some(v);
            if !cmd_set {
                cfg.cmd = None;
            }
            text
        }
        Instruction::Cmd(c) => {
            let v = shell_form(config, c);
            let text = format!("CMD {}", history::quoted_list(&v));
            cfg.cmd = Some(v);
            // BuildKit sets it for every CMD (Docker's deprecated field, kept for
            // compatibility).
            cfg.other
                .insert("ArgsEscaped".into(), serde_json::Value::Bool(true));
            effect.cmd_set = true;
            text
        }
        Instruction::Expose(ports) => {
            let mut these = Vec::new();
            for p in ports {
                for word in shell::expand_words(p, esc, env)? {
                    these.extend(expand_port(&word)?);
                }
            }
            let exposed = cfg.exposed_ports.get_or_insert_with(BTreeMap::new);
            exposed.extend(these.iter().map(|p| (p.clone(), serde_json::json!({}))));
            format!("EXPOSE {}", history::port_map(&these))
        }
        Instruction::User(u) => {
            let u = x(u)?;
            cfg.user = Some(u.clone());
            format!("USER {u}")
        }
        Instruction::Volume(vs) => {
            let mut expanded = Vec::new();
            for v in vs {
                let v = x(v)?;
                // An expansion may leave one empty; a written one is refused at parse time.
                if v.trim().is_empty() {
                    return Err(FrontError::EmptyVolume.into());
                }
                expanded.push(v);
            }
            let volumes = cfg.volumes.get_or_insert_with(BTreeMap::new);
            volumes.extend(expanded.iter().map(|v| (v.clone(), serde_json::json!({}))));
            format!("VOLUME {}", history::plain_list(&expanded))
        }
        Instruction::StopSignal(s) => {
            let s = x(s)?;
            cfg.stop_signal = Some(s.clone());
            format!("STOPSIGNAL {s}")
        }
        Instruction::Maintainer(m) => {
            let m = x(m)?;
            new.author = Some(m.clone());
            format!("MAINTAINER {m}")
        }
        Instruction::Shell(s) => {
            cfg.shell = Some(s.clone());
            format!("SHELL {}", history::plain_list(s))
        }
        // BuildKit prints Go's `%q` of a struct pointer here; the instruction's
        // own text is kept instead (noted in docs/architecture.md).
        Instruction::Healthcheck(h) => {
            cfg.healthcheck = Some(h.to_config());
            original.to_string()
        }
        Instruction::Onbuild(t) => {
            cfg.on_build.get_or_insert_with(Vec::new).push(t.clone());
            effect.config = Some(Box::new(new));
            return Ok(effect);
        }
        Instruction::Arg(_)
        | Instruction::Copy(_)
        | Instruction::Workdir(_)
        | Instruction::Run(_) => original.to_string(),
    };
    effect.config = Some(Box::new(new));
    effect.history = Some(text);
    Ok(effect)
}

/// Each name and value expanded, in order.
fn expand_pairs(
    pairs: &[(String, String)],
    x: &dyn Fn(&str) -> Result<String, crate::dockerfile::shell::ShellError>,
) -> Result<Vec<(String, String)>, BuildError> {
    Ok(pairs
        .iter()
        .map(|(k, v)| Ok((x(k)?, x(v)?)))
        .collect::<Result<_, crate::dockerfile::shell::ShellError>>()?)
}

/// `80`, `80/udp`, `8000-8002/tcp` → `80/tcp` …
fn expand_port(spec: &str) -> Result<Vec<String>, BuildError> {
    let (ports, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let proto = proto.to_ascii_lowercase();
    let bad = || BuildError::from(FrontError::Port(spec.to_string()));
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if lo > hi || !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad());
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(expand_port("80").unwrap(), ["80/tcp"]);
        assert_eq!(expand_port("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(expand_port("8000-8001").unwrap(), ["8000/tcp", "8001/tcp"]);
        assert!(expand_port("x").is_err());
    }
}
