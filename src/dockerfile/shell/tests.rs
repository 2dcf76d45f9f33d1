use super::*;

fn conformance_dir() -> std::path::PathBuf {
    crate::testdata::conformance_dir().join("shell")
}

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn buildkit_env_var_test() {
    let text = std::fs::read_to_string(conformance_dir().join("envVarTest"))
        .expect("read testdata/conformance/buildkit/shell/envVarTest");
    let e = env(&[
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]);
    let mut ran = 0;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.splitn(3, '|').collect();
        assert_eq!(f.len(), 3, "line {}: {line}", n + 1);
        let (platform, input, expected) = (f[0].trim(), f[1].trim(), f[2].trim());
        if platform == "W" {
            continue;
        }
        let got = expand(input, '\\', &e);
        if expected == "error" {
            assert!(
                got.is_err(),
                "line {}: {input:?} should fail, got {got:?}",
                n + 1
            );
        } else {
            assert_eq!(got.as_deref(), Ok(expected), "line {}: {input:?}", n + 1);
        }
        ran += 1;
    }
    assert!(ran > 100, "only {ran} cases ran");
}

#[test]
fn buildkit_words_test() {
    let text = std::fs::read_to_string(conformance_dir().join("wordsTest"))
        .expect("read testdata/conformance/buildkit/shell/wordsTest");
    let mut e = Env::new();
    let mut ran = 0;
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(kv) = line.strip_prefix("ENV ") {
            let (k, v) = kv.split_once('=').expect("ENV k=v");
            e.insert(k.to_string(), v.to_string());
            continue;
        }
        let (input, expected) = line.split_once('|').expect("input | words");
        let input = input.trim();
        let expected: Vec<&str> = expected.trim_start_matches(' ').split(',').collect();
        let got = expand_words(input, '\\', &e);
        if expected == ["error"] {
            assert!(got.is_err(), "{input:?} should fail");
        } else {
            assert_eq!(got.expect(input), expected, "{input:?}");
        }
        ran += 1;
    }
    assert!(ran > 15);
}

#[test]
fn pattern_modifiers() {
    let e = env(&[("F", "dir/file.tar.gz")]);
    assert_eq!(expand("${F#*.}", '\\', &e).unwrap(), "tar.gz");
    assert_eq!(expand("${F##*.}", '\\', &e).unwrap(), "gz");
    assert_eq!(expand("${F%.*}", '\\', &e).unwrap(), "dir/file.tar");
    assert_eq!(expand("${F%%.*}", '\\', &e).unwrap(), "dir/file");
    assert_eq!(expand("${F/./_}", '\\', &e).unwrap(), "dir/file_tar.gz");
    assert_eq!(expand("${F//./_}", '\\', &e).unwrap(), "dir/file_tar_gz");
    assert!(expand("${F:#x}", '\\', &e).is_err());
}

#[test]
fn heredoc_bodies_keep_their_quotes() {
    let e = env(&[("name", "world")]);
    let x = |w: &str| expand_heredoc(w, &e).unwrap();
    assert_eq!(x("\"quotes in file\"\n"), "\"quotes in file\"\n");
    assert_eq!(x("Hello '${name}'!"), "Hello 'world'!");
    assert_eq!(
        x("a \"$name\" '$name' ${name:-'d'}"),
        "a \"world\" 'world' world"
    );
    assert_eq!(x("${unset:-'d e'}"), "'d e'");
    // `\` escapes as in a word, the escape directive notwithstanding.
    assert_eq!(x("\\$name \\\\ \\'"), "$name \\ '");
    // An unmatched quote is content, not an error.
    assert_eq!(x("it's $name"), "it's world");
}

#[test]
fn backtick_escape() {
    let e = env(&[("A", "x")]);
    assert_eq!(expand("a`$A", '`', &e).unwrap(), "a$A");
    assert_eq!(expand("c:\\dir\\$A", '`', &e).unwrap(), "c:\\dir\\x");
}
