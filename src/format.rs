//! Turning a snapshot into the program's config: each selected key parsed by
//! its format (JSON, YAML, TOML or text, chosen by extension or given
//! explicitly) into a `serde_json::Value`, or deserialized straight into a
//! typed config. Every parse error names the key, the line and the column.
//!
//! A key whose bytes start with the gzip magic is decompressed first
//! ([`crate::gzip`], within [`Selector::with_max_decompressed`]), and a
//! trailing `.gz` is looked through when the format is told from the name.
//!
//! YAML is parsed by serde-saphyr (pure Rust, no `unsafe-libyaml`), with a
//! budget that refuses alias bombs and deep nesting before they cost memory.
//!
//! Memory: in the tool's build a key's parse into a `Value` peaks at most
//! at 68 times its size for JSON, 64 for YAML, 256 for TOML and 16 for
//! text, plus 1 MiB (`tests/peak_memory.rs`, which reads, parses and
//! prints the worst inputs). Arrays hold exactly their elements, and maps
//! are made for exactly theirs: the tool's serde_json keeps objects in
//! document order (feature `document-order`), its `Map` an `IndexMap`,
//! some 180 bytes for a one-entry map where a `BTreeMap` node of 11
//! entries takes 640 (with sorted maps, the library's default: 136 for
//! JSON, 140 for YAML). What is left is each `Value`'s 72 bytes (32 with
//! sorted maps) and, for TOML, the toml crate's own parse tree, which is
//! why TOML is held to YAML's node budget before that tree is built (at
//! most 250,000 keys and values: a TOML key's peak is then at most some
//! 120 MiB, whatever `--max-file-size`).

use std::{borrow::Cow, fmt, str::FromStr};

use log::warn;
use serde_core::{Deserialize, Deserializer, de::DeserializeOwned};
use serde_json::{Map, Value};

use crate::{Error, Result, volume::Snapshot};

mod json_value;
mod message;
#[cfg(feature = "toml")]
mod toml_json;
#[cfg(test)]
mod values_tests;
#[cfg(feature = "yaml")]
mod yaml_json;

/// How a plain YAML scalar (unquoted, untagged) gets its type. Quoted,
/// block and tagged scalars are never resolved: `"no"` is text whatever
/// the schema.
///
/// | written | [`Core`](YamlSchema::Core) (default) | [`Yaml11`](YamlSchema::Yaml11) |
/// |---|---|---|
/// | `no`, `yes`, `on`, `off`, `y`, `n` | text | `false`/`true` |
/// | `true`, `True`, `TRUE` | `true` | `true` |
/// | `0755` | 755 | 493 (octal) |
/// | `0o755` | 493 | text |
/// | `1_000`, `0b101`, `1:30` | text | 1000, 5, 90 |
/// | `1e3` | 1000.0 (`1e3`) | text |
/// | `.inf`, `.nan` | non-finite float | non-finite float |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum YamlSchema {
    /// The YAML 1.2 core schema: only `true`/`false` (and `True`, `TRUE`,
    /// `False`, `FALSE`) are booleans, `0755` is the integer 755, `0o755`
    /// is octal.
    #[default]
    Core,
    /// YAML 1.1's types, for consumers that expect them (PyYAML, go-yaml
    /// v2): `no` is `false`, so `country: no` (Norway) is a boolean, and
    /// `0755` is octal.
    Yaml11,
}

/// How scalars are turned into JSON: the YAML schema, and what a
/// non-finite float becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct Resolve {
    /// The schema of plain YAML scalars.
    pub(crate) yaml: YamlSchema,
    /// A non-finite float (`inf`, `.nan`) as its text instead of an error:
    /// for a typed config, whose JSON value is only a step towards `T`
    /// (its `f64` fields then take the value from the key's bytes).
    pub(crate) non_finite_as_text: bool,
}

/// `path: what`, or `what` at the top.
#[cfg(any(feature = "yaml", feature = "toml"))]
fn field_message(path: &str, what: &str) -> String {
    if path.is_empty() {
        what.to_owned()
    } else {
        format!("{path}: {what}")
    }
}

/// The refusal of a non-finite float, which JSON cannot carry.
#[cfg(any(feature = "yaml", feature = "toml"))]
fn non_finite_message(path: &str, written: &str) -> String {
    field_message(
        path,
        &format!(
            "{written} is not a finite number, and JSON has no infinity or NaN (a typed \
             config's float field can take it)"
        ),
    )
}

/// How a key's bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// JSON (`.json`). Always available.
    Json,
    /// YAML (`.yaml`, `.yml`), one document per key. Cargo feature `yaml`.
    Yaml,
    /// TOML (`.toml`). Cargo feature `toml`.
    Toml,
    /// UTF-8 text, carried as a JSON string.
    Text,
}

/// The names `--format` and [`Format::from_str`] accept, for messages.
const FORMAT_NAMES: &str = "json, yaml, toml, text";

impl Format {
    /// Every format, in the order messages list them.
    pub const ALL: [Format; 4] = [Format::Json, Format::Yaml, Format::Toml, Format::Text];

    /// The format a key's extension names (`.json`, `.yaml`/`.yml`,
    /// `.toml`), if any. A trailing `.gz` is looked through:
    /// `prometheus.yaml.gz` is YAML (its bytes are decompressed first, see
    /// [`crate::gzip`]).
    pub fn from_key(key: &str) -> Option<Format> {
        let len = key.len();
        let key = match key.get(len.saturating_sub(3)..) {
            Some(tail) if tail.eq_ignore_ascii_case(".gz") => &key[..len - 3],
            _ => key,
        };
        let ext = key.rsplit_once('.')?.1;
        match ext.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "yaml" | "yml" => Some(Format::Yaml),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }

