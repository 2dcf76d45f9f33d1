//! Dockerfile text → nodes, following BuildKit's `parser` package rule for rule:
//! parser directives, line continuations (comments and blank lines inside them),
//! leading `--flags`, JSON versus shell form, heredocs. No expansion happens here.

use std::fmt::Write as _;

/// A syntax error with the Dockerfile lines it covers.
#[derive(Debug, thiserror::Error)]
#[error("Dockerfile:{line}: {message}")]
pub(crate) struct ParseError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

/// One instruction as BuildKit's parser sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Node {
    /// Lower-case instruction keyword (`copy`, `from` …).
    pub(crate) keyword: String,
    /// The keyword as written, for messages.
    pub(crate) original_keyword: String,
    /// Leading `--flag[=value]` words, unparsed.
    pub(crate) flags: Vec<String>,
    /// Arguments after the line parser for this keyword ran.
    pub(crate) args: Vec<String>,
    /// True when the arguments came from a JSON array.
    pub(crate) json: bool,
    /// The logical line (continuations joined), for history and messages.
    pub(crate) original: String,
    /// ONBUILD's wrapped instruction.
    pub(crate) sub: Option<Box<Node>>,
    pub(crate) heredocs: Vec<Heredoc>,
    /// 1-based first and last physical line.
    pub(crate) start_line: usize,
    pub(crate) end_line: usize,
}

/// A here-document attached to RUN, COPY or ADD.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Heredoc {
    pub(crate) name: String,
    pub(crate) content: String,
    /// False when the delimiter was quoted: no expansion of the body.
    pub(crate) expand: bool,
    /// `<<-`: leading tabs stripped.
    pub(crate) chomp: bool,
    /// The body lines as written (tabs kept), for ONBUILD trigger texts.
    pub(crate) raw: String,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone)]
pub(crate) struct Ast {
    pub(crate) escape: char,
    pub(crate) syntax: Option<String>,
    /// `# check=` as written: which build checks run and whether they fail the build.
    pub(crate) check: Option<String>,
    /// The last line of each instruction that had an empty continuation line
    /// (where BuildKit reports NoEmptyContinuation).
    pub(crate) empty_continuations: Vec<usize>,
    pub(crate) nodes: Vec<Node>,
}

/// Parses a whole Dockerfile.
pub(crate) fn parse(text: &str) -> Result<Ast, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split('\n').collect();
    // A final newline does not start another line.
    let count = if text.ends_with('\n') {
        lines.len() - 1
    } else {
        lines.len()
    };
    let mut d = Directives::default();
    let mut nodes = Vec::new();
    let mut empty_continuations = Vec::new();
    let mut i = 0;
    while i < count {
        let raw = trim_newline(lines[i]);
        let first = d.process_line(raw, true)?;
        i += 1;
        let start = i;
        let (mut line, mut end_of_line) = d.trim_continuation(first);
        if end_of_line && line.is_empty() {
            continue;
        }
        let mut empty_continuation = false;
        while !end_of_line && i < count {
            let raw = trim_newline(lines[i]);
            let cont = d.process_line(raw, false)?;
            i += 1;
            if is_comment(raw) {
                continue;
            }
            if trim_leading_ws(cont).is_empty() {
                empty_continuation = true;
                continue;
            }
            let (c, eol) = d.trim_continuation(cont);
            line.push_str(&c);
            end_of_line = eol;
        }
        if empty_continuation {
            empty_continuations.push(i);
        }
        let mut node = node_from_line(&line, &d).map_err(|message| ParseError {
            line: start,
            message,
        })?;
        node.start_line = start;
        // Heredocs belong to RUN, COPY and ADD, also as ONBUILD triggers.
        let takes_heredocs = |k: &str| matches!(k, "run" | "copy" | "add");
        let heredoc_keyword = takes_heredocs(&node.keyword)
            || (node.keyword == "onbuild"
                && node
                    .sub
                    .as_ref()
                    .is_some_and(|s| takes_heredocs(&s.keyword)));
        if heredoc_keyword && line.contains("<<") {
            for mut h in heredocs_from_line(&line, d.escape) {
                let mut terminated = false;
                while i < count {
                    let body = trim_newline(lines[i]);
                    i += 1;
                    let candidate = if h.chomp {
                        body.trim_start_matches('\t')
                    } else {
                        body
                    };
                    if candidate == h.name {
                        terminated = true;
                        break;
                    }
                    h.content.push_str(if h.chomp { candidate } else { body });
                    h.content.push('\n');
                    h.raw.push_str(body);
                    h.raw.push('\n');
                }
                if !terminated {
                    return Err(ParseError {
                        line: start,
                        message: format!("unterminated heredoc {:?}", h.name),
                    });
                }
                node.heredocs.push(h);
            }
        }
        node.end_line = i;
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(ParseError {
            line: 1,
            message: "file with no instructions".into(),
        });
    }
    Ok(Ast {
        escape: d.escape,
        syntax: d.syntax,
        check: d.check,
        empty_continuations,
        nodes,
    })
}

