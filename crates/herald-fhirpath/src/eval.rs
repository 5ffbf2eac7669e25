//! The evaluator: walks the [`Expr`] tree over collections of [`Item`]s, charging
//! every step to a budget so hostile expressions or inputs cannot run away.

use std::borrow::Cow;
use std::cell::Cell;
use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::decimal::Decimal;
use crate::parser::{BinaryOp, Expr, Literal};
use crate::temporal::{Temporal, TemporalKind};
use crate::types;
use crate::value::{Item, Node, Quantity, TypeSpecifier};
use crate::{Env, FhirPathError};

/// Longest string an evaluation may build.
pub(crate) const MAX_STRING_BYTES: usize = 1 << 20;

pub(crate) type Collection<'a> = Vec<Item<'a>>;

/// Where `%name` variables come from.
#[derive(Clone, Copy)]
pub(crate) enum Variables<'a, 'r> {
    Map(&'a Env),
    List(&'r [(&'r str, &'a Value)]),
}

impl<'a> Variables<'a, '_> {
    fn get(&self, name: &str) -> Option<&'a Value> {
        match self {
            Variables::Map(env) => env.get(name),
            Variables::List(list) => list.iter().find(|(n, _)| *n == name).map(|(_, v)| *v),
        }
    }
}

pub(crate) struct Context<'a, 'r> {
    pub(crate) root: &'a Value,
    env: Variables<'a, 'r>,
    budget: Cell<u64>,
    pub(crate) regexes: &'r HashMap<String, regex::Regex>,
}

/// The focus (`$this`) and iteration variables of the expression being evaluated.
/// The focus is borrowed where it can be (the root, the item `where()` is testing)
/// so that entering a scope does not allocate.
#[derive(Clone)]
pub(crate) struct Scope<'a, 's> {
    pub(crate) focus: Cow<'s, [Item<'a>]>,
    pub(crate) index: Option<i64>,
    pub(crate) total: Option<Collection<'a>>,
}

pub(crate) fn execution(message: impl Into<String>) -> FhirPathError {
    FhirPathError::Execution(message.into())
}

impl<'a, 'r> Context<'a, 'r> {
    pub(crate) fn new(
        root: &'a Value,
        env: Variables<'a, 'r>,
        budget: u64,
        regexes: &'r HashMap<String, regex::Regex>,
    ) -> Self {
        Context {
            root,
            env,
            budget: Cell::new(budget),
            regexes,
        }
    }

    /// Charges `steps` units of work; fails once the budget is spent.
    pub(crate) fn charge(&self, steps: usize) -> Result<(), FhirPathError> {
        let steps = u64::try_from(steps).unwrap_or(u64::MAX);
        match self.budget.get().checked_sub(steps) {
            Some(rest) => {
                self.budget.set(rest);
                Ok(())
            }
            None => {
                self.budget.set(0);
                Err(FhirPathError::BudgetExceeded)
            }
        }
    }

