//! Translation of a search parameter's FHIRPath `expression` into the fast element
//! paths of [`collect`](crate::values::collect), where the expression is simple.
//!
//! The official R4 expressions are, in the vast majority, unions of plain paths with
//! a few decorations, all of which have an exact path equivalent:
//!
//! | FHIRPath | element path |
//! |---|---|
//! | `Observation.subject` | `subject` |
//! | `Observation.effective` (a choice element) | `effectiveDateTime`, `effectivePeriod`, … one per type |
//! | `(Observation.value as Quantity)`, `value.as(Quantity)`, `value.ofType(Quantity)` | `valueQuantity` |
//! | `Patient.telecom.where(system='phone')` | `telecom[system=phone]` |
//! | `Observation.subject.where(resolve() is Patient)` | `subject`, reference targets narrowed to `Patient` |
//! | `A.x \| A.y` | both paths |
//!
//! Choice elements and data types are known from the element table that the
//! extraction script takes from the R4 StructureDefinitions (`elements` in
//! `schemas/search-parameters/r4.json`): each step is checked against it, so a path
//! that does not exist, or a type test the table cannot confirm, is not translated.
//! Anything else (functions, indexers, operators) returns `None`, and the caller
//! falls back to the FHIRPath evaluator.

use std::collections::HashMap;

/// Element table: type name → (element path below the type → `|`-joined type codes,
/// or `@Type.path` for a content reference).
pub(crate) type Elements = HashMap<String, HashMap<String, String>>;

/// One translated path: the dotted element path and, when the expression restricted
/// the references it yields with `where(resolve() is T)`, the allowed target types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TranslatedPath {
    pub(crate) path: String,
    pub(crate) targets: Option<Vec<String>>,
    /// The type of a choice element alternative the path ends in (`valueQuantity`:
    /// `Quantity`), so the caller can keep only the types its parameter type reads.
    pub(crate) choice_type: Option<String>,
}

/// Where a walk stands: inside type `ty`, below its element path `prefix` (`""` at
/// the type's root, `"component."` inside a backbone element).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypeContext {
    pub(crate) ty: String,
    pub(crate) prefix: String,
}

impl TypeContext {
    pub(crate) fn root(ty: &str) -> TypeContext {
        TypeContext {
            ty: ty.to_owned(),
            prefix: String::new(),
        }
    }
}

/// A path under construction: JSON keys walked so far and where they lead.
#[derive(Debug, Clone)]
struct Walk {
    segments: Vec<String>,
    context: TypeContext,
    /// The types of the last step when it was a choice element expanded per type
    /// (its last segment is `name` + type); `None` after a plain element.
    choice_type: Option<String>,
    /// The type name of the last step (for `as` on a non-choice element).
    last_type: Option<String>,
    targets: Option<Vec<String>>,
}

/// Translates one branch-free or union expression evaluated on the resource root of
/// `resource_type`. Branches headed by another type are ignored (a parameter shared
/// by several resource types lists all of them); `Resource.`/`DomainResource.` heads
/// apply to every type. `None` when any branch for this type cannot be translated, or
/// when no branch applies.
pub(crate) fn translate_for_resource(
    expression: &str,
    resource_type: &str,
    elements: &Elements,
) -> Option<Vec<TranslatedPath>> {
    let mut out = Vec::new();
    let mut any = false;
    for branch in split_union(expression)? {
        let head = head_identifier(branch)?;
        if head != resource_type && head != "Resource" && head != "DomainResource" {
            continue;
        }
        any = true;
        out.extend(translate_branch(
            branch,
            Some(head),
            &TypeContext::root(resource_type),
            elements,
        )?);
    }
    any.then_some(out)
}

/// The branches of `expression` that apply to `resource_type` (see
/// [`translate_for_resource`]), joined again with `|`; `None` when none applies or
/// the expression cannot be split.
pub(crate) fn branches_for_resource(expression: &str, resource_type: &str) -> Option<String> {
    let branches: Vec<&str> = split_union(expression)?
        .into_iter()
        .filter(|b| {
            head_identifier(b)
                .is_some_and(|h| h == resource_type || h == "Resource" || h == "DomainResource")
        })
        .collect();
    (!branches.is_empty()).then(|| branches.join(" | "))
}

