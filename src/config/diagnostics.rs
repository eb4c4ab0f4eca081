//! Error positions and messages: `file:line:column`, and serde's messages with every value masked.

/// SECURITY: serde's messages quote the value they could not use (`invalid type: integer
/// `12345678``, `invalid type: string "…"`), and that value may be a secret typed without quotes
/// or put under the wrong key. Quoted strings, and the value after `invalid type:` / `invalid
/// value:`, are masked; key names (`unknown field `x``, `missing field `x``) stay.
pub fn without_values(message: &str) -> String {
    const MARKERS: [&str; 2] = ["invalid type: ", "invalid value: "];
    let message = mask_quoted(message);
    let mut out = String::with_capacity(message.len());
    let mut rest = message.as_str();
    while let Some((at, len)) = MARKERS
        .iter()
        .filter_map(|m| rest.find(m).map(|i| (i, m.len())))
        .min()
    {
        let (before, tail) = rest.split_at(at + len);
        out.push_str(before);
        let end = tail.find(", expected").unwrap_or(tail.len());
        out.push_str(&mask_backticked(&tail[..end]));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// `"…"` for every double-quoted string (escapes inside it respected).
pub(super) fn mask_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let (mut quoted, mut escaped) = (false, false);
    for c in message.chars() {
        if quoted {
            match (c, escaped) {
                (_, true) => escaped = false,
                ('\\', false) => escaped = true,
                ('"', false) => {
                    quoted = false;
                    out.push('"');
                }
                _ => {}
            }
        } else {
            out.push(c);
            if c == '"' {
                quoted = true;
                out.push('…');
            }
        }
    }
    out
}

/// `` `…` `` for every backticked span.
pub(super) fn mask_backticked(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for c in text.chars() {
        if c == '`' {
            inside = !inside;
            out.push('`');
            if inside {
                out.push('…');
            }
        } else if !inside {
            out.push(c);
        }
    }
    out
}

/// The key whose value starts at byte `offset` of `text` (`key = value`, also inside an inline
/// table), or `None` when the offset is not right after a `=`: TOML puts a value on the line of
/// its key, so only that line is looked at. The last segment of a dotted key, unquoted.
pub(super) fn key_of_value_at(text: &str, offset: usize) -> Option<&str> {
    let line = text.get(..offset)?.rsplit('\n').next()?;
    let before_value = line.trim_end();
    let before_eq = before_value.strip_suffix('=')?.trim_end();
    let start = before_eq
        .rfind(|c: char| c.is_whitespace() || matches!(c, '{' | ',' | '.'))
        .map_or(0, |i| i + 1);
    let key = before_eq[start..].trim_matches(|c| c == '"' || c == '\'');
    (!key.is_empty()).then_some(key)
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

pub(super) fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}
