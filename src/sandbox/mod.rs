//! Runs a RUN step's command on a stage's root without touching the host's: a
//! helper process (this binary, re-executed, so it starts single-threaded and may
//! fork safely) enters new mount, pid, UTS and IPC namespaces, mounts an overlay
//! (lower = the unpacked stage root, upper = what the command changes), gives it
//! /proc, /dev, /sys and the /etc files BuildKit provides, pivots into it and
//! executes the command. When the command exits, the pid namespace ends and takes
//! every process it left behind with it; the upper dir is the step's change.
//!
//! The ladder of docs/run-sandbox.md, probed once per build:
//! - D, root with CAP_SYS_ADMIN (a host, a VM): the namespaces directly.
//! - B, root without it but allowed user namespaces (a Pod's default seccomp):
//!   the helper forks a child into a user namespace with the identity map,
//!   written from outside; /proc is bound recursively where a fresh mount is
//!   refused (a container's masked /proc).
//! - E, a non-root user with a subuid range: the whole executor runs inside a
//!   user namespace mapped by newuidmap (see [`userns`]), then as in D.
//! - A, root in a container that may make no namespaces (Docker's default
//!   seccomp profile): traced as C, ids emulated as there; where ptrace is
//!   denied too, in Kiln's own image, the command runs in the executor's own
//!   root, as Kaniko runs it ([`inplace`]); elsewhere the probe's error names
//!   the setting to change.
//! - C, no namespaces and no root (Pod Security "restricted"): the command
//!   under a ptrace supervisor ([`trace`]), root emulated; where ptrace is
//!   denied too, the probe's error names the setting to change.

pub(crate) mod cgroup;
pub mod child;
mod confine;
pub(crate) mod devices;
pub(crate) mod inplace;
pub(crate) mod trace;
pub(crate) mod upper;
pub mod userns;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The hidden first argument that makes the executor the sandbox helper.
pub const HELPER_ARG: &str = "__kiln-sandbox";

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("RUN cannot be isolated here: {cause}")]
    Unavailable { cause: String },
    #[error("the sandbox probe failed with exit code {code}: {stderr}")]
    Probe { code: i32, stderr: String },
    #[error("starting the sandbox helper {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{op}: {source}")]
    Io { op: String, source: std::io::Error },
    #[error("sandbox spec: {0}")]
    Spec(#[from] serde_json::Error),
    #[error("exit code: {0}")]
    Exit(i32),
    #[error("killed by signal {0}")]
    Signal(i32),
}

fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let op = op.into();
    move |source| SandboxError::Io { op, source }
}

/// What the helper does: everything decided by the parent, so the helper only
/// makes system calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunSpec {
    /// The stage's unpacked root (the overlay's lower dir; never written).
    pub(crate) lower: PathBuf,
    pub(crate) upper: PathBuf,
    pub(crate) work: PathBuf,
    pub(crate) merged: PathBuf,
    pub(crate) argv: Vec<String>,
    /// `KEY=VALUE`, PATH among them (the command is looked up with it, in the root).
    pub(crate) env: Vec<String>,
    pub(crate) cwd: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) groups: Vec<u32>,
    pub(crate) hostname: String,
    /// Files bind-mounted over root paths (resolv.conf, hosts, hostname, a script).
    pub(crate) etc: Vec<(String, PathBuf)>,
    /// `RUN --network=none`: a network namespace of its own (loopback only).
    pub(crate) network_none: bool,
    /// The in-place rung: no namespaces, the command runs in this process's own
    /// root (`lower` is `/`; `etc` holds only files under /dev).
    #[serde(default)]
    pub(crate) in_place: bool,
    /// `RUN --mount`s, mounted over the root before the command starts (never
    /// in place, where the parent puts their contents there instead).
    #[serde(default)]
    pub(crate) mounts: Vec<Mount>,
    /// The stage's root itself (`lower`) is the command's root, no overlay:
    /// the parent reads the change by a walk ([`Isolation::OwnRoot`]).
    #[serde(default)]
    pub(crate) on_root: bool,
    /// Where the helper writes the device nodes it made for the command in
    /// the kernel's stead ([`devices`]); the parent puts them in the layer.
    #[serde(default)]
    pub(crate) devices: Option<PathBuf>,
    /// Where the helper records the processes that must not outlive the build
    /// (see [`crate::procs`]): the scratch dir's.
    #[serde(default)]
    pub(crate) procs: Option<PathBuf>,
    /// The executor's pid: the helper dies with it (PR_SET_PDEATHSIG), and
    /// exits at once when it is gone before that was set.
    #[serde(default)]
    pub(crate) parent: u32,
    /// The traced rung ([`trace`]): no namespaces, the command under this
    /// helper's ptrace supervision on the stage's root (`lower`).
    #[serde(default)]
    pub(crate) traced: bool,
    /// Where the traced rung writes the owners the command gave its files.
    #[serde(default)]
    pub(crate) owners: Option<PathBuf>,
    /// The image's owners of root paths not owned by root (`path`, uid, gid):
    /// unpacked without privileges they are the executor's on disk.
    #[serde(default)]
    pub(crate) owners_seed: Vec<(String, u32, u32)>,
    /// Where the traced rung writes the paths the command changed
    /// ([`trace::touched`]): the parent reads the change from them alone.
    #[serde(default)]
    pub(crate) touched: Option<PathBuf>,
}