    /// The format's name as `--format` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Yaml => "yaml",
            Format::Toml => "toml",
            Format::Text => "text",
        }
    }

    /// Whether this build can parse the format (YAML and TOML are cargo
    /// features).
    pub fn is_available(self) -> bool {
        match self {
            Format::Yaml => cfg!(feature = "yaml"),
            Format::Toml => cfg!(feature = "toml"),
            Format::Json | Format::Text => true,
        }
    }

    /// Parses `bytes` (the content of `key`) into a JSON value, YAML by
    /// the YAML 1.2 core schema ([`Selector::with_yaml_schema`] chooses
    /// another). Numbers keep their digits where serde_json keeps them
    /// (its `arbitrary_precision` feature: the tool's build turns it on); a
    /// TOML datetime becomes its RFC 3339 text; a non-finite float is an
    /// [`Error::Unrepresentable`].
    pub fn parse(self, key: &str, bytes: &[u8]) -> Result<Value> {
        self.parse_with(key, bytes, Resolve::default())
    }

    fn parse_with(self, key: &str, bytes: &[u8], resolve: Resolve) -> Result<Value> {
        self.check_available(key)?;
        match self {
            Format::Text => text(key, bytes).map(|t| Value::String(t.to_owned())),
            Format::Json => json_value(key, bytes),
            Format::Yaml => yaml_value(key, bytes, resolve),
            Format::Toml => toml_value(key, bytes, resolve),
        }
    }

    /// Deserializes `bytes` (the content of `key`) into `T`. A type mismatch
    /// names the field path (`server.port: invalid type: ...`) and, as for
    /// syntax errors, the line and column. YAML scalars are typed by the
    /// YAML 1.2 core schema, as [`parse`](Self::parse) types them; a TOML
    /// datetime fits a string field or a date type.
    pub fn deserialize<T: DeserializeOwned>(self, key: &str, bytes: &[u8]) -> Result<T> {
        self.check_available(key)?;
        let resolve = Resolve {
            non_finite_as_text: true,
            ..Resolve::default()
        };
        match self {
            Format::Json => json(key, bytes),
            Format::Yaml | Format::Toml => {
                let value = self.parse_with(key, bytes, resolve)?;
                self.typed(key, bytes, Some(&value), resolve)
            }
            Format::Text => {
                let text = text(key, bytes)?;
                from_value(key, self, Value::String(text.to_owned()))
            }
        }
    }

    /// `T` from the parsed `value` if it fits, else from the bytes: a
    /// refusal is found again in the bytes for its line and column, and
    /// what a JSON value cannot hold (a TOML datetime for a date type, an
    /// infinite float, a quoted `"0755"` for a string field written
    /// `0755`) is taken from them as written.
    fn typed<T: DeserializeOwned>(
        self,
        key: &str,
        bytes: &[u8],
        value: Option<&Value>,
        resolve: Resolve,
    ) -> Result<T> {
        if let Some(Ok(typed)) = value.map(T::deserialize) {
            return Ok(typed);
        }
        match self {
            Format::Json => json(key, bytes),
            Format::Yaml => yaml(key, bytes, resolve.yaml),
            Format::Toml => toml(key, bytes),
            Format::Text => {
                let text = text(key, bytes)?;
                from_value(key, self, Value::String(text.to_owned()))
            }
        }
    }

    fn check_available(self, key: &str) -> Result<()> {
        if self.is_available() {
            Ok(())
        } else {
            Err(Error::Format {
                key: key.to_owned(),
                reason: format!(
                    "{} support is not built in (enable the configmapwatch cargo feature \"{}\")",
                    self.name().to_uppercase(),
                    self.name()
                ),
            })
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Json => "JSON",
            Format::Yaml => "YAML",
            Format::Toml => "TOML",
            Format::Text => "text",
        })
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s) || (s == "yml" && *f == Format::Yaml))
            .ok_or_else(|| format!("unknown format {s:?} (known: {FORMAT_NAMES})"))
    }
}

/// A line and column (both 1-based) in a key's content. Made by the
/// parsers; it may carry more (a byte offset) in later releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// Which part of the volume is the config, and how it is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Selector {
    keys: Keys,
    format: Option<Format>,
    /// How scalars become JSON.
    resolve: Resolve,
    /// The cap on a gzip key's decompressed size.
    max_decompressed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Keys {
    /// The config is this key's parsed content.
    One(String),
    /// The config is an object keyed by these keys' names.
    Many(Vec<String>),
    /// The config is an object of every key in the volume.
    All,
}

impl Default for Selector {
    fn default() -> Self {
        Selector::key("config.json")
    }
}

impl Selector {
    /// One key (e.g. `config.yaml`, or `a/b.json` when nested): the config
    /// is its content, parsed by its extension.
    pub fn key(key: impl Into<String>) -> Self {
        Selector {
            keys: Keys::One(key.into()),
            format: None,
            resolve: Resolve::default(),
            max_decompressed: crate::gzip::DEFAULT_MAX_DECOMPRESSED,
        }
    }

    /// Several keys: the config is an object keyed by key name, each parsed
    /// by its extension. A single key is the same as [`Selector::key`].
    pub fn keys<I: IntoIterator<Item = S>, S: Into<String>>(keys: I) -> Self {
        let mut keys: Vec<String> = keys.into_iter().map(Into::into).collect();
        Selector {
            keys: if keys.len() == 1 {
                Keys::One(keys.remove(0))
            } else {
                Keys::Many(keys)
            },
            format: None,
            resolve: Resolve::default(),
            max_decompressed: crate::gzip::DEFAULT_MAX_DECOMPRESSED,
        }
    }

    /// Every key: an object mapping key name to its content, parsed by
    /// extension (text for keys without a known one). Binary keys are left
    /// out with a warning.
    pub fn all_keys() -> Self {
        Selector {
            keys: Keys::All,
            format: None,
            resolve: Resolve::default(),
            max_decompressed: crate::gzip::DEFAULT_MAX_DECOMPRESSED,
        }
    }

