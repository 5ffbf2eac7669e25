//! Extraction of search values from JSON elements and their matching rules, per
//! search parameter type (token, reference, string, date, uri).
//!
//! Elements are recognised by their JSON shape, not by a type model:
//! - token: `CodeableConcept` (has `coding`/`text`), `Coding` (has `code`),
//!   `Identifier` (has `value`; system|value), `ContactPoint` (an object with `value`
//!   whose `system` is one of the ContactPoint codes phone|fax|email|pager|url|sms|other;
//!   matched on `value` only, as having no system), and primitives (code, string,
//!   boolean, id, uri), which are treated as codes *without* a system: they match
//!   `code` and `|code`, never `system|code`. Token comparison is exact (case-sensitive).
//! - reference: `Reference.reference` (relative, absolute, `_history` stripped),
//!   `Reference.type`, and bare strings (canonical/uri elements).
//! - string: plain strings, and the parts of `HumanName` and `Address`.
//! - date: date/dateTime/instant strings and `Period` objects.
//! - uri: strings; `:below`/`:above` compare by path segments.
//! - number and quantity: see [`number`](crate::number).
//!
//! Nothing here panics on any JSON: unexpected shapes simply yield no values.

use serde_json::Value;

use crate::date::{parse_range, DateRange};

/// Collects every element reached by a dotted `path` from `root`, flattening arrays.
/// A segment may be `name[child=value]` to keep only elements whose `child` equals
/// `value`. JSON `null`s are never collected.
pub(crate) fn collect<'a>(root: &'a Value, path: &str, out: &mut Vec<&'a Value>) {
    // Most paths are one plain element: no intermediate lists needed.
    if !path.contains(['.', '[']) {
        match root.as_object().and_then(|o| o.get(path)) {
            Some(Value::Array(items)) => out.extend(items.iter().filter(|i| !i.is_null())),
            Some(Value::Null) | None => {}
            Some(other) => out.push(other),
        }
        return;
    }
    let mut current: Vec<&'a Value> = vec![root];
    for segment in path.split('.') {
        let (name, filter) = match segment.split_once('[') {
            Some((name, rest)) => (name, rest.strip_suffix(']').and_then(|f| f.split_once('='))),
            None => (segment, None),
        };
        let mut next = Vec::new();
        for node in current {
            let Some(child) = node.as_object().and_then(|o| o.get(name)) else {
                continue;
            };
            let items: Box<dyn Iterator<Item = &'a Value>> = match child {
                Value::Array(items) => Box::new(items.iter()),
                other => Box::new(std::iter::once(other)),
            };
            for item in items {
                if item.is_null() {
                    continue;
                }
                if let Some((key, want)) = filter {
                    if item.get(key).and_then(Value::as_str) != Some(want) {
                        continue;
                    }
                }
                next.push(item);
            }
        }
        current = next;
        if current.is_empty() {
            return;
        }
    }
    out.extend(current);
}

// ---------------------------------------------------------------- token

/// One compiled token value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum TokenQuery {
    /// `code`: the code in any system (or none).
    Code(String),
    /// `system|code`.
    SystemCode(String, String),
    /// `|code`: the code with no system.
    NoSystemCode(String),
    /// `system|`: any code in the system.
    System(String),
}

const CONTACT_POINT_SYSTEMS: &[&str] = &["phone", "fax", "email", "pager", "url", "sms", "other"];

/// Calls `f` with each `(system, code)` pair a token element carries until it returns
/// `true`; returns whether it did. Borrows from the element: nothing is allocated.
pub(crate) fn any_token_pair<'a>(
    node: &'a Value,
    f: &mut dyn FnMut(Option<&'a str>, &'a str) -> bool,
) -> bool {
    match node {
        Value::String(s) => f(None, s),
        Value::Bool(b) => f(None, if *b { "true" } else { "false" }),
        Value::Object(o) => {
            if let Some(codings) = o.get("coding").and_then(Value::as_array) {
                return codings.iter().any(|coding| any_token_pair(coding, f));
            }
            // Looked up only when needed: a key lookup hashes the key.
            let system = o.get("system").and_then(Value::as_str);
            if let Some(code) = o.get("code").and_then(Value::as_str) {
                f(system, code)
            } else if let Some(value) = o.get("value").and_then(Value::as_str) {
                if system.is_some_and(|s| CONTACT_POINT_SYSTEMS.contains(&s)) {
                    f(None, value)
                } else {
                    f(system, value)
                }
            } else {
                false
            }
        }
        _ => false,
    }
}

