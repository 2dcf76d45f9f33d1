//! `executor warmer`: fills `--cache-dir` with base layers and their file
//! indexes, as Kaniko's warmer does.

use crate::cli;
use crate::inputs::read_dockerfile;
use anyhow::{bail, Context, Result};
use kiln::cache::{Cache, CacheSettings};
use kiln::dispatch::stage::StageFs;
use kiln::dispatch::Session;
use kiln::dockerfile::parse_dockerfile;
use kiln::image::Reference;
use kiln::registry::auth::Keychain;
use kiln::registry::{Registry, RegistryOptions};

/// `executor warmer`: downloads base layers and computes their file indexes into
/// `--cache-dir`, so builds with that directory download no base layer.
pub(crate) async fn warm(cli: cli::WarmerCli, cleanup: &kiln::scratch::Cleanup) -> Result<()> {
    let platforms = cli::platforms(&cli.custom_platform)?;
    // Each image for each platform: an index gives each its own layers.
    let mut images: Vec<(String, kiln::image::spec::Platform)> = Vec::new();
    for platform in &platforms {
        let mut more = cli.images.clone();
        if let Some(f) = &cli.dockerfile {
            let text = read_dockerfile(f)?;
            let df = parse_dockerfile(&text)?;
            let args = cli::key_values("build-arg", &cli.build_args, true)?;
            more.extend(kiln::plan::base_images(&df, &args, platform)?);
        }
        images.extend(more.into_iter().map(|i| (i, platform.clone())));
    }
    if images.is_empty() {
        bail!("nothing to warm: pass --image or --dockerfile");
    }
    kiln::scratch::private_dir_all(&cli.cache_dir)
        .with_context(|| format!("creating {}", cli.cache_dir.display()))?;
    let scratch = kiln::scratch::Scratch::create(&cli.cache_dir, cleanup)?;
    let mut opts = RegistryOptions {
        insecure_pull: cli.insecure_pull,
        insecure_registries: cli.insecure_registries.clone(),
        skip_tls_verify_pull: cli.skip_tls_verify_pull,
        retries: 3,
        ..Default::default()
    };
    cli.registries.apply(&mut opts)?;
    let registry = Registry::new(opts, Keychain::load()?)?;
    let session = Session::new(
        registry,
        Cache::new(
            CacheSettings {
                dir: Some(cli.cache_dir.clone()),
                ..Default::default()
            },
            0,
        ),
        scratch.path().to_path_buf(),
        kiln::layer::writer::Compression::Gzip(6),
        0,
    );
    for (image, platform) in images {
        let reference = Reference::parse(&image)?;
        let remote =
            kiln::source::remote::fetch(&session.registry, &reference, &platform, scratch.path())
                .await?;
        for layer in &remote.layers {
            layer.compressed(&session.store).await?;
            StageFs::entries(&session, layer).await?;
        }
        kiln::log_info!(
            "warmed {reference} ({} layers) into {}",
            remote.layers.len(),
            cli.cache_dir.display()
        );
    }
    Ok(())
}
