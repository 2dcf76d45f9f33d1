//! COPY and ADD: their words expanded and their source found (the context, an
//! earlier stage, an image, ADD's URLs and git repositories), the cache key's
//! inputs, the history text, and the layer planned against the stage's files.

use super::add::{add_parts, fetch_remote_sources, AddParts};
use super::Step;
use crate::cache::key::KeyBuilder;
use crate::context::BuildContext;
use crate::dispatch::chmod::Chmod;
use crate::dispatch::copy::{self, CopyRequest};
use crate::dispatch::effect::{self, Effect, Entries, NewLayer};
use crate::dispatch::sources::{self, SourceTree};
use crate::dispatch::stage::StageFs;
use crate::dispatch::{
    cpu, live, users, Build, BuildError, BuildOptions, LiveHold, Session, StageState,
};
use crate::dispatch::{FrontError, StepError};
use crate::dockerfile::shell::{self, Env};
use crate::dockerfile::{Copy, Dockerfile};
use crate::image::Reference;
use crate::rootfs::index::FsIndex;
use crate::source::remote::{self, RemoteImage};
use std::collections::HashMap;
use std::sync::Arc;
/// COPY's (ADD's) step: sources found and keyed, the layer looked up or planned.
pub(super) async fn copy(
    s: &mut Step<'_, '_, '_>,
    c: &Copy,
    mut kb: KeyBuilder,
) -> Result<bool, BuildError> {
    let (b, built) = (s.b, s.built);
    let (session, ctx) = (b.session, b.ctx);
    let mut prepared = prepare_copy(s, c).await?;
    // Hashing every source costs a full read: only when a cache can use it.
    if session.cache.settings.layers {
        fetch_remote_sources(session, prepared.add.as_mut(), true).await?;
        for (label, value) in cpu(|| copy_key_inputs(&prepared, ctx, built))? {
            kb.add(label, &value);
        }
    }
    let key = kb.finish();
    let mut effect = Effect::history(copy_history(&prepared));
    // Downloads and unpacked archives are read when the layer is written.
    let _work = prepared.add.as_ref().map(|a| a.work.clone());
    let st = &mut *s.st;
    effect.layer = match effect::lookup(session, st, &key).await {
        Some(hit) => Some(hit),
        None => {
            fetch_remote_sources(session, prepared.add.as_mut(), false).await?;
            let workdir = st.config.config.working_dir.clone();
            let workdir = workdir.as_deref().unwrap_or("/");
            let live = live_source(b, s.hold, &prepared, built);
            let origins = Origins { ctx, built, live };
            Some(NewLayer::Planned(
                copy_entries(b, &st.fs, workdir, prepared, origins).await?,
                None,
            ))
        }
    };
    effect::apply(session, st, effect, &key).await
}

/// The live root as a COPY --from source, when it holds that stage: the hold
/// is taken if free (and kept to the stage's end, as the layer is read from it
/// when committed); a stage running commands there is not waited for.
fn live_source<'h, 'b>(
    b: &'b Build<'_>,
    hold: &'h mut LiveHold<'b>,
    p: &PreparedCopy,
    built: &HashMap<usize, Arc<StageState>>,
) -> Option<&'h live::LiveRoot> {
    let CopyFrom::Stage(j, _) = &p.from else {
        return None;
    };
    let layers = &built.get(j)?.fs.layers;
    if hold.is_none() {
        let guard = b.session.live.try_lock().ok()?;
        if !guard.as_ref().is_some_and(|l| l.holds(layers)) {
            return None;
        }
        *hold = Some(guard);
    }
    hold.as_ref()?.as_ref()
}

/// Where a COPY reads from.
pub(in crate::dispatch) enum CopyFrom {
    Context,
    Stage(usize, String),
    Image(Box<RemoteImage>),
}

/// A COPY with every word expanded; owners are resolved only when it runs.
pub(in crate::dispatch) struct PreparedCopy {
    pub sources: Vec<String>,
    pub inline: Vec<Inline>,
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<Chmod>,
    /// `--chmod` as written (expanded), for the history.
    pub chmod_text: Option<String>,
    /// `--exclude` patterns, expanded.
    pub excludes: Vec<String>,
    /// `--link`: the layer is made on its own, not on the stage's files.
    pub link: bool,
    pub from: CopyFrom,
    /// ADD's parts beyond COPY's.
    pub add: Option<AddParts>,
}

