//! Tokenizer for FHIRPath expressions. Works on bytes of a `&str` already bounded in
//! length by the caller; never panics (every index is checked).

use crate::FhirPathError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A plain identifier; may be a keyword (`and`, `is`, `true`...).
    Ident(String),
    /// A backtick-delimited identifier: never a keyword.
    Quoted(String),
    Str(String),
    Number(String),
    /// Text after `@` for a date or date-time literal.
    DateTime(String),
    /// Text after `@T` for a time literal.
    Time(String),
    /// `%name`, `` %`name` `` or `%'name'`.
    External(String),
    /// `$this`, `$index`, `$total`.
    Special(String),
    Sym(&'static str),
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) pos: usize,
}

const SYMBOLS: &[&str] = &[
    "!=", "!~", "<=", ">=", ".", "[", "]", "(", ")", "{", "}", ",", "=", "~", "<", ">", "+", "-",
    "*", "/", "&", "|",
];

fn syntax(pos: usize, message: impl std::fmt::Display) -> FhirPathError {
    FhirPathError::Syntax(format!("{message} at offset {pos}"))
}

pub(crate) fn tokenize(source: &str) -> Result<Vec<Token>, FhirPathError> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if bytes[i..].starts_with(b"//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if bytes[i..].starts_with(b"/*") {
            let Some(end) = source[i + 2..].find("*/") else {
                return Err(syntax(i, "unterminated comment"));
            };
            i += 2 + end + 2;
            continue;
        }
        let start = i;
        let tok = match c {
            b'\'' => {
                let (text, next) = quoted(source, i, b'\'')?;
                i = next;
                Tok::Str(text)
            }
            b'`' => {
                let (text, next) = quoted(source, i, b'`')?;
                i = next;
                Tok::Quoted(text)
            }
            b'%' => {
                i += 1;
                match bytes.get(i) {
                    Some(b'`') | Some(b'\'') => {
                        let (text, next) = quoted(source, i, bytes[i])?;
                        i = next;
                        Tok::External(text)
                    }
                    _ => {
                        let end = ident_end(bytes, i);
                        if end == i {
                            return Err(syntax(start, "expected a name after '%'"));
                        }
                        let name = source[i..end].to_owned();
                        i = end;
                        Tok::External(name)
                    }
                }
            }
            b'$' => {
                let end = ident_end(bytes, i + 1);
                let name = source[i + 1..end].to_owned();
                if !matches!(name.as_str(), "this" | "index" | "total") {
                    return Err(syntax(start, format!("unknown special variable '${name}'")));
                }
                i = end;
                Tok::Special(name)
            }
            b'@' => {
                i += 1;
                if bytes.get(i) == Some(&b'T') {
                    let end = scan_while(bytes, i + 1, |b| {
                        b.is_ascii_digit() || b == b':' || b == b'.'
                    });
                    let end = scan_timezone(bytes, end);
                    let text = trim_trailing_dot(&source[i + 1..end]);
                    i += 1 + text.len();
                    Tok::Time(text.to_owned())
                } else {
                    let end = scan_while(bytes, i, |b| b.is_ascii_digit() || b == b'-');
                    let mut end = end;
                    if bytes.get(end) == Some(&b'T') {
                        end = scan_while(bytes, end + 1, |b| {
                            b.is_ascii_digit() || b == b':' || b == b'.'
                        });
                        end = scan_timezone(bytes, end);
                    }
                    let text = trim_trailing_dot(&source[i..end]);
                    if text.is_empty() {
                        return Err(syntax(start, "expected a date after '@'"));
                    }
                    i += text.len();
                    Tok::DateTime(text.to_owned())
                }
            }
            b'0'..=b'9' => {
                let mut end = scan_while(bytes, i, |b| b.is_ascii_digit());
                if bytes.get(end) == Some(&b'.')
                    && bytes.get(end + 1).is_some_and(u8::is_ascii_digit)
                {
                    end = scan_while(bytes, end + 1, |b| b.is_ascii_digit());
                }
                let text = source[i..end].to_owned();
                i = end;
                Tok::Number(text)
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let end = ident_end(bytes, i);
                let text = source[i..end].to_owned();
                i = end;
                Tok::Ident(text)
            }
            _ => {
                let Some(symbol) = SYMBOLS
                    .iter()
                    .find(|s| bytes[i..].starts_with(s.as_bytes()))
                else {
                    let ch = source[i..].chars().next().unwrap_or('?');
                    return Err(syntax(i, format!("unexpected character '{ch}'")));
                };
                i += symbol.len();
                Tok::Sym(symbol)
            }
        };
        tokens.push(Token { tok, pos: start });
    }
    Ok(tokens)
}

fn scan_while(bytes: &[u8], mut i: usize, accept: impl Fn(u8) -> bool) -> usize {
    while i < bytes.len() && accept(bytes[i]) {
        i += 1;
    }
    i
}

/// Consumes `Z` or `(+|-)hh:mm` directly after a time.
fn scan_timezone(bytes: &[u8], i: usize) -> usize {
    match bytes.get(i) {
        Some(b'Z') => i + 1,
        Some(b'+') | Some(b'-') => {
            let candidate = bytes.get(i + 1..i + 6);
            match candidate {
                Some(c)
                    if c[0].is_ascii_digit()
                        && c[1].is_ascii_digit()
                        && c[2] == b':'
                        && c[3].is_ascii_digit()
                        && c[4].is_ascii_digit() =>
                {
                    i + 6
                }
                _ => i,
            }
        }
        _ => i,
    }
}

/// `@2014.lowBoundary()`: the dot belongs to the invocation, not the literal.
fn trim_trailing_dot(text: &str) -> &str {
    text.strip_suffix('.').unwrap_or(text)
}

fn ident_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
        i += 1;
    }
    i
}

/// Reads a quoted string or identifier starting at `start` (the opening quote),
/// decoding escapes; returns the text and the offset after the closing quote.
fn quoted(source: &str, start: usize, quote: u8) -> Result<(String, usize), FhirPathError> {
    let mut out = String::new();
    let mut chars = source[start + 1..].char_indices();
    while let Some((offset, ch)) = chars.next() {
        let here = start + 1 + offset;
        if ch as u32 == u32::from(quote) {
            return Ok((out, here + 1));
        }
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        let Some((_, escaped)) = chars.next() else {
            break;
        };
        match escaped {
            '\'' | '"' | '`' | '\\' | '/' => out.push(escaped),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let mut code = 0u32;
                for _ in 0..4 {
                    let digit = chars
                        .next()
                        .and_then(|(_, c)| c.to_digit(16))
                        .ok_or_else(|| syntax(here, "invalid \\u escape"))?;
                    code = code * 16 + digit;
                }
                out.push(char::from_u32(code).ok_or_else(|| syntax(here, "invalid \\u escape"))?);
            }
            other => return Err(syntax(here, format!("invalid escape '\\{other}'"))),
        }
    }
    Err(syntax(start, "unterminated quoted text"))
}
