//! `$(VAR)` and `${VAR}` substitution from the environment, before a key
//! is rendered: pure (bytes in, bytes out), kept apart from the writing so
//! that neither has to be read to understand the other.

use std::ffi::OsString;

use crate::{Error, Result};

/// How [`substitute_env`] treats a reference to an unset variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum EnvMode {
    /// An error ([`Error::UnsetVariable`]) naming the first such variable,
    /// the key and the line: nothing is rendered.
    #[default]
    Strict,
    /// Left as it is (`$(VAR)` stays `$(VAR)`) and counted in
    /// [`Substituted::unresolved`].
    Tolerant,
}

/// A key's content after substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Substituted {
    /// The content, references replaced.
    pub bytes: Vec<u8>,
    /// How many references were replaced.
    pub replaced: usize,
    /// How many references to unset variables were left as they are
    /// (always 0 in strict mode, which fails instead).
    pub unresolved: usize,
}

/// Replaces `$(VAR)` and `${VAR}` in `bytes` (the content of `key`) with
/// the environment variable's value.
///
/// The rules, chosen so that configs that use `$` for their own purposes
/// pass through untouched:
/// - `VAR` is a shell-style name: `[A-Za-z_][A-Za-z0-9_]*`. Anything else
///   between the brackets is not a reference and is left as it is, so
///   Prometheus' `${1}` and `$1`, or a shell's `$(echo x)`, stay. (A
///   shell's `$(date)` is a reference to the variable `date`: escape it as
///   `$$(date)`.)
/// - `$$(` and `$${` escape a reference: they render as `$(` and `${`
///   (Kubernetes' own `$$` escape, for the one case it is needed). Any
///   other `$$` is left as it is (Prometheus and others use `$$` as their
///   own escape).
/// - A value is inserted as it is; it is not scanned again.
///
/// The key's bytes need not be UTF-8; a value that is not is inserted as
/// the platform encodes it.
///
/// Every variable of the environment may be substituted except the tool's
/// own ([`OWN_PREFIX`]): see [`substitute_allowed`] to name the ones that
/// may be.
pub fn substitute_env(key: &str, bytes: &[u8], mode: EnvMode) -> Result<Substituted> {
    substitute_allowed(key, bytes, mode, &EnvAllow::any())
}

/// [`substitute_env`] with only the variables `allow` names: a reference
/// to any other (and to the tool's own `CONFIGMAPWATCH_*`, whatever
/// `allow` says) is an [`Error::VariableNotAllowed`] in strict mode, and
/// left as it is (counted) in tolerant mode.
pub fn substitute_allowed(
    key: &str,
    bytes: &[u8],
    mode: EnvMode,
    allow: &EnvAllow,
) -> Result<Substituted> {
    substitute_inner(key, bytes, mode, |name| {
        if allow.allows(name) {
            std::env::var_os(name).map_or(Found::Unset, Found::Value)
        } else {
            Found::NotAllowed
        }
    })
}

/// [`substitute_env`] with the variables from `lookup` instead of the
/// process environment (the tool's own names are refused all the same).
pub fn substitute_with(
    key: &str,
    bytes: &[u8],
    mode: EnvMode,
    mut lookup: impl FnMut(&str) -> Option<OsString>,
) -> Result<Substituted> {
    substitute_inner(key, bytes, mode, |name| {
        if is_own(name) {
            Found::NotAllowed
        } else {
            lookup(name).map_or(Found::Unset, Found::Value)
        }
    })
}

/// The prefix of the tool's own variables. They hold its settings, and
/// some of those are credentials (a webhook's URL and headers, the
/// confirmation URL): never substituted into a rendered file, which other
/// users of the pod may read.
pub const OWN_PREFIX: &str = "CONFIGMAPWATCH_";

fn is_own(name: &str) -> bool {
    name.starts_with(OWN_PREFIX)
}

/// The variables a render may substitute (`--render-env-allow`): names
/// (`DB_HOST`) and prefixes (`APP_*`). Never the tool's own
/// ([`OWN_PREFIX`]), even under `*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvAllow {
    names: Vec<String>,
    prefixes: Vec<String>,
}

impl EnvAllow {
    /// Every variable but the tool's own.
    pub fn any() -> Self {
        EnvAllow {
            names: Vec::new(),
            prefixes: vec![String::new()],
        }
    }

