//! RUN: the command line as BuildKit builds it (SHELL, exec form, heredocs), the
//! user and environment it runs with, and its layer: what it changed, read from
//! the sandbox's upper dir.

use super::live::LiveRoot;
use super::mounts::HostMounts;
use super::stage::StageFs;
use super::users::{self, ExecUser};
use super::{BuildError, Session};
use crate::dockerfile::shell::Env;
use crate::dockerfile::{CommandLine, Run};
use crate::image::spec::ImageConfig;
use crate::layer::entries::{Entries, PathKey};
use crate::rootfs::keep::Keep;
use crate::sandbox::inplace::{self, Snapshot};
use crate::sandbox::{self, RunSpec, StepDirs};
use std::path::Path;

/// BuildKit's hostname for RUN steps.
const HOSTNAME: &str = "buildkitsandbox";

/// A RUN with its final argv; nothing has run yet.
pub(super) struct PreparedRun {
    pub argv: Vec<String>,
    /// A heredoc with a shebang runs as its own file: (name, bytes).
    pub script: Option<(String, Vec<u8>)>,
    pub network_none: bool,
    /// BuildKit's history text.
    pub history: String,
}

impl PreparedRun {
    /// What the cache key needs beyond the instruction and the environment.
    pub fn key_text(&self, config: &ImageConfig) -> String {
        serde_json::json!({
            "argv": self.argv,
            "script": self.script.as_ref().map(|(n, b)| (n, crate::image::Digest::sha256_of(b).to_string())),
            "user": config.config.user,
            "workdir": config.config.working_dir,
            "network_none": self.network_none,
        })
        .to_string()
    }
}

/// The argv BuildKit runs: the shell prepended to the shell form; a lone heredoc
/// run as a script (as a file when it has a shebang); other heredocs appended to
/// the command for the shell to read.
pub(super) fn prepare(
    r: &Run,
    config: &ImageConfig,
    arg_names: &[String],
    env: &Env,
) -> PreparedRun {
    let shell = config
        .config
        .shell
        .clone()
        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
    let mut script = None;
    let argv = match &r.command {
        CommandLine::Exec(v) => v.clone(),
        CommandLine::Shell(s) => {
            let body = match r.heredocs.as_slice() {
                [] => s.clone(),
                [h] if is_lone_heredoc(s.as_str()) => {
                    if h.content.starts_with("#!") {
                        script = Some((h.name.clone(), h.content.clone().into_bytes()));
                        String::new()
                    } else {
                        h.content.clone()
                    }
                }
                docs => {
                    let mut full = s.clone();
                    // The bodies as written: the shell strips a `<<-` body's tabs
                    // itself (BuildKit passes the unchomped `Data`).
                    for h in docs {
                        full.push('\n');
                        full.push_str(&h.raw);
                        full.push_str(&h.name);
                    }
                    full
                }
            };
            let body = match &script {
                Some((name, _)) => format!("/dev/pipes/{name}"),
                None => body,
            };
            shell.into_iter().chain([body]).collect()
        }
    };
    // `|N K=V …` names the build args in scope, as BuildKit's history does
    // (`runCommandString`): each name once, where first declared (a stage FROM
    // another repeats its parent's), with its value now, empty if it has none.
    let mut seen = std::collections::HashSet::new();
    let args: Vec<String> = arg_names
        .iter()
        .filter(|k| seen.insert(k.as_str()))
        .map(|k| format!("{k}={}", env.get(k).map_or("", String::as_str)))
        .collect();
    let mut words = Vec::new();
    if !args.is_empty() {
        words.push(format!("|{}", args.len()));
        words.extend(args);
    }
    words.extend(argv.iter().cloned());
    PreparedRun {
        history: format!("RUN {} # buildkit", words.join(" ")),
        argv,
        script,
        network_none: r.network.as_deref() == Some("none"),
    }
}

/// The proxy variables BuildKit gives every RUN from build args of these names
/// in either case, without an ARG line (`proxyEnvFromBuildArgs`).
const PROXIES: [&str; 5] = [
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "no_proxy",
    "all_proxy",
];