/// Expands a COPY's words and finds its source (fetching only an image's manifest).
async fn prepare_copy(s: &Step<'_, '_, '_>, c: &Copy) -> Result<PreparedCopy, BuildError> {
    let (session, df, opts) = (s.b.session, s.b.df, s.b.opts);
    let (env, stage_index) = (&s.env, s.stage);
    let esc = df.escape;
    let (mut sources, inline) = expand_sources(c, esc, env)?;
    let add = match &c.add {
        Some(flags) => Some(add_parts(s, flags, &mut sources, !inline.is_empty())?),
        None => None,
    };
    let dest = shell::expand(&c.dest, esc, env)?;
    let chown = c
        .chown
        .as_ref()
        .map(|s| shell::expand(s, esc, env))
        .transpose()?;
    let chmod_text = c
        .chmod
        .as_ref()
        .map(|m| shell::expand(m, esc, env))
        .transpose()?;
    let chmod = match &chmod_text {
        Some(m) => Some(Chmod::parse(m).ok_or_else(|| FrontError::Chmod(m.clone()))?),
        None => None,
    };
    let from = match &c.from {
        None => CopyFrom::Context,
        Some(f) => {
            resolve_from(session, df, shell::expand(f, esc, env)?, stage_index, opts).await?
        }
    };
    Ok(PreparedCopy {
        sources,
        inline,
        dest,
        chown,
        chmod,
        chmod_text,
        excludes: c
            .excludes
            .iter()
            .map(|e| shell::expand(e, esc, env))
            .collect::<Result<_, _>>()?,
        link: c.link,
        from,
        add,
    })
}

/// A heredoc source: its name and its (expanded) bytes.
type Inline = (String, Vec<u8>);

/// The source words expanded, and the heredocs among them as inline files.
fn expand_sources(
    c: &Copy,
    esc: char,
    env: &Env,
) -> Result<(Vec<String>, Vec<Inline>), BuildError> {
    let mut sources = Vec::new();
    let mut inline = Vec::new();
    for s in &c.sources {
        // BuildKit's MustParseHeredoc takes a descriptor prefix here too (`3<<EOF`).
        let s_doc = s.trim_start_matches(|c: char| c.is_ascii_digit());
        let heredoc = c.heredocs.iter().find(|h| {
            s_doc.starts_with("<<")
                && s_doc
                    .trim_start_matches("<<")
                    .trim_start_matches('-')
                    .trim_matches(['"', '\''])
                    == h.name
        });
        match heredoc {
            Some(h) => {
                // BuildKit expands variables only, and fails the step on a bad one.
                let content = if h.expand {
                    shell::expand_heredoc(&h.content, env)?
                } else {
                    h.content.clone()
                };
                inline.push((h.name.clone(), content.into_bytes()));
            }
            None => sources.push(shell::expand(s, esc, env)?),
        }
    }
    Ok((sources, inline))
}

/// What `--from=NAME` names for a step of stage `stage_index`: an earlier stage
/// (by name or index), else an image (only its manifest is fetched).
pub(in crate::dispatch) async fn resolve_from(
    session: &Session,
    df: &Dockerfile,
    name: String,
    stage_index: usize,
    opts: &BuildOptions,
) -> Result<CopyFrom, BuildError> {
    let by_name = df.stage_named(&name, stage_index);
    let by_index = name.parse::<usize>().ok().filter(|&i| i < stage_index);
    if let Some(j) = by_name.or(by_index) {
        return Ok(CopyFrom::Stage(j, name));
    }
    if df.stage_named(&name, df.stages.len()).is_some() {
        return Err(StepError::LaterStage(name).into());
    }
    let reference = Reference::parse(&name).map_err(|source| StepError::FromNeither {
        name: name.clone(),
        source,
    })?;
    Ok(CopyFrom::Image(Box::new(
        remote::fetch(
            &session.registry,
            &reference,
            &opts.platform,
            &session.blobs_dir,
        )
        .await?,
    )))
}

/// What a COPY's cache key needs beyond the instruction: its sources' digest.
fn copy_key_inputs(
    p: &PreparedCopy,
    ctx: &BuildContext,
    built: &HashMap<usize, Arc<StageState>>,
) -> Result<Vec<(&'static str, String)>, BuildError> {
    let mut v = vec![
        ("dest", p.dest.clone()),
        ("chown", p.chown.clone().unwrap_or_default()),
        ("chmod", p.chmod_text.clone().unwrap_or_default()),
    ];
    for (name, bytes) in &p.inline {
        v.push((
            "heredoc",
            format!("{name}:{}", crate::image::Digest::sha256_of(bytes)),
        ));
    }
    if let Some(add) = &p.add {
        for u in &add.urls {
            // The content, or the --checksum that vouches for it.
            let digest = match (&add.checksum, &u.fetched) {
                (Some(sum), _) => sum.clone(),
                (None, Some(f)) => f.digest.clone(),
                (None, None) => return Err(StepError::NotReady.into()),
            };
            v.push(("url", format!("{} {digest}", u.url)));
        }
        for g in &add.git {
            let commit = g.commit.as_ref().ok_or(StepError::NotReady)?;
            let sub = g.source.subdir.as_deref().unwrap_or("");
            v.push((
                "git",
                format!(
                    "{} {commit}:{sub} keep={}",
                    g.source.remote, add.keep_git_dir
                ),
            ));
        }
    }
    match &p.from {
        CopyFrom::Context => {
            let tree = SourceTree {
                context: Some(ctx),
                exclude: sources::exclude_patterns(&p.excludes),
                ..SourceTree::plain(ctx.root(), "build context".into())
            };
            v.push(("sources", sources::digest_sources(&p.sources, &tree)?));
        }
        CopyFrom::Stage(j, _) => {
            let key = built.get(j).map(|s| s.key.clone()).unwrap_or_default();
            v.push(("from-stage", key));
            v.push(("sources", p.sources.join("\n")));
        }
        CopyFrom::Image(img) => {
            v.push(("from-image", img.manifest_digest.to_string()));
            v.push(("sources", p.sources.join("\n")));
        }
    }
    Ok(v)
}

