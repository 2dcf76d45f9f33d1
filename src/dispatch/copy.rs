//! COPY with BuildKit's rules: a source directory copies its contents, several
//! sources or a trailing `/` make the destination a directory, globs must match,
//! top-level source symlinks are followed and inner ones kept, hardlinks within
//! one COPY stay hardlinks, destination parents resolve through the image's
//! symlinks, and created parents get the `--chown` owner.

use super::chmod::Chmod;
use super::stage::{PathKey, Planned};
use super::BuildError;
use super::StepError;
use crate::cache::key::SourceDigest;
use crate::context::{has_wildcards, match_segments, BuildContext};
use crate::layer::writer::{EntryBody, EntryMeta};
use crate::pathname::{from_os, to_path};
use crate::rootfs::index::{FsIndex, NodeKind};
use crate::rootfs::{join_rel, resolve_on_disk, split_parent};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where COPY reads from: the build context (with its ignore rules) or an unpacked stage.
pub(crate) struct SourceTree<'a> {
    pub root: &'a Path,
    pub context: Option<&'a BuildContext>,
    /// Owners and modes as the layers say (a stage or image source). Context files
    /// have none: they belong to root, as in BuildKit.
    pub headers: Option<&'a FsIndex>,
    /// How the source is named in messages (`build context`, `stage builder`).
    pub label: String,
    /// `COPY --exclude` patterns, as segments, matched against paths relative to
    /// each source (a file source: its name).
    pub exclude: Vec<Vec<String>>,
    /// Paths that are not the source's though on disk below `root` (the
    /// executor's own, where the source is the container's root).
    pub keep: Option<&'a crate::rootfs::keep::Keep>,
    /// ADD: where a source file that is an archive is unpacked (its contents
    /// go into the destination instead of the file).
    pub unpack: Option<&'a Path>,
    /// Source words are paths, never patterns (downloads named by their URL).
    pub literal: bool,
}

impl<'a> SourceTree<'a> {
    /// A tree with no ignore rules, headers, excludes or kept paths.
    pub(crate) fn plain(root: &'a Path, label: String) -> SourceTree<'a> {
        SourceTree {
            root,
            context: None,
            headers: None,
            label,
            exclude: Vec::new(),
            keep: None,
            unpack: None,
            literal: false,
        }
    }
}

/// `--exclude` words as patterns for [`SourceTree::exclude`].
pub(crate) fn exclude_patterns(words: &[String]) -> Vec<Vec<String>> {
    words
        .iter()
        .filter_map(|w| crate::context::pattern_segments(w))
        .collect()
}

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

struct Source {
    /// Host path of the (symlink-resolved) source.
    host: PathBuf,
    /// Name used under a directory destination.
    name: String,
    meta: fs::Metadata,
    /// Context-relative path, for ignore checks below it.
    rel: String,
}

impl SourceTree<'_> {
    fn ignored(&self, rel: &str) -> bool {
        self.context.is_some_and(|c| c.is_ignored(rel))
    }

    /// On disk but not part of the source.
    fn foreign(&self, rel: &str) -> bool {
        self.keep.is_some_and(|k| k.is_kept(rel))
    }

    /// Whether `--exclude` drops this path (relative to its source); a matched
    /// directory drops everything below it.
    fn excluded(&self, rel: &str) -> bool {
        if self.exclude.is_empty() || rel.is_empty() {
            return false;
        }
        let parts: Vec<&str> = rel.split('/').collect();
        self.exclude
            .iter()
            .any(|pat| crate::context::matches_or_parent(pat, &parts))
    }

    /// Resolves one source word into the files it names.
    fn expand(&self, src: &str) -> Result<Vec<Source>, BuildError> {
        let clean = crate::pathname::clean_rooted(src);
        let mut out = Vec::new();
        if !self.literal && has_wildcards(&clean) {
            let pat: Vec<String> = clean.split('/').map(str::to_string).collect();
            let mut matches = Vec::new();
            self.walk_matches(&pat, "", &mut matches);
            matches.sort();
            for rel in matches {
                if let Some(s) = self.source_at(&rel)? {
                    out.push(s);
                }
            }
            return Ok(out);
        }
        if !clean.is_empty() && self.ignored(&clean) {
            return Err(StepError::SourceExcluded {
                path: src.to_string(),
                label: self.label.clone(),
            }
            .into());
        }
        match self.source_at(&clean)? {
            Some(s) => out.push(s),
            None => {
                return Err(StepError::SourceNotFound {
                    path: src.to_string(),
                    label: self.label.clone(),
                }
                .into())
            }
        }
        Ok(out)
    }

