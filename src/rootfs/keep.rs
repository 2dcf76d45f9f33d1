//! Paths a root shared with the executor keeps whatever a layer says: the
//! executor's own directory, its scratch and cache dirs, the build context and
//! every mount point (/proc, /dev, /sys, /etc/hosts, a Pod's secrets). Only the
//! in-place rung (`sandbox::inplace`) has such a root; everywhere else the root
//! is a scratch directory of its own and nothing is kept.

use super::join_rel;
use std::io;
use std::path::Path;

/// Root-relative paths (no leading `/`) that stay as they are.
#[derive(Debug, Clone, Default)]
pub(crate) struct Keep {
    paths: Vec<String>,
}

impl Keep {
    pub(crate) fn new(paths: impl IntoIterator<Item = String>) -> Keep {
        let mut paths: Vec<String> = paths
            .into_iter()
            .map(|p| p.trim_matches('/').to_string())
            .filter(|p| !p.is_empty())
            .collect();
        paths.sort();
        paths.dedup();
        Keep { paths }
    }

    pub(crate) fn paths(&self) -> &[String] {
        &self.paths
    }

    /// `rel` is a kept path or lies below one.
    pub(crate) fn is_kept(&self, rel: &str) -> bool {
        self.paths.iter().any(|k| {
            rel == k || (rel.starts_with(k.as_str()) && rel.as_bytes().get(k.len()) == Some(&b'/'))
        })
    }

    /// `rel` is a directory with a kept path somewhere below it (the root always
    /// is, when anything is kept).
    pub(crate) fn holds_kept(&self, rel: &str) -> bool {
        self.paths.iter().any(|k| {
            rel.is_empty() || (k.starts_with(rel) && k.as_bytes().get(rel.len()) == Some(&b'/'))
        })
    }

    /// Removes what `host` (the directory at `rel`) holds, except kept paths;
    /// a directory that holds a kept path is emptied the same way, not removed.
    pub(crate) fn clear_dir(&self, host: &Path, rel: &str) -> io::Result<()> {
        for child in std::fs::read_dir(host)? {
            let child = child?;
            let path = join_rel(rel, &crate::pathname::from_os(&child.file_name()));
            if self.is_kept(&path) {
                continue;
            }
            let ft = child.file_type()?;
            if ft.is_dir() && self.holds_kept(&path) {
                self.clear_dir(&child.path(), &path)?;
            } else if ft.is_dir() {
                std::fs::remove_dir_all(child.path())?;
            } else {
                std::fs::remove_file(child.path())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_paths_and_their_parents() {
        let k = Keep::new(["/kaniko".to_string(), "etc/hosts".into(), "/".into()]);
        assert!(k.is_kept("kaniko") && k.is_kept("kaniko/executor"));
        assert!(!k.is_kept("kaniko2") && !k.is_kept("etc") && !k.is_kept(""));
        assert!(k.holds_kept("") && k.holds_kept("etc"));
        assert!(!k.holds_kept("et") && !k.holds_kept("etc/hosts") && !k.holds_kept("usr"));
    }

    #[test]
    fn clearing_keeps_what_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for f in [
            "etc/hosts",
            "etc/passwd",
            "kaniko/executor",
            "usr/bin/sh",
            "x",
        ] {
            let p = r.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"").unwrap();
        }
        std::os::unix::fs::symlink("/kaniko", r.join("link")).unwrap();
        Keep::new(["kaniko".to_string(), "etc/hosts".into()])
            .clear_dir(r, "")
            .unwrap();
        let mut left: Vec<String> = walkdir::WalkDir::new(r)
            .min_depth(1)
            .into_iter()
            .map(|e| {
                e.unwrap()
                    .path()
                    .strip_prefix(r)
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        left.sort();
        assert_eq!(left, ["etc", "etc/hosts", "kaniko", "kaniko/executor"]);
    }
}
