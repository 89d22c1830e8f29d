//! Values exactly as written (issue 21): the table of the issue, row by
//! row, through both paths (the JSON value events and webhooks carry, and
//! a typed config), under the YAML 1.2 core schema and the YAML 1.1
//! switch; TOML datetimes and non-finite floats; numbers without loss.

use serde_json::Value;
#[cfg(any(feature = "yaml", feature = "toml"))]
use serde_json::json;

use super::*;
use crate::volume::{Entries, Layout};

fn snapshot(key: &str, bytes: &[u8]) -> Snapshot {
    Snapshot {
        version: "..v1".into(),
        data_dir: "..v1".into(),
        layout: Layout::ConfigMap,
        swapped_at: None,
        seen_at: std::time::SystemTime::UNIX_EPOCH,
        entries: [(key.to_owned(), Ok(bytes.to_vec()))]
            .into_iter()
            .collect::<Entries>(),
        names: vec![key.to_owned()],
    }
}

/// The JSON value of `key` holding `text`, under `selector`.
fn json_of(selector: &Selector, key: &str, text: &str) -> Result<Value> {
    selector.extract(&snapshot(key, text.as_bytes()))
}

#[cfg(any(feature = "yaml", feature = "toml"))]
/// `T` from `key` holding `text`, as `Live<T>` takes it (JSON value first,
/// non-finite floats kept for `T`).
fn typed<T: DeserializeOwned>(selector: &Selector, key: &str, text: &str) -> Result<T> {
    let selector = selector.clone().with_non_finite_as_text();
    let s = snapshot(key, text.as_bytes());
    let config = selector.extract(&s)?;
    selector.deserialize(&s, &config)
}

/// Whether this build's serde_json keeps numbers as written (the tool's
/// `exact-numbers`, or any crate in the build asking serde_json for it).
fn exact() -> bool {
    let big = "12345678901234567890123";
    let written = serde_json::from_str::<Value>(big).unwrap().to_string();
    written == big
}