    /// Parses every selected key as `format`, whatever its extension.
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = Some(format);
        self
    }

    /// Resolves plain YAML scalars by `schema` (default
    /// [`YamlSchema::Core`], YAML 1.2), in the JSON value and in a typed
    /// config alike.
    pub fn with_yaml_schema(mut self, schema: YamlSchema) -> Self {
        self.resolve.yaml = schema;
        self
    }

    /// The schema plain YAML scalars are resolved by.
    pub fn yaml_schema(&self) -> YamlSchema {
        self.resolve.yaml
    }

    /// For a typed config ([`Live`](crate::Live)): a non-finite float is
    /// kept in the JSON value as its text, so that extracting succeeds and
    /// `T`'s float field takes the value from the key's bytes.
    pub(crate) fn with_non_finite_as_text(mut self) -> Self {
        self.resolve.non_finite_as_text = true;
        self
    }

    /// Refuses a gzip-compressed key ([`crate::gzip`]) that decompresses
    /// to more than `bytes` (default
    /// [`DEFAULT_MAX_DECOMPRESSED`](crate::gzip::DEFAULT_MAX_DECOMPRESSED),
    /// the reader's default cap on a file; pass the volume's
    /// `max_file_size` when that is raised).
    pub fn with_max_decompressed(mut self, bytes: u64) -> Self {
        self.max_decompressed = bytes;
        self
    }

    /// The cap on a gzip key's decompressed size.
    pub fn max_decompressed(&self) -> u64 {
        self.max_decompressed
    }

    /// `bytes` (the content of `key`) as they are parsed: decompressed if
    /// they start with the gzip magic, within this selector's cap.
    pub fn content<'a>(&self, key: &str, bytes: &'a [u8]) -> Result<Cow<'a, [u8]>> {
        crate::gzip::decompress_if_gzip(key, bytes, self.max_decompressed)
    }

    /// The keys whose content is needed: `None` for every key. The reader
    /// lists the others by name and never reads them.
    pub fn needed_keys(&self) -> Option<Vec<String>> {
        match &self.keys {
            Keys::One(key) => Some(vec![key.clone()]),
            Keys::Many(keys) => Some(keys.clone()),
            Keys::All => None,
        }
    }

    /// The one key this selector picks, if it picks exactly one.
    pub fn single_key(&self) -> Option<&str> {
        match &self.keys {
            Keys::One(key) => Some(key),
            _ => None,
        }
    }

    /// The format `key` is parsed with: the override, else its extension.
    /// In all-keys mode a key with no known extension is text; otherwise it
    /// is an error saying how to choose.
    pub fn format_of(&self, key: &str) -> Result<Format> {
        if let Some(format) = self.format {
            return Ok(format);
        }
        match (Format::from_key(key), &self.keys) {
            (Some(format), _) => Ok(format),
            (None, Keys::All) => Ok(Format::Text),
            (None, _) => Err(Error::Format {
                key: key.to_owned(),
                reason: format!(
                    "cannot tell its format from the extension (known: .json, .yaml, .yml, \
                     .toml); choose one with --format {{{}}} (Selector::with_format in the \
                     library)",
                    FORMAT_NAMES.replace(", ", "|")
                ),
            }),
        }
    }

    /// The config this selector picks out of `snapshot`.
    pub fn extract(&self, snapshot: &Snapshot) -> Result<Value> {
        match &self.keys {
            Keys::One(key) => {
                let format = self.format_of(key)?;
                format.parse_with(
                    key,
                    &self.content(key, bytes_of(snapshot, key)?)?,
                    self.resolve,
                )
            }
            Keys::Many(keys) => {
                let mut object = Map::new();
                for key in keys {
                    let format = self.format_of(key)?;
                    let bytes = self.content(key, bytes_of(snapshot, key)?)?;
                    let value = format.parse_with(key, &bytes, self.resolve)?;
                    object.insert(key.clone(), value);
                }
                Ok(Value::Object(object))
            }
            Keys::All => {
                let mut object = Map::new();
                let mut binary = Vec::new();
                for (key, content) in &snapshot.entries {
                    let raw = content.as_deref().map_err(|e| clone_refusal(key, e))?;
                    let format = self.format_of(key)?;
                    let bytes = match self.content(key, raw) {
                        Ok(bytes) => bytes,
                        // A gzip key with no known format (a binaryData
                        // archive, say) that cannot be decompressed is
                        // left out like any binary key; one named as a
                        // config is an error.
                        Err(e) if format == Format::Text => {
                            warn!("{}: left out key {key}: {e}", snapshot.version);
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    if format == Format::Text && std::str::from_utf8(&bytes).is_err() {
                        // A binaryData key cannot be a JSON string; it must
                        // not block the rest of the config either.
                        binary.push(key.as_str());
                        continue;
                    }
                    object.insert(key.clone(), format.parse_with(key, &bytes, self.resolve)?);
                }
                if !binary.is_empty() {
                    warn!(
                        "{}: left out binary (non-UTF-8) keys: {}",
                        snapshot.version,
                        binary.join(", ")
                    );
                }
                Ok(Value::Object(object))
            }
        }
    }

    /// Deserializes the config of `snapshot` into `T`. With one key, a
    /// mismatch is found again in the key's bytes, so it carries a line and
    /// column;
    /// otherwise from `config` (what [`extract`](Self::extract) returned),
    /// naming the key and field path.
    pub fn deserialize<T: DeserializeOwned>(
        &self,
        snapshot: &Snapshot,
        config: &Value,
    ) -> Result<T> {
        match &self.keys {
            Keys::One(key) => {
                let format = self.format_of(key)?;
                if format == Format::Text {
                    return from_value(key, format, config.clone());
                }
                // From the parsed value first: it is already in memory, so
                // a good version costs one parse, not two. Only a refusal
                // (or a type the JSON value cannot express, such as a TOML
                // datetime) goes back to the bytes, for the line and column.
                match T::deserialize(config) {
                    Ok(typed) => Ok(typed),
                    Err(_) => format.typed(
                        key,
                        &self.content(key, bytes_of(snapshot, key)?)?,
                        None,
                        self.resolve,
                    ),
                }
            }
            Keys::Many(_) | Keys::All => {
                if let Ok(typed) = T::deserialize(config) {
                    return Ok(typed);
                }
                // Refused: again from the value's text, whose parser names
                // a number that does not fit (a value holding numbers as
                // written says only "invalid number").
                let text = config.to_string();
                let mut from_text = serde_json::Deserializer::from_str(&text);
                serde_path_to_error::deserialize(&mut from_text).map_err(|e| {
                    let path = e.path().to_string();
                    // The first segment is the key the field lives in (key
                    // names hold dots, so not a split of the text).
                    let key = match e.path().iter().next() {
                        Some(serde_path_to_error::Segment::Map { key }) => key.clone(),
                        _ => String::new(),
                    };
                    let format = self.format_of(&key).unwrap_or(Format::Json);
                    Error::Parse {
                        key,
                        format,
                        position: None,
                        message: format!(
                            "{path}: {}",
                            message::detail(strip_json_position(&e.into_inner().to_string()), None)
                        ),
                    }
                })
            }
        }
    }
}

fn bytes_of<'a>(snapshot: &'a Snapshot, key: &str) -> Result<&'a [u8]> {
    match snapshot.get(key) {
        None => Err(Error::MissingKey {
            key: key.to_owned(),
            version: snapshot.version.clone(),
            present: snapshot.names.clone(),
        }),
        Some(Err(e)) => Err(clone_refusal(key, e)),
        Some(Ok(bytes)) => Ok(bytes),
    }
}

