//! Registry schemes as Kaniko chooses them: in-cluster plain-HTTP registries by
//! their real names, RFC 1918 addresses, plain HTTP under a public-looking name,
//! and HTTPS registries with certificates the client does not trust.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SEED_BASE: &str = "registry.kube-system.svc.cluster.local:5000/ones/plugin-host-node:v6.33.1";
const SEED_DEST: &str = "registry.kube-system.svc.cluster.local:5000/new-image:latest";

/// The seed's context: its Dockerfile with `base` in FROM, and a `main` that prints.
fn seed_context(base: &str, message: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write_context(
        dir.path(),
        &[
            (
                "Dockerfile",
                &format!("FROM {base}\nWORKDIR /usr/local/app\nCOPY main /usr/local/app/main\nENTRYPOINT [\"/usr/local/app/main\"]\n"),
            ),
            ("main", &format!("#!/bin/sh\necho {message}\n")),
        ],
    );
    std::fs::set_permissions(
        dir.path().join("main"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The error line, which must stand alone and carry no retries.
fn assert_fails_once(out: &Output, needles: &[&str]) -> String {
    let e = stderr(out);
    assert!(!out.status.success(), "should fail: {e}");
    for n in needles {
        assert!(e.contains(n), "error should mention `{n}`: {e}");
    }
    assert!(!e.contains("retry"), "not retried as transient: {e}");
    e
}

/// A destination with a scheme or TLS problem is refused before any step runs,
/// naming `cause`; with `fix` added the same build is pushed.
fn refused_up_front_then_pushed(ctx: &Path, dest: &str, flags: &[&str], cause: &str, fix: &[&str]) {
    let mut args = vec!["--context", path(ctx), "--destination", dest];
    args.extend_from_slice(flags);
    let e = assert_fails_once(&executor(&args), &["checking push access", cause]);
    assert!(!e.contains("WORKDIR"), "no step ran before the check: {e}");
    args.extend_from_slice(fix);
    assert_ok(&executor(&args));
}

#[test]
fn seed_command_line_against_cluster_local_registries() {
    map_host("registry.kube-system.svc.cluster.local", "127.77.0.1");
    map_host("registry.other-ns.svc.cluster.local", "127.77.0.2");
    let reg = TestRegistry::start_spec(RegistrySpec {
        addr: Some("127.77.0.1:5000".into()),
        ..Default::default()
    });
    push_busybox_base(&reg, "ones/plugin-host-node:v6.33.1");

    // Exactly the reference deployment's command line.
    let ctx = seed_context(SEED_BASE, "hello from the cluster");
    let df = ctx.path().join("Dockerfile");
    let seed_command = |dest: &str| {
        executor(&[
            "--dockerfile",
            path(&df),
            "--context",
            path(ctx.path()),
            "--destination",
            dest,
            "--insecure",
            "--skip-tls-verify",
        ])
    };
    let out = seed_command(SEED_DEST);
    assert_ok(&out);
    assert!(!stderr(&out).contains("retry"), "{}", stderr(&out));
    assert_eq!(docker_run(SEED_DEST, &[]), "hello from the cluster\n");

    // A second in-cluster registry on another port: base from one, push to the other.
    let port = std::net::TcpListener::bind("127.77.0.2:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let other = TestRegistry::start_spec(RegistrySpec {
        addr: Some(format!("127.77.0.2:{port}")),
        ..Default::default()
    });
    let dest = format!(
        "{}/apps/new-image:latest",
        other.named("registry.other-ns.svc.cluster.local")
    );
    assert_ok(&seed_command(&dest));
    assert_eq!(docker_run(&dest, &[]), "hello from the cluster\n");
}

/// A network namespace with `addr` on its loopback device; deleted on drop.
struct Netns(String);

impl Netns {
    fn new(addr: &str) -> Netns {
        let ip = require("ip", "apt-get install iproute2");
        let name = format!("kiln-rfc1918-{}", std::process::id());
        let run = |args: &[&str]| {
            let out = Command::new(&ip).args(args).output().expect("run ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {} (network namespaces need root; CI runs as root)",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let _ = Command::new(&ip).args(["netns", "del", &name]).output();
        run(&["netns", "add", &name]);
        let ns = Netns(name.clone());
        run(&["-n", &name, "link", "set", "lo", "up"]);
        run(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{addr}/32"),
            "dev",
            "lo",
        ]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

#[test]
fn rfc1918_registry_is_plain_http_without_flags() {
    // 10.213.0.1 exists only inside a namespace this test makes; the registry there
    // shares its storage with one on the host's loopback, which Docker reads from.
    let ns = Netns::new("10.213.0.1");
    let storage = tempfile::tempdir().expect("tempdir");
    let outside = TestRegistry::start_spec(RegistrySpec {
        storage: Some(storage.path().to_path_buf()),
        ..Default::default()
    });
    push_busybox_base(&outside, "ones/base:1");
    let _inside = TestRegistry::start_spec(RegistrySpec {
        addr: Some("10.213.0.1:5000".into()),
        storage: Some(storage.path().to_path_buf()),
        netns: Some(&ns.0),
        ..Default::default()
    });
    let ctx = seed_context("10.213.0.1:5000/ones/base:1", "hello from 10.213.0.1");
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, env!("CARGO_BIN_EXE_executor")])
        .args(["--context", path(ctx.path())])
        .args(["--destination", "10.213.0.1:5000/ones/app:1"])
        .output()
        .expect("run executor in the namespace");
    assert_ok(&out);
    assert_eq!(
        docker_run(&format!("{}/ones/app:1", outside.host), &[]),
        "hello from 10.213.0.1\n"
    );
}

/// A CA and a server certificate for `name`, made with openssl.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn make_pki(name: &str) -> Pki {
    let openssl = require("openssl", "apt-get install openssl");
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |f: &str| dir.path().join(f);
    let run = |args: &[&str]| {
        let out = Command::new(&openssl)
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=kiln test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        &format!("/CN={name}"),
    ]);
    std::fs::write(
        p("ext"),
        format!(
            "subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .expect("write ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
    // A client certificate from the same CA, for mutual TLS.
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=kiln test client",
    ]);
    std::fs::write(
        p("client-ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .expect("write ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.pem",
        "-days",
        "2",
        "-extfile",
        "client-ext",
    ]);
    Pki {
        client_cert: p("client.pem"),
        client_key: p("client.key"),
        ca: p("ca.pem"),
        cert: p("server.pem"),
        key: p("server.key"),
        _dir: dir,
    }
}

fn executor_env(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_executor"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run executor")
}

#[test]
fn https_registry_with_an_untrusted_certificate() {
    map_host("secure-registry.test", "127.0.0.1");
    map_host("wrong-name.test", "127.0.0.1");
    let pki = make_pki("secure-registry.test");
    let reg = TestRegistry::start_spec(RegistrySpec {
        tls: Some((&pki.cert, &pki.key)),
        ..Default::default()
    });
    push_busybox_base(&reg, "ones/base:1");
    let name = reg.named("secure-registry.test");
    let ctx = seed_context(&format!("{name}/ones/base:1"), "hello over TLS");
    let tar = ctx.path().join("out.tar");
    let pull_args = |extra: &[&'static str]| {
        let mut a = vec![
            "--context".to_string(),
            path(ctx.path()).to_string(),
            "--no-push".into(),
            "--tar-path".into(),
            path(&tar).to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |args: &[String], env: &[(&str, &Path)]| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        executor_env(&a, env)
    };

    // Untrusted: one clear line naming the cause and the way out, no retries.
    let out = run(&pull_args(&[]), &[]);
    assert_fails_once(
        &out,
        &[
            "Dockerfile:1",
            "certificate signed by unknown authority",
            &format!("--skip-tls-verify-registry {name}"),
        ],
    );
    // Skipping verification for pulls, or trusting the CA, both work.
    assert_ok(&run(&pull_args(&["--skip-tls-verify-pull"]), &[]));
    assert!(tar.exists());
    std::fs::remove_file(&tar).expect("rm tar");
    assert_ok(&run(&pull_args(&[]), &[("SSL_CERT_FILE", &pki.ca)]));
    assert!(tar.exists());
    std::fs::remove_file(&tar).expect("rm tar");
    // Kaniko's --registry-certificate trusts the CA for that registry.
    let mut args = pull_args(&[]);
    args.extend([
        "--registry-certificate".to_string(),
        format!("{name}={}", path(&pki.ca)),
    ]);
    assert_ok(&run(&args, &[]));
    assert!(tar.exists());
    let mut args = pull_args(&[]);
    args.extend([
        "--registry-certificate".to_string(),
        format!("{name}=/nonexistent/ca.pem"),
    ]);
    assert_fails_once(
        &run(&args, &[]),
        &["--registry-certificate file /nonexistent/ca.pem"],
    );

    // Trusted CA, but a name the certificate does not carry.
    let wrong = reg.named("wrong-name.test");
    let ctx2 = seed_context(&format!("{wrong}/ones/base:1"), "never");
    let out = executor_env(
        &["--context", path(ctx2.path()), "--no-push"],
        &[("SSL_CERT_FILE", &pki.ca)],
    );
    assert_fails_once(
        &out,
        &[
            "Dockerfile:1",
            "certificate is not valid for the host name wrong-name.test",
            "secure-registry.test",
        ],
    );

    // A destination with the same problem fails before any step runs.
    let plain = TestRegistry::start();
    push_busybox_base(&plain, "ones/base:1");
    let ctx3 = seed_context(&format!("{}/ones/base:1", plain.host), "pushed over TLS");
    let dest = format!("{name}/ones/app:1");
    refused_up_front_then_pushed(
        ctx3.path(),
        &dest,
        &[],
        "certificate signed by unknown authority",
        &["--skip-tls-verify"],
    );
    // Read the pushed manifest back with curl, trusting the test CA.
    let curl = require("curl", "apt-get install curl");
    let got = Command::new(curl)
        .args(["-sf", "--cacert", path(&pki.ca), "--resolve"])
        .arg(format!(
            "secure-registry.test:{}:127.0.0.1",
            reg.host.rsplit_once(':').expect("port").1
        ))
        .args([
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json",
        ])
        .arg(format!("https://{name}/v2/ones/app/manifests/1"))
        .output()
        .expect("curl");
    assert!(got.status.success(), "manifest readable over TLS");
    let m: serde_json::Value = serde_json::from_slice(&got.stdout).expect("manifest json");
    assert_eq!(m["layers"].as_array().map(Vec::len), Some(5), "{m}");
}

/// A registry that wants a client certificate: refused without one, pulled
/// from and pushed to with Kaniko's `--registry-client-cert`.
#[test]
fn mutual_tls_with_a_client_certificate() {
    map_host("mtls-registry.test", "127.0.0.1");
    let pki = make_pki("mtls-registry.test");
    let reg = TestRegistry::start_spec(RegistrySpec {
        tls: Some((&pki.cert, &pki.key)),
        client_ca: Some(&pki.ca),
        ..Default::default()
    });
    let name = reg.named("mtls-registry.test");
    // The base goes in, and the result is read back, through a second
    // registry process on the same storage without TLS.
    let side = TestRegistry::start_spec(RegistrySpec {
        storage: Some(reg.storage.clone()),
        ..Default::default()
    });
    push_busybox_base(&side, "ones/base:1");
    let ctx = seed_context(&format!("{name}/ones/base:1"), "hello over mutual TLS");
    let dest = format!("{name}/ones/app:1");
    let ca = format!("{name}={}", path(&pki.ca));
    let client = format!(
        "{name}={},{}",
        path(&pki.client_cert),
        path(&pki.client_key)
    );
    let base = [
        "--context",
        path(ctx.path()),
        "--destination",
        &dest,
        "--registry-certificate",
        &ca,
    ];
    let out = executor(&base);
    // Not assert_fails_once: the server's alert may first show as a reset,
    // which is retried as any reset is.
    let e = stderr(&out);
    assert!(!out.status.success());
    for n in [
        "checking push access".to_string(),
        "wants a client certificate".into(),
        format!("--registry-client-cert {name}=CERT.pem,KEY.pem"),
    ] {
        assert!(e.contains(&n), "{n}: {e}");
    }
    assert!(!e.contains("--skip-tls-verify-registry"), "{e}");
    let mut args = base.to_vec();
    args.extend(["--registry-client-cert", &client]);
    assert_ok(&executor(&args));
    assert!(
        pull(&side, "ones/app:1")
            .files
            .contains_key("usr/local/app/main"),
        "pushed over mutual TLS"
    );
    let out = executor(&[&base[..], &["--registry-client-cert", "x=only-one-file"]].concat());
    assert_fails_once(
        &out,
        &["--registry-client-cert x=only-one-file: expected REGISTRY=CERT.pem,KEY.pem"],
    );
}

#[test]
fn plain_http_registry_under_a_public_name() {
    map_host("plain-registry.test", "127.0.0.1");
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "ones/base:1");
    let name = reg.named("plain-registry.test");
    let ctx = seed_context(&format!("{name}/ones/base:1"), "hello over plain HTTP");

    let out = executor(&["--context", path(ctx.path()), "--no-push"]);
    assert_fails_once(
        &out,
        &[
            "Dockerfile:1",
            "server gave HTTP response to HTTPS client",
            &format!("--insecure-registry {name}"),
        ],
    );
    assert_ok(&executor(&[
        "--context",
        path(ctx.path()),
        "--no-push",
        "--insecure-pull",
    ]));

    // Destinations: refused up front without a flag, pushed with one.
    let dest = format!("{name}/ones/app:1");
    refused_up_front_then_pushed(
        ctx.path(),
        &dest,
        &["--insecure-pull"],
        "server gave HTTP response to HTTPS client",
        &["--insecure-registry", &name],
    );
    assert_eq!(docker_run(&dest, &[]), "hello over plain HTTP\n");
}

/// Kaniko's mirrors: `--registry-mirror` for Docker Hub (with a path prefix, and
/// `;`-separated in KANIKO_REGISTRY_MIRROR), `--registry-map` for any registry,
/// the fallback to the registry itself, and `--skip-default-registry-fallback`.
/// Docker Hub is unreachable here, so a Hub build that succeeds came from the mirror.
#[test]
fn registry_mirrors_and_maps() {
    let mirror = TestRegistry::start();
    let empty = TestRegistry::start();
    let origin = TestRegistry::start();
    push_busybox_base(&mirror, "hub/library/busybox:1.36");
    push_busybox_base(&mirror, "team/base:1");
    push_busybox_base(&origin, "team/own:1");
    let dest = TestRegistry::start();
    let build = |from: &str, tag: &str, flags: &[&str], env: &[(&str, &str)]| {
        let ctx = tempfile::tempdir().unwrap();
        write_context(
            ctx.path(),
            &[
                ("Dockerfile", &format!("FROM {from}\nCOPY a /a\n")),
                ("a", "a\n"),
            ],
        );
        let d = format!("{}/out-{tag}:1", dest.host);
        let mut c = Command::new(env!("CARGO_BIN_EXE_executor"));
        c.args(["--context", path(ctx.path()), "--destination", &d]);
        c.args(flags);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run executor")
    };
    let has_busybox = |tag: &str| {
        pull(&dest, &format!("out-{tag}:1"))
            .files
            .contains_key("usr/bin/busybox")
    };

    let hub_mirror = format!("{}/hub", mirror.host);
    let out = build(
        "busybox:1.36",
        "hub",
        &["--registry-mirror", &hub_mirror],
        &[],
    );
    assert_ok(&out);
    assert!(
        stderr(&out).contains("pulled from the mirror"),
        "{}",
        stderr(&out)
    );
    assert!(has_busybox("hub"));
    // The variable's list is tried in order: the empty mirror, then the one with it.
    let list = format!("{};{hub_mirror}", empty.host);
    let out = build(
        "docker.io/library/busybox:1.36",
        "env",
        &[],
        &[("KANIKO_REGISTRY_MIRROR", &list)],
    );
    assert_ok(&out);
    assert!(
        stderr(&out).contains(&format!("the mirror {}", empty.host)),
        "{}",
        stderr(&out)
    );
    assert!(has_busybox("env"));

    // Any registry, mapped; the origin does not hold team/base.
    let map = format!("{}={}", origin.host, mirror.host);
    let out = build(
        &format!("{}/team/base:1", origin.host),
        "map",
        &["--registry-map", &map],
        &[],
    );
    assert_ok(&out);
    assert!(has_busybox("map"));
    // A mirror without the image: the registry itself, after a warning.
    let to_empty = format!("{}={}", origin.host, empty.host);
    let own = format!("{}/team/own:1", origin.host);
    let out = build(&own, "fallback", &["--registry-map", &to_empty], &[]);
    assert_ok(&out);
    assert!(stderr(&out).contains("trying the next mirror or the registry itself"));
    assert!(has_busybox("fallback"));
    // … unless the fallback is off: the error names the mirrors tried.
    let out = build(
        &own,
        "nofallback",
        &[
            "--registry-map",
            &to_empty,
            "--skip-default-registry-fallback",
        ],
        &[],
    );
    assert_fails_once(
        &out,
        &[
            "not found on any mirror",
            &empty.host,
            "--skip-default-registry-fallback",
        ],
    );
    assert_nothing_pushed(&dest, "out-nofallback:1", "no mirror had the base");
    let out = build(&own, "badmap", &["--registry-map", "no-equals-sign"], &[]);
    assert_fails_once(
        &out,
        &["--registry-map no-equals-sign: expected REGISTRY=MIRROR"],
    );

    // The warmer takes the mirrors too.
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_executor"))
        .args(["warmer", "-c", path(cache.path()), "-i", "busybox:1.36"])
        .args(["--registry-mirror", &hub_mirror])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("warmed"), "{}", stderr(&out));
}
