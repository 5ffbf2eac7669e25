//! FHIRPath for Herald: a parser and evaluator of FHIRPath (N1/R4 normative subset and
//! the commonly used STU functions) over FHIR resources held as `serde_json::Value`.
//! It owns the FHIRPath language only; it knows nothing about subscriptions, topics,
//! storage or HTTP. `herald-criteria` uses it for `SubscriptionTopic` `fhirPathCriteria`
//! (with `%current` / `%previous` bound) and, later, for search parameter expressions.
//!
//! # Why our own evaluator and not `helios-fhirpath`
//!
//! The issue asked to choose between `helios-fhirpath` (crates.io, 0.2.7) and an
//! evaluator of our own over JSON, by build time, evaluation speed and conformance.
//! Figures measured on this 2-core machine:
//!
//! | | helios-fhirpath 0.2.7 | herald-fhirpath |
//! |---|---|---|
//! | build (release, clean, all deps) | 16 min 40 s, 259 crates, 1.2 GB target (run at low priority beside other builds: an upper bound) | 31 s |
//! | source size | helios-fhir alone: 4.2 MB crate, 36 MB unpacked (typed R4/R4B/R5 models: `r4.rs` 8.3 MB) | ~4,600 lines of source |
//! | dependencies a library pulls in | axum, tokio (full), reqwest, clap, rayon, tracing-subscriber, chumsky, rust_decimal, octofhir-ucum, roxmltree… | serde_json, chrono, regex, thiserror (all already in the workspace) |
//! | version pins | `serde = "=1.0.224"`, `serde_json = "=1.0.144"`: the workspace resolves serde 1.0.229 / serde_json 1.0.154, so adding it downgrades both for every crate | none |
//! | input model | converts JSON into typed structs before evaluating | evaluates the JSON as it is (no conversion on the hot path) |
//! | eval speed (encounter-complete criteria, one core, release) | not measured: the pins below rule it out first | 1.26 M evaluations/s, 0.79 µs each (`examples/eval_speed.rs`) |
//! | HL7 R4 suite (`tests-fhir-r4.xml`, 935 cases) | not run | 909 pass; 17 skipped (3 terminology, 14 UCUM conversion); 9 fail (6 strict-mode checks needing a structure model, 3 decimal boundaries where the suite expects values inside the interval) |
//!
//! The exact pins alone rule `helios-fhirpath` out (it would hold back serde/serde_json
//! workspace-wide and break on the next `cargo update`), and its typed-model design
//! contradicts the "no conversion to typed models on the hot path". So Herald
//! evaluates over JSON with its own evaluator, whose conformance is measured by the
//! test `tests/conformance.rs` against the official suite.
//!
//! # What is supported
//!
//! Literals (boolean, string with escapes, integer, decimal — exact, via an own
//! decimal type —, date/dateTime/time with precision and timezone, quantities with UCUM
//! or calendar units), paths, indexers, `$this`/`$index`/`$total`, all operators
//! (`. [] unary- * / div mod + - & is as | < > <= >= = != ~ !~ in contains and or xor
//! implies`) with FHIRPath precedence, three-valued logic and empty propagation, and
//! the functions listed in `functions::FUNCTIONS`. External constants: `%resource`,
//! `%rootResource`, `%context` (the root), `%ucum`, `%sct`, `%loinc`, `%vs-*`, `%ext-*`,
//! and every variable of the [`Env`] (`%current`, `%previous`, `%event`...; a JSON
//! `null` binds the empty collection, an array binds its items).
//!
//! FHIR specifics over JSON: choice elements (`value` finds `valueQuantity` and knows
//! its type is `Quantity`), primitive extensions (`_given` siblings: `extension()`,
//! `hasValue()`, `id`), `resourceType` for type tests and path heads (`Patient.name`),
//! Quantity elements compare with quantity literals (unit from `code`, else `unit`).
//!
//! # What is not (rejected, never silently ignored)
//!
//! - Terminology functions (`memberOf`, `subsumes`, `subsumedBy`, `conformsTo`...) and
//!   `%terminologies`: rejected at parse time with [`FhirPathError::Unsupported`].
//! - UCUM unit conversion: quantities compare only in the same unit (calendar keywords
//!   up to `week` equal their UCUM codes); `4 'g' = 4000 'mg'` is `false`, `<` on
//!   different units is empty. `comparable()` is rejected.
//! - Without a structure-definition model, element types are inferred from choice
//!   suffixes, `resourceType`, the JSON kind and a short table of well-known element
//!   names (`types::infer_element_type`); type tests on other elements answer
//!   `false`, and strict-mode checks (`name.given1` is an error) are not made.
//!
//! # Bounds
//!
//! Expressions longer than [`MAX_EXPRESSION_BYTES`] or nesting deeper than
//! [`MAX_DEPTH`] are rejected at parse time; evaluation charges a step budget
//! ([`DEFAULT_STEP_BUDGET`]) and caps built strings at 1 MiB; regular expressions are
//! size-limited. Nothing here panics on any input.

