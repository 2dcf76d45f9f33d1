//! A stage's layers unpacked into its root. Every layer downloads at once, each
//! as soon as the cache repository has said whether it keeps a zstd copy of it
//! (then the copy is fetched instead of the gzip blob); the layers are then
//! applied in order, each decompressed on a thread of its own while its files
//! are written. The file index comes with them when no step has asked for it:
//! each layer's from the cache while the blobs download, or else read as the
//! layer is unpacked, never in a second pass.

use super::{BuildError, Session};
use crate::image::{Layer, LayerSource};
use crate::layer::reader::{Entry, ReadError};
use crate::rootfs::apply::{ApplyError, ScratchRoot};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a layer's bytes come from.
struct Source {
    blob: PathBuf,
    /// Set when `blob` is the cache repository's zstd copy: its tar must hash
    /// to the layer's diff_id.
    copy: bool,
}

/// Unpacks `layers` into the directory `dir`; `keep`: after how many of them
/// the root is kept as the tree at its path. Copies are used only where `dir`
/// was empty, so a refused one is undone by emptying it. With `with_index`,
/// each layer's entries where they came without reading its blob again.
pub(super) async fn unpack(
    session: &Session,
    dir: &Path,
    layers: &[Layer],
    keep: Option<(usize, PathBuf)>,
    with_index: bool,
) -> Result<(ScratchRoot, Vec<Option<Arc<Vec<Entry>>>>), BuildError> {
    let copies = std::fs::read_dir(dir)
        .map_err(|e| BuildError::io(format!("reading {}", dir.display()), e))?
        .next()
        .is_none();
    let cached = async {
        match with_index {
            true => futures_util::future::join_all(layers.iter().map(|l| known(session, l))).await,
            false => vec![None; layers.len()],
        }
    };
    let sources =
        futures_util::future::try_join_all(layers.iter().map(|l| source(session, l, copies)));
    let (sources, cached) = futures_util::future::join(sources, cached).await;
    let mut sources = sources?;
    let (root, read) = loop {
        let root = ScratchRoot::new(dir);
        let applied = super::cpu(|| apply(&root, layers, &sources, &keep, &cached));
        match applied {
            Ok(read) => break (root, read),
            Err(Refused { at, error }) => {
                // A copy whose tar is not the layer: the gzip layer instead, in
                // an emptied root, and a new copy made.
                crate::log_warn!("{error}; using the layer itself");
                let blob = blob(session, &layers[at]).await?;
                sources[at] = Source { blob, copy: false };
                empty_dir(dir)?;
            }
            Err(Failed(e)) => return Err(e),
        }
    };
    // Copies were looked up and missed (or refused): the first build makes them.
    for (l, s) in layers.iter().zip(&sources).filter(|_| copies) {
        if !s.copy {
            session
                .cache
                .make_zstd_copy(l, s.blob.clone(), &session.blobs_dir);
        }
    }
    let mut known = Vec::new();
    for ((l, from_cache), from_unpack) in layers.iter().zip(cached).zip(read) {
        known.push(match (from_cache, from_unpack) {
            (Some(e), _) => Some(e),
            (None, Some(e)) => {
                let digest = &l.descriptor.digest;
                if matches!(l.source, LayerSource::Remote(_)) {
                    session
                        .cache
                        .store_layer_entries(digest, &e, &session.blobs_dir);
                }
                // Other stages on this base read them from here.
                let e = Arc::new(e);
                let _ = session.entries_of(digest).set(e.clone());
                Some(e)
            }
            (None, None) => None,
        });
    }
    Ok((root, known))
}

/// A layer's blob file, through the build's blob store.
async fn blob(session: &Session, layer: &Layer) -> Result<PathBuf, BuildError> {
    Ok(layer.compressed(&session.store).await?)
}