/// Translates an expression evaluated on an element of `context` (a composite
/// parameter's component, e.g. `value.as(Quantity)` on an Observation).
pub(crate) fn translate_relative(
    expression: &str,
    context: &TypeContext,
    elements: &Elements,
) -> Option<Vec<TranslatedPath>> {
    let mut out = Vec::new();
    for branch in split_union(expression)? {
        out.extend(translate_branch(branch, None, context, elements)?);
    }
    Some(out)
}

/// The contexts a union of plain paths leads to (a composite parameter's base:
/// `Observation | Observation.component`), one per branch; `None` when a branch is
/// not a plain path to exactly one element type.
pub(crate) fn contexts_of(
    expression: &str,
    resource_type: &str,
    elements: &Elements,
) -> Option<Vec<(String, TypeContext)>> {
    let mut out = Vec::new();
    for branch in split_union(expression)? {
        let head = head_identifier(branch)?;
        if head != resource_type {
            return None;
        }
        let walks = walk_branch(
            branch,
            Some(head),
            &TypeContext::root(resource_type),
            elements,
        )?;
        let [walk] = walks.as_slice() else {
            return None;
        };
        if walk.targets.is_some() || walk.choice_type.is_some() {
            return None;
        }
        out.push((walk.segments.join("."), walk.context.clone()));
    }
    Some(out)
}

fn translate_branch(
    branch: &str,
    head: Option<&str>,
    context: &TypeContext,
    elements: &Elements,
) -> Option<Vec<TranslatedPath>> {
    let walks = walk_branch(branch, head, context, elements)?;
    Some(
        walks
            .into_iter()
            .filter(|w| !w.segments.is_empty())
            .map(|w| TranslatedPath {
                path: w.segments.join("."),
                targets: w.targets,
                choice_type: w.choice_type,
            })
            .collect(),
    )
}

/// Walks one branch: `(inner as T)` (optionally followed by `.steps`) or `steps`.
fn walk_branch(
    branch: &str,
    head: Option<&str>,
    context: &TypeContext,
    elements: &Elements,
) -> Option<Vec<Walk>> {
    let branch = branch.trim();
    let start = Walk {
        segments: Vec::new(),
        context: context.clone(),
        choice_type: None,
        last_type: None,
        targets: None,
    };
    let (mut walks, rest) = if let Some(inner_and_rest) = branch.strip_prefix('(') {
        let close = matching_paren(inner_and_rest)?;
        let inner = &inner_and_rest[..close];
        let rest = &inner_and_rest[close + 1..];
        let (path, ty) = split_top_level_as(inner)?;
        let walks = walk_steps(vec![start], path, head, elements)?;
        let walks = apply_as(walks, ty)?;
        (walks, rest.trim())
    } else {
        (walk_steps(vec![start], branch, head, elements)?, "")
    };
    if !rest.is_empty() {
        let rest = rest.strip_prefix('.')?;
        walks = walk_steps(walks, rest, None, elements)?;
    }
    Some(walks)
}

/// Applies the dotted `steps` to every walk. The first step is skipped when it is the
/// expected `head` (the type name).
fn walk_steps(
    mut walks: Vec<Walk>,
    steps: &str,
    head: Option<&str>,
    elements: &Elements,
) -> Option<Vec<Walk>> {
    let steps = split_top_level(steps.trim(), '.')?;
    let mut steps = steps.into_iter();
    if let Some(head) = head {
        if steps.next()? != head {
            return None;
        }
    }
    for step in steps {
        let step = step.trim();
        if let Some(arg) = call_argument(step, "as").or_else(|| call_argument(step, "ofType")) {
            walks = apply_as(walks, arg)?;
        } else if let Some(condition) = call_argument(step, "where") {
            walks = apply_where(walks, condition)?;
        } else if is_identifier(step) {
            let mut next = Vec::new();
            for walk in walks {
                next.extend(step_into(walk, step, elements)?);
            }
            walks = next;
        } else {
            return None;
        }
    }
    Some(walks)
}

