//! The scratch root and its model. `index` is a file index (path → type, mode,
//! owner, link) built by streaming layers, enough to resolve destinations without
//! unpacking; `apply` unpacks layers into a directory, confined to it.
//! Both resolve paths with [`resolve_in_root`], so `..`, absolute symlinks and
//! symlink chains never lead outside the root.

pub(crate) mod apply;
pub(crate) mod archive;
pub(crate) mod caps;
pub(crate) mod copy;
pub(crate) mod index;
pub(crate) mod keep;
pub(crate) mod meta;
pub(crate) mod sys;
pub(crate) mod trees;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("too many levels of symbolic links resolving {0}")]
    Loop(String),
}

/// Resolves `path` (absolute in the image) to a clean root-relative path with every
/// symlink followed inside the root. `symlink_at(p)` answers the link target when
/// the root-relative `p` is a symlink. The last component is followed only if
/// `follow_last`.
pub(crate) fn resolve_in_root<F>(
    path: &str,
    follow_last: bool,
    mut symlink_at: F,
) -> Result<String, ResolveError>
where
    F: FnMut(&str) -> Option<String>,
{
    let mut todo: std::collections::VecDeque<String> =
        path.split('/').map(str::to_string).collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let is_last = todo.iter().all(|c| c.is_empty() || c == ".");
        let mut candidate = resolved.join("/");
        if !candidate.is_empty() {
            candidate.push('/');
        }
        candidate.push_str(&c);
        match symlink_at(&candidate) {
            Some(target) if !is_last || follow_last => {
                hops += 1;
                if hops > 255 {
                    return Err(ResolveError::Loop(path.to_string()));
                }
                if target.starts_with('/') {
                    resolved.clear();
                }
                for part in target.split('/').rev() {
                    todo.push_front(part.to_string());
                }
            }
            _ => resolved.push(c),
        }
    }
    Ok(resolved.join("/"))
}

/// [`resolve_in_root`] against a real directory: links are read from disk with
/// lstat/readlink, never followed by the kernel.
pub(crate) fn resolve_on_disk(
    root: &std::path::Path,
    path: &str,
    follow_last: bool,
) -> Result<String, ResolveError> {
    resolve_in_root(path, follow_last, |c| {
        let p = root.join(crate::pathname::to_path(c));
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => std::fs::read_link(&p)
                .ok()
                .map(|t| crate::pathname::from_os(t.as_os_str())),
            _ => None,
        }
    })
}

/// Splits a root-relative path into parent and last component.
pub(crate) fn split_parent(p: &str) -> (&str, &str) {
    match p.rsplit_once('/') {
        Some((d, n)) => (d, n),
        None => ("", p),
    }
}

/// Joins root-relative paths.
pub(crate) fn join_rel(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else if name.is_empty() {
        dir.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn symlinks_stay_inside() {
        let links: HashMap<&str, &str> = [
            ("bin", "usr/bin"),
            ("esc", "/../../etc"),
            ("var/run", "../run"),
            ("loop", "loop"),
        ]
        .into();
        let r = |p: &str| resolve_in_root(p, true, |c| links.get(c).map(|s| s.to_string()));
        assert_eq!(r("/bin/sh").unwrap(), "usr/bin/sh");
        assert_eq!(r("/esc/passwd").unwrap(), "etc/passwd");
        assert_eq!(r("/var/run/x").unwrap(), "run/x");
        assert_eq!(r("/../../../x").unwrap(), "x");
        assert!(r("/loop").is_err());
        assert_eq!(
            resolve_in_root("/bin", false, |c| links.get(c).map(|s| s.to_string())).unwrap(),
            "bin"
        );
    }
}
