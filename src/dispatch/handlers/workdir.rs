//! WORKDIR: the config's working directory, and a layer with the directories
//! it makes (none at `/`).

use super::Step;
use crate::cache::key::KeyBuilder;
use crate::dispatch::effect::{self, Effect, Entries, NewLayer};
use crate::dispatch::stage::StageFs;
use crate::dispatch::{copy, users, BuildError, Session};
use crate::dockerfile::shell;
use crate::layer::writer::EntryMeta;
use std::collections::BTreeMap;

/// WORKDIR's step: the new working directory, its layer looked up or planned.
pub(super) async fn workdir(
    s: &mut Step<'_, '_, '_>,
    w: &str,
    kb: KeyBuilder,
) -> Result<bool, BuildError> {
    let session = s.b.session;
    let st = &mut *s.st;
    let w = shell::expand(w, s.b.df.escape, &s.env)?;
    let abs = absolute(&w, st.config.config.working_dir.as_deref());
    let mut config = st.config.clone();
    config.config.working_dir = Some(abs.clone());
    let mut effect = Effect::history(format!("WORKDIR {abs}"));
    effect.config = Some(Box::new(config));
    let key = kb.finish();
    // Nothing to create at the root: BuildKit adds no layer for it.
    if abs != "/" {
        effect.layer = match effect::lookup(session, st, &key).await {
            Some(hit) => Some(hit),
            None => {
                let user = st.config.config.user.clone();
                Some(NewLayer::Planned(
                    workdir_entries(session, &st.fs, user.as_deref(), &abs).await?,
                    None,
                ))
            }
        };
    }
    effect::apply(session, st, effect, &key).await
}

/// Joins a WORKDIR or destination onto the current working directory and cleans it.
pub(crate) fn absolute(path: &str, workdir: Option<&str>) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", workdir.unwrap_or("/"))
    };
    format!("/{}", crate::pathname::clean_rooted(&joined))
}

/// WORKDIR's layer: the missing directories of `abs` (0755, owned by USER),
/// empty when nothing is missing, as BuildKit always adds one.
pub(super) async fn workdir_entries(
    session: &Session,
    fs: &StageFs,
    user: Option<&str>,
    abs: &str,
) -> Result<Entries, BuildError> {
    let (uid, gid) = match user.filter(|u| !u.is_empty()) {
        Some(u) => {
            users::stage_owner(session, fs, u, &format!("WORKDIR {abs} as USER {u}")).await?
        }
        None => (0, 0),
    };
    let index = fs.index(session).await?;
    let resolved = index.resolve(abs, true)?;
    let mut entries = BTreeMap::new();
    let new_dir = EntryMeta {
        mode: 0o755,
        uid,
        gid,
        mtime: session.now,
        xattrs: Vec::new(),
    };
    if !copy::add_parents(&mut entries, index, &resolved, &new_dir)? {
        entries.clear();
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(absolute("app", Some("/usr/local")), "/usr/local/app");
        assert_eq!(absolute("../x", Some("/a/b")), "/a/x");
        assert_eq!(absolute("/abs/", None), "/abs");
    }
}