mod decimal;
mod eval;
mod functions;
mod lexer;
mod parser;
mod strings;
mod temporal;
mod types;
mod value;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

pub use decimal::Decimal;
pub use parser::MAX_DEPTH;
pub use temporal::{Temporal, TemporalKind};
pub use value::{Item, Node, Quantity, TypeSpecifier};

use parser::Expr;

/// Longest expression accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 8 * 1024;

/// Steps one evaluation may take by default (one step per expression node visited
/// and per item produced or compared).
pub const DEFAULT_STEP_BUDGET: u64 = 200_000;

/// Environment variables available as `%name`.
pub type Env = HashMap<String, Value>;

/// Why an expression could not be compiled or evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FhirPathError {
    #[error("FHIRPath syntax error: {0}")]
    Syntax(String),
    #[error("FHIRPath expression too complex: {0}")]
    TooComplex(String),
    #[error("FHIRPath evaluation error: {0}")]
    Execution(String),
    #[error("FHIRPath feature not supported: {0}")]
    Unsupported(String),
    #[error("FHIRPath evaluation exceeded its step budget")]
    BudgetExceeded,
}

/// A compiled FHIRPath expression; cheap to clone and shareable across threads.
#[derive(Debug, Clone)]
pub struct Expression {
    source: Arc<str>,
    ast: Arc<Expr>,
    regexes: Arc<HashMap<String, regex::Regex>>,
}

impl Expression {
    /// Parses and checks an expression: syntax, length, nesting, known functions
    /// (terminology functions are rejected) and literal regular expressions.
    pub fn parse(source: &str) -> Result<Expression, FhirPathError> {
        if source.len() > MAX_EXPRESSION_BYTES {
            return Err(FhirPathError::TooComplex(format!(
                "expression is {} bytes, the limit is {MAX_EXPRESSION_BYTES}",
                source.len()
            )));
        }
        let ast = parser::parse(source)?;
        let mut regexes = HashMap::new();
        check(&ast, &mut regexes)?;
        Ok(Expression {
            source: source.into(),
            ast: Arc::new(ast),
            regexes: Arc::new(regexes),
        })
    }

