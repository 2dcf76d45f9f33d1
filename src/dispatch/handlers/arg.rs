//! ARG: each name declared, with the value a build arg, its default or a
//! global ARG gives it; no layer.

use super::Step;
use crate::dispatch::effect::Effect;
use crate::dispatch::BuildError;
use crate::dockerfile::instruction::ArgList;
use crate::dockerfile::shell;

/// ARG's effect: the names it declares, the values they take, its history.
pub(super) fn arg(s: &Step, args: &ArgList) -> Result<Effect, BuildError> {
    let b = s.b;
    let mut history = Vec::new();
    let mut effect = Effect::default();
    // Each ARG's default sees the ones declared before it on the line.
    let mut scope = s.env.clone();
    for (k, default) in args {
        effect.declared.push(k.clone());
        let value = if let Some(v) = b.overrides.get(k) {
            if let Ok(mut used) = b.used_args.lock() {
                used.insert(k.clone());
            }
            Some(v.clone())
        } else if let Some(d) = default {
            Some(shell::expand(d, b.df.escape, &scope)?)
        } else {
            b.global_declared
                .get(k)
                .or_else(|| b.predefined.get(k))
                .cloned()
        };
        history.push(match &value {
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        });
        if let Some(v) = value {
            scope.insert(k.clone(), v.clone());
            effect.args.push((k.clone(), v));
        }
    }
    effect.history = Some(format!("ARG {}", history.join(" ")));
    Ok(effect)
}
