//! RUN confined as runc confines it (issue 26), attacked for real from a
//! Dockerfile with the executor as root on this host (setting D): each escape
//! that worked before — inode handles ("shocker"), /proc/sys, remounting /sys,
//! a device node for the host's disk — and the masks, capabilities and
//! seccomp filter that stop it; the host is checked afterwards. Then the
//! other-users and lifetime findings: a secret's host copy, and the step's
//! processes after SIGTERM and after `kill -9`.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The classic "shocker": a handle for inode 2 (the root of the filesystem
/// holding the bind-mounted /etc/hosts) opened with open_by_handle_at, then a
/// file created through it at the path given.
const SHOCKER: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct { struct file_handle fh; unsigned char b[8]; } h;
    unsigned int ino = 2, gen = 0;
    h.fh.handle_bytes = 8;
    h.fh.handle_type = 1;
    memcpy(h.fh.f_handle, &ino, 4);
    memcpy(h.fh.f_handle + 4, &gen, 4);
    int fd = open("/etc/hosts", O_RDONLY);
    int root = open_by_handle_at(fd, &h.fh, O_RDONLY);
    if (root < 0) { printf("RESULT shocker %s\n", strerror(errno)); return 0; }
    int f = openat(root, argv[1], O_CREAT | O_WRONLY, 0644);
    printf("RESULT shocker ESCAPED %d\n", f);
    return 0;
}
"#;

/// The descriptors the step was started with, but for the listing's own.
const FDS: &str = r#"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
int main(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) { printf("RESULT fds unreadable\n"); return 0; }
    int own = dirfd(d);
    struct dirent *e;
    char sep = ' ';
    printf("RESULT fds");
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || atoi(e->d_name) == own) continue;
        printf("%c%s", sep, e->d_name);
        sep = ',';
    }
    printf("\n");
    return 0;
}
"#;

