use super::*;
use clap::Parser;
use kiln::context::source::Source;
use kiln::dispatch::mounts::Secret;
use kiln::image::spec::Platform;
use kiln::image::Reference;
use std::path::PathBuf;

/// Every executor flag of Kaniko v1.9.1, v1.24 and the maintained fork
/// (osscontainertools/kaniko), each with a value as a job would pass it.
const KANIKO_FLAGS: &[&str] = &[
    "--verbosity=debug",
    "-v=info",
    "--log-format=color",
    "--log-timestamp=true",
    "--force",
    "--whitelist-var-run=false",
    "--dockerfile=Dockerfile",
    "-f=Dockerfile",
    "--context=dir:///ws",
    "-c=/ws",
    "--context-sub-path=sub",
    "--bucket=b",
    "-b=b",
    "--destination=r.example/a:1",
    "-d=r.example/a:1",
    "--snapshot-mode=redo",
    "--custom-platform=linux/amd64",
    "--build-arg=A=1",
    "--insecure",
    "--skip-tls-verify",
    "--insecure-pull",
    "--skip-tls-verify-pull",
    "--push-retry=2",
    "--push-ignore-immutable-tag-errors",
    "--image-fs-extract-retry=2",
    "--image-download-retry=2",
    "--kaniko-dir=/kaniko",
    "--tar-path=/t.tar",
    "--single-snapshot",
    "--reproducible",
    "--target=s",
    "--no-push",
    "--no-push-cache",
    "--cache-repo=r.example/cache",
    "--cache-dir=/cache",
    "--digest-file=/d",
    "--image-name-with-digest-file=/n",
    "--image-name-tag-with-digest-file=/t",
    "--oci-layout-path=/o",
    "--compression=gzip",
    "--compression-level=-1",
    "--cache=TRUE",
    "--compressed-caching=false",
    "--cleanup",
    "--cache-ttl=6h",
    "--insecure-registry=r.example",
    "--skip-tls-verify-registry=r.example",
    "--registry-certificate=r.example=/c.pem",
    "--registry-client-cert=r.example=/c,/k",
    "--registry-map=index.docker.io=m.example",
    "--registry-mirror=m.example",
    "--skip-default-registry-fallback",
    "--ignore-var-run=false",
    "--label=a=b",
    "--skip-unused-stages=1",
    "--use-new-run",
    "--git=branch=main",
    "--cache-copy-layers=t",
    "--cache-run-layers=f",
    "--ignore-path=/p",
    "--skip-push-permission-check",
    "--annotation=a=b",
    "--preserve-context",
    "--materialize",
    "--credential-helpers=ecr",
    "--snapshotMode=time",
    "--customPlatform=linux/amd64",
    "--tarPath=/t.tar",
    "--force-build-metadata",
    "--secret=id=a,src=/s",
    "--azure-container-registry-config=/a",
];

#[test]
fn help_is_grouped_with_an_example() {
    use clap::CommandFactory;
    let help = Cli::command().render_help().to_string();
    let at = |h: &str| {
        help.find(h)
            .unwrap_or_else(|| panic!("{h} missing: {help}"))
    };
    for h in [
        "Build:",
        "Push:",
        "Output:",
        "Registries:",
        "Cache:",
        "Logging:",
    ] {
        at(h);
    }
    assert!(at("--destination") > at("Push:") && at("--cache-dir") > at("Cache:"));
    assert!(at("Example:") > at("Logging:"));
    // Kaniko-only knobs stay out of the help.
    assert!(!help.contains("--snapshot-mode"));
}

