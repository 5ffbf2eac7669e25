//! The `_filter` search parameter (FHIR R4 `search_filter.html`): one expression such
//! as `code eq http://loinc.org|1234-5 or (status eq final and subject re Patient/1)`
//! compiled once into a small tree of ANDed / ORed / negated comparisons, each of which
//! is an ordinary search [`Clause`] built by [`parse_param`], so a comparison means
//! exactly what the same test means in a plain search URL.
//!
//! Grammar (after percent-decoding, which the search URL parser does):
//!
//! ```text
//! filter    = orExp
//! orExp     = andExp *( SP "or" SP andExp )
//! andExp    = unary *( SP "and" SP unary )
//! unary     = "not" "(" filter ")" / "(" filter ")" / paramExp
//! paramExp  = paramName SP compareOp SP compValue
//! compValue = DQUOTE json-string-body DQUOTE / token   ; token: no space, ')' or ']'
//! ```
//!
//! The spec's grammar (`logExp = filter ("and" / "or") filter`) gives no precedence;
//! we bind `and` tighter than `or`, as most query languages do, so `a or b and c` is
//! `a or (b and c)`. Other servers may group mixed chains differently, so writers
//! should parenthesise them; parentheses make every reading agree.
//!
//! What each operator compiles to, by parameter type:
//!
//! | op | token | reference | string | uri | date | number, quantity |
//! |---|---|---|---|---|---|---|
//! | `eq` | `name=v` | `name=v` | equal, case/accent-insensitive | `name=v` | `name=eqv` | `name=eqv` |
//! | `ne` | has a value, none `eq` | same | same | same | `name=nev` | `name=nev` |
//! | `co` `sw` `ew` | – | – | `:contains`, default, ends-with | – | – | – |
//! | `gt` `lt` `ge` `le` `sa` `eb` `ap` | – | – | – | – | prefix | prefix |
//! | `pr` | `:missing` | `:missing` | `:missing` | `:missing` | `:missing` | `:missing` |
//! | `po` | – | – | – | – | overlap, see [`Op::Po`] | – |
//! | `ss` `sb` | – | – | – | `:below` `:above` | – | – |
//! | `re` | – | `name=v` | – | – | – | – |
//!
//! Everything else (`in`/`ni` value sets, `ss`/`sb` on codes, chained paths
//! `subject.name`, sub-filters `related[...]`, modifiers) is a compile error naming the
//! construct and its position. Expressions are bounded in size ([`MAX_FILTER_BYTES`])
//! and nesting ([`MAX_FILTER_DEPTH`]); `and`/`or` chains are flat lists, so neither
//! compiling nor evaluating recurses deeper than the nesting bound.

use serde_json::Value;

use crate::error::{err, CriteriaError};
use crate::plan::Plan;
use crate::registry::{self, ParamDef, ParamType};
use crate::search::{parse_param, Clause, StringMode};

/// The longest `_filter` expression accepted, in bytes after percent-decoding.
pub(crate) const MAX_FILTER_BYTES: usize = 4096;

/// The deepest nesting of parentheses and `not(...)` accepted.
pub(crate) const MAX_FILTER_DEPTH: usize = 32;

/// `_filter` as a parameter of every resource type. It reads no element itself: its
/// clause holds a [`FilterExpr`] whose comparisons carry their own definitions.
pub(crate) static FILTER_PARAM: std::sync::LazyLock<ParamDef> =
    std::sync::LazyLock::new(|| ParamDef {
        name: "_filter".into(),
        ty: ParamType::Special,
        targets: Box::default(),
        // Never walked: a `_filter` clause evaluates its expression instead.
        plan: Plan::Unsupported("_filter is evaluated as an expression".into()),
        components: Box::default(),
    });

/// A compiled `_filter` expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum FilterExpr {
    /// One comparison, as an ordinary search clause.
    Test(Clause),
    Not(Box<FilterExpr>),
    /// Every member must match (a flat list: chains do not nest).
    And(Box<[FilterExpr]>),
    /// Some member must match.
    Or(Box<[FilterExpr]>),
}

