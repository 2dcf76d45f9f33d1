//! ADD's remote sources: git repositories and URLs taken out of its words,
//! `--checksum` checked, and each fetched into the step's work directory (git
//! first, for its commit is the cache key's; a URL before the key only when no
//! `--checksum` stands for its digest).

use super::Step;
use crate::dispatch::{BuildError, Session, StepError};
use crate::dockerfile::instruction::{is_git_source as is_git, is_url_source as is_url, AddFlags};
use crate::dockerfile::shell;
use std::sync::Arc;

/// What ADD adds to a COPY: URL sources, and a directory for downloads and
/// unpacked archives that must outlive the planned layer (until it is written).
pub(in crate::dispatch) struct AddParts {
    /// Every source word, expanded, in order (the history names them all).
    pub words: Vec<String>,
    pub urls: Vec<UrlSource>,
    pub git: Vec<GitSource>,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--checksum` of the URL source.
    pub checksum: Option<String>,
    /// Shared so the step can hold it past the planning that consumes the rest.
    pub work: Arc<tempfile::TempDir>,
}

/// One git source of an ADD.
pub(in crate::dispatch) struct GitSource {
    pub source: crate::git::GitRef,
    /// Where its tree is written, relative to the work directory.
    pub rel: String,
    /// The commit checked out, once it is.
    pub commit: Option<String>,
}

/// One URL source of an ADD.
pub(in crate::dispatch) struct UrlSource {
    pub url: String,
    /// Where it is downloaded, relative to the work directory: its file name
    /// is BuildKit's (the URL path's last segment).
    pub rel: String,
    pub fetched: Option<crate::registry::files::Fetched>,
}

/// ADD's git and URL sources taken out of `sources` (its local ones stay),
/// `--checksum` checked (only URLs take one), and a work directory of the
/// step's own for what is fetched.
pub(super) fn add_parts(
    s: &Step<'_, '_, '_>,
    flags: &AddFlags,
    sources: &mut Vec<String>,
    has_inline: bool,
) -> Result<AddParts, BuildError> {
    let (esc, env) = (s.b.df.escape, &s.env);
    let (git, rest): (Vec<String>, Vec<String>) = sources.iter().cloned().partition(|s| is_git(s));
    let (urls, local): (Vec<String>, Vec<String>) = rest.into_iter().partition(|s| is_url(s));
    let git = git
        .iter()
        .enumerate()
        .map(|(i, s)| GitSource {
            source: crate::git::GitRef::parse(s),
            rel: format!("git-{i}"),
            commit: None,
        })
        .collect();
    let checksum = flags
        .checksum
        .as_ref()
        .map(|s| shell::expand(s, esc, env))
        .transpose()?;
    if let Some(sum) = &checksum {
        crate::registry::files::valid_checksum(sum).map_err(StepError::Checksum)?;
        if !local.is_empty() || has_inline {
            return Err(StepError::Checksum(
                "checksum can't be specified for non-HTTP(S) sources".into(),
            )
            .into());
        }
    }
    let work = crate::scratch::private_tempdir("add-", &s.b.opts.scratch_dir)
        .map_err(|e| BuildError::io("creating a scratch dir", e))?;
    let urls = urls
        .into_iter()
        .enumerate()
        .map(|(i, url)| {
            let name = crate::registry::files::url_file_name(&url);
            UrlSource {
                rel: format!("url-{i}/{name}"),
                url,
                fetched: None,
            }
        })
        .collect();
    Ok(AddParts {
        words: std::mem::replace(sources, local),
        urls,
        git,
        keep_git_dir: flags.keep_git_dir,
        checksum,
        work: Arc::new(work),
    })
}

/// Fetches an ADD's remote sources not fetched yet into its work directory.
/// Git sources are checked out (their commit is the cache key's). URLs are
/// downloaded, the file getting mode 0600 and the `Last-Modified` time (the
/// epoch without one), as BuildKit v0.21 gives them; `for_key` downloads only
/// those whose digest the key needs (no `--checksum` stands for it), so a
/// cache hit downloads nothing.
pub(super) async fn fetch_remote_sources(
    session: &Session,
    add: Option<&mut AddParts>,
    for_key: bool,
) -> Result<(), BuildError> {
    let Some(add) = add else {
        return Ok(());
    };
    // A git source is keyed by its commit: checked out first in any case.
    for g in add.git.iter_mut().filter(|g| g.commit.is_none()) {
        let dest = add.work.path().join(&g.rel);
        std::fs::create_dir_all(&dest)
            .map_err(|e| BuildError::io(format!("creating {}", dest.display()), e))?;
        crate::log_info!("fetching {}", g.source.remote);
        let (source, keep) = (g.source.clone(), add.keep_git_dir);
        let commit = tokio::task::spawn_blocking(move || {
            crate::git::checkout(&source, &dest, keep, &Default::default())
        })
        .await
        .map_err(|e| BuildError::io("fetching a git source", std::io::Error::other(e)))??;
        g.commit = Some(commit);
    }
    if for_key && add.checksum.is_some() {
        return Ok(());
    }
    for u in add.urls.iter_mut().filter(|u| u.fetched.is_none()) {
        let dest = add.work.path().join(&u.rel);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| BuildError::io(format!("creating {}", dir.display()), e))?;
        }
        crate::log_info!("downloading {}", u.url);
        let fetched = session
            .registry
            .fetch_file(&u.url, &dest, add.checksum.as_deref())
            .await?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| BuildError::io(format!("setting the mode of {}", dest.display()), e))?;
        let secs = fetched.modified.unwrap_or(0);
        crate::rootfs::meta::set_times(&dest, i64::try_from(secs).unwrap_or(i64::MAX), 0)
            .map_err(|e| BuildError::io(format!("setting the time of {}", dest.display()), e))?;
        u.fetched = Some(fetched);
    }
    Ok(())
}