/// Whether a build arg is one of the proxy variables (consumed by RUN).
pub(super) fn is_proxy_arg(name: &str) -> bool {
    PROXIES.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// RUN's proxy variables: each proxy build arg under both its upper- and
/// lower-case name, as BuildKit's exec op adds them. They are kept out of the
/// cache key and the history (BuildKit leaves its ProxyEnv out of both).
pub(super) fn proxy_env(build_args: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for (k, v) in build_args {
        if let Some(p) = PROXIES.iter().find(|p| p.eq_ignore_ascii_case(k)) {
            env.push((p.to_ascii_uppercase(), v.clone()));
            env.push((p.to_string(), v.clone()));
        }
    }
    env
}

/// `<<EOF`, `<<-EOF`, `<<"EOF"`, `0<<EOF`: the whole command is one heredoc
/// (BuildKit's `MustParseHeredoc` on the command, which takes a descriptor too).
fn is_lone_heredoc(s: &str) -> bool {
    let s = s.trim().trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(rest) = s.strip_prefix("<<") else {
        return false;
    };
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let word = rest.trim_matches(|c| c == '"' || c == '\'');
    !word.is_empty() && word.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// Where a RUN's command runs, as the build's sandbox probe found.
pub(super) enum Rung<'a> {
    /// Namespaces and an overlay over the stage's root; the change is the
    /// overlay's upper dir.
    Overlay,
    /// The same namespaces on the stage's root itself (no overlay can be
    /// mounted here); the change is read by a walk against a snapshot.
    OwnRoot,
    /// The stage's root itself under the tracer, without namespaces (setting
    /// C); the change is read by a walk, its owners from the tracer's table.
    Traced,
    /// The executor's own root (setting A).
    Live(&'a mut LiveRoot),
}

/// What a RUN runs: the prepared command, the image config it reads USER
/// and WORKDIR from, and the variables it sees.
pub(super) struct Command<'a> {
    pub config: &'a ImageConfig,
    pub env: &'a Env,
    pub prepared: &'a PreparedRun,
}

/// Runs a prepared RUN on the stage's root and returns its layer's entries; the
/// files they name stay in `dirs` (or the stage's root) until the layer is
/// written. On the stage's root itself, also the walk that read the change.
pub(super) async fn execute(
    session: &Session,
    fs: &StageFs,
    cmd: Command<'_>,
    (dirs, mounts): (&StepDirs, &HostMounts),
    rung: Rung<'_>,
) -> Result<(Entries, Option<Snapshot>), BuildError> {
    let Command {
        config,
        env,
        prepared: p,
    } = cmd;
    let traced = matches!(rung, Rung::Traced);
    let own_root = matches!(rung, Rung::OwnRoot) || traced;
    let mut live = match rung {
        Rung::Live(l) => Some(l),
        _ => None,
    };
    // The root first: USER is then read from its /etc/passwd, not by streaming
    // every layer for it (4 s on a 176 MB layer).
    let (lower, user) = match live.as_deref_mut() {
        Some(live) => {
            live.sync(session, &fs.layers).await?;
            let root = Path::new(super::live::ROOT);
            let user = exec_user(config, |abs| read_on_disk(root, abs))?;
            (root.to_path_buf(), user)
        }
        None => {
            let root = fs.rootfs(session).await?;
            let read = |abs: &str| read_on_disk(root.path(), abs);
            (root.path().to_path_buf(), exec_user(config, read)?)
        }
    };
    let lower_root = lower.clone();
    let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), user.home.clone()));
    }
    // Secrets given as variables: in the command's environment only.
    for (k, v) in &mounts.env {
        env.retain(|(name, _)| name != k);
        env.push((k.clone(), v.clone()));
    }
    let (sandbox_mounts, mount_stubs) = match live {
        Some(_) => (Vec::new(), Vec::new()),
        None => mounts.for_sandbox(&lower)?,
    };
    let etc = step_files(dirs, p, live.is_some())?;
    let spec = RunSpec {
        lower,
        upper: dirs.upper.clone(),
        work: dirs.work.clone(),
        merged: dirs.merged.clone(),
        argv: p.argv.clone(),
        env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd: config
            .config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
        uid: user.uid,
        gid: user.gid,
        groups: user.groups,
        hostname: HOSTNAME.into(),
        etc,
        network_none: p.network_none && live.is_none(),
        in_place: live.is_some(),
        mounts: sandbox_mounts,
        on_root: own_root,
        devices: live
            .is_none()
            .then(|| sandbox::devices::records_file(&dirs.base)),
        procs: session.procs.clone(),
        parent: std::process::id(),
        traced,
        owners: traced.then(|| dirs.base.join("owners")),
        // The owners the layers so far give (the tracer's chowns of earlier
        // steps are in the layers, not on disk).
        owners_seed: if traced {
            owners_seed(fs.index(session).await?)
        } else {
            Vec::new()
        },
        touched: traced.then(|| dirs.base.join("touched")),
    };
    if p.network_none && live.is_some() {
        crate::log_warn!("RUN --network=none: this container may make no network namespace, so the command has the container's network");
    }
    let started = std::time::Instant::now();
    let spec_file = dirs.base.join("spec.json");
    // In place nothing can be mounted: the mounts' contents are put at their
    // targets, and taken away before the change is read.
    let placed = match &live {
        Some(l) => Some(mounts.place(Path::new(super::live::ROOT), l.keep())?),
        None => None,
    };
    // On the stage's root itself, the change is what moved since this walk
    // (traced, what the tracer saw the step touch).
    let before = match own_root && !traced {
        true => Some(walk_before(fs, &lower_root)?),
        false => None,
    };
    let ran = super::cpu(|| sandbox::run(&spec, &spec_file));
    let _ = std::fs::remove_file(&spec_file);
    if let Some(placed) = placed {
        super::cpu(|| placed.undo());
    }
    ran.map_err(|e| match e {
        sandbox::SandboxError::Exit(_) | sandbox::SandboxError::Signal(_) => {
            BuildError::from(super::StepError::RunFailed {
                command: p.argv.join(" "),
                cause: e.to_string(),
            })
        }
        other => super::SessionError::Sandbox(other).into(),
    })?;
    crate::log_debug!("RUN took {:?}", started.elapsed());
    let index = fs.index(session).await?;
    if let Some(live) = live {
        return live.changes(index, session.now).map(|e| (e, None));
    }
    // Files the sandbox mounts where the image has none are its own doing, not the
    // command's: they are left out of the layer. (/proc, /dev and /sys stay, as
    // BuildKit keeps them.)
    let stubs: Vec<String> = ["etc/resolv.conf", "etc/hosts", "etc/hostname"]
        .iter()
        .filter(|p| index.get(p).is_none())
        .map(|p| p.to_string())
        .collect();
    let seen = match (&before, &spec.touched) {
        (Some(before), _) => Some(Seen::Walked(before)),
        (None, Some(file)) => Some(Seen::Touched(
            sandbox::trace::touched::read(file)
                .map_err(|e| BuildError::io("reading what the traced step touched", e))?,
        )),
        (None, None) => None,
    };
    let (mut entries, walked) = match seen {
        Some(seen) => {
            let t = std::time::Instant::now();
            let (entries, after) =
                super::cpu(|| own_root_changes(&lower_root, seen, index, &stubs, &mount_stubs))?;
            crate::log_debug!(
                "read the step's change on the stage's root in {:?}",
                t.elapsed()
            );
            (entries, after)
        }
        None => {
            super::mounts::remove_stubs(&dirs.upper, &mount_stubs);
            let entries =
                super::cpu(|| sandbox::upper::changes(&dirs.upper, &lower_root, index, &stubs))?;
            (entries, None)
        }
    };
    drop_stub_parents(&mut entries, index);
    if let Some(table) = &spec.owners {
        traced_owners(&mut entries, &lower_root, table);
    }
    made_devices(&mut entries, &sandbox::devices::records_file(&dirs.base));
    Ok((entries, walked))
}