impl FilterExpr {
    /// Compiles a percent-decoded `_filter` value for `resource_type`.
    pub(crate) fn compile(
        resource_type: &str,
        expression: &str,
    ) -> Result<FilterExpr, CriteriaError> {
        if expression.len() > MAX_FILTER_BYTES {
            return err(format!(
                "_filter: the expression is {} bytes long; at most {MAX_FILTER_BYTES} are accepted",
                expression.len()
            ));
        }
        let mut parser = Parser {
            src: expression,
            pos: 0,
            depth: 0,
            resource_type,
        };
        parser.skip_space();
        if parser.at_end() {
            return err("_filter: the expression is empty");
        }
        let expr = parser.or_expression()?;
        parser.skip_space();
        match parser.peek() {
            None => Ok(expr),
            Some(')') => parser.fail("unmatched ')'"),
            Some(_) => parser.fail(format!(
                "expected 'and', 'or' or the end of the expression, found '{}'",
                parser.word_ahead()
            )),
        }
    }

    /// Whether `resource` satisfies the expression. Recursion is bounded by
    /// [`MAX_FILTER_DEPTH`] (checked at compile time).
    pub(crate) fn matches(&self, resource: &Value) -> bool {
        match self {
            FilterExpr::Test(clause) => clause.matches(resource),
            FilterExpr::Not(inner) => !inner.matches(resource),
            FilterExpr::And(all) => all.iter().all(|e| e.matches(resource)),
            FilterExpr::Or(any) => any.iter().any(|e| e.matches(resource)),
        }
    }
}

/// The `_filter` comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Lt,
    Ge,
    Le,
    Ap,
    Sa,
    Eb,
    Pr,
    /// Period overlap on dates: there is a parseable value, and no value starts after
    /// or ends before the given period. Exact for single-valued dates; for several
    /// values it requires every one to overlap (stricter than "some value", never
    /// looser).
    Po,
    Ss,
    Sb,
    In,
    Ni,
    Re,
}

const OPS: &[(&str, Op)] = &[
    ("eq", Op::Eq),
    ("ne", Op::Ne),
    ("co", Op::Co),
    ("sw", Op::Sw),
    ("ew", Op::Ew),
    ("gt", Op::Gt),
    ("lt", Op::Lt),
    ("ge", Op::Ge),
    ("le", Op::Le),
    ("ap", Op::Ap),
    ("sa", Op::Sa),
    ("eb", Op::Eb),
    ("pr", Op::Pr),
    ("po", Op::Po),
    ("ss", Op::Ss),
    ("sb", Op::Sb),
    ("in", Op::In),
    ("ni", Op::Ni),
    ("re", Op::Re),
];

impl Op {
    fn parse(code: &str) -> Option<Op> {
        OPS.iter().find(|(c, _)| *c == code).map(|(_, op)| *op)
    }

    fn code(self) -> &'static str {
        OPS.iter()
            .find(|(_, op)| *op == self)
            .map_or("?", |(c, _)| c)
    }
}

