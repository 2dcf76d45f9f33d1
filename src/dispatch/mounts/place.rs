//! Placing a RUN's mounts: for the sandbox, as the mounts its helper makes
//! (targets resolved inside the stage's root, writable binds as an overlay, the
//! mount points it must make listed so they leave the change again); in place,
//! each mount's contents put at its target and every move undone afterwards.

use super::*;
/// A RUN's mounts on the host side, held until the step ends.
#[derive(Default)]
pub(in crate::dispatch) struct HostMounts {
    pub(super) items: Vec<Item>,
    /// `RUN --mount=type=secret,env=…`: variables the command gets.
    pub env: Vec<(String, String)>,
    /// Cache locks, released when the step ends.
    pub(super) locks: Vec<File>,
    /// Stage and image roots unpacked for binds.
    pub(super) roots: Vec<StageFs>,
}

pub(super) struct Item {
    /// Absolute in the image, as written (links not resolved yet).
    pub(super) target: String,
    pub(super) what: Content,
    /// A scratch directory of this mount's own.
    pub(super) own: PathBuf,
}

pub(super) enum Content {
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

/// Where a mount's contents come from: the context, a stage or image, and the
/// path inside it.
#[derive(Clone, Copy)]
pub(super) struct MountSource<'a> {
    pub(super) origin: &'a Origin,
    pub(super) path: &'a str,
}

impl HostMounts {
    /// The host path that `from.path` of `from.origin` names, resolved inside
    /// it; `own` is the mount's own work directory.
    pub(super) async fn source_path(
        &mut self,
        b: &crate::dispatch::Build<'_>,
        built: &HashMap<usize, Arc<StageState>>,
        from: MountSource<'_>,
        own: &Path,
    ) -> Result<PathBuf, BuildError> {
        let MountSource {
            origin,
            path: source,
        } = from;
        let (session, ctx) = (b.session, b.ctx);
        let (root, label) = match origin {
            Origin::Context => {
                if !ctx.has_rules() {
                    (ctx.root().to_path_buf(), "build context".to_string())
                } else {
                    // Only what .dockerignore lets through, as BuildKit sends it.
                    let view = own.join("context");
                    let tree = context_tree(ctx);
                    cpu(|| crate::dispatch::sources::materialize(source, &tree, &view))?;
                    return Ok(view);
                }
            }
            Origin::From(CopyFrom::Stage(j, name)) => {
                let st = built
                    .get(j)
                    .ok_or_else(|| StepError::StageNotBuilt(name.clone()))?;
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
                return Err(StepError::NotReady.into());
            }
        };
        let rel = crate::rootfs::resolve_on_disk(&root, source, true)?;
        let host = root.join(crate::pathname::to_path(&rel));
        if std::fs::symlink_metadata(&host).is_err() {
            return Err(StepError::SourceNotFound {
                path: source.to_string(),
                label,
            }
            .into());
        }
        Ok(host)
    }

    /// The mounts for the sandbox helper over `lower` (the stage's root): each
    /// target resolved inside it, and the mount points it lacks, which the
    /// helper makes and [`remove_stubs`] takes out of the change again.
    pub(in crate::dispatch) fn for_sandbox(
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
    pub(in crate::dispatch) fn place(
        &self,
        root: &Path,
        keep: &Keep,
    ) -> Result<Placed, BuildError> {
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
                return Err(StepError::MountKept(format!("/{rel}")).into());
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
pub(in crate::dispatch) fn remove_stubs(upper: &Path, stubs: &[String]) {
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
pub(in crate::dispatch) struct Placed(Vec<Undo>);

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
    pub(in crate::dispatch) fn undo(self) {
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
    use super::super::*;
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
            Err(BuildError::Step(StepError::MountKept(p))) if p == "/etc/conf"
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
