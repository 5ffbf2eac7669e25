//! How the values of one search parameter are found in a resource: the evaluation
//! plan the [`registry`](crate::registry) derives from the parameter's FHIRPath
//! expression, once, when the table is loaded.
//!
//! - [`Plan::Paths`]: the expression translated into element paths (see
//!   [`translate`](crate::translate)); walking them allocates nothing for one-element
//!   paths. This is the hot path, and the plan of nearly every parameter.
//! - [`Plan::FhirPath`]: the expression compiled once with `herald-fhirpath` and
//!   evaluated per resource, for expressions the translation does not cover.
//! - [`Plan::Unsupported`]: no way to evaluate it (no expression, `resolve()` beyond
//!   a type test, terminology); criteria using it are rejected at compile time.

use std::borrow::Cow;

use herald_fhirpath::{Expression, Item};
use serde_json::Value;

use crate::values::collect;

/// One element path with the reference target types allowed on it (empty: any).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ElementPath {
    pub(crate) path: Box<str>,
    pub(crate) targets: Box<[Box<str>]>,
    /// Decided once, so evaluation does not scan the path for `.`/`[` per event.
    shape: PathShape,
}

/// How a path is walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PathShape {
    /// `""`: the element the plan is evaluated on (a composite's resource root).
    Root,
    /// One plain element name: read directly, nothing allocated.
    Element,
    /// Dotted or filtered: [`collect`].
    Nested,
}

impl ElementPath {
    pub(crate) fn new(path: Box<str>, targets: Box<[Box<str>]>) -> ElementPath {
        let shape = if path.is_empty() {
            PathShape::Root
        } else if path.contains(['.', '[']) {
            PathShape::Nested
        } else {
            PathShape::Element
        };
        ElementPath {
            path,
            targets,
            shape,
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) enum Plan {
    Paths(Box<[ElementPath]>),
    FhirPath {
        expression: Expression,
        /// Reference targets allowed on every value (the parameter's declared ones).
        targets: Box<[Box<str>]>,
    },
    Unsupported(Box<str>),
}

impl Plan {
    /// Calls `f` with each value the plan finds under `root`, and the reference
    /// targets allowed on it, until `f` returns `true`. `Some(found)`, or `None` when
    /// the FHIRPath evaluation failed (the caller then fails closed) or the plan is
    /// unsupported.
    pub(crate) fn any_value(
        &self,
        root: &Value,
        f: &mut dyn FnMut(&Value, &[Box<str>]) -> bool,
    ) -> Option<bool> {
        match self {
            Plan::Paths(paths) => Some(paths.iter().any(|p| {
                match p.shape {
                    PathShape::Root => f(root, &p.targets),
                    PathShape::Element => match root.as_object().and_then(|o| o.get(&*p.path)) {
                        Some(Value::Array(items)) => items
                            .iter()
                            .filter(|i| !i.is_null())
                            .any(|n| f(n, &p.targets)),
                        Some(Value::Null) | None => false,
                        Some(other) => f(other, &p.targets),
                    },
                    PathShape::Nested => {
                        let mut nodes = Vec::new();
                        collect(root, &p.path, &mut nodes);
                        nodes.into_iter().any(|n| f(n, &p.targets))
                    }
                }
            })),
            Plan::FhirPath {
                expression,
                targets,
            } => {
                let items = expression.evaluate_with_variables(root, &[]).ok()?;
                Some(items.iter().any(|item| match item_value(item) {
                    Some(value) => f(&value, targets),
                    None => false,
                }))
            }
            Plan::Unsupported(_) => None,
        }
    }

    /// Every value the plan finds under `root` (see [`Plan::any_value`]).
    pub(crate) fn values<'a>(&self, root: &'a Value) -> Option<Vec<Cow<'a, Value>>> {
        match self {
            Plan::Paths(paths) => {
                let mut nodes = Vec::new();
                for p in paths.iter() {
                    match p.shape {
                        PathShape::Root => nodes.push(root),
                        _ => collect(root, &p.path, &mut nodes),
                    }
                }
                Some(nodes.into_iter().map(Cow::Borrowed).collect())
            }
            Plan::FhirPath { expression, .. } => {
                let items = expression.evaluate_with_variables(root, &[]).ok()?;
                Some(
                    items
                        .iter()
                        .filter_map(|item| match item {
                            Item::Node(node) => node.json().map(Cow::Borrowed),
                            other => item_value(other).map(|v| Cow::Owned(v.into_owned())),
                        })
                        .collect(),
                )
            }
            Plan::Unsupported(_) => None,
        }
    }

    /// Where the plan looks, for messages: its element paths or its FHIRPath expression.
    pub(crate) fn describe(&self) -> String {
        match self {
            Plan::Paths(paths) => paths
                .iter()
                .map(|p| {
                    if p.path.is_empty() {
                        "the element itself"
                    } else {
                        &*p.path
                    }
                })
                .collect::<Vec<_>>()
                .join(" | "),
            Plan::FhirPath { expression, .. } => expression.source().to_owned(),
            Plan::Unsupported(reason) => reason.to_string(),
        }
    }

    /// A key that is equal for plans extracting the same values (index dimensions).
    pub(crate) fn identity(&self) -> PlanIdentity<'_> {
        match self {
            Plan::Paths(paths) => PlanIdentity::Paths(paths.iter().map(|p| &*p.path).collect()),
            Plan::FhirPath { expression, .. } => PlanIdentity::FhirPath(expression.source()),
            Plan::Unsupported(reason) => PlanIdentity::Unsupported(reason),
        }
    }
}

/// See [`Plan::identity`].
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) enum PlanIdentity<'a> {
    Paths(Vec<&'a str>),
    FhirPath(&'a str),
    Unsupported(&'a str),
}

/// The JSON value of a FHIRPath result item: elements as they are in the resource,
/// System values (booleans, strings, dates…) in their JSON form.
fn item_value<'a>(item: &Item<'a>) -> Option<Cow<'a, Value>> {
    match item {
        Item::Node(node) => node.json().map(Cow::Borrowed),
        Item::Type(_) => None,
        other => Some(Cow::Owned(other.to_json())),
    }
}