#[test]
fn platform_lists_take_buildx_syntax_and_one_keeps_kanikos_meaning() {
    let names = |flag: &str| {
        let cli = Cli::try_parse_from(["executor", flag]).expect("parses");
        platforms(&cli.custom_platform).map(|v| v.iter().map(|p| p.to_string()).collect::<Vec<_>>())
    };
    assert_eq!(
        names("--custom-platform=linux/amd64,linux/arm64").unwrap(),
        ["linux/amd64", "linux/arm64"]
    );
    assert_eq!(
        names("--platform=linux/aarch64, linux/arm/v7,linux/arm64/v8").unwrap(),
        ["linux/arm64", "linux/arm/v7"]
    );
    assert_eq!(
        names("--custom-platform=linux/s390x").unwrap(),
        ["linux/s390x"]
    );
    assert!(names("--custom-platform=linux/amd64,,linux/arm64").is_err());
    assert!(names("--platform=linux").is_err());
    assert_eq!(platforms(&None).unwrap(), [Platform::host()]);
}

#[test]
fn cache_mounts_are_kept_beside_the_layers_in_a_fresh_pod() {
    let repo = |flags: &[&str]| {
        let mut args = vec!["executor", "--destination=r.example/app:1"];
        args.extend(flags);
        let cli = Cli::try_parse_from(args).expect("parses");
        let dest = [Reference::parse("r.example/app:1").unwrap()];
        cli.cache_settings(&dest)
            .unwrap()
            .mounts_repo
            .map(|r| format!("{}/{}", r.registry, r.repository))
    };
    assert_eq!(
        repo(&["--cache", "--cache-repo=r.example/c"]).as_deref(),
        Some("r.example/c/mounts")
    );
    assert_eq!(
        repo(&["--cache"]).as_deref(),
        Some("r.example/app/cache/mounts")
    );
    assert_eq!(repo(&["--cache", "--cache-dir=/c"]), None);
    assert_eq!(repo(&[]), None);
    assert_eq!(
        repo(&["--cache-dir=/c", "--cache-mount-repo=r.example/m"]).as_deref(),
        Some("r.example/m")
    );
}

#[test]
fn every_kaniko_flag_is_accepted() {
    for flag in KANIKO_FLAGS {
        let parsed = Cli::try_parse_from(["executor", flag]);
        assert!(
            parsed.is_ok(),
            "{flag}: {}",
            parsed.err().map(|e| e.to_string()).unwrap_or_default()
        );
    }
    let c = Cli::try_parse_from(["executor", "--cache=1", "--no-push=F", "--tarPath=/x"]).unwrap();
    assert!(c.cache && !c.no_push);
    assert_eq!(c.tar_path, Some(PathBuf::from("/x")));
    assert!(Cli::try_parse_from(["executor", "--cache=maybe"]).is_err());
    let c = Cli::try_parse_from(["executor", "--snapshotMode=redo", "--force"]).unwrap();
    assert_eq!(c.kaniko.notices().len(), 2);
    // A compression Kiln does not write stops the build, named.
    let c = Cli::try_parse_from(["executor", "--compression=lz4"]).unwrap();
    let e = c.validate().unwrap_err();
    assert_eq!(e.flag, "compression");
    // Mirrors and maps fold into one list per registry, Docker Hub's named
    // as references name it.
    let c = Cli::try_parse_from([
        "executor",
        "--registry-map=docker.io=a.example;b.example/p",
        "--registry-mirror=c.example",
        "--registry-map=r.example=d.example",
    ])
    .unwrap();
    assert_eq!(
        c.registries.mirrors().unwrap(),
        [
            (
                "index.docker.io".to_string(),
                vec!["a.example".into(), "b.example/p".into(), "c.example".into()]
            ),
            ("r.example".to_string(), vec!["d.example".to_string()]),
        ]
    );
}

#[test]
fn a_destination_with_a_digest_is_refused() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    let ctx = d.path().display().to_string();
    let dest = format!("r.example/a@sha256:{}", "0".repeat(64));
    let c = Cli::try_parse_from(["executor", "--context", &ctx, "-d", &dest]).unwrap();
    assert_eq!(c.validate().unwrap_err().flag, "destination");
}

