//! RUN in each place users run Kiln (docs/run-sandbox.md):
//! A, root in the executor image with Docker's default seccomp (RUN in the
//! container's own root); B, root in a container with Kubernetes' default
//! (unconfined) seccomp, in the executor image; D, root on the host; E, a
//! non-root user with a subuid range; C and O, Pod Security "restricted" and
//! OpenShift's restricted-v2 (RUN traced). Each builds the same steps, and the
//! layers must be the ones D makes (D is checked against BuildKit v0.21 by the
//! differential suite). A outside Kiln's image, and a restricted Pod where
//! ptrace is denied too, cannot isolate a command and must say what to
//! change, naming the line, before anything is pushed.

mod common;

use common::*;

/// Workload 1's steps on the busybox base: create, modify, chmod, chown,
/// delete, replace a directory, links, a user's home.
const BASICS: &str = "FROM {BASE}
RUN echo hi > /hello && mkdir -p /d/e && echo x > /d/e/f && chmod 640 /d/e/f && chown 12:34 /d/e/f && ln -s /hello /link && ln /hello /hard && rm /etc/group && echo gone > /dev/null && test -e /proc/self/exe && echo one > /same-second
RUN echo two > /same-second
RUN rm -rf /d && mkdir /d && echo y > /d/new && chmod 4755 /d/new
RUN mkdir -p /home/app && chown app /home/app && chown 7:8 /etc/passwd
RUN <<EOF
#!/bin/sh
echo from a script > /script-ran
EOF
USER app
RUN id -u > ~/uid && touch ~/x
";

fn basics_context(reg: &TestRegistry) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    push_busybox_base(reg, "base:1");
    let ctx = tempfile::tempdir().unwrap();
    let df = BASICS.replace("{BASE}", &format!("{}/base:1", reg.host));
    write_context(ctx.path(), &[("Dockerfile", &df)]);
    std::fs::set_permissions(ctx.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    ctx
}

fn check_basics(got: &Pulled, host: &Pulled, setting: &str) {
    assert_eq!(
        got.layers, host.layers,
        "setting {setting}: the layers differ from the host's"
    );
    let x = &got.files["home/app/x"];
    assert_eq!(
        (x.uid, x.gid),
        (1000, 1000),
        "setting {setting}: owner of ~/x"
    );
    assert!(
        !got.files.contains_key("d/e"),
        "setting {setting}: /d was replaced"
    );
    assert_eq!(
        got.files["d/new"].mode, 0o4755,
        "setting {setting}: setuid kept"
    );
    assert!(!got.files.contains_key("etc/group"));
    // Rewritten to the same size within the second the step before wrote it.
    assert_eq!(
        got.files["same-second"].digest,
        sha256_of(b"two\n"),
        "setting {setting}: a rewrite in the same second"
    );
    // An image file whose only change is its owner (emulated where traced).
    let passwd = &got.files["etc/passwd"];
    assert_eq!(
        (passwd.uid, passwd.gid),
        (7, 8),
        "setting {setting}: owner of /etc/passwd"
    );
    assert_eq!(
        got.files["script-ran"].digest,
        sha256_of(b"from a script\n"),
        "setting {setting}: the heredoc script ran"
    );
    // One of the two names is written as a link to the other.
    let linked = got.files["hard"].hardlink == "hello" || got.files["hello"].hardlink == "hard";
    assert!(linked, "setting {setting}: /hard and /hello are one file");
    // Nothing of the executor's scratch (its process records among them: a
    // write after the step's pivot_root would land in the step's root).
    let leaked: Vec<&String> = got
        .layers
        .iter()
        .flatten()
        .filter(|e| e.contains("kiln-"))
        .collect();
    assert!(
        leaked.is_empty(),
        "setting {setting}: {leaked:?} in a layer"
    );
    for stub in ["etc/hosts", "etc/hostname", "etc/resolv.conf"] {
        assert!(
            !got.files.contains_key(stub),
            "setting {setting}: the sandbox's /{stub} leaked into the image"
        );
    }
}

#[test]
fn setting_b_root_with_unconfined_seccomp_in_the_executor_image() {
    let reg = TestRegistry::start();
    let ctx = basics_context(&reg);
    let host = Setting::D.built(&reg, ctx.path(), "basics");
    // In the executor image, the scratch dir on a volume as an emptyDir gives a Pod.
    check_basics(&Setting::B.built(&reg, ctx.path(), "basics"), &host, "B");
    let dest = format!("{}/{}", reg.host, Setting::B.repo("basics"));
    let uid = docker_run(&dest, &["cat", "/home/app/uid"]);
    assert_eq!(uid.trim(), "1000");
}

