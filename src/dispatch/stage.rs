//! A stage's filesystem as a list of layers, with a file index and an unpacked
//! root made only when a step needs them.

use super::{BuildError, Session};
use crate::image::{Layer, LayerSource, ManifestFormat};
use crate::layer::entries::{PathKey, Planned};
use crate::layer::reader::{self, Entry, Kind, Whiteout};
use crate::layer::writer::{EntryBody, LayerWriter};
use crate::rootfs::apply::ScratchRoot;
use crate::rootfs::index::{layer_entries, FsIndex};
use crate::sandbox::inplace::Snapshot;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub struct StageFs {
    pub layers: Vec<Layer>,
    /// Entries of the layer `commit` wrote last, so its file index needs no re-read.
    pub last_entries: Vec<Entry>,
    // Made on first use; `&self` access lets later stages read a finished one
    // while other stages run.
    index: tokio::sync::OnceCell<FsIndex>,
    rootfs: tokio::sync::OnceCell<ScratchRoot>,
    /// The root as a RUN on the stage's root itself left it (the walk after
    /// that step), and how many layers the stage had then: the next such RUN
    /// starts from it instead of walking the root again.
    walked: std::sync::Mutex<Option<(usize, Snapshot)>>,
    dir: PathBuf,
}

impl StageFs {
    pub fn new(layers: Vec<Layer>, dir: PathBuf) -> StageFs {
        StageFs {
            layers,
            last_entries: Vec::new(),
            index: tokio::sync::OnceCell::new(),
            rootfs: tokio::sync::OnceCell::new(),
            walked: std::sync::Mutex::new(None),
            dir,
        }
    }

    /// The walk a RUN on this root left, while nothing else changed the root
    /// since (taken: a step that fails leaves none).
    pub(crate) fn take_walked(&self) -> Option<Snapshot> {
        let mut w = self.walked.lock().ok()?;
        match w.take() {
            Some((n, s)) if n == self.layers.len() => Some(s),
            _ => None,
        }
    }

    /// This stage's scratch dir.
    pub(crate) fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The blob file of a layer, through the build's blob store.
    pub async fn blob(session: &Session, layer: &Layer) -> Result<PathBuf, BuildError> {
        Ok(layer.compressed(&session.store).await?)
    }

    /// A layer's entries: from the cache when stored there, else by streaming its
    /// blob once (and then storing them, so the next build need not download it);
    /// once per build whichever stage asks.
    pub async fn entries(
        session: &Session,
        layer: &Layer,
    ) -> Result<std::sync::Arc<Vec<Entry>>, BuildError> {
        let cell = session.entries_of(&layer.descriptor.digest);
        cell.get_or_try_init(|| Self::read_entries(session, layer))
            .await
            .cloned()
    }

    async fn read_entries(
        session: &Session,
        layer: &Layer,
    ) -> Result<std::sync::Arc<Vec<Entry>>, BuildError> {
        let digest = &layer.descriptor.digest;
        if let Some(e) = session
            .cache
            .layer_entries(&session.registry, digest, &session.blobs_dir)
            .await
        {
            return Ok(std::sync::Arc::new(e));
        }
        let blob = Self::blob(session, layer).await?;
        // Decompressing is CPU work: off the runtime's workers, so the other layers'
        // downloads go on meanwhile.
        let label = digest.to_string();
        let entries = tokio::task::spawn_blocking(move || layer_entries(&blob, &label))
            .await
            .map_err(|source| super::StepError::LayerTask {
                digest: digest.clone(),
                source,
            })??;
        if matches!(layer.source, LayerSource::Remote(_)) {
            session
                .cache
                .store_layer_entries(digest, &entries, &session.blobs_dir);
        }
        Ok(std::sync::Arc::new(entries))
    }

