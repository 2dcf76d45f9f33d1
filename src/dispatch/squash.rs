//! `--single-snapshot`: the target stage's own layers (everything above its base
//! image's) merged into one, as Kaniko then takes one snapshot at the end. The
//! merge follows overlay rules: a later entry replaces an earlier one, a
//! whiteout removes what the stage added there and stays to hide the base's,
//! an opaque marker clears the directory; a path removed and made again as a
//! directory gets an opaque marker so the base's contents stay hidden.

use super::stage::StageFs;
use super::{BuildError, Session};
use crate::image::{Layer, ManifestFormat};
use crate::layer::entries::{PathKey, Planned};
use crate::layer::reader::{self, Entry, Kind, ReadError, Whiteout};
use crate::layer::writer::{EntryBody, EntryMeta, LayerWriter};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One path's winner: the layer it comes from and its entry.
type Merged = BTreeMap<PathKey, (usize, Entry)>;

/// Where a layer's file (layer index, path) was streamed to.
type Bodies = Vec<((usize, String), PathBuf)>;

/// Merges `layers` (in order) into one layer written under `dir`.
pub(super) async fn squash(
    session: &Session,
    layers: &[Layer],
    dir: &Path,
    format: ManifestFormat,
) -> Result<Layer, BuildError> {
    let mut merged = Merged::new();
    for (i, layer) in layers.iter().enumerate() {
        for e in StageFs::entries(session, layer).await?.iter().cloned() {
            merge(&mut merged, i, e);
        }
    }
    // Bodies: each layer's winning files (and hard link targets a later layer
    // replaced) streamed out of its blob once.
    let mut wanted: Vec<HashSet<String>> = vec![HashSet::new(); layers.len()];
    for (k, (i, e)) in &merged {
        match &e.kind {
            Kind::File => {
                wanted[*i].insert(k.0.clone());
            }
            Kind::Hardlink(t) if !same_layer(&merged, t, *i) => {
                wanted[*i].insert(t.clone());
            }
            _ => {}
        }
    }
    crate::scratch::private_dir_all(dir)
        .map_err(|e| BuildError::io(format!("creating {}", dir.display()), e))?;
    let mut bodies: HashMap<(usize, String), PathBuf> = HashMap::new();
    for (i, layer) in layers.iter().enumerate() {
        if wanted[i].is_empty() {
            continue;
        }
        let blob = StageFs::blob(session, layer).await?;
        let want = std::mem::take(&mut wanted[i]);
        let out_dir = dir.to_path_buf();
        let label = layer.descriptor.digest.to_string();
        let got = super::cpu(move || extract(&blob, &label, &want, &out_dir, i))?;
        bodies.extend(got);
    }
    let mut planned: BTreeMap<PathKey, Planned> = BTreeMap::new();
    for (k, (i, e)) in &merged {
        let body = match &e.kind {
            Kind::Dir => EntryBody::Dir,
            Kind::Symlink(t) => EntryBody::Symlink(t.clone()),
            Kind::File if e.whiteout.is_some() => EntryBody::Bytes(Vec::new()),
            Kind::File => file_body(&bodies, *i, &k.0, e.size)?,
            Kind::Hardlink(t) if same_layer(&merged, t, *i) => EntryBody::Hardlink(t.clone()),
            Kind::Hardlink(t) => file_body(&bodies, *i, t, e.size)?,
            Kind::Fifo => EntryBody::Fifo,
            Kind::Char(major, minor) => EntryBody::Char(*major, *minor),
            Kind::Block(major, minor) => EntryBody::Block(*major, *minor),
        };
        let meta = EntryMeta {
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime: e.mtime,
            xattrs: e.xattrs.clone(),
        };
        planned.insert(k.clone(), Planned { meta, body });
    }
    let path = dir.join("single-snapshot.tar.gz");
    let compression = session.compression;
    let file = super::cpu(move || -> Result<_, BuildError> {
        let mut w = LayerWriter::create_with(&path, compression)?;
        for (key, p) in &planned {
            w.append(&key.0, &p.meta, &p.body)?;
        }
        Ok(w.finish()?)
    })?;
    Ok(super::stage::written_layer(
        file,
        compression.media_type(format.media_types().2),
    ))
}

