//! Word expansion with BuildKit's rules (its `shell.Lex`): quotes, escapes,
//! `$V`, `${V}`, `${V:-x}`, `${V-x}`, `${V:+x}`, `${V+x}`, `${V:?m}`, `${V?m}`,
//! `${V#p}`, `${V##p}`, `${V%p}`, `${V%%p}`, `${V/p/r}`, `${V//p/r}`.
//!
//! One pass produces both the joined word (`expand`) and the word list split on
//! unquoted whitespace that came from the source or from a variable (`expand_words`).

use std::collections::{BTreeMap, BTreeSet};

/// A word that could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {reason}")]
pub struct ShellError {
    pub(crate) word: String,
    pub(crate) reason: String,
}

/// Variables visible to an expansion. Keys are case-sensitive (Linux).
pub(crate) type Env = BTreeMap<String, String>;

/// Result of one expansion: the word and its split form.
#[derive(Debug, Default)]
pub(crate) struct Expanded {
    pub(crate) word: String,
    pub(crate) words: Vec<String>,
}

/// Expands `word` with escape character `escape` against `env`.
pub(crate) fn expand(word: &str, escape: char, env: &Env) -> Result<String, ShellError> {
    Ok(process(word, escape, env)?.word)
}

/// Expands `word` and splits it into words after expansion.
pub(crate) fn expand_words(word: &str, escape: char, env: &Env) -> Result<Vec<String>, ShellError> {
    Ok(process(word, escape, env)?.words)
}

/// Expands the body of a `COPY <<EOF` heredoc as BuildKit does (its dispatch
/// uses `NewLex('\\')` with `SkipProcessQuotes`): variables and `\` escapes
/// only, whatever the escape directive; quotes are file content and stay.
pub(crate) fn expand_heredoc(body: &str, env: &Env) -> Result<String, ShellError> {
    Ok(run(body, '\\', false, env)?.word)
}

/// Full expansion result: the word and its split form.
pub(crate) fn process(word: &str, escape: char, env: &Env) -> Result<Expanded, ShellError> {
    run(word, escape, true, env)
}

fn run(word: &str, escape: char, quotes: bool, env: &Env) -> Result<Expanded, ShellError> {
    run_with_matches(word, escape, quotes, env).0
}

/// The variables one expansion looked up, found or not (BuildKit's
/// `ProcessWordWithMatches`): the build checks read them.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Matches {
    pub(crate) matched: BTreeSet<String>,
    pub(crate) unmatched: BTreeSet<String>,
}

/// Expands `word` and says which variables it looked up; the matches are
/// known even when the expansion fails.
pub(crate) fn process_with_matches(
    word: &str,
    escape: char,
    env: &Env,
) -> (Result<Expanded, ShellError>, Matches) {
    run_with_matches(word, escape, true, env)
}

fn run_with_matches(
    word: &str,
    escape: char,
    quotes: bool,
    env: &Env,
) -> (Result<Expanded, ShellError>, Matches) {
    let mut lx = Lexer {
        chars: word.chars().collect(),
        pos: 0,
        escape,
        raw_escapes: false,
        quotes,
        env,
        matches: Matches::default(),
    };
    let result = match lx.stop_on(None, false) {
        Ok((w, ws)) => Ok(Expanded { word: w, words: ws }),
        Err(reason) => Err(ShellError {
            word: word.to_string(),
            reason,
        }),
    };
    (result, lx.matches)
}

#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }
    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

struct Lexer<'e> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    raw_escapes: bool,
    /// Quotes group and are removed (off for heredoc bodies).
    quotes: bool,
    env: &'e Env,
    matches: Matches,
}

