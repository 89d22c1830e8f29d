//! The one registry of settings that can carry credentials, and what it
//! drives: the variables stripped from every command we start (actions,
//! checkers, confirmations), the values scrubbed from their output before
//! it reaches our log or an event, and the redaction of those values in our
//! own messages.
//!
//! One list, so that a new secret-bearing setting is hidden everywhere at
//! once, not in the one place its author thought of (the confirmation URL
//! once reached the log through a command that printed its environment:
//! the command code stripped a list the confirmation did not share). The
//! render's `$(VAR)` substitution refuses every `CONFIGMAPWATCH_*`
//! variable, these included ([`crate::render::OWN_PREFIX`]).

use super::webhook::redact_url;

/// How a setting carries its secret, which decides what is hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretKind {
    /// A URL: its userinfo and query may hold credentials.
    Url,
    /// An HTTP header, `Name: value`: the value may be a credential.
    Header,
    /// A file's path (a private CA): not a secret itself, but what the
    /// command needs none of.
    Path,
    /// A command line, which may carry a token in an argument.
    Command,
}

/// A setting that can carry a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SecretSetting {
    /// The command-line flag, `--webhook-url`.
    pub flag: &'static str,
    /// The environment variable, `CONFIGMAPWATCH_WEBHOOK_URL`.
    pub env: &'static str,
    /// What in its value is secret.
    pub kind: SecretKind,
}

const fn setting(flag: &'static str, env: &'static str, kind: SecretKind) -> SecretSetting {
    SecretSetting { flag, env, kind }
}

/// Every setting that can carry a credential. Their variables are never
/// passed to a command we start, and their values never printed.
pub const SECRET_SETTINGS: &[SecretSetting] = &[
    setting(
        "--webhook-url",
        "CONFIGMAPWATCH_WEBHOOK_URL",
        SecretKind::Url,
    ),
    setting(
        "--webhook-header",
        "CONFIGMAPWATCH_WEBHOOK_HEADER",
        SecretKind::Header,
    ),
    setting(
        "--webhook-ca-file",
        "CONFIGMAPWATCH_WEBHOOK_CA_FILE",
        SecretKind::Path,
    ),
    setting(
        "--confirm-url",
        "CONFIGMAPWATCH_CONFIRM_URL",
        SecretKind::Url,
    ),
    setting("--exec", "CONFIGMAPWATCH_EXEC", SecretKind::Command),
    setting(
        "--confirm-exec",
        "CONFIGMAPWATCH_CONFIRM_EXEC",
        SecretKind::Command,
    ),
    setting(
        "--validate-exec",
        "CONFIGMAPWATCH_VALIDATE_EXEC",
        SecretKind::Command,
    ),
];

/// Shorter pieces are not searched for in a command's output: replacing
/// them would mangle ordinary words (`conn***ction`), and a credential
/// that short protects little.
const MIN_SCRUBBED: usize = 6;

/// The secret values of one run's settings, to be hidden in what commands
/// write. Its `Debug` shows how many, never which.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    /// Longest first, so that a value is hidden whole before a part of it.
    values: Vec<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} values)", self.values.len())
    }
}

impl Secrets {
    /// Adds what `value`, a setting of `kind`, must never show: all of a
    /// URL, its userinfo, its password and each query value; a header's
    /// value and the token after its scheme (`Bearer <token>`). Paths and
    /// command lines are only kept from commands' environment.
    pub fn add(&mut self, kind: SecretKind, value: &str) {
        let mut pieces = Vec::new();
        match kind {
            SecretKind::Url => {
                pieces.push(value.to_owned());
                let rest = value.split_once("://").map_or(value, |(_, r)| r);
                let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
                if let Some((userinfo, _)) = authority.rsplit_once('@') {
                    pieces.push(userinfo.to_owned());
                    if let Some((_, password)) = userinfo.split_once(':') {
                        pieces.push(password.to_owned());
                    }
                }
                if let Some((_, query)) = rest.split_once('?') {
                    let query = query.split('#').next().unwrap_or("");
                    for pair in query.split('&') {
                        pieces.push(pair.split_once('=').map_or(pair, |(_, v)| v).to_owned());
                    }
                }
            }
            SecretKind::Header => {
                let value = value.split_once(':').map_or(value, |(_, v)| v).trim();
                pieces.push(value.to_owned());
                if let Some((_, token)) = value.split_once(' ') {
                    pieces.push(token.trim().to_owned());
                }
            }
            SecretKind::Path | SecretKind::Command => {}
        }
        for piece in pieces {
            if piece.len() >= MIN_SCRUBBED && !self.values.contains(&piece) {
                self.values.push(piece);
            }
        }
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    /// The values, longest first.
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// `text` with every value replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        scrub(&self.values, text)
    }
}

