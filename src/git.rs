//! ADD's git sources (`https://host/org/repo.git#ref:subdir`): the repository
//! fetched with gix (the images have no git binary) and one commit's tree
//! written out as BuildKit's git source gives it: files 0644 or 0755, links,
//! directories 0755, a subdirectory's contents when one is named, `.git` only
//! with `--keep-git-dir`.

use std::path::Path;
use std::sync::atomic::AtomicBool;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{remote}: {cause}")]
    Fetch { remote: String, cause: String },
    #[error("{remote}: no branch, tag or commit {reference:?}")]
    NoRef { remote: String, reference: String },
    #[error("{remote}: {path:?} is not a directory of commit {commit}")]
    NoSubdir {
        remote: String,
        path: String,
        commit: String,
    },
    #[error("{remote}: the tree holds {path:?}, a name git refuses to check out")]
    BadPath { remote: String, path: String },
    #[error("{remote}: writing {path}: {source}")]
    Write {
        remote: String,
        path: String,
        source: std::io::Error,
    },
}

/// An ADD source word split as BuildKit's `ParseGitRef` does: `remote#ref:subdir`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GitRef {
    pub(crate) remote: String,
    pub(crate) reference: Option<String>,
    pub(crate) subdir: Option<String>,
}

impl GitRef {
    pub(crate) fn parse(src: &str) -> GitRef {
        let (remote, fragment) = match src.split_once('#') {
            Some((r, f)) => (r.to_string(), f),
            None => (src.to_string(), ""),
        };
        let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        GitRef {
            remote,
            reference: some(reference),
            subdir: some(subdir.trim_matches('/')),
        }
    }
}

/// How to reach a remote beyond its URL: Kaniko's git contexts take HTTP
/// credentials from `GIT_USERNAME`/`GIT_PASSWORD`/`GIT_TOKEN` and may skip
/// TLS verification.
#[derive(Default, Clone)]
pub(crate) struct Access {
    pub(crate) basic_auth: Option<(String, String)>,
    pub(crate) insecure_skip_tls: bool,
}

impl std::fmt::Debug for Access {
    // Never the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("user", &self.basic_auth.as_ref().map(|a| &a.0))
            .field("insecure_skip_tls", &self.insecure_skip_tls)
            .finish()
    }
}

/// Fetches `r` and writes its tree into `dest` (empty). Returns the commit.
pub(crate) fn checkout(
    r: &GitRef,
    dest: &Path,
    keep_git_dir: bool,
    access: &Access,
) -> Result<String, GitError> {
    let remote = r.remote.clone();
    let fetch_err = |e: &(dyn std::error::Error + 'static)| fetch_error(&remote, e);
    let git_dir = dest.join(".git");
    let interrupt = AtomicBool::new(false);
    let access = access.clone();
    let mut prepare = gix::prepare_clone_bare(r.remote.as_str(), &git_dir)
        .map_err(|e| fetch_err(&e))?
        .configure_connection(move |conn| {
            conn.set_transport_options(Box::new(transport_options(&access)));
            Ok(())
        });
    let (repo, _) = prepare
        .fetch_only(gix::progress::Discard, &interrupt)
        .map_err(|e| fetch_err(&e))?;
    let commit = match &r.reference {
        None => repo.head_commit().map_err(|e| fetch_err(&e))?,
        Some(name) => find_commit(&repo, name).ok_or_else(|| GitError::NoRef {
            remote: remote.clone(),
            reference: name.clone(),
        })?,
    };
    let id = commit.id.to_string();
    let mut tree = commit.tree().map_err(|e| fetch_err(&e))?;
    if let Some(sub) = &r.subdir {
        let not_dir = || GitError::NoSubdir {
            remote: remote.clone(),
            path: sub.clone(),
            commit: id.clone(),
        };
        let entry = tree
            .lookup_entry_by_path(sub)
            .map_err(|e| fetch_err(&e))?
            .ok_or_else(not_dir)?;
        tree = entry
            .object()
            .ok()
            .and_then(|o| o.try_into_tree().ok())
            .ok_or_else(not_dir)?;
    }
    write_tree(
        &repo,
        &tree,
        dest,
        r.subdir.as_deref().unwrap_or(""),
        &remote,
    )?;
    let write_err = |source| GitError::Write {
        remote: remote.clone(),
        path: git_dir.display().to_string(),
        source,
    };
    if keep_git_dir {
        // As BuildKit leaves it: HEAD detached at the commit, a work tree's
        // repository (the clone was bare). There is no index file.
        std::fs::write(git_dir.join("HEAD"), format!("{id}\n")).map_err(write_err)?;
        let config = git_dir.join("config");
        let text = std::fs::read_to_string(&config).map_err(write_err)?;
        std::fs::write(&config, text.replace("bare = true", "bare = false")).map_err(write_err)?;
    } else {
        std::fs::remove_dir_all(&git_dir).map_err(write_err)?;
    }
    Ok(id)
}

/// gix's HTTP options: its client trusts Mozilla's roots plus the system's
/// (SSL_CERT_FILE, SSL_CERT_DIR) and needs no system store to start.
fn transport_options(
    access: &Access,
) -> gix::protocol::transport::client::blocking_io::http::Options {
    use gix::protocol::transport::client::blocking_io::http;
    let skip_tls = access.insecure_skip_tls;
    let auth = access.basic_auth.clone();
    let backend = http::reqwest::Options {
        configure_client: Some(Box::new(
            move |builder: reqwest_git::blocking::ClientBuilder| {
                Ok(builder
                    .tls_certs_only(trust_roots())
                    .danger_accept_invalid_certs(skip_tls))
            },
        )),
        configure_request: auth.map(|(user, password)| {
            let header = basic_auth_header(&user, &password);
            Box::new(move |req: &mut reqwest_git::blocking::Request| {
                if let Ok(v) = reqwest_git::header::HeaderValue::from_str(&header) {
                    req.headers_mut()
                        .insert(reqwest_git::header::AUTHORIZATION, v);
                }
                Ok(())
            }) as Box<http::reqwest::ConfigureRequestFn>
        }),
    };
    http::Options {
        backend: Some(std::sync::Arc::new(std::sync::Mutex::new(backend))),
        ..Default::default()
    }
}

fn basic_auth_header(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn trust_roots() -> Vec<reqwest_git::Certificate> {
    let system = rustls_native_certs::load_native_certs().certs;
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| c.as_ref())
        .chain(system.iter().map(|c| c.as_ref()))
        .filter_map(|der| reqwest_git::Certificate::from_der(der).ok())
        .collect()
}

/// A failure of gix (fetching, or reading what it fetched), its causes on one line.
fn fetch_error(remote: &str, e: &(dyn std::error::Error + 'static)) -> GitError {
    GitError::Fetch {
        remote: remote.to_string(),
        cause: crate::log::one_line(e),
    }
}

/// A branch, a tag or a full commit id, as BuildKit tries them.
fn find_commit<'r>(repo: &'r gix::Repository, name: &str) -> Option<gix::Commit<'r>> {
    for full in [
        format!("refs/heads/{name}"),
        format!("refs/tags/{name}"),
        name.to_string(),
    ] {
        if let Ok(mut reference) = repo.find_reference(full.as_str()) {
            if let Ok(c) = reference.peel_to_commit() {
                return Some(c);
            }
        }
    }
    let id = gix::ObjectId::from_hex(name.as_bytes()).ok()?;
    repo.find_object(id).ok()?.peel_to_commit().ok()
}

