//! What COPY and a RUN bind read: a tree (the context with its `.dockerignore`,
//! an unpacked stage or image, ADD's downloads, an unpacked archive), its
//! source words expanded with BuildKit's globs, the walk of what it holds, the
//! digest of that for cache keys, and a copy of it for a bind.

use super::BuildError;
use super::StepError;
use crate::cache::key::SourceDigest;
use crate::context::{has_wildcards, match_segments, BuildContext};
use crate::pathname::{from_os, to_path};
use crate::rootfs::index::FsIndex;
use crate::rootfs::{join_rel, resolve_on_disk, split_parent};
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

pub(super) struct Source {
    /// Host path of the (symlink-resolved) source.
    pub(super) host: PathBuf,
    /// Name used under a directory destination.
    pub(super) name: String,
    pub(super) meta: fs::Metadata,
    /// Context-relative path, for ignore checks below it.
    pub(super) rel: String,
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
    pub(super) fn excluded(&self, rel: &str) -> bool {
        if self.exclude.is_empty() || rel.is_empty() {
            return false;
        }
        let parts: Vec<&str> = rel.split('/').collect();
        self.exclude
            .iter()
            .any(|pat| crate::context::matches_or_parent(pat, &parts))
    }

    /// Resolves one source word into the files it names.
    pub(super) fn expand(&self, src: &str) -> Result<Vec<Source>, BuildError> {
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

/// Where a walk is: a directory's path in the tree, the same directory as the
/// visitor is told it (below what the caller put first), and relative to the
/// source the walk started from (what `.dockerignore`'s source rules read).
#[derive(Clone, Copy)]
pub(super) struct WalkAt<'p> {
    rel: &'p str,
    under: &'p str,
    in_source: &'p str,
}

impl<'p> WalkAt<'p> {
    /// The start of a walk of the tree's `rel`, the visitor told paths under `under`.
    pub(super) fn start(rel: &'p str, under: &'p str) -> Self {
        WalkAt {
            rel,
            under,
            in_source: "",
        }
    }
}

pub(super) type Visit<'f> = dyn FnMut(&str, &Path, &fs::Metadata) -> Result<(), BuildError> + 'f;

/// Visits everything below `host_dir` in walk order (names sorted), skipping what
/// `.dockerignore` excludes. `f` gets paths relative to the walk's start. An ignored
/// directory that a `!` rule re-includes something in is visited after its children.
/// Returns how many entries were visited.
pub(super) fn walk(
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

pub(super) fn file_digest(path: &Path) -> Result<String, BuildError> {
    use sha2::{Digest, Sha256};
    let mut f = fs::File::open(path)
        .map_err(|e| BuildError::io(format!("reading {}", path.display()), e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)
        .map_err(|e| BuildError::io(format!("reading {}", path.display()), e))?;
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}