type LexResult<T> = Result<T, String>;

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        let found = self.env.get(name).cloned();
        let seen = match found {
            Some(_) => &mut self.matches.matched,
            None => &mut self.matches.unmatched,
        };
        seen.insert(name.to_string());
        found
    }

    /// Reads until `stop` (consumed) or the end; `raw` keeps escape characters.
    fn stop_on(&mut self, stop: Option<char>, raw: bool) -> LexResult<(String, Vec<String>)> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw;
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> LexResult<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let v = self.dollar()?;
                    result.push_str(&v);
                    words.add_string(&v);
                }
                '\'' if self.quotes => {
                    let v = self.single_quote()?;
                    result.push_str(&v);
                    words.add_raw_string(&v);
                }
                '"' if self.quotes => {
                    let v = self.double_quote()?;
                    result.push_str(&v);
                    words.add_raw_string(&v);
                }
                _ => {
                    self.pos += 1;
                    let mut ch = ch;
                    if ch == self.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        match self.next() {
                            Some(c) => ch = c,
                            None => break,
                        }
                        words.add_raw_char(ch);
                    } else {
                        words.add_char(ch);
                    }
                    result.push(ch);
                }
            }
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.finish()))
    }

    fn single_quote(&mut self) -> LexResult<String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    )
                }
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> LexResult<String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    )
                }
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('$') => {
                    let v = self.dollar()?;
                    out.push_str(&v);
                }
                Some(mut ch) => {
                    self.pos += 1;
                    if ch == self.escape {
                        if self.raw_escapes {
                            out.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.escape => {
                                self.pos += 1;
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(|c| c.is_ascii_digit()) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }

    fn dollar(&mut self) -> LexResult<String> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.lookup(&name).unwrap_or_default());
        }
        self.pos += 1;
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            _ => {}
        }
        let name = self.name();
        let Some(mut op) = self.next() else {
            return Err("syntax error: missing '}'".into());
        };
        let mut null_is_unset = false;
        match op {
            '}' => Ok(self.lookup(&name).unwrap_or_default()),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let mut ops = op.to_string();
                if op == ':' {
                    null_is_unset = true;
                    op = self.next().ok_or("syntax error: missing '}'")?;
                    ops.push(op);
                }
                let raw = op == '#' || op == '%';
                let word = self.modifier_word('}', raw)?;
                let value = self.lookup(&name);
                let empty =
                    |v: &Option<String>| v.as_deref().is_none_or(|v| null_is_unset && v.is_empty());
                match op {
                    '-' => Ok(if empty(&value) {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if empty(&value) { String::new() } else { word }),
                    '?' => match value {
                        None => Err(format!(
                            "{name}: {}",
                            if word.is_empty() {
                                "is not allowed to be unset"
                            } else {
                                &word
                            }
                        )),
                        Some(v) if null_is_unset && v.is_empty() => Err(format!(
                            "{name}: {}",
                            if word.is_empty() {
                                "is not allowed to be empty"
                            } else {
                                &word
                            }
                        )),
                        Some(v) => Ok(v),
                    },
                    '#' | '%' if !null_is_unset => {
                        let (greedy, pat) = match word.strip_prefix(op) {
                            Some(rest) => (true, rest.to_string()),
                            None => (false, word),
                        };
                        let pat = Pattern::parse(&pat, self.escape)?;
                        let value = value.unwrap_or_default();
                        Ok(if op == '#' {
                            pat.trim_prefix(&value, greedy)
                        } else {
                            pat.trim_suffix(&value, greedy)
                        })
                    }
                    _ => Err(format!("unsupported modifier ({ops}) in substitution")),
                }
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                let pattern = self.modifier_word('/', true)?;
                let replacement = self.modifier_word('}', true)?;
                let pat = Pattern::parse(&pattern, self.escape)?;
                let value = self.lookup(&name).unwrap_or_default();
                Ok(pat.replace(&value, &replacement, all))
            }
            other => Err(format!("unsupported modifier ({other}) in substitution")),
        }
    }

    fn modifier_word(&mut self, stop: char, raw: bool) -> LexResult<String> {
        match self.stop_on(Some(stop), raw) {
            Ok((w, _)) => Ok(w),
            Err(_) if self.peek().is_none() => Err(if stop == '/' {
                "syntax error: missing '/' in ${}".into()
            } else {
                "syntax error: missing '}'".into()
            }),
            Err(e) => Err(e),
        }
    }
}

/// A shell wildcard pattern (`*`, `?`, escaped literals) without bracket expressions.
#[derive(Debug)]
struct Pattern(Vec<Tok>);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Star,
    Any,
    Lit(char),
}

impl Pattern {
    fn parse(src: &str, escape: char) -> LexResult<Pattern> {
        let mut toks = Vec::new();
        let mut it = src.chars().peekable();
        while let Some(c) = it.next() {
            match c {
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::Any),
                c if c == escape => match it.next() {
                    // `}` and `/` are escaped only to get past the ${} parser.
                    Some(n @ ('}' | '/' | '*' | '?')) => toks.push(Tok::Lit(n)),
                    Some(n) if n == escape => toks.push(Tok::Lit(n)),
                    Some(n) => {
                        return Err(format!(
                            "invalid pattern ({src}) in substitution: invalid escape '\\{n}'"
                        ))
                    }
                    None => toks.push(Tok::Lit(c)),
                },
                c => toks.push(Tok::Lit(c)),
            }
        }
        Ok(Pattern(toks))
    }

    /// Whether the pattern matches `s` exactly.
    fn matches(&self, s: &[char]) -> bool {
        fn go(p: &[Tok], s: &[char]) -> bool {
            match p.first() {
                None => s.is_empty(),
                Some(Tok::Star) => (0..=s.len()).any(|i| go(&p[1..], &s[i..])),
                Some(Tok::Any) => !s.is_empty() && go(&p[1..], &s[1..]),
                Some(Tok::Lit(c)) => s.first() == Some(c) && go(&p[1..], &s[1..]),
            }
        }
        go(&self.0, s)
    }

    fn trim_prefix(&self, value: &str, greedy: bool) -> String {
        let v: Vec<char> = value.chars().collect();
        let mut ends: Box<dyn Iterator<Item = usize>> = if greedy {
            Box::new((0..=v.len()).rev())
        } else {
            Box::new(0..=v.len())
        };
        match ends.find(|&e| self.matches(&v[..e])) {
            Some(e) => v[e..].iter().collect(),
            None => value.to_string(),
        }
    }

    fn trim_suffix(&self, value: &str, greedy: bool) -> String {
        let v: Vec<char> = value.chars().collect();
        let mut starts: Box<dyn Iterator<Item = usize>> = if greedy {
            Box::new(0..=v.len())
        } else {
            Box::new((0..=v.len()).rev())
        };
        match starts.find(|&s| self.matches(&v[s..])) {
            Some(s) => v[..s].iter().collect(),
            None => value.to_string(),
        }
    }

    fn replace(&self, value: &str, with: &str, all: bool) -> String {
        let v: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let mut i = 0;
        let mut replaced = false;
        while i <= v.len() {
            if !replaced || all {
                // Leftmost, then longest: the regex BuildKit builds has greedy stars.
                if let Some(end) = (i..=v.len()).rev().find(|&e| self.matches(&v[i..e])) {
                    if end > i || !self.0.is_empty() {
                        out.push_str(with);
                        replaced = true;
                        if end > i {
                            i = end;
                            continue;
                        }
                    }
                }
            }
            if i < v.len() {
                out.push(v[i]);
            }
            i += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests;