/// Whether the element matches the token value.
pub(crate) fn token_matches(node: &Value, query: &TokenQuery) -> bool {
    any_token_pair(node, &mut |system, code| match query {
        TokenQuery::Code(c) => code == c,
        TokenQuery::SystemCode(s, c) => system == Some(s.as_str()) && code == c,
        TokenQuery::NoSystemCode(c) => system.is_none() && code == c,
        TokenQuery::System(s) => system == Some(s.as_str()),
    })
}

/// Whether an `Identifier` element has a `type` coding (`system`, `code`) and the
/// `value` (for `:of-type`).
pub(crate) fn identifier_of_type(node: &Value, system: &str, code: &str, value: &str) -> bool {
    let Some(o) = node.as_object() else {
        return false;
    };
    o.get("value").and_then(Value::as_str) == Some(value)
        && o.get("type")
            .and_then(|t| t.get("coding"))
            .and_then(Value::as_array)
            .is_some_and(|codings| {
                codings.iter().any(|c| {
                    c.get("system").and_then(Value::as_str) == Some(system)
                        && c.get("code").and_then(Value::as_str) == Some(code)
                })
            })
}

/// The display texts of a token element for `:text`: `CodeableConcept.text`,
/// `Coding.display` and `Identifier.type.text`.
pub(crate) fn token_texts(node: &Value) -> Vec<&str> {
    let mut out = Vec::new();
    if let Value::Object(o) = node {
        if let Some(t) = o.get("text").and_then(Value::as_str) {
            out.push(t);
        }
        if let Some(d) = o.get("display").and_then(Value::as_str) {
            out.push(d);
        }
        if let Some(codings) = o.get("coding").and_then(Value::as_array) {
            out.extend(
                codings
                    .iter()
                    .filter_map(|c| c.get("display").and_then(Value::as_str)),
            );
        }
        if let Some(t) = o
            .get("type")
            .and_then(|t| t.get("text"))
            .and_then(Value::as_str)
        {
            out.push(t);
        }
    }
    out
}

// ---------------------------------------------------------------- reference

