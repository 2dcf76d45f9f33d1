//! The traced command's file system: every path it names is resolved here,
//! inside the stage's root, as `RESOLVE_IN_ROOT` would resolve it (each
//! component looked up on disk, symlinks followed with the root as `/`, `..`
//! never above it), then handed to the kernel as the host path it stands for.
//! /proc, /dev and /sys are the container's; a few guest paths are bound to
//! host files (the step's /etc files, `RUN --mount` targets, a private
//! /dev/shm). /proc's magic links (`root`, `cwd`, `exe`, `fd/N`) are only
//! followed for the step's own processes, and lead back into the root.

use nix::errno::Errno;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What the resolver needs to know of the step's processes.
pub(super) trait Procs {
    /// The thread group (process) a thread of the step belongs to; `None`
    /// for a process that is not the step's.
    fn tgid_of(&self, tid: i32) -> Option<i32>;
    /// The program a process of the step runs, as the command named it (the
    /// kernel's own answer names the loader that started it).
    fn exe(&self, tgid: i32) -> Option<Vec<u8>>;
}

/// The guest's view: its root and the paths bound elsewhere.
pub(super) struct Fs {
    root: PathBuf,
    /// Guest path (absolute, clean) → host path, longest first.
    binds: Vec<(Vec<u8>, PathBuf)>,
}

/// Paths that are the container's own, not the stage root's.
const PASSTHROUGH: [&[u8]; 3] = [b"/proc", b"/dev", b"/sys"];

/// Symlinks followed in one lookup before ELOOP, as the kernel counts them.
const MAX_LINKS: usize = 40;

fn under(path: &[u8], prefix: &[u8]) -> Option<usize> {
    if prefix == b"/" {
        return Some(0);
    }
    if path == prefix {
        return Some(prefix.len());
    }
    (path.starts_with(prefix) && path.get(prefix.len()) == Some(&b'/')).then_some(prefix.len())
}