    /// The file index, built from every layer's entries.
    pub(crate) async fn index(&self, session: &Session) -> Result<&FsIndex, BuildError> {
        self.index
            .get_or_try_init(|| async {
                let started = std::time::Instant::now();
                // Fetch every layer's entries at once; apply them in layer order.
                let all = futures_util::future::try_join_all(
                    self.layers.iter().map(|l| Self::entries(session, l)),
                )
                .await?;
                let mut idx = FsIndex::default().with_root();
                for entries in &all {
                    idx.apply_entries(entries);
                }
                if crate::log::debug_enabled() {
                    crate::log_debug!(
                        "file index of {} layers ({} paths) in {:?}",
                        all.len(),
                        idx.len(),
                        started.elapsed()
                    );
                }
                Ok(idx)
            })
            .await
    }

    /// Appends a layer taken from the cache, keeping the index and root (if made) current.
    pub(crate) async fn append_cached(
        &mut self,
        session: &Session,
        layer: Layer,
    ) -> Result<(), BuildError> {
        if self.index.initialized() {
            let entries = Self::entries(session, &layer).await?;
            if let Some(idx) = self.index.get_mut() {
                idx.apply_entries(&entries);
            }
        }
        if let Some(root) = self.rootfs.get() {
            let blob = Self::blob(session, &layer).await?;
            super::cpu(|| root.apply_layer(&blob, &layer.descriptor.digest))?;
        }
        self.layers.push(layer);
        Ok(())
    }

    /// The unpacked root and the file index together, for reading a stage or image
    /// as a COPY source: contents from the root, owners and modes from the index
    /// (the layer headers), which an unprivileged unpack cannot reproduce on disk.
    pub(crate) async fn source_view(
        &self,
        session: &Session,
    ) -> Result<(&ScratchRoot, &FsIndex), BuildError> {
        let index = self.index(session).await?;
        Ok((self.rootfs(session).await?, index))
    }

    /// The unpacked root, applying every layer into this stage's scratch dir.
    pub(crate) async fn rootfs(&self, session: &Session) -> Result<&ScratchRoot, BuildError> {
        self.rootfs
            .get_or_try_init(|| async {
                let dir = self.dir.join("rootfs");
                std::fs::create_dir_all(&dir)
                    .map_err(|e| BuildError::io(format!("creating {}", dir.display()), e))?;
                // The layers from a registry (the base, cache hits) may be an
                // unpacked tree already, or their first ones (the base's, when
                // the hits are new); then only the rest is unpacked, and the
                // tree of all of them is kept once they are.
                let paths = self.cached_trees(session);
                let from = match crate::rootfs::trees::longest_kept(&paths) {
                    Some((k, path)) => {
                        super::cpu(|| crate::rootfs::trees::clone_tree(path, &dir)).map_err(
                            |e| BuildError::io(format!("cloning {}", path.display()), e),
                        )?;
                        k
                    }
                    None => 0,
                };
                let keep = paths
                    .last()
                    .filter(|_| from < paths.len())
                    .map(|all| (paths.len() - from, all.clone()));
                let layers = &self.layers[from..];
                let phase = session.unpack.begin();
                // With no cloned tree, the file index comes with the layers.
                let with_index = from == 0 && !self.index.initialized();
                let (root, known) =
                    super::unpack::unpack(session, &dir, layers, keep, with_index).await?;
                if with_index {
                    let mut idx = FsIndex::default().with_root();
                    for (l, entries) in layers.iter().zip(known) {
                        let entries = match entries {
                            Some(e) => e,
                            None => Self::entries(session, l).await?,
                        };
                        idx.apply_entries(&entries);
                    }
                    // A step that made it meanwhile keeps its own (the same).
                    let _ = self.index.set(idx);
                }
                let bytes: u64 = layers.iter().map(|l| l.descriptor.size).sum();
                let took = phase.done(bytes, layers.len());
                if !layers.is_empty() {
                    let name = self.dir.file_name().unwrap_or_default().to_string_lossy();
                    crate::log::emit_with(
                        crate::log::Level::Info,
                        format_args!(
                            "unpacked {} layers ({}) into {name}'s root in {}{}",
                            layers.len(),
                            crate::report::bytes(bytes),
                            crate::report::seconds(took),
                            crate::report::rate(bytes, took)
                        ),
                        serde_json::json!({"layers": layers.len(), "bytes": bytes, "seconds": took.as_secs_f64()}),
                    );
                }
                Ok(root)
            })
            .await
    }