    /// From a comma-separated list of names and prefixes ending in `*`
    /// (`APP_*,DB_HOST`). Each must be a variable name (or the start of
    /// one); an empty list is refused.
    pub fn parse(list: &str) -> std::result::Result<Self, String> {
        let mut allow = EnvAllow::default();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, prefix) = match item.strip_suffix('*') {
                Some(p) => (p, true),
                None => (item, false),
            };
            let well_formed = name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
                && !name.as_bytes().first().is_some_and(u8::is_ascii_digit)
                && (prefix || !name.is_empty());
            if !well_formed {
                return Err(format!(
                    "{item:?} is not a variable name or a prefix ending in * (e.g. APP_*)"
                ));
            }
            if prefix {
                allow.prefixes.push(name.to_owned());
            } else {
                allow.names.push(name.to_owned());
            }
        }
        if allow.names.is_empty() && allow.prefixes.is_empty() {
            return Err("names no variable (give names or prefixes, e.g. APP_*,DB_HOST)".into());
        }
        Ok(allow)
    }

    /// Whether `name` may be substituted.
    pub fn allows(&self, name: &str) -> bool {
        !is_own(name)
            && (self.names.iter().any(|n| n == name)
                || self.prefixes.iter().any(|p| name.starts_with(p.as_str())))
    }
}

/// What a reference resolves to.
enum Found {
    Value(OsString),
    Unset,
    NotAllowed,
}

fn substitute_inner(
    key: &str,
    bytes: &[u8],
    mode: EnvMode,
    mut lookup: impl FnMut(&str) -> Found,
) -> Result<Substituted> {
    let mut out = Vec::with_capacity(bytes.len());
    let (mut replaced, mut unresolved) = (0, 0);
    let mut first_unset: Option<(String, usize, bool)> = None;
    let mut line = 1;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\n' {
            line += 1;
        }
        if b != b'$' {
            out.push(b);
            i += 1;
            continue;
        }
        let next = bytes.get(i + 1).copied();
        if next == Some(b'$') && matches!(bytes.get(i + 2), Some(b'(' | b'{')) {
            // `$$(` -> `$(`: the bracket is then copied as a plain byte.
            out.push(b'$');
            i += 2;
            continue;
        }
        let Some(name_len) = reference_at(&bytes[i..]) else {
            out.push(b);
            i += 1;
            continue;
        };
        let reference = &bytes[i..i + name_len + 3];
        // The name is ASCII by construction.
        let name = std::str::from_utf8(&reference[2..reference.len() - 1]).unwrap_or_default();
        match lookup(name) {
            Found::Value(value) => {
                out.extend_from_slice(value.as_encoded_bytes());
                replaced += 1;
            }
            found => {
                unresolved += 1;
                let refused = matches!(found, Found::NotAllowed);
                first_unset.get_or_insert_with(|| (name.to_owned(), line, refused));
                out.extend_from_slice(reference);
            }
        }
        i += reference.len();
    }
    match (mode, first_unset) {
        (EnvMode::Strict, Some((variable, line, true))) => {
            return Err(Error::VariableNotAllowed {
                key: key.to_owned(),
                variable,
                line,
                unresolved,
            });
        }
        (EnvMode::Strict, Some((variable, line, false))) => {
            return Err(Error::UnsetVariable {
                key: key.to_owned(),
                variable,
                line,
                unresolved,
            });
        }
        _ => {}
    }
    Ok(Substituted {
        bytes: out,
        replaced,
        unresolved,
    })
}

