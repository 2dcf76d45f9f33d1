use super::*;

fn cases(kind: &str) -> Vec<std::path::PathBuf> {
    let dir = crate::testdata::conformance_dir().join(kind);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    v.sort();
    v
}

#[test]
fn buildkit_testfiles() {
    let all = cases("testfiles");
    assert!(
        all.len() >= 33,
        "expected BuildKit's 33 cases, found {}",
        all.len()
    );
    for case in all {
        let text = std::fs::read_to_string(case.join("Dockerfile")).expect("Dockerfile");
        let want = std::fs::read_to_string(case.join("result")).expect("result");
        let ast = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        let got: Vec<String> = ast
            .nodes
            .iter()
            .map(dump)
            .map(|d| format!("({d})"))
            .collect();
        let want: Vec<&str> = want.lines().collect();
        assert_eq!(got, want, "{}", case.display());
    }
}

#[test]
fn buildkit_negative_testfiles() {
    let all = cases("testfiles-negative");
    assert!(all.len() >= 4);
    for case in all {
        let text = std::fs::read_to_string(case.join("Dockerfile")).expect("Dockerfile");
        assert!(parse(&text).is_err(), "{} must fail", case.display());
    }
}

#[test]
fn heredoc_copy() {
    let ast = parse("FROM scratch\nCOPY <<EOF /a\nhello\n$X\nEOF\nCOPY <<-'END' /b\n\tx\n\tEND\n")
        .unwrap();
    assert_eq!(ast.nodes.len(), 3);
    let h = &ast.nodes[1].heredocs[0];
    assert_eq!(
        (h.name.as_str(), h.content.as_str(), h.expand),
        ("EOF", "hello\n$X\n", true)
    );
    let h = &ast.nodes[2].heredocs[0];
    assert_eq!((h.content.as_str(), h.expand), ("x\n", false));
    assert_eq!(ast.nodes[2].start_line, 6);
    assert_eq!(ast.nodes[2].end_line, 8);
}

#[test]
fn heredocs_with_a_file_descriptor() {
    let ast = parse("FROM a\nRUN <<EOF 3<<IN1 4<<-IN2 awk -f -\nBEGIN {}\nEOF\nHello\nIN1\n\tWorld\n\tIN2\nRUN true\n")
            .unwrap();
    assert_eq!(ast.nodes.len(), 3);
    let names: Vec<&str> = ast.nodes[1]
        .heredocs
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(names, ["EOF", "IN1", "IN2"]);
    assert_eq!(ast.nodes[1].heredocs[1].content, "Hello\n");
    assert_eq!(ast.nodes[2].start_line, 9);
    assert_eq!(ast.nodes[1].heredocs[2].raw, "\tWorld\n");
}

#[test]
fn lines_are_tracked() {
    let ast = parse("# escape=`\nFROM a\nCOPY x `\n  y /z\nWORKDIR /w\n").unwrap();
    assert_eq!(ast.escape, '`');
    assert_eq!((ast.nodes[1].start_line, ast.nodes[1].end_line), (3, 4));
    assert_eq!(ast.nodes[1].args, ["x", "y", "/z"]);
    assert_eq!(ast.nodes[2].start_line, 5);
}