/// A recursive-descent parser over the decoded expression. `pos` is a byte offset that
/// always sits on a character boundary.
struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
    resource_type: &'a str,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += c.len_utf8();
        }
    }

    /// Skips whitespace; returns whether there was any.
    fn skip_space(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
        self.pos > start
    }

    /// The 1-based character position of byte offset `byte`.
    fn column(&self, byte: usize) -> usize {
        self.src
            .get(..byte)
            .map_or(0, |before| before.chars().count())
            + 1
    }

    fn fail_at<T>(&self, byte: usize, message: impl std::fmt::Display) -> Result<T, CriteriaError> {
        err(format!(
            "_filter: {message} at character {}",
            self.column(byte)
        ))
    }

    fn fail<T>(&self, message: impl std::fmt::Display) -> Result<T, CriteriaError> {
        self.fail_at(self.pos, message)
    }

    /// The next whitespace-delimited word, shortened, for error messages.
    fn word_ahead(&self) -> String {
        let word: String = self
            .rest()
            .chars()
            .take_while(|c| !c.is_whitespace())
            .take(24)
            .collect();
        if word.is_empty() {
            "the end".to_owned()
        } else {
            word
        }
    }

    /// Consumes `keyword` when it is the next word: followed by whitespace, `(` or
    /// nothing (the caller then reports the missing operand).
    fn keyword(&mut self, keyword: &str) -> bool {
        let rest = self.rest();
        let Some(after) = rest.strip_prefix(keyword) else {
            return false;
        };
        if after
            .chars()
            .next()
            .is_none_or(|c| c.is_whitespace() || c == '(')
        {
            self.pos += keyword.len();
            true
        } else {
            false
        }
    }

    fn or_expression(&mut self) -> Result<FilterExpr, CriteriaError> {
        let mut terms = vec![self.and_expression()?];
        loop {
            let before = self.pos;
            self.skip_space();
            if self.keyword("or") {
                terms.push(self.and_expression()?);
            } else {
                self.pos = before;
                break;
            }
        }
        Ok(combine(terms, FilterExpr::Or))
    }

    fn and_expression(&mut self) -> Result<FilterExpr, CriteriaError> {
        let mut terms = vec![self.unary()?];
        loop {
            let before = self.pos;
            self.skip_space();
            if self.keyword("and") {
                terms.push(self.unary()?);
            } else {
                self.pos = before;
                break;
            }
        }
        Ok(combine(terms, FilterExpr::And))
    }

    fn unary(&mut self) -> Result<FilterExpr, CriteriaError> {
        self.skip_space();
        match self.peek() {
            None => self.fail("expected a comparison, '(' or 'not', found the end"),
            Some('(') => self.group(),
            Some(')') => self.fail("expected a comparison, '(' or 'not', found ')'"),
            Some(_) => {
                let start = self.pos;
                if self.keyword("not") {
                    self.skip_space();
                    if self.peek() != Some('(') {
                        return self.fail_at(
                            start,
                            "'not' must be followed by a parenthesised filter: 'not (...)'",
                        );
                    }
                    return Ok(FilterExpr::Not(Box::new(self.group()?)));
                }
                self.comparison()
            }
        }
    }

    /// `"(" filter ")"`, at the opening parenthesis.
    fn group(&mut self) -> Result<FilterExpr, CriteriaError> {
        let open = self.pos;
        if self.depth >= MAX_FILTER_DEPTH {
            return self.fail(format!(
                "the expression nests deeper than {MAX_FILTER_DEPTH} levels of parentheses"
            ));
        }
        self.depth += 1;
        self.bump();
        let inner = self.or_expression()?;
        self.skip_space();
        match self.peek() {
            Some(')') => self.bump(),
            None => return self.fail_at(open, "'(' is never closed"),
            Some(_) => {
                return self.fail(format!(
                    "expected 'and', 'or' or ')', found '{}'",
                    self.word_ahead()
                ))
            }
        }
        self.depth -= 1;
        Ok(inner)
    }

    /// `paramName SP compareOp SP compValue`.
    fn comparison(&mut self) -> Result<FilterExpr, CriteriaError> {
        let start = self.pos;
        let name_len = self
            .rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(self.rest().len());
        let name = self.rest().get(..name_len).unwrap_or("");
        if !name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        {
            return self.fail(format!(
                "expected a parameter name, '(' or 'not', found '{}'",
                self.word_ahead()
            ));
        }
        self.pos += name_len;
        match self.peek() {
            Some(c) if c.is_whitespace() => {}
            None => return self.fail(format!("expected an operator after '{name}', found the end")),
            Some('.') => {
                return self.fail(format!(
                    "chained parameter paths ('{name}.…') are not supported"
                ))
            }
            Some('[') => {
                return self.fail(format!(
                    "filters inside parameter paths ('{name}[…]') are not supported"
                ))
            }
            Some(':') => {
                return self.fail(format!(
                    "modifiers ('{name}:…') are not part of the _filter syntax"
                ))
            }
            Some('+') => {
                return self.fail(format!(
                    "expected a space after '{name}', found '+' ('+' is not decoded as a space in criteria; write %20)"
                ))
            }
            Some(c) => {
                return self.fail(format!(
                    "unexpected character '{c}' in parameter name '{name}'"
                ))
            }
        }
        self.skip_space();
        let op_code: String = self
            .rest()
            .chars()
            .take_while(|c| !c.is_whitespace())
            .collect();
        let Some(op) = Op::parse(&op_code) else {
            let known: Vec<&str> = OPS.iter().map(|(c, _)| *c).collect();
            return self.fail(format!(
                "unknown operator '{}' after '{name}' (expected one of {})",
                self.word_ahead(),
                known.join(", ")
            ));
        };
        self.pos += op_code.len();
        if !self.skip_space() {
            return self.fail(format!(
                "expected a value after '{name} {op_code}', found the end"
            ));
        }
        let value = self.value()?;
        self.compile_comparison(name, op, &value).map_err(|e| {
            CriteriaError::new(format!(
                "_filter: {} (in '{name} {op_code} …' at character {})",
                e.message(),
                self.column(start)
            ))
        })
    }

    /// A quoted string (JSON escapes) or a token (up to whitespace, `)` or `]`).
    fn value(&mut self) -> Result<String, CriteriaError> {
        if self.peek() == Some('"') {
            return self.quoted();
        }
        let token: String = self
            .rest()
            .chars()
            .take_while(|c| !(c.is_whitespace() || *c == ')' || *c == ']'))
            .collect();
        if token.is_empty() {
            return self.fail(format!("expected a value, found '{}'", self.word_ahead()));
        }
        self.pos += token.len();
        Ok(token)
    }

    /// A double-quoted string with JSON escapes, at the opening quote.
    fn quoted(&mut self) -> Result<String, CriteriaError> {
        let open = self.pos;
        self.bump();
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return self.fail_at(open, "the string starting here is never closed");
            };
            let at = self.pos;
            self.bump();
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let Some(e) = self.peek() else {
                        return self.fail_at(open, "the string starting here is never closed");
                    };
                    self.bump();
                    match e {
                        '"' | '\\' | '/' => out.push(e),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        'u' => out.push(self.unicode_escape(at)?),
                        other => {
                            return self
                                .fail_at(at, format!("unknown escape '\\{other}' in a string"))
                        }
                    }
                }
                c => out.push(c),
            }
        }
    }

    /// The `XXXX` of `\uXXXX` (after the `u`), with a following low surrogate when the
    /// first is a high one.
    fn unicode_escape(&mut self, at: usize) -> Result<char, CriteriaError> {
        let high = self.hex4(at)?;
        let code = if (0xD800..0xDC00).contains(&high) {
            if !self.rest().starts_with("\\u") {
                return self.fail_at(at, "a '\\u' high surrogate must be followed by a low one");
            }
            self.pos += 2;
            let low = self.hex4(at)?;
            if !(0xDC00..0xE000).contains(&low) {
                return self.fail_at(at, "a '\\u' high surrogate must be followed by a low one");
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        } else {
            high
        };
        match char::from_u32(code) {
            Some(c) => Ok(c),
            None => self.fail_at(at, "a '\\u' escape is not a Unicode scalar value"),
        }
    }

    fn hex4(&mut self, at: usize) -> Result<u32, CriteriaError> {
        let digits = self.rest().get(..4).unwrap_or("");
        if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return self.fail_at(at, "a '\\u' escape needs four hex digits");
        }
        self.pos += 4;
        u32::from_str_radix(digits, 16)
            .or_else(|_| self.fail_at(at, "a '\\u' escape needs four hex digits"))
    }

    /// Compiles one comparison into clauses (see the module's table).
    fn compile_comparison(
        &self,
        name: &str,
        op: Op,
        value: &str,
    ) -> Result<FilterExpr, CriteriaError> {
        let rt = self.resource_type;
        let Some(def) = registry::lookup(rt, name) else {
            return err(format!("unknown search parameter '{name}' for {rt}"));
        };
        if value.is_empty() {
            return err(format!("'{name}' has an empty value"));
        }
        let ty = def.ty;
        let unsupported = || {
            err(format!(
                "operator '{}' is not supported on {} parameter '{name}'",
                op.code(),
                ty.code()
            ))
        };
        let clause = |modifier: Option<&str>, value: &str| leaf(rt, name, ty, modifier, value);
        // `ne` on unordered types: there is a value, and none is `eq` (the same rule
        // the search syntax applies to `ne` on dates).
        let not_equal = |eq: FilterExpr| -> Result<FilterExpr, CriteriaError> {
            Ok(FilterExpr::And(Box::new([
                clause(Some("missing"), "false")?,
                FilterExpr::Not(Box::new(eq)),
            ])))
        };
        match (op, ty) {
            (Op::In | Op::Ni, _) => err(format!(
                "operator '{}' (value-set membership) needs a terminology service and is not supported",
                op.code()
            )),
            (Op::Pr, _) => match value {
                "true" => clause(Some("missing"), "false"),
                "false" => clause(Some("missing"), "true"),
                _ => err(format!(
                    "operator 'pr' on '{name}' needs 'true' or 'false', got '{value}'"
                )),
            },
            (Op::Eq, ParamType::Token | ParamType::Reference | ParamType::Uri) => {
                clause(None, value)
            }
            (Op::Re, ParamType::Reference) => clause(None, value),
            (Op::Ne, ParamType::Token | ParamType::Reference | ParamType::Uri) => {
                not_equal(clause(None, value)?)
            }
            (Op::Eq, ParamType::String) => string_clause(rt, name, value, StringMode::Equal),
            (Op::Ne, ParamType::String) => {
                not_equal(string_clause(rt, name, value, StringMode::Equal)?)
            }
            (Op::Sw, ParamType::String) => clause(None, value),
            (Op::Co, ParamType::String) => clause(Some("contains"), value),
            (Op::Ew, ParamType::String) => string_clause(rt, name, value, StringMode::EndsWith),
            (Op::Ss, ParamType::Uri) => clause(Some("below"), value),
            (Op::Sb, ParamType::Uri) => clause(Some("above"), value),
            (
                Op::Eq | Op::Ne | Op::Gt | Op::Lt | Op::Ge | Op::Le | Op::Sa | Op::Eb | Op::Ap,
                ParamType::Date | ParamType::Number | ParamType::Quantity,
            ) => clause(None, &format!("{}{value}", op.code())),
            (Op::Po, ParamType::Date) => {
                let with = |prefix: &str| clause(None, &format!("{prefix}{value}"));
                // `eq or ne` holds exactly when some value parses as a date.
                Ok(FilterExpr::And(Box::new([
                    FilterExpr::Or(Box::new([with("eq")?, with("ne")?])),
                    FilterExpr::Not(Box::new(with("sa")?)),
                    FilterExpr::Not(Box::new(with("eb")?)),
                ])))
            }
            (Op::Eq, ParamType::Composite) => clause(None, value),
            (Op::Ss | Op::Sb, ParamType::Token) => err(format!(
                "operator '{}' (subsumption) on token parameter '{name}' needs a terminology service and is not supported",
                op.code()
            )),
            _ => unsupported(),
        }
    }
}

