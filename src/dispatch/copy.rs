//! COPY with BuildKit's rules: a source directory copies its contents, several
//! sources or a trailing `/` make the destination a directory, globs must match,
//! top-level source symlinks are followed and inner ones kept, hardlinks within
//! one COPY stay hardlinks, destination parents resolve through the image's
//! symlinks, and created parents get the `--chown` owner.

use super::chmod::Chmod;
use super::sources::{walk, Source, SourceTree, WalkAt};
use super::BuildError;
use super::StepError;
use crate::layer::entries::{PathKey, Planned};
use crate::layer::writer::{EntryBody, EntryMeta};
use crate::pathname::from_os;
use crate::rootfs::index::{FsIndex, NodeKind};
use crate::rootfs::{join_rel, split_parent};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
/// A COPY after expansion.
pub(crate) struct CopyRequest {
    pub sources: Vec<String>,
    /// Heredoc sources: file name and contents.
    pub inline: Vec<(String, Vec<u8>)>,
    pub dest: String,
    pub workdir: String,
    pub owner: Option<(u64, u64)>,
    pub chmod: Option<Chmod>,
    pub now: u64,
    /// `--reproducible`: every entry's mtime is 0, copied files' too (Kaniko).
    pub zero_mtimes: bool,
}

/// How entries get their owner, mode and time.
struct Rules<'r> {
    owner: Option<(u64, u64)>,
    chmod: Option<&'r Chmod>,
    zero_mtimes: bool,
}

/// Plans the entries of a COPY layer against the target's index: `req.sources`
/// from `tree`.
pub fn plan(
    req: &CopyRequest,
    tree: &SourceTree<'_>,
    index: &FsIndex,
) -> Result<BTreeMap<PathKey, Planned>, BuildError> {
    plan_groups(req, &[(tree, req.sources.as_slice())], index)
}