/// The files bound into the step's root: BuildKit's /etc files (in place,
/// the container's own stay, as mounts the root keeps) and a heredoc script.
fn step_files(
    dirs: &StepDirs,
    p: &PreparedRun,
    in_place: bool,
) -> Result<Vec<(String, std::path::PathBuf)>, BuildError> {
    let etc_dir = dirs.base.join("etc");
    std::fs::create_dir_all(&etc_dir)
        .map_err(|e| BuildError::io("creating the step's /etc files", e))?;
    let mut etc = Vec::new();
    let provided = match in_place {
        true => Vec::new(),
        false => buildkit_etc_files(),
    };
    for (name, body) in provided {
        let host = etc_dir.join(name);
        std::fs::write(&host, body)
            .map_err(|e| BuildError::io(format!("writing {}", host.display()), e))?;
        etc.push((format!("etc/{name}"), host));
    }
    if let Some((name, bytes)) = &p.script {
        use std::os::unix::fs::PermissionsExt;
        let host = dirs.base.join("script");
        std::fs::write(&host, bytes)
            .map_err(|e| BuildError::io("writing the heredoc script", e))?;
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| BuildError::io("writing the heredoc script", e))?;
        etc.push((format!("dev/pipes/{name}"), host));
    }
    Ok(etc)
}