/// `RESULT name value…` lines the step printed, from the executor's log.
fn results(out: &std::process::Output) -> BTreeMap<String, String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .filter_map(|r| r.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn read_sysctl(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{name}"))
        .unwrap()
        .trim()
        .to_string()
}

/// `source` written to `c` and compiled by `gcc` into the static program `out`.
fn compile_static(gcc: &Path, source: &str, c: &Path, out: &Path) {
    std::fs::write(c, source).unwrap();
    run_ok(
        Command::new(gcc).args([
            "-static".as_ref(),
            "-O2".as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
            c.as_os_str(),
        ]),
        "compiling a probe",
    );
}

/// Writes a sysctl back when a test changed it (it must not have).
struct Sysctl(&'static str, String);

impl Drop for Sysctl {
    fn drop(&mut self) {
        if read_sysctl(self.0) != self.1 {
            let _ = std::fs::write(format!("/proc/sys/{}", self.0), &self.1);
        }
    }
}

#[test]
fn run_steps_cannot_reach_the_host() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "setting D: this test runs the executor as root on the host (CI runs as root)"
    );
    let gcc = require("gcc", "apt-get install gcc libc6-dev");
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    compile_static(
        &gcc,
        SHOCKER,
        &work.path().join("shocker.c"),
        &ctx.join("shocker"),
    );
    compile_static(&gcc, FDS, &work.path().join("fds.c"), &ctx.join("fds"));
    // Where the shocker would create its file: this test's own temp dir,
    // relative to the root of its filesystem (the one scratch is on, too).
    let escaped = work.path().join("escaped");
    let mount_root = {
        let mut p = work.path().to_path_buf();
        let dev = std::fs::metadata(&p).unwrap().dev();
        while let Some(parent) = p.parent() {
            if std::fs::metadata(parent).unwrap().dev() != dev {
                break;
            }
            p = parent.to_path_buf();
        }
        p
    };
    let escaped_rel = escaped.strip_prefix(&mount_root).unwrap();
    let disk = std::fs::metadata(work.path()).unwrap().dev();
    let (major, minor) = (nix::sys::stat::major(disk), nix::sys::stat::minor(disk));
    let panic = Sysctl("kernel/panic", read_sysctl("kernel/panic"));
    let bb = "/usr/bin/busybox";
    let steps = [
        format!("echo RESULT caps $({bb} grep CapEff /proc/self/status | {bb} cut -f2)"),
        format!("echo RESULT bounding $({bb} grep CapBnd /proc/self/status | {bb} cut -f2)"),
        format!("echo RESULT seccomp $({bb} grep '^Seccomp:' /proc/self/status | {bb} cut -f2)"),
        format!("/shocker {}", escaped_rel.display()),
        "echo 17 > /proc/sys/kernel/panic 2>/dev/null; echo RESULT panic $?".to_string(),
        format!("{bb} mount -o remount,rw /sys 2>/dev/null; echo RESULT remount-sys $?"),
        "echo x > /sys/kernel/uevent_helper 2>/dev/null; echo RESULT write-sys $?".to_string(),
        format!("{bb} mknod /disk b {major} {minor} 2>/dev/null; echo RESULT mknod $?"),
        format!("echo RESULT read-disk $({bb} head -c 512 /disk 2>/dev/null | {bb} wc -c)"),
        format!("echo RESULT timer-list $({bb} wc -c < /proc/timer_list)"),
        format!("echo RESULT keys $({bb} wc -c < /proc/keys)"),
        format!("echo RESULT firmware $({bb} ls /sys/firmware | {bb} wc -l)"),
        format!("echo RESULT dev $({bb} ls /dev | {bb} tr '\\n' ,)"),
        format!("{bb} unshare -U -r true 2>/dev/null; echo RESULT unshare $?"),
        "/fds".to_string(),
        format!("{bb} nsenter -t 1 -m true 2>/dev/null; echo RESULT nsenter $?"),
        format!("echo RESULT pids-cgroup $({bb} grep -E ':pids:|^0::' /proc/self/cgroup | {bb} head -1 | {bb} cut -d: -f3)"),
        // The step's pids cgroup (v1's pids hierarchy, or v2's), as /sys shows it.
        format!(
            "echo RESULT pids-max $({bb} cat /sys/fs/cgroup/pids$({bb} grep :pids: /proc/self/cgroup | {bb} cut -d: -f3)/pids.max 2>/dev/null || {bb} cat /sys/fs/cgroup$({bb} grep ^0:: /proc/self/cgroup | {bb} cut -d: -f3)/pids.max)"
        ),
    ];
    let df = format!(
        "FROM {}/base:1\nCOPY shocker fds /\nRUN {}\n",
        reg.host,
        steps.join("; ")
    );
    std::fs::write(ctx.join("Dockerfile"), &df).unwrap();
    // The context is read by the executor as another user in E.
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    for setting in [Setting::D, Setting::B, Setting::E] {
        let out = setting.build(&ctx, &format!("{}/app:1", reg.host), &["--no-push"]);
        assert_ok(&out);
        let r = results(&out);
        let log = String::from_utf8_lossy(&out.stderr);
        let want = |k: &str| {
            r.get(k)
                .unwrap_or_else(|| panic!("setting {setting:?}: no {k} in the log:\n{log}"))
        };
        confined_as_runc_confines(setting, &r, &log, &escaped, &panic);
        if setting != Setting::D {
            continue;
        }
        assert_eq!(
            want("pids-max"),
            "16384",
            "the step's processes are bounded"
        );
        // Its cgroup went with it (v1's pids hierarchy here, else v2's).
        let cg = want("pids-cgroup");
        assert!(cg.contains("kiln-step-"), "{cg}");
        for root in ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"] {
            let dir = format!("{root}{cg}");
            assert!(!Path::new(&dir).exists(), "{dir} left behind");
        }
    }
}