/// If `s` starts with `$(NAME)` or `${NAME}`, the length of `NAME`.
fn reference_at(s: &[u8]) -> Option<usize> {
    let close = match s.get(1)? {
        b'(' => b')',
        b'{' => b'}',
        _ => return None,
    };
    let name = &s[2..];
    let len = name
        .iter()
        .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
        .unwrap_or(name.len());
    let starts_well = name
        .first()
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_');
    (starts_well && name.get(len) == Some(&close)).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl FnMut(&str) -> Option<OsString> + use<> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn sub(text: &str, mode: EnvMode, pairs: &[(&str, &str)]) -> Result<(String, usize, usize)> {
        let s = substitute_with("k.yaml", text.as_bytes(), mode, vars(pairs))?;
        Ok((
            String::from_utf8(s.bytes).unwrap(),
            s.replaced,
            s.unresolved,
        ))
    }

    #[test]
    fn both_reference_forms_are_replaced() {
        let pairs = [("HOST", "db.local"), ("PORT", "5432")];
        let (out, replaced, unresolved) =
            sub("url: $(HOST):${PORT}/x\n", EnvMode::Strict, &pairs).unwrap();
        assert_eq!(out, "url: db.local:5432/x\n");
        assert_eq!((replaced, unresolved), (2, 0));
    }

    #[test]
    fn strict_mode_names_variable_key_and_line() {
        let text = "a: $(SET)\nb: 1\nc: ${NOT_SET}\nd: $(ALSO_UNSET)\n";
        let err = sub(text, EnvMode::Strict, &[("SET", "x")]).unwrap_err();
        match &err {
            Error::UnsetVariable {
                key,
                variable,
                line,
                unresolved,
            } => {
                assert_eq!(
                    (key.as_str(), variable.as_str(), *line, *unresolved),
                    ("k.yaml", "NOT_SET", 3, 2)
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "key k.yaml: line 3: environment variable NOT_SET is not set \
             (and 1 more unresolved reference)"
        );
        assert_eq!(err.kind(), crate::ErrorKind::Content);
    }

    #[test]
    fn tolerant_mode_leaves_unset_references_and_counts_them() {
        let text = "a: $(SET) ${UNSET} $(UNSET)\n";
        let (out, replaced, unresolved) = sub(text, EnvMode::Tolerant, &[("SET", "x")]).unwrap();
        assert_eq!(out, "a: x ${UNSET} $(UNSET)\n");
        assert_eq!((replaced, unresolved), (1, 2));
    }

    #[test]
    fn dollars_that_are_not_references_pass_through() {
        // Prometheus relabelling, shell, a lone $, unterminated, $$ escapes
        // of other tools, a name that is not a name.
        let text = "r: ${1}:$1 $$1 $(date +%s) $ $(UNCLOSED ${A-B} $() ${} $\n";
        let (out, replaced, unresolved) = sub(text, EnvMode::Strict, &[]).unwrap();
        assert_eq!(out, text);
        assert_eq!((replaced, unresolved), (0, 0));
    }

    #[test]
    fn double_dollar_escapes_a_reference() {
        let (out, replaced, _) = sub(
            "$$(HOME) $${HOME} $(HOME)",
            EnvMode::Strict,
            &[("HOME", "/h")],
        )
        .unwrap();
        assert_eq!(out, "$(HOME) ${HOME} /h");
        assert_eq!(replaced, 1);
    }

    #[test]
    fn values_are_not_scanned_again_and_bytes_need_not_be_utf8() {
        let s = substitute_with(
            "bin",
            b"\xff$(A)\xfe",
            EnvMode::Strict,
            vars(&[("A", "$(B)")]),
        )
        .unwrap();
        assert_eq!(s.bytes, b"\xff$(B)\xfe");
    }

    #[test]
    fn the_tools_own_variables_are_never_substituted() {
        let pairs = [(
            "CONFIGMAPWATCH_WEBHOOK_HEADER",
            "Authorization: Bearer s3cret",
        )];
        let err = sub(
            "h: ${CONFIGMAPWATCH_WEBHOOK_HEADER}\n",
            EnvMode::Strict,
            &pairs,
        )
        .unwrap_err();
        assert!(matches!(err, Error::VariableNotAllowed { .. }), "{err:?}");
        assert!(err.to_string().contains("the tool's own"), "{err}");
        let (out, replaced, unresolved) = sub(
            "h: $(CONFIGMAPWATCH_WEBHOOK_HEADER)",
            EnvMode::Tolerant,
            &pairs,
        )
        .unwrap();
        assert_eq!(out, "h: $(CONFIGMAPWATCH_WEBHOOK_HEADER)");
        assert_eq!((replaced, unresolved), (0, 1));
        // Not even when a list would allow everything.
        let all = EnvAllow::parse("*").unwrap();
        assert!(!all.allows("CONFIGMAPWATCH_CONFIRM_URL"));
        assert!(
            !EnvAllow::parse("CONFIGMAPWATCH_*")
                .unwrap()
                .allows("CONFIGMAPWATCH_EXEC")
        );
    }

    #[test]
    fn an_allow_list_names_variables_and_prefixes() {
        let allow = EnvAllow::parse("APP_*, DB_HOST").unwrap();
        assert!(allow.allows("APP_URL") && allow.allows("APP_") && allow.allows("DB_HOST"));
        assert!(!allow.allows("DB_HOSTNAME") && !allow.allows("HOME"));
        for bad in ["", " , ", "A-B", "1X", "A*B", "*X"] {
            assert!(EnvAllow::parse(bad).is_err(), "{bad:?}");
        }
        // PATH is set in any test environment but not allowed here.
        let err = substitute_allowed("k", b"a\n${PATH}", EnvMode::Strict, &allow).unwrap_err();
        assert_eq!(
            err.to_string(),
            "key k: line 2: environment variable PATH is not in the render's allow-list \
             (--render-env-allow)"
        );
    }

    #[test]
    fn the_process_environment_is_used() {
        // PATH is set in any test environment; no set_var (unsafe in a
        // threaded test binary).
        let path = std::env::var_os("PATH").expect("PATH is set");
        let s = substitute_env("k", b"p=${PATH}", EnvMode::Strict).unwrap();
        assert_eq!(s.bytes, [b"p=", path.as_encoded_bytes()].concat());
    }
}