/// One element step from `walk`: a plain element, or a choice element expanded into
/// one walk per type.
fn step_into(walk: Walk, name: &str, elements: &Elements) -> Option<Vec<Walk>> {
    // Targets restrict the references of the element they were written on; walking
    // further (into `Reference.identifier`...) would be a different element.
    if walk.targets.is_some() {
        return None;
    }
    let table = elements.get(&walk.context.ty)?;
    let key = format!("{}{name}", walk.context.prefix);
    if let Some(types) = table.get(&key) {
        let (context, last_type) = if let Some(reference) = types.strip_prefix('@') {
            let (ty, path) = reference.split_once('.')?;
            (
                TypeContext {
                    ty: ty.to_owned(),
                    prefix: format!("{path}."),
                },
                None,
            )
        } else if types.contains('|') {
            return None;
        } else if types == "BackboneElement" || types == "Element" {
            (
                TypeContext {
                    ty: walk.context.ty.clone(),
                    prefix: format!("{key}."),
                },
                Some(types.clone()),
            )
        } else {
            (TypeContext::root(types), Some(types.clone()))
        };
        let mut segments = walk.segments;
        segments.push(name.to_owned());
        return Some(vec![Walk {
            segments,
            context,
            choice_type: None,
            last_type,
            targets: None,
        }]);
    }
    let types = table.get(&format!("{key}[x]"))?;
    Some(
        types
            .split('|')
            .map(|ty| {
                let mut segments = walk.segments.clone();
                segments.push(format!("{name}{}", upper_first(ty)));
                Walk {
                    segments,
                    context: TypeContext::root(ty),
                    choice_type: Some(ty.to_owned()),
                    last_type: Some(ty.to_owned()),
                    targets: None,
                }
            })
            .collect(),
    )
}

/// `as T` / `ofType(T)`: keeps the choice alternatives of type `T`; on a plain element
/// of type `T` it changes nothing; otherwise untranslatable.
fn apply_as(walks: Vec<Walk>, ty: &str) -> Option<Vec<Walk>> {
    let ty = ty.trim();
    if !is_identifier(ty) {
        return None;
    }
    let mut out = Vec::new();
    for walk in walks {
        match (&walk.choice_type, &walk.last_type) {
            (Some(choice), _) => {
                if choice == ty {
                    out.push(walk);
                }
            }
            (None, Some(last)) if last == ty => out.push(walk),
            _ => return None,
        }
    }
    Some(out)
}

/// `where(resolve() is T)` narrows reference targets; `where(key='value')` filters the
/// last segment on a child's value.
fn apply_where(walks: Vec<Walk>, condition: &str) -> Option<Vec<Walk>> {
    let condition = condition.trim();
    if let Some(ty) = condition.strip_prefix("resolve() is ") {
        let ty = ty.trim();
        if !crate::registry::is_type_name(ty) {
            return None;
        }
        return walks
            .into_iter()
            .map(|mut w| {
                if w.last_type.as_deref() != Some("Reference") || w.targets.is_some() {
                    return None;
                }
                w.targets = Some(vec![ty.to_owned()]);
                Some(w)
            })
            .collect();
    }
    let (key, value) = condition.split_once('=')?;
    let key = key.trim();
    let value = value.trim().strip_prefix('\'')?.strip_suffix('\'')?;
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !is_identifier(key) || !plain(value) {
        return None;
    }
    walks
        .into_iter()
        .map(|mut w| {
            if w.choice_type.is_some() || w.targets.is_some() {
                return None;
            }
            let last = w.segments.last_mut()?;
            if last.contains('[') {
                return None;
            }
            last.push_str(&format!("[{key}={value}]"));
            Some(w)
        })
        .collect()
}

/// `name(arg)` → `arg`.
fn call_argument<'a>(step: &'a str, name: &str) -> Option<&'a str> {
    step.strip_prefix(name)?
        .strip_prefix('(')?
        .strip_suffix(')')
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn upper_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// The first identifier of a branch, after any opening parentheses.
fn head_identifier(branch: &str) -> Option<&str> {
    let s = branch.trim().trim_start_matches('(').trim_start();
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    let head = &s[..end];
    is_identifier(head).then_some(head)
}

/// Splits on top-level `|` (outside parentheses and string literals).
fn split_union(expression: &str) -> Option<Vec<&str>> {
    Some(
        split_top_level(expression, '|')?
            .into_iter()
            .map(str::trim)
            .collect(),
    )
}

/// Splits `s` on `sep` outside parentheses and single-quoted strings; `None` when the
/// parentheses or quotes do not balance.
fn split_top_level(s: &str, sep: char) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let mut depth = 0_usize;
    let mut quoted = false;
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if quoted {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '\'' => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            '\'' => quoted = true,
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1)?,
            c if c == sep && depth == 0 => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if depth != 0 || quoted {
        return None;
    }
    parts.push(&s[start..]);
    Some(parts)
}