/// Whether no source can reach a path the live root keeps (the container's
/// /etc/hosts, /proc, the executor's files), which only a stage's own unpacked
/// root has as the stage made it: the part before any wildcard decides.
fn clear_of(keep: &crate::rootfs::keep::Keep, sources: &[String]) -> bool {
    sources.iter().all(|src| {
        let clean = crate::pathname::clean_rooted(src);
        let fixed: Vec<&str> = clean
            .split('/')
            .take_while(|c| !crate::context::has_wildcards(c))
            .collect();
        let fixed = fixed.join("/");
        !keep.is_kept(&fixed) && !keep.holds_kept(&fixed)
    })
}

/// Where a COPY's sources can come from.
struct Origins<'a> {
    pub ctx: &'a BuildContext,
    pub built: &'a HashMap<usize, Arc<StageState>>,
    /// The container's root, when RUN runs in place there.
    pub live: Option<&'a live::LiveRoot>,
}

/// Plans a prepared COPY's layer against the stage's files (`fs` changes only by
/// making its index); `effect::apply` commits it.
async fn copy_entries(
    b: &Build<'_>,
    fs: &StageFs,
    workdir: &str,
    p: PreparedCopy,
    origins: Origins<'_>,
) -> Result<Entries, BuildError> {
    let (session, opts) = (b.session, b.opts);
    let Origins { ctx, built, live } = origins;
    let owner = match &p.chown {
        Some(spec) => {
            Some(users::stage_owner(session, fs, spec, &format!("--chown={spec}")).await?)
        }
        None => None,
    };
    let req = CopyRequest {
        sources: p.sources,
        inline: p.inline,
        dest: p.dest,
        workdir: workdir.to_string(),
        owner,
        chmod: p.chmod.clone(),
        now: session.now,
        zero_mtimes: opts.reproducible,
    };
    let target = Target {
        session,
        fs,
        link: p.link,
        exclude: sources::exclude_patterns(&p.excludes),
    };
    match p.from {
        CopyFrom::Context => from_context(&target, &req, p.add.as_ref(), ctx).await,
        CopyFrom::Stage(j, name) => {
            let src = built
                .get(&j)
                .ok_or_else(|| StepError::StageNotBuilt(name.clone()))?;
            from_stage(&target, &req, src, &name, live).await
        }
        CopyFrom::Image(image) => from_image(&target, &req, *image, &opts.scratch_dir).await,
    }
}

/// What a COPY's layer is planned against, and what every tree it reads shares.
struct Target<'t> {
    session: &'t Session,
    /// The stage's files.
    fs: &'t StageFs,
    /// `--link`: planned on nothing instead.
    link: bool,
    /// `--exclude` patterns.
    exclude: Vec<Vec<String>>,
}

impl Target<'_> {
    /// The entries `tree` gives the layer.
    async fn plan(&self, req: &CopyRequest, tree: &SourceTree<'_>) -> Result<Entries, BuildError> {
        let index = target_index(self.session, self.fs, self.link).await?;
        cpu(|| copy::plan(req, tree, index.as_ref()))
    }
}

