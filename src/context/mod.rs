//! The build context: a directory, filtered by `.dockerignore` with BuildKit's
//! pattern rules, and COPY source matching (`*`, `?`, `[...]`, `**`).

mod bucket;
pub mod source;

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid pattern {pattern:?} in {file}")]
    Pattern { pattern: String, file: String },
    #[error("{file}:{line}: illegal exclusion pattern: \"!\"")]
    EmptyExclusion { file: String, line: usize },
}

/// One `.dockerignore` line.
#[derive(Debug, Clone)]
struct IgnoreRule {
    segments: Vec<String>,
    exclusion: bool,
}

/// The build context directory with its ignore rules.
#[derive(Debug, Clone)]
pub struct BuildContext {
    root: PathBuf,
    rules: Vec<IgnoreRule>,
}

impl BuildContext {
    /// Opens `root`, reading `<dockerfile>.dockerignore` beside the Dockerfile if it
    /// exists, else `.dockerignore` at the context root (BuildKit's order).
    pub fn open(root: &Path, dockerfile: Option<&Path>) -> Result<BuildContext, ContextError> {
        let mut candidates = Vec::new();
        if let Some(df) = dockerfile {
            if let Some(name) = df.file_name() {
                let mut n = name.to_os_string();
                n.push(".dockerignore");
                candidates.push(df.with_file_name(n));
            }
        }
        candidates.push(root.join(".dockerignore"));
        let mut rules = Vec::new();
        for c in candidates {
            match std::fs::read_to_string(&c) {
                Ok(text) => {
                    rules = parse_ignore(&text, &c.display().to_string())?;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(ContextError::Io { path: c, source }),
            }
        }
        Ok(BuildContext {
            root: root.to_path_buf(),
            rules,
        })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Whether a context-relative path (no leading `/`) is excluded.
    pub(crate) fn is_ignored(&self, rel: &str) -> bool {
        if rel.is_empty() {
            return false;
        }
        let parts: Vec<&str> = rel.split('/').collect();
        let mut excluded = false;
        for rule in &self.rules {
            if matches_or_parent(&rule.segments, &parts) {
                excluded = !rule.exclusion;
            }
        }
        excluded
    }

    /// Whether `.dockerignore` leaves anything out at all.
    pub(crate) fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Whether any `!` rule could re-include something under an ignored directory.
    pub(crate) fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.exclusion)
    }
}

fn parse_ignore(text: &str, file: &str) -> Result<Vec<IgnoreRule>, ContextError> {
    let mut rules = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (exclusion, pat) = match line.strip_prefix('!') {
            Some(p) => (true, p.trim()),
            None => (false, line),
        };
        // moby's patternmatcher refuses a `!` that excludes nothing: `!` alone, or
        // one whose pattern cleans to `/` (`!/`, `!//`), which ignorefile turns into `!`.
        if exclusion
            && (pat.is_empty() || (pat.starts_with('/') && pattern_segments(pat).is_none()))
        {
            return Err(ContextError::EmptyExclusion {
                file: file.to_string(),
                line: n + 1,
            });
        }
        let Some(segments) = pattern_segments(pat) else {
            continue;
        };
        for s in &segments {
            if !valid_segment(s) {
                return Err(ContextError::Pattern {
                    pattern: line.to_string(),
                    file: file.to_string(),
                });
            }
        }
        rules.push(IgnoreRule {
            segments,
            exclusion,
        });
    }
    Ok(rules)
}

fn valid_segment(s: &str) -> bool {
    // An unterminated bracket expression is a syntax error, as in Go's filepath.Match.
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            '\\' => i += 2,
            '[' => match b[i + 1..].iter().position(|&c| c == ']') {
                Some(p) => i += p + 2,
                None => return false,
            },
            _ => i += 1,
        }
    }
    true
}

/// A pattern cleaned as if rooted (`..` stops at the root) and split into
/// segments; `None` for one that names nothing (`.`, `/`).
pub(crate) fn pattern_segments(pattern: &str) -> Option<Vec<String>> {
    let cleaned = crate::pathname::clean_rooted(pattern);
    (!cleaned.is_empty()).then(|| cleaned.split('/').map(str::to_string).collect())
}

/// Whether the pattern matches the path or a directory above it (matching a
/// directory takes everything under it), as moby's `MatchesOrParentMatches`.
pub(crate) fn matches_or_parent(pat: &[String], parts: &[&str]) -> bool {
    (1..=parts.len()).any(|n| match_segments(pat, &parts[..n]))
}