fn join_guest(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

fn components(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
}

fn is_number(c: &[u8]) -> Option<i32> {
    std::str::from_utf8(c).ok()?.parse().ok()
}

impl Fs {
    pub(crate) fn new(root: PathBuf, binds: Vec<(Vec<u8>, PathBuf)>) -> Fs {
        let mut binds: Vec<(Vec<u8>, PathBuf)> = binds
            .into_iter()
            .map(|(g, h)| {
                let clean: Vec<Vec<u8>> = components(&g).collect();
                (join_guest(&clean), h)
            })
            .collect();
        binds.sort_by_key(|(g, _)| std::cmp::Reverse(g.len()));
        Fs { root, binds }
    }

    /// Whether a guest directory is on the way to a bound path.
    fn leads_to_bind(&self, guest: &[u8]) -> bool {
        self.binds
            .iter()
            .any(|(g, _)| g.len() > guest.len() && under(g, guest).is_some())
    }

    /// The host path of a clean absolute guest path (no lookup on disk).
    pub(crate) fn to_host(&self, guest: &[u8]) -> PathBuf {
        for (g, h) in &self.binds {
            if let Some(n) = under(guest, g) {
                let rest = &guest[n..];
                if rest.is_empty() {
                    return h.clone();
                }
                return h.join(Path::new(OsStr::from_bytes(
                    rest.strip_prefix(b"/").unwrap_or(rest),
                )));
            }
        }
        if PASSTHROUGH.iter().any(|p| under(guest, p).is_some()) {
            return PathBuf::from(OsStr::from_bytes(guest));
        }
        let rel = guest.strip_prefix(b"/").unwrap_or(guest);
        self.root.join(Path::new(OsStr::from_bytes(rel)))
    }

    /// The guest path of a host path the step can reach; `None` for anything
    /// else (the executor's files, the container's root).
    pub(crate) fn to_guest(&self, host: &[u8]) -> Option<Vec<u8>> {
        for (g, h) in &self.binds {
            if let Some(n) = under(host, h.as_os_str().as_bytes()) {
                let mut out = g.clone();
                if out == b"/" {
                    out.clear();
                }
                out.extend_from_slice(&host[n..]);
                return Some(if out.is_empty() { b"/".to_vec() } else { out });
            }
        }
        let root = self.root.as_os_str().as_bytes();
        if let Some(n) = under(host, root) {
            let rest = &host[n..];
            return Some(if rest.is_empty() {
                b"/".to_vec()
            } else {
                rest.to_vec()
            });
        }
        PASSTHROUGH
            .iter()
            .any(|p| under(host, p).is_some())
            .then(|| host.to_vec())
    }

    /// Resolves `path` (relative to the guest directory `base` unless
    /// absolute) for the thread `tid`; `follow` says whether a symlink in the
    /// last component is followed (a trailing slash always follows it).
    pub(crate) fn resolve(
        &self,
        procs: &dyn Procs,
        tid: i32,
        base: &[u8],
        path: &[u8],
        follow: bool,
    ) -> Result<Resolved, Errno> {
        if path.is_empty() {
            return Err(Errno::ENOENT);
        }
        let follow = follow || path.ends_with(b"/");
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut todo: std::collections::VecDeque<Vec<u8>> = std::collections::VecDeque::new();
        if path[0] != b'/' {
            out.extend(components(base));
        }
        todo.extend(components(path));
        let mut links = 0;
        while let Some(c) = todo.pop_front() {
            match c.as_slice() {
                b"." => continue,
                b".." => {
                    out.pop();
                    continue;
                }
                _ => out.push(c),
            }
            let last = todo.is_empty();
            if out.first().is_some_and(|p| p == b"proc") {
                match self.proc_step(procs, tid, &mut out)? {
                    ProcStep::Plain => {}
                    ProcStep::Magic(target) if !last || follow => {
                        links += 1;
                        if links > MAX_LINKS {
                            return Err(Errno::ELOOP);
                        }
                        match target {
                            MagicTarget::Guest(t) => {
                                out.clear();
                                for c in components(&t).collect::<Vec<_>>().into_iter().rev() {
                                    todo.push_front(c);
                                }
                                continue;
                            }
                            // A pipe, socket or anonymous file: the /proc link
                            // itself, which reopens that object and leads nowhere.
                            MagicTarget::Object(host) => {
                                if !last {
                                    return Err(Errno::ENOTDIR);
                                }
                                return Ok(Resolved {
                                    guest: join_guest(&out),
                                    host,
                                });
                            }
                        }
                    }
                    ProcStep::Magic(_) => {}
                }
            }
            if last && !follow {
                break;
            }
            let guest = join_guest(&out);
            let host = self.to_host(&guest);
            match std::fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(Errno::ELOOP);
                    }
                    let target = std::fs::read_link(&host).map_err(io_errno)?;
                    let target = target.as_os_str().as_bytes();
                    if target.first() == Some(&b'/') {
                        out.clear();
                    } else {
                        out.pop();
                    }
                    for c in components(target).collect::<Vec<_>>().into_iter().rev() {
                        todo.push_front(c);
                    }
                }
                Ok(m) if !last && !m.is_dir() => return Err(Errno::ENOTDIR),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && last => {}
                // On the way to a bind (a heredoc script under /dev/pipes).
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound && self.leads_to_bind(&guest) => {}
                Err(e) => return Err(io_errno(e)),
            }
        }
        let guest = join_guest(&out);
        Ok(Resolved {
            host: self.to_host(&guest),
            guest,
        })
    }

    /// /proc as the step may see it: `self` and `thread-self` are the
    /// calling thread's, another process's entries are refused, and the magic
    /// links of the step's own processes point back into the root.
    fn proc_step(
        &self,
        procs: &dyn Procs,
        tid: i32,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<ProcStep, Errno> {
        if out.len() == 2 {
            let tgid = procs.tgid_of(tid).ok_or(Errno::ESRCH)?;
            match out[1].as_slice() {
                b"self" => out[1] = tgid.to_string().into_bytes(),
                b"thread-self" => {
                    out[1] = tgid.to_string().into_bytes();
                    out.push(b"task".to_vec());
                    out.push(tid.to_string().into_bytes());
                }
                c => {
                    if let Some(pid) = is_number(c) {
                        if procs.tgid_of(pid).is_none() {
                            return Err(Errno::EACCES);
                        }
                    }
                }
            }
            return Ok(ProcStep::Plain);
        }
        let Some(pid) = out.get(1).and_then(|c| is_number(c)) else {
            return Ok(ProcStep::Plain);
        };
        // The thread whose links these are: /proc/P/… or /proc/P/task/T/….
        let (thread, at) = if out.get(2).is_some_and(|c| c == b"task") {
            match out.get(3).and_then(|c| is_number(c)) {
                Some(t) => {
                    if procs.tgid_of(t).is_none() {
                        return Err(Errno::EACCES);
                    }
                    (t, 4)
                }
                None => return Ok(ProcStep::Plain),
            }
        } else {
            (pid, 2)
        };
        let Some(tgid) = procs.tgid_of(thread) else {
            return Err(Errno::EACCES);
        };
        let name = match out.get(at) {
            Some(n) => n.as_slice(),
            None => return Ok(ProcStep::Plain),
        };
        let proc_dir = format!("/proc/{thread}");
        let target = match (name, out.len() - at) {
            (b"root", 1) => MagicTarget::Guest(b"/".to_vec()),
            (b"cwd", 1) => {
                let host = std::fs::read_link(format!("{proc_dir}/cwd")).map_err(io_errno)?;
                MagicTarget::Guest(
                    self.to_guest(host.as_os_str().as_bytes())
                        .ok_or(Errno::EACCES)?,
                )
            }
            (b"exe", 1) => match procs.exe(tgid) {
                Some(e) => MagicTarget::Guest(e),
                None => {
                    let host = std::fs::read_link(format!("{proc_dir}/exe")).map_err(io_errno)?;
                    MagicTarget::Guest(
                        self.to_guest(host.as_os_str().as_bytes())
                            .ok_or(Errno::EACCES)?,
                    )
                }
            },
            (b"fd", 2) => {
                let n = is_number(&out[at + 1]).ok_or(Errno::ENOENT)?;
                let link = format!("{proc_dir}/fd/{n}");
                let host = std::fs::read_link(&link).map_err(io_errno)?;
                let host = host.as_os_str().as_bytes();
                if host.first() == Some(&b'/') {
                    // A deleted file keeps its name with " (deleted)": the
                    // object itself, reopened through the link.
                    match self.to_guest(host) {
                        Some(g) if std::fs::symlink_metadata(OsStr::from_bytes(host)).is_ok() => {
                            MagicTarget::Guest(g)
                        }
                        Some(_) => MagicTarget::Object(PathBuf::from(link)),
                        None => return Err(Errno::EACCES),
                    }
                } else {
                    MagicTarget::Object(PathBuf::from(link))
                }
            }
            // Links to the files a process maps: nothing a build needs.
            (b"map_files", _) => return Err(Errno::EACCES),
            _ => return Ok(ProcStep::Plain),
        };
        Ok(ProcStep::Magic(target))
    }

    /// What `readlink` shows the step for a magic link of /proc (its target
    /// inside the root); `None` for any other path.
    pub(crate) fn magic_target(
        &self,
        procs: &dyn Procs,
        tid: i32,
        guest: &[u8],
    ) -> Result<Option<Vec<u8>>, Errno> {
        let mut out: Vec<Vec<u8>> = components(guest).collect();
        if out.first().is_none_or(|c| c != b"proc") || out.len() < 3 {
            return Ok(None);
        }
        match self.proc_step(procs, tid, &mut out)? {
            ProcStep::Magic(MagicTarget::Guest(t)) => Ok(Some(t)),
            ProcStep::Magic(MagicTarget::Object(link)) => {
                let t = std::fs::read_link(link).map_err(io_errno)?;
                Ok(Some(t.as_os_str().as_bytes().to_vec()))
            }
            ProcStep::Plain => Ok(None),
        }
    }
}