    fn walk_matches(&self, pat: &[String], dir: &str, out: &mut Vec<String>) {
        let host = if dir.is_empty() {
            self.root.to_path_buf()
        } else {
            self.root.join(to_path(dir))
        };
        let Ok(rd) = fs::read_dir(&host) else { return };
        for e in rd.flatten() {
            let name = from_os(&e.file_name());
            let rel = join_rel(dir, &name);
            if self.ignored(&rel) || self.foreign(&rel) {
                continue;
            }
            let parts: Vec<&str> = rel.split('/').collect();
            if match_segments(pat, &parts) {
                out.push(rel.clone());
            }
            if parts.len() < pat.len() && e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let prefix_ok = pat
                    .iter()
                    .zip(&parts)
                    .all(|(p, s)| crate::context::match_segment(p, s));
                if prefix_ok {
                    self.walk_matches(pat, &rel, out);
                }
            }
        }
    }

    /// The source at a root-relative path, following symlinks inside the tree.
    fn source_at(&self, rel: &str) -> Result<Option<Source>, BuildError> {
        let resolved = resolve_on_disk(self.root, &format!("/{rel}"), true)?;
        if self.foreign(&resolved) {
            return Ok(None);
        }
        let host = if resolved.is_empty() {
            self.root.to_path_buf()
        } else {
            self.root.join(to_path(&resolved))
        };
        match fs::symlink_metadata(&host) {
            Ok(meta) => Ok(Some(Source {
                host,
                name: split_parent(rel).1.to_string(),
                meta,
                rel: resolved,
            })),
            Err(_) => Ok(None),
        }
    }
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
                planning.add_entry(tree, &src.host, &src.meta, &dest, true)?;
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

impl<'r> Planning<'r> {
    fn new(rules: Rules<'r>) -> Self {
        Planning {
            out: BTreeMap::new(),
            links: HashMap::new(),
            rules,
        }
    }

    /// Plans the file `host` of `tree` at `dest`; `top` for a source named by
    /// the instruction itself, which is never a hard link to another.
    fn add_entry(
        &mut self,
        tree: &SourceTree<'_>,
        host: &Path,
        meta: &fs::Metadata,
        dest: &str,
        top: bool,
    ) -> Result<(), BuildError> {
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
                self.add_entry(tree, host, meta, &join_rel(dest_dir, sub), false)
            },
        )
        .map(|_| ())
    }
}

/// Where a walk is: a directory's path in the tree, the same directory as the
/// visitor is told it (below what the caller put first), and relative to the
/// source the walk started from (what `.dockerignore`'s source rules read).
#[derive(Clone, Copy)]
struct WalkAt<'p> {
    rel: &'p str,
    under: &'p str,
    in_source: &'p str,
}

impl<'p> WalkAt<'p> {
    /// The start of a walk of the tree's `rel`, the visitor told paths under `under`.
    fn start(rel: &'p str, under: &'p str) -> Self {
        WalkAt {
            rel,
            under,
            in_source: "",
        }
    }
}

type Visit<'f> = dyn FnMut(&str, &Path, &fs::Metadata) -> Result<(), BuildError> + 'f;