struct Directives {
    escape: char,
    syntax: Option<String>,
    check: Option<String>,
    done: bool,
    seen: Vec<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            escape: '\\',
            syntax: None,
            check: None,
            done: false,
            seen: Vec::new(),
        }
    }
}

impl Directives {
    /// Strips comments, optionally leading space, and reads parser directives
    /// while they may still appear (only before anything else).
    fn process_line<'l>(&mut self, line: &'l str, strip_left: bool) -> Result<&'l str, ParseError> {
        let token = if strip_left {
            trim_leading_ws(line)
        } else {
            line
        };
        self.directive(token)?;
        Ok(if is_comment(token) { "" } else { token })
    }

    fn directive(&mut self, line: &str) -> Result<(), ParseError> {
        if self.done {
            return Ok(());
        }
        let Some((name, value)) = parse_directive(line) else {
            self.done = true;
            return Ok(());
        };
        let name = name.to_ascii_lowercase();
        if !matches!(name.as_str(), "escape" | "syntax" | "check") {
            self.done = true;
            return Ok(());
        }
        if self.seen.contains(&name) {
            return Err(ParseError {
                line: 1,
                message: format!("only one {name} parser directive can be used"),
            });
        }
        self.seen.push(name.clone());
        match name.as_str() {
            "escape" => {
                self.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    other => {
                        return Err(ParseError {
                            line: 1,
                            message: format!(
                                "invalid escape token '{other}' does not match ` or \\"
                            ),
                        })
                    }
                }
            }
            "syntax" => self.syntax = Some(value.to_string()),
            "check" => self.check = Some(value.to_string()),
            _ => {}
        }
        Ok(())
    }

    /// Removes a trailing escape character (plus blanks); false when one was removed.
    fn trim_continuation(&self, line: &str) -> (String, bool) {
        // BuildKit: the escape must follow a non-escape character or start the
        // line, so `foo\\` (an escaped escape) does not continue.
        let t = line.trim_end_matches([' ', '\t']);
        match t.strip_suffix(self.escape) {
            Some(rest) if !rest.ends_with(self.escape) => (rest.to_string(), false),
            _ => (line.to_string(), true),
        }
    }
}

/// `# name = value` with a name of letters and digits.
fn parse_directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start_matches([' ', '\t']);
    let name_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if name_len == 0 {
        return None;
    }
    let (name, rest) = rest.split_at(name_len);
    let value = rest.trim_start_matches([' ', '\t']).strip_prefix('=')?;
    let value = value.trim_matches([' ', '\t']);
    (!value.is_empty()).then_some((name, value))
}

fn trim_newline(s: &str) -> &str {
    s.strip_suffix('\r').unwrap_or(s)
}

fn trim_leading_ws(s: &str) -> &str {
    s.trim_start_matches([' ', '\t'])
}

