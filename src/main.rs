//! `executor`: the command-line entry point. Errors become one line and a
//! non-zero exit; the scratch root is removed on success, failure and signals.

mod cli;

use anyhow::{bail, Context, Result};
use clap::Parser;
use kiln::build::{self, BuildOptions, Session};
use kiln::context::BuildContext;
use kiln::dockerfile::parse_dockerfile;
use kiln::image::spec::Platform;
use kiln::image::Reference;
use kiln::publish;
use kiln::registry::auth::Keychain;
use kiln::registry::{Registry, RegistryOptions};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async {
        tokio::select! {
            r = run(cli) => match r {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            },
            _ = shutdown_signal() => {
                eprintln!("error: interrupted; nothing was pushed after this point");
                130
            }
        }
    });
    // Dropping the runtime drops the build (and its scratch TempDir) first.
    drop(runtime);
    std::process::exit(code);
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

fn find_dockerfile(flag: &str, context: &Path) -> Result<PathBuf> {
    let p = PathBuf::from(flag);
    if p.is_file() {
        return Ok(p);
    }
    let in_ctx = context.join(flag);
    if p.is_relative() && in_ctx.is_file() {
        return Ok(in_ctx);
    }
    bail!(
        "--dockerfile {flag}: no such file (also looked for {})",
        in_ctx.display()
    )
}

async fn run(cli: cli::Cli) -> Result<()> {
    let context = cli::context_dir(&cli.context)?;
    if !context.is_dir() {
        bail!("--context {}: not a directory", context.display());
    }
    let dockerfile = find_dockerfile(&cli.dockerfile, &context)?;
    let destinations = cli
        .destinations
        .iter()
        .map(|d| Reference::parse(d).with_context(|| format!("--destination {d}")))
        .collect::<Result<Vec<_>>>()?;
    if destinations.is_empty() && !cli.no_push {
        bail!("no --destination given; pass one or more, or --no-push");
    }
    let platform = match &cli.custom_platform {
        Some(p) => Platform::parse(p)
            .with_context(|| format!("--custom-platform {p}: expected os/arch[/variant]"))?,
        None => Platform::host(),
    };
    let text = std::fs::read_to_string(&dockerfile)
        .with_context(|| format!("reading {}", dockerfile.display()))?;
    let df = parse_dockerfile(&text)?;

    let scratch_parent = cli.kaniko_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&scratch_parent)
        .with_context(|| format!("creating {}", scratch_parent.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("kiln-")
        .tempdir_in(&scratch_parent)
        .with_context(|| format!("creating a scratch dir in {}", scratch_parent.display()))?;
    let blobs_dir = scratch.path().join("blobs");
    std::fs::create_dir_all(&blobs_dir)?;

    let registry = Registry::new(
        RegistryOptions {
            insecure_push: cli.insecure,
            insecure_pull: cli.insecure_pull,
            insecure_registries: cli.insecure_registries.clone(),
            skip_tls_verify_push: cli.skip_tls_verify,
            skip_tls_verify_pull: cli.skip_tls_verify_pull,
            skip_tls_verify_registries: cli.skip_tls_verify_registries.clone(),
            retries: cli.push_retry,
        },
        Keychain::load()?,
    )?;
    let now = if cli.reproducible {
        0
    } else {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    let session = Session {
        registry,
        blobs_dir,
        download_lock: tokio::sync::Mutex::new(()),
        compression_level: cli.compression_level,
        created: rfc3339(now),
        now,
    };
    let opts = BuildOptions {
        dockerfile: dockerfile.clone(),
        context: context.clone(),
        build_args: cli::key_values("build-arg", &cli.build_args, true)?,
        target: cli.target.clone(),
        labels: cli::key_values("label", &cli.labels, false)?,
        platform,
        reproducible: cli.reproducible,
        scratch_dir: scratch.path().to_path_buf(),
        compression_level: cli.compression_level,
    };
    let ctx = BuildContext::open(&context, Some(&dockerfile))?;
    let image = build::build(&session, &df, &ctx, &opts).await?;
    let s = publish::serialize(&image)?;
    let tmp = scratch.path();

    if let Some(p) = &cli.tar_path {
        let tags: Vec<String> = destinations.iter().map(|d| d.to_string()).collect();
        publish::write_tarball(&session.registry, &image, &s, &tags, p, tmp).await?;
        eprintln!("INFO wrote {}", p.display());
    }
    if let Some(p) = &cli.oci_layout_path {
        publish::write_oci_layout(&session.registry, &image, &s, p, tmp).await?;
        eprintln!("INFO wrote OCI layout {}", p.display());
    }
    let mut names = Vec::new();
    if !cli.no_push {
        for d in &destinations {
            let digest = publish::push(&session.registry, d, &image, &s, tmp)
                .await
                .with_context(|| format!("pushing {d}"))?;
            eprintln!("INFO pushed {d}@{digest}");
            names.push(format!("{}@{digest}", d.name()));
        }
    }
    if let Some(p) = &cli.digest_file {
        std::fs::write(p, &s.manifest_digest)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &cli.image_name_with_digest_file {
        let lines: String = names.iter().map(|n| format!("{n}\n")).collect();
        std::fs::write(p, lines).with_context(|| format!("writing {}", p.display()))?;
    }
    println!("{}", s.manifest_digest);
    Ok(())
}

/// Seconds since the epoch as RFC 3339 UTC.
fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
