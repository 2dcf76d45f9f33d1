//! The RUN workloads of issue 14 on real distributions, in each setting where
//! RUN works (A, B, C, D, E; BuildKit's results recorded in
//! `testdata/references/workloads/`): apt on Debian, useradd and USER, a multi-stage Go
//! compile, node and bash needing /proc, a large write, a failing command and
//! a process left running. The Debian images are
//! made by debootstrap (integration/fixtures/debian.sh) and cached under
//! /var/tmp; images are checked by the oracle and by `docker run`.

mod common;

use common::*;

/// The Go and node image: Debian bookworm with golang-go, nodejs and setcap.
const TOOLS: &[&str] = &["golang-go", "nodejs", "libcap2-bin"];

/// What `apt-get install` writes whose content differs from run to run or
/// with the Debian fixture (made from the mirror of the day): its logs (times),
/// debconf's, ldconfig's and apt's caches (the package lists), dpkg's and
/// apt's state (every package of the base).
const APT_VARIES: &[&str] = &[
    "var/log/",
    "var/cache/debconf/",
    "var/cache/ldconfig/",
    "var/cache/apt/pkgcache.bin",
    "var/cache/apt/srcpkgcache.bin",
    "var/lib/dpkg/",
    "var/lib/apt/",
];

/// The setcap case's program is a copy of the fixture's /bin/true.
const SETCAP_VARIES: &[&str] = &["usr/local/bin/bind"];

fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    write_context(ctx.path(), files);
    ctx
}

#[test]
fn apt_get_install_matches_buildkit_in_every_setting() {
    let reg = TestRegistry::start();
    push_debian_base(&reg, "debian:12", &[]);
    let df = format!(
        "FROM {}/debian:12\nRUN apt-get update && apt-get install -y --no-install-recommends hello && rm -rf /var/lib/apt/lists/*\n",
        reg.host
    );
    let ctx = context(&[("Dockerfile", &df)]);
    // BuildKit's layer: the same paths (apt's logs and caches differ in content
    // from run to run, not in which files there are). The base, made by
    // debootstrap from the mirror of the day, is not recorded.
    let bk = buildkit_image(&reg, ctx.path(), "workloads", "apt", 1, APT_VARIES);
    let names = |layer: &[String]| -> Vec<String> {
        layer
            .iter()
            .map(|row| row.split(' ').next().unwrap_or("").to_string())
            .collect()
    };
    for setting in Setting::RUN_CAPABLE {
        let got = setting.built(&reg, ctx.path(), "apt");
        let dest = format!("{}/{}", reg.host, setting.repo("apt"));
        assert_eq!(
            names(&got.layers[1]),
            names(&bk.layers[1]),
            "setting {setting:?}: apt's layer"
        );
        assert_eq!(
            got.layers[1], bk.layers[1],
            "setting {setting:?}: modes and owners"
        );
        assert_eq!(
            as_recorded(&reg, &got, 1, APT_VARIES).files,
            bk.files,
            "setting {setting:?}: the files apt wrote (contents but for APT_VARIES)"
        );
        let hello = docker_run(&dest, &["hello"]);
        assert_eq!(hello.trim(), "Hello, world!", "setting {setting:?}");
    }
}

#[test]
fn useradd_then_user_owns_its_files_in_every_setting() {
    let reg = TestRegistry::start();
    push_debian_base(&reg, "debian:12", &[]);
    let df = format!(
        "FROM {}/debian:12\nRUN useradd -m app\nUSER app\nRUN id -u > ~/uid && touch ~/x\n",
        reg.host
    );
    let ctx = context(&[("Dockerfile", &df)]);
    let bk = buildkit_image(&reg, ctx.path(), "workloads", "useradd", 1, &[]);
    for setting in Setting::RUN_CAPABLE {
        let got = setting.built(&reg, ctx.path(), "user");
        let x = &got.files["home/app/x"];
        assert_eq!(
            (x.uid, x.gid),
            (1000, 1000),
            "setting {setting:?}: the image's ids, not the host's"
        );
        assert_eq!(got.files["home/app"].uid, 1000);
        assert_eq!(got.files["home/app/uid"].digest, sha256_of(b"1000\n"));
        assert_eq!(
            got.layers[2], bk.layers[2],
            "setting {setting:?}: USER's layer"
        );
    }
}

#[test]
fn multi_stage_go_compile_runs_in_every_setting() {
    let reg = TestRegistry::start();
    push_debian_base(&reg, "tools:1", TOOLS);
    push_busybox_base(&reg, "small:1");
    let df = format!(
        "FROM {r}/tools:1 AS build\nWORKDIR /src\nCOPY go.mod main.go ./\nRUN CGO_ENABLED=0 go build -o /out/hello . && go version > /out/version\nFROM {r}/small:1\nCOPY --from=build /out/hello /hello\nENTRYPOINT [\"/hello\"]\n",
        r = reg.host
    );
    let ctx = context(&[
        ("Dockerfile", &df),
        ("go.mod", "module hello\n\ngo 1.19\n"),
        (
            "main.go",
            "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"compiled by a RUN\") }\n",
        ),
    ]);
    for setting in Setting::RUN_CAPABLE {
        let dest = format!("{}/{}", reg.host, setting.repo("go"));
        assert_ok(&setting.build(ctx.path(), &dest, &[]));
        assert_eq!(
            docker_run(&dest, &[]).trim(),
            "compiled by a RUN",
            "setting {setting:?}"
        );
    }
}