/// Names git's `verify_path` refuses in a tree: a checkout must not climb out
/// (`..`), write into itself (`.`, `.git` in any case) or hide a path (`/`).
fn refused_name(name: &str) -> bool {
    name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.eq_ignore_ascii_case(".git")
}

/// Writes `tree` into `dir`; `at` is the tree's path in the commit, for errors.
fn write_tree(
    repo: &gix::Repository,
    tree: &gix::Tree<'_>,
    dir: &Path,
    at: &str,
    remote: &str,
) -> Result<(), GitError> {
    use gix::object::tree::EntryKind;
    use std::os::unix::fs::PermissionsExt;
    let write_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| GitError::Write {
            remote: remote.to_string(),
            path,
            source,
        }
    };
    let fetch_err = |e: &(dyn std::error::Error + 'static)| fetch_error(remote, e);
    let decoded = tree.decode().map_err(|e| fetch_err(&e))?;
    for e in &decoded.entries {
        let name = crate::pathname::from_bytes(e.filename);
        let rel = if at.is_empty() {
            name.clone()
        } else {
            format!("{at}/{name}")
        };
        // Git makes no such names, but a hostile server can send them; git
        // and BuildKit refuse the checkout, and so does Kiln.
        if refused_name(&name) {
            return Err(GitError::BadPath {
                remote: remote.to_string(),
                path: crate::pathname::display(&rel),
            });
        }
        let path = dir.join(crate::pathname::to_path(&name));
        let kind = e.mode.kind();
        match kind {
            EntryKind::Tree => {
                std::fs::create_dir(&path).map_err(write_err(&path))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .map_err(write_err(&path))?;
                let sub = repo.find_tree(e.oid).map_err(|err| fetch_err(&err))?;
                write_tree(repo, &sub, &path, &rel, remote)?;
            }
            EntryKind::Blob | EntryKind::BlobExecutable => {
                let blob = repo.find_blob(e.oid).map_err(|err| fetch_err(&err))?;
                std::fs::write(&path, &blob.data).map_err(write_err(&path))?;
                let mode = if kind == EntryKind::Blob {
                    0o644
                } else {
                    0o755
                };
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .map_err(write_err(&path))?;
            }
            EntryKind::Link => {
                let blob = repo.find_blob(e.oid).map_err(|err| fetch_err(&err))?;
                let target = crate::pathname::from_bytes(&blob.data);
                std::os::unix::fs::symlink(crate::pathname::to_path(&target), &path)
                    .map_err(write_err(&path))?;
            }
            // A submodule: an empty directory, as a clone without them leaves.
            EntryKind::Commit => {
                std::fs::create_dir(&path).map_err(write_err(&path))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .map_err(write_err(&path))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_split_as_buildkit() {
        let r = GitRef::parse("https://h/o/r.git#v1.2:sub/dir");
        assert_eq!(r.remote, "https://h/o/r.git");
        assert_eq!(r.reference.as_deref(), Some("v1.2"));
        assert_eq!(r.subdir.as_deref(), Some("sub/dir"));
        let r = GitRef::parse("https://h/o/r.git");
        assert_eq!((r.reference, r.subdir), (None, None));
        let r = GitRef::parse("git@h:o/r.git#:docs");
        assert_eq!(r.remote, "git@h:o/r.git");
        assert_eq!((r.reference, r.subdir.as_deref()), (None, Some("docs")));
    }

    #[test]
    fn names_git_refuses_are_refused() {
        for bad in ["", ".", "..", ".git", ".GIT", "a/b"] {
            assert!(refused_name(bad), "{bad:?}");
        }
        for good in ["...", ".gitignore", "a..b", ".git-x", "git"] {
            assert!(!refused_name(good), "{good:?}");
        }
    }
}