    pub(crate) fn eval(
        &self,
        expr: &Expr,
        scope: &Scope<'a, '_>,
    ) -> Result<Collection<'a>, FhirPathError> {
        self.charge(1)?;
        match expr {
            Expr::Literal(literal) => Ok(vec![literal_item(literal)]),
            Expr::Empty => Ok(Vec::new()),
            Expr::This => Ok(scope.focus.to_vec()),
            Expr::Index => Ok(scope.index.map(Item::Integer).into_iter().collect()),
            Expr::Total => Ok(scope.total.clone().unwrap_or_default()),
            Expr::External(name) => self.external(name),
            Expr::Identifier(name) => {
                let mut out = Vec::new();
                for item in scope.focus.iter() {
                    let before = out.len();
                    self.navigate(item, name, &mut out)?;
                    if out.len() == before && starts_uppercase(name) {
                        if let Item::Node(node) = item {
                            if node
                                .fhir_type()
                                .is_some_and(|t| types::fhir_derives_from(t, name))
                            {
                                out.push(item.clone());
                            }
                        }
                    }
                }
                Ok(out)
            }
            Expr::Member(target, name) => {
                let mut out = Vec::new();
                // `%current.status`: navigate from the variable's value directly
                // rather than through a collection of its root node.
                if let Expr::External(variable) = &**target {
                    if let Some(value) = self.variable(variable) {
                        self.charge(1)?;
                        for root in variable_roots(value) {
                            self.navigate(&Item::Node(Node::root(root)), name, &mut out)?;
                        }
                        return Ok(out);
                    }
                }
                let input = self.eval(target, scope)?;
                for item in &input {
                    self.navigate(item, name, &mut out)?;
                }
                Ok(out)
            }
            Expr::Indexer(target, index) => {
                let input = self.eval(target, scope)?;
                let index = self.eval(index, scope)?;
                let Some(index) = singleton(&index, "indexer")? else {
                    return Ok(Vec::new());
                };
                let Item::Integer(i) = index.system() else {
                    return Err(execution("an indexer must be an integer"));
                };
                Ok(usize::try_from(i)
                    .ok()
                    .and_then(|i| input.get(i).cloned())
                    .into_iter()
                    .collect())
            }
            Expr::Negate(inner) => {
                let value = self.eval(inner, scope)?;
                let Some(item) = singleton(&value, "unary minus")? else {
                    return Ok(Vec::new());
                };
                let negated = match item.system() {
                    Item::Integer(i) => Item::Integer(
                        i.checked_neg()
                            .ok_or_else(|| execution("integer overflow"))?,
                    ),
                    Item::Decimal(d) => Item::Decimal(d.neg()),
                    Item::Quantity(q) => {
                        Item::Quantity(Quantity::new(q.value.neg(), q.unit, q.calendar))
                    }
                    other => return Err(execution(format!("cannot negate {}", describe(&other)))),
                };
                Ok(vec![negated])
            }
            Expr::Binary(op, left, right) => self.binary(*op, left, right, scope),
            Expr::Is(target, spec) => {
                let input = self.eval(target, scope)?;
                match singleton(&input, "is")? {
                    None => Ok(Vec::new()),
                    Some(item) => Ok(vec![Item::Boolean(item_is(item, spec, false)?)]),
                }
            }
            Expr::As(target, spec) => {
                let input = self.eval(target, scope)?;
                let mut out = Vec::new();
                for item in input {
                    if item_is(&item, spec, true)? {
                        out.push(item);
                    }
                }
                Ok(out)
            }
            Expr::Call { target, name, args } => {
                let input = match target {
                    Some(target) => self.eval(target, scope)?,
                    None => scope.focus.to_vec(),
                };
                self.call(name, input, args, scope)
            }
        }
    }

    fn external(&self, name: &str) -> Result<Collection<'a>, FhirPathError> {
        let constant = |s: &str| Ok(vec![Item::String(s.to_owned())]);
        match name {
            "resource" | "rootResource" | "context" => Ok(vec![Item::Node(Node::root(self.root))]),
            "ucum" => constant("http://unitsofmeasure.org"),
            "sct" => constant("http://snomed.info/sct"),
            "loinc" => constant("http://loinc.org"),
            _ => {
                if let Some(value) = self.variable(name) {
                    return Ok(variable_roots(value)
                        .map(|v| Item::Node(Node::root(v)))
                        .collect());
                }
                if let Some(rest) = name.strip_prefix("vs-") {
                    return constant(&format!("http://hl7.org/fhir/ValueSet/{rest}"));
                }
                if let Some(rest) = name.strip_prefix("ext-") {
                    return constant(&format!("http://hl7.org/fhir/StructureDefinition/{rest}"));
                }
                if name == "terminologies" {
                    return Err(FhirPathError::Unsupported(
                        "%terminologies (terminology services)".into(),
                    ));
                }
                Err(execution(format!("unknown variable %{name}")))
            }
        }
    }

    /// The value of environment variable `%name`, unless `name` is one of the
    /// built-in constants, which [`Context::external`] resolves first.
    fn variable(&self, name: &str) -> Option<&'a Value> {
        match name {
            "resource" | "rootResource" | "context" | "ucum" | "sct" | "loinc" => None,
            _ => self.env.get(name),
        }
    }

    /// Appends the children named `name` of `item` to `out`.
    pub(crate) fn navigate(
        &self,
        item: &Item<'a>,
        name: &str,
        out: &mut Collection<'a>,
    ) -> Result<(), FhirPathError> {
        let before = out.len();
        match item {
            Item::Node(node) => match node.value {
                Some(Value::Object(map)) => {
                    if let Some((key, value)) = child(map, name) {
                        // Only primitives carry a `_name` sibling; complex elements
                        // (the common case on paths) skip that second lookup.
                        let extension = if holds_primitives(value) {
                            extension_child(map, name).map(|(_, extension)| extension)
                        } else {
                            None
                        };
                        push_element(out, key, Some(value), extension, None);
                    } else if let Some((key, extension)) = extension_child(map, name) {
                        push_element(out, &key[1..], None, Some(extension), None);
                    } else {
                        for (key, value) in map {
                            let Some(suffix) = key.strip_prefix(name) else {
                                continue;
                            };
                            let Some(hint) = types::choice_type_of(suffix) else {
                                continue;
                            };
                            let extension =
                                extension_child(map, key).map(|(_, extension)| extension);
                            push_element(out, key, Some(value), extension, Some(hint));
                        }
                    }
                }
                _ => {
                    // Primitive: `id` and `extension` live in the `_name` sibling.
                    if let Some(Value::Object(ext)) = node.extension {
                        if let Some((key, value)) = ext.get_key_value(name) {
                            push_element(out, key, Some(value), None, None);
                        }
                    }
                }
            },
            Item::Type(spec) => match name {
                "namespace" => out.extend(spec.namespace.clone().map(Item::String)),
                "name" => out.push(Item::String(spec.name.clone())),
                _ => {}
            },
            _ => {}
        }
        self.charge(out.len() - before)
    }

    fn binary(
        &self,
        op: BinaryOp,
        left: &Expr,
        right: &Expr,
        scope: &Scope<'a, '_>,
    ) -> Result<Collection<'a>, FhirPathError> {
        use BinaryOp::*;
        if matches!(op, And | Or | Xor | Implies) {
            let result = self.logical(op, left, right, scope)?;
            return Ok(result.map(Item::Boolean).into_iter().collect());
        }
        if let (Eq | Ne, Expr::Literal(Literal::String(text))) = (op, right) {
            let result = self.equals_string_literal(op, left, text, scope)?;
            return Ok(result.map(Item::Boolean).into_iter().collect());
        }
        let l = self.eval(left, scope)?;
        let r = self.eval(right, scope)?;
        self.charge(l.len() + r.len())?;
        let boolean = |b: Option<bool>| Ok(b.map(Item::Boolean).into_iter().collect());
        match op {
            Union => {
                let mut out = Vec::new();
                self.union_into(&mut out, l)?;
                self.union_into(&mut out, r)?;
                Ok(out)
            }
            Eq => boolean(collections_equal(&l, &r)),
            Ne => boolean(collections_equal(&l, &r).map(|b| !b)),
            Equiv => boolean(Some(self.collections_equivalent(&l, &r)?)),
            NotEquiv => boolean(Some(!self.collections_equivalent(&l, &r)?)),
            Lt | Gt | Le | Ge => {
                let (Some(a), Some(b)) =
                    (singleton(&l, "comparison")?, singleton(&r, "comparison")?)
                else {
                    return Ok(Vec::new());
                };
                let ordering = compare(a, b)?;
                boolean(ordering.map(|o| match op {
                    Lt => o == Ordering::Less,
                    Gt => o == Ordering::Greater,
                    Le => o != Ordering::Greater,
                    _ => o != Ordering::Less,
                }))
            }
            In | Contains => {
                let (element, collection) = if op == In { (&l, &r) } else { (&r, &l) };
                let Some(element) = singleton(element, "membership test")? else {
                    return Ok(Vec::new());
                };
                let found = collection
                    .iter()
                    .any(|c| item_equal(element, c) == Some(true));
                boolean(Some(found))
            }
            Concat => {
                let text = |c: &Collection<'a>| -> Result<String, FhirPathError> {
                    match singleton(c, "&")? {
                        None => Ok(String::new()),
                        Some(item) => match item.system() {
                            Item::String(s) => Ok(s),
                            other => Err(execution(format!(
                                "& needs strings, got {}",
                                describe(&other)
                            ))),
                        },
                    }
                };
                let joined = text(&l)? + &text(&r)?;
                Ok(vec![checked_string(joined)?])
            }
            _ => {
                let (Some(a), Some(b)) =
                    (singleton(&l, "arithmetic")?, singleton(&r, "arithmetic")?)
                else {
                    return Ok(Vec::new());
                };
                arithmetic(op, a.system(), b.system()).map(|o| o.into_iter().collect())
            }
        }
    }

    /// `left = 'text'` / `left != 'text'`: the common criteria shape, evaluated as the
    /// general case would (same result, same steps charged) without building the
    /// literal's collection or copying its text.
    fn equals_string_literal(
        &self,
        op: BinaryOp,
        left: &Expr,
        text: &str,
        scope: &Scope<'a, '_>,
    ) -> Result<Option<bool>, FhirPathError> {
        let l = self.eval(left, scope)?;
        // The step the literal's own evaluation would have taken.
        self.charge(1)?;
        self.charge(l.len() + 1)?;
        let equal = match l.as_slice() {
            [] => None,
            [item] => match item.system_str() {
                Some(s) => Some(s == text),
                None => item_equal(item, &Item::String(text.to_owned())),
            },
            _ => Some(false),
        };
        Ok(if op == BinaryOp::Ne {
            equal.map(|b| !b)
        } else {
            equal
        })
    }

    /// Evaluates `expr` and applies singleton evaluation as a boolean (as
    /// [`to_boolean`] on [`Context::eval`]'s result), computing logical operators and
    /// string-literal equality directly rather than through one-item collections.
    pub(crate) fn eval_boolean(
        &self,
        expr: &Expr,
        scope: &Scope<'a, '_>,
        what: &str,
    ) -> Result<Option<bool>, FhirPathError> {
        match expr {
            Expr::Binary(
                op @ (BinaryOp::And | BinaryOp::Or | BinaryOp::Xor | BinaryOp::Implies),
                left,
                right,
            ) => {
                self.charge(1)?;
                self.logical(*op, left, right, scope)
            }
            Expr::Binary(op @ (BinaryOp::Eq | BinaryOp::Ne), left, right) => match &**right {
                Expr::Literal(Literal::String(text)) => {
                    self.charge(1)?;
                    self.equals_string_literal(*op, left, text, scope)
                }
                _ => to_boolean(&self.eval(expr, scope)?, what),
            },
            // `….exists()`: the answer without a one-item collection (the same
            // steps as `call` charges).
            Expr::Call {
                target: Some(target),
                name,
                args,
            } if name == "exists" && args.is_empty() => {
                self.charge(1)?;
                let input = self.eval(target, scope)?;
                self.charge(input.len())?;
                Ok(Some(!input.is_empty()))
            }
            _ => to_boolean(&self.eval(expr, scope)?, what),
        }
    }

    /// `and`, `or`, `xor`, `implies` with three-valued logic.
    fn logical(
        &self,
        op: BinaryOp,
        left: &Expr,
        right: &Expr,
        scope: &Scope<'a, '_>,
    ) -> Result<Option<bool>, FhirPathError> {
        use BinaryOp::*;
        let l = self.eval_boolean(left, scope, "left operand")?;
        // Short-circuit where the result no longer depends on the right side.
        let shortcut = match (op, l) {
            (And, Some(false)) => Some(false),
            (Or, Some(true)) => Some(true),
            (Implies, Some(false)) => Some(true),
            _ => None,
        };
        if let Some(result) = shortcut {
            return Ok(Some(result));
        }
        let r = self.eval_boolean(right, scope, "right operand")?;
        Ok(match op {
            And => match (l, r) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            Or => match (l, r) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            Xor => match (l, r) {
                (Some(a), Some(b)) => Some(a != b),
                _ => None,
            },
            _ => match (l, r) {
                (Some(true), r) => r,
                (None, Some(true)) => Some(true),
                _ => None,
            },
        })
    }

    /// Appends items of `items` not already in `out` (FHIRPath `union`).
    pub(crate) fn union_into(
        &self,
        out: &mut Collection<'a>,
        items: Collection<'a>,
    ) -> Result<(), FhirPathError> {
        for item in items {
            self.charge(out.len())?;
            if !out.iter().any(|o| item_equal(o, &item) == Some(true)) {
                out.push(item);
            }
        }
        Ok(())
    }

    pub(crate) fn collections_equivalent(
        &self,
        l: &[Item<'a>],
        r: &[Item<'a>],
    ) -> Result<bool, FhirPathError> {
        if l.len() != r.len() {
            return Ok(false);
        }
        self.charge(l.len() * r.len())?;
        let mut used = vec![false; r.len()];
        for a in l {
            let Some(slot) = (0..r.len()).find(|&j| !used[j] && item_equivalent(a, &r[j])) else {
                return Ok(false);
            };
            used[slot] = true;
        }
        Ok(true)
    }
}

/// The items an environment variable binds: none for `null`, each item of an
/// array, else the value itself.
fn variable_roots(value: &Value) -> std::slice::Iter<'_, Value> {
    match value {
        Value::Null => [].iter(),
        Value::Array(items) => items.iter(),
        other => std::slice::from_ref(other).iter(),
    }
}