    /// Where the unpacked trees of the leading layers that came from a registry
    /// are kept (one per leading run, the last holding all of them); none
    /// without `--cache-dir` or the right to give files any owner and mode (a
    /// clone must match the tree).
    fn cached_trees(&self, session: &Session) -> Vec<PathBuf> {
        let Some(trees) = session.trees.as_ref() else {
            return Vec::new();
        };
        if session.trees_off.load(std::sync::atomic::Ordering::SeqCst) {
            return Vec::new();
        }
        let caps = crate::rootfs::caps::FileCaps::effective();
        if !(caps.chown && caps.dac_override) {
            return Vec::new();
        }
        let n = self
            .layers
            .iter()
            .take_while(|l| matches!(l.source, LayerSource::Remote(_)))
            .count();
        let ids: Vec<&str> = self.layers[..n]
            .iter()
            .map(|l| l.diff_id.as_str())
            .collect();
        crate::rootfs::trees::tree_paths(trees, &ids)
    }

    /// Reads one file's bytes from the layers (for /etc/passwd and /etc/group).
    pub(crate) async fn read_file(
        &self,
        session: &Session,
        abs: &str,
    ) -> Result<Option<Vec<u8>>, BuildError> {
        let rel = self.index(session).await?.resolve(abs, true)?;
        if let Some(root) = self.rootfs.get() {
            return Ok(std::fs::read(root.host_path(&rel)).ok());
        }
        let mut found: Option<Vec<u8>> = None;
        for l in self.layers.clone() {
            let blob = Self::blob(session, &l).await?;
            reader::for_each_entry(&blob, &l.descriptor.digest, |e, data| {
                match (&e.whiteout, &e.kind) {
                    (Some(Whiteout::Remove(p)), _)
                        if *p == rel || rel.starts_with(&format!("{p}/")) =>
                    {
                        found = None
                    }
                    (Some(Whiteout::Opaque(d)), _) if rel.starts_with(&format!("{d}/")) => {
                        found = None
                    }
                    (None, Kind::File) if e.path == rel => {
                        let mut b = Vec::new();
                        data.read_to_end(&mut b)
                            .map_err(|source| reader::ReadError::Io {
                                layer: l.descriptor.digest.to_string(),
                                source,
                            })?;
                        found = Some(b);
                    }
                    _ => {}
                }
                Ok(())
            })?;
        }
        Ok(found)
    }

    /// Writes `entries` (plus nothing else) as a new layer and records it.
    /// `walked`, for a RUN that ran on the stage's root itself: the walk that
    /// read its change, which serves the next RUN; the root holds that change
    /// already, so the layer is not applied to it again (which would also make
    /// the walk stale).
    pub(crate) fn commit(
        &mut self,
        session: &Session,
        entries: BTreeMap<PathKey, Planned>,
        format: ManifestFormat,
        walked: Option<Snapshot>,
    ) -> Result<Layer, BuildError> {
        let started = std::time::Instant::now();
        let n = self.layers.len();
        let path = self.dir.join(format!("layer-{n}.tar.gz"));
        let mut w = LayerWriter::create_with(&path, session.compression)?;
        self.last_entries.clear();
        for (key, p) in &entries {
            w.append(&key.0, &p.meta, &p.body)?;
            self.last_entries.push(planned_entry(&key.0, p));
        }
        let file = w.finish()?;
        if crate::log::debug_enabled() {
            crate::log_debug!(
                "layer {} ({} bytes) written in {:?}",
                file.digest,
                file.size,
                started.elapsed()
            );
        }
        if let Some(idx) = self.index.get_mut() {
            idx.apply_entries(&self.last_entries);
        }
        let path = file.path.clone();
        let layer = written_layer(file, session.compression.media_type(format.media_types().2));
        if let Some(root) = self.rootfs.get().filter(|_| walked.is_none()) {
            root.apply_layer(&path, &layer.descriptor.digest)?;
        }
        self.layers.push(layer.clone());
        if let (Some(after), Ok(mut w)) = (walked, self.walked.lock()) {
            *w = Some((self.layers.len(), after));
        }
        Ok(layer)
    }
}