/// `terms` as one expression: the only term itself, or their `and` / `or`.
fn combine(mut terms: Vec<FilterExpr>, list: fn(Box<[FilterExpr]>) -> FilterExpr) -> FilterExpr {
    if terms.len() == 1 {
        if let Some(only) = terms.pop() {
            return only;
        }
    }
    list(terms.into_boxed_slice())
}

/// One comparison as a search clause: `name[:modifier]=value`, with `value` escaped
/// so that the search syntax reads it literally (a `_filter` value is one value, so
/// commas are not lists and `%` is not an escape). Token, number, quantity and
/// composite values keep `|` and `$`, which structure them in both syntaxes.
fn leaf(
    resource_type: &str,
    name: &str,
    ty: ParamType,
    modifier: Option<&str>,
    value: &str,
) -> Result<FilterExpr, CriteriaError> {
    let structured = matches!(
        ty,
        ParamType::Token | ParamType::Number | ParamType::Quantity | ParamType::Composite
    );
    let mut segment = String::with_capacity(name.len() + value.len() + 16);
    segment.push_str(name);
    if let Some(m) = modifier {
        segment.push(':');
        segment.push_str(m);
    }
    segment.push('=');
    for c in value.chars() {
        match c {
            '%' => segment.push_str("%25"),
            '\\' => segment.push_str("\\\\"),
            ',' => segment.push_str("\\,"),
            '|' | '$' if !structured => {
                segment.push('\\');
                segment.push(c);
            }
            c => segment.push(c),
        }
    }
    parse_param(resource_type, &segment).map(FilterExpr::Test)
}

/// A string comparison the search syntax has no modifier for.
fn string_clause(
    resource_type: &str,
    name: &str,
    value: &str,
    mode: StringMode,
) -> Result<FilterExpr, CriteriaError> {
    let FilterExpr::Test(mut clause) = leaf(resource_type, name, ParamType::String, None, value)?
    else {
        return err(format!("'{name}' did not compile to a string test"));
    };
    if !clause.set_string_mode(mode) {
        return err(format!("'{name}' did not compile to a string test"));
    }
    Ok(FilterExpr::Test(clause))
}