#[test]
fn setting_e_non_root_with_a_subuid_range() {
    let reg = TestRegistry::start();
    let ctx = basics_context(&reg);
    let host = Setting::D.built(&reg, ctx.path(), "basics");
    // Setting::build also fails on files owned by subordinate ids left behind.
    check_basics(&Setting::E.built(&reg, ctx.path(), "basics"), &host, "E");
}

/// A refusal: non-zero, the RUN line and the cause, nothing pushed.
fn assert_refused(out: &std::process::Output, reg: &TestRegistry, repo: &str, cause: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "built where RUN cannot be isolated");
    assert!(
        err.contains("Dockerfile:2: RUN cannot be isolated here"),
        "{err}"
    );
    assert!(err.contains(cause), "the refusal names {cause:?}: {err}");
    assert_nothing_pushed(reg, repo, "refused RUN");
}

/// Setting A (root under Docker's default seccomp, no namespaces): RUN runs
/// traced, on the stage's root with the container's capabilities; where
/// tracing is refused (here asked for with KILN_RUN_RUNG=in-place, the
/// benchmark's comparison), in the container's own root as Kaniko runs it.
/// Both give the host's layers.
#[test]
fn setting_a_docker_default_seccomp_runs_traced_or_in_place() {
    let reg = TestRegistry::start();
    let ctx = basics_context(&reg);
    let host = Setting::D.built(&reg, ctx.path(), "basics");
    let out = Setting::A.build(
        ctx.path(),
        &format!("{}/{}", reg.host, Setting::A.repo("basics")),
        &[],
    );
    assert_ok(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("RUN runs traced"), "A: {log}");
    check_basics(&pull(&reg, &Setting::A.repo("basics")), &host, "A traced");
    let out = in_executor_image(
        &["-e", "KILN_RUN_RUNG=in-place"],
        ctx.path(),
        &format!("{}/basics-inplace:1", reg.host),
    );
    assert_ok(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("in this container's own root"),
        "A in place: {log}"
    );
    let got = pull(&reg, "basics-inplace:1");
    check_basics(&got, &host, "A");
    let dest = format!("{}/{}", reg.host, Setting::A.repo("basics"));
    assert_eq!(docker_run(&dest, &["cat", "/home/app/uid"]).trim(), "1000");
    // What the executor keeps (its own directory, the context, the scratch
    // volume, the container's mounts) never reaches a layer.
    for kept in ["kaniko", "workspace", "scratch", "etc/hosts", "proc/self"] {
        assert!(
            !got.files
                .keys()
                .any(|k| k == kept || k.starts_with(&format!("{kept}/"))),
            "/{kept} leaked into the image"
        );
    }
}

#[test]
fn setting_a_copies_from_a_stage_as_the_host_does() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    // The first COPY reads the container's root, which holds stage b; the
    // second names the root itself, so it reads b's own unpacked files: in
    // neither do the executor's files or the container's mounts come along.
    let df = format!(
        "FROM {r}/base:1 AS b\nRUN echo built > /built\nFROM {r}/base:1\nCOPY --from=b /built /one\nCOPY --from=b / /all/\n",
        r = reg.host
    );
    let ctx = tempfile::tempdir().unwrap();
    write_context(ctx.path(), &[("Dockerfile", &df)]);
    let host = Setting::D.built(&reg, ctx.path(), "from");
    let got = Setting::A.built(&reg, ctx.path(), "from");
    assert_eq!(
        got.layers, host.layers,
        "setting A: the layers differ from the host's"
    );
    assert_eq!(got.files["one"].digest, sha256_of(b"built\n"));
    assert!(!got.files.contains_key("all/kaniko") && !got.files.contains_key("all/scratch"));
}