/// What every namespace rung must show: runc's capabilities, a seccomp
/// filter, each escape refused, the masks, and the host unchanged.
fn confined_as_runc_confines(
    setting: Setting,
    r: &BTreeMap<String, String>,
    log: &str,
    escaped: &Path,
    panic: &Sysctl,
) {
    let want = |k: &str| {
        r.get(k)
            .unwrap_or_else(|| panic!("setting {setting:?}: no {k} in the log:\n{log}"))
    };
    // runc's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID
    // SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
    assert_eq!(want("caps"), "00000000a80425fb", "{log}");
    assert_eq!(want("bounding"), "00000000a80425fb", "{log}");
    assert_eq!(want("seccomp"), "2", "a seccomp filter is installed");
    assert_eq!(want("shocker"), "Operation not permitted", "{log}");
    assert!(
        !escaped.exists(),
        "setting {setting:?}: the shocker created a file on the host"
    );
    assert_ne!(want("panic"), "0", "/proc/sys is read-only");
    assert_eq!(read_sysctl("kernel/panic"), panic.1, "kernel.panic changed");
    assert_ne!(want("remount-sys"), "0", "/sys stays read-only");
    assert_ne!(want("write-sys"), "0", "nothing under /sys is written");
    // mknod of a device "succeeds" with a placeholder recorded for the layer
    // (`sandbox::devices`); nothing is read through it.
    assert_eq!(
        want("read-disk"),
        "0",
        "the host's disk is read through a device node (mknod said {})",
        want("mknod")
    );
    assert!(
        std::fs::read_to_string("/proc/timer_list").is_ok_and(|t| !t.is_empty()),
        "the host has a /proc/timer_list to mask"
    );
    assert_eq!(want("timer-list"), "0", "/proc/timer_list is masked");
    assert_eq!(want("keys"), "0", "/proc/keys is masked");
    assert_eq!(want("firmware"), "0", "/sys/firmware is masked");
    let dev: Vec<&str> = want("dev").split(',').filter(|s| !s.is_empty()).collect();
    for node in &dev {
        assert!(
            [
                "console", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm",
                "stderr", "stdin", "stdout", "tty", "urandom", "zero", "pipes"
            ]
            .contains(node),
            "/dev/{node} is not a standard node: {dev:?}"
        );
    }
    assert_ne!(want("unshare"), "0", "no new user namespace");
    // Nothing of the helper's (its pipes) or of whoever started the executor.
    assert_eq!(want("fds"), "0,1,2", "{log}");
    assert_ne!(want("nsenter"), "0", "no joining the host's namespaces");
}