/// A layer this build wrote, under `media_type`.
pub(crate) fn written_layer(file: crate::layer::writer::LayerFile, media_type: &str) -> Layer {
    Layer {
        descriptor: crate::image::spec::Descriptor {
            media_type: media_type.to_string(),
            digest: file.digest,
            size: file.size,
            platform: None,
            annotations: None,
            urls: None,
        },
        diff_id: file.diff_id,
        source: LayerSource::Local(file.path),
    }
}

/// The index entry of a planned layer entry.
fn planned_entry(path: &str, p: &Planned) -> Entry {
    let (kind, size) = match &p.body {
        EntryBody::Dir => (Kind::Dir, 0),
        EntryBody::File { size, .. } => (Kind::File, *size),
        EntryBody::Bytes(b) => (Kind::File, b.len() as u64),
        EntryBody::Symlink(t) => (Kind::Symlink(t.clone()), 0),
        EntryBody::Hardlink(t) => (Kind::Hardlink(t.clone()), 0),
        EntryBody::Fifo => (Kind::Fifo, 0),
        EntryBody::Char(major, minor) => (Kind::Char(*major, *minor), 0),
        EntryBody::Block(major, minor) => (Kind::Block(*major, *minor), 0),
    };
    let whiteout = reader::whiteout_of_path(path);
    Entry {
        path: path.to_string(),
        kind,
        mode: p.meta.mode,
        uid: p.meta.uid,
        gid: p.meta.gid,
        size,
        mtime: p.meta.mtime,
        whiteout,
        xattrs: p.meta.xattrs.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::writer::EntryMeta;

    #[test]
    fn planned_entries_match_what_the_layer_holds() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("f");
        std::fs::write(&src, b"hello").unwrap();
        let m = |mode| EntryMeta {
            mode,
            uid: 7,
            gid: 8,
            mtime: 9,
            xattrs: Vec::new(),
        };
        let planned = [
            (
                "a",
                Planned {
                    meta: m(0o755),
                    body: EntryBody::Dir,
                },
            ),
            (
                "a/f",
                Planned {
                    meta: m(0o644),
                    body: EntryBody::File {
                        source: src.clone(),
                        size: 5,
                    },
                },
            ),
            (
                "a/h",
                Planned {
                    meta: m(0o644),
                    body: EntryBody::Hardlink("a/f".into()),
                },
            ),
            (
                "a/l",
                Planned {
                    meta: m(0o777),
                    body: EntryBody::Symlink("f".into()),
                },
            ),
            (
                "a/x",
                Planned {
                    meta: m(0o600),
                    body: EntryBody::Bytes(b"xy".to_vec()),
                },
            ),
        ];
        let blob = dir.path().join("l.tgz");
        let mut w = LayerWriter::create(&blob, 6).unwrap();
        for (p, e) in &planned {
            w.append(p, &e.meta, &e.body).unwrap();
        }
        w.finish().unwrap();
        let read = layer_entries(&blob, "test").unwrap();
        assert_eq!(read.len(), planned.len());
        for ((p, e), r) in planned.iter().zip(&read) {
            let mine = planned_entry(p, e);
            assert_eq!(
                (&mine.path, &mine.kind, mine.mode, mine.uid, mine.gid, mine.size, mine.mtime),
                (&r.path, &r.kind, r.mode, r.uid, r.gid, r.size, r.mtime),
                "{p}"
            );
        }
    }
}