/// Root outside Kiln's image under Docker's default seccomp: the traced rung
/// never touches the container's root, so RUN runs there too; where ptrace is
/// denied as well, the container's root is not Kiln's to build in, and the
/// refusal names the change.
#[test]
fn setting_a_outside_kilns_image_runs_traced_or_names_the_change() {
    let reg = TestRegistry::start();
    let ctx = basics_context(&reg);
    let host = Setting::D.built(&reg, ctx.path(), "basics");
    let scratch = tempfile::tempdir().unwrap();
    let vol = format!("{}:/scratch", scratch.path().display());
    // The same binary in another place, without the image's marker beside it.
    let exe = format!("{}:/opt/kiln/executor:ro", static_executor().display());
    let outside = [
        "-v",
        &vol,
        "-e",
        "KANIKO_DIR=/scratch",
        "-v",
        &exe,
        "--entrypoint",
        "/opt/kiln/executor",
    ];
    let out = in_executor_image(&outside, ctx.path(), &format!("{}/traced:1", reg.host));
    assert_ok(&out);
    check_basics(&pull(&reg, "traced:1"), &host, "A outside Kiln's image");
    // No namespaces and no ptrace: a profile that denies both.
    let profile = tempfile::tempdir().unwrap();
    let file = profile.path().join("no-ptrace.json");
    std::fs::write(
        &file,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["ptrace","unshare"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", file.display());
    let args = [&outside[..], &["--security-opt", &opt]].concat();
    let out = in_executor_image(&args, ctx.path(), &format!("{}/a:1", reg.host));
    assert_refused(&out, &reg, "a:1", "seccompProfile: {type: Unconfined}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run Kiln's own image as root"), "{err}");
}

/// Pod Security "restricted" (C: uid 65532, no capabilities, no_new_privs,
/// the runtime's default seccomp), OpenShift's restricted-v2 (O: a random
/// uid, gid 0) and a host user without a subuid range (N): no namespaces and
/// no root, so RUN runs traced; the layers are
/// the host's, owners and set-id bits as the Dockerfile asked. With no volume
/// at all, the image's own /kaniko (1777) holds the scratch dir.
#[test]
fn restricted_pods_run_run_traced() {
    let reg = TestRegistry::start();
    let ctx = basics_context(&reg);
    let host = Setting::D.built(&reg, ctx.path(), "basics");
    for s in [Setting::C, Setting::O, Setting::N] {
        let out = s.build(
            ctx.path(),
            &format!("{}/{}", reg.host, s.repo("basics")),
            &[],
        );
        assert_ok(&out);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            log.contains("RUN runs traced"),
            "{s:?}: the log names the rung: {log}"
        );
        check_basics(&pull(&reg, &s.repo("basics")), &host, &format!("{s:?}"));
    }
    let restricted = Setting::C.restricted().unwrap_or_default();
    let out = in_executor_image(&restricted, ctx.path(), &format!("{}/c-own:1", reg.host));
    assert_ok(&out);
    check_basics(&pull(&reg, "c-own:1"), &host, "C without a volume");
}

