//! CEL (Common Expression Language) filters over change events, evaluated with the
//! pinned `cel` crate. A filter sees `current` and `previous` (the resource after and
//! before the change, `null` when absent) and `event` (a map describing the change).
//!
//! The `cel` crate has no evaluation step budget, and its generated parser recurses
//! on nesting, so cost and depth are bounded here before and after parsing:
//! - source length ≤ [`CelFilter::MAX_BYTES`];
//! - bracket nesting (`(`, `[`, `{`) and chained `?:` ≤ [`CelFilter::MAX_NESTING`],
//!   counted on the text (outside string literals) *before* the parser sees it;
//! - parsed tree depth ≤ [`CelFilter::MAX_TREE_DEPTH`] (so evaluation, which also
//!   recurses, stays shallow: `a.b.c…` or `1 + 1 + …` chains count);
//! - at most [`CelFilter::MAX_NESTED_COMPREHENSIONS`] nested macros (`all`, `exists`,
//!   `exists_one`, `map`, `filter`), so evaluation is at worst quadratic in the size
//!   of the lists in the resource — CEL has no other loops.
//!
//! A result that is not a boolean, or an evaluation error, is "no match" (fail closed).

use std::sync::{Arc, OnceLock};

use cel::common::ast::{CallExpr, EntryExpr, Expr, IdedExpr, LiteralValue};
use serde_json::Value;

use crate::error::{err, CriteriaError};

/// A compiled CEL filter.
#[derive(Clone)]
pub struct CelFilter {
    source: Arc<str>,
    program: Arc<cel::Program>,
    /// What the expression reads of `current` and `previous`.
    reads: Arc<Reads>,
}

/// The top-level fields of `current` / `previous` an expression reads, when it reads
/// them only by field selection (`current.status`, `has(current.code)`); `None` when it
/// uses the whole value (`current == previous`, `size(current)`, a macro over it, a
/// macro variable of the same name). Converting a resource to a CEL value costs far
/// more than evaluating a typical filter, so only those fields are converted; the
/// result is the same because nothing else of the value is reachable. A comparison
/// with the `null` literal (`previous == null`) only tests presence, which the
/// projection keeps (an absent resource is `null`, a present one a map), so it does not
/// count as a use of the whole value. `event` is bound only when the expression names it.
#[derive(Debug, Default)]
struct Reads {
    current: Option<Vec<String>>,
    previous: Option<Vec<String>>,
    event: bool,
}

/// The identifier `x` of a call `x == null` or `x != null` (either side).
fn null_test_operand(call: &CallExpr) -> Option<&str> {
    if call.target.is_some() || !matches!(call.func_name.as_str(), "_==_" | "_!=_") {
        return None;
    }
    match call.args.as_slice() {
        [IdedExpr {
            expr: Expr::Ident(name),
            ..
        }, IdedExpr {
            expr: Expr::Literal(LiteralValue::Null),
            ..
        }]
        | [IdedExpr {
            expr: Expr::Literal(LiteralValue::Null),
            ..
        }, IdedExpr {
            expr: Expr::Ident(name),
            ..
        }] => Some(name),
        _ => None,
    }
}