/// A reference split into its parts. `typ`/`id` are set when the reference has the
/// shape `[base/]Type/id[/_history/v]` (or a bare id, for search values only).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RefParts {
    pub(crate) typ: Option<String>,
    pub(crate) id: Option<String>,
    /// The reference with any `/_history/v` suffix removed.
    pub(crate) raw: String,
}

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A reference split into borrowed parts (see [`RefParts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RefView<'a> {
    pub(crate) typ: Option<&'a str>,
    pub(crate) id: Option<&'a str>,
    pub(crate) raw: &'a str,
}

/// Splits a reference string without allocating. A bare id (no `/`, no `:`) yields
/// only `id`.
pub(crate) fn split_reference_view(s: &str) -> RefView<'_> {
    // A byte scan: `str::find` with a string pattern sets up a two-way searcher per
    // call, which costs more than scanning a short reference.
    const HISTORY: &[u8] = b"/_history/";
    let raw = match s
        .as_bytes()
        .windows(HISTORY.len())
        .position(|w| w == HISTORY)
    {
        Some(i) => &s[..i],
        None => s,
    };
    let mut segments = raw.rsplit('/');
    let last = segments.next().unwrap_or(raw);
    let (typ, id) = match segments.next() {
        None if !last.contains(':') && is_id(last) => (None, Some(last)),
        Some(typ) if crate::registry::is_type_name(typ) && is_id(last) => (Some(typ), Some(last)),
        _ => (None, None),
    };
    RefView { typ, id, raw }
}

/// Splits a reference string. A bare id (no `/`, no `:`) yields only `id`.
pub(crate) fn split_reference(s: &str) -> RefParts {
    let view = split_reference_view(s);
    RefParts {
        typ: view.typ.map(str::to_owned),
        id: view.id.map(str::to_owned),
        raw: view.raw.to_owned(),
    }
}

/// The reference a resource element carries (a `Reference` object or a string).
pub(crate) fn element_reference(node: &Value) -> Option<RefView<'_>> {
    let (s, declared_type) = match node {
        Value::String(s) => (s.as_str(), None),
        Value::Object(o) => (
            o.get("reference").and_then(Value::as_str)?,
            o.get("type").and_then(Value::as_str),
        ),
        _ => return None,
    };
    let mut parts = split_reference_view(s);
    if parts.typ.is_none() && parts.id.is_some() {
        // A bare id in a resource is only meaningful with an explicit Reference.type.
        parts.typ = declared_type;
        if parts.typ.is_none() {
            parts.id = None;
        }
    }
    Some(parts)
}

/// Whether the element references what `query` names; `targets` are the parameter's
/// allowed target types (empty = any).
pub(crate) fn reference_matches(node: &Value, query: &RefParts, targets: &[Box<str>]) -> bool {
    let Some(r) = element_reference(node) else {
        return false;
    };
    if let Some(t) = r.typ {
        if !targets.is_empty() && !targets.iter().any(|allowed| &**allowed == t) {
            return false;
        }
    } else if !targets.is_empty() {
        // Untyped (e.g. `urn:uuid:`) references cannot be checked against the targets.
        return false;
    }
    match (&query.id, r.id) {
        (Some(qid), Some(rid)) => {
            qid == rid && query.typ.as_deref().is_none_or(|qt| r.typ == Some(qt))
        }
        _ => query.raw == r.raw,
    }
}

/// The `Reference.identifier` of a reference element, for `:identifier`.
pub(crate) fn reference_identifier(node: &Value) -> Option<&Value> {
    node.as_object()?.get("identifier")
}

// ---------------------------------------------------------------- string

/// The strings a string-typed element contributes: the string itself, or the parts of
/// a `HumanName` / `Address`.
pub(crate) fn string_values(node: &Value) -> Vec<&str> {
    const PARTS: &[&str] = &[
        "text",
        "family",
        "given",
        "prefix",
        "suffix",
        "line",
        "city",
        "district",
        "state",
        "postalCode",
        "country",
    ];
    match node {
        Value::String(s) => vec![s.as_str()],
        Value::Object(o) => PARTS
            .iter()
            .filter_map(|k| o.get(*k))
            .flat_map(|v| match v {
                Value::String(s) => vec![s.as_str()],
                Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Lower-cases and strips common Latin diacritics (Latin-1 and Latin Extended-A), for
/// the default case- and accent-insensitive string matching.
pub(crate) fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        let folded = match c {
            'à'..='å' | 'ā' | 'ă' | 'ą' => "a",
            'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => "c",
            'ď' | 'đ' => "d",
            'è'..='ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
            'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
            'ì'..='ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => "i",
            'ñ' | 'ń' | 'ņ' | 'ň' => "n",
            'ò'..='ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => "o",
            'ŕ' | 'ř' => "r",
            'ś' | 'ŝ' | 'ş' | 'š' => "s",
            'ţ' | 'ť' => "t",
            'ù'..='ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
            'ý' | 'ÿ' => "y",
            'ź' | 'ż' | 'ž' => "z",
            'ł' => "l",
            'ß' => "ss",
            'æ' => "ae",
            'œ' => "oe",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push_str(folded);
    }
    out
}

// ---------------------------------------------------------------- date

/// The ranges a date-typed element covers: date/dateTime/instant strings, and
/// `Period` objects (a missing start or end is open).
pub(crate) fn date_ranges(node: &Value) -> Option<DateRange> {
    match node {
        Value::String(s) => parse_range(s),
        Value::Object(o) => {
            let start = o.get("start").and_then(Value::as_str);
            let end = o.get("end").and_then(Value::as_str);
            if start.is_none() && end.is_none() {
                return None;
            }
            let lo = match start {
                Some(s) => parse_range(s)?.lo,
                None => i64::MIN,
            };
            let hi = match end {
                Some(e) => parse_range(e)?.hi,
                None => i64::MAX,
            };
            Some(DateRange { lo, hi })
        }
        _ => None,
    }
}

// ---------------------------------------------------------------- uri

/// Uri matching modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum UriMode {
    /// Exact match; a canonical `url|version` also matches the bare `url`.
    Exact,
    /// `:below`: the element is the value or lies below it, by path segments
    /// (`http://a.org/fhir` is below `http://a.org`, `http://a.org.evil` is not).
    Below,
    /// `:above`: the reverse: the value is the element or lies below it.
    Above,
}

/// Whether a uri element matches.
pub(crate) fn uri_matches(node: &Value, value: &str, mode: UriMode) -> bool {
    let Some(s) = node.as_str() else {
        return false;
    };
    match mode {
        UriMode::Exact => {
            s == value
                || (!value.contains('|')
                    && s.split_once('|').is_some_and(|(base, _)| base == value))
        }
        UriMode::Below => is_at_or_below(s, value),
        UriMode::Above => is_at_or_below(value, s),
    }
}

/// Whether `uri` equals `base` or continues it after a path separator.
fn is_at_or_below(uri: &str, base: &str) -> bool {
    match uri.strip_prefix(base) {
        Some("") => true,
        Some(rest) => base.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}