/// A secret given `mode=0444` is readable in the step by a non-root user, and
/// never by another local user on the host while the step runs.
#[test]
fn secrets_are_the_steps_alone() {
    let setpriv = require("setpriv", "apt-get install util-linux");
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let work = tempfile::tempdir().unwrap();
    let secret = work.path().join("token");
    std::fs::write(&secret, "s3cr3t-kiln-token\n").unwrap();
    let scratch = work.path().join("kaniko");
    std::fs::create_dir(&scratch).unwrap();
    // Another user could reach the scratch dir if Kiln let it: the test's dirs
    // are open to all.
    for d in [work.path(), scratch.as_path()] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let df = format!(
        "FROM {}/base:1\nUSER 1000\nRUN --mount=type=secret,id=tok,mode=0444 echo RESULT inside $(cat /run/secrets/tok) && stat -c 'RESULT mode %a' /run/secrets/tok && /usr/bin/busybox sleep 4\n",
        reg.host
    );
    let ctx = work.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), df).unwrap();
    let secret_arg = format!("id=tok,src={}", secret.display());
    let child = spawn_build(
        &ctx,
        &format!("{}/app:1", reg.host),
        &scratch,
        &["--secret", &secret_arg],
        Stdio::piped,
    );
    // While the step sleeps: every file under scratch, read as nobody.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_secret_file = false;
    let mut leaked = Vec::new();
    while Instant::now() < deadline && !seen_secret_file {
        for e in walkdir::WalkDir::new(&scratch).into_iter().flatten() {
            if e.file_type().is_file() && e.file_name() == "secret" {
                seen_secret_file = true;
                let out = Command::new(&setpriv)
                    .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
                    .arg(e.path())
                    .output()
                    .unwrap();
                if out.status.success() {
                    leaked.push(e.path().display().to_string());
                }
                let mode = e.metadata().unwrap().mode() & 0o7777;
                assert_eq!(mode, 0o400, "{}: the host copy is 0400", e.path().display());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_ok(&out);
    assert!(
        seen_secret_file,
        "the step's secret file was never seen under scratch"
    );
    assert!(leaked.is_empty(), "nobody read the secret at {leaked:?}");
    let r = results(&out);
    assert_eq!(
        r.get("inside").map(String::as_str),
        Some("s3cr3t-kiln-token")
    );
    assert_eq!(
        r.get("mode").map(String::as_str),
        Some("444"),
        "mode= applies inside"
    );
}

/// Starts the executor on `ctx` without pushing, scratch in `kaniko_dir`.
fn spawn_build(
    ctx: &Path,
    dest: &str,
    kaniko_dir: &Path,
    extra: &[&str],
    output: fn() -> Stdio,
) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_executor"))
        .args([
            "--context",
            ctx.to_str().unwrap(),
            "--destination",
            dest,
            "--no-push",
        ])
        .args(["--kaniko-dir", kaniko_dir.to_str().unwrap()])
        .args(extra)
        .stdout(output())
        .stderr(output())
        .spawn()
        .unwrap()
}

/// Processes whose command line holds `needle`, as pgrep sees them.
fn pgrep(needle: &str) -> Vec<String> {
    let out = Command::new(require("pgrep", "apt-get install procps"))
        .args(["-a", "-f", needle])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains("pgrep"))
        .map(str::to_string)
        .collect()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A step that leaves a daemon (its own session) and a non-root child running,
/// killed with the executor: by SIGTERM, and by `kill -9` followed by a new
/// build in the same kaniko dir. Nothing of the step may be left.
#[test]
fn no_step_outlives_its_build() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    for (signal, tag) in [("TERM", 31337), ("KILL", 31338)] {
        let work = tempfile::tempdir().unwrap();
        let scratch = work.path().join("kaniko");
        let mark = format!("{tag}.5");
        let df = format!(
            "FROM {}/base:1\nRUN /usr/bin/busybox setsid /usr/bin/busybox sleep {mark} & /usr/bin/busybox su app -s /bin/sh -c '/usr/bin/busybox sleep {mark}' & /usr/bin/busybox sleep {mark}\n",
            reg.host
        );
        let ctx = work.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), df).unwrap();
        let mut child = spawn_build(
            &ctx,
            &format!("{}/app:1", reg.host),
            &scratch,
            &[],
            Stdio::null,
        );
        wait_for("the step's three sleeps", || {
            pgrep(&format!("sleep {mark}")).len() >= 3
        });
        // The helper and the step's pid-namespace init are recorded where the
        // SIGTERM handler and the next build look: the scratch dir's `procs`.
        let records: Vec<_> = std::fs::read_dir(&scratch)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("kiln-"))
            .flat_map(|e| {
                std::fs::read_dir(e.path().join("procs"))
                    .into_iter()
                    .flatten()
            })
            .flatten()
            .collect();
        Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        // Asserted once the build is gone, so a failure leaves nothing running.
        assert!(
            records.len() >= 2,
            "processes recorded in {}: {records:?}",
            scratch.display()
        );
        if signal == "TERM" {
            assert_eq!(status.code(), Some(130), "SIGTERM ends the build with 130");
        } else {
            // The next build finds the stale scratch dir.
            let out = build_files(
                &[("Dockerfile", &format!("FROM {}/base:1\n", reg.host))],
                &format!("{}/next:1", reg.host),
                &["--no-push", "--kaniko-dir", scratch.to_str().unwrap()],
            );
            assert_ok(&out);
        }
        // The kernel takes a pid namespace's processes with its init: allow it
        // a moment, then nothing of the step may be left.
        let gone = Instant::now() + Duration::from_secs(5);
        while !pgrep(&format!("sleep {mark}")).is_empty() && Instant::now() < gone {
            std::thread::sleep(Duration::from_millis(50));
        }
        let left = pgrep(&format!("sleep {mark}"));
        for l in &left {
            if let Some(pid) = l.split_whitespace().next() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        assert!(left.is_empty(), "after SIG{signal}, the step left {left:?}");
        let stale: Vec<_> = std::fs::read_dir(&scratch)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            stale
                .iter()
                .all(|n| !n.to_string_lossy().starts_with("kiln-")),
            "scratch left behind after SIG{signal}: {stale:?}"
        );
    }
}

/// What a traced step tries against the executor (pid 1 of its container,
/// same uid): trace it, read its memory, signal it, open its /proc files.
const PEEK: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <unistd.h>
int main(void) {
    long r = ptrace(PTRACE_ATTACH, 1, 0, 0);
    printf("RESULT ptrace %s\n", r == 0 ? "ATTACHED" : strerror(errno));
    char buf[8];
    struct iovec l = {buf, 8}, rm = {(void *)0x400000, 8};
    r = process_vm_readv(1, &l, 1, &rm, 1, 0);
    printf("RESULT vm-read %s\n", r >= 0 ? "READ" : strerror(errno));
    r = kill(1, SIGKILL);
    printf("RESULT signal %s\n", r == 0 ? "SENT" : strerror(errno));
    int fd = open("/proc/1/mem", O_RDONLY);
    printf("RESULT proc-mem %s\n", fd >= 0 ? "OPENED" : strerror(errno));
    fd = open("/proc/1/environ", O_RDONLY);
    printf("RESULT proc-environ %s\n", fd >= 0 ? "OPENED" : strerror(errno));
    return 0;
}
"#;

