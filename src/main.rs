//! `executor`: the command-line entry point. Errors become one line and a
//! non-zero exit; the scratch root is removed on success, failure and signals.

mod cli;
mod outputs;
mod warmer;

use anyhow::{Context, Result};
use clap::Parser;
use kiln::cache::Cache;
use kiln::context::BuildContext;
use kiln::dispatch::{self, Session};
use kiln::dockerfile::{parse_dockerfile, Dockerfile};
use kiln::publish;
use kiln::publish::index::PlatformImage;
use kiln::registry::auth::Keychain;
use kiln::registry::Registry;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

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
    let warmer = called_warmer || args.get(1).is_some_and(|a| a == "warmer");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Directory walks recurse once per level; paths may be 4096 bytes deep
        // (2,048 levels). Untouched stack costs no memory.
        .thread_stack_size(32 << 20)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            std::process::exit(1);
        }
    };
    let cleanup = kiln::scratch::Cleanup::default();
    // The work runs as its own task, so this thread sees a signal even while every
    // worker is busy compressing or unpacking.
    let work = {
        let cleanup = cleanup.clone();
        runtime.spawn(async move {
            if warmer {
                let mut rest = args.clone();
                if !called_warmer {
                    rest.remove(1);
                }
                warmer::warm(cli::WarmerCli::parse_from(rest), &cleanup).await
            } else {
                run(cli::Cli::parse_from(args.clone()), &cleanup).await
            }
        })
    };
    let code = runtime.block_on(async {
        let signals = shutdown_signal();
        let mut work = work;
        tokio::select! {
            r = &mut work => match r {
                Ok(Ok(())) => Some(0),
                Ok(Err(e)) => {
                    kiln::log_error!("{}", kiln::log::one_line(e.as_ref()));
                    Some(1)
                }
                Err(e) => {
                    kiln::log_error!("the build stopped: {e}");
                    Some(1)
                }
            },
            _ = signals => {
                // Inside a user namespace the other executor does the work
                // and the cleanup; it gets the signal and this one its code.
                if kiln::sandbox::userns::forward_signal(nix::sys::signal::Signal::SIGTERM) {
                    match work.await {
                        Ok(Ok(())) => Some(0),
                        _ => Some(130),
                    }
                } else {
                    None
                }
            }
        }
    });
    match code {
        Some(code) => {
            // Dropping the runtime drops the build (and its scratch dir) first.
            drop(runtime);
            std::process::exit(code);
        }
        None => {
            // Threads busy in CPU-bound work are not waited for: the scratch root
            // goes now, and the process with them.
            runtime.shutdown_timeout(std::time::Duration::from_millis(200));
            cleanup.remove_all();
            kiln::log_error!("interrupted: the scratch root is removed and no manifest was pushed after this point");
            std::process::exit(130);
        }
    }
}

/// Waits for SIGTERM or SIGINT. The handlers are installed when this is called,
/// before the build starts, so an early signal still cleans up.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        match handlers {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending::<()>().await,
        }
    }
}

/// BuildKit reads a Dockerfile as bytes: invalid UTF-8 does not stop the build,
/// and a word with such bytes still names the file that has them.
pub(crate) fn read_dockerfile(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(kiln::pathname::from_bytes(&bytes))
}

/// `--dockerfile -`, as `docker build -f -` reads it.
fn read_stdin_dockerfile() -> Result<String> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
        .context("reading the Dockerfile from stdin")?;
    Ok(kiln::pathname::from_bytes(&bytes))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The log's format and level, as the flags ask (Kaniko's default: color on a
/// terminal, text elsewhere), and a notice for a `--progress` Kiln reads its own way.
fn configure_log(cli: &cli::Cli) {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let format = match cli.log_format {
        _ if cli.json_log() => kiln::log::Format::Json,
        // Kaniko's default: color on a terminal, text elsewhere.
        cli::LogFormat::Color if terminal => kiln::log::Format::Color,
        _ => kiln::log::Format::Text,
    };
    kiln::log::configure(format, cli.verbosity.level(), cli.log_timestamp);
    match cli.progress {
        cli::Progress::Rawjson => kiln::log_info!(
            "--progress=rawjson: Kiln writes its own JSON log lines (as --log-format=json), not BuildKit's raw solve status"
        ),
        cli::Progress::Tty if cli.json_log() => kiln::log_info!(
            "--progress=tty: no terminal view among JSON log lines"
        ),
        _ => {}
    }
}

