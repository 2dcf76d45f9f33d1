//! A file index of an image's filesystem: every path with its type, mode, owner,
//! size and link target, built by streaming layers (no contents kept).

use super::resolve_in_root;
use crate::layer::reader::{self, Entry, Kind, ReadError, Whiteout};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) enum NodeKind {
    File,
    Dir,
    Symlink(String),
    Fifo,
    /// A character device: major, minor.
    Char(u32, u32),
    /// A block device: major, minor.
    Block(u32, u32),
    /// A socket on disk (never in a layer).
    Other,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Node {
    pub(crate) kind: NodeKind,
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) size: u64,
    pub(crate) mtime: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) xattrs: crate::layer::Xattrs,
}

impl Node {
    pub(crate) fn dir(mode: u32, uid: u64, gid: u64, mtime: u64) -> Node {
        Node {
            kind: NodeKind::Dir,
            mode,
            uid,
            gid,
            size: 0,
            mtime,
            xattrs: Vec::new(),
        }
    }
}

/// Path (root-relative, `""` is the root) → node.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct FsIndex {
    nodes: BTreeMap<String, Node>,
}

impl FsIndex {
    pub(crate) fn get(&self, p: &str) -> Option<&Node> {
        self.nodes.get(p)
    }

    /// The names and nodes directly inside directory `p` (`""` is the root).
    pub(crate) fn children<'a>(
        &'a self,
        p: &str,
    ) -> impl Iterator<Item = (&'a str, &'a Node)> + 'a {
        let prefix = if p.is_empty() {
            String::new()
        } else {
            format!("{p}/")
        };
        let start = prefix.clone();
        let skip = prefix.len();
        self.nodes
            .range::<String, _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .filter_map(move |(k, n)| {
                let name = &k[skip..];
                (!name.is_empty() && !name.contains('/')).then_some((name, n))
            })
    }

    /// Records `path` as `node` (an index read from disk rather than layers).
    pub(crate) fn insert(&mut self, path: String, node: Node) {
        self.nodes.insert(path, node);
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    /// Resolves an absolute image path following symlinks inside the root.
    pub(crate) fn resolve(
        &self,
        path: &str,
        follow_last: bool,
    ) -> Result<String, super::ResolveError> {
        resolve_in_root(path, follow_last, |c| match self.nodes.get(c) {
            Some(Node {
                kind: NodeKind::Symlink(t),
                ..
            }) => Some(t.clone()),
            _ => None,
        })
    }

    pub(crate) fn remove_tree(&mut self, p: &str, keep: &HashSet<String>) {
        let prefix = format!("{p}/");
        let doomed: Vec<String> = if p.is_empty() {
            self.nodes
                .keys()
                .filter(|k| !k.is_empty())
                .cloned()
                .collect()
        } else {
            self.nodes
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone())
                .collect()
        };
        for k in doomed {
            if !keep.contains(&k) {
                self.nodes.remove(&k);
            }
        }
    }

    /// Makes every ancestor of `path` a directory. Overlay rule (BuildKit, Docker):
    /// a layer's entry lives in that layer's own directories, so a lower layer's
    /// symlink or file at a parent's place is replaced, never followed. Nothing
    /// ever sits below a non-directory, so the walk stops at the first directory.
    fn ensure_parents(&mut self, path: &str) {
        let mut parent = path;
        while let Some((p, _)) = parent.rsplit_once('/') {
            match self.nodes.get_mut(p) {
                Some(n) if n.kind == NodeKind::Dir => break,
                Some(n) => {
                    *n = Node::dir(0o755, 0, 0, 0);
                    break;
                }
                None => {
                    self.nodes.insert(p.to_string(), Node::dir(0o755, 0, 0, 0));
                }
            }
            parent = p;
        }
    }

    /// Applies one layer entry; `this_layer` collects the paths the layer wrote.
    pub(crate) fn apply_entry(&mut self, e: &Entry, this_layer: &mut HashSet<String>) {
        self.ensure_parents(&e.path);
        match &e.whiteout {
            Some(Whiteout::Remove(p)) => {
                self.nodes.remove(p);
                self.remove_tree(p, &HashSet::new());
                return;
            }
            Some(Whiteout::Opaque(dir)) => {
                self.remove_tree(dir, this_layer);
                return;
            }
            None => {}
        }
        let kind = match &e.kind {
            Kind::File => NodeKind::File,
            Kind::Dir => NodeKind::Dir,
            Kind::Symlink(t) => NodeKind::Symlink(t.clone()),
            Kind::Hardlink(t) => match self.nodes.get(t) {
                Some(n) => n.kind.clone(),
                None => NodeKind::File,
            },
            Kind::Fifo => NodeKind::Fifo,
            Kind::Char(major, minor) => NodeKind::Char(*major, *minor),
            Kind::Block(major, minor) => NodeKind::Block(*major, *minor),
        };
        if kind != NodeKind::Dir {
            // A non-directory replaces whatever tree stood there.
            self.remove_tree(&e.path, this_layer);
        }
        let size = match &e.kind {
            Kind::Hardlink(t) => self.nodes.get(t).map_or(0, |n| n.size),
            _ => e.size,
        };
        self.nodes.insert(
            e.path.clone(),
            Node {
                kind,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                size,
                mtime: e.mtime,
                xattrs: e.xattrs.clone(),
            },
        );
        this_layer.insert(e.path.clone());
    }

    /// Streams a layer blob into the index.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn apply_layer(&mut self, path: &Path, label: &str) -> Result<(), ReadError> {
        let mut this_layer = HashSet::new();
        reader::for_each_entry(path, label, |e, _| {
            self.apply_entry(&e, &mut this_layer);
            Ok(())
        })
    }

    /// Applies one layer's entries, as [`layer_entries`] lists them.
    pub(crate) fn apply_entries(&mut self, entries: &[Entry]) {
        let mut this_layer = HashSet::new();
        for e in entries {
            self.apply_entry(e, &mut this_layer);
        }
    }
}

