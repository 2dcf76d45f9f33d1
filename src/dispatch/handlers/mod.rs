//! One step of a stage: the [`Step`] context every handler reads, and the
//! dispatch of an instruction to its group's handler — `arg`, `copy` (COPY and
//! ADD), `workdir`, `run`, `config` (the instructions that change only the
//! config) — each computing its effect, which `effect::apply` makes real.

mod add;
mod arg;
mod config;
mod copy;
mod run;
mod workdir;

pub(super) use copy::{resolve_from, CopyFrom};
pub(super) use workdir::absolute;

use super::{effect, Build, BuildError, LiveHold, StageState};
use crate::cache::key::{CacheKey, KeyBuilder};
use crate::dockerfile::shell::Env;
use crate::dockerfile::Instruction;
use std::collections::HashMap;
use std::sync::Arc;

/// What one step reads and changes: the build, the finished stages its stage
/// reads, its own stage, and the stage's hold on the live root.
pub(super) struct Step<'s, 'b, 'a> {
    pub b: &'b Build<'a>,
    pub built: &'s HashMap<usize, Arc<StageState>>,
    pub st: &'s mut StageState,
    pub step: &'s crate::dockerfile::Step,
    /// The stage's index in the Dockerfile.
    pub stage: usize,
    pub hold: &'s mut LiveHold<'b>,
    /// The variables the step's words see ([`StageState::env`]).
    pub env: Env,
}

impl Step<'_, '_, '_> {
    /// The instruction as written, BuildKit's `created_by` for config steps.
    fn text(&self) -> String {
        self.step.at.text.trim().to_string()
    }

    /// The step's cache key so far: the parent key, the instruction and every
    /// variable it could read. A handler adds its own inputs (COPY's sources,
    /// RUN's mounts); nothing here depends on a step's result.
    fn key(&self) -> KeyBuilder {
        let mut kb = KeyBuilder::new(&self.st.key);
        kb.add("instruction", &self.text());
        kb.add(
            "env",
            &self
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect::<String>(),
        );
        kb
    }

    /// Makes the effect real under `key`; true when its layer came from a cache.
    async fn apply(&mut self, effect: effect::Effect, key: &CacheKey) -> Result<bool, BuildError> {
        effect::apply(self.b.session, self.st, effect, key).await
    }
}

/// Runs one step: its handler computes an effect, which `effect::apply` makes
/// real. True when the step's layer came from the cache.
pub(super) async fn run_step(mut s: Step<'_, '_, '_>) -> Result<bool, BuildError> {
    let kb = s.key();
    match &s.step.instruction {
        Instruction::Arg(args) => {
            let effect = arg::arg(&s, args)?;
            s.apply(effect, &kb.finish()).await
        }
        Instruction::Copy(c) => copy::copy(&mut s, c, kb).await,
        Instruction::Workdir(w) => workdir::workdir(&mut s, w, kb).await,
        Instruction::Run(r) => run::run(&mut s, r, kb).await,
        other => {
            let effect = config::config(&s, other)?;
            s.apply(effect, &kb.finish()).await
        }
    }
}
