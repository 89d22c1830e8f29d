//! YAML to JSON with the scalar resolution of a chosen YAML schema.
//!
//! serde-saphyr parses the document (anchors, merge keys, the budget) and
//! resolves every plain scalar by its own rules, which follow YAML 1.1 for
//! booleans and neither version for `0755` (a float), and which round every
//! number through `f64`. So each node is read as a `Spanned` value: its
//! span gives the scalar's text as written, which is resolved again here by
//! the schema's own rules (the YAML 1.2 core schema by default) and turned
//! into a JSON number from its digits, not from an `f64`. Quoted, block and
//! tagged scalars keep what serde-saphyr made of them: their type is not a
//! matter of resolution.

use std::{cell::RefCell, thread::LocalKey};

use serde_core::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;

use super::{Position, Resolve, YamlSchema};

/// What serde-saphyr made of a node.
enum Node {
    Null,
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Big(String),
    Text(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(String, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Unsigned(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Signed(v))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Node, E> {
        Ok(Node::Big(v.to_string()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Big(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Text(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Text(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Node, E> {
        // `!!binary` into an untyped value: as text if it is text, as
        // serde_json would have it otherwise (an array of bytes).
        Ok(match std::str::from_utf8(v) {
            Ok(text) => Node::Text(text.to_owned()),
            Err(_) => Node::Seq(
                v.iter()
                    .map(|b| {
                        let nowhere = serde_saphyr::Location::UNKNOWN;
                        Spanned::new(Node::Unsigned(u64::from(*b)), nowhere, nowhere)
                    })
                    .collect(),
            ),
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        collect(&ITEMS, || seq.next_element()).map(Node::Seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        collect(&ENTRIES, || map.next_entry()).map(Node::Map)
    }
}

thread_local! {
    /// The scratch stacks the tree's sequences and mappings gather their
    /// items on (see [`collect`]).
    static ITEMS: RefCell<Vec<Spanned<Node>>> = const { RefCell::new(Vec::new()) };
    static ENTRIES: RefCell<Vec<(String, Spanned<Node>)>> = const { RefCell::new(Vec::new()) };
}

/// A node's items in a `Vec` of exactly their number (the tree lives until
/// it is converted: no spare room in it, issue 20), gathered on `stack`
/// as JSON's arrays are ([`super::json_value::collect_exact`]). The stack is
/// a thread's own because serde-saphyr builds a `Spanned` node through its
/// `Deserialize`, which takes no state; it is lent to the nodes nested in
/// this one while `next` reads them.
fn collect<T: 'static, E>(
    stack: &'static LocalKey<RefCell<Vec<T>>>,
    mut next: impl FnMut() -> Result<Option<T>, E>,
) -> Result<Vec<T>, E> {
    let mut scratch = stack.take();
    let items = super::json_value::collect_exact(&mut scratch, |scratch| {
        stack.with(|s| std::mem::swap(&mut *s.borrow_mut(), scratch));
        let item = next();
        stack.with(|s| std::mem::swap(&mut *s.borrow_mut(), scratch));
        item
    });
    stack.set(scratch);
    items
}

/// A value JSON cannot carry, or a scalar that does not convert.
pub(super) struct Fault {
    pub position: Option<Position>,
    pub message: String,
}

/// Parses `bytes` with `options` and converts the document to JSON.
/// `Err(Ok(e))` is serde-saphyr's own refusal, `Err(Err(fault))` a value
/// JSON cannot carry.
pub(super) fn to_json(
    bytes: &[u8],
    options: serde_saphyr::Options,
    resolve: Resolve,
) -> Result<Value, Result<serde_saphyr::Error, Fault>> {
    // Byte offsets (and so the text as written) exist for string input
    // only; YAML that is not UTF-8 (UTF-16 with a BOM) keeps serde-saphyr's
    // resolution.
    let (node, source) = match std::str::from_utf8(bytes) {
        Ok(text) => (
            serde_saphyr::from_str_with_options::<Spanned<Node>>(text, options),
            Some(text),
        ),
        Err(_) => (
            serde_saphyr::from_slice_with_options::<Spanned<Node>>(bytes, options),
            None,
        ),
    };
    // The scratch stacks' memory back, should this thread parse no more.
    drop((ITEMS.take(), ENTRIES.take()));
    let node = node.map_err(Ok)?;
    let convert = Convert { source, resolve };
    let mut path = String::new();
    convert.node(node, &mut path).map_err(Err)
}

struct Convert<'a> {
    source: Option<&'a str>,
    resolve: Resolve,
}

impl Convert<'_> {
    fn node(&self, node: Spanned<Node>, path: &mut String) -> Result<Value, Fault> {
        let Spanned {
            value,
            referenced,
            defined,
        } = node;
        let position = (referenced.line() > 0).then(|| Position {
            line: referenced.line() as usize,
            column: referenced.column().max(1) as usize,
        });
        // Aliases and merged values are written where they were defined.
        let written = self.source.and_then(|source| {
            let span = defined.span();
            let start = usize::try_from(span.byte_offset()?).ok()?;
            let end = start.checked_add(usize::try_from(span.byte_len()?).ok()?)?;
            Some((source.get(start..end)?, &source[..start]))
        });
        let plain = written
            .filter(|(text, before)| !text.starts_with(['"', '\'', '|', '>']) && !tagged(before))
            .map(|(text, _)| text);
        match value {
            Node::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    out.push(self.node(item, path)?);
                    path.truncate(len);
                }
                Ok(Value::Array(out))
            }
            Node::Map(entries) => {
                // Exactly its entries, where the map has a capacity (the
                // tool's `preserve_order`: an `IndexMap`, whose first insert
                // makes room for 3).
                let mut out = Map::with_capacity(entries.len());
                for (key, item) in entries {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&key);
                    let value = self.node(item, path)?;
                    path.truncate(len);
                    out.insert(key, value);
                }
                Ok(Value::Object(out))
            }
            scalar => {
                // A plain scalar is resolved again from its text. A
                // multi-line plain scalar is folded by the parser: its text
                // as written is not its value, and never a number. An empty
                // span is an empty plain scalar (null to the parser too) or
                // an empty block scalar (text): the parser knows which.
                let resolved = match plain {
                    Some(text) if !text.contains('\n') && !text.is_empty() => {
                        Some(resolve(text, self.resolve.yaml))
                    }
                    _ => None,
                };
                let resolved = match resolved {
                    Some(resolved) => resolved,
                    None => match scalar {
                        Node::Null => Scalar::Null,
                        Node::Bool(b) => Scalar::Bool(b),
                        Node::Unsigned(u) => Scalar::Number(u.to_string()),
                        Node::Signed(i) => Scalar::Number(i.to_string()),
                        Node::Big(digits) => Scalar::Number(digits),
                        Node::Float(f) if f.is_finite() => Scalar::Number(float_text(f)),
                        Node::Float(_) => Scalar::NonFinite,
                        Node::Text(text) => Scalar::Text(text),
                        Node::Seq(_) | Node::Map(_) => unreachable!("matched above"),
                    },
                };
                match resolved {
                    Scalar::Null => Ok(Value::Null),
                    Scalar::Bool(b) => Ok(Value::Bool(b)),
                    Scalar::Text(text) => Ok(Value::String(text)),
                    Scalar::Number(digits) => match number(&digits) {
                        Some(n) => Ok(Value::Number(n)),
                        None => self.non_finite(written.map(|w| w.0), position, path),
                    },
                    Scalar::NonFinite => self.non_finite(written.map(|w| w.0), position, path),
                }
            }
        }
    }

    fn non_finite(
        &self,
        written: Option<&str>,
        position: Option<Position>,
        path: &str,
    ) -> Result<Value, Fault> {
        let written = written.unwrap_or(".nan/.inf");
        if self.resolve.non_finite_as_text {
            return Ok(Value::String(written.to_owned()));
        }
        Err(Fault {
            position,
            message: super::non_finite_message(path, written),
        })
    }
}

/// A scalar's resolved type; numbers as JSON number text.
enum Scalar {
    Null,
    Bool(bool),
    Number(String),
    NonFinite,
    Text(String),
}

/// Whether the text before a scalar ends in a tag (`!!str`, `!custom`),
/// possibly with an anchor on either side of it. A tag sits right before
/// the node it applies to, but is not part of the span serde-saphyr gives.
fn tagged(before: &str) -> bool {
    let mut rest = before;
    // A node has at most one anchor and one tag, in either order.
    for _ in 0..2 {
        rest = rest.trim_end();
        let start = rest
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace() || matches!(c, '[' | '{' | ','))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let token = &rest[start..];
        if token.starts_with('!') {
            // Not a word in a comment on the line before.
            let line = &rest[rest[..start].rfind('\n').map_or(0, |i| i + 1)..start];
            let comment =
                line.trim_start().starts_with('#') || line.contains(" #") || line.contains("\t#");
            return !comment;
        }
        if !token.starts_with('&') {
            return false;
        }
        rest = &rest[..start];
    }
    false
}

/// The type the schema gives a plain scalar's text.
fn resolve(text: &str, schema: YamlSchema) -> Scalar {
    match schema {
        YamlSchema::Core => resolve_core(text),
        YamlSchema::Yaml11 => resolve_yaml11(text),
    }
    .unwrap_or_else(|| Scalar::Text(text.to_owned()))
}

/// The YAML 1.2 core schema (YAML 1.2.2, section 10.3.2).
fn resolve_core(text: &str) -> Option<Scalar> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Scalar::Null),
        "true" | "True" | "TRUE" => return Some(Scalar::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Scalar::Bool(false)),
        ".nan" | ".NaN" | ".NAN" => return Some(Scalar::NonFinite),
        _ => {}
    }
    let (negative, unsigned) = split_sign(text);
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") {
        return Some(Scalar::NonFinite);
    }
    if let Some(octal) = text.strip_prefix("0o") {
        return radix(octal, 8).map(Scalar::Number);
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return radix(hex, 16).map(Scalar::Number);
    }
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Scalar::Number(decimal(negative, unsigned)));
    }
    core_float(unsigned).then(|| Scalar::Number(float_digits(negative, unsigned)))
}