fn is_comment(s: &str) -> bool {
    trim_leading_ws(s).starts_with('#')
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{b}' | '\u{c}' | '\r')
}

/// Splits on runs of `[\t\v\f\r ]`, like Go's `regexp.Split(s, n)`.
fn split_ws(s: &str, limit: Option<usize>) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if limit.is_some_and(|n| out.len() + 1 == n) {
            out.push(rest.to_string());
            return out;
        }
        match rest.find(is_ws) {
            Some(at) => {
                out.push(rest[..at].to_string());
                rest = rest[at..].trim_start_matches(is_ws);
            }
            None => {
                out.push(rest.to_string());
                return out;
            }
        }
    }
}

fn node_from_line(line: &str, d: &Directives) -> Result<Node, String> {
    let trimmed = line.trim();
    let mut parts = split_ws(trimmed, Some(2)).into_iter();
    let cmd = parts.next().unwrap_or_default();
    let (rest, flags) = match parts.next() {
        Some(rest) => extract_flags(&rest),
        None => (String::new(), Vec::new()),
    };
    let rest = rest.trim().to_string();
    let keyword = cmd.to_ascii_lowercase();
    let mut node = Node {
        keyword: keyword.clone(),
        original_keyword: cmd.clone(),
        flags,
        original: line.to_string(),
        ..Node::default()
    };
    match keyword.as_str() {
        "add" | "copy" | "volume" => match parse_json(&rest)? {
            Some(args) => {
                node.args = args;
                node.json = true;
            }
            None => node.args = split_ws_all(&rest),
        },
        "cmd" | "entrypoint" | "run" | "shell" if !rest.is_empty() => match parse_json(&rest)? {
            Some(args) => {
                node.args = args;
                node.json = true;
            }
            None => node.args = vec![rest],
        },
        "arg" => node.args = parse_words(&rest, d.escape),
        "env" | "label" => node.args = parse_name_val(&rest, &keyword, d.escape)?,
        "expose" | "from" => node.args = split_ws_all(&rest),
        "maintainer" | "stopsignal" | "user" | "workdir" if !rest.is_empty() => {
            node.args = vec![rest]
        }
        "healthcheck" => {
            let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
            if sep > 0 {
                node.args.push(rest[..sep].to_string());
                let cmd = rest[sep..].trim_start();
                if !cmd.is_empty() {
                    match parse_json(cmd)? {
                        Some(args) => {
                            node.args.extend(args);
                            node.json = true;
                        }
                        None => node.args.push(cmd.to_string()),
                    }
                }
            }
        }
        "onbuild" if !rest.is_empty() => node.sub = Some(Box::new(node_from_line(&rest, d)?)),
        // Unknown keywords parse to nothing; the instruction layer rejects them.
        _ => {}
    }
    Ok(node)
}

fn split_ws_all(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    split_ws(rest, None)
}

/// `Ok(None)` when `rest` is not a JSON array; an error for arrays of non-strings.
fn parse_json(rest: &str) -> Result<Option<Vec<String>>, String> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(None);
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(rest) {
        Ok(values) => values
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Ok(s),
                _ => Err("dockerfile: JSON array must contain only strings".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Err(_) => Ok(None),
    }
}