fn text<'a>(key: &str, bytes: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|_| Error::NotText {
        key: key.to_owned(),
    })
}

fn from_value<T: DeserializeOwned>(key: &str, format: Format, value: Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| Error::Parse {
        key: key.to_owned(),
        format,
        position: None,
        message: path_message(
            &e.path().to_string(),
            &message::detail(&e.into_inner().to_string(), None),
        ),
    })
}

/// `T`, deserialized with its field path tracked. A mismatch comes back as
/// the format's own error, untouched (so it keeps the format's line and
/// column); the path is left in [`FAILED_AT`] for the caller to prefix.
struct Tracked<T>(T);

thread_local! {
    /// The field path of the last failed [`Tracked`] deserialization on
    /// this thread.
    static FAILED_AT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Tracked<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_path_to_error::deserialize(deserializer)
            .map(Tracked)
            .map_err(|e| {
                let path = e.path().to_string();
                FAILED_AT.with(|at| *at.borrow_mut() = Some(path));
                e.into_inner()
            })
    }
}

/// Runs a format's deserialization of `T`, returning `T` or the error with
/// the field path it failed at (if it got that far).
///
/// Untracked first: tracking the path wraps every visitor, which cost a good
/// 1 MiB version 30% of its JSON parse and 10% of its TOML parse (callgrind,
/// issue 9), and the path is only ever shown in an error. A refusal (rare)
/// is parsed again as `Tracked<T>`: the same bytes fail at the same place,
/// now with the path. Should the second pass not fail, the first error
/// stands: what was refused once is never accepted.
///
/// `has_path` says whether the error can have a field path at all: a
/// syntax error or a refused alias bomb has none, and parsing hostile
/// input twice would only double what it costs us.
fn tracked<T, E>(
    untracked: impl FnOnce() -> Result<T, E>,
    has_path: impl FnOnce(&E) -> bool,
    with_path: impl FnOnce() -> Result<Tracked<T>, E>,
) -> Result<T, (E, Option<String>)> {
    let first = match untracked() {
        Ok(value) => return Ok(value),
        Err(e) if !has_path(&e) => return Err((e, None)),
        Err(e) => e,
    };
    FAILED_AT.with(|at| at.borrow_mut().take());
    match with_path() {
        Ok(_) => Err((first, None)),
        Err(e) => Err((e, FAILED_AT.with(|at| at.borrow_mut().take()))),
    }
}

fn path_message(path: &str, message: &str) -> String {
    if path == "." || path == "?" {
        message.to_owned()
    } else {
        format!("{path}: {message}")
    }
}

fn with_path(path: Option<String>, message: &str) -> String {
    match path {
        Some(path) => path_message(&shorten(&path), message),
        None => message.to_owned(),
    }
}

/// A field path of reasonable length: deep nesting (refused at depth 64)
/// would otherwise fill the line with `[0][0]...`.
fn shorten(path: &str) -> String {
    const KEEP: usize = 60;
    match path.char_indices().rev().nth(KEEP) {
        Some((i, _)) if path.len() > 2 * KEEP => format!("...{}", &path[i..]),
        _ => path.to_owned(),
    }
}

/// serde_json appends " at line L column C"; the position has fields.
fn strip_json_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) if message[i..].contains(" column ") => &message[..i],
        _ => message,
    }
}

/// A JSON key as a value, its arrays no larger than they need to be
/// ([`json_value`]); errors as [`json`] gives them.
fn json_value(key: &str, bytes: &[u8]) -> Result<Value> {
    tracked(
        || json_value::from_slice(bytes),
        |e| e.classify() == serde_json::error::Category::Data,
        || serde_json::from_slice::<Tracked<Value>>(bytes),
    )
    .map_err(|(e, path)| json_error(key, bytes, e, path))
}

fn json<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    tracked(
        || serde_json::from_slice::<T>(bytes),
        |e| e.classify() == serde_json::error::Category::Data,
        || serde_json::from_slice::<Tracked<T>>(bytes),
    )
    .map_err(|(e, path)| json_error(key, bytes, e, path))
}

