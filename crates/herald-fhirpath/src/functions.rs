//! The FHIRPath function library (existence, filtering, subsetting, combining,
//! conversion, string, math, tree navigation, utility and FHIR-specific functions).

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::Value;

use crate::decimal::Decimal;
use crate::eval::{
    checked_string, compare, describe, execution, item_equal, item_is, push_element, singleton,
    to_boolean, Collection, Context, Scope,
};
use crate::parser::Expr;
use crate::parser::CALENDAR_WORDS;
use crate::strings;
use crate::temporal::{Temporal, TemporalKind};
use crate::value::{Item, Node, Quantity, TypeSpecifier};
use crate::FhirPathError;

/// Functions that need terminology services or a UCUM unit engine.
const UNSUPPORTED: &[&str] = &[
    "memberOf",
    "subsumes",
    "subsumedBy",
    "conformsTo",
    "comparable",
    "htmlChecks",
    "validateVS",
    "validateCS",
    "translate",
    "expand",
    "lookup",
];

fn arity(name: &str, args: &[Expr], min: usize, max: usize) -> Result<(), FhirPathError> {
    if args.len() < min || args.len() > max {
        return Err(FhirPathError::Syntax(format!(
            "{name}() takes {min}..={max} arguments, got {}",
            args.len()
        )));
    }
    Ok(())
}

/// A type name written as an argument (`ofType(FHIR.Patient)`).
fn type_argument(name: &str, expr: &Expr) -> Result<TypeSpecifier, FhirPathError> {
    match expr {
        Expr::Identifier(n) => Ok(TypeSpecifier::new(None, n.clone())),
        Expr::Member(ns, n) => match ns.as_ref() {
            Expr::Identifier(ns) => Ok(TypeSpecifier::new(Some(ns.clone()), n.clone())),
            _ => Err(execution(format!("{name}() needs a type name"))),
        },
        _ => Err(execution(format!("{name}() needs a type name"))),
    }
}

fn boolean<'a>(b: bool) -> Collection<'a> {
    vec![Item::Boolean(b)]
}

fn one<'a>(item: Option<Item<'a>>) -> Collection<'a> {
    item.into_iter().collect()
}

fn parse_integer(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_decimal(text: &str) -> Option<Decimal> {
    let body = text.strip_prefix('+').unwrap_or(text);
    Decimal::parse(body)
}

fn to_boolean_value(item: &Item<'_>) -> Option<bool> {
    match item.system() {
        Item::Boolean(b) => Some(b),
        Item::Integer(1) => Some(true),
        Item::Integer(0) => Some(false),
        Item::Decimal(d) if d == Decimal::from_int(1) => Some(true),
        Item::Decimal(d) if d == Decimal::from_int(0) => Some(false),
        Item::String(s) => match s.to_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" | "1.0" => Some(true),
            "false" | "f" | "no" | "n" | "0" | "0.0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn to_integer_value(item: &Item<'_>) -> Option<i64> {
    match item.system() {
        Item::Integer(i) => Some(i),
        Item::Boolean(b) => Some(i64::from(b)),
        Item::String(s) => parse_integer(&s),
        _ => None,
    }
}

fn to_decimal_value(item: &Item<'_>) -> Option<Decimal> {
    match item.system() {
        Item::Integer(i) => Some(Decimal::from_int(i)),
        Item::Decimal(d) => Some(d),
        Item::Boolean(b) => Some(Decimal::new(i128::from(b) * 10, 1)),
        Item::String(s) => parse_decimal(&s),
        _ => None,
    }
}

pub(crate) fn to_string_value(item: &Item<'_>) -> Option<String> {
    match item.system() {
        Item::String(s) => Some(s),
        Item::Integer(i) => Some(i.to_string()),
        Item::Decimal(d) => Some(d.to_string()),
        Item::Boolean(b) => Some(b.to_string()),
        Item::Temporal(t) => Some(t.to_string()),
        Item::Quantity(q) => Some(q.render()),
        _ => None,
    }
}

fn to_temporal_value(item: &Item<'_>, kind: TemporalKind) -> Option<Temporal> {
    match item.system() {
        Item::String(s) => match kind {
            TemporalKind::Date => Temporal::parse_date(&s)
                .or_else(|| Temporal::parse_datetime(&s).and_then(Temporal::to_date)),
            TemporalKind::DateTime => Temporal::parse_datetime(&s),
            TemporalKind::Time => Temporal::parse_time(&s),
        },
        Item::Temporal(t) => match kind {
            TemporalKind::Date => t.to_date(),
            TemporalKind::DateTime => t.to_datetime(),
            TemporalKind::Time => (t.kind == TemporalKind::Time).then_some(t),
        },
        _ => None,
    }
}

fn parse_quantity(text: &str) -> Option<Quantity> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_whitespace() || c == '\'')
        .unwrap_or(text.len());
    let (number, rest) = text.split_at(split);
    let value = parse_decimal(number)?;
    let rest = rest.trim();
    if rest.is_empty() {
        return Some(Quantity::new(value, "1".into(), false));
    }
    if let Some(unit) = rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return (!unit.contains('\'')).then(|| Quantity::new(value, unit.to_owned(), false));
    }
    CALENDAR_WORDS
        .contains(&rest)
        .then(|| Quantity::new(value, rest.to_owned(), true))
}