/// `text` with each of `values` (longest first) replaced by `***`.
pub(crate) fn scrub(values: &[String], text: &str) -> String {
    let mut text = text.to_owned();
    for value in values {
        if !value.is_empty() {
            text = text.replace(value.as_str(), "***");
        }
    }
    text
}

/// `value`, a setting of `kind`, as our own messages may show it: a URL
/// without its userinfo and query, a header by its name alone, a command by
/// its program alone.
pub fn redact(kind: SecretKind, value: &str) -> String {
    match kind {
        SecretKind::Url => redact_url(value),
        SecretKind::Header => match value.split_once(':') {
            Some((name, _)) => format!("{}: ***", name.trim()),
            None => "***".to_owned(),
        },
        SecretKind::Path => value.to_owned(),
        SecretKind::Command => match value.split_whitespace().next() {
            Some(program) if program != value.trim() => format!("{program} ***"),
            Some(program) => program.to_owned(),
            None => String::new(),
        },
    }
}

/// Whether the environment variable `name` is a secret-bearing setting's.
pub fn is_secret_var(name: &str) -> bool {
    SECRET_SETTINGS.iter().any(|s| s.env == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_urls_credentials_are_hidden_in_every_form_a_command_may_print() {
        let mut secrets = Secrets::default();
        secrets.add(
            SecretKind::Url,
            "https://reloader:hunter2pass@prom:9090/-/reload?token=abcdef123#x",
        );
        let printed = "curl -u reloader:hunter2pass https://reloader:hunter2pass@prom:9090/-/reload?token=abcdef123#x; pw=hunter2pass t=abcdef123";
        let scrubbed = secrets.scrub(printed);
        assert!(!scrubbed.contains("hunter2"), "{scrubbed}");
        assert!(!scrubbed.contains("abcdef"), "{scrubbed}");
        assert_eq!(scrubbed, "curl -u *** ***; pw=*** t=***");
    }

    #[test]
    fn a_headers_value_and_its_token_are_hidden() {
        let mut secrets = Secrets::default();
        secrets.add(SecretKind::Header, "Authorization: Bearer tok3n-value");
        assert_eq!(
            secrets.scrub("sent Bearer tok3n-value, token tok3n-value"),
            "sent ***, token ***"
        );
        assert_eq!(
            redact(SecretKind::Header, "Authorization: Bearer x"),
            "Authorization: ***"
        );
        assert!(!format!("{secrets:?}").contains("tok3n"));
    }

    #[test]
    fn short_pieces_are_not_searched_for() {
        let mut secrets = Secrets::default();
        secrets.add(SecretKind::Url, "http://u:p@h/");
        // The whole URL is hidden; "p" alone would mangle every word.
        assert_eq!(secrets.values(), ["http://u:p@h/"]);
        assert_eq!(secrets.scrub("connection failed"), "connection failed");
    }

    #[test]
    fn redaction_keeps_what_is_not_secret() {
        assert_eq!(
            redact(SecretKind::Url, "http://u:p@h:1/x?token=t"),
            "http://***@h:1/x?***"
        );
        assert_eq!(redact(SecretKind::Command, "curl -H x"), "curl ***");
        assert!(is_secret_var("CONFIGMAPWATCH_CONFIRM_URL"));
        assert!(!is_secret_var("CONFIGMAPWATCH_VERSION"));
    }
}
