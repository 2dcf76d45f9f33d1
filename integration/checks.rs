//! Build checks against BuildKit v0.21: for Dockerfiles that break rules, the
//! warnings BuildKit prints (rule and line) are the ones Kiln logs, and where
//! `# check=error=true` (or the `BUILDKIT_DOCKERFILE_CHECK` build arg) asks for
//! it both refuse the build. Every case is `FROM scratch` without RUN.
//! BuildKit's warnings and errors are recorded in `testdata/references/checks/`
//! (`common::reference`; `integration/refresh-references` remakes them).

mod common;

use common::*;
use std::path::Path;
use std::process::Output;

/// (rule, line) pairs, sorted.
type Seen = Vec<(String, usize)>;

/// BuildKit's plain progress: `#1 WARN: Rule: message (line N)`.
fn buildkit_warnings(stderr: &str) -> Seen {
    let mut seen: Seen = stderr
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("WARN: ")? + 6..];
            let (rule, _) = rest.split_once(": ")?;
            let line = rest.rsplit_once("(line ")?.1.strip_suffix(')')?;
            Some((rule.to_string(), line.parse().ok()?))
        })
        .collect();
    seen.sort();
    seen
}

/// Kiln's log: `WARN Rule: message (Dockerfile:N)`.
fn kiln_warnings(stderr: &str) -> Seen {
    let mut seen: Seen = stderr
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("WARN ")? + 5..];
            let (rule, _) = rest.split_once(": ")?;
            let line = rest.rsplit_once("(Dockerfile:")?.1.strip_suffix(')')?;
            Some((rule.to_string(), line.parse().ok()?))
        })
        .collect();
    seen.sort();
    seen
}

/// What BuildKit said of a build, as recorded: whether it built, and its
/// warning and error lines (its progress lines carry times and are left out).
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Said {
    built: bool,
    lines: Vec<String>,
}

struct Both {
    buildkit: Said,
    kiln: Output,
}