#[test]
fn node_and_bash_see_proc_in_every_setting() {
    let reg = TestRegistry::start();
    push_debian_base(&reg, "tools:1", TOOLS);
    let df = format!(
        "FROM {}/tools:1\nRUN node -e 'console.log(process.execPath)' > /execpath && bash -c 'cat <(echo x)' > /procsub\n",
        reg.host
    );
    let ctx = context(&[("Dockerfile", &df)]);
    for setting in Setting::RUN_CAPABLE {
        let got = setting.built(&reg, ctx.path(), "node");
        assert_eq!(
            got.files["execpath"].digest,
            sha256_of(b"/usr/bin/node\n"),
            "setting {setting:?}"
        );
        assert_eq!(
            got.files["procsub"].digest,
            sha256_of(b"x\n"),
            "setting {setting:?}"
        );
    }
}

#[test]
fn a_gigabyte_write_is_captured_and_leaves_no_scratch() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    let df = format!(
        "FROM {}/base:1\nRUN busybox head -c 1073741824 /dev/zero > /big && busybox wc -c < /big > /size\n",
        reg.host
    );
    let ctx = context(&[("Dockerfile", &df)]);
    for setting in [Setting::D, Setting::E, Setting::A] {
        let got = setting.built(&reg, ctx.path(), "big");
        assert_eq!(got.files["big"].size, 1 << 30, "setting {setting:?}");
        assert_eq!(got.files["size"].digest, sha256_of(b"1073741824\n"));
    }
}

#[test]
fn setcap_reaches_the_layer_as_buildkit_writes_it_in_every_setting() {
    let reg = TestRegistry::start();
    push_debian_base(&reg, "tools:1", TOOLS);
    let df = format!(
        "FROM {}/tools:1\nRUN cp /bin/true /usr/local/bin/bind && setcap cap_net_bind_service=+ep /usr/local/bin/bind && getcap /usr/local/bin/bind > /getcap\n",
        reg.host
    );
    let ctx = context(&[("Dockerfile", &df)]);
    let bk = buildkit_image(&reg, ctx.path(), "workloads", "setcap", 1, SETCAP_VARIES);
    let want = &bk.files["usr/local/bin/bind"].xattrs;
    assert!(!want.is_empty(), "BuildKit wrote no capability xattr");
    for setting in Setting::RUN_CAPABLE {
        let got = setting.built(&reg, ctx.path(), "cap");
        assert_eq!(
            &got.files["usr/local/bin/bind"].xattrs, want,
            "setting {setting:?}"
        );
        assert_eq!(
            got.files["getcap"].digest, bk.files["getcap"].digest,
            "setting {setting:?}"
        );
        assert_eq!(got.layers[1], bk.layers[1], "setting {setting:?}");
    }
}

#[test]
fn a_failing_command_and_a_process_left_running_in_every_setting() {
    let reg = TestRegistry::start();
    push_busybox_base(&reg, "base:1");
    // A process the step leaves running is killed when the step ends: the next
    // step (in setting A the same container) finds none.
    let df = format!(
        "FROM {}/base:1\nRUN (busybox sleep 6001 &) ; echo left running\nRUN for p in /proc/[0-9]*; do busybox tr '\\0' ' ' < $p/cmdline; echo; done > /procs\n",
        reg.host
    );
    let ctx = context(&[("Dockerfile", &df)]);
    for setting in Setting::RUN_CAPABLE {
        let got = setting.built(&reg, ctx.path(), "left");
        assert!(got.files.contains_key("procs"), "setting {setting:?}");
        let dest = format!("{}/{}", reg.host, setting.repo("left"));
        let procs = docker_run(&dest, &["cat", "/procs"]);
        assert!(
            !procs.contains("sleep 6001"),
            "setting {setting:?}: the process outlived its step: {procs}"
        );
        let host = std::process::Command::new("pgrep")
            .args(["-f", "sleep 6001"])
            .output()
            .expect("pgrep");
        assert!(
            !host.status.success(),
            "setting {setting:?}: still running on this machine"
        );
    }
    let df = format!("FROM {}/base:1\nRUN busybox false\n", reg.host);
    let ctx = context(&[("Dockerfile", &df)]);
    for setting in Setting::RUN_CAPABLE {
        let repo = setting.repo("fails");
        let out = setting.build(ctx.path(), &format!("{}/{repo}", reg.host), &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "setting {setting:?}: built");
        assert!(
            err.contains("Dockerfile:2: process \"/bin/sh -c busybox false\" did not complete successfully: exit code: 1"),
            "setting {setting:?}: {err}"
        );
        assert_nothing_pushed(&reg, &repo, "a failing RUN");
    }
}
