//! Logical lines and tokens of Python source: brackets and backslash continuations joined,
//! comments dropped, string literals read with their escapes.

/// One logical line of Python: brackets and backslashes joined, comments dropped.
#[derive(Debug)]
pub(super) struct Statement {
    pub(super) indent: usize,
    pub(super) text: String,
}

pub(super) fn statements(text: &str) -> Vec<Statement> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut indent = 0;
    let mut at_line_start = true;
    let mut depth = 0usize;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if at_line_start {
            if c == ' ' || c == '\t' {
                indent += 1;
                continue;
            }
            at_line_start = false;
        }
        match c {
            '#' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '\\' if chars.peek() == Some(&'\n') => {
                chars.next();
                current.push(' ');
            }
            '"' | '\'' => {
                // A string literal, copied whole (triple quotes included).
                current.push(c);
                let triple = {
                    let mut ahead = chars.clone();
                    ahead.next() == Some(c) && ahead.next() == Some(c)
                };
                if triple {
                    current.push(chars.next().expect("peeked"));
                    current.push(chars.next().expect("peeked"));
                }
                let mut run = 0;
                while let Some(s) = chars.next() {
                    current.push(s);
                    if s == '\\' {
                        if let Some(escaped) = chars.next() {
                            current.push(escaped);
                        }
                        run = 0;
                        continue;
                    }
                    if s == c {
                        run += 1;
                        if !triple || run == 3 {
                            break;
                        }
                    } else {
                        run = 0;
                        if s == '\n' && !triple {
                            break;
                        }
                    }
                }
            }
            '(' | '[' | '{' => {
                depth += 1;
                current.push(c);
            }
            ')' | ']' | '}' => {
                depth = depth.saturating_sub(1);
                current.push(c);
            }
            '\n' if depth == 0 => {
                if !current.trim().is_empty() {
                    out.push(Statement {
                        indent,
                        text: std::mem::take(&mut current),
                    });
                }
                current.clear();
                indent = 0;
                at_line_start = true;
            }
            '\n' => current.push(' '),
            c => current.push(c),
        }
    }
    if !current.trim().is_empty() {
        out.push(Statement {
            indent,
            text: current,
        });
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Name(String),
    Str(String),
    /// An f-string or a bytes literal: not a value we follow.
    OpaqueStr,
    Int(i64),
    Op(&'static str),
}

const OPS: &[&str] = &[
    "**=", "//=", "==", "!=", "<=", ">=", "+=", "-=", "*=", "/=", "|=", "**", "//", "->", ":=",
    "(", ")", "[", "]", "{", "}", ",", ":", ".", "=", "+", "-", "*", "/", "%", "<", ">", "|", "&",
    "@", "~", "^", ";",
];

pub(super) fn tokenize(text: &str) -> Option<Vec<Tok>> {
    let mut out = Vec::new();
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_alphanumeric() || bytes[i] == '_') {
                i += 1;
            }
            let word: String = bytes[start..i].iter().collect();
            // String prefixes: r"", b"", f"", rb"" …
            if i < bytes.len()
                && (bytes[i] == '"' || bytes[i] == '\'')
                && word.len() <= 2
                && word.chars().all(|c| "rRbBfFuU".contains(c))
            {
                let lower = word.to_lowercase();
                let (value, next) = read_string(&bytes, i, lower.contains('r'))?;
                i = next;
                out.push(if lower.contains('f') || lower.contains('b') {
                    Tok::OpaqueStr
                } else {
                    Tok::Str(value)
                });
                continue;
            }
            out.push(Tok::Name(word));
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '_') {
                i += 1;
            }
            let digits: String = bytes[start..i].iter().filter(|c| **c != '_').collect();
            if i < bytes.len() && bytes[i] == '.' {
                // A float: not a value settings checks need.
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                out.push(Tok::OpaqueStr);
                continue;
            }
            out.push(digits.parse().map(Tok::Int).unwrap_or(Tok::OpaqueStr));
            continue;
        }
        if c == '"' || c == '\'' {
            let (value, next) = read_string(&bytes, i, false)?;
            i = next;
            out.push(Tok::Str(value));
            continue;
        }
        let rest: String = bytes[i..bytes.len().min(i + 3)].iter().collect();
        let op = OPS.iter().find(|op| rest.starts_with(**op))?;
        i += op.chars().count();
        out.push(Tok::Op(op));
    }
    Some(out)
}

/// Reads the string literal starting at `start` (its opening quote): its value and the index
/// after it.
fn read_string(chars: &[char], start: usize, raw: bool) -> Option<(String, usize)> {
    let quote = chars[start];
    let triple = chars.get(start + 1) == Some(&quote) && chars.get(start + 2) == Some(&quote);
    let mut i = start + if triple { 3 } else { 1 };
    let mut value = String::new();
    loop {
        let c = *chars.get(i)?;
        if c == '\\' && !raw {
            let escaped = *chars.get(i + 1)?;
            value.push(match escaped {
                'n' => '\n',
                't' => '\t',
                other => other,
            });
            i += 2;
            continue;
        }
        if c == '\\' && raw {
            value.push(c);
            if let Some(next) = chars.get(i + 1) {
                value.push(*next);
            }
            i += 2;
            continue;
        }
        if c == quote {
            if !triple {
                return Some((value, i + 1));
            }
            if chars.get(i + 1) == Some(&quote) && chars.get(i + 2) == Some(&quote) {
                return Some((value, i + 3));
            }
        }
        value.push(c);
        i += 1;
    }
}