fn to_quantity_value(item: &Item<'_>) -> Option<Quantity> {
    match item.system() {
        Item::Quantity(q) => Some(q),
        Item::Integer(i) => Some(Quantity::new(Decimal::from_int(i), "1".into(), false)),
        Item::Decimal(d) => Some(Quantity::new(d, "1".into(), false)),
        Item::Boolean(b) => Some(Quantity::new(
            Decimal::new(i128::from(b) * 10, 1),
            "1".into(),
            false,
        )),
        Item::String(s) => parse_quantity(&s),
        _ => None,
    }
}

fn math_f64<'a>(input: &Item<'a>, f: impl Fn(f64) -> f64) -> Result<Collection<'a>, FhirPathError> {
    let value = match input.system() {
        Item::Integer(i) => i as f64,
        Item::Decimal(d) => d.to_f64(),
        other => return Err(execution(format!("math function on {}", describe(&other)))),
    };
    Ok(one(Decimal::from_f64(f(value)).map(Item::Decimal)))
}

fn int_from_i128<'a>(value: Option<i128>) -> Collection<'a> {
    one(value.and_then(|v| i64::try_from(v).ok()).map(Item::Integer))
}

fn decimal_boundary(value: Decimal, precision: Option<i64>, high: bool) -> Option<Decimal> {
    let precision = u32::try_from(precision.unwrap_or(8)).ok()?;
    if precision > 28 {
        return None;
    }
    // Half a unit in the last written place.
    let half = Decimal::new(5, value.scale() + 1);
    let bound = if high {
        value.checked_add(half)?
    } else {
        value.checked_sub(half)?
    };
    let scaled = bound.round(value.scale() + 1)?;
    // Floor (low) or ceiling (high) at `precision` places.
    let shift = scaled.scale().saturating_sub(precision);
    let divisor = 10i128.checked_pow(shift)?;
    let mantissa = scaled.mantissa();
    let (floor, rem) = (mantissa.div_euclid(divisor), mantissa.rem_euclid(divisor));
    let rounded = if high && rem != 0 { floor + 1 } else { floor };
    let result = Decimal::new(rounded, scaled.scale() - shift);
    result.round(precision)
}