/// Where ptrace is denied as well (gVisor, a profile that blocks it), no rung
/// can run: the refusal names the line, ptrace and what to change.
#[test]
fn restricted_without_ptrace_names_it() {
    let reg = TestRegistry::start();
    let ctx = basics_context(&reg);
    let profile = tempfile::tempdir().unwrap();
    let file = profile.path().join("no-ptrace.json");
    std::fs::write(
        &file,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["ptrace"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", file.display());
    let restricted = Setting::C.restricted().unwrap_or_default();
    let args = [&restricted[..], &["--security-opt", &opt]].concat();
    let out = in_executor_image(&args, ctx.path(), &format!("{}/c:1", reg.host));
    assert_refused(&out, &reg, "c:1", "ptrace is denied here");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RuntimeDefault"), "{err}");
    // At plan time: before the base's layers were fetched.
    assert!(!err.contains("downloading layer"), "{err}");
    // The same image without RUN builds.
    let df = format!("FROM {}/base:1\nCOPY Dockerfile /df\n", reg.host);
    std::fs::write(ctx.path().join("Dockerfile"), df).unwrap();
    let out = in_executor_image(&args, ctx.path(), &format!("{}/c:2", reg.host));
    assert_ok(&out);
}

/// A default Kubernetes Pod (root, seccomp Unconfined) and a privileged one,
/// neither with a volume at /kaniko: the scratch dir is on the container's
/// overlay root, where no overlay can be mounted. More permissions than
/// setting A must never mean a refusal: the step runs in its namespaces on the
/// stage's root itself, and its layers are the host's.
#[test]
fn scratch_on_the_containers_overlay_root_runs_on_the_stages_own_root() {
    let reg = TestRegistry::start();
    let ctx = basics_context(&reg);
    let host = Setting::D.built(&reg, ctx.path(), "basics");
    for (args, repo) in [
        (&["--security-opt", "seccomp=unconfined"][..], "o"),
        // `--privileged` as this host allows it: every capability but
        // CAP_SYS_RESOURCE, which the test machine's own bounding set lacks (a
        // privileged container fails to start here), no seccomp, no masked paths.
        (
            &[
                "--cap-add",
                "ALL",
                "--cap-drop",
                "SYS_RESOURCE",
                "--security-opt",
                "seccomp=unconfined",
                "--security-opt",
                "systempaths=unconfined",
            ][..],
            "p",
        ),
    ] {
        let out = in_executor_image(args, ctx.path(), &format!("{}/{repo}:1", reg.host));
        assert_ok(&out);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            log.contains("on the stage's root itself"),
            "{repo}: the log names the rung and why: {log}"
        );
        check_basics(&pull(&reg, &format!("{repo}:1")), &host, repo);
    }
}

#[test]
fn root_without_capabilities_names_the_ones_to_keep() {
    let reg = TestRegistry::start();
    let ctx = basics_context(&reg);
    let scratch = tempfile::tempdir().unwrap();
    let vol = format!("{}:/scratch", scratch.path().display());
    let out = in_executor_image(
        &[
            "--security-opt",
            "seccomp=unconfined",
            "--cap-drop",
            "ALL",
            "-v",
            &vol,
            "-e",
            "KANIKO_DIR=/scratch",
        ],
        ctx.path(),
        &format!("{}/caps:1", reg.host),
    );
    assert_refused(&out, &reg, "caps:1", "SETUID, SETGID and SETFCAP");
}

/// Every mount type but ssh, in every setting where RUN works: D mounts them
/// in the sandbox's namespaces, B and E in a user namespace's, A (no mounts
/// possible) puts their contents at the targets and takes them away again.
/// The layers must be D's, and nothing of a mount may reach one.
const MOUNTS: &str = "FROM {BASE} AS seed
RUN mkdir /s && echo seeded > /s/f
FROM {BASE}
RUN --mount=type=cache,target=/root/.cache/c echo one >> /root/.cache/c/log && cat /root/.cache/c/log > /c1
RUN --mount=type=cache,target=/root/.cache/c,sharing=locked cat /root/.cache/c/log > /c2
RUN --mount=from=seed,source=/s,target=/etc/in cat /etc/in/f > /b1
RUN --mount=target=/ctx,rw cat /ctx/data > /b2 && echo changed > /ctx/data
RUN --mount=source=data,target=/etc/group cat /etc/group > /b3
RUN --mount=type=tmpfs,target=/tmp,size=1m stat -c '%a' /tmp > /t1 && echo y > /tmp/y
RUN --mount=type=secret,id=tok,required cat /run/secrets/tok | wc -c > /s1
RUN --mount=type=secret,id=tok,env=TOK,required echo ${#TOK} > /s2
";

const SECRET: &str = "kiln-settings-secret-7f3a";

#[test]
fn run_mounts_in_every_setting() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let ctx = tempfile::tempdir().unwrap();
    let df = MOUNTS.replace("{BASE}", &format!("{}/base:1", reg.host));
    write_context(
        ctx.path(),
        &[
            ("Dockerfile", &df),
            ("data", "from the context\n"),
            ("tok", SECRET),
        ],
    );
    let build = |s: Setting| {
        let src = match s {
            Setting::A | Setting::B | Setting::C | Setting::O => "/workspace/tok".to_string(),
            _ => ctx.path().join("tok").display().to_string(),
        };
        let secret = format!("--secret=id=tok,src={src}");
        let repo = s.repo("mounts");
        let out = s.build(ctx.path(), &format!("{}/{repo}", reg.host), &[&secret]);
        assert!(
            out.status.success(),
            "setting {s:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pull(&reg, &repo)
    };
    let host = build(Setting::D);
    let expect = [
        ("c1", "one\n"),
        ("c2", "one\n"),
        ("b1", "seeded\n"),
        ("b2", "from the context\n"),
        ("b3", "from the context\n"),
        ("t1", "1777\n"),
    ];
    for (file, content) in expect {
        assert_eq!(
            host.files[file].digest,
            sha256_of(content.as_bytes()),
            "D: /{file}"
        );
    }
    for s in [Setting::A, Setting::B, Setting::E, Setting::C] {
        let got = build(s);
        assert_eq!(
            got.layers, host.layers,
            "setting {s:?}: the layers differ from D's"
        );
        for (file, content) in expect {
            assert_eq!(
                got.files[file].digest,
                sha256_of(content.as_bytes()),
                "{s:?}: /{file}"
            );
        }
        for gone in ["root/.cache", "etc/in", "ctx", "run/secrets", "tmp/y"] {
            assert!(
                !got.files.contains_key(gone),
                "{s:?}: /{gone} of a mount is in the image"
            );
        }
        assert_eq!(
            got.files["etc/group"].digest, host.files["etc/group"].digest,
            "{s:?}: the file under a bind came back"
        );
    }
    assert!(
        !registry_holds(&reg, SECRET.as_bytes()),
        "the secret is in a blob or manifest the registry holds"
    );
}
