//! Differential suite: each Dockerfile is built by BuildKit (`docker build` on the
//! Docker engine) and by Kiln against the same base in a real registry; flattened
//! filesystems (path, type, mode, uid, gid, size, content digest, link target) and
//! config fields must be identical.

mod common;

use common::*;
use std::collections::BTreeMap;
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
    std::fs::set_permissions(dir.join("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir_all(dir.join("hl")).unwrap();
    std::fs::hard_link(dir.join("hard1"), dir.join("hl/hard2")).unwrap();
    std::fs::hard_link(dir.join("hard1"), dir.join("hl/hard3")).unwrap();
}

/// Flattened filesystem and config of an image BuildKit built, via `docker save`.
fn buildkit(
    ctx: &Path,
    tag: &str,
    case: &Case,
) -> Result<(BTreeMap<String, Flat>, serde_json::Value), String> {
    require_docker_engine();
    let mut cmd = docker();
    cmd.args(["build", "-q", "-t", tag, "-f"])
        .arg(ctx.join(case.dockerfile_name));
    for (k, v) in &case.build_args {
        cmd.arg("--build-arg").arg(format!("{k}={v}"));
    }
    let out = cmd.arg(ctx).output().expect("docker build");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("img.tar");
    let save = docker()
        .args(["save", "-o"])
        .arg(&tar)
        .arg(tag)
        .output()
        .expect("docker save");
    assert!(
        save.status.success(),
        "docker save: {}",
        String::from_utf8_lossy(&save.stderr)
    );
    let _ = docker().args(["rmi", "-f", tag]).output();
    let x = dir.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    let mut a = tar::Archive::new(std::fs::File::open(&tar).unwrap());
    a.unpack(&x).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(x.join("manifest.json")).unwrap()).unwrap();
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(x.join(manifest[0]["Config"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let mut files = BTreeMap::new();
    for l in manifest[0]["Layers"].as_array().unwrap() {
        flatten_layer(&x.join(l.as_str().unwrap()), &mut files);
    }
    Ok((files, config))
}

const CONFIG_FIELDS: [&str; 10] = [
    "Env",
    "Entrypoint",
    "Cmd",
    "WorkingDir",
    "User",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
    "Shell",
];

/// One differential case: a Dockerfile and how to build it.
struct Case {
    name: &'static str,
    dockerfile: &'static str,
    dockerfile_name: &'static str,
    dockerignore: Option<(&'static str, &'static str)>,
    build_args: Vec<(&'static str, &'static str)>,
}

impl Case {
    fn new(name: &'static str, dockerfile: &'static str) -> Case {
        Case {
            name,
            dockerfile,
            dockerfile_name: "Dockerfile",
            dockerignore: None,
            build_args: Vec::new(),
        }
    }
}

fn differential(name: &'static str, dockerfile: &'static str, dockerignore: Option<&'static str>) {
    let mut case = Case::new(name, dockerfile);
    case.dockerignore = dockerignore.map(|d| (".dockerignore", d));
    run_case(&case);
}

fn run_case(case: &Case) {
    let name = case.name;
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let ctx = tempfile::tempdir().unwrap();
    context(ctx.path());
    let df = case
        .dockerfile
        .replace("{BASE}", &format!("{}/base:1", reg.host))
        .replace("{REG}", &reg.host);
    std::fs::write(ctx.path().join(case.dockerfile_name), &df).unwrap();
    if let Some((file, content)) = case.dockerignore {
        std::fs::write(ctx.path().join(file), content).unwrap();
    }
    let reference = buildkit(ctx.path(), &format!("kiln-diff-{name}"), case);
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
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = executor(&args);
    let (bk_files, bk_config) = match reference {
        Ok(r) => r,
        Err(bk_err) => {
            assert!(
                !out.status.success(),
                "{name}: BuildKit refused ({bk_err}) but Kiln built it"
            );
            return;
        }
    };
    assert_ok(&out);
    let kiln = pull(&reg, &format!("diff-{name}:1"));
    let mut diffs = Vec::new();
    for (path, want) in &bk_files {
        match kiln.files.get(path) {
            None => diffs.push(format!("missing in Kiln: {path} {want:?}")),
            Some(got) if got != want => {
                diffs.push(format!("{path}: BuildKit {want:?} Kiln {got:?}"))
            }
            _ => {}
        }
    }
    for path in kiln.files.keys().filter(|p| !bk_files.contains_key(*p)) {
        diffs.push(format!("extra in Kiln: {path} {:?}", kiln.files[path]));
    }
    for field in CONFIG_FIELDS {
        let want = bk_config["config"]
            .get(field)
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        let got = kiln.raw_config["config"]
            .get(field)
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        let empty = |v: &serde_json::Value| {
            v.is_null() || v.as_str() == Some("") || v.as_object().is_some_and(|o| o.is_empty())
        };
        if want != got && !(empty(&want) && empty(&got)) {
            diffs.push(format!("config {field}: BuildKit {want} Kiln {got}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{name}: Kiln differs from BuildKit:\n{}",
        diffs.join("\n")
    );
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
}

/// A glob that matches nothing is an error (BuildKit ≥ 0.10; the docker.io 20.10
/// engine's older BuildKit still accepts it, so this is checked on Kiln alone).
#[test]
fn empty_glob_is_refused() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let ctx = tempfile::tempdir().unwrap();
    context(ctx.path());
    let df = format!("FROM {}/base:1\nCOPY *.none /x/\n", reg.host);
    std::fs::write(ctx.path().join("Dockerfile"), df).unwrap();
    let out = executor(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &format!("{}/glob:1", reg.host),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("Dockerfile:2: no source files were specified"));
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
    assert!(String::from_utf8_lossy(&out.stderr).contains("file with no instructions"));
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

/// Heredocs: the docker.io engine's BuildKit frontend predates them, so Kiln is
/// checked against BuildKit's documented rules (expansion unless the delimiter is quoted).
#[test]
fn copy_heredocs_follow_buildkit_rules() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let ctx = tempfile::tempdir().unwrap();
    let df = format!("FROM {}/base:1\nENV NAME=kiln\nCOPY <<EOF /expanded\nhello $NAME\nEOF\nCOPY <<'EOF' /literal\nhello $NAME\nEOF\nCOPY <<-EOT /chomped\n\tindented\n\tEOT\n", reg.host);
    std::fs::write(ctx.path().join("Dockerfile"), df).unwrap();
    let dest = format!("{}/heredoc:1", reg.host);
    assert_ok(&executor(&[
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &dest,
    ]));
    let img = pull(&reg, "heredoc:1");
    let digest = |s: &str| kiln::registry::sha256_digest(s.as_bytes());
    assert_eq!(img.files["expanded"].digest, digest("hello kiln\n"));
    assert_eq!(img.files["literal"].digest, digest("hello $NAME\n"));
    assert_eq!(img.files["chomped"].digest, digest("indented\n"));
}