impl<'a, 'r> Context<'a, 'r> {
    fn arg(
        &self,
        args: &[Expr],
        i: usize,
        scope: &Scope<'a, '_>,
    ) -> Result<Collection<'a>, FhirPathError> {
        match args.get(i) {
            Some(expr) => self.eval(expr, scope),
            None => Ok(Vec::new()),
        }
    }

    /// A singleton argument: `Ok(None)` when empty.
    fn arg_single(
        &self,
        args: &[Expr],
        i: usize,
        scope: &Scope<'a, '_>,
        name: &str,
    ) -> Result<Option<Item<'a>>, FhirPathError> {
        let values = self.arg(args, i, scope)?;
        Ok(singleton(&values, name)?.map(Item::system))
    }

    fn arg_string(
        &self,
        args: &[Expr],
        i: usize,
        scope: &Scope<'a, '_>,
        name: &str,
    ) -> Result<Option<String>, FhirPathError> {
        match self.arg_single(args, i, scope, name)? {
            None => Ok(None),
            Some(Item::String(s)) => Ok(Some(s)),
            Some(other) => Err(execution(format!(
                "{name}() needs a string argument, got {}",
                describe(&other)
            ))),
        }
    }

    fn arg_integer(
        &self,
        args: &[Expr],
        i: usize,
        scope: &Scope<'a, '_>,
        name: &str,
    ) -> Result<Option<i64>, FhirPathError> {
        match self.arg_single(args, i, scope, name)? {
            None => Ok(None),
            Some(Item::Integer(n)) => Ok(Some(n)),
            Some(other) => Err(execution(format!(
                "{name}() needs an integer argument, got {}",
                describe(&other)
            ))),
        }
    }

    fn item_scope<'s>(
        &self,
        item: &'s Item<'a>,
        index: usize,
        outer: &Scope<'a, '_>,
    ) -> Scope<'a, 's> {
        Scope {
            focus: Cow::Borrowed(std::slice::from_ref(item)),
            index: i64::try_from(index).ok(),
            total: outer.total.clone(),
        }
    }

    /// Evaluates `criteria` for every input item as a boolean.
    fn criteria(
        &self,
        input: &[Item<'a>],
        criteria: &Expr,
        scope: &Scope<'a, '_>,
        name: &str,
    ) -> Result<Vec<Option<bool>>, FhirPathError> {
        input
            .iter()
            .enumerate()
            .map(|(i, item)| self.eval_boolean(criteria, &self.item_scope(item, i, scope), name))
            .collect()
    }

    fn booleans(&self, input: &[Item<'a>], name: &str) -> Result<Vec<bool>, FhirPathError> {
        input
            .iter()
            .map(|item| match item.system() {
                Item::Boolean(b) => Ok(b),
                other => Err(execution(format!(
                    "{name}() needs booleans, got {}",
                    describe(&other)
                ))),
            })
            .collect()
    }

    fn children(&self, item: &Item<'a>, out: &mut Collection<'a>) -> Result<(), FhirPathError> {
        let before = out.len();
        if let Item::Node(Node {
            value: Some(Value::Object(map)),
            ..
        }) = item
        {
            for (key, value) in map {
                if key == "resourceType" || key.starts_with('_') {
                    continue;
                }
                let extension = map.get(&format!("_{key}"));
                push_element(out, key, Some(value), extension, None);
            }
            for (key, extension) in map {
                if let Some(name) = key.strip_prefix('_') {
                    if !map.contains_key(name) {
                        push_element(out, name, None, Some(extension), None);
                    }
                }
            }
        }
        self.charge(out.len() - before)
    }

    fn single_input<'c>(
        &self,
        input: &'c [Item<'a>],
        name: &str,
    ) -> Result<Option<&'c Item<'a>>, FhirPathError> {
        singleton(input, name)
    }

    fn string_input(
        &self,
        input: &[Item<'a>],
        name: &str,
    ) -> Result<Option<String>, FhirPathError> {
        match singleton(input, name)? {
            None => Ok(None),
            // Date-typed elements are still strings in the JSON.
            Some(Item::Node(node)) if node.value.is_some_and(Value::is_string) => {
                Ok(node.value.and_then(Value::as_str).map(str::to_owned))
            }
            Some(item) => match item.system() {
                Item::String(s) => Ok(Some(s)),
                other => Err(execution(format!(
                    "{name}() needs a string, got {}",
                    describe(&other)
                ))),
            },
        }
    }

    fn regex(&self, pattern: &str) -> Result<regex::Regex, FhirPathError> {
        if let Some(compiled) = self.regexes.get(pattern) {
            return Ok(compiled.clone());
        }
        strings::compile_regex(pattern)
    }

    pub(crate) fn call(
        &self,
        name: &str,
        input: Collection<'a>,
        args: &[Expr],
        scope: &Scope<'a, '_>,
    ) -> Result<Collection<'a>, FhirPathError> {
        self.charge(input.len())?;
        if UNSUPPORTED.contains(&name) {
            return Err(FhirPathError::Unsupported(format!(
                "{name}() (needs terminology services or UCUM)"
            )));
        }
        match name {
            // Existence
            "empty" => {
                arity(name, args, 0, 0)?;
                Ok(boolean(input.is_empty()))
            }
            "exists" => {
                arity(name, args, 0, 1)?;
                match args.first() {
                    None => Ok(boolean(!input.is_empty())),
                    Some(criteria) => {
                        let results = self.criteria(&input, criteria, scope, name)?;
                        Ok(boolean(results.contains(&Some(true))))
                    }
                }
            }
            "all" => {
                arity(name, args, 1, 1)?;
                let results = self.criteria(&input, &args[0], scope, name)?;
                Ok(boolean(results.iter().all(|r| *r == Some(true))))
            }
            "allTrue" => Ok(boolean(self.booleans(&input, name)?.iter().all(|b| *b))),
            "anyTrue" => Ok(boolean(self.booleans(&input, name)?.iter().any(|b| *b))),
            "allFalse" => Ok(boolean(self.booleans(&input, name)?.iter().all(|b| !*b))),
            "anyFalse" => Ok(boolean(self.booleans(&input, name)?.iter().any(|b| !*b))),
            "subsetOf" | "supersetOf" => {
                arity(name, args, 1, 1)?;
                let other = self.arg(args, 0, scope)?;
                let (small, big) = if name == "subsetOf" {
                    (&input, &other)
                } else {
                    (&other, &input)
                };
                self.charge(small.len() * big.len())?;
                Ok(boolean(small.iter().all(|s| {
                    big.iter().any(|b| item_equal(s, b) == Some(true))
                })))
            }
            "count" => Ok(vec![Item::Integer(
                i64::try_from(input.len()).unwrap_or(i64::MAX),
            )]),
            "distinct" => {
                let mut out = Vec::new();
                self.union_into(&mut out, input)?;
                Ok(out)
            }
            "isDistinct" => {
                let count = input.len();
                let mut out = Vec::new();
                self.union_into(&mut out, input)?;
                Ok(boolean(out.len() == count))
            }
            // Filtering and projection
            "where" => {
                arity(name, args, 1, 1)?;
                // One pass, no vector of criteria results: `out` allocates only
                // when an item passes.
                let mut out = Vec::new();
                for (i, item) in input.into_iter().enumerate() {
                    let passes =
                        self.eval_boolean(&args[0], &self.item_scope(&item, i, scope), name)?;
                    if passes == Some(true) {
                        out.push(item);
                    }
                }
                Ok(out)
            }
            "select" => {
                arity(name, args, 1, 1)?;
                let mut out = Vec::new();
                for (i, item) in input.iter().enumerate() {
                    let result = self.eval(&args[0], &self.item_scope(item, i, scope))?;
                    self.charge(result.len())?;
                    out.extend(result);
                }
                Ok(out)
            }
            "repeat" => {
                arity(name, args, 1, 1)?;
                let mut out: Collection<'a> = Vec::new();
                let mut frontier = input;
                while !frontier.is_empty() {
                    let mut next = Vec::new();
                    for (i, item) in frontier.iter().enumerate() {
                        for produced in self.eval(&args[0], &self.item_scope(item, i, scope))? {
                            self.charge(out.len() + 1)?;
                            if !out.iter().any(|o| item_equal(o, &produced) == Some(true)) {
                                out.push(produced.clone());
                                next.push(produced);
                            }
                        }
                    }
                    frontier = next;
                }
                Ok(out)
            }
            "ofType" | "as" => {
                arity(name, args, 1, 1)?;
                let spec = type_argument(name, &args[0])?;
                if name == "as" && input.len() > 1 {
                    return Err(execution("as() needs a single item"));
                }
                let mut out = Vec::new();
                for item in input {
                    if item_is(&item, &spec, true)? {
                        out.push(item);
                    }
                }
                Ok(out)
            }
            "is" => {
                arity(name, args, 1, 1)?;
                let spec = type_argument(name, &args[0])?;
                match self.single_input(&input, name)? {
                    None => Ok(Vec::new()),
                    Some(item) => Ok(boolean(item_is(item, &spec, false)?)),
                }
            }
            // Subsetting
            "single" => Ok(self
                .single_input(&input, name)?
                .cloned()
                .into_iter()
                .collect()),
            "first" => Ok(input.into_iter().take(1).collect()),
            "last" => Ok(input.last().cloned().into_iter().collect()),
            "tail" => Ok(input.into_iter().skip(1).collect()),
            "skip" | "take" => {
                arity(name, args, 1, 1)?;
                let n = self.arg_integer(args, 0, scope, name)?.unwrap_or(0);
                let n = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
                Ok(if name == "skip" {
                    input.into_iter().skip(n).collect()
                } else {
                    input.into_iter().take(n).collect()
                })
            }
            "intersect" => {
                arity(name, args, 1, 1)?;
                let other = self.arg(args, 0, scope)?;
                self.charge(input.len() * other.len())?;
                let mut out: Collection<'a> = Vec::new();
                for item in input {
                    if other.iter().any(|o| item_equal(o, &item) == Some(true))
                        && !out.iter().any(|o| item_equal(o, &item) == Some(true))
                    {
                        out.push(item);
                    }
                }
                Ok(out)
            }
            "exclude" => {
                arity(name, args, 1, 1)?;
                let other = self.arg(args, 0, scope)?;
                self.charge(input.len() * other.len())?;
                Ok(input
                    .into_iter()
                    .filter(|item| !other.iter().any(|o| item_equal(o, item) == Some(true)))
                    .collect())
            }
            // Combining
            "union" => {
                arity(name, args, 1, 1)?;
                let other = self.arg(args, 0, scope)?;
                let mut out = Vec::new();
                self.union_into(&mut out, input)?;
                self.union_into(&mut out, other)?;
                Ok(out)
            }
            "combine" => {
                arity(name, args, 1, 1)?;
                let mut out = input;
                let other = self.arg(args, 0, scope)?;
                self.charge(other.len())?;
                out.extend(other);
                Ok(out)
            }
            // Conversion
            "iif" => {
                arity(name, args, 2, 3)?;
                if input.len() > 1 {
                    return Err(execution("iif() needs at most one input item"));
                }
                let inner = Scope {
                    focus: Cow::Owned(input),
                    index: scope.index,
                    total: scope.total.clone(),
                };
                let criterion = self.eval(&args[0], &inner)?;
                let chosen = match singleton(&criterion, "iif criterion")? {
                    None => false,
                    Some(item) => match item.system() {
                        Item::Boolean(b) => b,
                        other => {
                            return Err(execution(format!(
                                "iif() criterion must be a boolean, got {}",
                                describe(&other)
                            )))
                        }
                    },
                };
                if chosen {
                    self.eval(&args[1], &inner)
                } else {
                    self.arg(args, 2, &inner)
                }
            }
            "toBoolean" | "convertsToBoolean" | "toInteger" | "convertsToInteger" | "toDecimal"
            | "convertsToDecimal" | "toString" | "convertsToString" | "toDate"
            | "convertsToDate" | "toDateTime" | "convertsToDateTime" | "toTime"
            | "convertsToTime" | "toQuantity" | "convertsToQuantity" => {
                self.conversion(name, &input, args, scope)
            }
            // Strings
            "indexOf" | "substring" | "startsWith" | "endsWith" | "contains" | "upper"
            | "lower" | "replace" | "matches" | "matchesFull" | "replaceMatches" | "length"
            | "toChars" | "trim" | "split" | "encode" | "decode" | "escape" | "unescape" => {
                self.string_function(name, &input, args, scope)
            }
            "join" => {
                arity(name, args, 0, 1)?;
                let separator = self.arg_string(args, 0, scope, name)?.unwrap_or_default();
                let mut parts = Vec::new();
                for item in &input {
                    match item.system() {
                        Item::String(s) => parts.push(s),
                        other => {
                            return Err(execution(format!(
                                "join() needs strings, got {}",
                                describe(&other)
                            )))
                        }
                    }
                }
                Ok(vec![checked_string(parts.join(&separator))?])
            }
            // Math
            "abs" | "ceiling" | "exp" | "floor" | "ln" | "log" | "power" | "round" | "sqrt"
            | "truncate" => self.math(name, &input, args, scope),
            // Tree navigation
            "children" => {
                let mut out = Vec::new();
                for item in &input {
                    self.children(item, &mut out)?;
                }
                Ok(out)
            }
            "descendants" => {
                let mut out = Vec::new();
                let mut frontier = input;
                while !frontier.is_empty() {
                    let mut next = Vec::new();
                    for item in &frontier {
                        self.children(item, &mut next)?;
                    }
                    out.extend(next.iter().cloned());
                    frontier = next;
                }
                Ok(out)
            }
            // Utility
            "trace" => {
                arity(name, args, 1, 2)?;
                Ok(input)
            }
            "now" => Ok(vec![Item::Temporal(Temporal::now())]),
            "today" => Ok(vec![Item::Temporal(Temporal::today())]),
            "timeOfDay" => Ok(vec![Item::Temporal(Temporal::time_of_day())]),
            "not" => {
                arity(name, args, 0, 0)?;
                Ok(to_boolean(&input, "not()")?
                    .map(|b| Item::Boolean(!b))
                    .into_iter()
                    .collect())
            }
            "type" => Ok(input
                .iter()
                .filter_map(|item| item.type_name())
                .map(|(ns, n)| Item::Type(TypeSpecifier::new(Some(ns.to_owned()), n)))
                .collect()),
            "aggregate" => {
                arity(name, args, 1, 2)?;
                let mut total = self.arg(args, 1, scope)?;
                for (i, item) in input.iter().enumerate() {
                    let step = Scope {
                        focus: Cow::Borrowed(std::slice::from_ref(item)),
                        index: i64::try_from(i).ok(),
                        total: Some(total),
                    };
                    total = self.eval(&args[0], &step)?;
                }
                Ok(total)
            }
            "sort" => self.sort(input, args, scope),
            // FHIR-specific
            "extension" => {
                arity(name, args, 1, 1)?;
                let Some(url) = self.arg_string(args, 0, scope, name)? else {
                    return Ok(Vec::new());
                };
                let mut extensions = Vec::new();
                for item in &input {
                    self.navigate(item, "extension", &mut extensions)?;
                }
                Ok(extensions
                    .into_iter()
                    .filter(|e| matches!(e, Item::Node(n) if n.value.and_then(|v| v.get("url")).and_then(Value::as_str) == Some(url.as_str())))
                    .collect())
            }
            "hasValue" => Ok(boolean(match singleton(&input, name)? {
                Some(Item::Node(node)) => node.is_primitive() && node.value.is_some(),
                Some(_) => true,
                None => false,
            })),
            "getValue" => Ok(match singleton(&input, name)? {
                Some(Item::Node(node)) => one(node.primitive()),
                Some(other) => vec![other.clone()],
                None => Vec::new(),
            }),
            "resolve" => Ok(self.resolve(&input)),
            "lowBoundary" | "highBoundary" => {
                arity(name, args, 0, 1)?;
                let precision = self.arg_integer(args, 0, scope, name)?;
                let Some(item) = singleton(&input, name)? else {
                    return Ok(Vec::new());
                };
                let high = name == "highBoundary";
                Ok(match item.system() {
                    Item::Integer(i) => {
                        one(decimal_boundary(Decimal::from_int(i), precision, high)
                            .map(Item::Decimal))
                    }
                    Item::Decimal(d) => {
                        one(decimal_boundary(d, precision, high).map(Item::Decimal))
                    }
                    Item::Quantity(q) => one(decimal_boundary(q.value, precision, high)
                        .map(|v| Item::Quantity(Quantity::new(v, q.unit, q.calendar)))),
                    Item::Temporal(t) => {
                        let digits = precision.unwrap_or(match t.kind {
                            TemporalKind::Date => 8,
                            TemporalKind::DateTime => 17,
                            TemporalKind::Time => 9,
                        });
                        one(Temporal::precision_for_digits(t.kind, digits)
                            .and_then(|p| t.boundary(p, high))
                            .map(Item::Temporal))
                    }
                    _ => Vec::new(),
                })
            }
            "precision" => Ok(match singleton(&input, name)?.map(Item::system) {
                Some(Item::Decimal(d)) => vec![Item::Integer(i64::from(d.scale()))],
                Some(Item::Integer(_)) => vec![Item::Integer(0)],
                Some(Item::Temporal(t)) => vec![Item::Integer(t.precision_digits())],
                _ => Vec::new(),
            }),
            _ => Err(FhirPathError::Unsupported(format!("function {name}()"))),
        }
    }

    fn resolve(&self, input: &[Item<'a>]) -> Collection<'a> {
        let mut out = Vec::new();
        for item in input {
            let reference = match item {
                Item::Node(Node {
                    value: Some(Value::Object(map)),
                    ..
                }) => map.get("reference").and_then(Value::as_str),
                other => other.as_str(),
            };
            let Some(reference) = reference else { continue };
            if let Some(id) = reference.strip_prefix('#') {
                if let Some(Value::Array(contained)) = self.root.get("contained") {
                    out.extend(
                        contained
                            .iter()
                            .filter(|c| c.get("id").and_then(Value::as_str) == Some(id))
                            .map(|c| Item::Node(Node::root(c))),
                    );
                }
                continue;
            }
            let root_type = self.root.get("resourceType").and_then(Value::as_str);
            let root_id = self.root.get("id").and_then(Value::as_str);
            if let (Some(t), Some(id)) = (root_type, root_id) {
                if reference == format!("{t}/{id}") || reference.ends_with(&format!("/{t}/{id}")) {
                    out.push(Item::Node(Node::root(self.root)));
                }
            }
        }
        out
    }

    fn sort(
        &self,
        input: Collection<'a>,
        args: &[Expr],
        scope: &Scope<'a, '_>,
    ) -> Result<Collection<'a>, FhirPathError> {
        self.charge(
            input
                .len()
                .saturating_mul(input.len().max(1).ilog2() as usize + 1),
        )?;
        let mut keyed = Vec::with_capacity(input.len());
        for (i, item) in input.into_iter().enumerate() {
            let mut keys = Vec::new();
            if args.is_empty() {
                keys.push((Some(item.system()), false));
            }
            for arg in args {
                let (expr, descending) = match arg {
                    Expr::Negate(inner) => (inner.as_ref(), true),
                    other => (other, false),
                };
                let value = self.eval(expr, &self.item_scope(&item, i, scope))?;
                keys.push((singleton(&value, "sort key")?.map(Item::system), descending));
            }
            keyed.push((keys, item));
        }
        keyed.sort_by(|(a, _), (b, _)| {
            for ((ka, descending), (kb, _)) in a.iter().zip(b) {
                // Empty keys sort first in either direction.
                let ordering = match (ka, kb) {
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) => Ordering::Less,
                    (Some(_), None) => Ordering::Greater,
                    (Some(x), Some(y)) => {
                        let ordering = compare(x, y).ok().flatten().unwrap_or(Ordering::Equal);
                        if *descending {
                            ordering.reverse()
                        } else {
                            ordering
                        }
                    }
                };
                if ordering != Ordering::Equal {
                    return ordering;
                }
            }
            Ordering::Equal
        });
        Ok(keyed.into_iter().map(|(_, item)| item).collect())
    }

    fn conversion(
        &self,
        name: &str,
        input: &[Item<'a>],
        args: &[Expr],
        scope: &Scope<'a, '_>,
    ) -> Result<Collection<'a>, FhirPathError> {
        let Some(item) = singleton(input, name)? else {
            return Ok(Vec::new());
        };
        let converted: Option<Item<'a>> = match name
            .trim_start_matches("convertsTo")
            .trim_start_matches("to")
        {
            "Boolean" => to_boolean_value(item).map(Item::Boolean),
            "Integer" => to_integer_value(item).map(Item::Integer),
            "Decimal" => to_decimal_value(item).map(Item::Decimal),
            "String" => to_string_value(item).map(Item::String),
            "Date" => to_temporal_value(item, TemporalKind::Date).map(Item::Temporal),
            "DateTime" => to_temporal_value(item, TemporalKind::DateTime).map(Item::Temporal),
            "Time" => to_temporal_value(item, TemporalKind::Time).map(Item::Temporal),
            _ => {
                arity(name, args, 0, 1)?;
                let unit = self.arg_string(args, 0, scope, name)?;
                to_quantity_value(item)
                    .filter(|q| {
                        unit.as_deref()
                            .is_none_or(|u| u == q.unit || u == q.canonical_unit())
                    })
                    .map(Item::Quantity)
            }
        };
        if name.starts_with("convertsTo") {
            Ok(boolean(converted.is_some()))
        } else {
            Ok(one(converted))
        }
    }

    fn math(
        &self,
        name: &str,
        input: &[Item<'a>],
        args: &[Expr],
        scope: &Scope<'a, '_>,
    ) -> Result<Collection<'a>, FhirPathError> {
        let Some(item) = singleton(input, name)? else {
            return Ok(Vec::new());
        };
        let item = item.system();
        let not_numeric = || {
            Err(execution(format!(
                "{name}() needs a number, got {}",
                describe(&item)
            )))
        };
        match name {
            "abs" => Ok(vec![match &item {
                Item::Integer(i) => Item::Integer(
                    i.checked_abs()
                        .ok_or_else(|| execution("integer overflow"))?,
                ),
                Item::Decimal(d) => Item::Decimal(d.abs()),
                Item::Quantity(q) => {
                    Item::Quantity(Quantity::new(q.value.abs(), q.unit.clone(), q.calendar))
                }
                _ => return not_numeric(),
            }]),
            "ceiling" | "floor" | "truncate" => match &item {
                Item::Integer(i) => Ok(vec![Item::Integer(*i)]),
                Item::Decimal(d) => Ok(int_from_i128(match name {
                    "ceiling" => d.ceiling(),
                    "floor" => d.floor(),
                    _ => d.truncate(),
                })),
                _ => not_numeric(),
            },
            "round" => {
                arity(name, args, 0, 1)?;
                let places = self.arg_integer(args, 0, scope, name)?.unwrap_or(0);
                let Ok(places) = u32::try_from(places) else {
                    return Err(execution("round() precision must be >= 0"));
                };
                match &item {
                    Item::Integer(i) => {
                        Ok(one(Decimal::from_int(*i).round(places).map(Item::Decimal)))
                    }
                    Item::Decimal(d) => Ok(one(d.round(places).map(Item::Decimal))),
                    _ => not_numeric(),
                }
            }
            "sqrt" => math_f64(&item, f64::sqrt),
            "exp" => math_f64(&item, f64::exp),
            "ln" => math_f64(&item, f64::ln),
            "log" | "power" => {
                arity(name, args, 1, 1)?;
                let Some(argument) = self.arg_single(args, 0, scope, name)? else {
                    return Ok(Vec::new());
                };
                if name == "power" {
                    if let (Item::Integer(base), Item::Integer(exp)) = (&item, &argument) {
                        if let Ok(exp) = u32::try_from(*exp) {
                            return Ok(one(base.checked_pow(exp).map(Item::Integer)));
                        }
                    }
                }
                let exponent = match argument {
                    Item::Integer(i) => i as f64,
                    Item::Decimal(d) => d.to_f64(),
                    other => {
                        return Err(execution(format!(
                            "{name}() needs a number argument, got {}",
                            describe(&other)
                        )))
                    }
                };
                if name == "log" {
                    math_f64(&item, |x| x.ln() / exponent.ln())
                } else {
                    math_f64(&item, |x| x.powf(exponent))
                }
            }
            _ => not_numeric(),
        }
    }

    fn string_function(
        &self,
        name: &str,
        input: &[Item<'a>],
        args: &[Expr],
        scope: &Scope<'a, '_>,
    ) -> Result<Collection<'a>, FhirPathError> {
        let Some(text) = self.string_input(input, name)? else {
            return Ok(Vec::new());
        };
        let string_arg = |i: usize| self.arg_string(args, i, scope, name);
        let result: Option<Item<'a>> = match name {
            "indexOf" => string_arg(0)?.map(|needle| {
                let index = text
                    .find(&needle)
                    .map_or(-1, |byte| text[..byte].chars().count() as i64);
                Item::Integer(index)
            }),
            "substring" => {
                arity(name, args, 1, 2)?;
                let Some(start) = self.arg_integer(args, 0, scope, name)? else {
                    return Ok(Vec::new());
                };
                let length = self.arg_integer(args, 1, scope, name)?;
                let count = text.chars().count() as i64;
                if start < 0 || start >= count {
                    None
                } else {
                    let take = length.unwrap_or(count).max(0);
                    Some(Item::String(
                        text.chars()
                            .skip(start as usize)
                            .take(take as usize)
                            .collect(),
                    ))
                }
            }
            "startsWith" => string_arg(0)?.map(|p| Item::Boolean(text.starts_with(&p))),
            "endsWith" => string_arg(0)?.map(|p| Item::Boolean(text.ends_with(&p))),
            "contains" => string_arg(0)?.map(|p| Item::Boolean(text.contains(&p))),
            "upper" => Some(Item::String(text.to_uppercase())),
            "lower" => Some(Item::String(text.to_lowercase())),
            "length" => Some(Item::Integer(text.chars().count() as i64)),
            "trim" => Some(Item::String(text.trim().to_owned())),
            "toChars" => return Ok(text.chars().map(|c| Item::String(c.to_string())).collect()),
            "split" => {
                let Some(separator) = string_arg(0)? else {
                    return Ok(Vec::new());
                };
                let parts: Vec<_> = if separator.is_empty() {
                    text.chars().map(|c| c.to_string()).collect()
                } else {
                    text.split(separator.as_str()).map(str::to_owned).collect()
                };
                self.charge(parts.len())?;
                return Ok(parts.into_iter().map(Item::String).collect());
            }
            "replace" => {
                let (Some(pattern), Some(substitution)) = (string_arg(0)?, string_arg(1)?) else {
                    return Ok(Vec::new());
                };
                let estimate = text.len().saturating_add(
                    text.len()
                        .saturating_add(1)
                        .saturating_mul(substitution.len()),
                );
                if estimate > crate::eval::MAX_STRING_BYTES * 4 {
                    return Err(FhirPathError::BudgetExceeded);
                }
                Some(checked_string(text.replace(&pattern, &substitution))?)
            }
            "matches" | "matchesFull" => string_arg(0)?
                .map(|pattern| {
                    let pattern = if name == "matchesFull" {
                        format!("^(?:{pattern})$")
                    } else {
                        pattern
                    };
                    self.regex(&pattern)
                        .map(|re| Item::Boolean(re.is_match(&text)))
                })
                .transpose()?,
            "replaceMatches" => {
                let (Some(pattern), Some(substitution)) = (string_arg(0)?, string_arg(1)?) else {
                    return Ok(Vec::new());
                };
                if pattern.is_empty() {
                    Some(Item::String(text))
                } else {
                    let re = self.regex(&pattern)?;
                    Some(checked_string(
                        re.replace_all(&text, substitution.as_str()).into_owned(),
                    )?)
                }
            }
            "encode" | "decode" | "escape" | "unescape" => {
                let Some(format) = string_arg(0)? else {
                    return Ok(Vec::new());
                };
                strings::transcode(name, &format, &text)?.map(Item::String)
            }
            _ => return Err(FhirPathError::Unsupported(format!("function {name}()"))),
        };
        Ok(one(result))
    }
}

