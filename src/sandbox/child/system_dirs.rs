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

#[cfg(test)]
mod tests {
    use super::super::sys::recording::{mount as recorded, Call, Recording};
    use super::*;
    use nix::sys::statvfs::FsFlags;

    fn bind(source: &Path, target: &Path) -> Call {
        recorded(source.to_str(), target, None, MsFlags::MS_BIND, None)
    }

    fn rec_bind(source: &Path, target: &Path) -> Call {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
        recorded(source.to_str(), target, None, flags, None)
    }

    fn read_only(target: &Path, keep: MsFlags) -> Call {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | keep;
        recorded(None, target, None, flags, None)
    }

    #[test]
    fn system_dirs_are_mounted_in_order_with_their_flags() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let sub = r.join("sys/fs/cgroup");
        let sys = Recording::default()
            .with_flags("/sys", FsFlags::ST_NOSUID | FsFlags::ST_NODEV)
            .with_flags(&sub, FsFlags::ST_NOEXEC)
            .with_mount_point("/")
            .with_mount_point(r.join("sys").to_str().unwrap())
            .with_mount_point(sub.to_str().unwrap())
            .with_mount_point(sub.to_str().unwrap());
        mount_system_dirs(&sys, r, true).unwrap();

        let dev = r.join("dev");
        let mut want = vec![
            recorded(Some("proc"), &r.join("proc"), Some("proc"), NOSUID, None),
            recorded(
                Some("tmpfs"),
                &dev,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
                Some("mode=755,size=65536k"),
            ),
        ];
        for node in ["null", "zero", "full", "random", "urandom", "tty"] {
            want.push(bind(&Path::new("/dev").join(node), &dev.join(node)));
        }
        want.extend([
            recorded(
                Some("devpts"),
                &dev.join("pts"),
                Some("devpts"),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some("newinstance,ptmxmode=0666,mode=0620"),
            ),
            recorded(
                Some("shm"),
                &dev.join("shm"),
                Some("tmpfs"),
                NOSUID,
                Some("mode=1777,size=65536k"),
            ),
            rec_bind(Path::new("/sys"), &r.join("sys")),
            // The host's locked nosuid and nodev kept, nosuid, nodev, noexec added.
            read_only(&r.join("sys"), NOSUID),
            // Each mount below /sys once, keeping its own locked flags.
            read_only(&sub, MsFlags::MS_NOEXEC),
        ]);
        assert_eq!(sys.calls(), want);
        assert_eq!(
            std::fs::read_link(dev.join("stderr")).unwrap(),
            Path::new("/proc/self/fd/2")
        );
        assert!(dev.join("tty").is_file(), "a mount point for the node");
    }

    #[test]
    fn proc_is_bound_where_a_fresh_one_is_refused_and_shm_may_be_the_steps() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let sys = Recording::default().refusing("proc");
        mount_system_dirs(&sys, r, false).unwrap();
        let mounts = sys.calls();
        assert_eq!(mounts[0], rec_bind(Path::new("/proc"), &r.join("proc")));
        assert!(!mounts.iter().any(|c| matches!(
            c,
            Call::Mount { target, .. } if target.ends_with("dev/shm")
        )));

        let e = mount_system_dirs(
            &Recording::default().refusing("proc").refusing("/proc"),
            r,
            true,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("mounting proc: EPERM"), "{e}");
    }

    #[test]
    fn masked_paths_are_hidden_and_read_only_paths_remounted_read_only() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for dir in ["proc/sys", "proc/scsi", "sys/firmware"] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        for file in ["proc/sysrq-trigger", "proc/kcore"] {
            std::fs::write(r.join(file), b"").unwrap();
        }
        let sys_dir = r.join("proc/sys");
        let sys = Recording::default().with_flags(&sys_dir, FsFlags::ST_NOSUID);
        mask_and_freeze(&sys, r).unwrap();
        let trigger = r.join("proc/sysrq-trigger");
        let empty = MsFlags::MS_RDONLY | NOSUID;
        let tmpfs = |p: &str| {
            recorded(
                Some("tmpfs"),
                &r.join(p),
                Some("tmpfs"),
                empty,
                Some("size=0"),
            )
        };
        assert_eq!(
            sys.calls(),
            [
                // What the kernel lacks (proc/bus, proc/fs, ...) is left alone.
                rec_bind(&sys_dir, &sys_dir),
                read_only(&sys_dir, MsFlags::MS_NOSUID),
                rec_bind(&trigger, &trigger),
                read_only(&trigger, MsFlags::empty()),
                bind(Path::new("/dev/null"), &r.join("proc/kcore")),
                tmpfs("proc/scsi"),
                tmpfs("sys/firmware"),
            ]
        );
    }

    #[test]
    fn mount_points_below_are_read_unescaped_and_strictly_below() {
        let sys = Recording::default()
            .with_mount_point("/r/sys")
            .with_mount_point("/r/sys/a\\040b")
            .with_mount_point("/r/sysfs")
            .with_mount_point("/other");
        assert_eq!(
            mounts_under(&sys, Path::new("/r/sys")).unwrap(),
            [PathBuf::from("/r/sys/a b")]
        );
    }
}