/// From the context, and for ADD its downloads and git checkouts: one layer of
/// them all.
async fn from_context(
    target: &Target<'_>,
    req: &CopyRequest,
    add: Option<&AddParts>,
    ctx: &BuildContext,
) -> Result<Entries, BuildError> {
    let work = add.map(|a| a.work.path());
    let tree = SourceTree {
        context: Some(ctx),
        exclude: target.exclude.clone(),
        unpack: work,
        ..SourceTree::plain(ctx.root(), "build context".into())
    };
    let urls: Vec<String> = add
        .iter()
        .flat_map(|a| a.urls.iter().map(|u| u.rel.clone()))
        .collect();
    let downloads = SourceTree {
        literal: true,
        ..SourceTree::plain(work.unwrap_or(ctx.root()), "downloads".into())
    };
    let checkouts: Vec<(std::path::PathBuf, String)> = add
        .iter()
        .flat_map(|a| {
            a.git
                .iter()
                .map(|g| (a.work.path().join(&g.rel), g.source.remote.clone()))
        })
        .collect();
    let git_trees: Vec<SourceTree> = checkouts
        .iter()
        .map(|(root, remote)| SourceTree::plain(root, format!("repository {remote}")))
        .collect();
    // A repository's tree: its contents go into the destination.
    let whole = ["/".to_string()];
    let mut groups = vec![
        (&tree, req.sources.as_slice()),
        (&downloads, urls.as_slice()),
    ];
    groups.extend(git_trees.iter().map(|t| (t, whole.as_slice())));
    let index = target_index(target.session, target.fs, target.link).await?;
    cpu(|| copy::plan_groups(req, &groups, index.as_ref()))
}

/// From an earlier stage `src` (named `name`): its unpacked root, or the
/// container's root when that holds the stage (in place: its files are there
/// already, and unpacking them again takes seconds).
async fn from_stage(
    target: &Target<'_>,
    req: &CopyRequest,
    src: &StageState,
    name: &str,
    live: Option<&live::LiveRoot>,
) -> Result<Entries, BuildError> {
    let session = target.session;
    let live = live.filter(|l| l.holds(&src.fs.layers) && clear_of(l.keep(), &req.sources));
    let (root, keep, headers) = match live {
        Some(l) => (
            std::path::Path::new(live::ROOT),
            Some(l.keep()),
            src.fs.index(session).await?,
        ),
        None => {
            let (root, headers) = src.fs.source_view(session).await?;
            (root.path(), None, headers)
        }
    };
    let tree = SourceTree {
        headers: Some(headers),
        exclude: target.exclude.clone(),
        keep,
        ..SourceTree::plain(root, format!("stage {name}"))
    };
    target.plan(req, &tree).await
}

/// From an image: unpacked into a directory of its own (stages running at
/// once may copy from one image).
async fn from_image(
    target: &Target<'_>,
    req: &CopyRequest,
    image: RemoteImage,
    scratch_dir: &std::path::Path,
) -> Result<Entries, BuildError> {
    let prefix = format!("from-{}-", image.manifest_digest.file_name());
    let dir = crate::scratch::private_tempdir(&prefix, scratch_dir)
        .map_err(|e| BuildError::io("creating a scratch dir", e))?
        .keep();
    let label = format!("image {}", image.reference);
    let image_fs = StageFs::new(image.layers, dir);
    let (root, headers) = image_fs.source_view(target.session).await?;
    let tree = SourceTree {
        headers: Some(headers),
        exclude: target.exclude.clone(),
        ..SourceTree::plain(root.path(), label)
    };
    target.plan(req, &tree).await
}

/// What a COPY is planned against: the stage's files, or with `--link` nothing
/// (BuildKit makes such a layer on scratch: destinations do not resolve through
/// the image's symlinks, and its directories replace them when stacked).
async fn target_index<'s>(
    session: &Session,
    fs: &'s StageFs,
    link: bool,
) -> Result<std::borrow::Cow<'s, FsIndex>, BuildError> {
    if link {
        return Ok(std::borrow::Cow::Owned(FsIndex::default().with_root()));
    }
    Ok(std::borrow::Cow::Borrowed(fs.index(session).await?))
}

/// COPY's (ADD's) history text as BuildKit writes it: expanded words, `--from`,
/// `--link`, `--checksum` and `--keep-git-dir` left out.
fn copy_history(p: &PreparedCopy) -> String {
    let mut s = String::from(if p.add.is_some() { "ADD" } else { "COPY" });
    if let Some(c) = &p.chown {
        s.push_str(&format!(" --chown={c}"));
    }
    if let Some(m) = &p.chmod_text {
        s.push_str(&format!(" --chmod={m}"));
    }
    let words = p.add.as_ref().map_or(&p.sources, |a| &a.words);
    for src in words {
        s.push(' ');
        s.push_str(src);
    }
    for (name, _) in &p.inline {
        s.push_str(&format!(" <<{name}"));
    }
    s.push(' ');
    s.push_str(&p.dest);
    s.push_str(" # buildkit");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_clear_of_kept_paths() {
        let keep = crate::rootfs::keep::Keep::new(["kaniko".to_string(), "etc/hosts".into()]);
        let clear =
            |s: &[&str]| clear_of(&keep, &s.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(clear(&["/out/hello", "/etc/passwd", "/usr/*"]));
        assert!(!clear(&["/"]) && !clear(&["/etc"]) && !clear(&["/kaniko/executor"]));
        assert!(!clear(&["/e*"]) && !clear(&["/etc/host?"]));
    }
}