/// The stage's root as a step on it finds it: the walk that read the step
/// before, else a walk now.
fn walk_before(fs: &StageFs, root: &Path) -> Result<Snapshot, BuildError> {
    if let Some(s) = fs.take_walked() {
        return Ok(s);
    }
    let t = std::time::Instant::now();
    let s = super::cpu(|| Snapshot::take(root, &Keep::default()))?;
    crate::log_debug!(
        "walked the stage's root before the step in {:?}",
        t.elapsed()
    );
    Ok(s)
}

/// The image's owners that are not root's: unpacked without privileges,
/// those files are the executor's on disk, and the tracer shows them as
/// the image has them.
fn owners_seed(index: &crate::rootfs::index::FsIndex) -> Vec<(String, u32, u32)> {
    index
        .iter()
        .filter(|(_, n)| n.uid != 0 || n.gid != 0)
        .filter_map(|(p, n)| {
            Some((
                p.clone(),
                u32::try_from(n.uid).ok()?,
                u32::try_from(n.gid).ok()?,
            ))
        })
        .collect()
}

/// A traced step's files are all the executor's on disk: each entry gets
/// the owner the command gave it (the tracer's table), else root's.
fn traced_owners(entries: &mut Entries, root: &Path, table: &Path) {
    use std::os::unix::fs::MetadataExt;
    let table = sandbox::trace::owners::read(table);
    let real = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    for (path, planned) in entries.iter_mut() {
        let Ok(m) = std::fs::symlink_metadata(root.join(crate::pathname::to_path(&path.0))) else {
            continue;
        };
        let born = sandbox::trace::owners::born(&m);
        let inode = (m.dev(), m.ino());
        let (uid, gid) = sandbox::trace::owners::lookup(&table.owners, inode, || born)
            .unwrap_or_else(|| sandbox::trace::owners::seen(real, m.uid(), m.gid()));
        planned.meta.uid = u64::from(uid);
        planned.meta.gid = u64::from(gid);
        // A capability the step set: as root's setcap writes it.
        if let Some((v, b)) = table.caps.get(&inode) {
            if b.is_none() || *b == born {
                const CAP: &str = "security.capability";
                planned.meta.xattrs.retain(|(k, _)| k != CAP);
                planned.meta.xattrs.push((CAP.to_string(), v.clone()));
                planned.meta.xattrs.sort();
            }
        }
    }
}

/// The device nodes the sandbox made for the command where the kernel refuses
/// them stand as empty files: in the layer they are the devices asked for (a
/// path the command changed again afterwards is left as it is).
fn made_devices(entries: &mut Entries, records: &Path) {
    use crate::layer::writer::EntryBody;
    for d in sandbox::devices::read_records(records) {
        let Some(p) = entries.get_mut(&PathKey(d.path.clone())) else {
            continue;
        };
        if matches!(p.body, EntryBody::File { size: 0, .. }) && p.meta.mode & 0o7777 == d.mode {
            p.body = if d.block {
                EntryBody::Block(d.major, d.minor)
            } else {
                EntryBody::Char(d.major, d.minor)
            };
        }
    }
}

/// How the change on the stage's root is found: against a walk from before
/// the step, or from the paths the tracer saw it touch.
enum Seen<'a> {
    Walked(&'a Snapshot),
    Touched(sandbox::trace::touched::Record),
}