/// Whether a JSON property value can pair with a `_name` primitive-extension
/// sibling: anything but an object or an array of objects (whose items `push_element`
/// never pairs with an extension).
fn holds_primitives(value: &Value) -> bool {
    match value {
        Value::Object(_) => false,
        Value::Array(items) => !items.iter().all(Value::is_object),
        _ => true,
    }
}

/// Objects with at most this many properties are searched by a linear scan, which
/// for the small objects FHIR resources are made of costs less than hashing the
/// name (serde_json's map hashes with SipHash).
const LINEAR_SCAN_PROPERTIES: usize = 16;

/// The property `name` of `map` (`Map::get_key_value`, scanning small objects).
fn child<'m>(map: &'m Map<String, Value>, name: &str) -> Option<(&'m String, &'m Value)> {
    if map.len() <= LINEAR_SCAN_PROPERTIES {
        map.iter().find(|(key, _)| key.as_str() == name)
    } else {
        map.get_key_value(name)
    }
}

/// The `_name` primitive-extension sibling of property `name` (see [`child`]).
fn extension_child<'m>(map: &'m Map<String, Value>, name: &str) -> Option<(&'m String, &'m Value)> {
    if map.len() <= LINEAR_SCAN_PROPERTIES {
        map.iter()
            .find(|(key, _)| key.len() == name.len() + 1 && key.strip_prefix('_') == Some(name))
    } else {
        with_extension_key(name, |key| map.get_key_value(key))
    }
}