impl Reads {
    fn of(root: &IdedExpr) -> Reads {
        let mut fields: [Option<Vec<String>>; 2] = [Some(Vec::new()), Some(Vec::new())];
        let slot = |name: &str| match name {
            "current" => Some(0),
            "previous" => Some(1),
            _ => None,
        };
        let mut event = false;
        let mut stack: Vec<&IdedExpr> = vec![root];
        while let Some(node) = stack.pop() {
            match &node.expr {
                Expr::Select(select) => match &select.operand.expr {
                    Expr::Ident(name) => {
                        event |= name == "event";
                        if let Some(i) = slot(name) {
                            if let Some(list) = &mut fields[i] {
                                if !list.contains(&select.field) {
                                    list.push(select.field.clone());
                                }
                            }
                        }
                    }
                    _ => stack.push(&select.operand),
                },
                Expr::Ident(name) => {
                    event |= name == "event";
                    if let Some(i) = slot(name) {
                        fields[i] = None;
                    }
                }
                Expr::Call(call) if null_test_operand(call).is_some_and(|n| slot(n).is_some()) => {}
                Expr::Call(call) => {
                    stack.extend(call.target.iter().map(|t| t.as_ref()));
                    stack.extend(call.args.iter());
                }
                Expr::Comprehension(c) => {
                    let declared = [Some(&c.iter_var), c.iter_var2.as_ref(), Some(&c.accu_var)];
                    for name in declared.into_iter().flatten() {
                        if let Some(i) = slot(name) {
                            fields[i] = None;
                        }
                    }
                    stack.extend([
                        &c.iter_range,
                        &c.accu_init,
                        &c.loop_cond,
                        &c.loop_step,
                        &c.result,
                    ]);
                }
                Expr::List(list) => stack.extend(list.elements.iter()),
                Expr::Map(map) => {
                    for entry in &map.entries {
                        if let EntryExpr::MapEntry(e) = &entry.expr {
                            stack.extend([&e.key, &e.value]);
                        }
                    }
                }
                Expr::Struct(s) => {
                    for entry in &s.entries {
                        match &entry.expr {
                            EntryExpr::StructField(f) => stack.push(&f.value),
                            EntryExpr::MapEntry(e) => stack.extend([&e.key, &e.value]),
                        }
                    }
                }
                Expr::Unspecified | Expr::Literal(_) => {}
            }
        }
        let [current, previous] = fields;
        Reads {
            current,
            previous,
            event,
        }
    }
}

/// `value` as a CEL value, converting only `fields` of an object when they are known.
fn to_cel(value: Option<&Value>, fields: Option<&[String]>) -> Option<cel::Value> {
    match (value, fields) {
        (None, _) => Some(cel::Value::Null),
        (Some(Value::Object(object)), Some(fields)) => {
            let projected: serde_json::Map<String, Value> = fields
                .iter()
                .filter_map(|f| object.get(f).map(|v| (f.clone(), v.clone())))
                .collect();
            cel::to_value(Value::Object(projected)).ok()
        }
        (Some(v), _) => cel::to_value(v).ok(),
    }
}

impl std::fmt::Debug for CelFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CelFilter")
            .field("source", &self.source)
            .finish()
    }
}

fn stdlib() -> &'static Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(cel::Env::stdlib()))
}

/// Deepest bracket / conditional nesting in `source`, skipping string literals.
fn text_nesting(source: &str) -> usize {
    let bytes = source.as_bytes();
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut conditionals = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'"' | b'\'') => {
                let triple = bytes.get(i..i + 3) == Some(&[quote, quote, quote][..]);
                i += if triple { 3 } else { 1 };
                while i < bytes.len() {
                    if bytes[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if triple {
                        if bytes.get(i..i + 3) == Some(&[quote, quote, quote][..]) {
                            i += 3;
                            break;
                        }
                    } else if bytes[i] == quote || bytes[i] == b'\n' {
                        i += 1;
                        break;
                    }
                    i += 1;
                }
                continue;
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth + conditionals);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'?' => {
                conditionals += 1;
                deepest = deepest.max(depth + conditionals);
            }
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// Depth of the parsed tree and deepest comprehension nesting, walked without
/// recursion.
fn tree_shape(root: &IdedExpr) -> (usize, usize) {
    let mut stack: Vec<(&IdedExpr, usize, usize)> = vec![(root, 1, 0)];
    let (mut deepest, mut most_comprehensions) = (0, 0);
    while let Some((node, depth, comprehensions)) = stack.pop() {
        deepest = deepest.max(depth);
        most_comprehensions = most_comprehensions.max(comprehensions);
        let next = depth + 1;
        match &node.expr {
            Expr::Call(call) => {
                stack.extend(
                    call.target
                        .iter()
                        .map(|t| (t.as_ref(), next, comprehensions)),
                );
                stack.extend(call.args.iter().map(|a| (a, next, comprehensions)));
            }
            Expr::Comprehension(c) => {
                let inner = comprehensions + 1;
                stack.push((&c.iter_range, next, comprehensions));
                stack.push((&c.accu_init, next, comprehensions));
                stack.push((&c.loop_cond, next, inner));
                stack.push((&c.loop_step, next, inner));
                stack.push((&c.result, next, comprehensions));
            }
            Expr::List(list) => {
                stack.extend(list.elements.iter().map(|e| (e, next, comprehensions)))
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(e) = &entry.expr {
                        stack.push((&e.key, next, comprehensions));
                        stack.push((&e.value, next, comprehensions));
                    }
                }
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    match &entry.expr {
                        EntryExpr::StructField(f) => stack.push((&f.value, next, comprehensions)),
                        EntryExpr::MapEntry(e) => {
                            stack.push((&e.key, next, comprehensions));
                            stack.push((&e.value, next, comprehensions));
                        }
                    }
                }
            }
            Expr::Select(select) => stack.push((&select.operand, next, comprehensions)),
            Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
        }
    }
    (deepest, most_comprehensions)
}

