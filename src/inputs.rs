//! What a build reads before it starts: the context directory and the
//! Dockerfile, local or fetched (a remote context, or `--dockerfile -`).

use crate::cli;
use anyhow::{Context, Result};
use kiln::dockerfile::{parse_dockerfile, Dockerfile};
use kiln::registry::Registry;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The context directory, the Dockerfile's path (none for stdin) and the
/// Dockerfile.
pub(crate) struct Inputs {
    pub(crate) context: PathBuf,
    pub(crate) dockerfile: Option<PathBuf>,
    pub(crate) df: Dockerfile,
}

impl Inputs {
    /// A local context's inputs, read before anything else (a user namespace
    /// for RUN is entered after, knowing whether the Dockerfile has RUN);
    /// `None` when they must be fetched first.
    pub(crate) fn local(o: &cli::Options) -> Result<Option<Inputs>> {
        match o.context.local() {
            Some(dir) if o.dockerfile != "-" => {
                let (context, dockerfile) =
                    cli::locate(dir, o.context_sub_path.as_deref(), &o.dockerfile)?;
                let dockerfile = dockerfile.context("a local Dockerfile")?;
                let df = parse_dockerfile(&read_dockerfile(&dockerfile)?)?;
                Ok(Some(Inputs {
                    context,
                    dockerfile: Some(dockerfile),
                    df,
                }))
            }
            _ => Ok(None),
        }
    }

    /// A fetched `--context` (or a Dockerfile on stdin), into `scratch`.
    pub(crate) async fn fetch(
        o: &cli::Options,
        registry: &Registry,
        scratch: &Path,
    ) -> Result<Inputs> {
        let dir = o
            .context
            .fetch(registry, &scratch.join("context"), &o.git, unix_now())
            .await?;
        let (context, dockerfile) =
            cli::locate(&dir, o.context_sub_path.as_deref(), &o.dockerfile)?;
        let text = match &dockerfile {
            Some(p) => read_dockerfile(p)?,
            None => read_stdin_dockerfile()?,
        };
        Ok(Inputs {
            context,
            dockerfile,
            df: parse_dockerfile(&text)?,
        })
    }
}

/// BuildKit reads a Dockerfile as bytes: invalid UTF-8 does not stop the build,
/// and a word with such bytes still names the file that has them.
pub(crate) fn read_dockerfile(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(kiln::pathname::from_bytes(&bytes))
}

/// `--dockerfile -`, as `docker build -f -` reads it.
fn read_stdin_dockerfile() -> Result<String> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
        .context("reading the Dockerfile from stdin")?;
    Ok(kiln::pathname::from_bytes(&bytes))
}

/// Seconds since the epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