/// The change a command made to the stage's root itself: the sandbox's mount
/// points and /etc stubs are taken out of the root first, and their parents
/// keep their time, as the overlay reader keeps it. Also the root as now
/// walked, when it was.
fn own_root_changes(
    root: &Path,
    seen: Seen<'_>,
    index: &crate::rootfs::index::FsIndex,
    etc_stubs: &[String],
    mount_stubs: &[String],
) -> Result<(Entries, Option<Snapshot>), BuildError> {
    super::mounts::remove_stubs(root, mount_stubs);
    super::mounts::remove_stubs(root, etc_stubs);
    let mut stub_parents = std::collections::HashSet::new();
    for stub in etc_stubs.iter().chain(mount_stubs) {
        let parent = crate::rootfs::split_parent(stub).0;
        if index.get(parent).is_some() {
            stub_parents.insert(parent.to_string());
        } else {
            // A parent the sandbox made for a stub (an image without /etc).
            let _ = std::fs::remove_dir(root.join(crate::pathname::to_path(parent)));
        }
    }
    Ok(match seen {
        Seen::Walked(before) => {
            let (entries, after) = inplace::changes(root, before, &Keep::default(), &stub_parents)?;
            (entries, Some(after))
        }
        Seen::Touched(record) => (
            inplace::touched_changes(root, index, &record, &stub_parents)?,
            None,
        ),
    })
}

/// The /etc files BuildKit gives a RUN: the host's resolv.conf, its own hosts
/// and hostname.
fn buildkit_etc_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "resolv.conf",
            std::fs::read("/etc/resolv.conf").unwrap_or_default(),
        ),
        (
            "hosts",
            format!("127.0.0.1\tlocalhost {HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
                .into_bytes(),
        ),
        ("hostname", format!("{HOSTNAME}\n").into_bytes()),
    ]
}

/// A file of the root at `root`, its links resolved inside it.
fn read_on_disk(root: &Path, abs: &str) -> Result<Option<Vec<u8>>, BuildError> {
    let rel = crate::rootfs::resolve_on_disk(root, abs, true)?;
    Ok(std::fs::read(root.join(crate::pathname::to_path(&rel))).ok())
}

/// `--ignore-path`: as Kaniko leaves them out of its snapshots, changes at or
/// under these root-relative paths are left out of a RUN's layer (a whiteout
/// counts as the path it removes, an opaque marker as its directory).
pub(super) fn drop_ignored(entries: &mut Entries, ignored: &[String]) {
    if ignored.is_empty() {
        return;
    }
    entries.retain(|k, _| {
        use crate::layer::reader::{whiteout_of_path, Whiteout};
        let target = match whiteout_of_path(&k.0) {
            Some(Whiteout::Remove(t) | Whiteout::Opaque(t)) => t,
            None => k.0.clone(),
        };
        !ignored
            .iter()
            .any(|p| target == *p || target.starts_with(&format!("{p}/")))
    });
}

/// `/etc` made only to hold the sandbox's stubs is not part of the change.
fn drop_stub_parents(entries: &mut Entries, index: &crate::rootfs::index::FsIndex) {
    let key = PathKey("etc".into());
    if index.get("etc").is_none()
        && entries.contains_key(&key)
        && !entries.keys().any(|k| k.0.starts_with("etc/"))
    {
        entries.remove(&key);
    }
}

/// USER as the command runs: resolved against the stage's own passwd and group,
/// which `read` gives.
fn exec_user(
    config: &ImageConfig,
    read: impl Fn(&str) -> Result<Option<Vec<u8>>, BuildError>,
) -> Result<ExecUser, BuildError> {
    let spec = config
        .config
        .user
        .clone()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".into());
    let text = |b: Option<Vec<u8>>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
    let passwd = text(read("/etc/passwd")?);
    let group = text(read("/etc/group")?);
    if spec == "root" && passwd.is_none() {
        // No passwd file: root is uid 0 all the same.
        return Ok(ExecUser {
            uid: 0,
            gid: 0,
            groups: vec![0],
            home: "/root".into(),
        });
    }
    users::exec_user(&spec, passwd.as_deref(), group.as_deref())
        .map_err(|e| super::StepError::Owner(e).into())
}

/// Where a RUN step keeps its overlay dirs: under the stage's scratch dir.
pub(super) fn step_dirs(stage_dir: &Path, line: usize) -> Result<StepDirs, BuildError> {
    sandbox::StepDirs::create(&stage_dir.join(format!("run-{line}")))
        .map_err(|e| super::SessionError::Sandbox(e).into())
}

#[cfg(test)]
mod tests;
