//! `COPY --chmod`: an octal mode, or a symbolic one as chmod(1) writes it
//! (`u+x,go=r`, `a+X,g-w`, `go=u-w`), applied to each entry's own mode as BuildKit
//! v0.21 applies it.

/// A parsed `--chmod` value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Chmod {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

/// One comma-separated part: who, then operations.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Clause {
    who: u32,
    ops: Vec<(char, Perm)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Perm {
    /// `r`, `w`, `x`, `X`, `s`, `t` letters.
    Letters(String),
    /// `u`, `g` or `o`: copy that class's bits.
    Copy(char),
}

const USER: u32 = 0o4700;
const GROUP: u32 = 0o2070;
const OTHER: u32 = 0o1007;

impl Chmod {
    /// Parses `0640` or a symbolic mode; `None` if it is neither.
    pub fn parse(text: &str) -> Option<Chmod> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return u32::from_str_radix(text, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Chmod::Octal);
        }
        text.split(',')
            .map(parse_clause)
            .collect::<Option<Vec<_>>>()
            .map(Chmod::Symbolic)
    }

    /// The mode an entry gets, from the mode it has.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(clauses) => {
                let mut m = mode & 0o7777;
                for c in clauses {
                    for (op, perm) in &c.ops {
                        let bits = perm_bits(perm, m, is_dir, c.who);
                        m = match op {
                            '+' => m | bits,
                            '-' => m & !bits,
                            // `=`: the classes named lose every bit, their
                            // special bit included, then get these.
                            _ => (m & !c.who) | bits,
                        };
                    }
                }
                m
            }
        }
    }
}

fn parse_clause(text: &str) -> Option<Clause> {
    let mut chars = text.chars().peekable();
    let mut who = 0;
    while let Some(&c) = chars.peek() {
        who |= match c {
            'u' => USER,
            'g' => GROUP,
            'o' => OTHER,
            'a' => USER | GROUP | OTHER,
            _ => break,
        };
        chars.next();
    }
    if who == 0 {
        who = USER | GROUP | OTHER;
    }
    let mut ops = Vec::new();
    while let Some(op) = chars.next() {
        if !matches!(op, '+' | '-' | '=') {
            return None;
        }
        let perm = match chars.peek() {
            Some(&c @ ('u' | 'g' | 'o')) => {
                chars.next();
                Perm::Copy(c)
            }
            _ => {
                let mut letters = String::new();
                while let Some(&c) = chars.peek() {
                    if !"rwxXst".contains(c) {
                        break;
                    }
                    letters.push(c);
                    chars.next();
                }
                Perm::Letters(letters)
            }
        };
        ops.push((op, perm));
    }
    (!ops.is_empty()).then_some(Clause { who, ops })
}

/// The bits an operation names, limited to the classes in `who`.
fn perm_bits(perm: &Perm, mode: u32, is_dir: bool, who: u32) -> u32 {
    let rwx = match perm {
        Perm::Copy(c) => {
            let v = match c {
                'u' => (mode >> 6) & 7,
                'g' => (mode >> 3) & 7,
                _ => mode & 7,
            };
            v * 0o111
        }
        Perm::Letters(l) => {
            let mut v = 0;
            for c in l.chars() {
                v |= match c {
                    'r' => 0o444,
                    'w' => 0o222,
                    'x' => 0o111,
                    'X' if is_dir || mode & 0o111 != 0 => 0o111,
                    's' => 0o6000,
                    't' => 0o1000,
                    _ => 0,
                };
            }
            v
        }
    };
    rwx & who
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_as_buildkit_applies_them() {
        let m = |s: &str| Chmod::parse(s).unwrap();
        // Measured with BuildKit v0.21: 0640 file, 0755 dirs, 0644 file below.
        assert_eq!(m("u+x,go=r").apply(0o640, false), 0o744);
        assert_eq!(m("a+X,g-w").apply(0o755, true), 0o755);
        assert_eq!(m("a+X,g-w").apply(0o644, false), 0o644);
        assert_eq!(m("go=u-w").apply(0o640, false), 0o644);
        assert_eq!(m("0640").apply(0o755, true), 0o640);
        assert_eq!(m("+x").apply(0o644, false), 0o755);
        assert_eq!(m("u=rwx,g=rx,o=").apply(0o777, false), 0o750);
        assert_eq!(m("u+s").apply(0o755, false), 0o4755);
        for bad in ["", "8", "07777777", "u+z", "q=r", "u"] {
            assert!(Chmod::parse(bad).is_none(), "{bad}");
        }
    }
}