fn json_error(key: &str, bytes: &[u8], e: serde_json::Error, path: Option<String>) -> Error {
    Error::Parse {
        key: key.to_owned(),
        format: Format::Json,
        position: (e.line() > 0).then(|| message::json_position(bytes, e.line(), e.column())),
        message: with_path(
            path,
            &message::detail(strip_json_position(&e.to_string()), None),
        ),
    }
}

/// A YAML key as JSON, its plain scalars resolved by `resolve.yaml`.
#[cfg(feature = "yaml")]
fn yaml_value(key: &str, bytes: &[u8], resolve: Resolve) -> Result<Value> {
    // Each level of nesting costs serde-saphyr's deserializer, with the
    // spans kept for every node, some 40 KB of stack in a debug build, so
    // the depth the budget allows (64) would overflow a 2 MiB thread (a
    // test's, or a library user's). A thread with a stack of its own
    // bounds that whatever thread asks; a version is parsed once, and the
    // spawn costs microseconds next to the parse.
    let convert = || yaml_json::to_json(bytes, yaml_options(resolve.yaml, bytes.len()), resolve);
    let converted = std::thread::scope(|scope| {
        match std::thread::Builder::new()
            .name("configmapwatch-yaml".into())
            .stack_size(16 << 20)
            .spawn_scoped(scope, convert)
        {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // Out of threads: on this one, as it always was.
            Err(_) => convert(),
        }
    });
    converted.map_err(|e| match e {
        Ok(e) => yaml_error(key, bytes, e, None),
        Err(fault) => Error::Unrepresentable {
            key: key.to_owned(),
            format: Format::Yaml,
            position: fault.position,
            message: fault.message,
        },
    })
}

#[cfg(not(feature = "yaml"))]
fn yaml_value(_key: &str, _bytes: &[u8], _resolve: Resolve) -> Result<Value> {
    unreachable!("checked by Format::check_available")
}

/// A TOML key as JSON: datetimes as RFC 3339 text, numbers as written.
#[cfg(feature = "toml")]
fn toml_value(key: &str, bytes: &[u8], resolve: Resolve) -> Result<Value> {
    let text = text(key, bytes)?;
    toml_budget(key, text)?;
    toml_json::to_json(text, resolve).map_err(|e| match e {
        Ok(e) => toml_error(key, text, e, None),
        Err(fault) => Error::Unrepresentable {
            key: key.to_owned(),
            format: Format::Toml,
            position: Some(fault.position),
            message: fault.message,
        },
    })
}

/// Refuses a TOML document over its node budget before toml builds it
/// (see [`toml_json::check_budget`]): a refusal of its shape, as YAML's.
#[cfg(feature = "toml")]
fn toml_budget(key: &str, text: &str) -> Result<()> {
    toml_json::check_budget(text).map_err(|fault| Error::Parse {
        key: key.to_owned(),
        format: Format::Toml,
        position: Some(fault.position),
        message: fault.message,
    })
}

#[cfg(not(feature = "toml"))]
fn toml_value(_key: &str, _bytes: &[u8], _resolve: Resolve) -> Result<Value> {
    unreachable!("checked by Format::check_available")
}

#[cfg(feature = "yaml")]
fn yaml<T: DeserializeOwned>(key: &str, bytes: &[u8], schema: YamlSchema) -> Result<T> {
    tracked(
        || serde_saphyr::from_slice_with_options::<T>(bytes, yaml_options(schema, bytes.len())),
        |e| {
            // The budget's refusals (alias bombs, deep nesting) are about
            // the document's shape, not a field.
            let text = e.to_string();
            !(text.contains("limit exceeded") || text.contains("budget breached"))
        },
        || {
            serde_saphyr::from_slice_with_options::<Tracked<T>>(
                bytes,
                yaml_options(schema, bytes.len()),
            )
        },
    )
    .map_err(|(e, path)| yaml_error(key, bytes, e, path))
}

/// How many times its own size a YAML key's scalars may add up to once
/// aliases are expanded: aliases may repeat a key's text, but not more than
/// double it (plus 4 KiB, for small keys that share an anchor widely).
pub const YAML_EXPANSION: usize = 2;

/// serde-saphyr's refusal as ours, with the field path if there is one.
#[cfg(feature = "yaml")]
fn yaml_error(key: &str, bytes: &[u8], e: serde_saphyr::Error, path: Option<String>) -> Error {
    let mut position = e.location().and_then(|l| {
        let (line, column) = (l.line() as usize, l.column() as usize);
        (line > 0).then_some(Position {
            line,
            column: column.max(1),
        })
    });
    let source = std::str::from_utf8(bytes).ok();
    let raw = yaml_message(&e);
    let written = source
        .zip(position)
        .and_then(|(s, p)| message::scalar_at(s, p));
    let mut detail = message::detail(&raw, written);
    // An open quote is noticed lines later; point at the quote.
    if raw.contains("quoted scalar")
        && let Some((noticed, quote)) = position
            .zip(source)
            .and_then(|(p, s)| Some((p, message::open_quote(s, p)?)))
        && quote.line < noticed.line
    {
        detail = format!(
            "this quote is not closed (the parser gave up at line {}: {raw})",
            noticed.line
        );
        position = Some(quote);
    }
    Error::Parse {
        key: key.to_owned(),
        format: Format::Yaml,
        position,
        message: with_path(path, &detail),
    }
}

#[cfg(not(feature = "yaml"))]
fn yaml<T: DeserializeOwned>(_key: &str, _bytes: &[u8], _schema: YamlSchema) -> Result<T> {
    unreachable!("checked by Format::check_available")
}

