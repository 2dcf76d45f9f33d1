//! The one error a build returns: every module's error below dispatch, and the
//! steps' own, with the Dockerfile line of the step that failed.

use crate::context::ContextError;
use crate::dockerfile::shell::ShellError;
use crate::dockerfile::{InstructionError, Location};
use crate::image::Digest;
use crate::layer::reader::ReadError;
use crate::layer::writer::WriteError;
use crate::registry::RegistryError;
use crate::rootfs::apply::ApplyError;
use crate::rootfs::ResolveError;
use crate::source::remote::RemoteError;
use crate::source::StoreError;

/// What a build returns: the front end's, the session's or a step's error, or
/// any of them with the Dockerfile line of the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Front(#[from] FrontError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Step(#[from] StepError),
    /// Any error of one instruction, with its Dockerfile line; the cause stays
    /// reachable through `source()`.
    #[error("Dockerfile:{line}: {}: {text}", crate::log::one_line(source.as_ref()))]
    At {
        line: usize,
        text: String,
        source: Box<BuildError>,
    },
}

/// What the Dockerfile says that cannot be built: its words, flags and values.
#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    #[error(transparent)]
    Dockerfile(#[from] InstructionError),
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    #[error(transparent)]
    Checks(#[from] crate::dockerfile::checks::CheckError),
    #[error(transparent)]
    Shell(#[from] ShellError),
    #[error(transparent)]
    Mount(#[from] crate::dockerfile::mount::MountError),
    #[error(transparent)]
    Reference(#[from] crate::image::reference::ReferenceError),
    #[error("invalid platform {0:?}")]
    Platform(String),
    #[error(
        "invalid --chmod={0}: expected an octal mode up to 7777 or a symbolic one like u+x,go=r"
    )]
    Chmod(String),
    #[error("invalid port specification: {0:?}")]
    Port(String),
    #[error("ENV names can not be blank")]
    BlankEnvName,
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
}

/// What the build's clients and places failed at: registries, the context,
/// the sandbox, emulators, downloads.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    // Boxed: registry errors carry several names and would bloat every Result.
    #[error(transparent)]
    Registry(Box<RegistryError>),
    #[error(transparent)]
    Remote(Box<RemoteError>),
    #[error(transparent)]
    Store(Box<StoreError>),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error(transparent)]
    Emulation(#[from] crate::emulation::EmulationError),
    #[error(transparent)]
    Fetch(#[from] crate::registry::files::FileError),
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
}

/// What a step failed at while it read its sources, planned, ran or wrote its layer.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Upper(#[from] crate::sandbox::upper::UpperError),
    #[error(transparent)]
    Archive(#[from] crate::rootfs::archive::ArchiveError),
    #[error("{path:?}: not found in the {label}")]
    SourceNotFound { path: String, label: String },
    #[error("{path:?}: excluded by .dockerignore from the {label}")]
    SourceExcluded { path: String, label: String },
    #[error("/{path} exists in the image and is not a directory")]
    NotADirectory { path: String },
    #[error(
        "stage {0} is defined after this COPY --from; a stage can only copy from earlier stages"
    )]
    LaterStage(String),
    #[error("stage {0} was not built")]
    StageNotBuilt(String),
    #[error("--from={name} is neither a stage nor an image")]
    FromNeither {
        name: String,
        source: crate::image::reference::ReferenceError,
    },
    #[error("process \"{command}\" did not complete successfully: {cause}")]
    RunFailed { command: String, cause: String },
    #[error("{0}")]
    Owner(String),
    #[error("the stage's file index or root was not made (a bug in Kiln)")]
    NotReady,
    #[error("reading layer {digest}")]
    LayerTask {
        digest: Digest,
        source: tokio::task::JoinError,
    },
    #[error("{op}: {source}")]
    Io { op: String, source: std::io::Error },
    #[error("{0}")]
    Checksum(String),
    #[error("secret {0}: not found")]
    SecretNotFound(String),
    #[error("RUN --mount target {0} is a path this container keeps (the executor's files, a volume or a mount of its own); in Kiln's image without namespaces a mount cannot go there")]
    MountKept(String),
}

/// `?` on a module's error reaches `BuildError` through the group it belongs to.
macro_rules! through {
    ($group:ident: $($error:ty),+) => {
        $(impl From<$error> for BuildError {
            fn from(e: $error) -> Self {
                BuildError::$group(e.into())
            }
        })+
    };
}

through!(Front: InstructionError, crate::plan::PlanError, crate::dockerfile::checks::CheckError,
    ShellError, crate::dockerfile::mount::MountError, crate::image::reference::ReferenceError);
through!(Session: RegistryError, RemoteError, StoreError, ContextError,
    crate::sandbox::SandboxError, crate::emulation::EmulationError,
    crate::registry::files::FileError, crate::git::GitError);
through!(Step: ReadError, WriteError, ApplyError, ResolveError,
    crate::sandbox::upper::UpperError, crate::rootfs::archive::ArchiveError);

impl BuildError {
    pub fn io(op: impl Into<String>, source: std::io::Error) -> BuildError {
        BuildError::Step(StepError::Io {
            op: op.into(),
            source,
        })
    }

    /// Attaches the Dockerfile line to errors that do not carry one.
    pub(super) fn at(self, loc: &Location) -> BuildError {
        match self {
            e @ (BuildError::Front(FrontError::Dockerfile(_) | FrontError::Plan(_))
            | BuildError::At { .. }) => e,
            other => BuildError::At {
                line: loc.line,
                text: loc.text.trim().to_string(),
                source: Box::new(other),
            },
        }
    }
}

impl From<RegistryError> for SessionError {
    fn from(e: RegistryError) -> Self {
        SessionError::Registry(Box::new(e))
    }
}

impl From<StoreError> for SessionError {
    fn from(e: StoreError) -> Self {
        SessionError::Store(Box::new(e))
    }
}

impl From<RemoteError> for SessionError {
    fn from(e: RemoteError) -> Self {
        SessionError::Remote(Box::new(e))
    }
}