/// Every function name the evaluator implements; anything else is rejected when the
/// expression is parsed.
pub(crate) const FUNCTIONS: &[&str] = &[
    "empty",
    "exists",
    "all",
    "allTrue",
    "anyTrue",
    "allFalse",
    "anyFalse",
    "subsetOf",
    "supersetOf",
    "count",
    "distinct",
    "isDistinct",
    "where",
    "select",
    "repeat",
    "ofType",
    "as",
    "is",
    "single",
    "first",
    "last",
    "tail",
    "skip",
    "take",
    "intersect",
    "exclude",
    "union",
    "combine",
    "iif",
    "toBoolean",
    "convertsToBoolean",
    "toInteger",
    "convertsToInteger",
    "toDecimal",
    "convertsToDecimal",
    "toString",
    "convertsToString",
    "toDate",
    "convertsToDate",
    "toDateTime",
    "convertsToDateTime",
    "toTime",
    "convertsToTime",
    "toQuantity",
    "convertsToQuantity",
    "indexOf",
    "substring",
    "startsWith",
    "endsWith",
    "contains",
    "upper",
    "lower",
    "replace",
    "matches",
    "matchesFull",
    "replaceMatches",
    "length",
    "toChars",
    "trim",
    "split",
    "join",
    "encode",
    "decode",
    "escape",
    "unescape",
    "abs",
    "ceiling",
    "exp",
    "floor",
    "ln",
    "log",
    "power",
    "round",
    "sqrt",
    "truncate",
    "children",
    "descendants",
    "trace",
    "now",
    "today",
    "timeOfDay",
    "not",
    "type",
    "aggregate",
    "sort",
    "extension",
    "hasValue",
    "getValue",
    "resolve",
    "lowBoundary",
    "highBoundary",
    "precision",
];

/// Whether a function name is one that needs terminology services or UCUM.
pub(crate) fn is_unsupported(name: &str) -> bool {
    UNSUPPORTED.contains(&name)
}