/// The entries of one layer blob, without contents: what the index needs of it.
pub(crate) fn layer_entries(path: &Path, label: &str) -> Result<Vec<Entry>, ReadError> {
    let mut out = Vec::new();
    reader::for_each_entry(path, label, |e, _| {
        out.push(e);
        Ok(())
    })?;
    Ok(out)
}

impl FsIndex {
    /// Ensures the root exists, as in every image.
    pub(crate) fn with_root(mut self) -> Self {
        self.nodes
            .entry(String::new())
            .or_insert_with(|| Node::dir(0o755, 0, 0, 0));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: Kind) -> Entry {
        let whiteout = None;
        Entry {
            path: path.into(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 1,
            mtime: 0,
            whiteout,
            xattrs: Vec::new(),
        }
    }

    #[test]
    fn whiteouts() {
        let mut idx = FsIndex::default().with_root();
        let mut l1 = HashSet::new();
        for p in ["a/x", "a/y", "b/z"] {
            idx.apply_entry(&entry(p, Kind::File), &mut l1);
        }
        let mut l2 = HashSet::new();
        idx.apply_entry(
            &Entry {
                whiteout: Some(Whiteout::Opaque("a".into())),
                ..entry("a/.wh..wh..opq", Kind::File)
            },
            &mut l2,
        );
        idx.apply_entry(&entry("a/new", Kind::File), &mut l2);
        idx.apply_entry(
            &Entry {
                whiteout: Some(Whiteout::Remove("b".into())),
                ..entry(".wh.b", Kind::File)
            },
            &mut l2,
        );
        let paths: Vec<&String> = idx.iter().map(|(k, _)| k).collect();
        assert_eq!(paths, ["", "a", "a/new"]);
    }

    #[test]
    fn fifos_and_devices_keep_their_kind() {
        let mut idx = FsIndex::default().with_root();
        let mut l = HashSet::new();
        idx.apply_entry(&entry("p", Kind::Fifo), &mut l);
        idx.apply_entry(&entry("dev/null", Kind::Char(1, 3)), &mut l);
        idx.apply_entry(&entry("dev/loop0", Kind::Block(7, 0)), &mut l);
        idx.apply_entry(&entry("q", Kind::Hardlink("p".into())), &mut l);
        let kind = |p: &str| idx.get(p).map(|n| n.kind.clone());
        assert_eq!(kind("p"), Some(NodeKind::Fifo));
        assert_eq!(kind("q"), Some(NodeKind::Fifo));
        assert_eq!(kind("dev/null"), Some(NodeKind::Char(1, 3)));
        assert_eq!(kind("dev/loop0"), Some(NodeKind::Block(7, 0)));
    }
}
