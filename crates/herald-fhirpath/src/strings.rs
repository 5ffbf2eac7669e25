//! Regular expressions (bounded in compiled size) and the `encode`/`decode`/
//! `escape`/`unescape` formats.

use crate::FhirPathError;

/// Compiled-program size limit for one regular expression.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a FHIRPath regular expression; `.` matches newlines (single-line mode).
pub(crate) fn compile_regex(pattern: &str) -> Result<regex::Regex, FhirPathError> {
    regex::RegexBuilder::new(pattern)
        .dot_matches_new_line(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| FhirPathError::Execution(format!("invalid regular expression: {e}")))
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8], url: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let mut c = BASE64[((n >> (18 - 6 * i)) & 63) as usize];
                if url {
                    c = match c {
                        b'+' => b'-',
                        b'/' => b'_',
                        other => other,
                    };
                }
                out.push(char::from(c));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=') {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push(((bits >> count) & 0xff) as u8);
        }
    }
    Some(out)
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

fn html_unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn json_escape(text: &str) -> String {
    let quoted = serde_json::Value::String(text.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

fn json_unescape(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'u' => {
                let code: String = chars.by_ref().take(4).collect();
                out.push(char::from_u32(u32::from_str_radix(&code, 16).ok()?)?);
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// `encode`, `decode`, `escape` or `unescape` of `text` in `format`; `None` when the
/// text is not valid in that format.
pub(crate) fn transcode(
    function: &str,
    format: &str,
    text: &str,
) -> Result<Option<String>, FhirPathError> {
    let unsupported = || {
        Err(FhirPathError::Execution(format!(
            "{function}() does not know format '{format}'"
        )))
    };
    Ok(match (function, format) {
        ("encode", "base64") => Some(base64_encode(text.as_bytes(), false)),
        ("encode", "urlbase64") => Some(base64_encode(text.as_bytes(), true)),
        ("encode", "hex") => Some(text.bytes().map(|b| format!("{b:02x}")).collect()),
        ("decode", "base64" | "urlbase64") => {
            base64_decode(text).and_then(|b| String::from_utf8(b).ok())
        }
        ("decode", "hex") => hex_decode(text).and_then(|b| String::from_utf8(b).ok()),
        ("escape", "html") => Some(html_escape(text)),
        ("escape", "json") => Some(json_escape(text)),
        ("unescape", "html") => Some(html_unescape(text)),
        ("unescape", "json") => json_unescape(text),
        _ => return unsupported(),
    })
}
