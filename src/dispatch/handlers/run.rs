//! RUN: the step's mounts and cache key, then (on a miss) the command run on
//! the rung the build's sandbox probe chose, its change read back as the layer.

use super::Step;
use crate::cache::key::KeyBuilder;
use crate::dispatch::effect::{self, Effect, NewLayer};
use crate::dispatch::run::{self as command, Rung};
use crate::dispatch::{live, mounts, platform, BuildError};
use crate::dockerfile::Run;
use crate::sandbox::Isolation;

/// RUN's step: its layer taken from a cache, or made by running the command.
pub(super) async fn run(
    s: &mut Step<'_, '_, '_>,
    r: &Run,
    mut kb: KeyBuilder,
) -> Result<bool, BuildError> {
    let (b, built) = (s.b, s.built);
    let (session, ctx, opts) = (b.session, b.ctx, b.opts);
    let st = &mut *s.st;
    let workdir = st.config.config.working_dir.clone();
    let workdir = workdir.as_deref().filter(|w| !w.is_empty()).unwrap_or("/");
    let run_mounts = mounts::prepare(b, r, &s.env, workdir, s.stage).await?;
    let prepared = command::prepare(r, &st.config, &st.arg_names, &s.env);
    kb.add("run", &prepared.key_text(&st.config));
    if !opts.ignore_paths.is_empty() {
        kb.add("ignore-path", &opts.ignore_paths.join("\n"));
    }
    // A bind's content is hashed only when a cache can use the key.
    if session.cache.settings.layers {
        for (label, value) in run_mounts.key_inputs(ctx, built)? {
            kb.add(label, &value);
        }
    }
    let key = kb.finish();
    let mut effect = Effect::history(prepared.history.clone());
    if let Some(hit) = effect::lookup(session, st, &key).await {
        effect.layer = Some(hit);
        return effect::apply(session, st, effect, &key).await;
    }
    let isolation = b.sandbox_ready()?;
    platform::check_run(b.df, s.stage, b.global, b.opts)?;
    let dirs = command::step_dirs(st.fs.dir(), s.step.at.line)?;
    let hold = &mut *s.hold;
    let result = async {
        let host_mounts = run_mounts.host(b, built, &dirs.base).await?;
        let mut live = match isolation {
            Isolation::Namespaces | Isolation::OwnRoot | Isolation::Traced => None,
            Isolation::InPlace => {
                if hold.is_none() {
                    *hold = Some(b.session.live.lock().await);
                }
                hold.as_mut()
                    .map(|h| h.get_or_insert_with(|| live::LiveRoot::new(&b.keep_extra())))
            }
        };
        // Proxy build args reach the command only: not its key or history.
        let mut run_env = s.env.clone();
        run_env.extend(command::proxy_env(&opts.build_args));
        let cmd = command::Command {
            config: &st.config,
            env: &run_env,
            prepared: &prepared,
        };
        let (mut entries, walked) = command::execute(
            session,
            &st.fs,
            cmd,
            (&dirs, &host_mounts),
            match live.as_deref_mut() {
                Some(l) => Rung::Live(l),
                None if isolation == Isolation::OwnRoot => Rung::OwnRoot,
                None if isolation == Isolation::Traced => Rung::Traced,
                None => Rung::Overlay,
            },
        )
        .await?;
        command::drop_ignored(&mut entries, &opts.ignore_paths);
        effect.layer = Some(NewLayer::Planned(entries, walked.map(Box::new)));
        let cached = effect::apply(session, st, effect, &key).await?;
        if let Some(live) = live {
            live.committed(&st.fs.layers);
        }
        Ok(cached)
    }
    .await;
    dirs.remove();
    result
}