/// A layer's entries when they need no reading of its blob: read by another
/// stage of this build, or stored in the cache.
async fn known(session: &Session, layer: &Layer) -> Option<Arc<Vec<Entry>>> {
    let digest = &layer.descriptor.digest;
    if let Some(e) = session.entries_of(digest).get() {
        return Some(e.clone());
    }
    let found = session
        .cache
        .layer_entries(&session.registry, digest, &session.blobs_dir)
        .await?;
    Some(Arc::new(found))
}

/// A layer's blob: with `copies`, its zstd copy when the cache repository
/// holds one that downloads whole, else its own.
async fn source(session: &Session, layer: &Layer, copies: bool) -> Result<Source, BuildError> {
    let copy = match copies {
        true => session.cache.zstd_copy(&session.registry, layer).await,
        false => None,
    };
    if let Some(copy) = copy {
        match blob(session, &copy).await {
            Ok(blob) => return Ok(Source { blob, copy: true }),
            Err(e) => crate::log_warn!(
                "the zstd copy of layer {}: {e}; using the layer itself",
                layer.descriptor.digest
            ),
        }
    }
    Ok(Source {
        blob: blob(session, layer).await?,
        copy: false,
    })
}

/// Why applying the layers stopped.
enum Stop {
    /// Layer `at` came from a copy whose tar is not the layer.
    Refused {
        at: usize,
        error: ReadError,
    },
    Failed(BuildError),
}
use Stop::{Failed, Refused};

/// Applies every layer in order: each one's entries when `cached` lacks them.
fn apply(
    root: &ScratchRoot,
    layers: &[Layer],
    sources: &[Source],
    keep: &Option<(usize, PathBuf)>,
    cached: &[Option<Arc<Vec<Entry>>>],
) -> Result<Vec<Option<Vec<Entry>>>, Stop> {
    let mut read = Vec::new();
    for (at, (l, s)) in layers.iter().zip(sources).enumerate() {
        if let Some((n, path)) = keep {
            if *n == at {
                keep_tree(root.path(), path);
            }
        }
        let collect = cached.get(at).is_some_and(Option::is_none);
        let diff_id = s.copy.then_some(&l.diff_id);
        let report = match root.apply_layer_with(&s.blob, &l.descriptor.digest, collect, diff_id) {
            Ok(r) => r,
            Err(ApplyError::Read(error @ ReadError::DiffId { .. })) => {
                return Err(Refused { at, error })
            }
            Err(e) => return Err(Failed(e.into())),
        };
        if report.skipped_devices > 0 {
            crate::log_warn!(
                "layer {}: skipped {} device nodes (not running as root)",
                l.descriptor.digest,
                report.skipped_devices
            );
        }
        read.push(report.entries);
    }
    if let Some((n, path)) = keep {
        if *n == layers.len() {
            keep_tree(root.path(), path);
        }
    }
    Ok(read)
}

/// Removes everything in `dir`, keeping it.
fn empty_dir(dir: &Path) -> Result<(), BuildError> {
    let err = |e| BuildError::io(format!("emptying {}", dir.display()), e);
    for child in std::fs::read_dir(dir).map_err(err)? {
        let p = child.map_err(err)?.path();
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
            _ => std::fs::remove_file(&p),
        }
        .map_err(err)?;
    }
    Ok(())
}

/// Keeps the root as unpacked so far as the tree at `path` (a clone made aside,
/// then renamed into place, so a reader never sees half a tree). Failing only
/// costs the next build an unpacking.
fn keep_tree(root: &std::path::Path, path: &std::path::Path) {
    let Some(parent) = path.parent() else { return };
    // `trees` is 0700; each tree's root keeps the image root's mode (clone_tree).
    let made = crate::scratch::private_dir_all(parent).and_then(|()| {
        let tmp = tempfile::Builder::new()
            .prefix(".new-")
            .tempdir_in(parent)?;
        crate::rootfs::trees::clone_tree(root, tmp.path())?;
        // Another build may have kept the same tree first: then this one goes.
        std::fs::rename(tmp.path(), path)
    });
    if let Err(e) = made {
        crate::log_debug!("keeping the unpacked tree {}: {e}", path.display());
    }
}