/// One `RUN --mount` as the helper makes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Mount {
    /// Root-relative, its symlinks already resolved inside the root.
    pub(crate) target: String,
    pub(crate) what: MountWhat,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum MountWhat {
    /// A host directory or file (a cache, a secret's file, a bind source).
    Bind {
        source: PathBuf,
        readonly: bool,
    },
    /// A writable view of `lower` whose writes land in `upper`, discarded
    /// after the step (`RUN --mount=…,rw`).
    Overlay {
        lower: PathBuf,
        upper: PathBuf,
        work: PathBuf,
    },
    Tmpfs {
        size: Option<u64>,
    },
    /// A secret's file, 0400 on the host: the helper copies it into a tmpfs
    /// of its own mount namespace with the step's mode and owner, so no other
    /// local user can read it whatever `mode=` says.
    Secret {
        source: PathBuf,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// Where a step's change is captured, under the stage's scratch dir.
pub(crate) struct StepDirs {
    pub(crate) base: PathBuf,
    pub(crate) upper: PathBuf,
    pub(crate) work: PathBuf,
    pub(crate) merged: PathBuf,
}

impl StepDirs {
    pub(crate) fn create(base: &Path) -> Result<StepDirs, SandboxError> {
        let d = StepDirs {
            upper: base.join("upper"),
            work: base.join("work"),
            merged: base.join("merged"),
            base: base.to_path_buf(),
        };
        // 0700 as every directory of scratch; upper keeps the default mode,
        // since the overlay's root takes it.
        crate::scratch::private_dir_all(base)
            .map_err(io(format!("creating {}", base.display())))?;
        for p in [&d.upper, &d.work, &d.merged] {
            std::fs::create_dir_all(p).map_err(io(format!("creating {}", p.display())))?;
        }
        Ok(d)
    }

    /// Removes everything the step left in scratch.
    pub(crate) fn remove(self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// How a build's RUN steps are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isolation {
    /// Namespaces and an overlay over the stage's unpacked root (D, B, E).
    Namespaces,
    /// The same namespaces over the stage's unpacked root itself, where no
    /// overlay can be mounted (the scratch dir on a container's overlay root:
    /// a Pod without an emptyDir); the change is read by a snapshot walk.
    OwnRoot,
    /// The executor's own root, in Kiln's image where namespaces are denied (A).
    InPlace,
    /// No namespaces and no root: the command under a ptrace supervisor that
    /// translates its paths into the stage's root and emulates root (C).
    Traced,
}

/// How RUN can be isolated here; probed once per build by running the helper
/// on an empty overlay. The error says what to change where this runs.
pub(crate) fn probe(scratch: &Path) -> Result<Isolation, SandboxError> {
    let base = scratch.join("sandbox-probe");
    let dirs = StepDirs::create(&base)?;
    let lower = base.join("lower");
    std::fs::create_dir_all(&lower).map_err(io("creating the probe root"))?;
    let spec = RunSpec {
        lower,
        upper: dirs.upper.clone(),
        work: dirs.work.clone(),
        merged: dirs.merged.clone(),
        argv: Vec::new(),
        env: Vec::new(),
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        groups: Vec::new(),
        hostname: "probe".into(),
        etc: Vec::new(),
        network_none: false,
        in_place: false,
        mounts: Vec::new(),
        on_root: false,
        devices: None,
        procs: None,
        parent: std::process::id(),
        traced: false,
        owners: None,
        owners_seed: Vec::new(),
        touched: None,
    };
    let result = run_helper(&spec, &base.join("spec.json"), true);
    dirs.remove();
    let (code, said) = match result {
        Ok(()) => {
            crate::log_info!("RUN runs in its own namespaces on an overlay over the stage's root");
            return Ok(Isolation::Namespaces);
        }
        Err(SandboxError::Probe { code, stderr }) => (code, stderr),
        Err(e) => return Err(e),
    };
    if code == child::PROBE_OWN_ROOT {
        crate::log_info!(
            "RUN runs in its own namespaces on the stage's root itself, its change read by a walk: no overlay can be mounted on {} ({})",
            scratch.display(),
            said.trim()
        );
        return Ok(Isolation::OwnRoot);
    }
    let uid = nix::unistd::geteuid();
    let no_namespaces = matches!(
        code,
        child::PROBE_NO_NAMESPACES | child::PROBE_NO_USER_NAMESPACE
    );
    // Where no namespace can be made, the tracer: the command then sees only
    // the stage's root, never the executor's files or credentials (as root,
    // setting A, with its real ids; otherwise root emulated). In place only
    // where tracing is refused too, or when asked for (the benchmark's
    // comparison: KILN_RUN_RUNG=in-place).
    let in_place_asked = std::env::var("KILN_RUN_RUNG").is_ok_and(|v| v == "in-place");
    let traced = if no_namespaces || !uid.is_root() {
        if in_place_asked && inplace::allowed() {
            Err("KILN_RUN_RUNG=in-place".to_string())
        } else {
            probe_traced(&spec, &base)
        }
    } else {
        Err("namespaces are allowed here".to_string())
    };
    if let Ok(()) = traced {
        let what = if uid.is_root() {
            "as root with the container's capabilities, ids emulated"
        } else {
            "as this uid, root emulated"
        };
        crate::log_info!(
            "RUN runs traced: on the stage's root, its paths translated into it by a ptrace supervisor, {what} (no namespaces here: {})",
            said.trim()
        );
        return Ok(Isolation::Traced);
    }
    if no_namespaces && inplace::allowed() {
        crate::log_info!(
            "RUN runs in this container's own root, as Kaniko runs it: namespaces are denied here ({}), and tracing too ({})",
            said.trim(),
            traced.as_ref().err().map_or("", String::as_str)
        );
        return Ok(Isolation::InPlace);
    }
    let where_ = where_running();
    let fix = match code {
        _ if !uid.is_root() => match where_ {
            Where::Container => format!(
                "it runs as uid {uid} in a container that may neither make namespaces nor trace its own children: allow ptrace (the runtime's default seccomp profile does: seccompProfile: {{type: RuntimeDefault}}; gVisor does not), or run the container as root with an unconfined seccomp profile (securityContext: runAsUser: 0, runAsNonRoot: false, seccompProfile: {{type: Unconfined}}), or build without RUN"
            ),
            Where::Host => format!(
                "it runs as uid {uid} without a user namespace: give the user a range in /etc/subuid and /etc/subgid and install newuidmap and newgidmap (Debian: uidmap), or run as root"
            ),
        },
        // Mapping root into a user namespace needs CAP_SETFCAP too (Linux 5.12).
        child::PROBE_NO_ID_MAP => "this container may create a user namespace but not map ids into it: keep the default capabilities SETUID, SETGID and SETFCAP (`capabilities: drop: [ALL]` removes them)".to_string(),
        child::PROBE_NO_NAMESPACES | child::PROBE_NO_USER_NAMESPACE => match where_ {
            Where::Container => format!("this container may not create user namespaces (its seccomp profile denies it): set seccompProfile: {{type: Unconfined}} in the securityContext and keep the default capabilities (docker run --security-opt seccomp=unconfined), or run Kiln's own image as root, where RUN runs in the container's root as Kaniko does (no {} next to {})", inplace::MARKER, std::env::current_exe().map(|e| e.display().to_string()).unwrap_or_default()),
            Where::Host => "this process may not create mount or user namespaces (check kernel.unprivileged_userns_clone, user.max_user_namespaces and seccomp)".to_string(),
        },
        child::PROBE_NO_OVERLAY if on_overlay(scratch) => format!(
            "the scratch dir {} is on an overlay filesystem (the container's own root), which cannot hold an overlay's upper dir: mount an emptyDir or tmpfs there (KANIKO_DIR names it)",
            scratch.display()
        ),
        _ => "an overlay could not be mounted in new namespaces".to_string(),
    };
    let traced = traced.err().unwrap_or_default();
    Err(SandboxError::Unavailable {
        cause: format!("{fix} (probe: {}; tracing: {traced})", said.trim()),
    })
}

/// Whether the traced rung works here: the helper traces a child of its own
/// under a filter that stops one call.
fn probe_traced(spec: &RunSpec, base: &Path) -> Result<(), String> {
    let spec = RunSpec {
        traced: true,
        ..spec.clone()
    };
    crate::scratch::private_dir_all(base).map_err(|e| e.to_string())?;
    let result = run_helper(&spec, &base.join("spec.json"), true);
    let _ = std::fs::remove_dir_all(base);
    match result {
        Ok(()) => Ok(()),
        Err(SandboxError::Probe { stderr, .. }) => Err(stderr.trim().to_string()),
        Err(e) => Err(e.to_string()),
    }
}

enum Where {
    Container,
    Host,
}

fn where_running() -> Where {
    if in_container() {
        Where::Container
    } else {
        Where::Host
    }
}

/// Containers announce themselves: Docker's marker file, Podman's, or a Pod's env.
pub(crate) fn in_container() -> bool {
    Path::new("/.dockerenv").exists()
        || Path::new("/run/.containerenv").exists()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

fn on_overlay(p: &Path) -> bool {
    const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
    nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 == OVERLAYFS_SUPER_MAGIC)
}

/// Where a command named `name` is looked for: `name` itself when it has a
/// slash, else in each directory of the command's PATH (the default when it
/// sets none), an empty entry standing for the working directory.
pub(crate) fn path_candidates(name: &str, env: &[String]) -> Vec<String> {
    if name.contains('/') {
        return vec![name.to_string()];
    }
    env.iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(crate::image::spec::DEFAULT_PATH)
        .split(':')
        .map(|dir| format!("{}/{name}", if dir.is_empty() { "." } else { dir }))
        .collect()
}

/// Runs the command of `spec`; its output goes to this process's stderr (the log).
pub(crate) fn run(spec: &RunSpec, spec_file: &Path) -> Result<(), SandboxError> {
    run_helper(spec, spec_file, false)
}

fn run_helper(spec: &RunSpec, spec_file: &Path, probe: bool) -> Result<(), SandboxError> {
    use std::os::unix::process::ExitStatusExt;
    // Owner-only: with `RUN --mount=type=secret,env=…` the spec holds a secret.
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(spec_file)
            .map_err(io(format!("writing {}", spec_file.display())))?;
        f.write_all(&serde_json::to_vec(spec)?)
            .map_err(io(format!("writing {}", spec_file.display())))?;
    }
    let exe = PathBuf::from("/proc/self/exe");
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg(HELPER_ARG).arg(spec_file);
    if probe {
        cmd.arg("--probe");
    }
    cmd.stdin(std::process::Stdio::null());
    if probe {
        let out = cmd
            .stdout(std::process::Stdio::null())
            .output()
            .map_err(|source| SandboxError::Spawn { path: exe, source })?;
        return match out.status.code() {
            Some(0) => Ok(()),
            code => Err(SandboxError::Probe {
                code: code.unwrap_or(-1),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }),
        };
    }
    // The command's stdout and stderr are log output (the executor's own stdout
    // carries only the digest): one pipe for both keeps their order, and the
    // log module writes it line by line, above the terminal view's bars.
    let (reader, writer) = std::io::pipe().map_err(io("making the output pipe"))?;
    let writer2 = writer.try_clone().map_err(io("making the output pipe"))?;
    cmd.stdout(writer).stderr(writer2);
    let spawned = cmd.spawn();
    // The command holds the pipe's write ends until spawned; dropped now, so
    // the relay sees the end of output when the helper and its children are gone.
    drop(cmd);
    let mut child = spawned.map_err(|source| SandboxError::Spawn {
        path: exe.clone(),
        source,
    })?;
    let relay = crate::log::relay_output(reader);
    // The helper dies with the executor on its own (PR_SET_PDEATHSIG); the
    // record lets a signal handler or the next build make sure of it.
    let records = spec
        .procs
        .as_deref()
        .and_then(|dir| crate::procs::Records::open(dir).ok());
    let record = records
        .as_ref()
        .and_then(|r| r.record(child.id() as i32).ok());
    let status = child.wait().map_err(io("waiting for the sandbox helper"));
    drop(record);
    // What the command wrote last is shown before the step's end line; a
    // process that escaped with the pipe open is not waited for long.
    let _ = relay.recv_timeout(std::time::Duration::from_secs(2));
    let status = status?;
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(c), _) => Err(SandboxError::Exit(c)),
        (None, Some(s)) => Err(SandboxError::Signal(s)),
        (None, None) => Err(SandboxError::Exit(-1)),
    }
}
