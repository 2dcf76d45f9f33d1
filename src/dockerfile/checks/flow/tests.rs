use super::*;
use crate::dockerfile::parse_dockerfile;

fn lint_with(
    text: &str,
    args: &[(&str, &str)],
    bases: &[(usize, BaseFacts)],
) -> Vec<(&'static str, usize, String)> {
    let df = parse_dockerfile(text).unwrap();
    let args: BTreeMap<String, String> = args
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let platform = Platform::parse("linux/amd64").unwrap();
    let plan = crate::plan::plan(&df, &args, None, &platform).unwrap();
    let bases: HashMap<usize, BaseFacts> = bases.iter().cloned().collect();
    let scope = Scope {
        build_args: &args,
        predefined: &plan.predefined,
        global: &plan.global,
        stages: &plan.stages,
        bases: &bases,
    };
    check(&df, &scope)
        .into_iter()
        .map(|w| (w.rule.name(), w.line, w.message))
        .collect()
}

fn lint(text: &str) -> Vec<(&'static str, usize, String)> {
    lint_with(text, &[], &[])
}

fn names(text: &str) -> Vec<(&'static str, usize)> {
    lint(text).into_iter().map(|(r, l, _)| (r, l)).collect()
}

#[test]
fn undefined_var_with_a_suggestion() {
    assert_eq!(
        lint("FROM scratch\nARG VERSION=1\nCOPY a /$VERSON\nENV A=$PATH B=${NOPE:-x}\n"),
        [
            (
                "UndefinedVar",
                3,
                "Usage of undefined variable '$VERSON' (did you mean $VERSION?)".into()
            ),
            (
                "UndefinedVar",
                4,
                "Usage of undefined variable '$NOPE'".into()
            ),
        ]
    );
    // A declared ARG without a value is not undefined; nor is a base's ENV.
    let base = BaseFacts {
        env: vec![("FROM_BASE".into(), "1".into())],
        ..BaseFacts::default()
    };
    assert!(lint_with(
        "FROM img\nARG X\nWORKDIR /$X/$FROM_BASE\n",
        &[],
        &[(0, base)]
    )
    .is_empty());
    // RUN's command is the shell's business; only its mounts are expanded.
    assert!(lint("FROM scratch\nRUN echo $NOPE\n").is_empty());
    // One ENV's pairs are expanded before any is set.
    assert_eq!(names("FROM scratch\nENV A=1 B=$A\n"), [("UndefinedVar", 2)]);
}

#[test]
fn undefined_arg_in_from() {
    assert_eq!(
        lint("ARG TAG=1\nFROM busybox:$TAGG\nFROM busybox:$TARGETARCH\n"),
        [
            (
                "InvalidDefaultArgInFrom",
                2,
                "Default value for ARG busybox:$TAGG results in empty or invalid base image name"
                    .into()
            ),
            (
                "UndefinedArgInFrom",
                2,
                "FROM argument 'TAGG' is not declared (did you mean TAG?)".into()
            )
        ]
    );
    assert!(lint("ARG IMG\nFROM ${IMG:-busybox}\n").is_empty());
}

#[test]
fn invalid_default_arg_in_from() {
    assert_eq!(
        lint_with("ARG TAG\nFROM busybox:${TAG}\n", &[("TAG", "1")], &[]),
        [(
            "InvalidDefaultArgInFrom",
            2,
            "Default value for ARG busybox:${TAG} results in empty or invalid base image name"
                .into()
        )]
    );
    assert_eq!(
        names("ARG IMG\nFROM $IMG\n"),
        [("InvalidDefaultArgInFrom", 2)]
    );
    assert!(lint("ARG IMG=Busybox\nFROM scratch AS b\nFROM b\n").is_empty());
    assert_eq!(
        names("ARG IMG=Busybox\nFROM $IMG\n"),
        [("InvalidDefaultArgInFrom", 2)]
    );
}

