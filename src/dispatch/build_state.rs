//! What every step of one build reads, shared by the stages running at once,
//! and the step log lines (`[n/total] …`, and each step's end line).

use super::SessionError;
use super::{live, platform, BuildError, BuildOptions, Session};
use crate::context::BuildContext;
use crate::dockerfile::shell::Env;
use crate::dockerfile::{Dockerfile, Location};
use crate::sandbox::Isolation;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What every step of one build reads, shared by the stages running at once.
pub(super) struct Build<'a> {
    pub(super) session: &'a Session,
    pub(super) df: &'a Dockerfile,
    pub(super) ctx: &'a BuildContext,
    pub(super) opts: &'a BuildOptions,
    pub(super) overrides: &'a BTreeMap<String, String>,
    /// What FROM lines see.
    pub(super) global: &'a Env,
    /// ARGs declared before the first FROM.
    pub(super) global_declared: &'a Env,
    /// BuildKit's predefined ARGs (platforms, `TARGETSTAGE`).
    pub(super) predefined: &'a Env,
    /// Build args some ARG consumed (the rest are warned about).
    pub(super) used_args: std::sync::Mutex<HashSet<String>>,
    pub(super) steps_total: usize,
    pub(super) steps_started: AtomicUsize,
}

/// A stage's hold on the live root, taken at its first in-place RUN.
pub(super) type LiveHold<'a> = Option<tokio::sync::MutexGuard<'a, Option<live::LiveRoot>>>;

impl Build<'_> {
    /// Probes once per build how RUN can be isolated here.
    pub(super) fn sandbox_ready(&self) -> Result<Isolation, BuildError> {
        let probed = self.session.sandbox_probed(&self.opts.scratch_dir);
        probed.clone().map_err(|cause| {
            SessionError::Sandbox(crate::sandbox::SandboxError::Unavailable { cause }).into()
        })
    }

    /// What the live root keeps besides mounts and the executor's directory.
    pub(super) fn keep_extra(&self) -> Vec<PathBuf> {
        let mut extra = vec![self.opts.scratch_dir.clone(), self.ctx.root().to_path_buf()];
        extra.extend(
            self.session
                .trees
                .as_ref()
                .and_then(|t| t.parent())
                .map(PathBuf::from),
        );
        extra.extend(std::env::var_os("DOCKER_CONFIG").map(PathBuf::from));
        extra.extend(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
        extra
    }

    pub(super) fn log_step(&self, at: &Location) -> StepClock {
        let n = self.steps_started.fetch_add(1, Ordering::Relaxed) + 1;
        let prefix = platform::log_prefix(self.opts);
        crate::log_info!("[{prefix}{n}/{}] {}", self.steps_total, at.text.trim());
        self.session
            .steps
            .start(&prefix, (n, self.steps_total), at.text.trim());
        StepClock {
            platform: prefix,
            n,
            text: at.text.trim().to_string(),
            started: std::time::Instant::now(),
        }
    }

    /// The step's end line, `[n/total] DONE 0.3s` (`CACHED` when its layer
    /// came from the cache, `ERROR` when it failed), kept for the summary.
    pub(super) fn end_step<E>(&self, clock: StepClock, result: Result<bool, &E>) {
        use crate::report::Outcome;
        self.session.steps.finish(crate::report::StepTime {
            platform: clock.platform,
            n: clock.n,
            total: self.steps_total,
            text: clock.text,
            took: clock.started.elapsed(),
            outcome: match result {
                Ok(true) => Outcome::Cached,
                Ok(false) => Outcome::Done,
                Err(_) => Outcome::Failed,
            },
        });
    }
}

/// A step under way: its number and when it started.
pub(super) struct StepClock {
    platform: String,
    n: usize,
    text: String,
    started: std::time::Instant,
}
