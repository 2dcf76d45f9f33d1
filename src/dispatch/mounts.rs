//! `RUN --mount`: what each mount shows the command, made on the host before the
//! step runs. Binds read the context (as `.dockerignore` leaves it), a stage or
//! an image; caches live in `--cache-dir/mounts` (or scratch) behind file locks;
//! secrets are files of their own, removed with the step; tmpfs is the kernel's.
//! With namespaces the helper mounts them (`sandbox::child`) and the mount
//! points it had to make are taken out of the step's change; in place, where
//! nothing can be mounted, their contents are put at the targets and taken away
//! again before the change is read. Nothing of a mount reaches a layer.

use super::meta::CopyFrom;
use super::stage::StageFs;
use super::{cpu, BuildError, BuildOptions, Session, StageState};
use crate::context::BuildContext;
use crate::dockerfile::mount::{self, MountKind, MountSpec, Sharing};
use crate::dockerfile::shell::{self, Env};
use crate::dockerfile::{Dockerfile, Run};
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
    session: &Session,
    df: &Dockerfile,
    r: &Run,
    env: &Env,
    workdir: &str,
    stage_index: usize,
    opts: &BuildOptions,
) -> Result<RunMounts, BuildError> {
    let mut out = Vec::new();
    for text in &r.mounts {
        let mut expand = |v: &str| shell::expand(v, df.escape, env).map_err(|e| e.to_string());
        let mut m = mount::parse(text, &mut expand)?;
        if let Some(t) = &m.target {
            let abs = super::meta::absolute(t, Some(workdir));
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
                super::meta::resolve_from(session, df, name.clone(), stage_index, opts).await?,
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
                    let digest =
                        cpu(|| super::copy::digest_sources(std::slice::from_ref(&source), &tree))?;
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
        session: &Session,
        ctx: &BuildContext,
        built: &HashMap<usize, Arc<StageState>>,
        opts: &BuildOptions,
        dir: &Path,
    ) -> Result<HostMounts, BuildError> {
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
                        .source_path(session, ctx, built, origin, &source, &own)
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
                            h.source_path(session, ctx, built, origin, &source, &own)
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
                            return Err(BuildError::SecretNotFound(id));
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
                    return Err(BuildError::Owner(
                        "RUN --mount=type=ssh is not supported by Kiln".into(),
                    ))
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

fn context_tree(ctx: &BuildContext) -> super::copy::SourceTree<'_> {
    super::copy::SourceTree {
        context: Some(ctx),
        literal: true,
        ..super::copy::SourceTree::plain(ctx.root(), "build context".into())
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

/// A RUN's mounts on the host side, held until the step ends.
#[derive(Default)]
pub(super) struct HostMounts {
    items: Vec<Item>,
    /// `RUN --mount=type=secret,env=…`: variables the command gets.
    pub env: Vec<(String, String)>,
    /// Cache locks, released when the step ends.
    locks: Vec<File>,
    /// Stage and image roots unpacked for binds.
    roots: Vec<StageFs>,
}

struct Item {
    /// Absolute in the image, as written (links not resolved yet).
    target: String,
    what: Content,
    /// A scratch directory of this mount's own.
    own: PathBuf,
}

enum Content {
    Bind {
        path: PathBuf,
        readonly: bool,
    },
    Cache {
        path: PathBuf,
        readonly: bool,
    },
    Tmpfs {
        size: Option<u64>,
    },
    /// The 0400 host copy, and what the step sees.
    Secret {
        path: PathBuf,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

impl HostMounts {
    /// The host path that `source` of `origin` names, resolved inside it.
    async fn source_path(
        &mut self,
        session: &Session,
        ctx: &BuildContext,
        built: &HashMap<usize, Arc<StageState>>,
        origin: &Origin,
        source: &str,
        own: &Path,
    ) -> Result<PathBuf, BuildError> {
        let (root, label) = match origin {
            Origin::Context => {
                if !ctx.has_rules() {
                    (ctx.root().to_path_buf(), "build context".to_string())
                } else {
                    // Only what .dockerignore lets through, as BuildKit sends it.
                    let view = own.join("context");
                    let tree = context_tree(ctx);
                    cpu(|| super::copy::materialize(source, &tree, &view))?;
                    return Ok(view);
                }
            }
            Origin::From(CopyFrom::Stage(j, name)) => {
                let st = built
                    .get(j)
                    .ok_or_else(|| BuildError::StageNotBuilt(name.clone()))?;
                let root = st.fs.rootfs(session).await?;
                (root.path().to_path_buf(), format!("stage {name}"))
            }
            Origin::From(CopyFrom::Image(img)) => {
                let fs = StageFs::new(img.layers.clone(), own.to_path_buf());
                let root = fs.rootfs(session).await?.path().to_path_buf();
                self.roots.push(fs);
                (root, format!("image {}", img.reference))
            }
            Origin::From(CopyFrom::Context) | Origin::Nothing => {
                return Err(BuildError::NotReady);
            }
        };
        let rel = crate::rootfs::resolve_on_disk(&root, source, true)?;
        let host = root.join(crate::pathname::to_path(&rel));
        if std::fs::symlink_metadata(&host).is_err() {
            return Err(BuildError::SourceNotFound {
                path: source.to_string(),
                label,
            });
        }
        Ok(host)
    }

    /// The mounts for the sandbox helper over `lower` (the stage's root): each
    /// target resolved inside it, and the mount points it lacks, which the
    /// helper makes and [`remove_stubs`] takes out of the change again.
    pub(super) fn for_sandbox(
        &self,
        lower: &Path,
    ) -> Result<(Vec<Mount>, Vec<String>), BuildError> {
        let mut mounts = Vec::new();
        let mut stubs = Vec::new();
        for item in &self.items {
            let rel = crate::rootfs::resolve_on_disk(lower, &item.target, true)?;
            for s in missing(lower, &rel) {
                if !stubs.contains(&s) {
                    stubs.push(s);
                }
            }
            let what = match &item.what {
                Content::Bind {
                    path,
                    readonly: false,
                } if path.is_dir() && unmapped(path) => {
                    // Owned by an id this user namespace does not map (the
                    // host's context, in setting E): overlay could not copy a
                    // file up, so the command writes to a copy instead.
                    let copy = item.own.join("copy");
                    cpu(|| copy_tree(path, &copy))
                        .map_err(|e| BuildError::io(format!("copying {}", path.display()), e))?;
                    MountWhat::Bind {
                        source: copy,
                        readonly: false,
                    }
                }
                Content::Bind {
                    path,
                    readonly: false,
                } if path.is_dir() => {
                    let (upper, work) = (item.own.join("upper"), item.own.join("work"));
                    for d in [&upper, &work] {
                        std::fs::create_dir_all(d)
                            .map_err(|e| BuildError::io(format!("creating {}", d.display()), e))?;
                    }
                    MountWhat::Overlay {
                        lower: path.clone(),
                        upper,
                        work,
                    }
                }
                Content::Bind {
                    path,
                    readonly: false,
                } => {
                    // A writable file: a copy whose writes are discarded.
                    let copy = item.own.join("file");
                    std::fs::copy(path, &copy)
                        .map_err(|e| BuildError::io(format!("copying {}", path.display()), e))?;
                    MountWhat::Bind {
                        source: copy,
                        readonly: false,
                    }
                }
                Content::Bind { path, readonly } => MountWhat::Bind {
                    source: path.clone(),
                    readonly: *readonly,
                },
                Content::Cache { path, readonly } => MountWhat::Bind {
                    source: path.clone(),
                    readonly: *readonly,
                },
                Content::Tmpfs { size } => MountWhat::Tmpfs { size: *size },
                Content::Secret {
                    path,
                    mode,
                    uid,
                    gid,
                } => MountWhat::Secret {
                    source: path.clone(),
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                },
            };
            mounts.push(Mount { target: rel, what });
        }
        Ok((mounts, stubs))
    }

    /// In place (no mounts possible): puts each mount's contents at its target
    /// in `/`, moving what stands there aside; [`Placed::undo`] reverses it all.
    pub(super) fn place(&self, root: &Path, keep: &Keep) -> Result<Placed, BuildError> {
        let mut placed = Placed::default();
        let result = self.place_all(root, keep, &mut placed);
        if let Err(e) = result {
            placed.undo();
            return Err(e);
        }
        Ok(placed)
    }

    fn place_all(&self, root: &Path, keep: &Keep, placed: &mut Placed) -> Result<(), BuildError> {
        for (i, item) in self.items.iter().enumerate() {
            let rel = crate::rootfs::resolve_on_disk(root, &item.target, true)?;
            // The executor's own paths and the container's mounts stay as they are.
            if keep.is_kept(&rel) || keep.holds_kept(&rel) {
                return Err(BuildError::MountKept(format!("/{rel}")));
            }
            let at = root.join(crate::pathname::to_path(&rel));
            let err = |e| BuildError::io(format!("placing a mount at {}", at.display()), e);
            for stub in missing(root, &rel) {
                let p = root.join(crate::pathname::to_path(&stub));
                if p != at {
                    std::fs::create_dir(&p).map_err(err)?;
                    placed.0.push(Undo::Stub(p));
                }
            }
            if std::fs::symlink_metadata(&at).is_ok() {
                let aside = at.with_file_name(format!(".kiln-mount-{}-{i}", std::process::id()));
                std::fs::rename(&at, &aside).map_err(err)?;
                placed.0.push(Undo::Aside(aside, at.clone()));
            }
            let undo = match &item.what {
                Content::Bind { path, .. } => {
                    copy_tree(path, &at).map_err(err)?;
                    Undo::Made(at)
                }
                // Moved in and back out when on one filesystem, else copied.
                Content::Cache { path, .. } if std::fs::rename(path, &at).is_ok() => {
                    Undo::Moved(at, path.clone())
                }
                Content::Cache { path, .. } => {
                    copy_tree(path, &at).map_err(err)?;
                    Undo::CopyBack(at, path.clone())
                }
                Content::Secret {
                    path,
                    mode,
                    uid,
                    gid,
                } => {
                    // In place the step runs in this container's root: `mode=`
                    // applies to the file at its target.
                    std::fs::copy(path, &at).map_err(err)?;
                    std::os::unix::fs::chown(&at, Some(*uid), Some(*gid)).map_err(err)?;
                    std::fs::set_permissions(&at, std::fs::Permissions::from_mode(*mode))
                        .map_err(err)?;
                    Undo::Made(at)
                }
                Content::Tmpfs { .. } => {
                    std::fs::create_dir(&at).map_err(err)?;
                    std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o1777))
                        .map_err(err)?;
                    Undo::Made(at)
                }
            };
            placed.0.push(undo);
        }
        Ok(())
    }
}

/// Whether `path` belongs to an id outside this user namespace's map (the
/// kernel shows such owners as the overflow id, 65534 unless set otherwise).
fn unmapped(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let overflow = |f: &str| {
        std::fs::read_to_string(f)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(65534)
    };
    std::fs::metadata(path).is_ok_and(|m| {
        m.uid() == overflow("/proc/sys/kernel/overflowuid")
            || m.gid() == overflow("/proc/sys/kernel/overflowgid")
    })
}

/// The components of `rel` (inside `root`) that do not exist, shallowest first.
fn missing(root: &Path, rel: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut path = String::new();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        path = crate::rootfs::join_rel(&path, c);
        if !out.is_empty()
            || std::fs::symlink_metadata(root.join(crate::pathname::to_path(&path))).is_err()
        {
            out.push(path.clone());
        }
    }
    out
}

/// Takes the mount points the helper made out of the step's upper dir, deepest
/// first, where they are still empty (BuildKit removes its mount stubs too).
pub(super) fn remove_stubs(upper: &Path, stubs: &[String]) {
    for s in stubs.iter().rev() {
        let p = upper.join(crate::pathname::to_path(s));
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir(&p);
            }
            Ok(m) if m.is_file() && m.len() == 0 => {
                let _ = std::fs::remove_file(&p);
            }
            _ => {}
        }
    }
}

/// What placing mounts in place changed in `/`, in order, to be undone
/// backwards before the command's change is read.
#[derive(Default)]
pub(super) struct Placed(Vec<Undo>);

enum Undo {
    /// A directory made for a mount point.
    Stub(PathBuf),
    /// What stood at a target, moved aside: (aside, target).
    Aside(PathBuf, PathBuf),
    /// A mount's contents put at a target.
    Made(PathBuf),
    /// A cache renamed to a target: (target, cache).
    Moved(PathBuf, PathBuf),
    /// A cache copied to a target, copied back after: (target, cache).
    CopyBack(PathBuf, PathBuf),
}

impl Placed {
    /// Removes the mounts' contents, returns caches, puts back what stood at
    /// the targets, removes the mount points made. Best effort: a failure is
    /// logged, as the step's change is read next either way.
    pub(super) fn undo(self) {
        for u in self.0.into_iter().rev() {
            let (what, at, r) = match &u {
                Undo::Stub(p) => ("removing", p, std::fs::remove_dir(p)),
                Undo::Aside(aside, at) => ("restoring", at, std::fs::rename(aside, at)),
                Undo::Made(at) => ("removing", at, remove_any(at)),
                Undo::Moved(at, cache) => {
                    ("returning the cache from", at, std::fs::rename(at, cache))
                }
                Undo::CopyBack(at, cache) => {
                    let back = cache.with_extension("back");
                    let r = copy_tree(at, &back)
                        .and_then(|()| std::fs::remove_dir_all(cache))
                        .and_then(|()| std::fs::rename(&back, cache))
                        .and_then(|()| remove_any(at));
                    ("copying the cache back from", at, r)
                }
            };
            if let Err(e) = r {
                crate::log_warn!("RUN --mount in place: {what} {}: {e}", at.display());
            }
        }
    }
}

fn remove_any(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_mount_points_and_their_removal() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("root/.cache")).unwrap();
        assert_eq!(
            missing(d.path(), "root/.cache/go-build/x"),
            ["root/.cache/go-build", "root/.cache/go-build/x"]
        );
        assert!(missing(d.path(), "root/.cache").is_empty());
        let upper = d.path();
        std::fs::create_dir_all(upper.join("mnt/a")).unwrap();
        std::fs::create_dir_all(upper.join("kept/b")).unwrap();
        std::fs::write(upper.join("kept/written"), b"x").unwrap();
        remove_stubs(
            upper,
            &["mnt".into(), "mnt/a".into(), "kept".into(), "kept/b".into()],
        );
        assert!(!upper.join("mnt").exists());
        assert!(!upper.join("kept/b").exists());
        assert!(
            upper.join("kept/written").exists(),
            "what the command wrote stays"
        );
    }

    #[test]
    fn a_caches_containers_are_private_and_its_root_keeps_buildkits_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("cache/mounts/abc");
        let m = MountSpec {
            kind: MountKind::Cache,
            target: Some("/c".into()),
            source: None,
            from: None,
            readonly: false,
            id: None,
            sharing: None,
            mode: None,
            // Owned by whoever runs the test: chown to root needs root.
            uid: Some(nix::unistd::getuid().as_raw()),
            gid: Some(nix::unistd::getgid().as_raw()),
            required: false,
            size: None,
            env: None,
        };
        let (path, _lock) = cache_instance(&dir, &m, None).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        for p in [d.path().join("cache"), d.path().join("cache/mounts"), dir] {
            assert_eq!(mode(&p), 0o700, "{}", p.display());
        }
        assert_eq!(mode(&path), 0o755, "the cache's root, as RUN sees it");
    }

    #[test]
    fn placing_in_place_is_undone() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/conf"), b"image's").unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), b"mounted").unwrap();
        let cache = d.path().join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        let own = d.path().join("own");
        let h = HostMounts {
            items: vec![
                Item {
                    target: "/etc/conf".into(),
                    what: Content::Bind {
                        path: src.join("f"),
                        readonly: true,
                    },
                    own: own.clone(),
                },
                Item {
                    target: "/var/cache/x".into(),
                    what: Content::Cache {
                        path: cache.clone(),
                        readonly: false,
                    },
                    own,
                },
            ],
            ..Default::default()
        };
        // Nothing goes where the container keeps its own paths.
        assert!(matches!(
            h.place(&root, &Keep::new(vec!["etc".into()])),
            Err(BuildError::MountKept(p)) if p == "/etc/conf"
        ));
        assert_eq!(std::fs::read(root.join("etc/conf")).unwrap(), b"image's");
        let placed = h.place(&root, &Keep::new(vec!["proc".into()])).unwrap();
        assert_eq!(std::fs::read(root.join("etc/conf")).unwrap(), b"mounted");
        std::fs::write(root.join("var/cache/x/new"), b"kept").unwrap();
        placed.undo();
        assert_eq!(std::fs::read(root.join("etc/conf")).unwrap(), b"image's");
        assert!(!root.join("var").exists(), "mount points made are gone");
        assert_eq!(std::fs::read(cache.join("new")).unwrap(), b"kept");
        assert_eq!(std::fs::read_dir(root.join("etc")).unwrap().count(), 1);
    }
}