/// Whether this build's objects keep the document's key order (serde_json's
/// `preserve_order`, the tool's feature `document-order`) rather than
/// sorting their keys: asked of serde_json, as Cargo unifies the feature.
fn document_order() -> bool {
    let doc = serde_json::from_str::<Value>(r#"{"b":0,"a":0}"#).unwrap();
    doc.as_object()
        .unwrap()
        .keys()
        .next()
        .is_some_and(|k| k == "b")
}

#[cfg(feature = "yaml")]
#[derive(Debug, serde::Deserialize, PartialEq)]
struct Text {
    v: String,
}
#[cfg(feature = "yaml")]
#[derive(Debug, serde::Deserialize, PartialEq)]
struct Flag {
    v: bool,
}
#[cfg(feature = "yaml")]
#[derive(Debug, serde::Deserialize, PartialEq)]
struct Mode {
    v: u32,
}
#[cfg(any(feature = "yaml", feature = "toml"))]
#[derive(Debug, serde::Deserialize)]
struct Float {
    v: f64,
}

#[cfg(feature = "yaml")]
mod yaml {
    use super::*;

    fn core() -> Selector {
        Selector::key("c.yaml")
    }
    fn yaml11() -> Selector {
        Selector::key("c.yaml").with_yaml_schema(YamlSchema::Yaml11)
    }

    /// Rows 1 and 2: `no`, `y`, `on`, `off`, `Yes` are text in YAML 1.2 in
    /// both paths; booleans in both under the 1.1 switch. A typed string
    /// field takes them as written either way.
    #[test]
    fn norway_and_friends_are_text_in_yaml_1_2_and_booleans_in_1_1() {
        for (written, as_11) in [
            ("no", false),
            ("y", true),
            ("on", true),
            ("off", false),
            ("Yes", true),
            ("N", false),
        ] {
            let doc = format!("v: {written}\n");
            assert_eq!(
                json_of(&core(), "c.yaml", &doc).unwrap(),
                json!({"v": written})
            );
            assert_eq!(
                typed::<Text>(&core(), "c.yaml", &doc).unwrap().v,
                written,
                "{written}"
            );
            let err = typed::<Flag>(&core(), "c.yaml", &doc).unwrap_err();
            assert!(err.to_string().contains("v: "), "{written}: {err}");

            assert_eq!(
                json_of(&yaml11(), "c.yaml", &doc).unwrap(),
                json!({"v": as_11})
            );
            assert_eq!(typed::<Flag>(&yaml11(), "c.yaml", &doc).unwrap().v, as_11);
            assert_eq!(typed::<Text>(&yaml11(), "c.yaml", &doc).unwrap().v, written);
        }
        for (written, value) in [("true", true), ("True", true), ("FALSE", false)] {
            let doc = format!("v: {written}\n");
            for schema in [core(), yaml11()] {
                assert_eq!(
                    json_of(&schema, "c.yaml", &doc).unwrap(),
                    json!({"v": value})
                );
                assert_eq!(typed::<Flag>(&schema, "c.yaml", &doc).unwrap().v, value);
            }
        }
        // Quoted is text whatever the schema.
        assert_eq!(
            json_of(&yaml11(), "c.yaml", "v: \"no\"\n").unwrap(),
            json!({"v": "no"})
        );
    }

    /// Row 3: `0755` is the integer 755 in YAML 1.2 (not the float 755.0),
    /// in the JSON and in a `u32` field; octal 493 under the 1.1 switch;
    /// a string field keeps `0755`.
    #[test]
    fn leading_zero_is_decimal_in_yaml_1_2_and_octal_in_1_1() {
        let doc = "v: 0755\n";
        let value = json_of(&core(), "c.yaml", doc).unwrap();
        assert_eq!(value, json!({"v": 755}));
        assert_eq!(value.to_string(), r#"{"v":755}"#);
        assert_eq!(typed::<Mode>(&core(), "c.yaml", doc).unwrap().v, 755);
        assert_eq!(typed::<Text>(&core(), "c.yaml", doc).unwrap().v, "0755");

        assert_eq!(
            json_of(&yaml11(), "c.yaml", doc).unwrap(),
            json!({"v": 493})
        );
        assert_eq!(typed::<Mode>(&yaml11(), "c.yaml", doc).unwrap().v, 493);
        assert_eq!(typed::<Text>(&yaml11(), "c.yaml", doc).unwrap().v, "0755");

        // 0o755 is YAML 1.2's octal; text in 1.1.
        assert_eq!(
            json_of(&core(), "c.yaml", "v: 0o755").unwrap(),
            json!({"v": 493})
        );
        assert_eq!(typed::<Mode>(&core(), "c.yaml", "v: 0o755").unwrap().v, 493);
        assert_eq!(
            json_of(&yaml11(), "c.yaml", "v: 0o755").unwrap(),
            json!({"v": "0o755"})
        );
        // Signs, hex, and what YAML 1.2 leaves as text.
        let all = "a: -0755\nb: 0x1F\nc: +12\nd: 1_000\ne: 0b101\nf: 1:30\ng: tRUE\n";
        assert_eq!(
            json_of(&core(), "c.yaml", all).unwrap(),
            json!({"a": -755, "b": 31, "c": 12, "d": "1_000", "e": "0b101", "f": "1:30", "g": "tRUE"})
        );
        assert_eq!(
            json_of(&yaml11(), "c.yaml", all).unwrap(),
            json!({"a": -493, "b": 31, "c": 12, "d": 1000, "e": 5, "f": 90, "g": "tRUE"})
        );
    }

    /// Row 4: `1.10` is the float 1.1 (written `1.10` where numbers are
    /// kept as written); a string field keeps `1.10`.
    #[test]
    fn a_decimal_is_a_float_and_a_string_field_keeps_its_text() {
        let doc = "v: 1.10\n";
        let value = json_of(&core(), "c.yaml", doc).unwrap();
        assert_eq!(value["v"].as_f64(), Some(1.1));
        let expected = if exact() { "1.10" } else { "1.1" };
        assert_eq!(value["v"].to_string(), expected);
        assert_eq!(typed::<Text>(&core(), "c.yaml", doc).unwrap().v, "1.10");
        assert_eq!(typed::<Float>(&core(), "c.yaml", doc).unwrap().v, 1.1);
        // JSON has no `+`, `.5` or `5.`: the same value, written as JSON.
        let value = json_of(&core(), "c.yaml", "a: .5\nb: +1.5\nc: 5.\nd: 1e3\n").unwrap();
        let text = value.to_string();
        assert!(text.contains(r#""a":0.5"#), "{text}");
        assert!(text.contains(r#""b":1.5"#), "{text}");
        assert!(text.contains(r#""c":5.0"#), "{text}");
        assert_eq!(value["d"].as_f64(), Some(1000.0), "{text}");
    }

    /// Row 5: integers past 64 bits and decimals past f64's digits reach
    /// JSON as written (where serde_json keeps numbers: the tool).
    #[test]
    fn numbers_past_f64_stay_exact() {
        let doc = "n: 12345678901234567890123\npi: 3.14159265358979323846264338327950288\nh: 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF\n";
        let value = json_of(&core(), "c.yaml", doc).unwrap();
        if exact() {
            let expected = if document_order() {
                r#"{"n":12345678901234567890123,"pi":3.14159265358979323846264338327950288,"h":87112285931760246646623899502532662132735}"#
            } else {
                r#"{"h":87112285931760246646623899502532662132735,"n":12345678901234567890123,"pi":3.14159265358979323846264338327950288}"#
            };
            assert_eq!(value.to_string(), expected);
        } else {
            assert_eq!(value["n"].as_f64(), Some(1.2345678901234568e22));
        }
        // An alias is the anchored value, exactly.
        let value = json_of(&core(), "c.yaml", "a: &x 0755\nb: *x\n").unwrap();
        assert_eq!(value, json!({"a": 755, "b": 755}));
    }

    /// Row 7: `.inf` and `.nan` are floats in YAML 1.2; JSON cannot carry
    /// them, so the JSON path refuses naming the key, field and line, and a
    /// typed float field takes them.
    #[test]
    fn non_finite_floats_are_refused_in_json_and_taken_by_typed_fields() {
        let err = json_of(&core(), "c.yaml", "a: 1\nserver:\n  v: .inf\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "key c.yaml: YAML value JSON cannot carry, at line 3 column 6: server.v: .inf \
             is not a finite number, and JSON has no infinity or NaN (a typed config's \
             float field can take it)"
        );
        assert!(matches!(err, Error::Unrepresentable { .. }), "{err:?}");
        assert_eq!(
            typed::<Float>(&core(), "c.yaml", "v: .inf").unwrap().v,
            f64::INFINITY
        );
        assert_eq!(
            typed::<Float>(&core(), "c.yaml", "v: -.inf").unwrap().v,
            f64::NEG_INFINITY
        );
        assert!(
            typed::<Float>(&core(), "c.yaml", "v: .nan")
                .unwrap()
                .v
                .is_nan()
        );
        // Quoted or tagged as text, it is text.
        assert_eq!(
            json_of(&core(), "c.yaml", "a: '.inf'\nb: !!str .nan\n").unwrap(),
            json!({"a": ".inf", "b": ".nan"})
        );
    }

    /// Tags decide over resolution; comments are not tags.
    #[test]
    fn tagged_scalars_keep_their_tag() {
        let doc = "a: !!str 0755\nb: &x !!str 12\nc: !!float 1\nd: # note !x\n  0755\n";
        let value = json_of(&core(), "c.yaml", doc).unwrap();
        assert_eq!(value["a"], json!("0755"));
        assert_eq!(value["b"], json!("12"));
        assert_eq!(value["c"].as_f64(), Some(1.0));
        assert!(value["c"].is_f64(), "{value}");
        assert_eq!(value["d"], json!(755));
    }
}

#[cfg(feature = "toml")]
mod toml {
    use super::*;

    fn sel() -> Selector {
        Selector::key("c.toml")
    }

    /// Row 6: each kind of TOML datetime becomes its RFC 3339 text, and a
    /// typed field takes it as a string or as a date type.
    #[test]
    fn datetimes_become_rfc3339_text() {
        let doc = "odt = 1979-05-27T07:32:00Z\nodt2 = 1979-05-27 00:32:00.999999-07:00\n\
                   ldt = 1979-05-27T07:32:00\nld = 1979-05-27\nlt = 07:32:00\nlt2 = 00:32:00.5\n";
        assert_eq!(
            json_of(&sel(), "c.toml", doc).unwrap(),
            json!({
                "odt": "1979-05-27T07:32:00Z",
                "odt2": "1979-05-27T00:32:00.999999-07:00",
                "ldt": "1979-05-27T07:32:00",
                "ld": "1979-05-27",
                "lt": "07:32:00",
                "lt2": "00:32:00.5",
            })
        );
        // As text (and so as any date type that reads RFC 3339 text), or
        // as toml's own datetime, taken from the bytes.
        #[derive(serde::Deserialize)]
        struct AsText {
            odt: String,
            ld: String,
        }
        let dates: AsText = typed(&sel(), "c.toml", doc).unwrap();
        assert_eq!(dates.odt, "1979-05-27T07:32:00Z");
        assert_eq!(dates.ld, "1979-05-27");
        #[derive(serde::Deserialize)]
        struct AsDates {
            odt: ::toml::value::Datetime,
            lt: ::toml::value::Datetime,
        }
        let dates: AsDates = typed(&sel(), "c.toml", doc).unwrap();
        assert_eq!(dates.odt.to_string(), "1979-05-27T07:32:00Z");
        assert_eq!(dates.lt.to_string(), "07:32:00");
    }

    /// Row 7: `inf` and `nan` cannot be JSON: an error naming the key, the
    /// field and the line, not `null`; a typed float takes them.
    #[test]
    fn non_finite_floats_are_refused_in_json_and_taken_by_typed_fields() {
        let err = json_of(&sel(), "c.toml", "a = 1\n[server]\nx = -inf\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "key c.toml: TOML value JSON cannot carry, at line 3 column 5: server.x: -inf \
             is not a finite number, and JSON has no infinity or NaN (a typed config's \
             float field can take it)"
        );
        assert_eq!(
            typed::<Float>(&sel(), "c.toml", "v = inf").unwrap().v,
            f64::INFINITY
        );
        assert!(
            typed::<Float>(&sel(), "c.toml", "v = nan")
                .unwrap()
                .v
                .is_nan()
        );
    }

    #[test]
    fn numbers_keep_their_digits() {
        let doc = "a = 0x1F\nb = 1_000\nc = 1.10\nd = +3.14159265358979323846\n";
        let value = json_of(&sel(), "c.toml", doc).unwrap();
        assert_eq!(value["a"], json!(31));
        assert_eq!(value["b"], json!(1000));
        if exact() {
            assert_eq!(value["c"].to_string(), "1.10");
            assert_eq!(value["d"].to_string(), "3.14159265358979323846");
        }
        let err = json_of(&sel(), "c.toml", "n = 12345678901234567890123\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("n: 12345678901234567890123 is out of range"),
            "{err}"
        );
    }
}

/// Row 5 for JSON keys.
#[test]
fn json_numbers_past_f64_stay_exact() {
    let text = r#"{"n": 12345678901234567890123, "f": 1.10}"#;
    let value = json_of(&Selector::key("c.json"), "c.json", text).unwrap();
    if exact() {
        let expected = if document_order() {
            r#"{"n":12345678901234567890123,"f":1.10}"#
        } else {
            r#"{"f":1.10,"n":12345678901234567890123}"#
        };
        assert_eq!(value.to_string(), expected);
    }
}

/// One error shape (issue 21): `key K: <what>, at line L column C:
/// <detail>`, 1-based, the value where there is one, no Rust Debug text,
/// no library option names, the line a person must fix.
#[test]
fn error_messages_read_once() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct P {
        port: u16,
    }
    let mut cases = vec![
        (
            "c.json",
            "{\n\"a\": 1,\n",
            "key c.json: invalid JSON, at line 2 column 8: EOF while parsing a value",
        ),
        (
            "c.json",
            "{\n  \"port\": 70000\n}",
            "key c.json: invalid JSON, at line 2 column 15: port: 70000 is out of range for u16",
        ),
    ];
    if cfg!(feature = "yaml") {
        cases.extend([
            (
                "c.yaml",
                "a: 1\n---\na: 2\n",
                "key c.yaml: invalid YAML, at line 2 column 1: holds 2 YAML documents \
                 (separated by ---); a key holds one document",
            ),
            (
                "c.yaml",
                "a: 1\na: 2\n",
                "key c.yaml: invalid YAML, at line 2 column 1: duplicate mapping key: a (a key \
                 may appear once)",
            ),
            (
                "c.yaml",
                "a: 1\nb: 2\nc: \"abc\nd: 4\n",
                "key c.yaml: invalid YAML, at line 3 column 4: this quote is not closed (the \
                 parser gave up at line 4: invalid indentation in multiline quoted scalar)",
            ),
            (
                "c.yaml",
                "port: 70000\n",
                "key c.yaml: invalid YAML, at line 1 column 7: port: 70000 is out of range for u16",
            ),
            (
                "c.yaml",
                "port: x # a comment\n",
                "key c.yaml: invalid YAML, at line 1 column 7: port: invalid type: string \"x\", \
                 expected u16",
            ),
        ]);
    }
    if cfg!(feature = "toml") {
        cases.push((
            "c.toml",
            "port = 70000\n",
            "key c.toml: invalid TOML, at line 1 column 8: port: 70000 is out of range for u16",
        ));
    }
    for (key, text, expected) in cases {
        let sel = Selector::key(key);
        let s = snapshot(key, text.as_bytes());
        let err = match sel.extract(&s) {
            Err(e) => e,
            Ok(v) => sel.deserialize::<P>(&s, &v).unwrap_err(),
        };
        assert_eq!(err.to_string(), expected, "{text:?}");
        assert_eq!(err.key(), Some(key));
    }
}