/// Like [`plan`] with sources from several trees (ADD's context files and
/// downloads), in order.
pub(crate) fn plan_groups(
    req: &CopyRequest,
    groups: &[(&SourceTree<'_>, &[String])],
    index: &FsIndex,
) -> Result<BTreeMap<PathKey, Planned>, BuildError> {
    // A glob that matches nothing copies nothing: BuildKit v0.21 allows empty
    // wildcards (the layer is still added, empty).
    let mut sources = Vec::new();
    for (tree, words) in groups {
        for s in words.iter() {
            sources.extend(
                tree.expand(s)?
                    .into_iter()
                    .filter(|s| !tree.excluded(&s.name))
                    .map(|s| (*tree, s)),
            );
        }
    }
    let dest_abs = if req.dest.starts_with('/') {
        req.dest.clone()
    } else {
        format!("{}/{}", req.workdir.trim_end_matches('/'), req.dest)
    };
    let last = dest_abs.rsplit('/').next().unwrap_or("");
    let dir_syntax = dest_abs.ends_with('/') || last == "." || last == "..";
    let dest_resolved = index.resolve(&dest_abs, true)?;
    let dest_is_existing_dir = index
        .get(&dest_resolved)
        .is_some_and(|n| n.kind == NodeKind::Dir);
    let (uid, gid) = req.owner.unwrap_or((0, 0));
    // BuildKit v0.21 gives the directories a COPY creates an octal --chmod mode
    // too (moby/buildkit#5943 discusses it); symbolic modes leave them 0755.
    let dir_mode = match &req.chmod {
        Some(Chmod::Octal(m)) => *m,
        _ => 0o755,
    };
    // What a directory this COPY makes gets.
    let new_dir = EntryMeta {
        mode: dir_mode,
        uid,
        gid,
        mtime: req.now,
        xattrs: Vec::new(),
    };
    let mut planning = Planning::new(Rules {
        owner: req.owner,
        chmod: req.chmod.as_ref(),
        zero_mtimes: req.zero_mtimes,
    });

    // Several sources onto a path without a trailing `/` are written onto it in
    // turn, the last one winning, as BuildKit v0.21 does.
    let into_dir = dir_syntax || dest_is_existing_dir;
    for (tree, src) in &sources {
        if let Some(work) = tree.unpack.filter(|_| src.meta.is_file()) {
            if crate::rootfs::archive::is_archive(&src.host) {
                // BuildKit: the destination is a directory (0755, the --chown
                // owner); the archive's owners and modes stay, --chmod is not used.
                let archive_dir = EntryMeta {
                    mode: 0o755,
                    ..new_dir.clone()
                };
                add_parents(&mut planning.out, index, &dest_resolved, &archive_dir)?;
                unpack_into(&mut planning.out, src, work, &dest_resolved, req)?;
                continue;
            }
        }
        let (target_dir, name) = if src.meta.is_dir() {
            (dest_resolved.clone(), None)
        } else if into_dir {
            (dest_resolved.clone(), Some(src.name.clone()))
        } else {
            // BuildKit follows a symlink at the destination itself: the link's target is overwritten.
            let (p, n) = split_parent(&dest_resolved);
            (p.to_string(), Some(n.to_string()))
        };
        add_parents(&mut planning.out, index, &target_dir, &new_dir)?;
        match name {
            None => planning.walk_dir(tree, &src.host, &src.rel, &target_dir)?,
            Some(n) => {
                let dest = join_rel(&target_dir, &n);
                planning.add_entry(
                    tree,
                    Found {
                        host: &src.host,
                        meta: &src.meta,
                    },
                    &dest,
                    true,
                )?;
            }
        }
    }
    for (name, bytes) in &req.inline {
        let target_dir = if into_dir {
            dest_resolved.clone()
        } else {
            index.resolve(split_parent(dest_abs.trim_end_matches('/')).0, true)?
        };
        let file_name = if into_dir {
            name.clone()
        } else {
            split_parent(dest_abs.trim_end_matches('/')).1.to_string()
        };
        add_parents(&mut planning.out, index, &target_dir, &new_dir)?;
        let meta = EntryMeta {
            mode: req.chmod.as_ref().map_or(0o644, |c| c.apply(0o644, false)),
            uid,
            gid,
            mtime: req.now,
            xattrs: Vec::new(),
        };
        planning.out.insert(
            PathKey(join_rel(&target_dir, &file_name)),
            Planned {
                meta,
                body: EntryBody::Bytes(bytes.clone()),
            },
        );
    }
    Ok(planning.out)
}

/// Unpacks the archive `src` into a directory of its own below `work` (with the
/// layer applier's confinement) and plans its contents into `dest`.
fn unpack_into(
    out: &mut BTreeMap<PathKey, Planned>,
    src: &Source,
    work: &Path,
    dest: &str,
    req: &CopyRequest,
) -> Result<(), BuildError> {
    let dir = tempfile::Builder::new()
        .prefix("archive-")
        .tempdir_in(work)
        .map_err(|e| BuildError::io(format!("creating a directory in {}", work.display()), e))?
        // `work` goes once the layer is written.
        .keep();
    let label = src.rel.clone();
    let headers =
        crate::rootfs::apply::ScratchRoot::new(&dir).unpack_archive(&src.host, &label, req.now)?;
    let tree = SourceTree {
        headers: Some(&headers),
        ..SourceTree::plain(&dir, format!("archive {label}"))
    };
    // The archive's own owners and modes; its files are new inodes, so none
    // is a hard link to a file planned before.
    let mut archive = Planning::new(Rules {
        owner: None,
        chmod: None,
        zero_mtimes: req.zero_mtimes,
    });
    archive.walk_dir(&tree, &dir, "", dest)?;
    out.extend(archive.out);
    Ok(())
}

/// Plans `dir` and every ancestor: the image's metadata where they exist, new
/// directories with `new_dir`'s mode, owner and time where not. Returns whether
/// any was new.
pub(crate) fn add_parents(
    out: &mut BTreeMap<PathKey, Planned>,
    index: &FsIndex,
    dir: &str,
    new_dir: &EntryMeta,
) -> Result<bool, BuildError> {
    let mut cur = String::new();
    let mut created = false;
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        cur = join_rel(&cur, part);
        if out.contains_key(&PathKey(cur.clone())) {
            continue;
        }
        let meta = match index.get(&cur) {
            Some(n) if n.kind == NodeKind::Dir => EntryMeta {
                mode: n.mode,
                uid: n.uid,
                gid: n.gid,
                mtime: n.mtime,
                xattrs: n.xattrs.clone(),
            },
            Some(_) => return Err(StepError::NotADirectory { path: cur }.into()),
            None => {
                created = true;
                new_dir.clone()
            }
        };
        out.insert(
            PathKey(cur.clone()),
            Planned {
                meta,
                body: EntryBody::Dir,
            },
        );
    }
    Ok(created)
}

/// A COPY's layer as it is planned: the entries so far, the files already
/// planned by inode (a later name of a hard-linked file becomes a link to the
/// first), and the owner, mode and time rules its entries take.
struct Planning<'r> {
    out: BTreeMap<PathKey, Planned>,
    links: HashMap<(u64, u64), String>,
    rules: Rules<'r>,
}