/// The traced rung, attacked from a Dockerfile in setting C (Pod Security
/// "restricted") and setting A (root under Docker's default seccomp, where
/// RUN ran in the container's own root and could read the credentials): the
/// push credentials at /kaniko/.docker/config.json, readable by the
/// executor's uid, must not be reachable by name, through a symlink, `..`,
/// /proc/self/root, /proc/1/root or a directory descriptor; the executor (pid
/// 1, same uid) cannot be traced, read, signalled or have its /proc files
/// opened; a write to /kaniko/executor lands in the image, not on the
/// executor; nothing of the credentials reaches the registry.
#[test]
fn traced_steps_reach_nothing_of_the_executor() {
    let gcc = require("gcc", "apt-get install gcc libc6-dev");
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    compile_static(&gcc, PEEK, &work.path().join("peek.c"), &ctx.join("peek"));
    compile_static(&gcc, FDS, &work.path().join("fds.c"), &ctx.join("fds"));
    let token = "kiln-traced-creds-5e1d";
    let creds = work.path().join("config.json");
    std::fs::write(
        &creds,
        format!(r#"{{"auths":{{"elsewhere.example":{{"auth":"{token}"}}}}}}"#),
    )
    .unwrap();
    let bb = "/usr/bin/busybox";
    let c = "/kaniko/.docker/config.json";
    let tries = [
        ("name", format!("{bb} cat {c}")),
        ("symlink", format!("{bb} ln -s / /up && {bb} cat /up{c}")),
        ("dotdot", format!("cd /tmp && {bb} cat ../../../..{c}")),
        ("proc-self-root", format!("{bb} cat /proc/self/root{c}")),
        ("proc-1-root", format!("{bb} cat /proc/1/root{c}")),
        (
            "dirfd",
            format!("exec 3</ && {bb} cat /proc/self/fd/3/..{c}"),
        ),
        ("cwd-link", format!("cd / && {bb} cat /proc/self/cwd/..{c}")),
    ];
    let mut steps: Vec<String> = tries
        .iter()
        .map(|(name, cmd)| {
            format!(
                "({cmd}) > /got-{name} 2>/dev/null; echo RESULT {name} $({bb} wc -c < /got-{name})"
            )
        })
        .collect();
    steps.push("/peek".to_string());
    steps.push("/fds".to_string());
    steps.push(format!(
        "{bb} mkdir -p /kaniko && echo pwned > /kaniko/executor"
    ));
    let df = format!(
        "FROM {}/base:1\nCOPY peek fds /\nRUN {}\n",
        reg.host,
        steps.join("; ")
    );
    std::fs::write(ctx.join("Dockerfile"), &df).unwrap();
    for dir in [work.path(), ctx.as_path()] {
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&creds, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mount = format!("{}:{c}:ro", creds.display());
    for (setting, restricted) in [("C", true), ("A", false)] {
        let mut args: Vec<&str> = if restricted {
            Setting::C.restricted().unwrap_or_default().to_vec()
        } else {
            Vec::new()
        };
        args.extend(["-v", &mount]);
        let dest = format!("{}/peek-{}:1", reg.host, setting.to_lowercase());
        let out = in_executor_image(&args, &ctx, &dest);
        assert_ok(&out);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(log.contains("RUN runs traced"), "{setting}: {log}");
        let r = results(&out);
        for (name, _) in &tries {
            assert_eq!(
                r.get(*name).map(String::as_str),
                Some("0"),
                "{setting}: {name}: the credentials were read: {log}"
            );
        }
        for (k, v) in [
            ("ptrace", "Operation not permitted"),
            ("vm-read", "Operation not permitted"),
            ("signal", "Operation not permitted"),
            ("proc-mem", "Permission denied"),
            ("proc-environ", "Permission denied"),
            ("fds", "0,1,2"),
        ] {
            assert_eq!(
                r.get(k).map(String::as_str),
                Some(v),
                "{setting}: {k}: {log}"
            );
        }
        let got = pull(&reg, &format!("peek-{}:1", setting.to_lowercase()));
        assert_eq!(
            got.files["kaniko/executor"].digest,
            sha256_of(b"pwned\n"),
            "{setting}: the write landed in the stage's root"
        );
    }
    assert!(
        !registry_holds(&reg, token.as_bytes()),
        "the credentials reached the registry"
    );
}