/// Leading `--name[=value]` words; `--` ends them. Returns the rest of the line.
fn extract_flags(line: &str) -> (String, Vec<String>) {
    let b: Vec<char> = line.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut quote = '\0';
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let mut phase = Phase::Spaces;
    let mut pos = 0;
    let rest_from = |pos: usize| b[pos..].iter().collect::<String>();
    while pos <= b.len() {
        let ch = b.get(pos).copied().unwrap_or('\0');
        if phase == Phase::Spaces {
            if pos == b.len() {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            if ch != '-' || b.get(pos + 1) != Some(&'-') {
                return (rest_from(pos), words);
            }
            phase = Phase::Word;
        }
        if pos == b.len() {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (rest_from(pos), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if ch == '\\' {
                if pos + 1 == b.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = b[pos];
            }
            word.push(c);
            pos += 1;
            continue;
        }
        // In quotes.
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut c = ch;
        if ch == '\\' {
            if pos + 1 == b.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            c = b[pos];
        }
        word.push(c);
        pos += 1;
    }
    (String::new(), words)
}

/// Words separated by blanks; quotes and escapes are kept for the expander.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let b: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut pos = 0;
    while pos < b.len() {
        let ch = b[pos];
        match quote {
            None => {
                if ch.is_whitespace() {
                    if in_word && (blank_ok || !word.is_empty()) {
                        words.push(std::mem::take(&mut word));
                    }
                    in_word = false;
                    blank_ok = false;
                    pos += 1;
                    continue;
                }
                in_word = true;
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    if pos + 1 == b.len() {
                        pos += 1;
                        continue;
                    }
                    word.push(ch);
                    pos += 1;
                }
                word.push(b[pos]);
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                }
                if ch == escape && q != '\'' {
                    if pos + 1 == b.len() {
                        quote = None;
                        pos += 1;
                        continue;
                    }
                    word.push(ch);
                    pos += 1;
                }
                word.push(b[pos]);
            }
        }
        pos += 1;
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// ENV/LABEL: `key value` (old form) or `k=v …`; output triples key, value, sep.
fn parse_name_val(rest: &str, keyword: &str, escape: char) -> Result<Vec<String>, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    let upper = keyword.to_ascii_uppercase();
    if !first.contains('=') {
        let parts = split_ws(rest, Some(2));
        if parts.len() < 2 {
            return Err(format!("{upper} must have two arguments"));
        }
        return Ok(vec![parts[0].clone(), parts[1].clone(), String::new()]);
    }
    let mut out = Vec::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {w:?}. Must be of the form: name=value"
            ));
        };
        out.extend([k.to_string(), v.to_string(), "=".to_string()]);
    }
    Ok(out)
}

/// Heredoc markers (`<<EOF`, `<<-EOF`, `<<"EOF"`, and with a file descriptor,
/// `3<<EOF`: BuildKit's `^(\d*)<<(-?)([^<]*)$`) in the words of a line.
fn heredocs_from_line(line: &str, escape: char) -> Vec<Heredoc> {
    let mut out = Vec::new();
    for word in parse_words(line, escape) {
        // The descriptor only matters to the shell, which reads it in the command.
        let Some(rest) = word
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .strip_prefix("<<")
        else {
            continue;
        };
        let (chomp, rest) = match rest.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let rest = rest.trim_start();
        if rest.is_empty() || rest.contains('<') {
            continue;
        }
        let quoted = rest.contains('"') || rest.contains('\'');
        let name: String = rest.chars().filter(|&c| c != '"' && c != '\'').collect();
        if name.is_empty() {
            continue;
        }
        out.push(Heredoc {
            name,
            content: String::new(),
            expand: !quoted,
            chomp,
            raw: String::new(),
        });
    }
    out
}

/// BuildKit's `Node.Dump()` form, used by its golden tests.
#[cfg(test)]
fn dump(node: &Node) -> String {
    let mut s = node.keyword.clone();
    if !node.flags.is_empty() {
        s.push_str(" [");
        let quoted: Vec<String> = node.flags.iter().map(|f| go_quote(f)).collect();
        s.push_str(&quoted.join(" "));
        s.push(']');
    }
    if let Some(sub) = &node.sub {
        let _ = write!(s, " ({})", dump(sub));
    }
    for a in &node.args {
        s.push(' ');
        s.push_str(&go_quote(a));
    }
    s.trim().to_string()
}

/// Go's `strconv.Quote` (also what `%q` prints): printable characters kept, the
/// rest escaped. BuildKit's golden dumps and history texts both use it.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests;
