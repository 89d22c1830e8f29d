//! The parsers' messages reworded for a person reading them once: the
//! offending value where the parser left it out, no Rust `Debug` text, no
//! option names of our libraries, and a position on the line to fix.

use super::Position;

/// The integer types serde names in "expected u16".
const INTEGERS: [&str; 12] = [
    "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
];

/// A detail (after any field path) reworded; `written` is the scalar at the
/// error's position as written, where the parser did not quote it.
pub(super) fn detail(message: &str, written: Option<&str>) -> String {
    // serde: "invalid value: integer `70000`, expected u16"
    if let Some(rest) = message.strip_prefix("invalid value: integer `")
        && let Some((value, expected)) = rest.split_once("`, expected ")
        && INTEGERS.contains(&expected)
    {
        return format!("{value} is out of range for {expected}");
    }
    // serde-saphyr: "invalid u16", without the value.
    if let Some(ty) = message.strip_prefix("invalid ")
        && INTEGERS.contains(&ty)
    {
        // Worded as serde words a mismatch from JSON or TOML.
        return match written {
            Some(value) if is_integer(value) => format!("{value} is out of range for {ty}"),
            Some(value) if value.starts_with(['"', '\'']) => {
                format!("invalid type: string {value}, expected {ty}")
            }
            Some(value @ ("true" | "false")) => {
                format!("invalid type: boolean `{value}`, expected {ty}")
            }
            Some(value) if value.parse::<f64>().is_ok() => {
                format!("invalid type: floating point `{value}`, expected {ty}")
            }
            Some(value) => format!("invalid type: string {value:?}, expected {ty}"),
            None => format!("not a valid {ty}"),
        };
    }
    // serde-saphyr's budget speaks Debug: "budget breached: Documents {
    // documents: 2 }".
    if let Some(breach) = message.strip_prefix("budget breached: ") {
        let number = breach
            .split(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())
            .unwrap_or("?");
        let name = breach.split([' ', '{']).next().unwrap_or(breach);
        return match name {
            "Documents" => format!(
                "holds {number} YAML documents (separated by ---); a key holds one document"
            ),
            "Depth" => format!("nested {number} levels deep, past the limit of 64"),
            // Bounded by the key's size (format.rs, yaml_options).
            "ScalarBytes" | "RecordedAnchorBytes" => format!(
                "its text, aliases expanded, passes {number} bytes: more than {} times the \
                 key's size (the limit that refuses alias bombs)",
                super::YAML_EXPANSION
            ),
            "Nodes" | "Events" | "Aliases" | "Anchors" => format!(
                "more than {number} {} (the limit that refuses alias bombs)",
                name.to_lowercase()
            ),
            _ => format!("too large: {name} {number}"),
        };
    }
    // serde-saphyr names its own option: "duplicate mapping key: a, set
    // DuplicateKeyPolicy in Options if acceptable".
    if let Some(i) = message.find(", set DuplicateKeyPolicy") {
        return format!("{} (a key may appear once)", &message[..i]);
    }
    // Any other advice to set one of serde-saphyr's options is for the
    // programmer who wrote us, not for the person reading the event.
    for advice in [". If you", ", set "] {
        if let Some(i) = message.find(advice)
            && message[i..].contains(" in Options")
        {
            return message[..i].to_owned();
        }
    }
    message.to_owned()
}

fn is_integer(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(feature = "yaml")]
/// The plain scalar starting at `position` in `source`, up to a comment,
/// a flow indicator or the end of the line.
pub(super) fn scalar_at(source: &str, position: Position) -> Option<&str> {
    let line = source.lines().nth(position.line.checked_sub(1)?)?;
    let start = line
        .char_indices()
        .nth(position.column.checked_sub(1)?)
        .map(|(i, _)| i)?;
    let rest = &line[start..];
    // A quoted scalar on one line, quotes included.
    if let Some(quote) = rest.chars().next().filter(|c| matches!(c, '"' | '\''))
        && let Some(end) = rest[1..].find(quote)
    {
        return Some(&rest[..end + 2]);
    }
    let end = rest.find([',', ']', '}', '#']).unwrap_or(rest.len());
    let value = rest[..end].trim();
    (!value.is_empty() && !value.starts_with(['"', '\''])).then_some(value)
}

/// serde_json puts an error found right after a line break at column 0
/// of the next line (`EOF while parsing` after a trailing newline): the
/// text to fix ends the line before.
pub(super) fn json_position(source: &[u8], line: usize, column: usize) -> Position {
    if column > 0 || line <= 1 {
        return Position {
            line,
            column: column.max(1),
        };
    }
    let text = String::from_utf8_lossy(source);
    let previous = text.lines().nth(line - 2).unwrap_or("");
    Position {
        line: line - 1,
        column: previous.chars().count() + 1,
    }
}

#[cfg(feature = "yaml")]
/// A quoted scalar left open is noticed where the parser gives up, lines
/// later (an indentation error, the end of the stream): the line to fix is
/// the one whose quote is not closed. Returns that quote's position.
pub(super) fn open_quote(source: &str, noticed: Position) -> Option<Position> {
    let lines: Vec<&str> = source.lines().collect();
    for index in (0..noticed.line.min(lines.len())).rev() {
        let line = lines[index];
        if let Some(column) = unclosed_quote(line) {
            return Some(Position {
                line: index + 1,
                column,
            });
        }
    }
    None
}

#[cfg(feature = "yaml")]
/// The 1-based column of a quote that opens a scalar on `line` and is not
/// closed on it (outside a comment).
fn unclosed_quote(line: &str) -> Option<usize> {
    let mut open: Option<(char, usize)> = None;
    let mut chars = line.chars().enumerate().peekable();
    let mut previous = ' ';
    while let Some((i, c)) = chars.next() {
        match open {
            None if c == '#' && previous.is_whitespace() => break,
            // A quote opens a scalar only where one starts: after a space
            // or an indicator, not inside a word (`it's`).
            None if (c == '"' || c == '\'')
                && (previous.is_whitespace()
                    || matches!(previous, ':' | '[' | '{' | ',' | '-')) =>
            {
                open = Some((c, i + 1));
            }
            Some(('"', _)) if c == '\\' => {
                chars.next();
            }
            Some(('\'', _)) if c == '\'' && chars.peek().is_some_and(|(_, n)| *n == '\'') => {
                chars.next();
            }
            Some((quote, _)) if c == quote => open = None,
            _ => {}
        }
        previous = c;
    }
    open.map(|(_, column)| column)
}