/// Matches path segments against pattern segments; `**` spans any number of them,
/// except at the end, where it needs at least one: moby's patternmatcher reads
/// `dir/**` as the prefix `dir/`, so `dir` itself does not match.
pub(crate) fn match_segments(pat: &[String], path: &[&str]) -> bool {
    match pat.first() {
        None => path.is_empty(),
        Some(p) if p == "**" && pat.len() == 1 => !path.is_empty(),
        Some(p) if p == "**" => (0..=path.len()).any(|i| match_segments(&pat[1..], &path[i..])),
        Some(p) => {
            !path.is_empty() && match_segment(p, path[0]) && match_segments(&pat[1..], &path[1..])
        }
    }
}

/// Go's `filepath.Match` for one segment: `*`, `?`, `[...]` (with `^`/`!`), `\` escapes.
pub(crate) fn match_segment(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => (0..=s.len()).any(|i| go(&p[1..], &s[i..])),
            Some('?') => !s.is_empty() && go(&p[1..], &s[1..]),
            Some('[') => {
                let Some(end) = p.iter().skip(1).position(|&c| c == ']').map(|e| e + 1) else {
                    return false;
                };
                let Some(&c) = s.first() else { return false };
                let class = &p[1..end];
                let (negate, class) = match class.first() {
                    Some('^' | '!') => (true, &class[1..]),
                    _ => (false, class),
                };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    let lo = class[i];
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        if lo <= c && c <= class[i + 2] {
                            hit = true;
                        }
                        i += 3;
                    } else {
                        if lo == c {
                            hit = true;
                        }
                        i += 1;
                    }
                }
                hit != negate && go(&p[end + 1..], &s[1..])
            }
            Some('\\') if p.len() > 1 => s.first() == Some(&p[1]) && go(&p[2..], &s[1..]),
            Some(&c) => s.first() == Some(&c) && go(&p[1..], &s[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    go(&p, &s)
}

/// Whether a COPY source contains glob characters.
pub(crate) fn has_wildcards(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(rules: &str) -> BuildContext {
        BuildContext {
            root: PathBuf::from("/nonexistent"),
            rules: parse_ignore(rules, "t").unwrap(),
        }
    }

    #[test]
    fn dockerignore_rules() {
        let c = ctx("# comment\n*.log\n!keep.log\n/build\ndocs/**/*.md\n**/tmp\n");
        assert!(c.is_ignored("a.log"));
        assert!(!c.is_ignored("keep.log"));
        assert!(!c.is_ignored("sub/a.log"), "*.log is anchored at the root");
        assert!(c.is_ignored("build/x/y"));
        assert!(c.is_ignored("docs/a/b/c.md"));
        assert!(c.is_ignored("docs/c.md"));
        assert!(c.is_ignored("x/y/tmp/z"));
        assert!(!c.is_ignored("src/main.rs"));
        assert!(parse_ignore("[abc", "t").is_err());
        // BuildKit refuses an exclusion of nothing; the message names file and line.
        for bad in ["!", "! ", "!/", "!//"] {
            let e = parse_ignore(&format!("# c\n*.md\n{bad}\n"), "ctx/.dockerignore");
            assert_eq!(
                e.map(|_| ()).map_err(|e| e.to_string()),
                Err("ctx/.dockerignore:3: illegal exclusion pattern: \"!\"".to_string()),
                "{bad:?}"
            );
        }
        assert!(parse_ignore("!.\n!./\n", "t").is_ok());
        // moby's patternmatcher: `dir/**` is a prefix `dir/`, `**/x` also matches `x`.
        let c = ctx("ig/**\n!ig/foo\n");
        assert!(!c.is_ignored("ig"), "ig/** does not match ig itself");
        assert!(c.is_ignored("ig/bar") && c.is_ignored("ig/sub/baz"));
        assert!(!c.is_ignored("ig/foo") && !c.is_ignored("ig/foo/inner"));
        let c = ctx("**/x\n");
        assert!(c.is_ignored("x") && c.is_ignored("a/b/x") && !c.is_ignored("ax"));
    }

    #[test]
    fn segment_match() {
        assert!(match_segment("*.txt", "a.txt"));
        assert!(match_segment("fil?", "file"));
        assert!(match_segment("[a-c]x", "bx"));
        assert!(!match_segment("[!a-c]x", "bx"));
        assert!(match_segment("a\\*", "a*"));
        assert!(!match_segment("*.txt", "a.txt.bak"));
    }
}
