use super::*;
use crate::dockerfile::parser::Heredoc;

#[test]
fn ignored_paths_leave_the_layer_whatever_names_them() {
    use crate::layer::entries::Planned;
    use crate::layer::writer::{EntryBody, EntryMeta};
    let entry = || Planned {
        meta: EntryMeta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        },
        body: EntryBody::Bytes(Vec::new()),
    };
    let mut entries: Entries = [
        "var",
        "var/cache",
        "var/cache/apt/x",
        "var/.wh.cache",
        "var/cache/.wh..wh..opq",
        "var/cachet",
        ".wh.tmp",
        "keep",
    ]
    .into_iter()
    .map(|p| (PathKey(p.to_string()), entry()))
    .collect();
    drop_ignored(&mut entries, &["var/cache".into(), "tmp".into()]);
    let left: Vec<&str> = entries.keys().map(|k| k.0.as_str()).collect();
    assert_eq!(left, ["keep", "var", "var/cachet"]);
}

fn run(cmd: CommandLine, heredocs: Vec<Heredoc>) -> Run {
    Run {
        command: cmd,
        heredocs,
        mounts: Vec::new(),
        network: None,
    }
}

fn doc(name: &str, content: &str) -> Heredoc {
    Heredoc {
        name: name.into(),
        content: content.into(),
        expand: true,
        chomp: false,
        raw: content.into(),
    }
}

#[test]
fn proxy_build_args_in_both_cases() {
    let args = [
        ("HTTP_PROXY".to_string(), "http://p:3128".to_string()),
        ("no_proxy".to_string(), "localhost".to_string()),
        ("OTHER".to_string(), "x".to_string()),
    ];
    let env: Env = proxy_env(&args).into_iter().collect();
    let want: Env = [
        ("HTTP_PROXY", "http://p:3128"),
        ("http_proxy", "http://p:3128"),
        ("NO_PROXY", "localhost"),
        ("no_proxy", "localhost"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(env, want);
    assert!(is_proxy_arg("All_Proxy") && !is_proxy_arg("PROXY"));
}

#[test]
fn command_lines_as_buildkit_builds_them() {
    let cfg = ImageConfig::default();
    let env: Env = [("V".to_string(), "1".to_string())].into();
    let p = prepare(
        &run(CommandLine::Shell("echo hi".into()), vec![]),
        &cfg,
        &["V".into(), "W".into(), "V".into()],
        &env,
    );
    assert_eq!(p.argv, ["/bin/sh", "-c", "echo hi"]);
    // W was declared without a value; V twice (a parent stage's, then its own).
    assert_eq!(p.history, "RUN |2 V=1 W= /bin/sh -c echo hi # buildkit");
    let p = prepare(
        &run(CommandLine::Exec(vec!["a".into(), "b c".into()]), vec![]),
        &cfg,
        &[],
        &env,
    );
    assert_eq!(p.argv, ["a", "b c"]);
    let p = prepare(
        &run(
            CommandLine::Shell("<<EOF".into()),
            vec![doc("EOF", "echo x\n")],
        ),
        &cfg,
        &[],
        &env,
    );
    assert_eq!(p.argv, ["/bin/sh", "-c", "echo x\n"]);
    let p = prepare(
        &run(
            CommandLine::Shell("<<EOF".into()),
            vec![doc("EOF", "#!/bin/sh\necho x\n")],
        ),
        &cfg,
        &[],
        &env,
    );
    assert_eq!(p.argv, ["/bin/sh", "-c", "/dev/pipes/EOF"]);
    let p = prepare(
        &run(
            CommandLine::Shell("cat <<A <<B".into()),
            vec![doc("A", "1\n"), doc("B", "2\n")],
        ),
        &cfg,
        &[],
        &env,
    );
    assert_eq!(p.argv[2], "cat <<A <<B\n1\nA\n2\nB");
}