/// Builds `dockerfile` with Kiln (`--no-push`), with build args; BuildKit's
/// result is the recorded one.
fn build_both(name: &str, dockerfile: &str, args: &[(&str, &str)]) -> Both {
    let reg = TestRegistry::start();
    let ctx = tempfile::tempdir().unwrap();
    write_context(ctx.path(), &[("Dockerfile", dockerfile), ("a.txt", "a\n")]);
    let mut inputs = dockerfile.to_string();
    for (k, v) in args {
        inputs += &format!("--build-arg {k}={v}\n");
    }
    let buildkit = recorded("checks", name, &inputs, || {
        // BuildKit's plain progress drops a warning now and then (they race
        // the end of its status stream, and a cached solve prints none): the
        // union of three uncached builds, sorted. A refused build's error
        // names its rules, so only that is kept of it.
        let ph = Placeholders::default().text(&reg.host, "{REG}");
        let mut said: Option<Said> = None;
        for _ in 0..3 {
            let mut bk = buildkit_command(
                ctx.path(),
                &ctx.path().join("Dockerfile"),
                &format!("{}/bk-{name}:1", reg.host),
            );
            for (k, v) in args {
                bk.args(["--opt", &format!("build-arg:{k}={v}")]);
            }
            bk.arg("--no-cache");
            let out = bk.output().expect("run BuildKit");
            let built = out.status.success();
            let lines: std::collections::BTreeSet<String> = stderr(&out)
                .lines()
                .filter_map(|l| {
                    let l = l.find("WARN: ").map_or(l, |at| &l[at..]);
                    let keep = l.starts_with("error:") || (built && l.starts_with("WARN: "));
                    keep.then(|| ph.apply(l))
                })
                .collect();
            let s = said.get_or_insert(Said {
                built,
                lines: Vec::new(),
            });
            assert_eq!(s.built, built, "BuildKit built {name} only sometimes");
            s.lines = lines
                .into_iter()
                .chain(s.lines.drain(..))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
        }
        said.expect("three builds")
    });
    let dest = format!("{}/kiln-{name}:1", reg.host);
    let mut flags = vec!["--no-push", "--log-format", "text"];
    let arg_flags: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for a in &arg_flags {
        flags.extend(["--build-arg", a.as_str()]);
    }
    let kiln = build_with(Path::new(ctx.path()), &dest, &flags);
    Both { buildkit, kiln }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Both build, and both report the same rules on the same lines.
fn same_warnings(name: &str, dockerfile: &str, args: &[(&str, &str)]) -> Seen {
    let both = build_both(name, dockerfile, args);
    let (bk, kiln) = (both.buildkit.lines.join("\n"), stderr(&both.kiln));
    assert!(both.buildkit.built, "BuildKit failed: {bk}");
    assert!(both.kiln.status.success(), "Kiln failed: {kiln}");
    let want = buildkit_warnings(&bk);
    assert!(!want.is_empty(), "BuildKit reported nothing: {bk}");
    assert_eq!(kiln_warnings(&kiln), want, "Kiln's log:\n{kiln}");
    want
}

/// Both refuse; Kiln's error names `Dockerfile:line` and each rule.
fn both_refuse(name: &str, dockerfile: &str, args: &[(&str, &str)], line: usize, rules: &[&str]) {
    let both = build_both(name, dockerfile, args);
    let (bk, kiln) = (both.buildkit.lines.join("\n"), stderr(&both.kiln));
    assert!(!both.buildkit.built, "BuildKit built it: {bk}");
    assert!(bk.contains("lint violation found for rules"), "{bk}");
    assert!(!both.kiln.status.success(), "Kiln built it: {kiln}");
    let error = format!(
        "Dockerfile:{line}: lint violation found for rules: {}",
        rules.join(", ")
    );
    assert!(kiln.contains(&error), "want {error:?} in:\n{kiln}");
    for rule in rules {
        assert!(bk.contains(rule), "BuildKit does not name {rule}: {bk}");
    }
}

#[test]
fn instruction_rules_match_buildkit() {
    let seen = same_warnings(
        "instructions",
        "FROM scratch as Build\nmaintainer me\nENV PASSWORD=x\nENV A b\nCMD echo hi\nCMD echo ho\nWORKDIR rel\nCOPY $NOPE a.txt /x\nLABEL k v\nENV C=1 \\\n\n  D=2\nENV E=1 F=$E G=${UNSET:-x}\nUSER $VERSON\nARG VERSION=1\nVOLUME /v/$VERSON\n",
        &[],
    );
    assert!(seen.len() >= 12, "{seen:?}");
}

#[test]
fn stage_and_from_rules_match_buildkit() {
    same_warnings(
        "stages",
        "ARG IMG\nFROM scratch AS context\nFROM ${IMG} AS a\nENTRYPOINT x\nHEALTHCHECK NONE\nHEALTHCHECK NONE\nFROM --platform=linux/amd64 scratch AS b\nFROM --platform=$TARGETPLATFORM scratch$UNDECLARED\nARG GITHUB_TOKEN\nCOPY a.txt /\nENTRYPOINT [\"/x\"]\n",
        &[("IMG", "scratch")],
    );
}

#[test]
fn skipped_rules_stay_quiet_as_in_buildkit() {
    let seen = same_warnings(
        "skip",
        "# check=skip=JSONArgsRecommended,StageNameCasing\nFROM scratch AS Bad\nCMD echo hi\nentrypoint [\"x\"]\n",
        &[],
    );
    assert!(
        seen.iter().all(|(r, _)| r != "JSONArgsRecommended"),
        "{seen:?}"
    );
}

#[test]
fn check_error_refuses_as_buildkit_does() {
    both_refuse(
        "error",
        "# check=error=true\nFROM scratch\nCOPY a.txt /\nCMD echo hi\n",
        &[],
        4,
        &["JSONArgsRecommended"],
    );
}

#[test]
fn check_build_arg_overrides_the_directive() {
    both_refuse(
        "error-arg",
        "# check=skip=all\nFROM scratch\nWORKDIR rel\n",
        &[("BUILDKIT_DOCKERFILE_CHECK", "error=true")],
        3,
        &["WorkdirRelativePath"],
    );
}