async fn run(cli: cli::Cli, cleanup: &kiln::scratch::Cleanup) -> Result<()> {
    let started = std::time::Instant::now();
    configure_log(&cli);
    let o = cli.validate()?;
    // A context fetched, or a Dockerfile on stdin, is read once: a user
    // namespace (for RUN) is entered before, whatever the Dockerfile says.
    let fetched = o.context.local().is_none() || o.dockerfile == "-";
    let local = match o.context.local() {
        Some(dir) if !fetched => {
            let (context, dockerfile) =
                cli::locate(dir, o.context_sub_path.as_deref(), &o.dockerfile)?;
            let dockerfile = dockerfile.context("a local Dockerfile")?;
            let df = parse_dockerfile(&read_dockerfile(&dockerfile)?)?;
            Some((context, Some(dockerfile), df))
        }
        _ => None,
    };
    if let (true, Some((_, _, df))) = (o.dry_run, &local) {
        return print_plan(df, &o);
    }
    if !o.dry_run && local.as_ref().is_none_or(|(_, _, df)| df.has_run()) {
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
        // Auth, TLS and scheme problems with a destination show before the build.
        let registry = &registry;
        let checks = o.destinations.iter().map(|d| async move {
            registry
                .check_push(d)
                .await
                .with_context(|| format!("--destination {d}"))
        });
        futures_util::future::try_join_all(checks).await?;
    }
    let (context, dockerfile, df) = match local {
        Some(l) => l,
        None => fetch_context(&o, &registry, scratch.path()).await?,
    };
    if o.dry_run {
        return print_plan(&df, &o);
    }
    if let Some(syntax) = &df.syntax {
        kiln::log_info!(
            "# syntax={syntax}: Kiln reads the Dockerfile with its own frontend (BuildKit v0.21's rules)"
        );
    }
    // Layers and config get 0 with --reproducible; cache entries always the clock.
    let wall_now = unix_now();
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
    let ctx = BuildContext::open(&context, dockerfile.as_deref())?;
    // The digest the outputs name: the image's, or with several platforms the index's.
    let digest = if o.platforms.len() > 1 {
        let built =
            dispatch::multi::build_platforms(&session, &df, &ctx, &opts, &o.platforms).await?;
        let mut images = Vec::new();
        for (platform, image) in built {
            let serialized = publish::serialize(&image, &o.annotations)?;
            images.push(PlatformImage {
                platform,
                image,
                serialized,
            });
        }
        let index = publish::index::serialize(&images)?;
        let (published, ()) = tokio::join!(
            outputs::publish_index(&o.outputs, &session, &o.destinations, &images, &index),
            session
                .cache
                .beside_push(&session.registry, scratch.path(), o.compression)
        );
        published?;
        index.digest
    } else {
        let image = dispatch::build(&session, &df, &ctx, &opts).await?;
        let s = publish::serialize(&image, &o.annotations)?;
        let (published, ()) = tokio::join!(
            outputs::publish_all(&o.outputs, &session, &o.destinations, &image, &s),
            session
                .cache
                .beside_push(&session.registry, scratch.path(), o.compression)
        );
        published?;
        s.manifest_digest
    };
    // Cache entries after the push: their new blobs are then mounted, not uploaded twice.
    let pushed = o.destinations.first().filter(|_| o.outputs.push);
    session
        .cache
        .flush(&session.registry, scratch.path(), pushed)
        .await;
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

/// A fetched `--context` (or a Dockerfile on stdin): the context directory,
/// the Dockerfile's path (none for stdin) and the Dockerfile.
async fn fetch_context(
    o: &cli::Options,
    registry: &Registry,
    scratch: &Path,
) -> Result<(std::path::PathBuf, Option<std::path::PathBuf>, Dockerfile)> {
    let dir = o
        .context
        .fetch(registry, &scratch.join("context"), &o.git, unix_now())
        .await?;
    let (context, dockerfile) = cli::locate(&dir, o.context_sub_path.as_deref(), &o.dockerfile)?;
    let text = match &dockerfile {
        Some(p) => read_dockerfile(p)?,
        None => read_stdin_dockerfile()?,
    };
    Ok((context, dockerfile, parse_dockerfile(&text)?))
}

/// `--dryrun` (Kaniko's fork): prints what would be built, on stdout, and
/// fetches, builds and pushes nothing.
fn print_plan(df: &kiln::dockerfile::Dockerfile, o: &cli::Options) -> Result<()> {
    let overrides = o.build_args.iter().cloned().collect();
    for platform in &o.platforms {
        let plan = kiln::plan::plan(df, &overrides, o.target.as_deref(), platform)?;
        if o.platforms.len() > 1 {
            println!("platform {platform}:");
        }
        print!("{}", plan.describe(df));
    }
    kiln::log_info!("--dryrun: nothing was built or pushed");
    Ok(())
}