/// Calls `lookup` with `_name`, built on the stack for ordinary element names so
/// that navigation does not allocate per step.
fn with_extension_key<T>(name: &str, lookup: impl FnOnce(&str) -> T) -> T {
    const INLINE: usize = 64;
    if name.len() < INLINE {
        let mut buffer = [0u8; INLINE];
        buffer[0] = b'_';
        buffer[1..=name.len()].copy_from_slice(name.as_bytes());
        if let Ok(key) = std::str::from_utf8(&buffer[..=name.len()]) {
            return lookup(key);
        }
    }
    lookup(&format!("_{name}"))
}

fn starts_uppercase(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
}

/// Appends the node(s) of one JSON property, flattening arrays and pairing each
/// primitive with its `_name` extension sibling.
pub(crate) fn push_element<'a>(
    out: &mut Collection<'a>,
    name: &'a str,
    value: Option<&'a Value>,
    extension: Option<&'a Value>,
    hint: Option<&'a str>,
) {
    let node = |value: Option<&'a Value>, extension: Option<&'a Value>| {
        Item::Node(Node {
            value,
            extension,
            name,
            type_hint: hint,
        })
    };
    match value {
        Some(Value::Array(items)) => {
            let extensions = extension.and_then(Value::as_array);
            for (i, v) in items.iter().enumerate() {
                let ext = extensions.and_then(|e| e.get(i)).filter(|e| !e.is_null());
                if v.is_null() && ext.is_none() {
                    continue;
                }
                out.push(node((!v.is_null()).then_some(v), ext));
            }
        }
        Some(Value::Null) | None => match extension {
            Some(Value::Array(exts)) => {
                out.extend(
                    exts.iter()
                        .filter(|e| !e.is_null())
                        .map(|e| node(None, Some(e))),
                );
            }
            Some(ext) if !ext.is_null() => out.push(node(None, Some(ext))),
            _ => {}
        },
        Some(v) => out.push(node(Some(v), extension)),
    }
}