/// The index of the `)` closing a group whose `(` was just before `s`.
fn matching_paren(s: &str) -> Option<usize> {
    let mut depth = 1_usize;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `path as Type` at the top level → (`path`, `Type`).
fn split_top_level_as(inner: &str) -> Option<(&str, &str)> {
    let parts = split_top_level(inner, ' ')?;
    let parts: Vec<&str> = parts.into_iter().filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        [path, "as", ty] => Some((path, ty)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elements() -> Elements {
        let mut observation = HashMap::new();
        for (k, v) in [
            ("subject", "Reference"),
            ("code", "CodeableConcept"),
            ("component", "BackboneElement"),
            ("component.code", "CodeableConcept"),
            ("component.value[x]", "Quantity|CodeableConcept|string"),
            (
                "value[x]",
                "Quantity|CodeableConcept|string|dateTime|Period",
            ),
            ("effective[x]", "dateTime|Period"),
            ("meta", "Meta"),
            ("telecom", "ContactPoint"),
            ("related", "@Observation.component"),
        ] {
            observation.insert(k.to_owned(), v.to_owned());
        }
        let meta = HashMap::from([("profile".to_owned(), "canonical".to_owned())]);
        HashMap::from([
            ("Observation".to_owned(), observation),
            ("Meta".to_owned(), meta),
        ])
    }

    fn paths(expression: &str) -> Option<Vec<String>> {
        translate_for_resource(expression, "Observation", &elements())
            .map(|v| v.into_iter().map(|p| p.path).collect())
    }

    #[test]
    fn simple_shapes_translate() {
        assert_eq!(paths("Observation.subject"), Some(vec!["subject".into()]));
        assert_eq!(
            paths("Observation.effective"),
            Some(vec!["effectiveDateTime".into(), "effectivePeriod".into()])
        );
        assert_eq!(
            paths("(Observation.value as Quantity) | (Observation.value as SampledData)"),
            Some(vec!["valueQuantity".into()])
        );
        assert_eq!(
            paths("Observation.value.as(dateTime)"),
            Some(vec!["valueDateTime".into()])
        );
        assert_eq!(
            paths("(Observation.value as CodeableConcept).text"),
            None,
            "CodeableConcept's elements are not in this test table"
        );
        assert_eq!(
            paths("Patient.name | Observation.code | Observation.component.code"),
            Some(vec!["code".into(), "component.code".into()])
        );
        assert_eq!(
            paths("Resource.meta.profile"),
            Some(vec!["meta.profile".into()])
        );
        assert_eq!(
            paths("Observation.telecom.where(system='phone')"),
            Some(vec!["telecom[system=phone]".into()])
        );
        assert_eq!(
            paths("Observation.related.code"),
            Some(vec!["related.code".into()])
        );
        let patient = translate_for_resource(
            "Observation.subject.where(resolve() is Patient)",
            "Observation",
            &elements(),
        )
        .expect("valid in this test");
        assert_eq!(patient[0].targets, Some(vec!["Patient".to_owned()]));
    }

    #[test]
    fn other_shapes_do_not() {
        for e in [
            "Observation.nope",
            "Observation.subject.where(resolve() is Patient).identifier",
            "Observation.code[0]",
            "Observation.value.exists() and Observation.value != false",
            "Observation.code.where(coding.system='x')",
            "Observation.subject as Quantity",
            "(Observation.subject as Quantity)",
            "Observation.subject.extension('x')",
            "(Observation.value as Quantity",
            "Patient.name",
        ] {
            assert_eq!(paths(e), None, "{e}");
        }
    }

    #[test]
    fn composite_contexts() {
        let contexts = contexts_of(
            "Observation | Observation.component",
            "Observation",
            &elements(),
        )
        .expect("valid in this test");
        assert_eq!(contexts[0].0, "");
        let (path, context) = &contexts[1];
        assert_eq!(path, "component");
        let values = translate_relative("value.as(Quantity)", context, &elements())
            .expect("valid in this test");
        assert_eq!(values[0].path, "valueQuantity");
        let root = TypeContext::root("Observation");
        let values = translate_relative("code", &root, &elements()).expect("valid in this test");
        assert_eq!(values[0].path, "code");
    }
}
