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
        let builds = per_platform.iter().map(|o| build(session, df, ctx, o));
        for (o, image) in per_platform
            .iter()
            .zip(futures_util::future::try_join_all(builds).await?)
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
