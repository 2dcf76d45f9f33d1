//! Where `--context` comes from, in Kaniko's schemes. A directory (`dir://`
//! or a plain path) is used where it is; a tar (a file or stdin, plain or
//! compressed), an `https://` tarball or a `git://` repository is fetched into
//! the scratch root first. Archives unpack with ADD's confinement: nothing in
//! one writes outside the directory made for it, whatever its `..` or links say.

use crate::git::{Access, GitError, GitRef};
use crate::registry::files::FileError;
use crate::registry::Registry;
use crate::rootfs::archive::ArchiveError;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("unknown scheme {scheme}://; Kiln takes a directory, dir://, tar://, https://, http://, git://, s3://, gs:// or az://")]
    Scheme { scheme: String },
    #[error("--git {value}: {reason}")]
    GitFlag { value: String, reason: String },
    #[error("--context tar://stdin: stdin is a terminal; pipe a tar into it (docker run -i, kubectl run --stdin)")]
    StdinTerminal,
    #[error("--context {context}: {what}: {source}")]
    Io {
        context: String,
        what: String,
        source: std::io::Error,
    },
    #[error("--context: {0}")]
    Download(#[from] FileError),
    #[error("--context: {0}")]
    Archive(#[from] ArchiveError),
    #[error("--context: git {0}")]
    Git(#[from] GitError),
    #[error("--context: {0}")]
    Task(String),
    #[error(transparent)]
    Bucket(#[from] super::bucket::BucketError),
    #[error("--context {context}: {what} is not a tar archive (plain, or compressed with gzip, bzip2, xz or zstd){}", content_type_note(.content_type))]
    NotTar {
        context: String,
        what: &'static str,
        content_type: Option<String>,
    },
}

fn content_type_note(content_type: &Option<String>) -> String {
    match content_type {
        Some(t) => format!("; the server sent Content-Type: {t}"),
        None => String::new(),
    }
}

/// A parsed `--context`.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Dir(PathBuf),
    /// `tar://path`: a tar file, plain or compressed.
    Tar(PathBuf),
    /// `tar://stdin`.
    Stdin,
    /// An `https://` (or `http://`) URL of a tar.
    Url(String),
    /// A tarball in a bucket: `s3://`, `gs://`, `az://` (or Azure's
    /// `https://ACCOUNT.blob.core.windows.net/…`), read with the cloud's
    /// standard credentials; a bucket alone means its `context.tar.gz`, as Kaniko.
    Bucket(String),
    /// `git://host/org/repo[#ref[#commit]]`: Kaniko fetches it over HTTPS
    /// (`GIT_PULL_METHOD=http` for plain HTTP).
    Git {
        url: String,
        reference: Option<String>,
        commit: Option<String>,
    },
}

/// Kaniko's `--git` options, each given as its own `--git key=value`.
#[derive(Debug, Default, Clone)]
pub struct GitOptions {
    pub(crate) branch: Option<String>,
    pub(crate) insecure_skip_tls: bool,
}

impl GitOptions {
    pub fn parse(values: &[String]) -> Result<GitOptions, SourceError> {
        let mut o = GitOptions::default();
        for v in values {
            let bad = |reason: &str| SourceError::GitFlag {
                value: v.clone(),
                reason: reason.to_string(),
            };
            let (key, value) = v
                .split_once('=')
                .ok_or_else(|| bad("invalid git flag, must be in the key=value format"))?;
            let boolean = || go_bool(value).ok_or_else(|| bad("not a boolean"));
            match key {
                "branch" => o.branch = Some(value.to_string()),
                "insecure-skip-tls" => o.insecure_skip_tls = boolean()?,
                // Kiln fetches only what the commit needs either way.
                "single-branch" | "depth" => {}
                "recurse-submodules" => {
                    if boolean()? {
                        return Err(bad("submodules are not fetched by Kiln yet"));
                    }
                }
                _ => {
                    return Err(bad(
                        "unknown key (branch, single-branch, depth, recurse-submodules, insecure-skip-tls)",
                    ))
                }
            }
        }
        Ok(o)
    }
}

/// Go's `strconv.ParseBool`, as Kaniko reads booleans (`TRUE`, `1`, `t`).
pub fn go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

impl Source {
    pub fn parse(context: &str) -> Result<Source, SourceError> {
        let Some((scheme, rest)) = context.split_once("://") else {
            return Ok(Source::Dir(PathBuf::from(context)));
        };
        Ok(match scheme {
            "dir" => Source::Dir(PathBuf::from(rest)),
            "tar" if rest == "stdin" => Source::Stdin,
            "tar" => Source::Tar(PathBuf::from(rest)),
            "s3" | "gs" | "az" => Source::Bucket(context.to_string()),
            "https" if is_azure_blob(rest) => Source::Bucket(context.to_string()),
            "https" | "http" => Source::Url(context.to_string()),
            "git" => {
                let mut parts = rest.splitn(3, '#');
                let repo = parts.next().unwrap_or_default();
                let some = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
                let method = match std::env::var("GIT_PULL_METHOD").as_deref() {
                    Ok("http") => "http",
                    _ => "https",
                };
                Source::Git {
                    url: format!("{method}://{repo}"),
                    reference: some(parts.next()),
                    commit: some(parts.next()),
                }
            }
            _ => {
                return Err(SourceError::Scheme {
                    scheme: scheme.to_string(),
                })
            }
        })
    }

    /// The directory of a context used in place.
    pub fn local(&self) -> Option<&Path> {
        match self {
            Source::Dir(p) => Some(p),
            _ => None,
        }
    }

    /// Fetches the context into `dir` (made here, under the scratch root) and
    /// returns it. `now` stamps directories an archive names only by their files.
    pub async fn fetch(
        &self,
        registry: &Registry,
        dir: &Path,
        git: &GitOptions,
        now: u64,
    ) -> Result<PathBuf, SourceError> {
        let label = self.label();
        let io = |what: &str| {
            let context = label.clone();
            let what = what.to_string();
            move |source| SourceError::Io {
                context,
                what,
                source,
            }
        };
        let Some(parent) = dir.parent() else {
            return Ok(dir.to_path_buf());
        };
        let tarball = parent.join("context.tar");
        let mut content_type = None;
        match self {
            Source::Dir(p) => return Ok(p.clone()),
            Source::Git {
                url,
                reference,
                commit,
            } => {
                std::fs::create_dir(dir).map_err(io("creating the context directory"))?;
                let r = GitRef {
                    remote: url.clone(),
                    reference: commit.clone().or(git.branch.clone()).or(reference.clone()),
                    subdir: None,
                };
                let access = Access {
                    basic_auth: git_auth(),
                    insecure_skip_tls: git.insecure_skip_tls,
                };
                let dest = dir.to_path_buf();
                // Kaniko's clone keeps `.git`, and so do Kiln's git contexts.
                let commit = tokio::task::spawn_blocking(move || {
                    crate::git::checkout(&r, &dest, true, &access)
                })
                .await
                .map_err(|e| SourceError::Task(e.to_string()))??;
                crate::log_info!("context: {url} at commit {commit}");
                return Ok(dir.to_path_buf());
            }
            Source::Tar(p) => {
                crate::log_info!("context: unpacking {}", p.display());
                refuse_non_tar(p, &label, "the file", None)?;
                unpack(p, dir, &label, now).await?;
                return Ok(dir.to_path_buf());
            }
            Source::Stdin => {
                use std::io::IsTerminal;
                if std::io::stdin().is_terminal() {
                    return Err(SourceError::StdinTerminal);
                }
                let dest = tarball.clone();
                tokio::task::spawn_blocking(move || {
                    let mut f = std::fs::File::create(&dest)?;
                    std::io::copy(&mut std::io::stdin().lock(), &mut f)
                })
                .await
                .map_err(|e| SourceError::Task(e.to_string()))?
                .map_err(io("reading stdin"))?;
            }
            Source::Url(url) => {
                crate::log_info!("context: downloading {url}");
                content_type = registry.fetch_file(url, &tarball, None).await?.content_type;
            }
            Source::Bucket(url) => {
                crate::log_info!("context: downloading {url}");
                super::bucket::download(url, &tarball).await?;
            }
        }
        let what = match self {
            Source::Stdin => "stdin",
            _ => "the download",
        };
        refuse_non_tar(&tarball, &label, what, content_type)?;
        unpack(&tarball, dir, &label, now).await?;
        std::fs::remove_file(&tarball).map_err(io("removing the downloaded tar"))?;
        Ok(dir.to_path_buf())
    }

    /// How errors name the context: never a URL's credentials.
    fn label(&self) -> String {
        match self {
            Source::Dir(p) => p.display().to_string(),
            Source::Tar(p) => format!("tar://{}", p.display()),
            Source::Stdin => "tar://stdin".to_string(),
            Source::Url(u) => without_credentials(u),
            Source::Bucket(u) => u.clone(),
            Source::Git { url, .. } => url.clone(),
        }
    }
}

/// Kaniko sends `https://` contexts on Azure's blob hosts to Azure.
fn is_azure_blob(rest: &str) -> bool {
    let host = rest.split(['/', ':']).next().unwrap_or_default();
    host.ends_with(".blob.core.windows.net")
}

/// A URL as logs may show it: its user and password taken out.
fn without_credentials(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Refuses a file that is no tar (an HTML error page, say) before the tar
/// reader fails on it with words that do not say so. A file that cannot be
/// read is left to `unpack`, whose error names the cause.
fn refuse_non_tar(
    tar: &Path,
    label: &str,
    what: &'static str,
    content_type: Option<String>,
) -> Result<(), SourceError> {
    match crate::rootfs::archive::starts_as_tar(tar) {
        Ok(false) => Err(SourceError::NotTar {
            context: label.to_string(),
            what,
            content_type,
        }),
        _ => Ok(()),
    }
}

async fn unpack(tar: &Path, dir: &Path, label: &str, now: u64) -> Result<(), SourceError> {
    std::fs::create_dir(dir).map_err(|source| SourceError::Io {
        context: label.to_string(),
        what: "creating the context directory".to_string(),
        source,
    })?;
    let (tar, dir, label) = (tar.to_path_buf(), dir.to_path_buf(), label.to_string());
    tokio::task::spawn_blocking(move || {
        crate::rootfs::apply::ScratchRoot::new(&dir).unpack_archive(&tar, &label, now)
    })
    .await
    .map_err(|e| SourceError::Task(e.to_string()))??;
    Ok(())
}

/// Kaniko's git credentials: a token alone, else a user and password.
fn git_auth() -> Option<(String, String)> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(token) = var("GIT_TOKEN") {
        return Some((token, String::new()));
    }
    match (var("GIT_USERNAME"), var("GIT_PASSWORD")) {
        (None, None) => None,
        (u, p) => Some((u.unwrap_or_default(), p.unwrap_or_default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_parse_as_kaniko_names_them() {
        assert_eq!(Source::parse("ctx").unwrap(), Source::Dir("ctx".into()));
        assert_eq!(Source::parse("dir:///w").unwrap(), Source::Dir("/w".into()));
        assert_eq!(Source::parse("tar://stdin").unwrap(), Source::Stdin);
        assert_eq!(
            Source::parse("tar://c.tar.gz").unwrap(),
            Source::Tar("c.tar.gz".into())
        );
        assert_eq!(
            Source::parse("https://h/c.tgz").unwrap(),
            Source::Url("https://h/c.tgz".into())
        );
        assert_eq!(
            Source::parse("git://h/o/r.git#refs/heads/main#abc").unwrap(),
            Source::Git {
                url: "https://h/o/r.git".into(),
                reference: Some("refs/heads/main".into()),
                commit: Some("abc".into()),
            }
        );
        assert_eq!(
            Source::parse("s3://b/c.tgz").unwrap(),
            Source::Bucket("s3://b/c.tgz".into())
        );
        assert_eq!(
            Source::parse("https://acct.blob.core.windows.net/c/x.tgz").unwrap(),
            Source::Bucket("https://acct.blob.core.windows.net/c/x.tgz".into())
        );
        let e = Source::parse("ftp://x").unwrap_err().to_string();
        assert!(e.contains("unknown scheme ftp://"), "{e}");
    }

    #[test]
    fn git_flags_take_kaniko_keys() {
        let o = GitOptions::parse(&["branch=dev".into(), "single-branch=true".into()]).unwrap();
        assert_eq!(o.branch.as_deref(), Some("dev"));
        assert!(GitOptions::parse(&["recurse-submodules=true".into()]).is_err());
        assert!(GitOptions::parse(&["branch".into()]).is_err());
        assert!(GitOptions::parse(&["colour=red".into()]).is_err());
        assert!(
            GitOptions::parse(&["insecure-skip-tls=1".into()])
                .unwrap()
                .insecure_skip_tls
        );
    }
}
