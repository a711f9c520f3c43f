//! Reads Django settings files without running them: the module-level assignments a server would
//! see, following `from .base import *`, with just enough of Python's expressions to tell paths,
//! strings, lists, dicts and environment reads apart.
//!
//! Anything beyond that (a call we do not know, an assignment inside an `if`, a comprehension)
//! reads as [`Value::Unknown`], and the checks stay quiet about what they cannot tell.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

/// A settings value as the server would see it with no environment variable of the app's set.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    None,
    /// An absolute path (`BASE_DIR / "x"`, `os.path.join(BASE_DIR, "x")`).
    Path(PathBuf),
    List(Vec<Value>),
    Dict(Vec<(String, Value)>),
    /// Read from an environment variable: its name and what the value is when it is unset.
    Env(String, Box<Value>),
    /// `Path.parents`, waiting for its index.
    Parents(PathBuf),
    Unknown,
}

impl Value {
    /// The value with any environment read replaced by what it gives when the variable is unset.
    pub fn resolved(&self) -> &Value {
        match self {
            Value::Env(_, inner) => inner.resolved(),
            other => other,
        }
    }

    /// The environment variable this value depends on, if any.
    pub fn env_var(&self) -> Option<&str> {
        match self {
            Value::Env(var, _) => Some(var),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        match self.resolved() {
            Value::Dict(items) => items.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn truthy(&self) -> Option<bool> {
        Some(match self {
            Value::Str(s) => !s.is_empty(),
            Value::Int(i) => *i != 0,
            Value::Bool(b) => *b,
            Value::None => false,
            Value::Path(_) => true,
            Value::List(l) => !l.is_empty(),
            Value::Dict(d) => !d.is_empty(),
            Value::Env(_, inner) => return inner.truthy(),
            Value::Parents(_) | Value::Unknown => return None,
        })
    }
}

/// What a settings module sets, as read from its files.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub values: BTreeMap<String, Value>,
    /// The files read, the module's own first.
    pub files: Vec<PathBuf>,
}

impl Settings {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }
}

/// The file of a dotted module under `root`: `a/b.py` or `a/b/__init__.py`.
pub fn module_file(root: &Path, module: &str) -> Option<PathBuf> {
    let rel = module.replace('.', "/");
    let file = root.join(format!("{rel}.py"));
    if file.is_file() {
        return Some(file);
    }
    let init = root.join(&rel).join("__init__.py");
    init.is_file().then_some(init)
}

/// Reads the settings module `module` of the project in `root` (an absolute, canonical path).
/// None if the module's file is not in the project.
pub fn read_settings(root: &Path, module: &str) -> Option<Settings> {
    let file = module_file(root, module)?;
    let mut settings = Settings::default();
    let mut seen = BTreeSet::new();
    read_module(root, module, &file, &mut settings, &mut seen);
    Some(settings)
}

fn read_module(
    root: &Path,
    module: &str,
    file: &Path,
    settings: &mut Settings,
    seen: &mut BTreeSet<PathBuf>,
) {
    if !seen.insert(file.to_owned()) {
        return;
    }
    let Ok(text) = std::fs::read_to_string(file) else {
        return;
    };
    settings.files.push(file.to_owned());
    let is_package = file.file_name().is_some_and(|n| n == "__init__.py");
    for statement in statements(&text) {
        let tokens = match tokenize(&statement.text) {
            Some(tokens) if !tokens.is_empty() => tokens,
            _ => continue,
        };
        if statement.indent > 0 {
            // Inside an if/try/def: it may or may not run, so what it assigns is unknown.
            if let Some(targets) = assignment_targets(&tokens) {
                for target in targets {
                    settings.values.insert(target, Value::Unknown);
                }
            }
            continue;
        }
        if let Some((from, names)) = parse_from_import(&tokens) {
            let Some(target) = resolve_import(module, is_package, &from) else {
                continue;
            };
            let Some(target_file) = module_file(root, &target) else {
                continue;
            };
            let mut imported = Settings::default();
            read_module(root, &target, &target_file, &mut imported, seen);
            settings.files.extend(imported.files);
            match names {
                None => {
                    for (name, value) in imported.values {
                        if !name.starts_with('_') {
                            settings.values.insert(name, value);
                        }
                    }
                }
                Some(names) => {
                    for (name, alias) in names {
                        if let Some(value) = imported.values.get(&name) {
                            settings.values.insert(alias, value.clone());
                        }
                    }
                }
            }
            continue;
        }
        apply_statement(&tokens, file, &mut settings.values);
    }
}

/// `from .base import *` seen from `module`: the absolute module it names.
fn resolve_import(module: &str, is_package: bool, from: &str) -> Option<String> {
    let dots = from.chars().take_while(|c| *c == '.').count();
    if dots == 0 {
        return Some(from.to_owned());
    }
    let mut parts: Vec<&str> = module.split('.').collect();
    if !is_package {
        parts.pop();
    }
    for _ in 1..dots {
        parts.pop()?;
    }
    if parts.is_empty() {
        // A relative import needs a package to be relative to.
        return None;
    }
    let rest = &from[dots..];
    if !rest.is_empty() {
        parts.extend(rest.split('.'));
    }
    (!parts.is_empty()).then(|| parts.join("."))
}

/// One logical line of Python: brackets and backslashes joined, comments dropped.
#[derive(Debug)]
struct Statement {
    indent: usize,
    text: String,
}

fn statements(text: &str) -> Vec<Statement> {
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
enum Tok {
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

fn tokenize(text: &str) -> Option<Vec<Tok>> {
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

/// `from X import *` → (X, None); `from X import a, b as c` → (X, [(a, a), (b, c)]).
type FromImport = (String, Option<Vec<(String, String)>>);

fn parse_from_import(tokens: &[Tok]) -> Option<FromImport> {
    if tokens.first() != Some(&Tok::Name("from".into())) {
        return None;
    }
    let mut module = String::new();
    let mut i = 1;
    while let Some(tok) = tokens.get(i) {
        match tok {
            Tok::Op(".") => module.push('.'),
            Tok::Name(n) if n == "import" => break,
            Tok::Name(n) => module.push_str(n),
            _ => return None,
        }
        i += 1;
    }
    i += 1;
    let rest = &tokens[i.min(tokens.len())..];
    if rest == [Tok::Op("*")] {
        return Some((module, None));
    }
    let mut names = Vec::new();
    let mut parts = rest
        .iter()
        .filter(|t| !matches!(t, Tok::Op("(") | Tok::Op(")")))
        .peekable();
    while let Some(Tok::Name(name)) = parts.next() {
        let mut alias = name.clone();
        if parts.peek() == Some(&&Tok::Name("as".into())) {
            parts.next();
            if let Some(Tok::Name(a)) = parts.next() {
                alias = a.clone();
            }
        }
        names.push((name.clone(), alias));
        if parts.next().is_none() {
            break;
        }
    }
    Some((module, Some(names)))
}

/// The plain names a statement assigns (`A = …`, `A = B = …`, `A += …`, `A[…] = …`), if it is an
/// assignment.
fn assignment_targets(tokens: &[Tok]) -> Option<Vec<String>> {
    let mut targets = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, tok) in tokens.iter().enumerate() {
        match tok {
            Tok::Op("(" | "[" | "{") => depth += 1,
            Tok::Op(")" | "]" | "}") => depth -= 1,
            Tok::Op("=" | "+=" | "-=" | "|=" | "*=") if depth == 0 => {
                if let Some(Tok::Name(name)) = tokens.get(start) {
                    targets.push(name.clone());
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    (!targets.is_empty()).then_some(targets)
}

fn apply_statement(tokens: &[Tok], file: &Path, values: &mut BTreeMap<String, Value>) {
    // Split on top-level `=` (or an augmented assignment): targets, then the value.
    let mut depth = 0i32;
    let mut pieces: Vec<&[Tok]> = Vec::new();
    let mut augmented = None;
    let mut start = 0;
    for (i, tok) in tokens.iter().enumerate() {
        match tok {
            Tok::Op("(" | "[" | "{") => depth += 1,
            Tok::Op(")" | "]" | "}") => depth -= 1,
            Tok::Op(op @ ("=" | "+=" | "-=" | "|=" | "*=")) if depth == 0 => {
                if *op != "=" {
                    augmented = Some(*op);
                }
                pieces.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if pieces.is_empty() {
        return;
    }
    let value = parse_expr(&tokens[start..])
        .map(|expr| eval(&expr, file, values))
        .unwrap_or(Value::Unknown);
    for target in pieces {
        match target {
            [Tok::Name(name)] => {
                let new = match augmented {
                    None => value.clone(),
                    Some("+=") => match (values.get(name), &value) {
                        (Some(Value::List(old)), Value::List(add)) => {
                            Value::List(old.iter().chain(add).cloned().collect())
                        }
                        _ => Value::Unknown,
                    },
                    Some(_) => Value::Unknown,
                };
                values.insert(name.clone(), new);
            }
            [Tok::Name(name), rest @ ..] if augmented.is_none() => {
                // NAME["a"]["b"] = value: a nested dict item.
                let mut keys = Vec::new();
                let mut rest = rest;
                while let [Tok::Op("["), Tok::Str(key), Tok::Op("]"), tail @ ..] = rest {
                    keys.push(key.clone());
                    rest = tail;
                }
                let Some(old) = values.get_mut(name) else {
                    continue;
                };
                if !rest.is_empty() || keys.is_empty() || !set_item(old, &keys, value.clone()) {
                    *old = Value::Unknown;
                }
            }
            [Tok::Name(name), ..] => {
                values.insert(name.clone(), Value::Unknown);
            }
            _ => {}
        }
    }
}

fn set_item(target: &mut Value, keys: &[String], value: Value) -> bool {
    let Value::Dict(items) = target else {
        return false;
    };
    let Some((key, rest)) = keys.split_first() else {
        return false;
    };
    if rest.is_empty() {
        items.retain(|(k, _)| k != key);
        items.push((key.clone(), value));
        return true;
    }
    match items.iter_mut().rev().find(|(k, _)| k == key) {
        Some((_, inner)) => set_item(inner, rest, value),
        None => false,
    }
}

#[derive(Debug, Clone)]
enum Expr {
    Lit(Value),
    Name(String),
    Attr(Box<Expr>, String),
    Call(Box<Expr>, Vec<Expr>, Vec<(String, Expr)>),
    Index(Box<Expr>, Box<Expr>),
    List(Vec<Expr>),
    Dict(Vec<(Expr, Expr)>),
    Bin(&'static str, Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Unknown,
}

/// Parses a whole expression; None if tokens are left over.
fn parse_expr(tokens: &[Tok]) -> Option<Expr> {
    let mut parser = Parser { tokens, pos: 0 };
    let expr = parser.expr()?;
    (parser.pos == tokens.len()).then_some(expr)
}

struct Parser<'a> {
    tokens: &'a [Tok],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_name(&mut self, name: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Name(n)) if n == name) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// A full expression: a bare tuple (`a, b`) included.
    fn expr(&mut self) -> Option<Expr> {
        let first = self.test()?;
        if !matches!(self.peek(), Some(Tok::Op(","))) {
            return Some(first);
        }
        let mut items = vec![first];
        while self.eat_op(",") {
            if matches!(self.peek(), None | Some(Tok::Op(")" | "]" | "}"))) {
                break;
            }
            items.push(self.test()?);
        }
        Some(Expr::List(items))
    }

    fn test(&mut self) -> Option<Expr> {
        let expr = self.or()?;
        if self.eat_name("if") {
            // `a if cond else b`: which one depends on what we cannot tell.
            self.or()?;
            if !self.eat_name("else") {
                return None;
            }
            self.test()?;
            return Some(Expr::Unknown);
        }
        if self.eat_name("for") || self.eat_name("lambda") {
            return None;
        }
        Some(expr)
    }

    fn or(&mut self) -> Option<Expr> {
        let mut left = self.and()?;
        while self.eat_name("or") {
            let right = self.and()?;
            left = Expr::Bin("or", Box::new(left), Box::new(right));
        }
        Some(left)
    }

    fn and(&mut self) -> Option<Expr> {
        let mut left = self.not()?;
        while self.eat_name("and") {
            let right = self.not()?;
            left = Expr::Bin("and", Box::new(left), Box::new(right));
        }
        Some(left)
    }

    fn not(&mut self) -> Option<Expr> {
        if self.eat_name("not") {
            return Some(Expr::Not(Box::new(self.not()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Option<Expr> {
        let mut left = self.arith()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Op(op @ ("==" | "!=" | "<" | ">" | "<=" | ">="))) => *op,
                Some(Tok::Name(n)) if n == "in" => "in",
                Some(Tok::Name(n)) if n == "not" || n == "is" => {
                    // `not in`, `is`, `is not`
                    self.pos += 1;
                    self.eat_name("in");
                    self.eat_name("not");
                    let _ = self.arith()?;
                    left = Expr::Unknown;
                    continue;
                }
                _ => return Some(left),
            };
            self.pos += 1;
            let right = self.arith()?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
    }

    fn arith(&mut self) -> Option<Expr> {
        let mut left = self.term()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Op(op @ ("+" | "-" | "|" | "&"))) => *op,
                _ => return Some(left),
            };
            self.pos += 1;
            let right = self.term()?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
    }

    fn term(&mut self) -> Option<Expr> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Op(op @ ("*" | "/" | "//" | "%"))) => *op,
                _ => return Some(left),
            };
            self.pos += 1;
            let right = self.unary()?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Option<Expr> {
        if self.eat_op("-") {
            let inner = self.unary()?;
            return Some(match inner {
                Expr::Lit(Value::Int(i)) => Expr::Lit(Value::Int(-i)),
                _ => Expr::Unknown,
            });
        }
        if self.eat_op("*") || self.eat_op("**") {
            // A star in a list or call: the items are not known one by one.
            self.unary()?;
            return Some(Expr::Unknown);
        }
        let base = self.postfix()?;
        if self.eat_op("**") {
            self.unary()?;
            return Some(Expr::Unknown);
        }
        Some(base)
    }

    fn postfix(&mut self) -> Option<Expr> {
        let mut expr = self.atom()?;
        loop {
            if self.eat_op(".") {
                let Some(Tok::Name(attr)) = self.peek().cloned() else {
                    return None;
                };
                self.pos += 1;
                expr = Expr::Attr(Box::new(expr), attr);
            } else if self.eat_op("(") {
                let mut args = Vec::new();
                let mut kwargs = Vec::new();
                while !self.eat_op(")") {
                    if let (Some(Tok::Name(name)), Some(Tok::Op("="))) =
                        (self.peek().cloned(), self.tokens.get(self.pos + 1))
                    {
                        self.pos += 2;
                        kwargs.push((name, self.test()?));
                    } else {
                        args.push(self.test()?);
                    }
                    if !self.eat_op(",") {
                        if !self.eat_op(")") {
                            return None;
                        }
                        break;
                    }
                }
                expr = Expr::Call(Box::new(expr), args, kwargs);
            } else if self.eat_op("[") {
                let index = self.test()?;
                if self.eat_op(":") {
                    // A slice.
                    while !self.eat_op("]") {
                        self.pos += 1;
                        self.peek()?;
                    }
                    expr = Expr::Unknown;
                    continue;
                }
                if !self.eat_op("]") {
                    return None;
                }
                expr = Expr::Index(Box::new(expr), Box::new(index));
            } else {
                return Some(expr);
            }
        }
    }

    fn atom(&mut self) -> Option<Expr> {
        let tok = self.peek()?.clone();
        self.pos += 1;
        Some(match tok {
            Tok::Str(mut s) => {
                // Adjacent literals concatenate.
                while let Some(Tok::Str(next)) = self.peek() {
                    s.push_str(next);
                    self.pos += 1;
                }
                if matches!(self.peek(), Some(Tok::OpaqueStr)) {
                    self.pos += 1;
                    return Some(Expr::Unknown);
                }
                Expr::Lit(Value::Str(s))
            }
            Tok::OpaqueStr => {
                while matches!(self.peek(), Some(Tok::Str(_) | Tok::OpaqueStr)) {
                    self.pos += 1;
                }
                Expr::Unknown
            }
            Tok::Int(i) => Expr::Lit(Value::Int(i)),
            Tok::Name(n) => match n.as_str() {
                "True" => Expr::Lit(Value::Bool(true)),
                "False" => Expr::Lit(Value::Bool(false)),
                "None" => Expr::Lit(Value::None),
                "lambda" | "yield" | "await" => return None,
                _ => Expr::Name(n),
            },
            Tok::Op("(") => {
                if self.eat_op(")") {
                    return Some(Expr::List(Vec::new()));
                }
                let inner = self.expr()?;
                if !self.eat_op(")") {
                    return None;
                }
                inner
            }
            Tok::Op("[") => Expr::List(self.items("]")?),
            Tok::Op("{") => {
                let mut pairs = Vec::new();
                let mut set = Vec::new();
                while !self.eat_op("}") {
                    if self.eat_op("**") {
                        self.test()?;
                        pairs.push((Expr::Unknown, Expr::Unknown));
                    } else {
                        let key = self.test()?;
                        if self.eat_op(":") {
                            pairs.push((key, self.test()?));
                        } else {
                            set.push(key);
                        }
                    }
                    if !self.eat_op(",") {
                        if !self.eat_op("}") {
                            return None;
                        }
                        break;
                    }
                }
                if set.is_empty() {
                    Expr::Dict(pairs)
                } else {
                    Expr::List(set)
                }
            }
            _ => return None,
        })
    }

    fn items(&mut self, close: &str) -> Option<Vec<Expr>> {
        let mut items = Vec::new();
        while !self.eat_op(close) {
            items.push(self.test()?);
            if !self.eat_op(",") {
                if !self.eat_op(close) {
                    return None;
                }
                break;
            }
        }
        Some(items)
    }
}

/// The dotted name of `a.b.c` (names only), for calls such as `os.path.join`.
fn dotted(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Name(n) => Some(n.clone()),
        Expr::Attr(base, attr) => Some(format!("{}.{attr}", dotted(base)?)),
        _ => None,
    }
}

/// Calls that read an environment variable: `os.environ.get`, `os.getenv`, django-environ's
/// `env(...)`/`env.bool(...)`, python-decouple's `config(...)`.
fn env_read(callee: &str, args: &[Value], kwargs: &[(String, Value)]) -> Option<Value> {
    let last = callee.rsplit('.').next().unwrap_or(callee);
    let is_env = matches!(
        callee,
        "os.environ.get"
            | "environ.get"
            | "os.getenv"
            | "getenv"
            | "config"
            | "env"
            | "decouple.config"
    ) || (callee.starts_with("env.")
        && matches!(
            last,
            "str" | "bool" | "int" | "list" | "tuple" | "path" | "url" | "float" | "json"
        ));
    if !is_env {
        return None;
    }
    let Some(Value::Str(var)) = args.first() else {
        return Some(Value::Unknown);
    };
    let default = kwargs
        .iter()
        .find(|(k, _)| k == "default")
        .map(|(_, v)| v.clone())
        .or_else(|| args.get(1).cloned());
    let default = match default {
        Some(v) => v,
        // os.environ.get/os.getenv give None; env() and config() raise without a default.
        None if callee.ends_with("get") || callee.ends_with("getenv") => Value::None,
        None => Value::Unknown,
    };
    Some(Value::Env(var.clone(), Box::new(default)))
}

fn eval(expr: &Expr, file: &Path, scope: &BTreeMap<String, Value>) -> Value {
    match expr {
        Expr::Lit(v) => v.clone(),
        Expr::Unknown => Value::Unknown,
        Expr::Name(n) if n == "__file__" => Value::Path(file.to_owned()),
        Expr::Name(n) => scope.get(n).cloned().unwrap_or(Value::Unknown),
        Expr::List(items) => Value::List(items.iter().map(|e| eval(e, file, scope)).collect()),
        Expr::Dict(pairs) => {
            let mut out = Vec::new();
            for (k, v) in pairs {
                match eval(k, file, scope) {
                    Value::Str(key) => out.push((key, eval(v, file, scope))),
                    _ => return Value::Unknown,
                }
            }
            Value::Dict(out)
        }
        Expr::Not(inner) => map_env(eval(inner, file, scope), |v| match v.truthy() {
            Some(t) => Value::Bool(!t),
            None => Value::Unknown,
        }),
        Expr::Attr(base, attr) => {
            if let Some(name) = dotted(expr)
                && name == "os.environ"
            {
                return Value::Unknown;
            }
            map_env(eval(base, file, scope), |v| match (v, attr.as_str()) {
                (Value::Path(p), "parent") => Value::Path(parent(p)),
                (Value::Path(p), "parents") => Value::Parents(p.clone()),
                (Value::Path(p), "name") => p
                    .file_name()
                    .map(|n| Value::Str(n.to_string_lossy().into_owned()))
                    .unwrap_or(Value::Unknown),
                _ => Value::Unknown,
            })
        }
        Expr::Index(base, index) => {
            if dotted(base).as_deref() == Some("os.environ") {
                return match eval(index, file, scope) {
                    Value::Str(var) => Value::Env(var, Box::new(Value::Unknown)),
                    _ => Value::Unknown,
                };
            }
            let index = eval(index, file, scope);
            map_env(eval(base, file, scope), |v| match (v, &index) {
                (Value::Parents(p), Value::Int(n)) if *n >= 0 => {
                    let mut p = parent(p);
                    for _ in 0..*n {
                        p = parent(&p);
                    }
                    Value::Path(p)
                }
                (Value::List(items), Value::Int(n)) if *n >= 0 => {
                    items.get(*n as usize).cloned().unwrap_or(Value::Unknown)
                }
                (Value::Dict(_), Value::Str(key)) => v.get(key).cloned().unwrap_or(Value::Unknown),
                _ => Value::Unknown,
            })
        }
        Expr::Call(callee, args, kwargs) => {
            let args: Vec<Value> = args.iter().map(|e| eval(e, file, scope)).collect();
            let kwargs: Vec<(String, Value)> = kwargs
                .iter()
                .map(|(k, e)| (k.clone(), eval(e, file, scope)))
                .collect();
            if let Some(name) = dotted(callee) {
                if let Some(v) = env_read(&name, &args, &kwargs) {
                    return v;
                }
                if let Some(v) = call_function(&name, &args) {
                    return v;
                }
            }
            // A method: path.resolve(), "a,b".split(","), …
            let Expr::Attr(base, method) = &**callee else {
                return Value::Unknown;
            };
            map_env(eval(base, file, scope), |v| call_method(v, method, &args))
        }
        Expr::Bin(op, left, right) => {
            let left = eval(left, file, scope);
            let right = eval(right, file, scope);
            let var = left.env_var().or(right.env_var()).map(str::to_owned);
            let value = binary(op, left.resolved(), right.resolved());
            match var {
                Some(var) if value != Value::Unknown => Value::Env(var, Box::new(value)),
                _ => value,
            }
        }
    }
}

/// Applies `f` to what a value is with the env unset, keeping note of the env variable.
fn map_env(value: Value, f: impl FnOnce(&Value) -> Value) -> Value {
    match value {
        Value::Env(var, inner) => {
            let out = f(inner.resolved());
            if out == Value::Unknown {
                out
            } else {
                Value::Env(var, Box::new(out))
            }
        }
        other => f(&other),
    }
}

fn call_function(name: &str, args: &[Value]) -> Option<Value> {
    let first = args.first().map(Value::resolved);
    let path_of = |v: Option<&Value>| match v {
        Some(Value::Path(p)) => Some(p.clone()),
        Some(Value::Str(s)) if s.starts_with('/') => Some(PathBuf::from(s)),
        _ => None,
    };
    Some(match name {
        "Path" | "pathlib.Path" | "PurePath" | "os.path.abspath" | "os.path.realpath"
        | "os.path.normpath" | "abspath" | "realpath" | "normpath" => match path_of(first) {
            Some(p) => Value::Path(normalize(&p)),
            None => match first {
                Some(Value::Str(s)) => Value::Str(s.clone()),
                _ => Value::Unknown,
            },
        },
        "os.path.dirname" | "dirname" => match path_of(first) {
            Some(p) => Value::Path(parent(&p)),
            None => Value::Unknown,
        },
        "os.path.join" | "join" => {
            let Some(mut p) = path_of(first) else {
                return Some(Value::Unknown);
            };
            for arg in &args[1..] {
                match arg.resolved() {
                    Value::Str(s) => p = normalize(&p.join(s)),
                    Value::Path(q) => p = q.clone(),
                    _ => return Some(Value::Unknown),
                }
            }
            Value::Path(p)
        }
        "str" => match first {
            Some(v @ (Value::Path(_) | Value::Str(_))) => v.clone(),
            _ => Value::Unknown,
        },
        "bool" => match first.and_then(Value::truthy) {
            Some(b) => Value::Bool(b),
            None => Value::Unknown,
        },
        "list" | "tuple" => match first {
            Some(v @ Value::List(_)) => v.clone(),
            _ => Value::Unknown,
        },
        _ => return None,
    })
}

fn call_method(value: &Value, method: &str, args: &[Value]) -> Value {
    match (value, method) {
        (Value::Path(p), "resolve" | "absolute" | "expanduser") => Value::Path(normalize(p)),
        (Value::Path(p), "joinpath") => {
            let mut p = p.clone();
            for arg in args {
                match arg.resolved() {
                    Value::Str(s) => p = normalize(&p.join(s)),
                    _ => return Value::Unknown,
                }
            }
            Value::Path(p)
        }
        (Value::Str(s), "split") => {
            let parts: Vec<Value> = match args.first().map(Value::resolved) {
                Some(Value::Str(sep)) if !sep.is_empty() => s
                    .split(sep.as_str())
                    .map(|p| Value::Str(p.into()))
                    .collect(),
                None => s.split_whitespace().map(|p| Value::Str(p.into())).collect(),
                _ => return Value::Unknown,
            };
            Value::List(parts)
        }
        (Value::Str(s), "strip") => Value::Str(s.trim().into()),
        (Value::Str(s), "lower") => Value::Str(s.to_lowercase()),
        (Value::Str(s), "upper") => Value::Str(s.to_uppercase()),
        _ => Value::Unknown,
    }
}

fn binary(op: &str, left: &Value, right: &Value) -> Value {
    match (op, left, right) {
        ("/", Value::Path(p), Value::Str(s)) => Value::Path(normalize(&p.join(s))),
        ("/", Value::Path(_), Value::Path(q)) => Value::Path(q.clone()),
        ("+", Value::Str(a), Value::Str(b)) => Value::Str(format!("{a}{b}")),
        ("+", Value::List(a), Value::List(b)) => Value::List(a.iter().chain(b).cloned().collect()),
        ("==", a, b) if *a != Value::Unknown && *b != Value::Unknown => Value::Bool(a == b),
        ("!=", a, b) if *a != Value::Unknown && *b != Value::Unknown => Value::Bool(a != b),
        ("in", a, Value::List(items)) if *a != Value::Unknown => Value::Bool(items.contains(a)),
        ("in", Value::Str(a), Value::Str(b)) => Value::Bool(b.contains(a.as_str())),
        ("or", a, b) => match a.truthy() {
            Some(true) => a.clone(),
            Some(false) => b.clone(),
            None => Value::Unknown,
        },
        ("and", a, b) => match a.truthy() {
            Some(true) => b.clone(),
            Some(false) => a.clone(),
            None => Value::Unknown,
        },
        _ => Value::Unknown,
    }
}

fn parent(p: &Path) -> PathBuf {
    p.parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| p.to_owned())
}

/// `a/./b/../c` → `a/c`, without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in p.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn project() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn a_startproject_settings_file_reads_as_django_sees_it() {
        let dir = project();
        let root = dir.path().canonicalize().unwrap();
        write(
            &root,
            "proj/settings.py",
            r#""""
Django settings for proj project.
"""

from pathlib import Path

# Build paths inside the project like this: BASE_DIR / 'subdir'.
BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = 'django-insecure-#x=1'

DEBUG = True

ALLOWED_HOSTS = []

DATABASES = {
    'default': {
        'ENGINE': 'django.db.backends.sqlite3',
        'NAME': BASE_DIR / 'db.sqlite3',
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {
        'NAME': 'django.contrib.auth.password_validation.UserAttributeSimilarityValidator',
    },
]

STATIC_URL = 'static/'
"#,
        );
        let settings = read_settings(&root, "proj.settings").unwrap();
        assert_eq!(settings.get("BASE_DIR"), Some(&Value::Path(root.clone())));
        assert_eq!(settings.get("DEBUG"), Some(&Value::Bool(true)));
        assert_eq!(settings.get("ALLOWED_HOSTS"), Some(&Value::List(vec![])));
        assert_eq!(settings.get("STATIC_ROOT"), None);
        let db = settings.get("DATABASES").unwrap().get("default").unwrap();
        assert_eq!(db.get("NAME"), Some(&Value::Path(root.join("db.sqlite3"))));
        assert_eq!(
            db.get("ENGINE"),
            Some(&Value::Str("django.db.backends.sqlite3".into()))
        );
    }

    #[test]
    fn a_settings_package_follows_star_imports_and_env_reads() {
        let dir = project();
        let root = dir.path().canonicalize().unwrap();
        write(&root, "cms/settings/__init__.py", "");
        write(
            &root,
            "cms/settings/base.py",
            "import os\n\
             PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))\n\
             BASE_DIR = os.path.dirname(PROJECT_DIR)\n\
             STATIC_ROOT = os.path.join(BASE_DIR, 'static')\n\
             MEDIA_ROOT = os.path.join(BASE_DIR, \"media\")\n\
             ALLOWED_HOSTS = ['cms.example.org']\n\
             DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': os.path.join(BASE_DIR, 'db.sqlite3')}}\n",
        );
        write(
            &root,
            "cms/settings/production.py",
            "from .base import *  # noqa\n\
             DEBUG = os.environ.get('DJANGO_DEBUG', 'false').lower() == 'true'\n\
             ALLOWED_HOSTS += os.environ.get('EXTRA_HOSTS', 'a.org,b.org').split(',')\n\
             SECURE_SSL_REDIRECT = True\n\
             DATABASES['default']['NAME'] = '/var/lib/cms/db.sqlite3'\n\
             try:\n    from .local import *\nexcept ImportError:\n    pass\n\
             if DEBUG:\n    INTERNAL_IPS = ['127.0.0.1']\n",
        );
        let settings = read_settings(&root, "cms.settings.production").unwrap();
        assert_eq!(
            settings.get("STATIC_ROOT"),
            Some(&Value::Path(root.join("static")))
        );
        let debug = settings.get("DEBUG").unwrap();
        assert_eq!(debug.env_var(), Some("DJANGO_DEBUG"));
        assert_eq!(debug.resolved(), &Value::Bool(false));
        // `+=` of an env-derived list is not followed item by item.
        assert_eq!(settings.get("ALLOWED_HOSTS"), Some(&Value::Unknown));
        assert_eq!(
            settings.get("SECURE_SSL_REDIRECT"),
            Some(&Value::Bool(true))
        );
        assert_eq!(settings.get("INTERNAL_IPS"), Some(&Value::Unknown));
        let db = settings.get("DATABASES").unwrap().get("default").unwrap();
        assert_eq!(
            db.get("NAME"),
            Some(&Value::Str("/var/lib/cms/db.sqlite3".into()))
        );
        assert_eq!(settings.files.len(), 2);
    }

    #[test]
    fn odd_python_reads_as_unknown_not_as_a_wrong_value() {
        let dir = project();
        let root = dir.path().canonicalize().unwrap();
        write(
            &root,
            "s.py",
            "A = [x for x in range(3)]\nB = 'x' if C else 'y'\nD = f\"{A}\"\nE = some_call(1, 2)\n\
             F = (\n  'multi'\n  'line'\n)\nG = \"\"\"a\n# not a comment\nb\"\"\"\nH = 'ok' # comment\n\
             I, J = 1, 2\nK = L = 'both'\nM = ('a',)\n",
        );
        let s = read_settings(&root, "s").unwrap();
        for name in ["A", "B", "D", "E"] {
            assert_eq!(s.get(name), Some(&Value::Unknown), "{name}");
        }
        assert_eq!(s.get("F"), Some(&Value::Str("multiline".into())));
        assert_eq!(
            s.get("G"),
            Some(&Value::Str("a\n# not a comment\nb".into()))
        );
        assert_eq!(s.get("H"), Some(&Value::Str("ok".into())));
        assert_eq!(s.get("K"), Some(&Value::Str("both".into())));
        assert_eq!(s.get("L"), Some(&Value::Str("both".into())));
        assert_eq!(s.get("M"), Some(&Value::List(vec![Value::Str("a".into())])));
    }

    #[test]
    fn relative_imports_resolve_against_the_package() {
        assert_eq!(
            resolve_import("a.settings.prod", false, ".base").as_deref(),
            Some("a.settings.base")
        );
        assert_eq!(
            resolve_import("a.settings", true, ".base").as_deref(),
            Some("a.settings.base")
        );
        assert_eq!(
            resolve_import("a.settings.prod", false, "..common").as_deref(),
            Some("a.common")
        );
        assert_eq!(resolve_import("prod", false, ".base"), None);
    }
}
