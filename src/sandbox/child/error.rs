//! What can go wrong in the helper, and the exit code each failure reports.

use super::{
    PROBE_NO_ID_MAP, PROBE_NO_NAMESPACES, PROBE_NO_OVERLAY, PROBE_NO_USER_NAMESPACE, SETUP_FAILED,
};
use crate::sandbox::confine::ConfineError;
use std::ffi::OsString;
use std::io;
use std::path::PathBuf;

/// A failure of the sandbox before the command ran, or of the command to
/// start. The texts are the ones the helper has always printed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChildError {
    #[error("no spec given")]
    NoSpec,
    #[error("reading {file:?}: {source}")]
    ReadSpec { file: OsString, source: io::Error },
    #[error("reading {file:?}: {source}")]
    ParseSpec {
        file: OsString,
        source: serde_json::Error,
    },
    #[error("PR_SET_PDEATHSIG: {0}")]
    DeathSignal(nix::Error),
    #[error("the process that started this one ({0}) is gone")]
    ParentGone(u32),
    /// The traced rung's own failure (`trace` says it as text).
    #[error("{0}")]
    Trace(String),

    // Namespaces.
    #[error("unshare: {0}")]
    Unshare(nix::Error),
    #[error("unshare(user): {0}")]
    UnshareUser(nix::Error),
    #[error("{op} {path}: {source}")]
    IdMap {
        op: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("pipe: {0}")]
    Pipe(nix::Error),
    #[error("fork: {0}")]
    Fork(nix::Error),
    #[error("signalling the parent: {0}")]
    SignalParent(io::Error),
    #[error("the parent did not map the user namespace")]
    NotMapped,
    #[error("waiting for the command: {0}")]
    Wait(nix::Error),
    #[error("socketpair: {0}")]
    Socketpair(nix::Error),
    #[error("sending the device listener: {0}")]
    SendFd(nix::Error),

    // Mounts.
    #[error("making / private: {0}")]
    MakePrivate(nix::Error),
    #[error("mounting {} on {}: {source}", what.as_deref().unwrap_or("-"), target.display())]
    Mount {
        what: Option<String>,
        target: PathBuf,
        source: nix::Error,
    },
    #[error("mounting the overlay with userxattr,volatile: {with}; without: {without}")]
    Overlay {
        with: nix::Error,
        without: nix::Error,
    },
    /// The overlay over the stage's root, which the probe names by its code.
    #[error(transparent)]
    NoOverlay(Box<ChildError>),
    #[error("mounting proc: {fresh}; binding /proc: {bind}")]
    Proc { fresh: nix::Error, bind: nix::Error },
    #[error("/{target}: not a clean path")]
    NotClean { target: String },
    #[error("/{target}: {} is a symbolic link in the image", link.display())]
    Symlink { target: String, link: PathBuf },
    #[error("/{target}: a parent is not a directory")]
    ParentNotDir { target: String },
    #[error("creating {}: {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("linking /dev/{name}: {source}")]
    Link {
        name: &'static str,
        source: io::Error,
    },
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("writing {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("opening {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },

    // In place.
    #[error("RUN --mount: in place, the parent places mounts")]
    InPlaceMounts,
    #[error("/{target}: only files under /dev can be provided in place")]
    InPlaceOutsideDev { target: String },
    #[error("PR_SET_CHILD_SUBREAPER: {0}")]
    Subreaper(nix::Error),

    // The command's root and process.
    #[error("sethostname: {0}")]
    Hostname(nix::Error),
    #[error("chdir {}: {source}", dir.display())]
    Chdir { dir: PathBuf, source: nix::Error },
    #[error("pivot_root: {0}")]
    PivotRoot(nix::Error),
    #[error("detaching the old root: {0}")]
    DetachOldRoot(nix::Error),
    #[error("creating the working directory {dir}: {source}")]
    Workdir { dir: String, source: io::Error },
    #[error(transparent)]
    Confine(#[from] ConfineError),
    #[error("the seccomp filter could not be installed")]
    NoSeccomp,
    #[error("compiling the device filter: {0}")]
    DeviceFilter(String),
    /// setgroups, setgid or setuid.
    #[error("{call}: {source}")]
    Ids {
        call: &'static str,
        source: nix::Error,
    },

    // The command itself: said as a shell says it.
    #[error("RUN: no command given")]
    NoCommand,
    #[error("{program}: executable file not found in $PATH")]
    NotFound { program: String },
    #[error("{arg:?}: contains a NUL byte")]
    Nul { arg: String },
    #[error("{program}: {source}")]
    Exec { program: String, source: nix::Error },
}

impl ChildError {
    /// The helper's exit code: a probe's rung, a shell's 126 or 127 for a
    /// command that could not start, else `SETUP_FAILED`.
    pub(crate) fn code(&self) -> i32 {
        match self {
            ChildError::Unshare(_) => PROBE_NO_NAMESPACES,
            ChildError::UnshareUser(_) => PROBE_NO_USER_NAMESPACE,
            ChildError::IdMap { .. } => PROBE_NO_ID_MAP,
            ChildError::NoOverlay(_) => PROBE_NO_OVERLAY,
            ChildError::NoCommand | ChildError::NotFound { .. } | ChildError::Nul { .. } => 127,
            ChildError::Exec {
                source: nix::Error::ENOENT,
                ..
            } => 127,
            ChildError::Exec { .. } => 126,
            _ => SETUP_FAILED,
        }
    }

    /// Whether this is the command's failure to start rather than the sandbox's.
    fn is_command(&self) -> bool {
        matches!(
            self,
            ChildError::NoCommand
                | ChildError::NotFound { .. }
                | ChildError::Nul { .. }
                | ChildError::Exec { .. }
        )
    }

    /// Prints the failure on stderr: the command's as a shell says it, the
    /// sandbox's after `sandbox: `.
    pub(crate) fn say(&self) {
        if self.is_command() {
            eprintln!("{self}");
        } else {
            eprintln!("sandbox: {self}");
        }
    }

    /// A failed mount of `source` (`-` for none) on `target`.
    pub(crate) fn mount(source: Option<&str>, target: &std::path::Path, e: nix::Error) -> Self {
        ChildError::Mount {
            what: source.map(str::to_string),
            target: target.to_path_buf(),
            source: e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_name_the_probe_rung_or_the_shell_failure() {
        let e = nix::Error::EPERM;
        assert_eq!(ChildError::Unshare(e).code(), PROBE_NO_NAMESPACES);
        assert_eq!(ChildError::UnshareUser(e).code(), PROBE_NO_USER_NAMESPACE);
        let overlay = ChildError::Overlay {
            with: e,
            without: e,
        };
        // The same failure over a RUN --mount is the sandbox's.
        assert_eq!(overlay.code(), SETUP_FAILED);
        assert_eq!(ChildError::NoOverlay(Box::new(overlay)).code(), 12);
        let exec = |source| ChildError::Exec {
            program: "sh".into(),
            source,
        };
        assert_eq!(exec(nix::Error::ENOENT).code(), 127);
        assert_eq!(exec(nix::Error::EACCES).code(), 126);
        assert_eq!(ChildError::NoCommand.code(), 127);
        assert_eq!(ChildError::PivotRoot(e).code(), 125);
    }

    #[test]
    fn messages_are_the_helpers_texts() {
        let e = ChildError::NoOverlay(Box::new(ChildError::Overlay {
            with: nix::Error::EINVAL,
            without: nix::Error::EPERM,
        }));
        assert_eq!(
            e.to_string(),
            "mounting the overlay with userxattr,volatile: EINVAL: Invalid argument; without: EPERM: Operation not permitted"
        );
        let m = ChildError::mount(None, std::path::Path::new("/r/sys"), nix::Error::EPERM);
        assert_eq!(
            m.to_string(),
            "mounting - on /r/sys: EPERM: Operation not permitted"
        );
        let n = ChildError::NotFound {
            program: "nosuch".into(),
        };
        assert_eq!(n.to_string(), "nosuch: executable file not found in $PATH");
        assert!(n.is_command() && !m.is_command());
    }
}