#[test]
fn platform_flags() {
    assert_eq!(
            lint("FROM --platform=$TARGETPLATFORM scratch\n"),
            [(
                "RedundantTargetPlatform",
                1,
                "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior".into()
            )]
        );
    assert!(lint("FROM --platform=$BUILDPLATFORM scratch\n").is_empty());
    assert_eq!(
        lint("FROM --platform=linux/amd64 scratch AS build\n"),
        [(
            "FromPlatformFlagConstDisallowed",
            1,
            "FROM --platform flag should not use constant value \"linux/amd64\"".into()
        )]
    );
    assert!(lint("FROM --platform=linux/amd64 scratch AS build-amd64\n").is_empty());
}

#[test]
fn workdir_relative_only_first() {
    assert_eq!(
        lint("FROM scratch\nWORKDIR app\nWORKDIR sub\n"),
        [(
            "WorkdirRelativePath",
            2,
            "Relative workdir \"app\" can have unexpected results if the base image changes".into()
        )]
    );
    assert!(lint("FROM scratch\nWORKDIR /app\nWORKDIR sub\n").is_empty());
}

#[test]
fn json_args_and_multiple_instructions() {
    assert_eq!(
            lint("FROM scratch\nCMD a\ncmd [\"b\"]\nENTRYPOINT [\"x\"]\nHEALTHCHECK NONE\nHEALTHCHECK NONE\n"),
            [
                ("JSONArgsRecommended", 2, "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals".into()),
                ("MultipleInstructionsDisallowed", 2, "Multiple cmd instructions should not be used in the same stage because only the last one will be used".into()),
                ("MultipleInstructionsDisallowed", 5, "Multiple HEALTHCHECK instructions should not be used in the same stage because only the last one will be used".into()),
            ]
        );
    // A SHELL (here, or the base's) makes the shell form deliberate.
    assert!(lint("FROM scratch\nSHELL [\"/bin/bash\", \"-c\"]\nENTRYPOINT x\n").is_empty());
    let base = BaseFacts {
        shell: true,
        ..BaseFacts::default()
    };
    assert!(lint_with("FROM img\nCMD x\n", &[], &[(0, base)]).is_empty());
}

#[test]
fn legacy_key_value() {
    assert_eq!(
        lint("FROM scratch\nENV A b c\nLABEL k v\nLABEL k=v\nenv X=1\n"),
        [
            (
                "LegacyKeyValueFormat",
                2,
                "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format"
                    .into()
            ),
            (
                "LegacyKeyValueFormat",
                3,
                "\"LABEL key=value\" should be used instead of legacy \"LABEL key value\" format"
                    .into()
            ),
        ]
    );
}

#[test]
fn secrets_in_arg_or_env() {
    assert_eq!(
            lint("FROM scratch\nARG GITHUB_TOKEN\nENV DB_PASSWORD=x API_KEY_PUBLIC=y\nENV MONKEY=1 AUTH=2 KEYS=3\n"),
            [
                ("SecretsUsedInArgOrEnv", 2, "Do not use ARG or ENV instructions for sensitive data (ARG \"GITHUB_TOKEN\")".into()),
                ("SecretsUsedInArgOrEnv", 3, "Do not use ARG or ENV instructions for sensitive data (ENV \"DB_PASSWORD\")".into()),
                ("SecretsUsedInArgOrEnv", 4, "Do not use ARG or ENV instructions for sensitive data (ENV \"AUTH\")".into()),
            ]
        );
}

#[test]
fn only_dispatched_stages_check_their_steps() {
    // The first stage is not built for the last: its steps are not checked,
    // its FROM line is.
    assert_eq!(
        names("FROM scratch AS unused\nCMD a\nFROM --platform=linux/arm64 scratch\nCMD [\"b\"]\n"),
        [("FromPlatformFlagConstDisallowed", 3)]
    );
    // A stage built on another sees its variables.
    assert!(lint("FROM scratch AS a\nENV V=1\nFROM a\nWORKDIR /$V\n").is_empty());
}

#[test]
fn base_image_platform() {
    let base = BaseFacts {
        name: "busybox".into(),
        expected: Platform::parse("linux/amd64"),
        actual: Platform::parse("linux/arm64"),
        ..BaseFacts::default()
    };
    assert_eq!(
            lint_with("FROM busybox\n", &[], &[(0, base)]),
            [(
                "InvalidBaseImagePlatform",
                1,
                "Base image busybox was pulled with platform \"linux/arm64\", expected \"linux/amd64\" for current build".into()
            )]
        );
}
