//! A build for several platforms (`--custom-platform=linux/amd64,linux/arm64`):
//! the Dockerfile is planned and built once per platform, each with its own
//! predefined ARGs, and the platforms' builds share the steps whose keys are
//! equal (a `FROM --platform=$BUILDPLATFORM` stage runs once).

use super::{build, BuildError, BuildOptions, Session};
use crate::context::BuildContext;
use crate::dockerfile::Dockerfile;
use crate::image::spec::Platform;
use crate::image::Image;
use crate::sandbox::Isolation;

/// Builds `df` for each of `platforms` (in that order in the result). The
/// session must come from [`Session::shared_between_platforms`].
///
/// The builds run at once where RUN has a sandbox of its own; where it runs in
/// the executor's own root (or not at all) they run one after the other, as
/// that root is one for every stage.
pub async fn build_platforms(
    session: &Session,
    df: &Dockerfile,
    ctx: &BuildContext,
    opts: &BuildOptions,
    platforms: &[Platform],
) -> Result<Vec<(Platform, Image)>, BuildError> {
    let per_platform: Vec<BuildOptions> = platforms
        .iter()
        .map(|p| BuildOptions {
            platform: p.clone(),
            explicit_platform: true,
            multi_platform: true,
            ..opts.clone()
        })
        .collect();
    // Every platform's plan first: a RUN no emulator runs fails before any work.
    let overrides = opts.build_args.iter().cloned().collect();
    for o in &per_platform {
        let plan = crate::plan::plan(df, &overrides, o.target.as_deref(), &o.platform)?;
        super::platform::check_plan(df, &plan, o, session.cache.settings.layers)?;
    }
    let concurrent = !df.has_run()
        || matches!(
            session.sandbox_probed(&opts.scratch_dir),
            Ok(Isolation::Namespaces | Isolation::OwnRoot | Isolation::Traced)
        );
    let mut images = Vec::new();
    if concurrent {
        for (o, image) in per_platform
            .iter()
            .zip(at_once(session, df, ctx, &per_platform).await?)
        {
            images.push((o.platform.clone(), image));
        }
    } else {
        for o in &per_platform {
            images.push((o.platform.clone(), build(session, df, ctx, o).await?));
        }
    }
    Ok(images)
}

/// Runs the platforms' builds at once, each on a thread of its own: a build's
/// CPU work (`cpu`, `block_in_place`) holds its task, so builds that were
/// futures of one task would take turns. The first failure stops the others.
async fn at_once(
    session: &Session,
    df: &Dockerfile,
    ctx: &BuildContext,
    per_platform: &[BuildOptions],
) -> Result<Vec<Image>, BuildError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let handle = Handle::current();
    if handle.runtime_flavor() != RuntimeFlavor::MultiThread {
        // Only the runtime's own thread drives a current-thread runtime.
        let builds = per_platform.iter().map(|o| build(session, df, ctx, o));
        return futures_util::future::try_join_all(builds).await;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let joined = super::cpu(|| {
        std::thread::scope(|s| {
            let threads: Vec<_> = per_platform
                .iter()
                .map(|o| {
                    let (handle, stop_tx, mut stop_rx) = (&handle, &stop_tx, stop_rx.clone());
                    s.spawn(move || {
                        handle.block_on(async move {
                            tokio::select! {
                                r = build(session, df, ctx, o) => {
                                    if r.is_err() {
                                        let _ = stop_tx.send(true);
                                    }
                                    Some(r)
                                }
                                _ = stop_rx.wait_for(|stop| *stop) => None,
                            }
                        })
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join()).collect::<Vec<_>>()
        })
    });
    let mut images = Vec::new();
    let mut first_error = None;
    for j in joined {
        match j {
            Ok(Some(Ok(image))) => images.push(image),
            Ok(Some(Err(e))) => {
                first_error.get_or_insert(e);
            }
            // Stopped because another platform's build failed.
            Ok(None) => {}
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(images),
    }
}
