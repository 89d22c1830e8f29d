//! JSON into a `serde_json::Value` whose arrays hold exactly their
//! elements: the same value serde_json builds, without the room a growing
//! `Vec` keeps (up to half of it unused, and 4 slots for an array of one:
//! 128 bytes where 32 do), which made deeply nested JSON cost some 70 times
//! its size (issue 20).
//!
//! A small array's elements are gathered on one scratch stack shared by
//! the whole parse and moved into a block of their exact size once the
//! array ends; growing a `Vec` and shrinking it afterwards would leave a
//! hole beside each small array that the allocator seldom fills again (the
//! process's resident size stayed as high as with the spare room).
//!
//! An object's entries are gathered the same way (its keys on a stack of
//! their own) and its `Map` made for exactly their number: with the tool's
//! `preserve_order` an `IndexMap`, whose first insert would make room for 3
//! (a one-entry object some 300 bytes instead of 180; a `BTreeMap`, the
//! library's default, takes no capacity).
//!
//! Everything else is serde_json's: its parser (errors, positions, the
//! nesting limit), its numbers (as written, with `arbitrary_precision`), its
//! `Map`.

use std::{fmt, sync::OnceLock};

use serde_core::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// The key under which serde_json's parser hands over a number's text
/// when it keeps numbers as written (`arbitrary_precision`), as serde_json's
/// own `Value` reads it. Should it ever change, numbers would come out as
/// objects: the values tests would say so.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Whether this build's serde_json keeps numbers as written: Cargo turns
/// `arbitrary_precision` on for the whole build, whoever asks for it (our
/// feature `exact-numbers`, or a library user), so it is asked of
/// serde_json itself. Only then is [`NUMBER_TOKEN`] a number.
fn exact_numbers() -> bool {
    static EXACT: OnceLock<bool> = OnceLock::new();
    *EXACT.get_or_init(|| {
        let wide = "100000000000000000000";
        wide.parse::<Number>().is_ok_and(|n| n.to_string() == wide)
    })
}

/// `bytes` as a JSON value with exact-size arrays; the whole input must be
/// one value, as for `serde_json::from_slice`.
pub(super) fn from_slice(bytes: &[u8]) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let (mut scratch, mut keys) = (Vec::new(), Vec::new());
    let value = Compact {
        scratch: &mut scratch,
        keys: &mut keys,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Past this many elements an array grows a `Vec` of its own, shrunk when
/// it ends: a block that large is the allocator's to shrink in place, and
/// moving it from the scratch stack would hold it twice.
const LARGE: usize = 4096;

/// The elements of `items`, as a `Vec` of exactly their number; `next`
/// gives them one by one, with the scratch stack for any nested array.
pub(super) fn collect_exact<T, E>(
    scratch: &mut Vec<T>,
    mut next: impl FnMut(&mut Vec<T>) -> Result<Option<T>, E>,
) -> Result<Vec<T>, E> {
    let start = scratch.len();
    let mut own: Option<Vec<T>> = None;
    loop {
        let item = match next(scratch) {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) => {
                scratch.truncate(start);
                return Err(e);
            }
        };
        match &mut own {
            Some(own) => own.push(item),
            None => {
                scratch.push(item);
                if scratch.len() - start >= LARGE {
                    let mut large = Vec::with_capacity(2 * LARGE);
                    large.extend(scratch.drain(start..));
                    own = Some(large);
                }
            }
        }
    }
    Ok(match own {
        Some(mut own) => {
            own.shrink_to_fit();
            own
        }
        None => scratch.drain(start..).collect(),
    })
}

/// One JSON value; nested arrays gather their elements on `scratch`,
/// nested objects their values there too and their keys on `keys`.
struct Compact<'s> {
    scratch: &'s mut Vec<Value>,
    keys: &'s mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Compact<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Compact<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let keys = self.keys;
        collect_exact(self.scratch, |scratch| {
            seq.next_element_seed(Compact {
                scratch,
                keys: &mut *keys,
            })
        })
        .map(Value::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Ok(Value::Object(Map::new()));
        };
        if first == NUMBER_TOKEN && exact_numbers() {
            let text: String = map.next_value()?;
            return text
                .parse::<Number>()
                .map(Value::Number)
                .map_err(de::Error::custom);
        }
        // The entries are gathered first, so that the map is made for
        // exactly their number: with the tool's `preserve_order` it is an
        // `IndexMap`, whose first insert makes room for 3 (a `BTreeMap`,
        // the library's default, takes no capacity).
        let Compact { scratch, keys } = self;
        let (start, values) = (keys.len(), scratch.len());
        keys.push(first);
        let gathered = (|| {
            loop {
                let value = map.next_value_seed(Compact {
                    scratch: &mut *scratch,
                    keys: &mut *keys,
                })?;
                scratch.push(value);
                match map.next_key::<String>()? {
                    Some(key) => keys.push(key),
                    None => return Ok(()),
                }
            }
        })();
        if let Err(e) = gathered {
            keys.truncate(start);
            scratch.truncate(values);
            return Err(e);
        }
        let mut object = Map::with_capacity(keys.len() - start);
        for (key, value) in keys.drain(start..).zip(scratch.drain(values..)) {
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}