/// serde-saphyr's message on one line, without its source snippet (the
/// position has fields) and without its own location suffix.
#[cfg(feature = "yaml")]
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let message = e.without_snippet().to_string();
    let first = message.lines().next().unwrap_or("").trim();
    // The first " at line" starts the location (alias errors chain several).
    match first.find(" at line ") {
        Some(i) => first[..i].to_owned(),
        None => first.to_owned(),
    }
}

/// The YAML budget: a config is small and shallow, so what an alias bomb or
/// a 10,000-deep nesting needs is refused while parsing, long before it
/// costs memory. One document per key: several are an error.
///
/// The scalar bytes (aliases expanded) and the bytes kept for anchors are
/// bounded by the key's own size, [`YAML_EXPANSION`] times it plus 4 KiB,
/// not by serde-saphyr's fixed 64 MiB: a 100 KB scalar aliased 640 times
/// was refused only once 64 MiB of it were built (a 67 MB peak, which
/// OOM-killed a 32 MiB sidecar on the same version after every restart).
/// Now a key's parse costs at most a constant times its size.
#[cfg(feature = "yaml")]
fn yaml_options(schema: YamlSchema, len: usize) -> serde_saphyr::Options {
    let expanded = len.saturating_mul(YAML_EXPANSION).saturating_add(4096);
    let mut budget = serde_saphyr::Budget::default();
    budget.max_total_scalar_bytes = expanded;
    budget.max_recorded_anchor_bytes = expanded;
    budget.max_depth = 64;
    budget.flow_nesting_limit = 64;
    budget.max_documents = 1;
    budget.max_aliases = 10_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = 100_000;
    // A typed field resolves as the JSON value does (yaml_json): booleans
    // and octal by the schema.
    options.strict_booleans = schema == YamlSchema::Core;
    options.legacy_octal_numbers = schema == YamlSchema::Yaml11;
    // Non-finite floats reach yaml_json, which names the field they are in.
    options.reject_non_finite_typeless_float = false;
    // `!!binary` into text (JSON, a string field) is its base64 as written,
    // as YAML 1.2 loaders give it, not refused when it decodes to bytes.
    options.ignore_binary_tag_for_string = true;
    options
}

#[cfg(feature = "toml")]
fn toml<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    let text = text(key, bytes)?;
    toml_budget(key, text)?;
    tracked(
        || toml::from_str::<T>(text),
        |_| true,
        || toml::from_str::<Tracked<T>>(text),
    )
    .map_err(|(e, path)| toml_error(key, text, e, path))
}

/// The toml crate's refusal as ours, with the field path if there is one.
#[cfg(feature = "toml")]
fn toml_error(key: &str, text: &str, e: toml::de::Error, path: Option<String>) -> Error {
    Error::Parse {
        key: key.to_owned(),
        format: Format::Toml,
        position: e.span().map(|span| position_at(text, span.start)),
        message: with_path(path, &message::detail(e.message().trim_end(), None)),
    }
}

#[cfg(not(feature = "toml"))]
fn toml<T: DeserializeOwned>(_key: &str, _bytes: &[u8]) -> Result<T> {
    unreachable!("checked by Format::check_available")
}