/// `[0-9]+(\.[0-9]*)?` or `\.[0-9]+`, then an optional exponent.
fn core_float(unsigned: &str) -> bool {
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (mantissa, None),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = digits(int)
        && frac.is_none_or(digits)
        && (!int.is_empty() || frac.is_some_and(|f| !f.is_empty()));
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

/// YAML 1.1's types (yaml.org/type, 2005), as YAML 1.1 consumers such as
/// PyYAML and Kubernetes' go-yaml v2 resolve them.
fn resolve_yaml11(text: &str) -> Option<Scalar> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Scalar::Null),
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Some(Scalar::Bool(true));
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Some(Scalar::Bool(false));
        }
        ".nan" | ".NaN" | ".NAN" => return Some(Scalar::NonFinite),
        _ => {}
    }
    let (negative, unsigned) = split_sign(text);
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") {
        return Some(Scalar::NonFinite);
    }
    let digits_ = |s: &str, ok: fn(u8) -> bool| {
        !s.is_empty() && s.bytes().any(|b| b != b'_') && s.bytes().all(|b| b == b'_' || ok(b))
    };
    let signed = |digits: Option<String>| {
        digits.map(|d| {
            Scalar::Number(if negative && d != "0" {
                format!("-{d}")
            } else {
                d
            })
        })
    };
    if let Some(bin) = unsigned.strip_prefix("0b") {
        return digits_(bin, |b| matches!(b, b'0' | b'1'))
            .then(|| signed(radix(&bin.replace('_', ""), 2)))
            .flatten();
    }
    if let Some(hex) = unsigned.strip_prefix("0x") {
        return digits_(hex, |b| b.is_ascii_hexdigit())
            .then(|| signed(radix(&hex.replace('_', ""), 16)))
            .flatten();
    }
    if unsigned.len() > 1
        && unsigned.starts_with('0')
        && digits_(&unsigned[1..], |b| (b'0'..=b'7').contains(&b))
    {
        return signed(radix(&unsigned[1..].replace('_', ""), 8));
    }
    if unsigned == "0"
        || (unsigned.starts_with(|c: char| ('1'..='9').contains(&c))
            && digits_(unsigned, |b| b.is_ascii_digit()))
    {
        return Some(Scalar::Number(decimal(
            negative,
            &unsigned.replace('_', ""),
        )));
    }
    if let Some(value) = sexagesimal(unsigned) {
        return Some(Scalar::Number(if negative {
            format!("-{value}")
        } else {
            value
        }));
    }
    // [0-9][0-9_]*\.[0-9_]*([eE][-+]?[0-9]+)? or \.[0-9_]+(...)? (a dot
    // is required: 1e3 is a string in YAML 1.1).
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (int, frac) = mantissa.split_once('.')?;
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    let ok = digits(int)
        && digits(frac)
        && (int.starts_with(|c: char| c.is_ascii_digit())
            || frac.starts_with(|c: char| c.is_ascii_digit()))
        && exponent.is_none_or(|e| {
            let e = e.strip_prefix(['+', '-']).unwrap_or(e);
            !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
        });
    ok.then(|| Scalar::Number(float_digits(negative, &unsigned.replace('_', ""))))
}

