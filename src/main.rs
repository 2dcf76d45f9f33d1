//! `executor`: the command-line entry point, wiring only: flags → inputs →
//! plan → dispatch → outputs. Errors become one line and a non-zero exit
//! (`lifecycle`); the scratch root is removed on success, failure and signals.

mod cli;
mod inputs;
mod lifecycle;
mod outputs;
mod warmer;

use anyhow::{Context, Result};
use clap::Parser;
use inputs::Inputs;
use kiln::cache::Cache;
use kiln::context::BuildContext;
use kiln::dispatch::{self, Session};
use kiln::registry::auth::Keychain;
use kiln::registry::Registry;
use outputs::Built;
use std::path::Path;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The RUN sandbox helper: before any runtime thread exists, so it may fork.
    if args.get(1).is_some_and(|a| a == kiln::sandbox::HELPER_ARG) {
        std::process::exit(kiln::sandbox::child::main(&args[2..]));
    }
    // Setting E: the executor started inside a user namespace enters it now.
    if let Err(e) = kiln::sandbox::userns::enter_if_child() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    if args.get(1).is_some_and(|a| a == "version") {
        // Kaniko's `executor version`.
        println!("Kiln version : v{}", env!("CARGO_PKG_VERSION"));
        return;
    }
    // `executor warmer …`, or the binary called as `warmer` (/kaniko/warmer
    // in the image, as Kaniko ships it).
    let called_warmer = args
        .first()
        .is_some_and(|a| Path::new(a).file_name().is_some_and(|n| n == "warmer"));
    if called_warmer || args.get(1).is_some_and(|a| a == "warmer") {
        let mut rest = args;
        if !called_warmer {
            rest.remove(1);
        }
        let warmer = cli::WarmerCli::parse_from(rest);
        lifecycle::run_to_exit(|cleanup| async move { warmer::warm(warmer, &cleanup).await })
    }
    let cli = cli::Cli::parse_from(args);
    lifecycle::run_to_exit(|cleanup| async move { run(cli, &cleanup).await })
}

async fn run(cli: cli::Cli, cleanup: &kiln::scratch::Cleanup) -> Result<()> {
    let started = std::time::Instant::now();
    cli.configure_log();
    let o = cli.validate()?;
    // A context fetched, or a Dockerfile on stdin, is read once: a user
    // namespace (for RUN) is entered before, whatever the Dockerfile says.
    let local = Inputs::local(&o)?;
    if let (true, Some(local)) = (o.dry_run, &local) {
        return outputs::print_plan(&local.df, &o);
    }
    if !o.dry_run && local.as_ref().is_none_or(|l| l.df.has_run()) {
        // Not root: RUN needs a user namespace, and the whole build runs in it.
        if let Some(mapping) = kiln::sandbox::userns::wanted() {
            let code = tokio::task::spawn_blocking(move || kiln::sandbox::userns::reexec(&mapping))
                .await??;
            std::process::exit(code);
        }
    }
    let scratch = kiln::scratch::Scratch::create(&o.scratch_parent, cleanup)
        .with_context(|| format!("creating a scratch dir in {}", o.scratch_parent.display()))?;
    let blobs_dir = scratch.path().join("blobs");
    kiln::scratch::private_dir_all(&blobs_dir)?;
    let registry = Registry::new(o.registry.clone(), Keychain::load()?)?;
    if o.check_push {
        check_push(&registry, &o).await?;
    }
    let inputs = match local {
        Some(l) => l,
        None => Inputs::fetch(&o, &registry, scratch.path()).await?,
    };
    let df = &inputs.df;
    if o.dry_run {
        return outputs::print_plan(df, &o);
    }
    if let Some(syntax) = &df.syntax {
        kiln::log_info!(
            "# syntax={syntax}: Kiln reads the Dockerfile with its own frontend (BuildKit v0.21's rules)"
        );
    }
    // Layers and config get 0 with --reproducible; cache entries always the clock.
    let wall_now = inputs::unix_now();
    let session = Session::new(
        registry,
        Cache::new(o.cache.clone(), wall_now),
        blobs_dir,
        o.compression,
        if o.reproducible { 0 } else { wall_now },
    )
    .with_procs(kiln::procs::dir(scratch.path()));
    let session = match o.platforms.len() {
        1 => session,
        _ => session.shared_between_platforms(scratch.path()),
    };
    let opts = o.build_options(scratch.path());
    // The terminal view: bars and step timers below the log until the end.
    let view = kiln::progress::start(o.outputs.progress);
    let ctx = BuildContext::open(&inputs.context, inputs.dockerfile.as_deref())?;
    let built = match o.platforms.len() {
        1 => Built::One(Box::new(dispatch::build(&session, df, &ctx, &opts).await?)),
        _ => Built::Platforms(
            dispatch::multi::build_platforms(&session, df, &ctx, &opts, &o.platforms).await?,
        ),
    };
    // The cache's entries are stored with it (their new blobs mounted from the
    // destination, not uploaded twice).
    let digest = outputs::publish_built(&o, &session, built, scratch.path()).await?;
    outputs::write_digest_files(&o.outputs, &o.destinations, &digest)?;
    let t = &session.registry.transfer;
    kiln::report::summary(
        started.elapsed(),
        &session.steps.all(),
        t.pull.totals(),
        session.unpack.totals(),
        t.push.totals(),
    );
    // Its last frame stays, its line ended before the digest on stdout.
    drop(view);
    println!("{digest}");
    Ok(())
}

/// `--check-push`: auth, TLS and scheme problems with a destination show
/// before the build.
async fn check_push(registry: &Registry, o: &cli::Options) -> Result<()> {
    let checks = o.destinations.iter().map(|d| async move {
        registry
            .check_push(d)
            .await
            .with_context(|| format!("--destination {d}"))
    });
    futures_util::future::try_join_all(checks).await?;
    Ok(())
}
