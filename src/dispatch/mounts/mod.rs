//! `RUN --mount`: what each mount shows the command, made on the host before the
//! step runs. Binds read the context (as `.dockerignore` leaves it), a stage or
//! an image; caches live in `--cache-dir/mounts` (or scratch) behind file locks;
//! secrets are files of their own, removed with the step; tmpfs is the kernel's.
//! With namespaces the helper mounts them (`sandbox::child`) and the mount
//! points it had to make are taken out of the step's change; in place, where
//! nothing can be mounted, their contents are put at the targets and taken away
//! again before the change is read. Nothing of a mount reaches a layer.

mod place;

pub(super) use place::{remove_stubs, HostMounts};
use place::{Content, Item};

use super::stage::StageFs;
use super::StepError;
use super::{cpu, BuildError, Session, StageState};
use crate::context::BuildContext;
use crate::dispatch::handlers::CopyFrom;
use crate::dockerfile::mount::{self, MountKind, MountSpec, Sharing};
use crate::dockerfile::shell::{self, Env};
use crate::dockerfile::Run;
use crate::rootfs::copy::copy_tree;
use crate::rootfs::keep::Keep;
use crate::sandbox::{Mount, MountWhat};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
/// A `--secret`'s value, read once when the build starts (a RUN in the
/// container's own root could remove its file before a later step uses it).
/// Its `Debug` never shows the value.
#[derive(Clone, PartialEq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(value: Vec<u8>) -> Secret {
        Secret(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// A RUN's mounts, expanded, with what each `from` names.
pub(super) struct RunMounts {
    mounts: Vec<(MountSpec, Origin)>,
}

enum Origin {
    Context,
    /// A cache with no `from`, a secret, a tmpfs.
    Nothing,
    From(CopyFrom),
}

/// Expands and checks a RUN's `--mount`s and finds what their `from`s name.
/// Relative targets are under the working directory; a cache's id is its
/// target unless given; a secret's id is its `source` or its target's name,
/// and its file is `/run/secrets/<id>` unless it has a target or only an `env`.
pub(super) async fn prepare(
    b: &super::Build<'_>,
    r: &Run,
    env: &Env,
    workdir: &str,
    stage_index: usize,
) -> Result<RunMounts, BuildError> {
    let (session, df, opts) = (b.session, b.df, b.opts);
    let mut out = Vec::new();
    for written in &r.mounts {
        let mut expand = |v: &str| shell::expand(v, df.escape, env).map_err(|e| e.to_string());
        let mut m = written.expand(&mut expand)?;
        if let Some(t) = &m.target {
            let abs = super::handlers::absolute(t, Some(workdir));
            if abs == "/" && m.kind != MountKind::Secret {
                return Err(mount::MountError::Target(abs).into());
            }
            m.target = Some(abs);
        }
        match m.kind {
            MountKind::Cache if m.id.is_none() => m.id = m.target.clone(),
            MountKind::Secret => {
                let id = m.id.take().or(m.source.take()).or_else(|| {
                    m.target
                        .as_deref()
                        .and_then(|t| t.rsplit('/').next())
                        .map(str::to_string)
                });
                if m.target.is_none() && m.env.is_none() {
                    m.target = id.as_ref().map(|id| format!("/run/secrets/{id}"));
                }
                m.id = id;
            }
            _ => {}
        }
        let origin = match (&m.kind, &m.from) {
            (MountKind::Bind | MountKind::Cache, Some(name)) => Origin::From(
                super::handlers::resolve_from(session, df, name.clone(), stage_index, opts).await?,
            ),
            (MountKind::Bind, None) => Origin::Context,
            _ => Origin::Nothing,
        };
        out.push((m, origin));
    }
    Ok(RunMounts { mounts: out })
}

impl RunMounts {
    /// What the cache key needs beyond the instruction's text: the content a
    /// context bind shows, the state a stage or image bind shows. Never a
    /// secret's value, nor a cache's contents (BuildKit's rule).
    pub(super) fn key_inputs(
        &self,
        ctx: &BuildContext,
        built: &HashMap<usize, Arc<StageState>>,
    ) -> Result<Vec<(&'static str, String)>, BuildError> {
        let mut v = Vec::new();
        for (m, origin) in &self.mounts {
            let source = rooted(m.source.as_deref().unwrap_or("/"));
            match origin {
                Origin::Context => {
                    let tree = context_tree(ctx);
                    let digest = cpu(|| {
                        super::sources::digest_sources(std::slice::from_ref(&source), &tree)
                    })?;
                    v.push(("mount-context", format!("{source} {digest}")));
                }
                Origin::From(CopyFrom::Stage(j, _)) => {
                    let key = built.get(j).map(|s| s.key.clone()).unwrap_or_default();
                    v.push(("mount-stage", format!("{source} {key}")));
                }
                Origin::From(CopyFrom::Image(img)) => {
                    v.push(("mount-image", format!("{source} {}", img.manifest_digest)));
                }
                Origin::From(CopyFrom::Context) | Origin::Nothing => {}
            }
        }
        Ok(v)
    }

    /// Makes every mount's host side: stage and image roots unpacked, the
    /// context filtered, caches locked, secrets written into `dir` (the step's
    /// own, removed with it).
    pub(super) async fn host(
        &self,
        b: &super::Build<'_>,
        built: &HashMap<usize, Arc<StageState>>,
        dir: &Path,
    ) -> Result<HostMounts, BuildError> {
        let (session, opts) = (b.session, b.opts);
        let mut h = HostMounts::default();
        // Caches are locked in one order (by id) in every step, so two steps
        // locking the same two caches cannot wait for each other.
        let mut order: Vec<usize> = (0..self.mounts.len()).collect();
        order.sort_by_key(|&i| {
            let m = &self.mounts[i].0;
            (m.kind != MountKind::Cache, m.id.clone())
        });
        let mut held: HashMap<PathBuf, PathBuf> = HashMap::new();
        for i in order {
            let (m, origin) = &self.mounts[i];
            let own = dir.join(format!("mount-{i}"));
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&own)
                .map_err(|e| BuildError::io(format!("creating {}", own.display()), e))?;
            let target = m.target.clone().unwrap_or_default();
            let source = rooted(m.source.as_deref().unwrap_or("/"));
            match m.kind {
                MountKind::Bind => {
                    let path = h
                        .source_path(
                            b,
                            built,
                            place::MountSource {
                                origin,
                                path: &source,
                            },
                            &own,
                        )
                        .await?;
                    h.items.push(Item {
                        target,
                        what: Content::Bind {
                            path,
                            readonly: m.readonly,
                        },
                        own,
                    });
                }
                MountKind::Cache => {
                    let seed = match origin {
                        Origin::Nothing => None,
                        _ => Some(
                            h.source_path(
                                b,
                                built,
                                place::MountSource {
                                    origin,
                                    path: &source,
                                },
                                &own,
                            )
                            .await?,
                        ),
                    };
                    let dir = cache_dir(session, m, origin);
                    if let Some(store) = &session.cache.mounts {
                        let make = |p: &Path| new_cache_root(p, m);
                        store
                            .prepare(&session.registry, &dir, &make, &opts.scratch_dir)
                            .await;
                    }
                    let path = match held.get(&dir) {
                        // The same cache twice in one step: one lock.
                        Some(path) => path.clone(),
                        None => {
                            let (path, lock) = cpu(|| cache_instance(&dir, m, seed.as_deref()))?;
                            h.locks.push(lock);
                            held.insert(dir, path.clone());
                            path
                        }
                    };
                    h.items.push(Item {
                        target,
                        what: Content::Cache {
                            path,
                            readonly: m.readonly,
                        },
                        own,
                    });
                }
                MountKind::Tmpfs => h.items.push(Item {
                    target,
                    what: Content::Tmpfs { size: m.size },
                    own,
                }),
                MountKind::Secret => {
                    let id = m.id.clone().unwrap_or_default();
                    let Some(Secret(value)) = opts.secrets.get(&id) else {
                        if m.required {
                            return Err(StepError::SecretNotFound(id).into());
                        }
                        continue;
                    };
                    if let Some(var) = &m.env {
                        h.env
                            .push((var.clone(), String::from_utf8_lossy(value).into_owned()));
                    }
                    if m.target.is_some() {
                        let file = own.join("secret");
                        write_secret(&file, value)?;
                        h.items.push(Item {
                            target,
                            what: Content::Secret {
                                path: file,
                                mode: m.mode.unwrap_or(0o400),
                                uid: m.uid.unwrap_or(0),
                                gid: m.gid.unwrap_or(0),
                            },
                            own,
                        });
                    }
                }
                MountKind::Ssh => {
                    return Err(StepError::Owner(
                        "RUN --mount=type=ssh is not supported by Kiln".into(),
                    )
                    .into())
                }
            }
        }
        // Parents first, for the helper and for placing in place.
        h.items
            .sort_by_key(|i| i.target.split('/').filter(|c| !c.is_empty()).count());
        Ok(h)
    }
}