/// A file found in a source tree: its host path and what lstat said of it.
#[derive(Clone, Copy)]
struct Found<'a> {
    host: &'a Path,
    meta: &'a fs::Metadata,
}

impl<'r> Planning<'r> {
    fn new(rules: Rules<'r>) -> Self {
        Planning {
            out: BTreeMap::new(),
            links: HashMap::new(),
            rules,
        }
    }

    /// Plans the file `found` of `tree` at `dest`; `top` for a source named by
    /// the instruction itself, which is never a hard link to another.
    fn add_entry(
        &mut self,
        tree: &SourceTree<'_>,
        found: Found<'_>,
        dest: &str,
        top: bool,
    ) -> Result<(), BuildError> {
        let Found { host, meta } = found;
        let Planning { out, links, rules } = self;
        let header = tree.headers.and_then(|index| {
            host.strip_prefix(tree.root)
                .ok()
                .and_then(|rel| index.get(&from_os(rel.as_os_str())))
        });
        let (uid, gid) = rules
            .owner
            .unwrap_or_else(|| header.map_or((0, 0), |n| (n.uid, n.gid)));
        let ft = meta.file_type();
        // A link's mode is what Linux reports for every link, 0777, whatever a
        // source layer's header said: BuildKit copies from a mounted snapshot.
        // chmod(2) cannot change a symlink: --chmod leaves links at 0777 too.
        let own = if ft.is_symlink() {
            0o777
        } else {
            header.map_or(meta.mode(), |n| n.mode) & 0o7777
        };
        let mode = match rules.chmod {
            Some(c) if !ft.is_symlink() => c.apply(own, ft.is_dir()),
            _ => own,
        };
        let m = EntryMeta {
            mode,
            uid,
            gid,
            mtime: if rules.zero_mtimes {
                0
            } else {
                meta.mtime().max(0) as u64
            },
            // Context files carry none (Kiln reads no host xattrs); layers' come
            // from their headers, which an unprivileged unpack cannot set on disk.
            xattrs: header.map(|n| n.xattrs.clone()).unwrap_or_default(),
        };
        let body = if ft.is_symlink() {
            let t = fs::read_link(host)
                .map_err(|e| BuildError::io(format!("reading link {}", host.display()), e))?;
            EntryBody::Symlink(from_os(t.as_os_str()))
        } else if ft.is_dir() {
            EntryBody::Dir
        } else if ft.is_file() {
            if meta.nlink() > 1 && !top {
                match links.get(&(meta.dev(), meta.ino())) {
                    Some(first) => EntryBody::Hardlink(first.clone()),
                    None => {
                        links.insert((meta.dev(), meta.ino()), dest.to_string());
                        EntryBody::File {
                            source: host.to_path_buf(),
                            size: meta.len(),
                        }
                    }
                }
            } else {
                EntryBody::File {
                    source: host.to_path_buf(),
                    size: meta.len(),
                }
            }
        } else if std::os::unix::fs::FileTypeExt::is_socket(&ft) {
            // BuildKit's context transfer turns a socket into an empty regular file.
            EntryBody::Bytes(Vec::new())
        } else {
            crate::log_warn!(
                "skipping {} in the {}: not a file, directory or symlink",
                host.display(),
                tree.label
            );
            return Ok(());
        };
        out.insert(PathKey(dest.to_string()), Planned { meta: m, body });
        Ok(())
    }

    /// Plans everything below `host_dir` (the tree's `rel_dir`) into `dest_dir`.
    fn walk_dir(
        &mut self,
        tree: &SourceTree<'_>,
        host_dir: &Path,
        rel_dir: &str,
        dest_dir: &str,
    ) -> Result<(), BuildError> {
        walk(
            tree,
            host_dir,
            WalkAt::start(rel_dir, ""),
            &mut |sub, host, meta| {
                self.add_entry(tree, Found { host, meta }, &join_rel(dest_dir, sub), false)
            },
        )
        .map(|_| ())
    }
}