pub(crate) fn literal_item<'a>(literal: &Literal) -> Item<'a> {
    match literal {
        Literal::Boolean(b) => Item::Boolean(*b),
        Literal::Integer(i) => Item::Integer(*i),
        Literal::Decimal(d) => Item::Decimal(*d),
        Literal::String(s) => Item::String(s.clone()),
        Literal::Temporal(t) => Item::Temporal(*t),
        Literal::Quantity(q) => Item::Quantity(q.clone()),
    }
}

pub(crate) fn describe(item: &Item<'_>) -> String {
    match item.type_name() {
        Some((ns, name)) => format!("{ns}.{name}"),
        None => "an element of unknown type".into(),
    }
}

pub(crate) fn checked_string<'a>(s: String) -> Result<Item<'a>, FhirPathError> {
    if s.len() > MAX_STRING_BYTES {
        return Err(FhirPathError::BudgetExceeded);
    }
    Ok(Item::String(s))
}

/// The single item of a collection; `None` when empty; an error when several.
pub(crate) fn singleton<'c, 'a>(
    items: &'c [Item<'a>],
    what: &str,
) -> Result<Option<&'c Item<'a>>, FhirPathError> {
    match items {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(execution(format!(
            "{what} needs a single item, got {}",
            items.len()
        ))),
    }
}