/// Stack for the parser thread. The generated ANTLR parser descends ~10 grammar
/// rules per nesting level with large frames: on a 2 MiB stack an unoptimised build
/// overflows at about 12 nested parentheses. Compiling happens once per filter
/// (subscription or topic registration), so a short-lived thread is cheap.
const PARSER_STACK_BYTES: usize = 64 << 20;

fn compile_on_large_stack(source: &str) -> Result<cel::Program, CriteriaError> {
    let owned = source.to_owned();
    let parser = std::thread::Builder::new()
        .name("cel-compile".into())
        .stack_size(PARSER_STACK_BYTES)
        .spawn(move || stdlib().compile(&owned).map_err(|e| e.to_string()))
        .map_err(|e| CriteriaError::new(format!("cannot start the CEL parser: {e}")))?;
    match parser.join() {
        Ok(Ok(program)) => Ok(program),
        Ok(Err(message)) => err(format!("CEL syntax error: {message}")),
        Err(_) => err("CEL parser failed on this expression"),
    }
}

impl CelFilter {
    /// Longest CEL source accepted, in bytes.
    pub const MAX_BYTES: usize = 4 * 1024;
    /// Deepest bracket / conditional nesting accepted in the source text.
    pub const MAX_NESTING: usize = 32;
    /// Deepest parsed tree accepted (macros expand to a few levels each).
    pub const MAX_TREE_DEPTH: usize = 64;
    /// Most comprehension macros nested inside one another.
    pub const MAX_NESTED_COMPREHENSIONS: usize = 2;

    /// Compiles a CEL expression within the bounds above.
    pub fn compile(source: &str) -> Result<CelFilter, CriteriaError> {
        if source.trim().is_empty() {
            return err("CEL expression is empty");
        }
        if source.len() > Self::MAX_BYTES {
            return err(format!(
                "CEL expression is {} bytes, the limit is {}",
                source.len(),
                Self::MAX_BYTES
            ));
        }
        if text_nesting(source) > Self::MAX_NESTING {
            return err(format!(
                "CEL expression nests deeper than {} levels",
                Self::MAX_NESTING
            ));
        }
        let program = compile_on_large_stack(source)?;
        let (depth, comprehensions) = tree_shape(program.expression());
        if depth > Self::MAX_TREE_DEPTH {
            return err(format!(
                "CEL expression is too deep ({depth} levels, the limit is {})",
                Self::MAX_TREE_DEPTH
            ));
        }
        if comprehensions > Self::MAX_NESTED_COMPREHENSIONS {
            return err(format!(
                "CEL expression nests {comprehensions} list macros (all/exists/map/filter), the limit is {}",
                Self::MAX_NESTED_COMPREHENSIONS
            ));
        }
        let reads = Reads::of(program.expression());
        Ok(CelFilter {
            source: source.into(),
            program: Arc::new(program),
            reads: Arc::new(reads),
        })
    }

    /// The expression as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the filter evaluates to `true` with `current`, `previous` (`null`
    /// when absent) and `event` bound. Errors and non-boolean results are `false`.
    pub fn matches(
        &self,
        current: Option<&Value>,
        previous: Option<&Value>,
        event: &Value,
    ) -> bool {
        matches!(
            self.execute(current, previous, event),
            Ok(cel::Value::Bool(true))
        )
    }