/// Visits everything below `host_dir` in walk order (names sorted), skipping what
/// `.dockerignore` excludes. `f` gets paths relative to the walk's start. An ignored
/// directory that a `!` rule re-includes something in is visited after its children.
/// Returns how many entries were visited.
fn walk(
    tree: &SourceTree<'_>,
    host_dir: &Path,
    at: WalkAt<'_>,
    f: &mut Visit<'_>,
) -> Result<usize, BuildError> {
    let WalkAt {
        rel: rel_dir,
        under,
        in_source,
    } = at;
    let rd = fs::read_dir(host_dir)
        .map_err(|e| BuildError::io(format!("reading {}", host_dir.display()), e))?;
    let mut names: Vec<String> = rd.flatten().map(|e| from_os(&e.file_name())).collect();
    names.sort();
    let mut visited = 0;
    for name in names {
        let rel = join_rel(rel_dir, &name);
        let source_rel = join_rel(in_source, &name);
        if tree.excluded(&source_rel) || tree.foreign(&rel) {
            continue;
        }
        let is_ignored = tree.ignored(&rel);
        let host = host_dir.join(to_path(&name));
        let meta = fs::symlink_metadata(&host)
            .map_err(|e| BuildError::io(format!("reading {}", host.display()), e))?;
        if is_ignored && !(meta.is_dir() && tree.context.is_some_and(|c| c.has_exceptions())) {
            continue;
        }
        let sub = join_rel(under, &name);
        if !is_ignored {
            f(&sub, &host, &meta)?;
            visited += 1;
        }
        if meta.is_dir() {
            let at = WalkAt {
                rel: &rel,
                under: &sub,
                in_source: &source_rel,
            };
            let inner = walk(tree, &host, at, f)?;
            visited += inner;
            if is_ignored && inner > 0 {
                f(&sub, &host, &meta)?;
                visited += 1;
            }
        }
    }
    Ok(visited)
}

/// Digest of everything a COPY reads from `tree`: paths, modes, owners, contents
/// and link targets (not mtimes). Part of the step's cache key.
pub(crate) fn digest_sources(
    sources: &[String],
    tree: &SourceTree<'_>,
) -> Result<String, BuildError> {
    let mut d = SourceDigest::default();
    let mut add = |path: &str, host: &Path, meta: &fs::Metadata| -> Result<(), BuildError> {
        let what = if meta.file_type().is_symlink() {
            format!(
                "link:{}",
                from_os(
                    fs::read_link(host)
                        .map_err(|e| BuildError::io(format!("reading {}", host.display()), e))?
                        .as_os_str()
                )
            )
        } else if meta.is_file() {
            file_digest(host)?
        } else if meta.is_dir() {
            "dir".to_string()
        } else {
            "other".to_string()
        };
        d.add(path, meta.mode() & 0o7777, meta.uid(), meta.gid(), &what);
        Ok(())
    };
    for (i, src) in sources.iter().enumerate() {
        for s in tree.expand(src)? {
            if tree.excluded(&s.name) {
                continue;
            }
            let top = format!("{i}:{}", s.name);
            add(&top, &s.host, &s.meta)?;
            if s.meta.is_dir() {
                walk(tree, &s.host, WalkAt::start(&s.rel, &top), &mut add)?;
            }
        }
    }
    Ok(d.finish())
}

/// `source` of `tree` as a directory (or file) at `dest`, without what
/// `.dockerignore` leaves out, as BuildKit's context transfer sends it to a
/// `RUN --mount` bind: files are hard links where the filesystem allows (the
/// mount is read-only, or an overlay that copies up before a write), else copies.
pub(crate) fn materialize(
    source: &str,
    tree: &SourceTree<'_>,
    dest: &Path,
) -> Result<(), BuildError> {
    let place = |host: &Path, meta: &fs::Metadata, to: &Path| -> Result<(), BuildError> {
        let err = |e| BuildError::io(format!("placing {} at {}", host.display(), to.display()), e);
        let ft = meta.file_type();
        if ft.is_dir() {
            fs::create_dir_all(to).map_err(err)?;
            fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(err)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(host).map_err(err)?, to).map_err(err)?;
        } else if ft.is_file() && fs::hard_link(host, to).is_err() {
            fs::copy(host, to).map_err(err)?;
        }
        Ok(())
    };
    for s in tree.expand(source)? {
        place(&s.host, &s.meta, dest)?;
        if s.meta.is_dir() {
            walk(
                tree,
                &s.host,
                WalkAt::start(&s.rel, ""),
                &mut |sub, host, meta| place(host, meta, &dest.join(to_path(sub))),
            )?;
        }
    }
    Ok(())
}

fn file_digest(path: &Path) -> Result<String, BuildError> {
    use sha2::{Digest, Sha256};
    let mut f = fs::File::open(path)
        .map_err(|e| BuildError::io(format!("reading {}", path.display()), e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)
        .map_err(|e| BuildError::io(format!("reading {}", path.display()), e))?;
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}