/// A mount's source as BuildKit names it: absolute and clean.
fn rooted(source: &str) -> String {
    format!("/{}", crate::pathname::clean_rooted(source))
}

fn context_tree(ctx: &BuildContext) -> super::sources::SourceTree<'_> {
    super::sources::SourceTree {
        context: Some(ctx),
        literal: true,
        ..super::sources::SourceTree::plain(ctx.root(), "build context".into())
    }
}

/// A secret's host copy: the executor's own, 0400, in the mount's 0700
/// directory, whatever `mode=` says (the sandbox applies `mode=`, `uid=` and
/// `gid=` to a copy only the step sees).
fn write_secret(file: &Path, value: &[u8]) -> Result<(), BuildError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e| BuildError::io("writing a secret's file", e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(file)
        .map_err(err)?;
    f.write_all(value).map_err(err)
}

/// Where a cache's instances live: caches differ by id and by what a new one
/// starts from (BuildKit keys a cache by its id and its base).
fn cache_dir(session: &Session, m: &MountSpec, origin: &Origin) -> PathBuf {
    let base = match origin {
        Origin::Nothing => String::new(),
        Origin::From(CopyFrom::Stage(_, name)) => format!("stage {name}"),
        Origin::From(CopyFrom::Image(img)) => img.manifest_digest.to_string(),
        _ => "context".into(),
    };
    let name = crate::image::Digest::sha256_of(
        format!(
            "{}\0{base}\0{}\0{:?}\0{:?}\0{:?}",
            m.id.as_deref().unwrap_or(""),
            m.source.as_deref().unwrap_or(""),
            m.mode,
            m.uid,
            m.gid
        )
        .as_bytes(),
    );
    session.cache_mounts.join(&name.file_name()[..32])
}

