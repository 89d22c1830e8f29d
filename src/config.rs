//! Turning a snapshot into the program's config: one key parsed as JSON, or
//! (with `--all-keys`) an object of every key. Errors name the key and, for
//! JSON, the line and column.

use serde_json::{Map, Value};

use crate::{Error, Result, volume::Snapshot};

/// Which part of the volume is the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// One key, parsed as JSON (e.g. `config.json`, or `a/b.json` when
    /// nested).
    Key(String),
    /// Every key: an object mapping key to parsed JSON (for keys ending in
    /// `.json`) or to text.
    AllKeys,
}

impl Default for Selector {
    fn default() -> Self {
        Selector::Key("config.json".into())
    }
}

impl Selector {
    /// The config this selector picks out of `snapshot`.
    pub fn extract(&self, snapshot: &Snapshot) -> Result<Value> {
        match self {
            Selector::Key(key) => match snapshot.get(key) {
                None => Err(Error::MissingKey {
                    key: key.clone(),
                    version: snapshot.version.clone(),
                }),
                Some(Err(e)) => Err(clone_refusal(key, e)),
                Some(Ok(bytes)) => parse_json(key, bytes),
            },
            Selector::AllKeys => {
                let mut object = Map::new();
                for (key, content) in &snapshot.entries {
                    let bytes = content.as_deref().map_err(|e| clone_refusal(key, e))?;
                    let value = if key.ends_with(".json") {
                        parse_json(key, bytes)?
                    } else {
                        let text = std::str::from_utf8(bytes)
                            .map_err(|_| Error::NotText { key: key.clone() })?;
                        Value::String(text.to_owned())
                    };
                    object.insert(key.clone(), value);
                }
                Ok(Value::Object(object))
            }
        }
    }
}

/// Parses `bytes` as JSON, reporting where it is wrong.
pub fn parse_json(key: &str, bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| {
        let message = e.to_string();
        // serde_json appends " at line L column C"; the position has fields.
        let message = match message.rfind(" at line ") {
            Some(i) => message[..i].to_owned(),
            None => message,
        };
        Error::Json {
            key: key.to_owned(),
            line: e.line(),
            column: e.column(),
            message,
        }
    })
}

/// Per-key errors live in the snapshot; the config error is a new value
/// carrying the same message.
fn clone_refusal(key: &str, e: &Error) -> Error {
    Error::Refused {
        key: key.to_owned(),
        reason: match e {
            Error::Refused { reason, .. } => reason.clone(),
            other => other.chain(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Entries, Layout};

    fn snapshot(entries: &[(&str, &[u8])]) -> Snapshot {
        Snapshot {
            version: "..v1".into(),
            layout: Layout::ConfigMap,
            swapped_at: None,
            seen_at: std::time::SystemTime::UNIX_EPOCH,
            entries: entries
                .iter()
                .map(|(k, v)| (k.to_string(), Ok(v.to_vec())))
                .collect::<Entries>(),
            names: entries.iter().map(|(k, _)| k.to_string()).collect(),
        }
    }

    #[test]
    fn key_mode_parses_the_key() {
        let s = snapshot(&[("config.json", br#"{"a":1}"#), ("other", b"x")]);
        assert_eq!(
            Selector::default().extract(&s).unwrap(),
            serde_json::json!({"a": 1})
        );
    }

    #[test]
    fn json_errors_give_line_and_column() {
        let s = snapshot(&[("config.json", b"{\n  \"a\": 1,\n  oops\n}")]);
        match Selector::default().extract(&s).unwrap_err() {
            Error::Json {
                key, line, column, ..
            } => {
                assert_eq!((key.as_str(), line, column), ("config.json", 3, 3));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn missing_key_names_key_and_version() {
        let err = Selector::default().extract(&snapshot(&[])).unwrap_err();
        assert_eq!(err.to_string(), "key config.json not found in ..v1");
    }

    #[test]
    fn all_keys_mixes_json_and_text_and_accepts_empty() {
        let s = snapshot(&[("a.json", b"[1]"), ("b/c.txt", b"hi")]);
        assert_eq!(
            Selector::AllKeys.extract(&s).unwrap(),
            serde_json::json!({"a.json": [1], "b/c.txt": "hi"})
        );
        assert_eq!(
            Selector::AllKeys.extract(&snapshot(&[])).unwrap(),
            serde_json::json!({})
        );
        let bin = snapshot(&[("blob", b"\xff\xfe")]);
        assert!(matches!(
            Selector::AllKeys.extract(&bin),
            Err(Error::NotText { .. })
        ));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(10_000);
        let s = snapshot(&[("config.json", deep.as_bytes())]);
        assert!(matches!(
            Selector::default().extract(&s),
            Err(Error::Json { .. })
        ));
    }
}
