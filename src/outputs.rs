//! What a build writes once it has its image: a tarball and an OCI layout if
//! asked, every destination (all blobs first, manifests last), the digest files.

use crate::cli;
use anyhow::{Context, Result};
use kiln::dispatch::Session;
use kiln::image::spec::Platform;
use kiln::image::{Digest, Reference};
use kiln::publish;
use kiln::publish::index::PlatformImage;
use std::path::Path;

/// What a build made: one image, or one for each platform.
pub(crate) enum Built {
    One(Box<kiln::image::Image>),
    Platforms(Vec<(Platform, kiln::image::Image)>),
}

/// Writes and pushes what was built, while the cache stores its own beside the
/// push (a step's entry once its layer is in the destination: [`with_cache`]);
/// the digest the outputs name: the image's, or the index's.
pub(crate) async fn publish_built(
    o: &cli::Options,
    session: &Session,
    built: Built,
    scratch: &Path,
) -> Result<Digest> {
    let beside = session
        .cache
        .beside_push(&session.registry, scratch, o.compression);
    match built {
        Built::One(image) => {
            let image = *image;
            let s = publish::serialize(&image, &o.annotations)?;
            let publish = publish_all(o, session, &image, &s, scratch);
            let (published, ()) = tokio::join!(publish, beside);
            published?;
            Ok(s.manifest_digest)
        }
        Built::Platforms(built) => {
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
            let publish = publish_index(o, session, &images, &index, scratch);
            let (published, ()) = tokio::join!(publish, beside);
            published?;
            Ok(index.digest)
        }
    }
}

/// `--dryrun` (Kaniko's fork): prints what would be built, on stdout, and
/// fetches, builds and pushes nothing.
pub(crate) fn print_plan(df: &kiln::dockerfile::Dockerfile, o: &cli::Options) -> Result<()> {
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

/// Tarball and OCI layout if asked, then every destination: all blobs first,
/// manifests last.
async fn publish_all(
    o: &cli::Options,
    session: &Session,
    image: &kiln::image::Image,
    s: &kiln::image::Serialized,
    scratch: &Path,
) -> Result<()> {
    let (out, destinations) = (&o.outputs, &o.destinations);
    if let Some(p) = &out.tar_path {
        let tags: Vec<String> = destinations.iter().map(|d| d.to_string()).collect();
        publish::write_tarball(&session.store, image, s, &tags, p).await?;
        kiln::log_info!("wrote {}", p.display());
    }
    if let Some(p) = &out.oci_layout_path {
        publish::write_oci_layout(&session.store, image, s, p).await?;
        kiln::log_info!("wrote OCI layout {}", p.display());
    }
    if !out.push {
        return with_cache(o, session, scratch, async { Ok(()) }).await;
    }
    let publisher = publisher(session);
    // Every destination gets every blob before any tag moves.
    for d in destinations {
        publish::push_blobs(&publisher, d, image, s)
            .await
            .with_context(|| format!("pushing {d}"))?;
    }
    let manifests = async {
        for d in destinations {
            let pushed = publish::push_manifest(&publisher, d, s).await;
            tag_moved(out, d, pushed, "")?;
        }
        Ok(())
    };
    with_cache(o, session, scratch, manifests).await
}

/// Runs `manifests` while the cache stores the steps' entries, which mount their
/// layers from the first destination, where every blob now is (a store's
/// failure is a warning). The entries name layers, never the image, so a
/// manifest that fails leaves no tag a later build or pull takes for it.
async fn with_cache(
    o: &cli::Options,
    session: &Session,
    scratch: &Path,
    manifests: impl std::future::Future<Output = Result<()>>,
) -> Result<()> {
    let pushed = o.destinations.first().filter(|_| o.outputs.push);
    let flush = session.cache.flush(&session.registry, scratch, pushed);
    // Every blob is in place: the push check's sessions no layer took end now.
    let cancel = session.registry.cancel_spare_uploads();
    let (moved, (), ()) = tokio::join!(manifests, flush, cancel);
    moved
}

/// The session's registry client and blob store, as publish reads them.
fn publisher(session: &Session) -> publish::Publisher<'_> {
    publish::Publisher {
        registry: &session.registry,
        store: &session.store,
        tmp: &session.blobs_dir,
    }
}

/// A manifest's push under a tag: logged, or under
/// `--push-ignore-immutable-tag-errors` an immutable tag counted as done.
fn tag_moved(
    out: &cli::Outputs,
    d: &Reference,
    pushed: Result<Digest, publish::PublishError>,
    what: &str,
) -> Result<()> {
    match pushed {
        Ok(digest) => kiln::log_info!("pushed {d}@{digest}{what}"),
        Err(e) if out.ignore_immutable_tags && publish::is_immutable_tag_error(&e) => {
            kiln::log_warn!(
                "{d}: the tag is immutable there and was not moved ({e}); --push-ignore-immutable-tag-errors counts the push as done"
            )
        }
        Err(e) => return Err(e).with_context(|| format!("pushing {d}")),
    }
    Ok(())
}

/// [`publish_all`] for a multi-platform build: every platform's blobs and
/// manifest to every destination, then the index under each tag.
async fn publish_index(
    o: &cli::Options,
    session: &Session,
    images: &[PlatformImage],
    index: &publish::index::SerializedIndex,
    scratch: &Path,
) -> Result<()> {
    let (out, destinations) = (&o.outputs, &o.destinations);
    if let Some(p) = &out.tar_path {
        publish::index::write_oci_archive(&session.store, images, index, p, &session.blobs_dir)
            .await?;
        kiln::log_info!(
            "wrote {} (an OCI layout archive: a docker-archive holds one platform)",
            p.display()
        );
    }
    if let Some(p) = &out.oci_layout_path {
        publish::index::write_oci_layout(&session.store, images, index, p).await?;
        kiln::log_info!("wrote OCI layout {}", p.display());
    }
    if !out.push {
        return with_cache(o, session, scratch, async { Ok(()) }).await;
    }
    let publisher = publisher(session);
    for d in destinations {
        publish::index::push_images(&publisher, d, images)
            .await
            .with_context(|| format!("pushing {d}"))?;
    }
    let manifests = async {
        for d in destinations {
            let pushed = publish::index::push_index(&publisher, d, index).await;
            tag_moved(
                out,
                d,
                pushed,
                &format!(" (an index of {} platforms)", images.len()),
            )?;
        }
        Ok(())
    };
    with_cache(o, session, scratch, manifests).await
}

/// `--digest-file`, `--image-name-with-digest-file` and
/// `--image-name-tag-with-digest-file`, under `--no-push` too, as Kaniko writes
/// them: the digest is the manifest's (the index's for several platforms).
pub(crate) fn write_digest_files(
    out: &cli::Outputs,
    destinations: &[Reference],
    digest: &Digest,
) -> Result<()> {
    if let Some(p) = &out.digest_file {
        std::fs::write(p, digest.as_str()).with_context(|| format!("writing {}", p.display()))?;
    }
    let digest = digest.as_str();
    let files = [
        (&out.image_name_with_digest_file, false),
        (&out.image_name_tag_with_digest_file, true),
    ];
    for (file, with_tag) in files {
        let Some(p) = file else { continue };
        let lines: String = destinations
            .iter()
            .map(|d| match (with_tag, &d.tag) {
                (true, t) => format!(
                    "{}:{}@{digest}\n",
                    d.name(),
                    t.as_deref().unwrap_or("latest")
                ),
                (false, _) => format!("{}@{digest}\n", d.name()),
            })
            .collect();
        std::fs::write(p, lines).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