    /// The expression text as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates with `root` as `%resource`/`%context` and the focus, and `env` as
    /// the `%` variables, within [`DEFAULT_STEP_BUDGET`].
    pub fn evaluate<'a>(
        &self,
        root: &'a Value,
        env: &'a Env,
    ) -> Result<Vec<Item<'a>>, FhirPathError> {
        self.evaluate_with_budget(root, env, DEFAULT_STEP_BUDGET)
    }

    /// [`Expression::evaluate`] with an explicit step budget.
    pub fn evaluate_with_budget<'a>(
        &self,
        root: &'a Value,
        env: &'a Env,
        budget: u64,
    ) -> Result<Vec<Item<'a>>, FhirPathError> {
        self.run(root, eval::Variables::Map(env), budget)
    }

    /// Evaluates with variables borrowed from a list of `(name, value)` pairs (no
    /// copying of the resources), within [`DEFAULT_STEP_BUDGET`].
    pub fn evaluate_with_variables<'a>(
        &self,
        root: &'a Value,
        variables: &[(&str, &'a Value)],
    ) -> Result<Vec<Item<'a>>, FhirPathError> {
        self.run(root, eval::Variables::List(variables), DEFAULT_STEP_BUDGET)
    }

    fn run<'a>(
        &self,
        root: &'a Value,
        variables: eval::Variables<'a, '_>,
        budget: u64,
    ) -> Result<Vec<Item<'a>>, FhirPathError> {
        let context = eval::Context::new(root, variables, budget, &self.regexes);
        let focus = [Item::Node(Node::root(root))];
        let scope = eval::Scope {
            focus: std::borrow::Cow::Borrowed(&focus),
            index: None,
            total: None,
        };
        context.eval(&self.ast, &scope)
    }

    /// Evaluates and applies FHIRPath singleton evaluation as a boolean: empty is
    /// `None`, a single boolean is its value, any other single item is `true`, and
    /// several items are an error.
    pub fn evaluate_boolean(&self, root: &Value, env: &Env) -> Result<Option<bool>, FhirPathError> {
        let result = self.evaluate(root, env)?;
        eval::to_boolean(&result, "the expression result")
    }

    /// [`Expression::evaluate_boolean`] with borrowed variables (see
    /// [`Expression::evaluate_with_variables`]).
    pub fn evaluate_boolean_with_variables(
        &self,
        root: &Value,
        variables: &[(&str, &Value)],
    ) -> Result<Option<bool>, FhirPathError> {
        let result = self.evaluate_with_variables(root, variables)?;
        eval::to_boolean(&result, "the expression result")
    }
}

/// Parses and evaluates `expression` in one go (see [`Expression::evaluate`]).
pub fn evaluate<'a>(
    expression: &str,
    root: &'a Value,
    env: &'a Env,
) -> Result<Vec<Item<'a>>, FhirPathError> {
    Expression::parse(expression)?.evaluate(root, env)
}

/// Rejects unknown/unsupported functions and precompiles literal regexes.
fn check(expr: &Expr, regexes: &mut HashMap<String, regex::Regex>) -> Result<(), FhirPathError> {
    match expr {
        Expr::External(name) if name == "terminologies" => Err(FhirPathError::Unsupported(
            "%terminologies (terminology services)".into(),
        )),
        Expr::Literal(_)
        | Expr::Empty
        | Expr::Identifier(_)
        | Expr::This
        | Expr::Index
        | Expr::Total
        | Expr::External(_) => Ok(()),
        Expr::Member(target, _)
        | Expr::Negate(target)
        | Expr::Is(target, _)
        | Expr::As(target, _) => check(target, regexes),
        Expr::Indexer(a, b) | Expr::Binary(_, a, b) => {
            check(a, regexes)?;
            check(b, regexes)
        }
        Expr::Call { target, name, args } => {
            if functions::is_unsupported(name) {
                return Err(FhirPathError::Unsupported(format!(
                    "{name}() needs terminology services or UCUM, which Herald does not provide"
                )));
            }
            if !functions::FUNCTIONS.contains(&name.as_str()) {
                return Err(FhirPathError::Unsupported(format!(
                    "unknown function {name}()"
                )));
            }
            if matches!(name.as_str(), "matches" | "matchesFull" | "replaceMatches") {
                if let Some(Expr::Literal(parser::Literal::String(pattern))) = args.first() {
                    let pattern = if name == "matchesFull" {
                        format!("^(?:{pattern})$")
                    } else {
                        pattern.clone()
                    };
                    let compiled = strings::compile_regex(&pattern)?;
                    regexes.insert(pattern, compiled);
                }
            }
            if let Some(target) = target {
                check(target, regexes)?;
            }
            args.iter().try_for_each(|a| check(a, regexes))
        }
    }
}
