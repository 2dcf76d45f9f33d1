//! Differential suite: each Dockerfile is built by Kiln against the same base in a
//! real registry as BuildKit v0.21 (the reference) built it; both images are
//! flattened by the oracle. Flattened filesystems (path, type, mode, owner, size,
//! content digest, link target, hard link, xattrs), every config field, the
//! platform, the history and each layer's entries must be identical.
//!
//! BuildKit's results are recorded in `testdata/references/differential/`
//! (`common::reference`); `integration/refresh-references` rebuilds them with
//! BuildKit, or checks them (`--check`) before a case is added or changed.
mod common;

use common::files::{FileServer, GitServer, Reply};
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The shared context every case builds from.
fn context(dir: &Path) {
    write_context(
        dir,
        &[
            ("a.txt", "alpha\n"),
            ("b.txt", "beta\n"),
            ("dir/x.txt", "x\n"),
            ("dir/sub/y.txt", "y\n"),
            ("dir/sub/keep.md", "keep\n"),
            ("exec.sh", "#!/bin/sh\necho exec\n"),
            ("hard1", "same inode\n"),
        ],
    );
    std::fs::set_permissions(dir.join("exec.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.join("b.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("a.txt", dir.join("link-to-a")).unwrap();
    std::os::unix::fs::symlink("../a.txt", dir.join("dir/inner-link")).unwrap();
    // Points outside the context: must resolve inside it (to nothing), never to the host.
    std::os::unix::fs::symlink("/etc/hostname", dir.join("escape")).unwrap();
    write_context(dir, &[("private/p.txt", "p\n")]);
    write_context(
        dir,
        &[
            ("ig/foo", "foo\n"),
            ("ig/bar", "bar\n"),
            ("ig/sub/baz", "baz\n"),
        ],
    );
    // The shape of Kaniko's integration context (integration/context).
    write_context(
        dir,
        &[
            ("context/foo", "hello\n"),
            ("context/bar/bam", "bam\n"),
            ("context/bar/bat", "bat\n"),
            ("context/bar/baz", "baz\n"),
            ("context/arr[0].txt", "arr\n"),
            ("context/qux", "qux\n"),
        ],
    );
    std::fs::create_dir_all(dir.join("context/empty")).unwrap();
    // The shape of BuildKit's testCopySymlinks / testCopyThroughSymlinkContext /
    // testCopySocket (frontend/dockerfile/dockerfile_copy_test.go).
    write_context(
        dir,
        &[
            ("bk/bar", "bar-contents"),
            ("bk/sub/lfile", "lfile-contents"),
            ("bk/sub/subfile", "subfile-contents"),
            ("bk/sub/baz", "baz-contents"),
        ],
    );
    for (target, link) in [
        ("bar", "bk/foo"),
        ("subfile", "bk/sub/l0"),
        ("second", "bk/sub/l1"),
        ("baz", "bk/sub/second"),
        ("sub", "bk/link"),
    ] {
        std::os::unix::fs::symlink(target, dir.join(link)).unwrap();
    }
    std::fs::create_dir_all(dir.join("sock")).unwrap();
    let socket = std::os::unix::net::UnixListener::bind(dir.join("sock/socket.sock")).unwrap();
    std::mem::forget(socket);
    std::fs::set_permissions(dir.join("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir_all(dir.join("hl")).unwrap();
    std::fs::hard_link(dir.join("hard1"), dir.join("hl/hard2")).unwrap();
    std::fs::hard_link(dir.join("hard1"), dir.join("hl/hard3")).unwrap();
    common::archives::write_fixtures(&dir.join("arch"));
}

/// BuildKit v0.21, the reference: builds the case and pushes it to the test
/// registry; the oracle pulls it like Kiln's image.
fn buildkit(
    reg: &TestRegistry,
    ctx: &Path,
    name: &str,
    case: &Case,
    secrets: &[String],
) -> Result<Pulled, String> {
    let image = format!("{}/bk-{name}:1", reg.host);
    let mut cmd = buildkit_command(ctx, &ctx.join(case.dockerfile_name), &image);
    for s in secrets {
        cmd.args(["--secret", s]);
    }
    for (k, v) in &case.build_args {
        cmd.args(["--opt", &format!("build-arg:{k}={v}")]);
    }
    if let Some(p) = case.platform {
        cmd.args(["--opt", &format!("platform={p}")]);
    }
    let out = cmd.output().expect("run BuildKit");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(pull(reg, &format!("bk-{name}:1")))
}

/// BuildKit's result for a case, as recorded: the image, or its refusal.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
enum Outcome {
    Built(Image),
    Refused(String),
}

/// Every field of either object that differs (absent and `null` are the same to
/// Go), except those in `skip`.
fn field_diffs(
    want: &serde_json::Value,
    got: &serde_json::Value,
    prefix: &str,
    skip: &[&str],
    diffs: &mut Vec<String>,
) {
    let null = serde_json::Value::Null;
    let mut keys: Vec<&String> = want
        .as_object()
        .into_iter()
        .chain(got.as_object())
        .flat_map(|o| o.keys())
        .filter(|k| !skip.contains(&k.as_str()))
        .collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let (a, b) = (want.get(k).unwrap_or(&null), got.get(k).unwrap_or(&null));
        if a != b {
            diffs.push(format!("{prefix}{k}: BuildKit {a} Kiln {b}"));
        }
    }
}

/// What Kiln and BuildKit must agree on in a config: every field of `config`
/// (absent and `null` are the same to Go), the platform, and the history.
fn config_diffs(want: &serde_json::Value, got: &serde_json::Value) -> Vec<String> {
    let mut diffs = Vec::new();
    field_diffs(&want["config"], &got["config"], "config ", &[], &mut diffs);
    // Every top-level field but the times, the history and the layers (below).
    field_diffs(
        want,
        got,
        "",
        &["created", "history", "rootfs", "config"],
        &mut diffs,
    );
    let history = |v: &serde_json::Value| -> Vec<(String, bool, String)> {
        v["history"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| {
                (
                    h["created_by"].as_str().unwrap_or("").to_string(),
                    h["empty_layer"].as_bool().unwrap_or(false),
                    h["comment"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    if history(want) != history(got) {
        diffs.push(format!(
            "history: BuildKit {:?} Kiln {:?}",
            history(want),
            history(got)
        ));
    }
    let layers = |v: &serde_json::Value| v["rootfs"]["diff_ids"].as_array().map_or(0, Vec::len);
    if layers(want) != layers(got) {
        diffs.push(format!(
            "layers: BuildKit {} Kiln {}",
            layers(want),
            layers(got)
        ));
    }
    diffs
}

/// What Kiln's message must say for each case BuildKit refuses.
fn refusal_cause(name: &str, bk_err: &str) -> &'static str {
    match name {
        "copy_symlink_out_of_context_is_refused" => "escape",
        "copy_from_later_stage_is_refused" => "--from=b",
        "unknown_instruction_is_refused" => "unknown instruction: FROBNICATE",
        "env_without_value_is_refused" => "ENV",
        "missing_source_is_refused" => "nothere",
        "run_failure_is_refused" => "exit code: 3",
        "add_archive_hard_link_out_of_the_root_is_refused" => "/etc/passwd",
        "add_archive_symlink_loop_is_refused" => "too many levels of symbolic links",
        "add_has_no_from_flag" => "unknown flag: --from",
        "run_mount_required_secret_is_refused" => "secret nope: not found",
        "run_mount_unknown_type_is_refused" => "unsupported mount type \"bogus\"",
        "run_mount_missing_source_is_refused" => "/nothere",
        "run_security_flag_is_refused" => "unknown flag: --security",
        "dockerignore_bare_exclusion_is_refused" => {
            ".dockerignore:3: illegal exclusion pattern: \"!\""
        }
        other => panic!("{other}: BuildKit refused a case not listed as a refusal: {bk_err}"),
    }
}

/// One differential case: a Dockerfile and how to build it.
struct Case {
    name: &'static str,
    dockerfile: &'static str,
    dockerfile_name: &'static str,
    dockerignore: Option<(&'static str, &'static str)>,
    build_args: Vec<(&'static str, &'static str)>,
    /// `--custom-platform` for Kiln, `--opt platform=` for BuildKit.
    platform: Option<&'static str>,
    /// Extra fields of the base image's config (see `push_image_layers`).
    base_config: serde_json::Value,
    /// Files a loopback HTTP server serves while both build, at `{HTTP}`.
    http: Vec<(&'static str, Reply)>,
    /// `--secret id=ID,src=FILE` for both builders: (id, value).
    secrets: Vec<(&'static str, &'static str)>,
    /// Pushes more images to the case's registry before both build.
    images: Option<fn(&TestRegistry)>,
}

impl Case {
    fn new(name: &'static str, dockerfile: &'static str) -> Case {
        Case {
            name,
            dockerfile,
            dockerfile_name: "Dockerfile",
            dockerignore: None,
            build_args: Vec::new(),
            platform: None,
            base_config: serde_json::json!({}),
            http: Vec::new(),
            secrets: Vec::new(),
            images: None,
        }
    }
}

fn differential(name: &'static str, dockerfile: &'static str, dockerignore: Option<&'static str>) {
    let mut case = Case::new(name, dockerfile);
    case.dockerignore = dockerignore.map(|d| (".dockerignore", d));
    run_case(&case);
}

/// The inputs a recording is made from, as the case states them.
fn inputs(case: &Case) -> String {
    let mut text = format!("{}:\n{}", case.dockerfile_name, case.dockerfile);
    if let Some((file, content)) = case.dockerignore {
        text += &format!("{file}:\n{content}");
    }
    for (k, v) in &case.build_args {
        text += &format!("--build-arg {k}={v}\n");
    }
    if let Some(p) = case.platform {
        text += &format!("--platform {p}\n");
    }
    for (id, value) in &case.secrets {
        text += &format!("--secret {id}={value}\n");
    }
    if case.base_config != serde_json::json!({}) {
        text += &format!("base config {}\n", case.base_config);
    }
    text
}

/// Builds `case` with Kiln and fails on any difference from BuildKit's
/// recorded result; the two images (BuildKit's, Kiln's) when BuildKit builds it.
fn run_case(case: &Case) -> Option<(Image, Image)> {
    let name = case.name;
    let reg = TestRegistry::start();
    push_busybox_base_with(&reg, "base:1", case.base_config.clone());
    if let Some(push) = case.images {
        push(&reg);
    }
    let ctx = tempfile::tempdir().unwrap();
    context(ctx.path());
    let server = FileServer::start(&case.http);
    let git = case.dockerfile.contains("{GIT").then(GitServer::start);
    let mut df = case
        .dockerfile
        .replace("{BASE}", &format!("{}/base:1", reg.host))
        .replace("{REG}", &reg.host)
        .replace("{HTTP}", &server.base);
    if let Some(g) = &git {
        df = df.replace("{GIT}", &g.url).replace("{GIT_V1}", &g.v1);
    }
    std::fs::write(ctx.path().join(case.dockerfile_name), &df).unwrap();
    if let Some((file, content)) = case.dockerignore {
        std::fs::write(ctx.path().join(file), content).unwrap();
    }
    // Secrets live outside the context, as a CI job's would.
    let secret_dir = tempfile::tempdir().unwrap();
    let secrets: Vec<String> = case
        .secrets
        .iter()
        .map(|(id, value)| {
            let file = secret_dir.path().join(id);
            std::fs::write(&file, value).unwrap();
            format!("id={id},src={}", file.display())
        })
        .collect();
    // What differs between two runs of a case: the servers' ports (in the
    // config, and in the Dockerfile a case copies), the commit ids of the
    // repository GitServer makes, the host's busybox.
    let mut ph = Placeholders::default()
        .text(&reg.host, "{REG}")
        .text(&server.base, "{HTTP}")
        .content(df.as_bytes(), "{DOCKERFILE}")
        .busybox();
    if let Some(g) = &git {
        ph = ph.text(&g.url, "{GIT}").text(&g.v1, "{GIT_V1}");
    }
    let reference = recorded("differential", name, &inputs(case), || {
        match buildkit(&reg, ctx.path(), name, case, &secrets) {
            Ok(p) => Outcome::Built(Image::of(&p, &ph, 0, &[])),
            Err(e) => Outcome::Refused(reference::refusal(&e, &ph)),
        }
    });
    let dest = format!("{}/diff-{name}:1", reg.host);
    let dockerfile = ctx.path().join(case.dockerfile_name);
    let mut args = vec![
        "--context".to_string(),
        ctx.path().display().to_string(),
        "--dockerfile".into(),
        dockerfile.display().to_string(),
        "--destination".into(),
        dest.clone(),
    ];
    for (k, v) in &case.build_args {
        args.push("--build-arg".into());
        args.push(format!("{k}={v}"));
    }
    if let Some(p) = case.platform {
        args.push(format!("--custom-platform={p}"));
    }
    for s in &secrets {
        args.push(format!("--secret={s}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = executor(&args);
    let bk = match reference {
        Outcome::Built(r) => r,
        Outcome::Refused(bk_err) => {
            let kiln_err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success(),
                "{name}: BuildKit refused ({bk_err}) but Kiln built it"
            );
            // The same line, and the cause each refusal case names.
            let line = |text: &str| {
                text.split("Dockerfile:")
                    .nth(1)
                    .map(|r| {
                        r.chars()
                            .take_while(char::is_ascii_digit)
                            .collect::<String>()
                    })
                    .filter(|n| !n.is_empty())
            };
            let bk_line = line(&bk_err);
            // A `.dockerignore` refusal names no Dockerfile line in either.
            assert!(
                (bk_line.is_some() || case.dockerignore.is_some()) && line(&kiln_err) == bk_line,
                "{name}: BuildKit names Dockerfile:{bk_line:?}, Kiln: {kiln_err}\nBuildKit: {bk_err}"
            );
            let cause = refusal_cause(name, &bk_err);
            assert!(
                kiln_err.contains(cause),
                "{name}: Kiln's refusal names {cause:?}: {kiln_err}"
            );
            return None;
        }
    };
    assert_ok(&out);
    let kiln = Image::of(&pull(&reg, &format!("diff-{name}:1")), &ph, 0, &[]);
    let mut diffs = Vec::new();
    for (path, want) in &bk.files {
        match kiln.files.get(path) {
            None => diffs.push(format!("missing in Kiln: {path} {want:?}")),
            Some(got) if got != want => {
                diffs.push(format!("{path}: BuildKit {want:?} Kiln {got:?}"))
            }
            _ => {}
        }
    }
    for path in kiln.files.keys().filter(|p| !bk.files.contains_key(*p)) {
        diffs.push(format!("extra in Kiln: {path} {:?}", kiln.files[path]));
    }
    diffs.extend(config_diffs(&bk.raw_config, &kiln.raw_config));
    // Layer by layer too: an image store that unpacks each layer on its own
    // (Docker's overlay2) shows a parent a layer leaves out as root's 0755.
    for (i, (want, got)) in bk.layers.iter().zip(&kiln.layers).enumerate() {
        if want != got {
            diffs.push(format!(
                "layer {i}: BuildKit has\n  {}\nKiln has\n  {}",
                want.join("\n  "),
                got.join("\n  ")
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{name}: Kiln differs from BuildKit:\n{}",
        diffs.join("\n")
    );
    Some((bk, kiln))
}

macro_rules! cases {
    ($($name:ident: $df:expr $(, ignore = $ig:expr)?;)*) => {
        $(
            #[test]
            fn $name() {
                #[allow(unused_mut, unused_assignments)]
                let mut ig: Option<&str> = None;
                $(ig = Some($ig);)?
                differential(stringify!($name), $df, ig);
            }
        )*
    };
}

cases! {
    run_changes_files_links_owners: "FROM {BASE}\nRUN echo hello > /hello.txt && mkdir -p /d/e && echo x > /d/e/f && chmod 640 /d/e/f && chown 12:34 /d/e/f\nRUN ln -s /hello.txt /link && ln /hello.txt /hard\n";
    run_deletes_and_replaces_directories: "FROM {BASE}\nRUN mkdir -p /d/old && echo 1 > /d/old/f && echo 2 > /d/keep\nRUN rm -rf /d && mkdir /d && echo y > /d/new && rm /etc/group\n";
    run_shell_exec_env_and_workdir: "FROM {BASE}\nARG V=1\nENV E=2\nRUN echo \"$V $E $HOME $PATH\" > /env.txt\nRUN [\"/bin/sh\", \"-c\", \"id -u > /uid; pwd > /pwd\"]\nWORKDIR /w\nRUN pwd > /w/pwd && hostname > /w/host\nSHELL [\"/bin/sh\", \"-ec\"]\nRUN echo shell > /w/shell\n";
    run_heredocs: "FROM {BASE}\nRUN <<EOF\necho a > /a\nEOF\nRUN <<EOF\n#!/bin/sh\necho b > /b\nEOF\nRUN cat > /c <<A && cat > /d <<B\n1\nA\n2\nB\n";
    run_as_user: "FROM {BASE}\nRUN busybox mkdir -p /home/app && busybox chown app:app /home/app && echo extra:x:555:app >> /etc/group\nUSER app\nRUN id > ~/id && busybox touch ~/x && echo $HOME > ~/home\nUSER 4321\nRUN id > /tmp/id-4321 && echo $HOME > /tmp/home-4321\nUSER root\nRUN stat -c \"%a %u %g %n\" /home/app /home/app/* > /owners\n";
    run_layers_carry_parents_and_times: "FROM {BASE}\nRUN mkdir -p /a/b/c && echo x > /a/b/c/f && echo y > /a/b/c/g && touch -d \"2020-01-01 00:00:00\" /a/b/c /a/b /a\nRUN rm /a/b/c/f\nRUN touch -d \"2021-01-01 00:00:00\" /a/b/c/g\nRUN mkdir -p /o/p/r && touch /o/p/q /o/p/r/s && touch -d \"2019-01-01 00:00:00\" /o/p/r /o/p /o\nRUN rm -rf /o && mkdir -p /o/p && echo n > /o/p/new\n";
    run_failure_is_refused: "FROM {BASE}\nRUN true\nRUN exit 3\n";
    run_rewrites_a_file_in_the_same_second: "FROM {BASE}\nRUN echo a > /f && echo a > /g && chmod 600 /g\nRUN echo b > /f && cat /g > /dev/null && echo c >> /g\nRUN ln /f /f-link\n";
    run_mount_bind_context: "FROM {BASE}\nWORKDIR /w\nRUN --mount=target=/ctx cat /ctx/a.txt /ctx/dir/x.txt > /seen && stat -c '%a %s %n' /ctx/b.txt /ctx/exec.sh /ctx/dir >> /seen && ls /ctx/ig >> /seen\nRUN --mount=source=dir,target=rel,rw echo new > rel/x.txt && cat rel/x.txt > /w/written && ls rel >> /w/written\nRUN --mount=source=a.txt,target=/etc/mounted.txt cat /etc/mounted.txt > /etc/copy\nRUN --mount=source=link-to-a,target=/l cat /l > /via-link\n", ignore = "ig/foo\n";
    run_mount_bind_from_stage: "FROM {BASE} AS build\nRUN mkdir /out && echo built > /out/f && ln -s f /out/l && chmod 640 /out/f\nFROM {BASE}\nRUN --mount=from=build,source=/out,target=/in cat /in/f /in/l > /copied && ls /in > /listed && stat -c '%a %n' /in/f >> /listed\nRUN --mount=from=build,target=/b,rw rm -rf /b/out && echo x > /b/new && ls /b/out 2> /gone; true\n";
    run_mount_cache: "FROM {BASE} AS seed\nRUN mkdir -p /s && echo seeded > /s/f\nFROM {BASE}\nRUN --mount=type=cache,target=/c,mode=0700,uid=5,gid=6 stat -c '%a %u %g' /c > /c1 && echo one > /c/f\nRUN --mount=type=cache,target=/c,mode=0700,uid=5,gid=6 cat /c/f > /c2\nRUN --mount=type=cache,id=diff-other,target=/root/.cache/x stat -c '%a %u %g' /root/.cache/x > /c3\nRUN --mount=type=cache,from=seed,source=/s,target=/var/cache/s,sharing=locked cat /var/cache/s/f > /c4\nRUN --mount=type=cache,target=/tmp/p,sharing=private stat -c '%a %u %g' /tmp/p > /c5\n";
    run_makes_device_nodes: "FROM {BASE}\nRUN mknod /c c 1 3 && mknod -m 600 /b b 7 0 && mkdir /d && cd /d && mknod rel c 1 5 && chown 5:6 rel && mknod gone c 1 7 && rm gone && mknod again c 1 8 && rm again && echo file > again\n";
    run_mount_tmpfs_replaces_dev_shm: "FROM {BASE}\nRUN --mount=type=tmpfs,target=/dev/shm,size=128m /usr/bin/busybox grep -c ' /dev/shm ' /proc/mounts > /shm && /usr/bin/busybox df -k /dev/shm | /usr/bin/busybox tail -1 | /usr/bin/busybox awk '{print $2}' >> /shm\n";
    run_mount_tmpfs: "FROM {BASE}\nRUN --mount=type=tmpfs,target=/scratch,size=1m stat -c '%a %u %g' /scratch > /t1 && echo x > /scratch/f && ls /scratch >> /t1\nRUN --mount=type=tmpfs,target=/tmp ls -A /tmp > /t2 && echo y > /tmp/gone\n";
    run_mount_unknown_type_is_refused: "FROM {BASE}\nRUN --mount=type=bogus,target=/x true\n";
    run_mount_missing_source_is_refused: "FROM {BASE}\nRUN true\nRUN --mount=source=nothere,target=/x true\n";
    run_background_process_is_killed: "FROM {BASE}\nRUN (sleep 100; echo late > /late) & echo now > /now\nRUN test ! -e /late && echo ok > /checked\n";
    copy_file_into_dir: "FROM {BASE}\nCOPY a.txt /dst/\n";
    copy_file_renamed: "FROM {BASE}\nCOPY a.txt /dst/renamed\n";
    copy_dir_copies_contents: "FROM {BASE}\nCOPY dir /dst\n";
    copy_private_dir_modes: "FROM {BASE}\nCOPY private /p\nCOPY private /q/private/\nCOPY . /all/\n";
    copy_several_sources: "FROM {BASE}\nCOPY a.txt b.txt dir /dst/\n";
    copy_glob: "FROM {BASE}\nCOPY *.txt /g/\n";
    copy_glob_in_subdir: "FROM {BASE}\nCOPY dir/s?b/*.txt dir/*.txt /g/\n";
    copy_top_symlink_is_followed: "FROM {BASE}\nCOPY link-to-a /l\n";
    copy_keeps_modes: "FROM {BASE}\nCOPY exec.sh b.txt /m/\n";
    copy_chown_numeric_chmod: "FROM {BASE}\nCOPY --chown=1000:50 --chmod=0640 a.txt /o/a\n";
    copy_chown_names: "FROM {BASE}\nCOPY --chown=app:staff dir /home/app/\n";
    copy_chown_user_only: "FROM {BASE}\nCOPY --chown=app a.txt /home/app/a\n";
    copy_hardlinks: "FROM {BASE}\nCOPY hl /hl/\n";
    copy_through_symlinked_parents: "FROM {BASE}\nCOPY a.txt /bin/\nCOPY b.txt /var/run/b\n";
    copy_dot_to_workdir: "FROM {BASE}\nWORKDIR /w\nCOPY a.txt .\nCOPY dir ./d/\n";
    workdir_relative_chain: "FROM {BASE}\nWORKDIR a\nWORKDIR b\nWORKDIR ../c\nCOPY a.txt ./\n";
    workdir_existing_dir: "FROM {BASE}\nWORKDIR /usr/local\nWORKDIR /usr/local/app\n";
    workdir_as_user: "FROM {BASE}\nUSER app\nWORKDIR /data/app\n";
    dockerignore_rules: "FROM {BASE}\nCOPY . /ctx/\n", ignore = "*.txt\ndir/sub\n!dir/sub/keep.md\nDockerfile\n.dockerignore\n";
    args_and_env_expansion: "ARG V=1\nFROM {BASE}\nARG V\nARG W=${V}-w\nENV A=$V B=${W:-x} C=${UNSET:-dflt}\nWORKDIR /w/$A\nLABEL l=$B other=\"two words\"\nUSER ${A}000\nEXPOSE 80 53/udp\nVOLUME /v1 [\"/v2\"]\nSTOPSIGNAL SIGKILL\n";
    env_old_form_and_quotes: "FROM {BASE}\nENV A hello world\nENV B=\"q u\" C='s q' D=e\\ sc\n";
    entrypoint_resets_cmd: "FROM {BASE}\nCMD [\"a\"]\nENTRYPOINT [\"b\"]\n";
    cmd_after_entrypoint: "FROM {BASE}\nENTRYPOINT echo hi\nCMD [\"x\", \"y\"]\n";
    shell_changes_shell_form: "FROM {BASE}\nSHELL [\"/bin/sh\", \"-ec\"]\nCMD echo hi\n";
    escape_directive: "# escape=`\nFROM {BASE}\nCOPY a.txt `\n  b.txt /e/\nENV P=c:\\dir\n";
    multi_stage_copy_from: "FROM {BASE} AS one\nCOPY dir /src/\nFROM {BASE} AS unused\nCOPY a.txt /never\nFROM scratch\nCOPY --from=one /src/sub /s\nCOPY --from=0 /usr/bin/busybox /bb\n";
    from_previous_stage: "FROM {BASE} AS one\nENV FROM_ONE=1\nCOPY a.txt /one/\nFROM one\nCOPY b.txt /two/\n";
    copy_onto_symlink_to_dir: "FROM {BASE}\nCOPY a.txt /bin\nCOPY dir /var/run\n";
    copy_replaces_existing_file: "FROM {BASE}\nCOPY a.txt /etc/passwd\nCOPY b.txt /usr/bin/sh\n";
    copy_parent_path_stays_in_context: "FROM {BASE}\nCOPY ../a.txt ../../dir/x.txt /x/\n";
    copy_symlink_out_of_context_is_refused: "FROM {BASE}\nCOPY escape /x\n";
    copy_from_later_stage_is_refused: "FROM {BASE} AS a\nCOPY --from=b /etc/passwd /p\nFROM {BASE} AS b\n";
    unknown_instruction_is_refused: "FROM {BASE}\nFROBNICATE x\n";
    env_without_value_is_refused: "FROM {BASE}\nENV ONLYKEY\n";
    missing_source_is_refused: "FROM {BASE}\nCOPY nothere /x\n";
    empty_glob_copies_nothing: "FROM {BASE}\nCOPY *.none /x/\nCOPY *.none a.txt /y/\nCOPY *.none /z\n";
    copy_heredocs: "FROM {BASE}\nENV NAME=kiln\nCOPY <<EOF /expanded\nhello $NAME\nEOF\nCOPY <<'EOF' /literal\nhello $NAME\nEOF\nCOPY <<-EOT <<EOF2 /hd/\n\tindented\n\tEOT\ntwo\nEOF2\n";
    // Issue 31: a heredoc body is file content, so only variables expand.
    copy_chmod_and_chown_on_created_parents: "FROM {BASE}\nCOPY --chmod=0750 a.txt /n1/n2/f\nCOPY --chown=7:8 a.txt /m1/m2/f\nCOPY --chmod=600 --chown=app dir /n1/d/\n";
    onbuild_maintainer_healthcheck_free: "FROM {BASE}\nONBUILD COPY a.txt /x\nMAINTAINER me <me@example.com>\nSTOPSIGNAL 9\nUSER app:staff\nVOLUME [\"/a\", \"/b\"]\n";
    several_sources_onto_one_path: "FROM {BASE}\nCOPY a.txt b.txt /out\nCOPY <<A <<B /here\none\nA\ntwo\nB\n";
    workdir_root_adds_no_layer: "FROM {BASE}\nWORKDIR /\nWORKDIR /usr\nWORKDIR /\n";
    unused_stage_behind_a_variable_from: "ARG PREFIX=\nFROM {REG}/not-pushed:1 AS unused\nFROM ${PREFIX}{BASE}\nCOPY a.txt /\n";
    copy_link_makes_the_layer_on_its_own: "FROM {BASE}\nCOPY --link a.txt dir /l/\nCOPY --link b.txt /bin/b\n";
    copy_symbolic_chmod: "FROM {BASE}\nCOPY --chmod=u+x,go=r b.txt /s\nCOPY --chmod=a+X,g-w dir /dd/\nCOPY --chmod=go=u-w exec.sh /new/t\nCOPY --chmod=o= private /p/\n";
    dockerignore_reincludes: "FROM {BASE}\nCOPY ig/* /x/\nCOPY . /all/\nCOPY ig /d/\n", ignore = "ig/**\n!ig/foo\n";
    dockerignore_double_star_forms: "FROM {BASE}\nCOPY . /all/\n", ignore = "**/x.txt\n**/sub/**\n!**/keep.md\nig/**/baz\nhl/\n";
    onbuild_heredoc: "FROM {BASE} AS one\nONBUILD COPY <<EOF /hd\nhello\nEOF\nFROM one\nONBUILD COPY <<EOF <<-EOT /kept/\nx\nEOF\n\ty\n\tEOT\n";
    onbuild_of_an_earlier_stage_runs: "FROM {BASE} AS one\nONBUILD COPY b.txt /from-one/\nONBUILD ENV T=1\nFROM one\nCOPY a.txt /\nFROM one AS again\n";
    // Kaniko's integration/dockerfiles, their COPY/ENV/EXPOSE parts, offline.
    kaniko_test_copy: "FROM {BASE}\nCOPY context/foo foo\nCOPY context/foo /foodir/\nCOPY context/bar/b* bar/\nCOPY context/fo? /foo2\nCOPY context/bar/doesnotexist* context/foo hello\nCOPY ./context/empty /empty\nCOPY ./ dir/\nCOPY . newdir\nCOPY context/bar /baz/\nCOPY [\"context/foo\", \"/tmp/foo\" ]\nCOPY context/q* /qux/\nCOPY context/foo context/bar/ba? /test/\nCOPY context/arr[[]0].txt /mydir/\nCOPY context/bar/bat .\nCOPY --chown=10000:10000 context/foo /test/path/doesnot/exists/\nENV contextenv ./context\nCOPY ${contextenv}/foo /tmp/foo2\nCOPY $contextenv/foo /tmp/foo3\nCOPY $contextenv/* /tmp/${contextenv}/\n";
    kaniko_test_env: "FROM {BASE}\nENV hey hey\nENV PATH /usr/local\nENV testmultipleeq=\"this=is a=test string=with a=lot of=equals\"\nENV hey hello\nENV first=foo second=foo2\nENV third $second:/third\nENV myName=\"John Doe\" myDog=Rex\\ The\\ Dog \\\n    myCat=fluffy\nENV PATH something\nENV test=value\\ value2\nENV test1=\"a'b'c\"\nENV test2='a\"b\"c'\nENV test3=a\\ b name2=b\\ c\nENV test4=\"a\\\"b\"\nENV test5='a\\\"b'\nENV test6=\"a\\'b\"\nENV atomic=one\nENV atomic=two newatomic=$atomic\nENV newenv=$doesntexist/newenv\n";
    kaniko_test_expose: "FROM {BASE}\nEXPOSE 80\nEXPOSE 81/udp\nENV protocol tcp\nEXPOSE 82/$protocol\nENV port 83\nEXPOSE $port/udp\nEXPOSE $port/$protocol\n";
    kaniko_test_issue_workdir: "FROM {BASE}\nWORKDIR /app\nWORKDIR /\n";
    // BuildKit's own copy tests, offline.
    buildkit_copy_symlinks: "FROM scratch\nCOPY bk/foo /\nCOPY bk/sub/l* alllinks/\n";
    buildkit_copy_through_symlink_context: "FROM scratch\nCOPY bk/link/lfile .\n";
    buildkit_copy_empty_wildcard: "FROM scratch\nCOPY bk/bar nomatch* /\n";
    buildkit_copy_socket: "FROM scratch\nCOPY sock /\n";
    arg_history_and_platform_args: "ARG G=g\nFROM {BASE}\nARG G\nARG TARGETPLATFORM\nARG NOVALUE\nARG X=$G-x Y\nENV E=$X\n";
    // ADD: local sources as COPY has them, archives unpacked by content.
    add_local_sources_as_copy: "FROM {BASE}\nADD a.txt /dst/\nADD dir /d\nADD --chown=app:staff --chmod=u+x,go=r *.txt /g/\nADD link-to-a /l\nADD hl /hl/\nADD --link b.txt /bin/b\nENV X=x\nADD <<EOF /hd\nhi $X\nEOF\nADD . /all/\n", ignore = "ig\narch/*.tar*\n";
    add_archives_unpack_by_content: "FROM {BASE}\nADD arch/sample.tar /p/\nADD arch/sample.tar.gz /g\nADD arch/sample.tar.bz2 arch/sample.tar.xz arch/sample.tar.zst /multi/\nADD arch/fake.tar.gz arch/empty.tar /notarchives/\nADD --chown=7:8 --chmod=600 arch/sample.tar.gz a.txt /chown/\nADD arch/sample.tar /etc/\nADD arch/sample.tar.gz /bin/unpacked/\nADD arch/sample.tar.gz /bin\n";
    add_archive_directory_is_copied_whole: "FROM {BASE}\nADD arch /arch-copy/\nADD arch/sample.tar* /globbed/\n";
    add_hostile_archives_stay_in_the_destination: "FROM {BASE}\nADD arch/dotdot.tar /d1/\nADD arch/abs.tar /d2/\nADD arch/through.tar /d3/\n";
    add_archive_hard_link_out_of_the_root_is_refused: "FROM {BASE}\nADD arch/hardout.tar /d/\n";
    add_archive_symlink_loop_is_refused: "FROM {BASE}\nADD arch/loop.tar /d/\n";
    add_has_no_from_flag: "FROM {BASE} AS s\nFROM {BASE}\nADD --from=s /etc/passwd /p\n";
    // A repository served over smart HTTP by `git http-backend`: a tag, a
    // branch's subdirectory, the default branch with --chown, a commit id.
    add_git_sources: "FROM {BASE}\nADD {GIT}#v1 /src/\nADD {GIT}#main:sub /sub/\nADD --chown=7:8 {GIT} /own\nADD {GIT}#{GIT_V1} /bycommit/\n";
}

/// ADD's URL sources against BuildKit: the file name from the URL path (or
/// `__unnamed__`), 0600 and the `Last-Modified` time, `--chown`/`--chmod`, a
/// `.tar.gz` left packed, `--checksum`, and a redirect followed.
#[test]
fn add_url_sources() {
    let tool = b"tool-bytes\n".to_vec();
    let digest = sha256_of(&tool);
    let archive = common::archives::gzip(&common::archives::sample());
    let modified = Some("Wed, 03 Feb 2016 04:05:06 GMT");
    let mut case = Case::new(
        "add_url_sources",
        "FROM {BASE}\nADD {HTTP}/dir/tool /usr/local/bin/\nADD {HTTP}/dir/tool /r/renamed\nADD --chmod=755 --chown=7:8 {HTTP}/dir/tool /c/\nADD --chmod=u+x {HTTP}/dir/tool /sym/\nADD {HTTP}/ /idx/\nADD {HTTP}/dir/a.tar.gz /arch/\nADD --checksum=SUM {HTTP}/dir/tool /sum/\nADD {HTTP}/moved /etc\nADD {HTTP}/dir/tool a.txt /mixed/\n",
    );
    let df = case.dockerfile.replace("SUM", &digest);
    case.dockerfile = Box::leak(df.into_boxed_str());
    case.http = vec![
        ("/dir/tool", Reply::File(tool.clone(), modified)),
        ("/", Reply::File(b"index\n".to_vec(), None)),
        ("/dir/a.tar.gz", Reply::File(archive, modified)),
        ("/moved", Reply::Redirect("/dir/tool")),
    ];
    run_case(&case);
}

/// `RUN --mount=type=secret`: the default path, a target with mode and owner,
/// a variable, an absent secret left out; nothing of it in any layer.
#[test]
fn run_mount_secret() {
    let mut case = Case::new(
        "run_mount_secret",
        "FROM {BASE}\nRUN --mount=type=secret,id=tok stat -c '%a %u %g %s %n' /run/secrets/tok > /s1 && ls -A /run > /s1run\nRUN --mount=type=secret,id=tok,target=/etc/deep/tok,mode=0440,uid=7,gid=8 stat -c '%a %u %g %s %n' /etc/deep/tok > /s2\nRUN --mount=type=secret,id=tok,env=TOK sh -c 'echo ${#TOK} > /s3; test -e /run/secrets/tok || echo nofile >> /s3'\nRUN --mount=type=secret,id=absent ls -A /run > /s4\nRUN --mount=type=secret,source=tok,target=rel cat /rel > /s5\n",
    );
    case.secrets = vec![("tok", "s3cr3t-differential\n")];
    run_case(&case);
}

/// A required secret that was not given stops the build at its line.
#[test]
fn run_mount_required_secret_is_refused() {
    differential(
        "run_mount_required_secret_is_refused",
        "FROM {BASE}\nRUN true\nRUN --mount=type=secret,id=nope,required true\n",
        None,
    );
}

/// `COPY --exclude` (BuildKit v0.21 takes it only under the labs syntax, which the
/// offline lab cannot pull, so Kiln is checked against the Dockerfile reference):
/// patterns match paths relative to each source; a matched directory goes whole.
#[test]
fn copy_exclude_drops_what_it_names() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let ctx = tempfile::tempdir().unwrap();
    context(ctx.path());
    let df = format!(
        "FROM {}/base:1\nCOPY --exclude=*.txt --exclude=dir/sub . /x/\nCOPY --exclude=sub/*.md dir /d/\nCOPY --exclude=*.sh exec.sh a.txt /f/\n",
        reg.host
    );
    std::fs::write(ctx.path().join("Dockerfile"), df).unwrap();
    assert_ok(&build_with(
        ctx.path(),
        &format!("{}/exclude:1", reg.host),
        &[],
    ));
    let img = pull(&reg, "exclude:1");
    let x = img.under("x");
    assert!(!x.iter().any(|p| p == "a.txt" || p == "b.txt"), "{x:?}");
    assert!(
        x.contains(&"dir/x.txt".to_string()),
        "only top-level *.txt: {x:?}"
    );
    assert!(
        x.contains(&"dir".to_string()) && !x.iter().any(|p| p.starts_with("dir/sub")),
        "{x:?}"
    );
    assert!(x.contains(&"exec.sh".to_string()), "{x:?}");
    assert_eq!(img.under("d"), ["inner-link", "sub", "sub/y.txt", "x.txt"]);
    assert_eq!(img.under("f"), ["a.txt"]);
}

/// A Dockerfile without instructions is refused, naming the line and the cause.
#[test]
fn empty_dockerfile_is_refused() {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Empty.Dockerfile"), "# only a comment\n").unwrap();
    let out = executor(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--no-push",
        "--dockerfile",
        "Empty.Dockerfile",
    ]);
    assert!(
        !out.status.success(),
        "a Dockerfile without instructions is refused"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile:1: file with no instructions") && !err.trim_end().ends_with(':'),
        "{err}"
    );
}

#[test]
fn build_args_override_and_scope() {
    let mut c = Case::new(
        "build_args_override_and_scope",
        "ARG V=default\nARG G=global\nFROM {BASE}\nARG V\nARG W=w\nENV V=$V W=$W G=${G:-not-visible}\nARG G\nENV G2=$G\nENV A=env\nARG A=arg\nENV B=$A\n",
    );
    c.build_args = vec![("V", "cli"), ("W", "cli2"), ("UNUSED", "1")];
    run_case(&c);
}

#[test]
fn from_and_copy_flags_expand_args() {
    let mut c = Case::new(
        "from_and_copy_flags_expand_args",
        "ARG TAG=1\nFROM {REG}/base:${TAG} AS one\nCOPY a.txt /one/\nFROM {REG}/base:$TAG\nARG U=1000\nARG M=0640\nCOPY --chown=$U:$U --chmod=$M b.txt /x\nCOPY --from=one /one /from-one\n",
    );
    c.build_args = vec![("M", "0600")];
    run_case(&c);
}

#[test]
fn custom_platform_labels_the_result() {
    let mut c = Case::new(
        "custom_platform_labels_the_result",
        "FROM {BASE}\nARG TARGETARCH\nENV ARCH=$TARGETARCH\nCOPY a.txt /\n",
    );
    c.platform = Some("linux/arm64");
    run_case(&c);
}

/// A base whose config carries ONBUILD triggers: they run first in the stage
/// that uses it, then are gone from the config.
#[test]
fn onbuild_triggers_of_the_base_run() {
    let mut c = Case::new(
        "onbuild_triggers_of_the_base_run",
        "FROM {BASE}\nCOPY b.txt /after/\n",
    );
    c.base_config = serde_json::json!({
        "OnBuild": ["COPY a.txt /onbuild/", "ENV FROM_TRIGGER=1", "WORKDIR /trig", "LABEL t=$FROM_TRIGGER"]
    });
    run_case(&c);
}

/// A base as `docker import` writes it: empty fields, a container_config, a
/// docker_version. BuildKit writes its own config and drops every empty field.
#[test]
fn imported_base_config_is_rewritten() {
    let mut c = Case::new(
        "imported_base_config_is_rewritten",
        "FROM {BASE}\nCOPY a.txt /\n",
    );
    let empty = serde_json::json!({
        "Hostname": "", "Domainname": "", "User": "", "AttachStdin": false,
        "AttachStdout": false, "AttachStderr": false, "Tty": false, "OpenStdin": false,
        "StdinOnce": false, "Env": null, "Cmd": null, "Image": "", "Volumes": null,
        "WorkingDir": "", "Entrypoint": null, "OnBuild": null, "Labels": null
    });
    let mut extra = empty.clone();
    extra["container_config"] = empty;
    extra["docker_version"] = "20.10.24".into();
    extra["comment"] = "Imported from -".into();
    extra["created"] = "2024-01-02T03:04:05Z".into();
    c.base_config = extra;
    run_case(&c);
}

#[test]
fn exec_form_is_not_expanded() {
    run_case(&Case::new("exec_form_is_not_expanded", "FROM {BASE}\nENV X=1\nENTRYPOINT [\"/bin/echo\", \"$X\"]\nCMD [\"${X}\", \"$HOME\"]\nLABEL x=$X\n"));
}

#[test]
fn copy_from_image_reference() {
    run_case(&Case::new(
        "copy_from_image_reference",
        "FROM scratch\nCOPY --from={BASE} /etc/passwd /usr/bin/busybox /out/\n",
    ));
}

#[test]
fn dockerignore_beside_the_dockerfile_wins() {
    let mut c = Case::new(
        "dockerignore_beside_the_dockerfile_wins",
        "FROM {BASE}\nCOPY . /ctx/\n",
    );
    c.dockerfile_name = "build.Dockerfile";
    c.dockerignore = Some(("build.Dockerfile.dockerignore", "a.txt\ndir\n"));
    run_case(&c);
}

#[test]
fn copy_chmod_applies_to_directories() {
    run_case(&Case::new(
        "copy_chmod_applies_to_directories",
        "FROM {BASE}\nCOPY --chmod=0750 dir /cd/\n",
    ));
}

/// FIFOs a RUN makes reach its layer as BuildKit records them (type 6, the
/// mode and owner the command gave, a second name as a hard link): in a new
/// directory, with several modes, replacing a file of the base, changed and
/// removed by a later RUN. Device nodes are left out: whether a RUN may make
/// one depends on the sandbox's confinement, not on the layer.
#[test]
fn run_makes_fifos() {
    let case = Case::new(
        "run_makes_fifos",
        "FROM {BASE}\nRUN mkfifo /p /q && chmod 0600 /q && mkdir /d && mkfifo /d/f && mkfifo -m 0640 /d/g && chown 5:6 /d/g && rm /opt/old/b && mkfifo /opt/old/b && ln /p /p-link\nRUN chmod 0604 /d/f && rm /q && mkfifo -m 0622 /etc/passwd.fifo\n",
    );
    let (bk, kiln) = run_case(&case).expect("BuildKit builds it");
    // Not an empty agreement: both images hold the FIFOs.
    for img in [&bk, &kiln] {
        let fifos: Vec<(&str, u32, u64, u64)> = img
            .files
            .iter()
            .filter(|(_, f)| f.kind == 'p')
            .map(|(p, f)| (p.as_str(), f.mode, f.uid, f.gid))
            .collect();
        assert_eq!(
            fifos,
            [
                ("d/f", 0o604, 0, 0),
                ("d/g", 0o640, 5, 6),
                ("etc/passwd.fifo", 0o622, 0, 0),
                ("opt/old/b", 0o644, 0, 0),
                ("p", 0o644, 0, 0),
                ("p-link", 0o644, 0, 0),
            ]
        );
        assert_eq!(img.files["p-link"].hardlink, "p");
    }
    // The first RUN's layer entries, as the tar has them (type 6, a link 1).
    let fifo_rows = |img: &Image| -> Vec<String> {
        img.layers[3]
            .iter()
            .filter(|r| r.contains(" 6 ") || r.contains(" 1 "))
            .cloned()
            .collect()
    };
    assert_eq!(fifo_rows(&kiln), fifo_rows(&bk));
    assert_eq!(fifo_rows(&kiln).len(), 6, "{:?}", fifo_rows(&kiln));
}

/// Asserts that both images hold `path` with exactly `content`: the cases
/// below agree on something, not on nothing.
fn both_hold(images: &(Image, Image), path: &str, content: &str) {
    for (who, img) in [("BuildKit", &images.0), ("Kiln", &images.1)] {
        let f = img
            .files
            .get(path)
            .unwrap_or_else(|| panic!("{who}: no {path}"));
        assert_eq!(
            f.digest,
            sha256_of(content.as_bytes()),
            "{who}: {path} is not {content:?}"
        );
    }
}

/// Issue 31: a stage built FROM another keeps its ARGs: RUN sees them and names
/// them in its history, an ARG's default expands the inherited value, and a
/// bare ARG in a grandchild keeps it (BuildKit's `dispatchState.init`).
#[test]
fn args_inherited_from_a_parent_stage() {
    let both = run_case(&Case::new(
        "args_inherited_from_a_parent_stage",
        "FROM {BASE} AS base1\nARG ARG1=blubb\nARG NAME=base\nARG NOVALUE\nFROM base1 AS base4\nRUN echo \"arg1:$ARG1\" > /arg1\nARG NAME=\"$NAME-dev\"\nRUN echo \"dev:: $NAME\" > /name\nFROM base4\nARG NAME\nRUN echo \"grand: $NAME $ARG1 [$NOVALUE]\" > /grand\n",
    ))
    .expect("BuildKit builds it");
    both_hold(&both, "arg1", "arg1:blubb\n");
    both_hold(&both, "name", "dev:: base-dev\n");
    both_hold(&both, "grand", "grand: base-dev blubb []\n");
}

/// Issue 31: `TARGETSTAGE` (and the empty `*OSVERSION`s) are predefined; proxy
/// build args reach RUN without an ARG line, in both cases, and stay out of the
/// history.
#[test]
fn predefined_and_proxy_args() {
    let mut c = Case::new(
        "predefined_and_proxy_args",
        "FROM {BASE} AS unused\nRUN false\nFROM {BASE} AS final\nRUN echo \"stage:$TARGETSTAGE\" > /s1\nARG TARGETSTAGE\nARG TARGETOSVERSION\nARG BUILDOSVERSION\nRUN echo \"stage:$TARGETSTAGE os:$TARGETOSVERSION\" > /s2 && env | grep -i _proxy | sort > /proxies\n",
    );
    c.build_args = vec![
        ("HTTP_PROXY", "http://proxy.invalid:3128"),
        ("no_proxy", "localhost,.internal"),
    ];
    let both = run_case(&c).expect("BuildKit builds it");
    // Predefined, not in scope: a RUN sees it only after `ARG TARGETSTAGE`.
    both_hold(&both, "s1", "stage:\n");
    both_hold(&both, "s2", "stage:final os:\n");
    both_hold(
        &both,
        "proxies",
        "HTTP_PROXY=http://proxy.invalid:3128\nNO_PROXY=localhost,.internal\nhttp_proxy=http://proxy.invalid:3128\nno_proxy=localhost,.internal\n",
    );
}

/// Issue 31: symlinks a layer stores with mode 0755 are copied as 0777, the
/// mode every Linux filesystem reports for a link (BuildKit copies from a
/// mounted snapshot), from an image and from a stage built on it.
#[test]
fn copied_symlinks_are_0777() {
    let mut c = Case::new(
        "copied_symlinks_are_0777",
        "FROM {REG}/links:1 AS l\nFROM scratch\nCOPY --from={REG}/links:1 /bin /bin\nCOPY --from=l /bin /b2/\nCOPY --from=l /bin/rel /followed\n",
    );
    c.images = Some(|reg| {
        let dir = tempfile::tempdir().unwrap();
        let layer = tar_layer(dir.path(), "links", |b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_mtime(1_700_000_000);
            b.append_data(&mut h, "bin/", std::io::empty()).unwrap();
            let body = b"#!/bin/sh\n";
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o755);
            h.set_size(body.len() as u64);
            h.set_mtime(1_700_000_000);
            b.append_data(&mut h, "bin/tool", &body[..]).unwrap();
            for (name, target) in [("bin/rel", "tool"), ("bin/abs", "/bin/tool")] {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_mtime(1_700_000_000);
                b.append_link(&mut h, name, target).unwrap();
            }
        });
        push_image(reg, "links:1", &[layer], serde_json::json!({}));
    });
    let (bk, kiln) = run_case(&c).expect("BuildKit builds it");
    for img in [&bk, &kiln] {
        for link in ["bin/rel", "bin/abs", "b2/rel", "b2/abs"] {
            assert_eq!(
                (img.files[link].kind, img.files[link].mode),
                ('l', 0o777),
                "{link}"
            );
        }
    }
}

/// Issue 31: a base whose config holds a relative `WorkingDir` (a malformed
/// but real image): BuildKit applies it as a WORKDIR of itself, `relwd` →
/// `/relwd/relwd`, and a later relative WORKDIR goes below that.
#[test]
fn relative_workdir_of_the_base() {
    let mut c = Case::new(
        "relative_workdir_of_the_base",
        "FROM {BASE}\nWORKDIR sub\nRUN pwd > /pwd\n",
    );
    c.base_config = serde_json::json!({ "WorkingDir": "relwd" });
    let both = run_case(&c).expect("BuildKit builds it");
    both_hold(&both, "pwd", "/relwd/relwd/sub\n");
    assert_eq!(
        both.1.raw_config["config"]["WorkingDir"],
        "/relwd/relwd/sub"
    );
}

/// Issue 31: a `COPY <<EOF` body is file content: variables expand (ARG and
/// ENV), quotes stay, `\` escapes as in a word (BuildKit's `SkipProcessQuotes`).
#[test]
fn copy_heredoc_bodies_keep_quotes() {
    let both = run_case(&Case::new(
        "copy_heredoc_bodies_keep_quotes",
        "FROM {BASE}\nARG name=world\nENV E=env\nCOPY <<EOF /quoted\n\"quotes in file\"\nHello '${name}'!\nit's \"$E\" ${unset:-'d e'} C:\\\\dir \\$E\nEOF\n",
    ))
    .expect("BuildKit builds it");
    both_hold(
        &both,
        "quoted",
        "\"quotes in file\"\nHello 'world'!\nit's \"env\" 'd e' C:\\dir $E\n",
    );
}

/// Issue 31 item 7: `USER root` then `WORKDIR` in a stage with no /etc/passwd
/// builds (BuildKit's `llb.parseUID` reads `root` as 0, so nothing is looked up),
/// and a later USER name the stage lacks makes the directory 0:0.
#[test]
fn workdir_as_root_without_passwd() {
    let both = run_case(&Case::new(
        "workdir_as_root_without_passwd",
        "FROM scratch\nUSER root\nWORKDIR /w\nCOPY a.txt /w/\nUSER app\nWORKDIR /x\n",
    ))
    .expect("BuildKit builds it");
    assert_eq!(both.1.raw_config["config"]["WorkingDir"], "/x");
}

/// Issue 31 item 10: `--chown` names the image lacks build as BuildKit v0.21's
/// `readUser` resolves them: an unknown user is 0:0, an unknown group keeps the
/// gid so far, and a known user name takes its passwd entry's group (svc: 700:701).
#[test]
fn chown_names_missing_from_the_image() {
    let both = run_case(&Case::new(
        "chown_names_missing_from_the_image",
        "FROM {BASE}\nRUN echo 'svc:x:700:701::/:/bin/sh' >> /etc/passwd\nCOPY --chown=nouser a.txt /o/a\nCOPY --chown=app:nogroup a.txt /o/b\nCOPY --chown=nouser:staff a.txt /o/c\nCOPY --chown=1234:nogroup a.txt /o/d\nCOPY --chown=:staff a.txt /o/e\nCOPY --chown=svc a.txt /o/f\nCOPY --chown=svc:nogroup a.txt /o/g\nUSER ghost\nWORKDIR /o/w\n",
    ))
    .expect("BuildKit builds it");
    let owner = |p: &str| {
        let f = &both.1.files[p];
        (f.uid, f.gid)
    };
    assert_eq!(owner("o/a"), (0, 0));
    assert_eq!(owner("o/b"), (1000, 1000));
    assert_eq!(owner("o/c"), (0, 50));
    assert_eq!(owner("o/d"), (1234, 1234));
    assert_eq!(owner("o/f"), (700, 701));
    assert_eq!(owner("o/g"), (700, 701));
    assert_eq!(owner("o/w"), (0, 0));
}

/// Issue 31 item 11: a `.dockerignore` line that is `!` alone is refused (moby's
/// patternmatcher: `illegal exclusion pattern: "!"`); Kiln names the file and line.
#[test]
fn dockerignore_bare_exclusion_is_refused() {
    differential(
        "dockerignore_bare_exclusion_is_refused",
        "FROM {BASE}\nCOPY . /ctx/\n",
        Some("# comment\n*.md\n!\nig\n"),
    );
}

/// Issue 31 item 13: `RUN --security=…` is a labs flag (build tag dfrunsecurity);
/// BuildKit v0.21's stable syntax refuses it at its line, whatever the mode.
#[test]
fn run_security_flag_is_refused() {
    differential(
        "run_security_flag_is_refused",
        "FROM {BASE}\nRUN true\nRUN --security=sandbox true\n",
        None,
    );
}

/// Issue 31 item 9: heredocs with a file-descriptor prefix (`3<<IN1`), which
/// BuildKit's parser reads as `^(\\d*)<<(-?)([^<]*)$`: the bodies are the
/// shell's, and a lone `0<<EOF` runs its body as a plain heredoc does.
#[test]
fn run_heredocs_with_file_descriptors() {
    let both = run_case(&Case::new(
        "run_heredocs_with_file_descriptors",
        "FROM {BASE}\nRUN <<EOF 3<<IN1 4<<-IN2 sh\ncat <&3 > /three\ncat <&4 > /four\nEOF\nHello\nIN1\n\tWorld\n\tIN2\nRUN 0<<EOF\necho lone > /lone\nEOF\nRUN busybox awk -f - 3<<IN1 <<EOF\nlow\nIN1\nBEGIN { getline l < \"/proc/self/fd/3\"; print toupper(l) > \"/awk\" }\nEOF\nCOPY 3<<EOF /copied\ncopied\nEOF\n",
    ))
    .expect("BuildKit builds it");
    both_hold(&both, "three", "Hello\n");
    both_hold(&both, "four", "World\n");
    both_hold(&both, "lone", "lone\n");
    both_hold(&both, "awk", "LOW\n");
    both_hold(&both, "copied", "copied\n");
}

/// An image whose ONBUILD triggers read stages of the Dockerfile built on it.
fn push_onbuild_image(reg: &TestRegistry) {
    push_busybox_base_with(
        reg,
        "onbuild:1",
        serde_json::json!({ "OnBuild": [
            "COPY --from=child /from-src /child-src",
            "RUN --mount=from=child,source=/mounted,target=/m cat /m > /child-mounted"
        ] }),
    );
}

/// Issue 31 item 8: stages named only by an inherited ONBUILD trigger join the
/// build (BuildKit's initOnBuildTriggers): a parent stage's `ONBUILD COPY
/// --from=src` and `ONBUILD RUN --mount=from=mnt`, and a registry base's
/// triggers naming `child`, which is itself built only for them.
#[test]
fn stages_named_only_by_onbuild_triggers() {
    let mut c = Case::new(
        "stages_named_only_by_onbuild_triggers",
        "FROM {BASE} AS base\nONBUILD COPY --from=src /out /from-src\nONBUILD RUN --mount=from=mnt,source=/m,target=/m cat /m/f > /mounted\nFROM {BASE} AS src\nRUN echo src > /out\nFROM {BASE} AS mnt\nRUN mkdir /m && echo mnt > /m/f\nFROM base AS child\nFROM {REG}/onbuild:1\n",
    );
    c.images = Some(push_onbuild_image);
    let both = run_case(&c).expect("BuildKit builds it");
    both_hold(&both, "child-src", "src\n");
    both_hold(&both, "child-mounted", "mnt\n");
}
