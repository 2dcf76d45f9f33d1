//! The executor's own root as the root RUN steps run in (the in-place rung,
//! `sandbox::inplace`): which layers `/` holds, bringing it to a stage's layers,
//! and what a command changed there. One stage at a time holds it (a lock in
//! the build); a stage that finds another stage's layers there clears it first.

use super::effect::Entries;
use super::stage::StageFs;
use super::{cpu, BuildError, Session};
use crate::image::{Digest, Layer};
use crate::layer::entries::{PathKey, Planned};
use crate::layer::writer::{EntryBody, EntryMeta};
use crate::rootfs::apply::ScratchRoot;
use crate::rootfs::index::{FsIndex, NodeKind};
use crate::rootfs::keep::Keep;
use crate::rootfs::split_parent;
use crate::sandbox::inplace::{self, Snapshot};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub(crate) struct LiveRoot {
    keep: Keep,
    /// The layers `/` holds, in order; `None` when unknown (before the first
    /// stage, after a failed step).
    layers: Option<Vec<Digest>>,
    /// `/` as the next command finds it.
    snapshot: Snapshot,
}

/// The root this rung runs in.
pub(crate) const ROOT: &str = "/";

impl LiveRoot {
    /// The root, keeping the executor's own paths and `extra` ones.
    pub fn new(extra: &[PathBuf]) -> LiveRoot {
        let keep = inplace::keep(extra);
        crate::log_debug!("the in-place root keeps {:?}", keep.paths());
        LiveRoot {
            keep,
            layers: None,
            snapshot: Snapshot::default(),
        }
    }

    /// Brings `/` to exactly `layers`: only the missing ones are unpacked when
    /// it holds a prefix of them, else it is cleared first.
    pub async fn sync(&mut self, session: &Session, layers: &[Layer]) -> Result<(), BuildError> {
        let want = digests(layers);
        let from = match self.layers.take() {
            Some(have) if want.starts_with(&have) => have.len(),
            _ => {
                crate::log_info!("clearing this container's root for the stage's layers");
                cpu(|| self.keep.clear_dir(Path::new(ROOT), ""))
                    .map_err(|e| BuildError::io("clearing the container's root", e))?;
                self.snapshot = Snapshot::default();
                0
            }
        };
        let rest = &layers[from..];
        if !rest.is_empty() || from == 0 {
            let blobs =
                futures_util::future::try_join_all(rest.iter().map(|l| StageFs::blob(session, l)))
                    .await?;
            let root = ScratchRoot::new(Path::new(ROOT)).keeping(self.keep.clone());
            cpu(|| -> Result<(), BuildError> {
                for (l, blob) in rest.iter().zip(&blobs) {
                    root.apply_layer(blob, &l.descriptor.digest)?;
                }
                self.snapshot = Snapshot::take(Path::new(ROOT), &self.keep)?;
                Ok(())
            })?;
        }
        self.layers = Some(want);
        Ok(())
    }

    /// What the command changed since `sync`, on a stage whose layers `index`
    /// describes; `/` holds no known layers until [`LiveRoot::committed`] says
    /// the change is one.
    /// Mount point dirs it adds are made at `now` (the build's time).
    pub fn changes(&mut self, index: &FsIndex, now: u64) -> Result<Entries, BuildError> {
        self.layers = None;
        // Kept paths the image lacks stand where BuildKit puts its stubs.
        let stub_parents: HashSet<String> = self
            .keep
            .paths()
            .iter()
            .filter(|k| index.get(k).is_none())
            .map(|k| split_parent(k).0.to_string())
            .filter(|p| index.get(p).is_some_and(|n| n.kind == NodeKind::Dir))
            .collect();
        let (mut entries, after) =
            cpu(|| inplace::changes(Path::new(ROOT), &self.snapshot, &self.keep, &stub_parents))?;
        self.snapshot = after;
        // BuildKit's runtime makes its mount points where the image has none and
        // leaves them in the layer; the container's own stand there here.
        for dir in ["dev", "proc", "sys"] {
            if index.get(dir).is_none() {
                entries.insert(PathKey(dir.into()), mount_point_dir(now));
            }
        }
        Ok(entries)
    }

    /// Whether `/` holds exactly `layers`.
    pub fn holds(&self, layers: &[Layer]) -> bool {
        self.layers.as_ref() == Some(&digests(layers))
    }

    /// What the root keeps.
    pub fn keep(&self) -> &Keep {
        &self.keep
    }

    /// The change was committed as the last of `layers`, which `/` now holds.
    pub fn committed(&mut self, layers: &[Layer]) {
        self.layers = Some(digests(layers));
    }
}

fn digests(layers: &[Layer]) -> Vec<Digest> {
    layers.iter().map(|l| l.descriptor.digest.clone()).collect()
}

/// A mount point directory as runc makes it: root's, 0755, made `now`.
fn mount_point_dir(now: u64) -> Planned {
    Planned {
        meta: EntryMeta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: now,
            xattrs: Vec::new(),
        },
        body: EntryBody::Dir,
    }
}