/// A cache's directory for this step, with the lock that keeps it: `shared`
/// takes instance 0 with a shared lock, `locked` with an exclusive one (and
/// waits), `private` the first instance no one else holds. A new instance is
/// made under `init.lock`, in a temporary name renamed into place, so builds
/// sharing `--cache-dir` never see one half made.
fn cache_instance(
    dir: &Path,
    m: &MountSpec,
    seed: Option<&Path>,
) -> Result<(PathBuf, File), BuildError> {
    let err = |what: String| move |e| BuildError::io(what, e);
    // `mounts` and each cache's directory are 0700: an instance keeps BuildKit's
    // mode for RUN, and what RUN left in it (a setuid binary) must stay out of
    // other users' reach.
    crate::scratch::private_dir_all(dir).map_err(err(format!("creating {}", dir.display())))?;
    let open_lock = |name: &str| {
        let p = dir.join(name);
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(err(format!("opening {}", p.display())))
    };
    let (n, lock) = match m.sharing.unwrap_or_default() {
        Sharing::Shared => {
            let f = open_lock("0.lock")?;
            f.lock_shared().map_err(err("locking a cache".into()))?;
            (0, f)
        }
        Sharing::Locked => {
            let f = open_lock("0.lock")?;
            f.lock().map_err(err("locking a cache".into()))?;
            (0, f)
        }
        Sharing::Private => {
            let mut n = 0;
            loop {
                let f = open_lock(&format!("{n}.lock"))?;
                if f.try_lock().is_ok() {
                    break (n, f);
                }
                n += 1;
            }
        }
    };
    let path = dir.join(n.to_string());
    let init = open_lock("init.lock")?;
    init.lock().map_err(err("locking a cache".into()))?;
    if !path.is_dir() {
        let tmp = dir.join(format!("new-{n}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        match seed {
            Some(src) if src.is_dir() => copy_tree(src, &tmp),
            Some(src) => std::fs::create_dir(&tmp)
                .and_then(|()| copy_tree(src, &tmp.join(src.file_name().unwrap_or_default()))),
            None => new_cache_root(&tmp, m),
        }
        .map_err(err(format!("making the cache {}", path.display())))?;
        std::fs::rename(&tmp, &path).map_err(err(format!("making {}", path.display())))?;
    }
    drop(init);
    Ok((path, lock))
}

/// An empty cache's directory: the mount's owner and mode (BuildKit's 0755
/// by default).
fn new_cache_root(path: &Path, m: &MountSpec) -> std::io::Result<()> {
    std::fs::create_dir(path)?;
    match std::os::unix::fs::chown(path, Some(m.uid.unwrap_or(0)), Some(m.gid.unwrap_or(0))) {
        // Not root (the traced rung): the executor's own uid is what the
        // step is shown as root.
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied
                && !nix::unistd::geteuid().is_root() => {}
        r => r?,
    }
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(m.mode.unwrap_or(0o755)),
    )
}