/// The 1-based line and column (in characters) of byte `offset`.
#[cfg(feature = "toml")]
fn position_at(text: &str, offset: usize) -> Position {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Position {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
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
    use serde_json::json;

    fn snapshot(entries: &[(&str, &[u8])]) -> Snapshot {
        Snapshot {
            version: "..v1".into(),
            layout: Layout::ConfigMap,
            data_dir: "..v1".into(),
            swapped_at: None,
            seen_at: std::time::SystemTime::UNIX_EPOCH,
            entries: entries
                .iter()
                .map(|(k, v)| (k.to_string(), Ok(v.to_vec())))
                .collect::<Entries>(),
            names: entries.iter().map(|(k, _)| k.to_string()).collect(),
        }
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Server {
        port: u16,
    }
    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Config {
        server: Server,
    }

    /// The error's position and message, or a panic naming what came.
    fn parse_error(e: Error) -> (Format, Option<(usize, usize)>, String) {
        match e {
            Error::Parse {
                format,
                position,
                message,
                ..
            } => (format, position.map(|p| (p.line, p.column)), message),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn key_mode_parses_the_key() {
        let s = snapshot(&[("config.json", br#"{"a":1}"#), ("other", b"x")]);
        assert_eq!(Selector::default().extract(&s).unwrap(), json!({"a": 1}));
    }

    #[test]
    fn json_errors_give_line_and_column() {
        let s = snapshot(&[("config.json", b"{\n  \"a\": 1,\n  oops\n}")]);
        let err = Selector::default().extract(&s).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("key config.json: invalid JSON, at line 3 column 3: "),
            "{err}"
        );
        assert_eq!(parse_error(err).1, Some((3, 3)));
    }

    #[test]
    fn json_type_mismatch_names_field_path_line_and_column() {
        let bytes = b"{\n  \"server\": {\n    \"port\": \"x\"\n  }\n}";
        let s = snapshot(&[("config.json", bytes)]);
        let config = Selector::default().extract(&s).unwrap();
        let err = Selector::default()
            .deserialize::<Config>(&s, &config)
            .unwrap_err();
        let (format, position, message) = parse_error(err);
        assert_eq!(format, Format::Json);
        assert_eq!(
            message,
            "server.port: invalid type: string \"x\", expected u16"
        );
        assert_eq!(position.map(|p| p.0), Some(3));
    }

    #[test]
    fn missing_key_names_key_and_version() {
        let err = Selector::default().extract(&snapshot(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "key config.json not found in ..v1 (it holds no keys)"
        );
        let err = Selector::default()
            .extract(&snapshot(&[("app.yaml", b""), ("b", b"")]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "key config.json not found in ..v1 (its keys: app.yaml, b)"
        );
    }

    #[test]
    fn unknown_extension_says_which_formats_exist_and_how_to_choose() {
        let s = snapshot(&[("app.conf", b"x")]);
        let err = Selector::key("app.conf").extract(&s).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Format { .. }), "{err:?}");
        for needle in [".json", ".yaml", ".toml", "--format", "with_format"] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        assert_eq!(
            Selector::key("app.conf")
                .with_format(Format::Text)
                .extract(&s)
                .unwrap(),
            json!("x")
        );
    }

    #[test]
    fn format_names_parse() {
        assert_eq!("yaml".parse::<Format>(), Ok(Format::Yaml));
        assert_eq!(
            "YML".parse::<Format>(),
            Err("unknown format \"YML\" (known: json, yaml, toml, text)".into())
        );
        assert_eq!("toml".parse::<Format>(), Ok(Format::Toml));
        assert_eq!(Format::from_key("a/b.YML"), Some(Format::Yaml));
        assert_eq!(Format::from_key("noext"), None);
    }

    #[test]
    fn several_keys_make_an_object_each_by_its_format() {
        let s = snapshot(&[("a.json", b"[1]"), ("b.txt", b"hi"), ("c", b"no")]);
        let sel = Selector::keys(["a.json", "b.txt"]).with_format(Format::Json);
        assert!(sel.extract(&s).is_err(), "b.txt is not JSON");
        let s = snapshot(&[("a.json", b"[1]"), ("b.json", b"{\"x\":2}")]);
        assert_eq!(
            Selector::keys(["a.json", "b.json"]).extract(&s).unwrap(),
            json!({"a.json": [1], "b.json": {"x": 2}})
        );
        assert_eq!(Selector::keys(["a.json"]), Selector::key("a.json"));

        // A mismatch inside one of several keys names that key and the path.
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Both {
            #[serde(rename = "a.json")]
            a: Vec<u8>,
            #[serde(rename = "b.json")]
            b: Server,
        }
        let s = snapshot(&[("a.json", b"[1]"), ("b.json", b"{\"port\": -1}")]);
        let sel = Selector::keys(["a.json", "b.json"]);
        let config = sel.extract(&s).unwrap();
        match sel.deserialize::<Both>(&s, &config).unwrap_err() {
            Error::Parse { key, message, .. } => {
                assert_eq!(key, "b.json");
                assert_eq!(message, "b.json.port: -1 is out of range for u16");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn all_keys_parses_by_extension_and_leaves_binary_keys_out() {
        let s = snapshot(&[
            ("a.json", b"[1]"),
            ("b/c.txt", b"hi"),
            ("blob", b"\xff\xfe"),
        ]);
        assert_eq!(
            Selector::all_keys().extract(&s).unwrap(),
            json!({"a.json": [1], "b/c.txt": "hi"})
        );
        assert_eq!(
            Selector::all_keys().extract(&snapshot(&[])).unwrap(),
            json!({})
        );
        // A broken JSON key still blocks the version: validate before acting.
        let bad = snapshot(&[("a.json", b"[1"), ("blob", b"\xff")]);
        assert!(matches!(
            Selector::all_keys().extract(&bad),
            Err(Error::Parse { .. })
        ));
    }

    #[test]
    fn binary_key_in_key_mode_is_not_text() {
        let s = snapshot(&[("blob", b"\xff\xfe")]);
        let sel = Selector::key("blob").with_format(Format::Text);
        assert!(matches!(sel.extract(&s), Err(Error::NotText { .. })));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(10_000);
        let s = snapshot(&[("config.json", deep.as_bytes())]);
        assert!(matches!(
            Selector::default().extract(&s),
            Err(Error::Parse { .. })
        ));
    }

    #[cfg(feature = "yaml")]
    mod yaml {
        use super::*;

        #[test]
        fn valid_yaml_parses() {
            let s = snapshot(&[("config.yaml", b"server:\n  port: 8080\nname: a\n")]);
            let sel = Selector::key("config.yaml");
            let config = sel.extract(&s).unwrap();
            assert_eq!(config, json!({"server": {"port": 8080}, "name": "a"}));
            let typed: Config = sel.deserialize(&s, &config).unwrap();
            assert_eq!(typed.server.port, 8080);
        }

        #[test]
        fn invalid_yaml_gives_line_and_column() {
            let s = snapshot(&[("config.yml", b"a: 1\nb: [1, 2\nc: 3\n")]);
            let err = Selector::key("config.yml").extract(&s).unwrap_err();
            let text = err.to_string();
            let (format, position, _) = parse_error(err);
            assert_eq!(format, Format::Yaml);
            let (line, column) = position.expect("a position");
            assert!(line >= 2 && column >= 1, "{text}");
            assert!(
                text.contains(&format!(", at line {line} column {column}: ")),
                "{text}"
            );
        }

        #[test]
        fn yaml_type_mismatch_names_field_path_and_line() {
            let s = snapshot(&[("config.yaml", b"server:\n  port: x\n")]);
            let sel = Selector::key("config.yaml");
            let config = sel.extract(&s).unwrap();
            let (_, position, message) =
                parse_error(sel.deserialize::<Config>(&s, &config).unwrap_err());
            assert!(message.starts_with("server.port: "), "{message}");
            assert!(message.contains("u16"), "{message}");
            assert_eq!(position.map(|p| p.0), Some(2), "{message}");
        }

        #[test]
        fn multi_document_yaml_is_a_clear_error() {
            let s = snapshot(&[("config.yaml", b"a: 1\n---\na: 2\n")]);
            let err = Selector::key("config.yaml").extract(&s).unwrap_err();
            assert!(matches!(err, Error::Parse { .. }), "{err:?}");
            assert!(err.to_string().contains("document"), "{err}");
        }

        /// The budget refuses these while parsing: the test bounds the time
        /// loosely (a fraction of what expansion would take) and the
        /// refusal is an error, not an abort.
        #[test]
        fn alias_bomb_and_deep_nesting_are_refused() {
            let mut bomb = String::from(
                "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
            );
            for (prev, name) in ('a'..='i').zip('b'..='j') {
                bomb.push_str(&format!(
                    "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
                ));
            }
            let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
            let block_deep: String = (0..10_000)
                .map(|i| format!("{}- \n", " ".repeat(i)))
                .collect();
            for (name, doc) in [("bomb", bomb), ("flow", deep), ("block", block_deep)] {
                let start = std::time::Instant::now();
                let s = snapshot(&[("config.yaml", doc.as_bytes())]);
                let err = Selector::key("config.yaml").extract(&s).unwrap_err();
                assert!(matches!(err, Error::Parse { .. }), "{name}: {err:?}");
                // Refused by the configured budget, not by running out.
                let why = match name {
                    "bomb" => "the limit that refuses alias bombs",
                    "flow" => "recursion limit exceeded",
                    _ => "nested 65 levels deep, past the limit of 64",
                };
                let text = err.to_string();
                assert!(text.contains(why), "{name}: {text}");
                assert!(text.len() < 300, "{name}: a long message: {text}");
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(5),
                    "{name} took {:?}",
                    start.elapsed()
                );
            }
        }
    }

    #[cfg(feature = "toml")]
    mod toml {
        use super::*;

        #[test]
        fn valid_toml_parses() {
            let s = snapshot(&[("config.toml", b"[server]\nport = 8080\n")]);
            let sel = Selector::key("config.toml");
            let config = sel.extract(&s).unwrap();
            assert_eq!(config, json!({"server": {"port": 8080}}));
            let typed: Config = sel.deserialize(&s, &config).unwrap();
            assert_eq!(typed.server.port, 8080);
        }

        #[test]
        fn invalid_toml_gives_line_and_column() {
            let s = snapshot(&[("config.toml", b"a = 1\nb = = 2\n")]);
            let err = Selector::key("config.toml").extract(&s).unwrap_err();
            let text = err.to_string();
            assert_eq!(parse_error(err).1, Some((2, 5)), "{text}");
        }

        #[test]
        fn toml_type_mismatch_names_field_path_line_and_column() {
            let s = snapshot(&[("config.toml", b"[server]\nport = \"x\"\n")]);
            let sel = Selector::key("config.toml");
            let config = sel.extract(&s).unwrap();
            let (_, position, message) =
                parse_error(sel.deserialize::<Config>(&s, &config).unwrap_err());
            assert!(
                message.starts_with("server.port: invalid type: string \"x\""),
                "{message}"
            );
            assert_eq!(position, Some((2, 8)), "{message}");
        }
    }

    #[test]
    fn gz_suffix_is_looked_through_for_the_format() {
        assert_eq!(Format::from_key("prometheus.yaml.gz"), Some(Format::Yaml));
        assert_eq!(Format::from_key("a.JSON.GZ"), Some(Format::Json));
        assert_eq!(Format::from_key("config.gz"), None);
        assert_eq!(Format::from_key(".gz"), None);
    }

    #[cfg(feature = "gzip")]
    mod gzip {
        use super::*;

        fn gz(bytes: &[u8]) -> Vec<u8> {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        }

        #[cfg(feature = "yaml")]
        #[test]
        fn gzipped_yaml_parses_as_yaml() {
            let yaml = b"global:\n  scrape_interval: 30s\nscrape_configs: []\n";
            let s = snapshot(&[("prometheus.yaml.gz", &gz(yaml))]);
            let sel = Selector::key("prometheus.yaml.gz");
            let config = sel.extract(&s).unwrap();
            assert_eq!(
                config,
                json!({"global": {"scrape_interval": "30s"}, "scrape_configs": []})
            );
        }

        #[cfg(feature = "yaml")]
        #[test]
        fn gzipped_yaml_errors_give_line_and_column_in_the_decompressed_text() {
            let s = snapshot(&[("p.yaml.gz", &gz(b"a: 1\nb: 2\n- x\n"))]);
            let sel = Selector::key("p.yaml.gz");
            let (format, position, _) = parse_error(sel.extract(&s).unwrap_err());
            assert_eq!(format, Format::Yaml);
            assert_eq!(position.map(|p| p.0), Some(3));
        }

        #[test]
        fn gzipped_json_deserializes_typed_and_mismatch_has_a_line() {
            let s = snapshot(&[("c.json.gz", &gz(b"{\n\"server\": {\"port\": \"x\"}}"))]);
            let sel = Selector::key("c.json.gz");
            let config = sel.extract(&s).unwrap();
            let err = sel.deserialize::<Config>(&s, &config).unwrap_err();
            let (_, position, message) = parse_error(err);
            assert!(message.starts_with("server.port: "), "{message}");
            assert_eq!(position.map(|p| p.0), Some(2));
        }

        #[test]
        fn a_bomb_key_is_refused_under_the_selectors_cap() {
            let s = snapshot(&[("c.json.gz", &gz(&vec![b' '; 4096]))]);
            let err = Selector::key("c.json.gz")
                .with_max_decompressed(1024)
                .extract(&s)
                .unwrap_err();
            assert!(matches!(err, Error::Refused { .. }), "{err:?}");
            assert!(err.to_string().contains("more than 1 KiB"), "{err}");
        }

        #[test]
        fn all_keys_decompress_text_and_leave_out_bad_gzip() {
            let s = snapshot(&[
                ("notes.txt.gz", &gz(b"hello")),
                ("broken.gz", &[0x1f, 0x8b, 0, 1, 2]),
                ("c.json", b"{\"a\": 1}"),
            ]);
            let config = Selector::all_keys().extract(&s).unwrap();
            assert_eq!(config, json!({"notes.txt.gz": "hello", "c.json": {"a": 1}}));
        }
    }
}
