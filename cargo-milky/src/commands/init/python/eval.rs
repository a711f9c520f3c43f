//! Expressions evaluated to [`Value`]s without running Python: paths, strings, lists, dicts and
//! environment reads, each with the few functions and methods settings files call on them.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use super::Value;
use super::parser::Expr;

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

pub(super) fn eval(expr: &Expr, file: &Path, scope: &BTreeMap<String, Value>) -> Value {
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
