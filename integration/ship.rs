//! Shipping: the executor image (static binary, FROM scratch) is built by the
//! executor itself and runs builds under `docker run` like a Pod would, with
//! credentials from a mounted config.json; credential helpers; deploy manifests.

mod common;

use base64::Engine;
use common::*;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn config_json(dir: &Path, registry: &str, user: &str, password: &str) -> PathBuf {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let p = dir.join("config.json");
    std::fs::write(
        &p,
        format!("{{\"auths\":{{\"{registry}\":{{\"auth\":\"{auth}\"}}}}}}"),
    )
    .unwrap();
    p
}

#[test]
fn executor_image_builds_itself_and_runs_like_a_pod() {
    let bin = static_executor();
    let ldd = std::process::Command::new("ldd")
        .arg(&bin)
        .output()
        .expect("ldd");
    let ldd =
        String::from_utf8_lossy(&ldd.stdout).to_string() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(
        ldd.contains("statically linked") || ldd.contains("not a dynamic executable"),
        "the executor must be static: {ldd}"
    );

    let open = TestRegistry::start();
    push_busybox_base(&open, "ones/base:1");
    // The executor builds its own image (no Docker involved).
    let image = format!("{}/kiln/executor:test", open.host);
    let out = executor(&[
        "--dockerfile",
        "Dockerfile.executor",
        "--context",
        repo().to_str().unwrap(),
        "--destination",
        &image,
    ]);
    assert_ok(&out);
    let img = pull(&open, "kiln/executor:test");
    assert_eq!(
        img.files["kaniko/executor"].size,
        std::fs::metadata(&bin).unwrap().len()
    );
    assert_eq!(img.files["executor"].link, "kaniko/executor");
    assert!(img.files.contains_key("kaniko/.docker/config.json"));
    // Writable by any user, as Kaniko's /kaniko is.
    assert_eq!(img.files["kaniko"].mode & 0o7777, 0o1777);
    assert_eq!(
        img.config.config.entrypoint.as_deref(),
        Some(&["/kaniko/executor".to_string()][..])
    );
    assert_eq!(img.config.config.working_dir.as_deref(), Some("/workspace"));
    assert!(img
        .config
        .config
        .env
        .as_ref()
        .unwrap()
        .iter()
        .any(|e| e == "DOCKER_CONFIG=/kaniko/.docker/"));

    // A registry that demands credentials; the Secret-like config.json is mounted.
    let locked = TestRegistry::start_with_auth("builder", "s3cret");
    let ws = tempfile::tempdir().unwrap();
    write_context(
        ws.path(),
        &[
            ("Dockerfile", &format!("FROM {}/ones/base:1\nWORKDIR /usr/local/app\nCOPY main /usr/local/app/main\nENTRYPOINT [\"/usr/local/app/main\"]\n", open.host)),
            ("main", "#!/bin/sh\necho built inside the executor image\n"),
        ],
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        ws.path().join("main"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let secret = tempfile::tempdir().unwrap();
    let cfg = config_json(secret.path(), &locked.host, "builder", "s3cret");
    require_docker_engine();
    let workspace = format!("{}:/workspace:ro", ws.path().display());
    let secret_mount = format!("{}:/kaniko/.docker/config.json:ro", cfg.display());
    // `docker run --network host [docker args] IMAGE [executor args]`, as a Pod runs it.
    let in_image = |docker_args: &[&str], args: &[&str]| {
        docker()
            .args(["run", "--rm", "--network", "host"])
            .args(docker_args)
            .arg(&image)
            .args(args)
            .output()
            .unwrap()
    };
    // Kaniko's names for the same binary: `/kaniko/warmer`, `executor version`.
    assert_eq!(img.files["kaniko/warmer"].link, "executor");
    let warmer = in_image(&["--entrypoint", "/kaniko/warmer"], &["--help"]);
    assert!(
        String::from_utf8_lossy(&warmer.stdout).contains("Usage: warmer"),
        "{warmer:?}"
    );
    let version = in_image(&[], &["version"]);
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("Kiln version : v"));
    for (context, tag) in [("dir:///workspace", "1"), ("/workspace", "2")] {
        let dest = format!("{}/ones/app:{tag}", locked.host);
        let run = in_image(
            &["-v", &workspace, "-v", &secret_mount],
            &[
                "--dockerfile",
                "/workspace/Dockerfile",
                "--context",
                context,
                "--destination",
                &dest,
            ],
        );
        assert!(
            run.status.success(),
            "executor in its image failed: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            String::from_utf8_lossy(&run.stdout)
                .trim()
                .starts_with("sha256:"),
            "the digest is printed"
        );
    }
    // Non-root, as the Kubernetes manifests run it: only the scratch root must be writable.
    let dest = format!("{}/ones/app:nonroot", locked.host);
    let run = in_image(
        &[
            "--user",
            "65532:65532",
            "--tmpfs",
            "/scratch:rw,mode=1777",
            "-e",
            "KANIKO_DIR=/scratch",
            "-v",
            &workspace,
            "-v",
            &secret_mount,
        ],
        &["--context", "/workspace", "--destination", &dest],
    );
    assert!(
        run.status.success(),
        "executor as uid 65532 failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );

    // Without credentials the same push is refused, naming the registry.
    let run = in_image(
        &["-v", &workspace],
        &[
            "--context",
            "/workspace",
            "--destination",
            &format!("{}/ones/app:3", locked.host),
        ],
    );
    let e = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && e.contains("401") && e.contains(&locked.host),
        "{e}"
    );

    // The pushed image runs (docker logs in with its own config dir).
    let dcfg = tempfile::tempdir().unwrap();
    let login = docker()
        .args([
            "--config",
            dcfg.path().to_str().unwrap(),
            "login",
            "-u",
            "builder",
            "-p",
            "s3cret",
            &locked.host,
        ])
        .output()
        .unwrap();
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    let run = docker()
        .args([
            "--config",
            dcfg.path().to_str().unwrap(),
            "run",
            "--rm",
            "--network",
            "host",
            &format!("{}/ones/app:1", locked.host),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "built inside the executor image\n",
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn credential_helpers_are_called() {
    let open = TestRegistry::start();
    push_busybox_base(&open, "base:1");
    let locked = TestRegistry::start_with_auth("helper-user", "helper-pass");
    let bin = tempfile::tempdir().unwrap();
    let calls = bin.path().join("calls");
    let helper = bin.path().join("docker-credential-kilntest");
    std::fs::write(&helper, format!("#!/bin/sh\nread host\necho \"$1 $host\" >> {}\necho '{{\"Username\":\"helper-user\",\"Secret\":\"helper-pass\"}}'\n", calls.display())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = tempfile::tempdir().unwrap();
    std::fs::write(
        cfg.path().join("config.json"),
        format!("{{\"credHelpers\":{{\"{}\":\"kilntest\"}}}}", locked.host),
    )
    .unwrap();
    let ctx = tempfile::tempdir().unwrap();
    write_context(
        ctx.path(),
        &[
            (
                "Dockerfile",
                &format!("FROM {}/base:1\nCOPY a /a\n", open.host),
            ),
            ("a", "a\n"),
        ],
    );
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_executor"))
        .args([
            "--context",
            ctx.path().to_str().unwrap(),
            "--destination",
            &format!("{}/app:1", locked.host),
        ])
        .env("DOCKER_CONFIG", cfg.path())
        .env("PATH", path)
        .output()
        .unwrap();
    assert_ok(&out);
    let calls = std::fs::read_to_string(&calls).unwrap();
    assert!(
        calls.contains(&format!("get {}", locked.host)),
        "helper called with the registry: {calls}"
    );
}

/// The source ships as a one-way house: no module imports one that imports
/// it back (`integration/imports` reads the graph from the `crate::` and
/// `super::` paths and names every cycle).
#[test]
fn no_module_imports_back_up_the_data_flow() {
    let out = std::process::Command::new("python3")
        .arg(repo().join("integration/imports"))
        .output()
        .expect("python3 runs integration/imports");
    assert!(
        out.status.success(),
        "import cycles:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kubernetes_manifests_validate() {
    let tool = require(
        "kubernetes-validate",
        "pip install kubernetes-validate; .ci/run does this",
    );
    let files = [
        "deploy/kubernetes/pod.yaml",
        "deploy/kubernetes/job.yaml",
        "deploy/kubernetes/job-run.yaml",
    ];
    let out = std::process::Command::new(tool)
        .arg("--strict")
        .args(files.iter().map(|f| repo().join(f)))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.matches("passed").count() == files.len(),
        "{text}"
    );
}

#[test]
fn tekton_tasks_have_the_kaniko_shape() {
    for file in ["deploy/tekton/task.yaml", "deploy/tekton/task-run.yaml"] {
        tekton_task_shape(file);
    }
    // The RUN-capable task: root, user namespaces allowed, scratch on an emptyDir.
    let text = std::fs::read_to_string(repo().join("deploy/tekton/task-run.yaml")).unwrap();
    let task: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let step = &task["spec"]["steps"][0];
    let sc = &step["securityContext"];
    assert_eq!(sc["runAsUser"].as_u64(), Some(0));
    assert_eq!(sc["seccompProfile"]["type"].as_str(), Some("Unconfined"));
    assert!(
        sc["capabilities"].is_null(),
        "RUN needs the default capabilities"
    );
    assert_eq!(step["env"][0]["name"].as_str(), Some("KANIKO_DIR"));
    assert_eq!(
        step["volumeMounts"][0]["mountPath"].as_str(),
        step["env"][0]["value"].as_str()
    );
    assert!(task["spec"]["volumes"][0]["emptyDir"].is_mapping());
}

fn tekton_task_shape(file: &str) {
    let text = std::fs::read_to_string(repo().join(file)).unwrap();
    let task: serde_yaml::Value = serde_yaml::from_str(&text).expect("the task is YAML");
    assert_eq!(task["apiVersion"].as_str(), Some("tekton.dev/v1"));
    assert_eq!(task["kind"].as_str(), Some("Task"));
    let names = |key: &str| -> Vec<String> {
        task["spec"][key]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    for p in [
        "IMAGE",
        "DOCKERFILE",
        "CONTEXT",
        "EXTRA_ARGS",
        "BUILDER_IMAGE",
    ] {
        assert!(names("params").contains(&p.to_string()), "param {p}");
    }
    for r in ["IMAGE_DIGEST", "IMAGE_URL"] {
        assert!(names("results").contains(&r.to_string()), "result {r}");
    }
    let step = &task["spec"]["steps"][0];
    assert_eq!(step["image"].as_str(), Some("$(params.BUILDER_IMAGE)"));
    let args: Vec<&str> = step["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    for want in [
        "--digest-file=$(results.IMAGE_DIGEST.path)",
        "--destination=$(params.IMAGE)",
    ] {
        assert!(args.contains(&want), "step args lack {want}: {args:?}");
    }
    // IMAGE_URL as the catalog's kaniko task writes it: the name, no digest, no
    // newline (Tekton Chains joins it with IMAGE_DIGEST as url@digest).
    assert!(!args.iter().any(|a| a.contains("IMAGE_URL")), "{args:?}");
    let url = &task["spec"]["steps"][1];
    assert_eq!(url["name"].as_str(), Some("write-url"));
    let script = url["script"].as_str().unwrap();
    assert!(
        script.contains("echo -n \"${image}\" | tee \"$(results.IMAGE_URL.path)\"")
            && script.contains("image=\"$(params.IMAGE)\""),
        "{script}"
    );
    // Replayed as Tekton runs it: placeholders substituted, then bash.
    let dir = tempfile::tempdir().unwrap();
    let result = dir.path().join("IMAGE_URL");
    let script = script
        .replace("$(params.IMAGE)", "r.example/team/app:v1")
        .replace("$(results.IMAGE_URL.path)", result.to_str().unwrap());
    let out = std::process::Command::new(require("bash", "apt-get install bash"))
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&result).unwrap(),
        "r.example/team/app:v1"
    );
}

/// ADD's downloads in Kiln's FROM-scratch image, which has neither git nor a
/// system trust store: a git repository and a URL, served on loopback.
#[test]
fn add_fetches_git_and_urls_inside_the_image() {
    use common::files::{FileServer, GitServer, Reply};
    let image = executor_image();
    let reg = TestRegistry::start();
    let git = GitServer::start();
    let files = FileServer::start(&[("/tool", Reply::File(b"tool\n".to_vec(), None))]);
    let ws = tempfile::tempdir().unwrap();
    write_context(
        ws.path(),
        &[(
            "Dockerfile",
            &format!(
                "FROM scratch\nADD {}#v1 /src/\nADD {} /bin/\n",
                git.url,
                files.url("/tool")
            ),
        )],
    );
    let dest = format!("{}/in-image/add:1", reg.host);
    let workspace = format!("{}:/workspace:ro", ws.path().display());
    let out = docker_run_args(
        &["-v", &workspace],
        image,
        &["--context", "/workspace", "--destination", &dest],
    );
    assert_ok(&out);
    let img = pull(&reg, "in-image/add:1");
    assert_eq!(img.files["src/a.txt"].digest, sha256_of(b"hello\n"));
    assert_eq!(img.files["src/run.sh"].mode, 0o755);
    assert_eq!(img.files["bin/tool"].digest, sha256_of(b"tool\n"));
}

/// The debug image (Dockerfile.executor-debug, its Debian stage pulled through
/// `--registry-map` from a test registry) runs GitLab's documented Kaniko job:
/// `entrypoint: [""]`, the script fed to `sh`, the job's registry credentials in
/// CI_REGISTRY*; `/kaniko` is writable by any user.
#[test]
fn debug_image_runs_gitlabs_documented_job() {
    static_executor();
    require_docker_engine();
    let bases = TestRegistry::start();
    push_debian_base(&bases, "library/debian:bookworm-slim", &[]);
    push_busybox_base(&bases, "ones/base:1");
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("debug.tar");
    let image = "kiln.test/executor-debug:image-test";
    let map = format!("index.docker.io={}", bases.host);
    assert_ok(&executor(&[
        "--dockerfile",
        "Dockerfile.executor-debug",
        "--context",
        repo().to_str().unwrap(),
        "--destination",
        image,
        "--no-push",
        "--tar-path",
        tar.to_str().unwrap(),
        "--registry-map",
        &map,
    ]));
    run_ok(docker().arg("load").arg("-i").arg(&tar), "docker load");
    let shell = |user: &str, script: &str| {
        docker_run_args(
            &["--user", user, "--entrypoint", ""],
            image,
            &["/busybox/sh", "-c", script],
        )
    };
    let out = shell("0", "stat -c %a /kaniko; echo $PATH; readlink /busybox/ls");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1777\n/kaniko:/busybox\n/busybox/busybox\n"
    );
    let out = shell("1000", "touch /kaniko/x && echo writable");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "writable\n");

    // GitLab's job: the project checked out at CI_PROJECT_DIR, the script on
    // sh's stdin, the job's registry behind Basic auth.
    let reg = TestRegistry::start_with_auth("gitlab-ci-token", "job-token-123");
    let project = work.path().join("project");
    write_context(
        &project,
        &[(
            "Dockerfile",
            &format!(
                "FROM {}/ones/base:1\nRUN echo built in a GitLab job > /marker\n",
                bases.host
            ),
        )],
    );
    let script = "/kaniko/executor --context \"${CI_PROJECT_DIR}\" --dockerfile \"${CI_PROJECT_DIR}/Dockerfile\" --destination \"${CI_REGISTRY_IMAGE}:${CI_COMMIT_TAG}\"\n";
    let volume = format!("{}:/builds/group/project", project.display());
    let registry_image = format!("CI_REGISTRY_IMAGE={}/group/project", reg.host);
    let ci_registry = format!("CI_REGISTRY={}", reg.host);
    let mut child = docker()
        .args(["run", "--rm", "-i", "--network", "host", "--entrypoint", ""])
        .args(["-v", &volume])
        .args(["-e", "CI_PROJECT_DIR=/builds/group/project"])
        .args(["-e", &registry_image, "-e", "CI_COMMIT_TAG=v1.0.0"])
        .args(["-e", &ci_registry, "-e", "CI_REGISTRY_USER=gitlab-ci-token"])
        .args(["-e", "CI_REGISTRY_PASSWORD=job-token-123"])
        .args([image, "sh"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the GitLab job failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Read back through a second registry process on the same storage, no auth.
    let side = TestRegistry::start_spec(RegistrySpec {
        storage: Some(reg.storage.clone()),
        ..Default::default()
    });
    let img = pull(&side, "group/project:v1.0.0");
    assert_eq!(
        img.files["marker"].size,
        "built in a GitLab job\n".len() as u64
    );
    let _ = docker().args(["rmi", "-f", image]).output();
}