#[test]
fn secrets_as_buildx_reads_them() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("tok");
    std::fs::write(&f, b"file-value").unwrap();
    let got = secrets(&[
        format!("id=a,src={}", f.display()),
        "id=b,env=PATH".into(),
        "type=env,id=c,src=PATH".to_string(),
    ])
    .unwrap();
    assert_eq!(got["a"], Secret::new(b"file-value".to_vec()));
    let path = std::env::var("PATH").unwrap().into_bytes();
    assert_eq!(got["b"], Secret::new(path.clone()));
    assert_eq!(got["c"], Secret::new(path));
    assert_eq!(
        format!("{:?}", got["a"]),
        "Secret(10 bytes)",
        "Debug hides values"
    );
    for bad in ["src=/x", "id=a,color=red", "id=a,src=/nonexistent/x"] {
        let e = secrets(&[bad.to_string()]).unwrap_err();
        assert_eq!(e.flag, "secret", "{bad}");
    }
}

#[test]
fn kaniko_style_flags() {
    let c = Cli::try_parse_from([
        "executor",
        "--dockerfile=D",
        "-c",
        "dir:///ws",
        "--destination",
        "a/b:c",
        "-d",
        "x/y",
        "--no-push",
        "--insecure=true",
        "--build-arg",
        "A=1",
    ])
    .unwrap();
    assert_eq!(c.destinations, ["a/b:c", "x/y"]);
    assert!(c.no_push && c.insecure);
    assert_eq!(
        Source::parse(&c.context).unwrap(),
        Source::Dir(PathBuf::from("/ws"))
    );
    assert!(Cli::try_parse_from(["executor", "--bogus"]).is_err());
    assert!(Source::parse("ftp://x").is_err());
    assert!(key_values("label", &["=x".into()], false).is_err());
    // BuildKit's --progress names.
    let c = Cli::try_parse_from(["executor", "--progress=plain"]).unwrap();
    assert!(!c.terminal_view() && !c.json_log());
    let c = Cli::try_parse_from(["executor", "--progress=tty"]).unwrap();
    assert!(c.terminal_view());
    let c = Cli::try_parse_from(["executor", "--progress=tty", "--log-format=json"]).unwrap();
    assert!(!c.terminal_view(), "never among JSON lines");
    let c = Cli::try_parse_from(["executor", "--progress=rawjson"]).unwrap();
    assert!(c.json_log() && !c.terminal_view());
    assert!(Cli::try_parse_from(["executor", "--progress=fancy"]).is_err());
    // Kaniko's default log format and every logrus level are taken.
    let c = Cli::try_parse_from(["executor", "--log-format=color", "-v", "trace"]).unwrap();
    assert_eq!(c.log_format, LogFormat::Color);
    assert_eq!(c.verbosity.level(), kiln::log::Level::Debug);
    assert!(Cli::try_parse_from(["executor", "--verbosity=loud"]).is_err());
}

#[test]
fn validation_names_the_flag_and_value() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    let ctx = dir.path().to_str().unwrap().to_string();
    let err = |extra: &[&str]| {
        let mut args = vec!["executor", "-c", &ctx];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(&[]),
        "--destination: none given; pass one or more, or --no-push"
    );
    assert!(err(&["-d", "Not A/Ref"]).starts_with("--destination Not A/Ref: "));
    assert_eq!(
        err(&["--no-push", "--cache-ttl", "soon"]),
        "--cache-ttl soon: expected a duration like 336h"
    );
    assert!(err(&["--no-push", "-f", "Nope"]).starts_with("--dockerfile Nope: no such file"));
    let o = Cli::try_parse_from(["executor", "-c", &ctx, "-d", "reg:5000/a/b:t", "--cache"])
        .unwrap()
        .validate()
        .unwrap();
    // The cache repository defaults to <destination>/cache.
    let repo = o.cache.repo.unwrap();
    assert_eq!(repo.to_string(), "reg:5000/a/b/cache:latest");
    assert!(o.check_push && o.outputs.push);
}
