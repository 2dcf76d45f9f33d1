//! The command's /proc, /dev and /sys, and runc's masks over them (see
//! `confine` for what the command may do in them).

use super::mounts::{bind_file, ensure_dir, inside, locked_flags, mount, remount_read_only};
use super::sys::Syscalls;
use super::ChildError;
use nix::mount::MsFlags;
use std::path::{Path, PathBuf};

const NOSUID: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// A fresh /proc of the new pid namespace, a /dev with the host's harmless
/// nodes (the image's own are not trusted), a read-only /sys.
pub(super) fn mount_system_dirs(
    sys: &dyn Syscalls,
    root: &Path,
    shm: bool,
) -> Result<(), ChildError> {
    mount_proc(sys, root)?;
    mount_dev(sys, root, shm)?;
    mount_sys(sys, root)?;
    mask_and_freeze(sys, root)
}

fn mount_proc(sys: &dyn Syscalls, root: &Path) -> Result<(), ChildError> {
    let proc_dir = inside(root, "proc")?;
    ensure_dir(&proc_dir)?;
    if let Err(fresh) = sys.mount(Some("proc"), &proc_dir, Some("proc"), NOSUID, None) {
        // Where /proc is partly masked (a container's), a new proc mount is
        // refused in a user namespace; a recursive bind keeps the masks.
        let rec = MsFlags::MS_BIND | MsFlags::MS_REC;
        sys.mount(Some("/proc"), &proc_dir, None, rec, None)
            .map_err(|bind| ChildError::Proc { fresh, bind })?;
    }
    Ok(())
}

fn mount_dev(sys: &dyn Syscalls, root: &Path, shm: bool) -> Result<(), ChildError> {
    let dev = inside(root, "dev")?;
    ensure_dir(&dev)?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME;
    let data = Some("mode=755,size=65536k");
    mount(sys, Some("tmpfs"), &dev, Some("tmpfs"), flags, data)?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        bind_file(sys, &PathBuf::from("/dev").join(node), &dev.join(node))?;
    }
    let pts = dev.join("pts");
    ensure_dir(&pts)?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    let data = Some("newinstance,ptmxmode=0666,mode=0620");
    mount(sys, Some("devpts"), &pts, Some("devpts"), flags, data)?;
    if shm {
        let shm = dev.join("shm");
        ensure_dir(&shm)?;
        let data = Some("mode=1777,size=65536k");
        mount(sys, Some("shm"), &shm, Some("tmpfs"), NOSUID, data)?;
    }
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))
            .map_err(|source| ChildError::Link { name: link, source })?;
    }
    Ok(())
}

fn mount_sys(sys: &dyn Syscalls, root: &Path) -> Result<(), ChildError> {
    let dir = inside(root, "sys")?;
    ensure_dir(&dir)?;
    let rec = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(sys, Some("/sys"), &dir, None, rec, None)?;
    // A remount in a user namespace must keep the flags the mount is locked with.
    remount_read_only(sys, &dir, NOSUID | locked_flags(sys, Path::new("/sys")))?;
    // The host's mounts under /sys (cgroup, securityfs, debugfs, bpf…) came
    // along writable: each read-only too, as runc mounts them.
    for sub in mounts_under(sys, &dir)? {
        remount_read_only(sys, &sub, locked_flags(sys, &sub))?;
    }
    Ok(())
}

/// The mount points strictly below `dir`, from this process's mountinfo.
fn mounts_under(sys: &dyn Syscalls, dir: &Path) -> Result<Vec<PathBuf>, ChildError> {
    let info = sys.mountinfo().map_err(|source| ChildError::Read {
        path: "/proc/self/mountinfo".into(),
        source,
    })?;
    let mut out = Vec::new();
    for line in info.lines() {
        let Some(point) = line.split(' ').nth(4) else {
            continue;
        };
        let point = PathBuf::from(crate::pathname::unescape_octal(point));
        if point != dir && point.starts_with(dir) && !out.contains(&point) {
            out.push(point);
        }
    }
    Ok(out)
}

/// runc's masked paths: files the host's /dev/null hides, directories an
/// empty read-only tmpfs; paths a kernel lacks are left alone.
const MASKED: [&str; 12] = [
    "proc/acpi",
    "proc/asound",
    "proc/interrupts",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/sched_debug",
    "proc/scsi",
    "proc/timer_list",
    "proc/timer_stats",
    "sys/devices/virtual/powercap",
    "sys/firmware",
];

/// runc's read-only paths.
const READ_ONLY: [&str; 5] = [
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// Masks and freezes what runc's default spec does, under `root`'s /proc and
/// /sys (so both are mounted first). The command gets no capability to undo
/// it, and its seccomp filter refuses mount calls.
fn mask_and_freeze(sys: &dyn Syscalls, root: &Path) -> Result<(), ChildError> {
    for rel in READ_ONLY {
        let p = root.join(rel);
        if std::fs::symlink_metadata(&p).is_err() {
            continue;
        }
        let rec = MsFlags::MS_BIND | MsFlags::MS_REC;
        mount(sys, p.to_str(), &p, None, rec, None)?;
        remount_read_only(sys, &p, locked_flags(sys, &p))?;
    }
    for rel in MASKED {
        let p = root.join(rel);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                let flags = MsFlags::MS_RDONLY | NOSUID;
                mount(sys, Some("tmpfs"), &p, Some("tmpfs"), flags, Some("size=0"))?
            }
            Ok(_) => mount(sys, Some("/dev/null"), &p, None, MsFlags::MS_BIND, None)?,
            Err(_) => {}
        }
    }
    Ok(())
}