/// FHIRPath singleton evaluation of a collection as a boolean.
pub(crate) fn to_boolean(items: &[Item<'_>], what: &str) -> Result<Option<bool>, FhirPathError> {
    match singleton(items, what)? {
        None => Ok(None),
        Some(item) => match item.system() {
            Item::Boolean(b) => Ok(Some(b)),
            _ => Ok(Some(true)),
        },
    }
}

/// Whether `item` is of the type named by `spec`; `exact` for `as`/`ofType`.
pub(crate) fn item_is(
    item: &Item<'_>,
    spec: &TypeSpecifier,
    exact: bool,
) -> Result<bool, FhirPathError> {
    let name = spec.name.as_str();
    if !types::is_known(None, name) {
        return Err(execution(format!("unknown type '{name}'")));
    }
    let Some((namespace, actual)) = item.type_name() else {
        return Ok(false);
    };
    if spec.namespace.as_deref().is_some_and(|ns| ns != namespace) {
        return Ok(false);
    }
    if namespace == "System" {
        return Ok(actual == name);
    }
    if exact {
        let resource_base = matches!(name, "Resource" | "DomainResource");
        Ok(actual == name
            || ((name == "Quantity" || resource_base) && types::fhir_derives_from(&actual, name)))
    } else {
        Ok(types::fhir_derives_from(&actual, name))
    }
}

fn temporal_from_str(text: &str, kind: TemporalKind) -> Option<Temporal> {
    match kind {
        TemporalKind::Date => Temporal::parse_date(text).or_else(|| Temporal::parse_datetime(text)),
        TemporalKind::DateTime => Temporal::parse_datetime(text),
        TemporalKind::Time => Temporal::parse_time(text),
    }
}

fn numeric(item: &Item<'_>) -> Option<Decimal> {
    match item {
        Item::Integer(i) => Some(Decimal::from_int(*i)),
        Item::Decimal(d) => Some(*d),
        _ => None,
    }
}

/// FHIRPath `=` on two items: `None` when the answer is unknown (precision).
pub(crate) fn item_equal(a: &Item<'_>, b: &Item<'_>) -> Option<bool> {
    // Two strings compare without copying either into a System value.
    if let (Some(x), Some(y)) = (a.system_str(), b.system_str()) {
        return Some(x == y);
    }
    let (a, b) = (a.system(), b.system());
    match (&a, &b) {
        (Item::Integer(x), Item::Integer(y)) => Some(x == y),
        (Item::Boolean(x), Item::Boolean(y)) => Some(x == y),
        (Item::String(x), Item::String(y)) => Some(x == y),
        (Item::Temporal(x), Item::Temporal(y)) => temporal_equal(x, y),
        (Item::String(s), Item::Temporal(t)) | (Item::Temporal(t), Item::String(s)) => {
            temporal_from_str(s, t.kind).map_or(Some(false), |parsed| temporal_equal(&parsed, t))
        }
        (Item::Quantity(x), Item::Quantity(y)) => quantity_compare(x, y)
            .map(|o| o == Ordering::Equal)
            .or_else(|| {
                if uncertain_units(x, y) {
                    None
                } else {
                    Some(false)
                }
            }),
        (Item::Node(x), Item::Node(y)) => Some(x.value == y.value && x.value.is_some()),
        (Item::Type(x), Item::Type(y)) => Some(x == y),
        _ => match (numeric(&a), numeric(&b)) {
            (Some(x), Some(y)) => Some(x == y),
            _ => Some(false),
        },
    }
}

fn temporal_equal(a: &Temporal, b: &Temporal) -> Option<bool> {
    if (a.kind == TemporalKind::Time) != (b.kind == TemporalKind::Time) {
        return Some(false);
    }
    a.partial_compare(b).map(|o| o == Ordering::Equal)
}

fn uncertain_units(a: &Quantity, b: &Quantity) -> bool {
    let pair = (a.canonical_unit(), b.canonical_unit());
    matches!(
        pair,
        ("year", "a") | ("a", "year") | ("month", "mo") | ("mo", "month")
    )
}

/// Same (canonical) unit: compares values; different units: `None` (no UCUM
/// conversion).
fn quantity_compare(a: &Quantity, b: &Quantity) -> Option<Ordering> {
    (a.canonical_unit() == b.canonical_unit()).then(|| a.value.cmp(&b.value))
}

fn normalize_text(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// FHIRPath `~` on two items.
pub(crate) fn item_equivalent(a: &Item<'_>, b: &Item<'_>) -> bool {
    let (a, b) = (a.system(), b.system());
    match (&a, &b) {
        (Item::String(x), Item::String(y)) => normalize_text(x) == normalize_text(y),
        (Item::Temporal(x), Item::Temporal(y)) => x.equivalent(y),
        (Item::String(s), Item::Temporal(t)) | (Item::Temporal(t), Item::String(s)) => {
            temporal_from_str(s, t.kind).is_some_and(|parsed| parsed.equivalent(t))
        }
        (Item::Quantity(x), Item::Quantity(y)) => {
            x.canonical_unit() == y.canonical_unit() && decimal_equivalent(x.value, y.value)
        }
        (Item::Node(x), Item::Node(y)) => x.value == y.value,
        _ => match (numeric(&a), numeric(&b)) {
            (Some(x), Some(y)) => decimal_equivalent(x, y),
            _ => item_equal(&a, &b) == Some(true),
        },
    }
}

fn decimal_equivalent(x: Decimal, y: Decimal) -> bool {
    let places = x.scale().min(y.scale());
    match (x.round(places), y.round(places)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// FHIRPath `=` on collections.
pub(crate) fn collections_equal(l: &[Item<'_>], r: &[Item<'_>]) -> Option<bool> {
    if l.is_empty() || r.is_empty() {
        return None;
    }
    if l.len() != r.len() {
        return Some(false);
    }
    let mut unknown = false;
    for (a, b) in l.iter().zip(r) {
        match item_equal(a, b) {
            Some(false) => return Some(false),
            None => unknown = true,
            Some(true) => {}
        }
    }
    if unknown {
        None
    } else {
        Some(true)
    }
}

/// Ordering of two items for `<`, `>`...; `Ok(None)` when unknown; an error when the
/// types cannot be compared.
pub(crate) fn compare(a: &Item<'_>, b: &Item<'_>) -> Result<Option<Ordering>, FhirPathError> {
    let (a, b) = (a.system(), b.system());
    let mismatch = || {
        Err(execution(format!(
            "cannot compare {} with {}",
            describe(&a),
            describe(&b)
        )))
    };
    match (&a, &b) {
        (Item::String(x), Item::String(y)) => Ok(Some(x.cmp(y))),
        (Item::Temporal(x), Item::Temporal(y)) => {
            if (x.kind == TemporalKind::Time) != (y.kind == TemporalKind::Time) {
                return mismatch();
            }
            Ok(x.partial_compare(y))
        }
        (Item::String(s), Item::Temporal(t)) => match temporal_from_str(s, t.kind) {
            Some(parsed) => Ok(parsed.partial_compare(t)),
            None => mismatch(),
        },
        (Item::Temporal(t), Item::String(s)) => match temporal_from_str(s, t.kind) {
            Some(parsed) => Ok(t.partial_compare(&parsed)),
            None => mismatch(),
        },
        (Item::Quantity(x), Item::Quantity(y)) => Ok(quantity_compare(x, y)),
        _ => match (numeric(&a), numeric(&b)) {
            (Some(x), Some(y)) => Ok(Some(x.cmp(&y))),
            _ => mismatch(),
        },
    }
}

fn int_result<'a>(value: Option<i64>) -> Result<Option<Item<'a>>, FhirPathError> {
    value
        .map(|v| Some(Item::Integer(v)))
        .ok_or_else(|| execution("integer overflow"))
}

fn arithmetic<'a>(
    op: BinaryOp,
    a: Item<'a>,
    b: Item<'a>,
) -> Result<Option<Item<'a>>, FhirPathError> {
    use BinaryOp::*;
    let mismatch = || {
        Err(execution(format!(
            "cannot apply {op:?} to {} and {}",
            describe(&a),
            describe(&b)
        )))
    };
    match (&a, &b) {
        (Item::Integer(x), Item::Integer(y)) => match op {
            Add => int_result(x.checked_add(*y)),
            Sub => int_result(x.checked_sub(*y)),
            Mul => int_result(x.checked_mul(*y)),
            Div => Ok(Decimal::from_int(*x)
                .checked_div(Decimal::from_int(*y))
                .map(Item::Decimal)),
            IntDiv => Ok(x.checked_div(*y).map(Item::Integer)),
            Mod => Ok(x.checked_rem(*y).map(Item::Integer)),
            _ => mismatch(),
        },
        (Item::String(x), Item::String(y)) if op == Add => {
            Ok(Some(checked_string(format!("{x}{y}"))?))
        }
        (Item::Temporal(t), Item::Quantity(q)) if matches!(op, Add | Sub) => {
            let Some(unit) = q.calendar_unit() else {
                return Err(execution(format!("cannot add '{}' to a date/time", q.unit)));
            };
            let amount = i64::try_from(q.value.truncate().unwrap_or(0))
                .map_err(|_| execution("quantity too large"))?;
            let amount = if op == Sub { -amount } else { amount };
            Ok(t.add(amount, unit).map(Item::Temporal))
        }
        (Item::Quantity(x), Item::Quantity(y)) if matches!(op, Add | Sub) => {
            if x.canonical_unit() != y.canonical_unit() {
                return Ok(None);
            }
            let value = if op == Add {
                x.value.checked_add(y.value)
            } else {
                x.value.checked_sub(y.value)
            };
            Ok(value.map(|v| Item::Quantity(Quantity::new(v, x.unit.clone(), x.calendar))))
        }
        (Item::Quantity(q), other) | (other, Item::Quantity(q))
            if op == Mul && numeric(other).is_some() =>
        {
            let factor = numeric(other).unwrap_or(Decimal::from_int(1));
            Ok(q.value
                .checked_mul(factor)
                .map(|v| Item::Quantity(Quantity::new(v, q.unit.clone(), q.calendar))))
        }
        (Item::Quantity(q), other) if op == Div && numeric(other).is_some() => {
            let divisor = numeric(other).unwrap_or(Decimal::from_int(1));
            Ok(q.value
                .checked_div(divisor)
                .map(|v| Item::Quantity(Quantity::new(v, q.unit.clone(), q.calendar))))
        }
        _ => {
            let (Some(x), Some(y)) = (numeric(&a), numeric(&b)) else {
                return mismatch();
            };
            Ok(match op {
                Add => x.checked_add(y).map(Item::Decimal),
                Sub => x.checked_sub(y).map(Item::Decimal),
                Mul => x.checked_mul(y).map(Item::Decimal),
                Div => x.checked_div(y).map(Item::Decimal),
                IntDiv => x
                    .checked_div_int(y)
                    .and_then(|d| i64::try_from(d.mantissa()).ok())
                    .map(Item::Integer),
                Mod => x.checked_rem(y).map(Item::Decimal),
                _ => return mismatch(),
            })
        }
    }
}