/// YAML 1.1 base 60 integers (`1:30` is 90); floats in base 60 are left
/// to be strings.
fn sexagesimal(unsigned: &str) -> Option<String> {
    let mut parts = unsigned.split(':');
    let first = parts.next()?.replace('_', "");
    if !first.starts_with(|c: char| ('1'..='9').contains(&c))
        || !first.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut value: u128 = first.parse().ok()?;
    let mut any = false;
    for part in parts {
        if part.is_empty() || part.len() > 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digit: u128 = part.parse().ok()?;
        if digit > 59 {
            return None;
        }
        value = value.checked_mul(60)?.checked_add(digit)?;
        any = true;
    }
    any.then(|| value.to_string())
}

fn split_sign(text: &str) -> (bool, &str) {
    match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    }
}

/// Decimal digits without leading zeros (`0755` is 755, `-0` stays `-0`).
fn decimal(negative: bool, digits: &str) -> String {
    let trimmed = digits.trim_start_matches('0');
    let trimmed = if trimmed.is_empty() { "0" } else { trimmed };
    if negative {
        format!("-{trimmed}")
    } else {
        trimmed.to_owned()
    }
}

/// Digits in `base` as decimal digits, of any length.
fn radix(digits: &str, base: u32) -> Option<String> {
    if digits.is_empty() {
        return None;
    }
    // Little-endian limbs of 10^9: a number wider than u128 (a 40-digit
    // hexadecimal value) still converts exactly.
    let mut limbs: Vec<u64> = vec![0];
    for c in digits.chars() {
        let mut carry = u64::from(c.to_digit(base)?);
        for limb in &mut limbs {
            let v = *limb * u64::from(base) + carry;
            *limb = v % 1_000_000_000;
            carry = v / 1_000_000_000;
        }
        while carry > 0 {
            limbs.push(carry % 1_000_000_000);
            carry /= 1_000_000_000;
        }
    }
    let mut limbs = limbs.iter().rev();
    let mut out = limbs.next()?.to_string();
    for limb in limbs {
        out.push_str(&format!("{limb:09}"));
    }
    Some(out)
}

/// A YAML float's text as JSON number text with the same value: JSON has
/// no `+`, needs a digit before and after the point.
fn float_digits(negative: bool, unsigned: &str) -> String {
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], &unsigned[i..]),
        None => (unsigned, ""),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (mantissa, ""),
    };
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let mut out = String::with_capacity(unsigned.len() + 3);
    if negative {
        out.push('-');
    }
    out.push_str(int);
    if mantissa.contains('.') {
        out.push('.');
        out.push_str(if frac.is_empty() { "0" } else { frac });
    }
    out.push_str(exponent);
    out
}

/// The text serde_json writes for a finite `f64`.
fn float_text(f: f64) -> String {
    Number::from_f64(f).map_or_else(|| f.to_string(), |n| n.to_string())
}

/// JSON number text as a [`Number`]: exact where serde_json keeps numbers
/// as written (its `arbitrary_precision` feature, which the tool turns on),
/// else as serde_json reads it. `None` when it overflows an `f64` to
/// infinity (`1e999`): JSON readers would take it as one.
fn number(text: &str) -> Option<Number> {
    let n: Number = text.parse().ok()?;
    (n.is_u64() || n.is_i64() || n.as_f64().is_some_and(f64::is_finite)).then_some(n)
}