    /// The expression's result, or why there is none, as text (for
    /// [`explain`](crate::explain)).
    pub(crate) fn describe_result(
        &self,
        current: Option<&Value>,
        previous: Option<&Value>,
        event: &Value,
    ) -> Result<String, String> {
        match self.execute(current, previous, event) {
            Ok(cel::Value::Bool(b)) => Ok(b.to_string()),
            Ok(cel::Value::Null) => Ok("null".to_owned()),
            Ok(cel::Value::String(s)) => Ok(format!("'{s}'")),
            Ok(cel::Value::Int(i)) => Ok(i.to_string()),
            Ok(cel::Value::UInt(u)) => Ok(u.to_string()),
            Ok(cel::Value::Float(f)) => Ok(f.to_string()),
            Ok(other) => Ok(format!("{other:?}")),
            Err(CelFailure::Conversion) => Err("a resource could not be converted to CEL".into()),
            Err(CelFailure::Execution(e)) => Err(e.to_string()),
        }
    }

    fn execute(
        &self,
        current: Option<&Value>,
        previous: Option<&Value>,
        event: &Value,
    ) -> Result<cel::Value, CelFailure> {
        let (Some(current), Some(previous)) = (
            to_cel(current, self.reads.current.as_deref()),
            to_cel(previous, self.reads.previous.as_deref()),
        ) else {
            return Err(CelFailure::Conversion);
        };
        let mut context = cel::Context::with_env(Arc::clone(stdlib()));
        context.add_variable_from_value("current", current);
        context.add_variable_from_value("previous", previous);
        if self.reads.event {
            let Some(event) = to_cel(Some(event), None) else {
                return Err(CelFailure::Conversion);
            };
            context.add_variable_from_value("event", event);
        }
        self.program
            .execute(&context)
            .map_err(CelFailure::Execution)
    }
}

/// Why a CEL filter produced no value.
enum CelFailure {
    /// A bound value could not be converted to a CEL value.
    Conversion,
    Execution(cel::ExecutionError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_selected_fields_unless_the_whole_value_is_used() {
        let reads = |source: &str| {
            let filter = CelFilter::compile(source).expect("compiles");
            (filter.reads.current.clone(), filter.reads.previous.clone())
        };
        assert_eq!(
            reads("current.status == 'a' && (previous == null || previous.status != 'a')"),
            (
                Some(vec!["status".to_owned()]),
                Some(vec!["status".to_owned()])
            )
        );
        assert_eq!(reads("null != current").0, Some(vec![]));
        assert_eq!(reads("previous == current").1, None);
        let order = CelFilter::compile(
            "current.status == 'active' && (previous == null || previous.status != 'active')",
        )
        .expect("compiles");
        let active = serde_json::json!({"status": "active", "id": "1"});
        let held = serde_json::json!({"status": "on-hold", "id": "1"});
        let event = serde_json::json!({});
        assert!(order.matches(Some(&active), None, &event));
        assert!(order.matches(Some(&active), Some(&held), &event));
        assert!(!order.matches(Some(&active), Some(&active), &event));
        assert!(!order.reads.event);
        let uses_event = CelFilter::compile("event.interaction == 'create'").expect("compiles");
        assert!(uses_event.reads.event);
        assert!(uses_event.matches(None, None, &serde_json::json!({"interaction": "create"})));
        assert_eq!(
            reads("has(current.code) && current.code.text == previous.id"),
            (Some(vec!["code".to_owned()]), Some(vec!["id".to_owned()]))
        );
        assert_eq!(reads("size(current) > 1").0, None);
        assert_eq!(reads("[1].exists(current, current == 1)").0, None);
        let status = serde_json::json!({"status": "a", "other": [1, 2]});
        let filter =
            CelFilter::compile("current.status == 'a' && !has(current.missing)").expect("compiles");
        assert!(filter.matches(Some(&status), None, &serde_json::json!({})));
    }

    #[test]
    fn nesting_counts_brackets_outside_strings() {
        assert_eq!(text_nesting("a(b[c{d}])"), 3);
        assert_eq!(text_nesting("'((((' + \"[[[\" + '''(((''' "), 0);
        assert_eq!(text_nesting("a ? b : c ? d : e"), 2);
        assert_eq!(text_nesting("'\\'(' + (x)"), 1);
    }
}