/// Applies one entry of layer `i` to the merge.
fn merge(merged: &mut Merged, i: usize, e: Entry) {
    let under = |merged: &mut Merged, dir: &str| {
        let prefix = format!("{dir}/");
        merged.retain(|k, _| !k.0.starts_with(&prefix));
    };
    match e.whiteout.clone() {
        Some(Whiteout::Remove(target)) => {
            merged.remove(&PathKey(target.clone()));
            under(merged, &target);
            merged.insert(PathKey(marker_path(&target)), (i, e));
        }
        Some(Whiteout::Opaque(d)) => {
            under(merged, &d);
            merged.insert(PathKey(format!("{d}/.wh..wh..opq")), (i, e));
        }
        None => {
            let key = PathKey(e.path.clone());
            let removed = merged.remove(&PathKey(marker_path(&e.path))).is_some();
            let was_dir = merged
                .get(&key)
                .is_some_and(|(_, old)| old.kind == Kind::Dir);
            if was_dir && e.kind != Kind::Dir {
                under(merged, &e.path);
            }
            if removed && e.kind == Kind::Dir {
                // Made again after a removal: the base's contents stay hidden.
                let mut marker = e.clone();
                marker.path = format!("{}/.wh..wh..opq", e.path);
                marker.kind = Kind::File;
                marker.size = 0;
                marker.mode = 0;
                marker.whiteout = Some(Whiteout::Opaque(e.path.clone()));
                merged.insert(PathKey(marker.path.clone()), (i, marker));
            }
            merged.insert(key, (i, e));
        }
    }
}

/// `dir/.wh.name` for `dir/name`.
fn marker_path(target: &str) -> String {
    match target.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/.wh.{name}"),
        None => format!(".wh.{target}"),
    }
}

/// Whether a hard link's target is still layer `i`'s file in the merge.
fn same_layer(merged: &Merged, target: &str, i: usize) -> bool {
    merged
        .get(&PathKey(target.to_string()))
        .is_some_and(|(j, e)| *j == i && e.kind == Kind::File)
}

fn file_body(
    bodies: &HashMap<(usize, String), PathBuf>,
    i: usize,
    path: &str,
    size: u64,
) -> Result<EntryBody, BuildError> {
    let source = bodies.get(&(i, path.to_string())).cloned().ok_or_else(|| {
        BuildError::io(
            format!("--single-snapshot: {path} was not in its layer"),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )
    })?;
    Ok(EntryBody::File { source, size })
}

/// Writes the contents of `want`'s regular files in one layer blob to files
/// under `dir`, named by a counter (entry names may be anything).
fn extract(
    blob: &Path,
    label: &str,
    want: &HashSet<String>,
    dir: &Path,
    layer: usize,
) -> Result<Bodies, BuildError> {
    let mut out = Vec::new();
    reader::for_each_archive_entry(blob, label, |e, data| {
        if e.kind != Kind::File || !want.contains(&e.path) {
            return Ok(());
        }
        let path = dir.join(format!("{layer}-{}", out.len()));
        let io = |source| ReadError::Io {
            layer: label.to_string(),
            source,
        };
        let mut f = std::fs::File::create(&path).map_err(io)?;
        std::io::copy(data, &mut f).map_err(io)?;
        f.flush().map_err(io)?;
        out.push(((layer, e.path.clone()), path));
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: Kind) -> Entry {
        Entry {
            path: path.to_string(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            whiteout: reader::whiteout_of_path(path),
            xattrs: Default::default(),
        }
    }

    #[test]
    fn later_layers_win_and_whiteouts_stay_for_the_base() {
        let mut m = Merged::new();
        for e in [
            entry("app", Kind::Dir),
            entry("app/a", Kind::File),
            entry("app/old", Kind::Dir),
            entry("app/old/x", Kind::File),
        ] {
            merge(&mut m, 0, e);
        }
        for e in [
            entry("app/.wh.old", Kind::File),
            entry("app/a", Kind::File),
            entry("etc/.wh.motd", Kind::File),
            entry("opt/.wh..wh..opq", Kind::File),
            entry(".wh.srv", Kind::File),
        ] {
            merge(&mut m, 1, e);
        }
        merge(&mut m, 2, entry("srv", Kind::Dir));
        let keys: Vec<(&str, usize)> = m.iter().map(|(k, (i, _))| (k.0.as_str(), *i)).collect();
        assert_eq!(
            keys,
            [
                ("app", 0),
                ("app/.wh.old", 1),
                ("app/a", 1),
                ("etc/.wh.motd", 1),
                ("opt/.wh..wh..opq", 1),
                ("srv", 2),
                ("srv/.wh..wh..opq", 2),
            ]
        );
    }
}