enum ProcStep {
    Plain,
    Magic(MagicTarget),
}

enum MagicTarget {
    Guest(Vec<u8>),
    Object(PathBuf),
}

/// A guest path and the host path it stands for.
#[derive(Debug)]
pub(super) struct Resolved {
    pub(crate) guest: Vec<u8>,
    pub(crate) host: PathBuf,
}

pub(super) fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Me;
    impl Procs for Me {
        fn tgid_of(&self, tid: i32) -> Option<i32> {
            (tid == std::process::id() as i32).then_some(tid)
        }
        fn exe(&self, _: i32) -> Option<Vec<u8>> {
            Some(b"/bin/prog".to_vec())
        }
    }

    fn fs() -> (tempfile::TempDir, Fs) {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("usr/bin/sh"), b"").unwrap();
        symlink("usr/bin", r.join("bin")).unwrap();
        symlink("/", r.join("up")).unwrap();
        symlink("../../../../../../etc", r.join("usr/escape")).unwrap();
        symlink("/etc/nothing", r.join("dangling")).unwrap();
        std::fs::write(r.join("hosts"), b"bound").unwrap();
        let fs = Fs::new(
            r.to_path_buf(),
            vec![(b"/etc/hosts".to_vec(), r.join("hosts"))],
        );
        (d, fs)
    }

    fn guest(fs: &Fs, base: &str, p: &str, follow: bool) -> Result<String, Errno> {
        let me = std::process::id() as i32;
        fs.resolve(&Me, me, base.as_bytes(), p.as_bytes(), follow)
            .map(|r| String::from_utf8(r.guest).unwrap())
    }

    #[test]
    fn links_and_dots_stay_inside_the_root() {
        let (d, fs) = fs();
        assert_eq!(guest(&fs, "/", "/bin/sh", true).unwrap(), "/usr/bin/sh");
        assert_eq!(guest(&fs, "/", "/up/up/../../etc", true).unwrap(), "/etc");
        assert_eq!(guest(&fs, "/", "/usr/escape/x", true).unwrap(), "/etc/x");
        assert_eq!(guest(&fs, "/usr", "../../../bin", false).unwrap(), "/bin");
        assert_eq!(
            guest(&fs, "/usr", "../../../bin/", false).unwrap(),
            "/usr/bin"
        );
        // A dangling link followed names its target, inside the root.
        assert_eq!(guest(&fs, "/", "dangling", true).unwrap(), "/etc/nothing");
        assert_eq!(guest(&fs, "/", "dangling", false).unwrap(), "/dangling");
        let r = fs
            .resolve(&Me, std::process::id() as i32, b"/", b"/up/etc/hosts", true)
            .unwrap();
        assert_eq!(r.host, d.path().join("hosts"));
        assert_eq!(guest(&fs, "/", "/usr/bin/sh/x", true), Err(Errno::ENOTDIR));
        assert_eq!(guest(&fs, "/", "/nope/x", true), Err(Errno::ENOENT));
    }

    #[test]
    fn binds_stand_where_no_parent_is_on_disk() {
        let (d, _) = fs();
        let fs = Fs::new(
            d.path().to_path_buf(),
            vec![(b"/dev/pipes/EOF".to_vec(), d.path().join("hosts"))],
        );
        let me = std::process::id() as i32;
        let r = fs.resolve(&Me, me, b"/", b"/dev/pipes/EOF", true).unwrap();
        assert_eq!(r.host, d.path().join("hosts"));
        assert_eq!(
            fs.resolve(&Me, me, b"/", b"/dev/nothing/x", true)
                .unwrap_err(),
            Errno::ENOENT
        );
    }

    #[test]
    fn loops_end_in_eloop() {
        let (d, fs) = fs();
        symlink("loop", d.path().join("loop")).unwrap();
        assert_eq!(guest(&fs, "/", "/loop", true), Err(Errno::ELOOP));
        assert_eq!(guest(&fs, "/", "/loop", false).unwrap(), "/loop");
    }

    #[test]
    fn proc_leads_back_into_the_root_and_nowhere_else() {
        let (_d, fs) = fs();
        assert_eq!(
            guest(&fs, "/", "/proc/self/root/etc", true).unwrap(),
            "/etc"
        );
        assert_eq!(
            guest(&fs, "/", "/proc/self/exe", true).unwrap(),
            "/usr/bin/prog"
        );
        assert_eq!(
            guest(&fs, "/", "/proc/self/exe", false).unwrap(),
            format!("/proc/{}/exe", std::process::id())
        );
        assert_eq!(guest(&fs, "/", "/proc/1/root", true), Err(Errno::EACCES));
        assert_eq!(guest(&fs, "/", "/proc/1/environ", true), Err(Errno::EACCES));
        // The test's own cwd is outside the root: its link leads nowhere.
        assert_eq!(
            guest(&fs, "/", "/proc/self/cwd/x", true),
            Err(Errno::EACCES)
        );
        let me = std::process::id();
        assert_eq!(
            guest(&fs, "/", "/proc/self/status", true).unwrap(),
            format!("/proc/{me}/status")
        );
    }

    #[test]
    fn host_paths_map_back() {
        let (d, fs) = fs();
        let host = d.path().join("usr/bin");
        assert_eq!(
            fs.to_guest(host.as_os_str().as_bytes()).unwrap(),
            b"/usr/bin"
        );
        assert_eq!(fs.to_guest(d.path().as_os_str().as_bytes()).unwrap(), b"/");
        assert_eq!(
            fs.to_guest(d.path().join("hosts").as_os_str().as_bytes())
                .unwrap(),
            b"/etc/hosts"
        );
        assert_eq!(fs.to_guest(b"/etc/passwd"), None);
        assert_eq!(fs.to_guest(b"/dev/null").unwrap(), b"/dev/null");
    }
}
