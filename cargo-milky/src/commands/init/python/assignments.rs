//! Module-level assignments (`A = …`, `A += …`, `A["k"] = …`) applied to what a settings module
//! has set so far.

use std::collections::BTreeMap;
use std::path::Path;

use super::Value;
use super::eval::eval;
use super::lexer::Tok;
use super::parser::parse_expr;

/// The plain names a statement assigns (`A = …`, `A = B = …`, `A += …`, `A[…] = …`), if it is an
/// assignment.
pub(super) fn assignment_targets(tokens: &[Tok]) -> Option<Vec<String>> {
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

pub(super) fn apply_statement(tokens: &[Tok], file: &Path, values: &mut BTreeMap<String, Value>) {
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
