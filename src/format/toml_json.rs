//! TOML to JSON from the parser's own tree (`toml::de::DeTable`), which
//! keeps each number's digits and each value's span.
//!
//! Going through serde instead (`toml::from_str::<serde_json::Value>`)
//! hands serde_json a datetime as the private map
//! `{"$__toml_private_datetime": ...}`, turns `inf` and `nan` into `null`,
//! and rounds every float through `f64`. Here a datetime becomes its RFC
//! 3339 text (offset date-time, local date-time, local date and local time
//! each as TOML writes them), a number keeps its digits, and a non-finite
//! float is an error naming the field and its line.
//!
//! **A node budget, as YAML's.** toml builds its whole tree (each value
//! with its span, each table a map) before anything is converted, and that
//! tree costs up to some 250 times the text for dense documents (1 MiB of
//! `{a=0},` or of `0,`). So a document's keys, values, arrays and tables
//! are first counted with toml's own lexer, which allocates nothing, and
//! one with more than [`MAX_NODES`] is refused before it is parsed: the
//! same budget serde-saphyr applies to YAML, with the same effect (a 1 MiB
//! key of one-character values is refused; a 1 MiB Cargo.lock-like or
//! prometheus-like document is far below it).

use serde_json::{Map, Number, Value};
use toml::{Spanned, de::DeValue};

use toml_parser::lexer::TokenKind;

use super::{Position, Resolve, position_at};

/// The most keys, values, arrays and tables a TOML document may have: the
/// node budget serde-saphyr gives YAML by default, so both formats refuse
/// the same density.
pub(super) const MAX_NODES: usize = 250_000;

/// Refuses `text` when it has more than [`MAX_NODES`] keys, values, arrays
/// and tables, counted from toml's tokens (a dotted number or key, `1.5`
/// or `a.b`, counts once): nothing is built, so this costs no memory.
pub(super) fn check_budget(text: &str) -> Result<(), Fault> {
    let mut nodes = 0usize;
    let mut after_dot = false;
    for token in toml_parser::Source::new(text).lex() {
        let node = match token.kind() {
            TokenKind::Atom => !after_dot,
            TokenKind::LiteralString
            | TokenKind::BasicString
            | TokenKind::MlLiteralString
            | TokenKind::MlBasicString
            | TokenKind::LeftSquareBracket
            | TokenKind::LeftCurlyBracket => true,
            _ => false,
        };
        after_dot = token.kind() == TokenKind::Dot;
        if node {
            nodes += 1;
            if nodes > MAX_NODES {
                return Err(Fault {
                    position: position_at(text, token.span().start()),
                    message: format!(
                        "more than {MAX_NODES} keys and values (the budget that keeps a key's \
                         memory bounded by its size, as for YAML)"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// A value JSON cannot carry.
pub(super) struct Fault {
    pub position: Position,
    pub message: String,
}

/// Parses `text` and converts it to JSON. `Err(Ok(e))` is the parser's
/// refusal, `Err(Err(fault))` a value JSON cannot carry.
pub(super) fn to_json(
    text: &str,
    resolve: Resolve,
) -> Result<Value, Result<toml::de::Error, Fault>> {
    let table = toml::de::DeTable::parse(text).map_err(Ok)?;
    let span = table.span();
    let root = Spanned::new(span, DeValue::Table(table.into_inner()));
    let mut path = String::new();
    convert(text, root, &mut path, resolve).map_err(Err)
}

fn convert(
    text: &str,
    value: Spanned<DeValue<'_>>,
    path: &mut String,
    resolve: Resolve,
) -> Result<Value, Fault> {
    let span = value.span();
    Ok(match value.into_inner() {
        DeValue::String(s) => Value::String(s.into_owned()),
        DeValue::Boolean(b) => Value::Bool(b),
        DeValue::Datetime(dt) => {
            // RFC 3339 has no time without seconds; TOML 1.1 allows
            // `07:32`, meaning `07:32:00`.
            let mut dt = dt;
            if let Some(time) = &mut dt.time {
                time.second.get_or_insert(0);
            }
            Value::String(dt.to_string())
        }
        DeValue::Integer(i) => {
            let digits = i.as_str();
            let n = i64::from_str_radix(digits, i.radix()).map_err(|_| Fault {
                position: position_at(text, span.start),
                message: super::field_message(
                    path,
                    &format!(
                        "{} is out of range for a TOML integer (64-bit signed)",
                        &text[span.clone()]
                    ),
                ),
            })?;
            Value::Number(n.into())
        }
        DeValue::Float(f) => {
            let digits = f.as_str();
            let finite = digits.parse::<f64>().is_ok_and(f64::is_finite);
            let number = finite
                .then(|| digits.trim_start_matches('+').parse::<Number>().ok())
                .flatten();
            match number {
                Some(n) => Value::Number(n),
                None if resolve.non_finite_as_text => Value::String(text[span].to_owned()),
                None => {
                    return Err(Fault {
                        position: position_at(text, span.start),
                        message: super::non_finite_message(path, &text[span]),
                    });
                }
            }
        }
        DeValue::Array(items) => {
            // Exactly its elements: a growing Vec's spare room (4 slots for
            // an array of one) made nested arrays cost double (issue 20).
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                out.push(convert(text, item, path, resolve)?);
                path.truncate(len);
            }
            Value::Array(out)
        }
        DeValue::Table(table) => {
            // Exactly its entries where the map has a capacity (the tool's
            // document order: an `IndexMap`, whose first insert makes room
            // for 3).
            let mut out = Map::with_capacity(table.len());
            for (key, item) in table {
                let key = key.into_inner().into_owned();
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key);
                let value = convert(text, item, path, resolve)?;
                path.truncate(len);
                out.insert(key, value);
            }
            Value::Object(out)
        }
    })
}
