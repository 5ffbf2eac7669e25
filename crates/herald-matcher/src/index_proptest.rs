//! Property test: for random subscriptions (search URLs and topic filters over a small
//! value space) and random events, the indexed candidates, evaluated in full, match
//! exactly the subscriptions a linear scan matches — also after removals, and with
//! several subscriptions sharing identical criteria (one criteria group).

use std::collections::BTreeSet;
use std::sync::Arc;

use herald_criteria::{SearchQuery, TopicDefinition};
use herald_fhir::{Action, ChangeEvent};
use herald_store::SubscriptionKey;
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::catalog::builtin_topics;
use crate::compile::{ActiveSubscription, CompiledCriteria};
use crate::index::SubscriptionIndex;

const PATIENTS: &[&str] = &["p1", "p2", "p3"];
const CODES: &[&str] = &["c1", "c2", "c3"];
const SYSTEMS: &[&str] = &["http://loinc.org", "http://snomed.info/sct"];
const OBSERVATION_STATUSES: &[&str] = &["final", "preliminary", "amended"];
const ORDER_STATUSES: &[&str] = &["active", "completed", "stopped"];
const CATEGORIES: &[&str] = &["laboratory", "vital-signs"];
const CATEGORY_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

fn fhirpath_topic() -> Value {
    json!({
        "resourceType": "SubscriptionTopic",
        "url": "http://example.org/topic/fhirpath-lab",
        "resourceTrigger": [{
            "resource": "Observation",
            "fhirPathCriteria": "%current.status = 'final' or %previous.status = 'final'"
        }],
        "canFilterBy": [
            {"resource": "Observation", "filterParameter": "patient"},
            {"resource": "Observation", "filterParameter": "code"},
            {"resource": "Observation", "filterParameter": "status", "modifier": ["not"]}
        ]
    })
}

fn topics() -> Vec<Arc<TopicDefinition>> {
    builtin_topics()
        .iter()
        .cloned()
        .chain([fhirpath_topic()])
        .filter_map(|t| TopicDefinition::from_resource(&t).ok().map(Arc::new))
        .collect()
}

/// One ANDed clause of a search or filter, over the small value space.
fn clause() -> impl Strategy<Value = String> {
    let patient = prop::sample::select(PATIENTS);
    let code = prop::sample::select(CODES);
    let system = prop::sample::select(SYSTEMS);
    prop_oneof![
        patient.clone().prop_map(|p| format!("subject=Patient/{p}")),
        patient.clone().prop_map(|p| format!("patient=Patient/{p}")),
        patient.clone().prop_map(|p| format!("patient={p}")),
        patient.clone().prop_map(|p| format!("subject:Patient={p}")),
        (patient.clone(), patient).prop_map(|(a, b)| format!("subject=Patient/{a},Patient/{b}")),
        code.clone().prop_map(|c| format!("code={c}")),
        (system.clone(), code.clone()).prop_map(|(s, c)| format!("code={s}|{c}")),
        code.clone().prop_map(|c| format!("code=|{c}")),
        system.prop_map(|s| format!("code={s}|")),
        (code.clone(), code).prop_map(|(a, b)| format!("code={a},{b}")),
        prop::sample::select(OBSERVATION_STATUSES).prop_map(|s| format!("status={s}")),
        prop::sample::select(ORDER_STATUSES).prop_map(|s| format!("status={s}")),
        prop::sample::select(OBSERVATION_STATUSES).prop_map(|s| format!("status:not={s}")),
        prop::sample::select(CATEGORIES).prop_map(|c| format!("category={c}")),
        prop::sample::select(CATEGORIES).prop_map(|c| format!("category={CATEGORY_SYSTEM}|{c}")),
        prop::sample::select(&["r1", "r2"][..]).prop_map(|id| format!("_id={id}")),
        Just("subject:missing=true".to_owned()),
        // `_filter` gives no equality key: found through the type's residual list.
        (
            prop::sample::select(OBSERVATION_STATUSES),
            prop::sample::select(CODES)
        )
            .prop_map(|(s, c)| format!("_filter=status eq {s} or code eq {c}")),
        (
            prop::sample::select(PATIENTS),
            prop::sample::select(ORDER_STATUSES)
        )
            .prop_map(|(p, s)| format!("_filter=subject re Patient/{p} and not(status eq {s})")),
        (prop::sample::select(SYSTEMS), prop::sample::select(CODES)).prop_map(|(sys, c)| {
            format!("_filter=code eq {sys}|{c} or (status ne final and subject pr true)")
        }),
    ]
}

#[derive(Debug, Clone)]
enum SubscriptionPlan {
    Search(String),
    Topic { topic: usize, filters: Vec<String> },
}

fn subscription() -> impl Strategy<Value = SubscriptionPlan> {
    let clauses = prop::collection::vec(clause(), 0..3);
    prop_oneof![
        (
            prop::sample::select(&["Observation", "MedicationRequest"][..]),
            clauses
        )
            .prop_map(|(t, c)| SubscriptionPlan::Search(format!("{t}?{}", c.join("&")))),
        (
            0..3usize,
            prop::collection::vec(
                (
                    prop::sample::select(
                        &[
                            "",
                            "Observation?",
                            "MedicationRequest?",
                            "DiagnosticReport."
                        ][..]
                    ),
                    clause()
                ),
                0..3
            )
        )
            .prop_map(|(topic, filters)| SubscriptionPlan::Topic {
                topic,
                filters: filters
                    .into_iter()
                    .map(|(p, c)| format!("{p}{c}"))
                    .collect(),
            }),
    ]
}

fn compile(plan: &SubscriptionPlan, topics: &[Arc<TopicDefinition>]) -> Option<CompiledCriteria> {
    match plan {
        SubscriptionPlan::Search(criteria) => SearchQuery::parse(criteria)
            .ok()
            .map(CompiledCriteria::Search),
        SubscriptionPlan::Topic { topic, filters } => {
            let topic = topics.get(*topic)?;
            let filters = topic.compile_filters(filters).ok()?;
            Some(CompiledCriteria::Topic {
                topic: Arc::clone(topic),
                filters,
            })
        }
    }
}

/// A subject reference in one of the shapes FHIR allows.
fn reference() -> impl Strategy<Value = Option<Value>> {
    let patient = prop::sample::select(PATIENTS);
    prop_oneof![
        Just(None),
        patient
            .clone()
            .prop_map(|p| Some(json!({"reference": format!("Patient/{p}")}))),
        patient
            .clone()
            .prop_map(|p| Some(json!({"reference": p, "type": "Patient"}))),
        patient.clone().prop_map(|p| Some(json!({"reference": p}))),
        patient.clone().prop_map(|p| Some(json!({
            "reference": format!("http://example.org/fhir/Patient/{p}/_history/2")
        }))),
        patient.prop_map(|p| Some(json!({"reference": format!("Group/{p}")}))),
        Just(Some(
            json!({"reference": "urn:uuid:5f0c9a1e-0000-4000-8000-000000000001"})
        )),
    ]
}

fn codeable_concept() -> impl Strategy<Value = Option<Value>> {
    let coding = (
        prop::option::of(prop::sample::select(SYSTEMS)),
        prop::sample::select(CODES),
    )
        .prop_map(|(system, code)| match system {
            Some(s) => json!({"system": s, "code": code}),
            None => json!({"code": code}),
        });
    prop::option::of(prop::collection::vec(coding, 0..3).prop_map(|c| json!({"coding": c})))
}

fn resource() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(&["Observation", "MedicationRequest", "DiagnosticReport"][..]),
        prop::sample::select(&["r1", "r2", "r3"][..]),
        prop::option::of(prop::sample::select(
            &[
                "final",
                "preliminary",
                "amended",
                "active",
                "completed",
                "stopped",
            ][..],
        )),
        prop::option::of(prop::sample::select(CATEGORIES)),
        reference(),
        codeable_concept(),
    )
        .prop_map(|(resource_type, id, status, category, subject, code)| {
            let mut r = json!({"resourceType": resource_type, "id": id});
            if let Some(s) = status {
                r["status"] = json!(s);
            }
            if let Some(c) = category {
                r["category"] = json!([{"coding": [{"system": CATEGORY_SYSTEM, "code": c}]}]);
            }
            if let Some(s) = subject {
                r["subject"] = s;
            }
            if let Some(c) = code {
                let element = if resource_type == "MedicationRequest" {
                    "medicationCodeableConcept"
                } else {
                    "code"
                };
                r[element] = c;
            }
            r
        })
}

#[derive(Debug, Clone)]
struct EventPlan {
    action: Action,
    current: Value,
    previous: Option<Value>,
}

fn event() -> impl Strategy<Value = EventPlan> {
    (
        prop::sample::select(&[Action::Create, Action::Update, Action::Delete][..]),
        resource(),
        prop::option::of(resource()),
    )
        .prop_map(|(action, current, previous)| {
            // The previous version is of the same type and id as the current one.
            let previous = previous.map(|mut p| {
                p["resourceType"] = current["resourceType"].clone();
                p["id"] = current["id"].clone();
                p
            });
            EventPlan {
                action,
                current,
                previous,
            }
        })
}

fn change_event(plan: &EventPlan) -> ChangeEvent {
    let text = |key: &str| plan.current[key].as_str().unwrap_or_default().to_owned();
    ChangeEvent {
        event_id: "e1".into(),
        tenant: "t1".into(),
        action: plan.action,
        resource_type: text("resourceType"),
        resource_id: text("id"),
        version: "2".into(),
        time: chrono::Utc::now(),
        source: "proptest".into(),
        resource: (plan.action != Action::Delete).then(|| plan.current.clone()),
        previous: None,
    }
}

/// The subscriptions a linear scan matches; only those in force at `now` when given.
fn linear(
    index: &SubscriptionIndex,
    event: &ChangeEvent,
    previous: Option<&Value>,
    now: Option<chrono::DateTime<chrono::Utc>>,
) -> BTreeSet<String> {
    index
        .candidates(&event.tenant, &event.resource_type)
        .iter()
        .filter(|s| now.is_none_or(|now| s.in_force(now)))
        .filter(|s| s.criteria.matches(event, previous))
        // With a time, as the matcher answers: a member's own CEL filter applies too.
        .filter(|s| now.is_none() || s.cel_passes(event, previous))
        .map(|s| s.key.id.clone())
        .collect()
}

fn indexed(
    index: &SubscriptionIndex,
    event: &ChangeEvent,
    previous: Option<&Value>,
) -> BTreeSet<String> {
    let candidates = index.candidates_for(event, previous);
    let unique: BTreeSet<*const ActiveSubscription> =
        candidates.iter().map(|s| Arc::as_ptr(s)).collect();
    assert_eq!(
        unique.len(),
        candidates.len(),
        "a candidate was returned twice"
    );
    candidates
        .into_iter()
        .filter(|s| s.criteria.matches(event, previous))
        .map(|s| s.key.id.clone())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn index_and_linear_scan_match_the_same_subscriptions(
        plans in prop::collection::vec(subscription(), 1..40),
        copies in prop::collection::vec(1usize..=3, 40),
        removed in prop::collection::vec(any::<bool>(), 120),
        ended in prop::collection::vec(prop::bool::weighted(0.2), 120),
        cels in prop::collection::vec(0u8..4, 120),
        events in prop::collection::vec(event(), 1..12),
    ) {
        let topics = topics();
        let now = chrono::Utc::now();
        let mut index = SubscriptionIndex::default();
        let mut keys = Vec::new();
        for (i, plan) in plans.iter().enumerate() {
            if let Some(criteria) = compile(plan, &topics) {
                for copy in 0..copies[i] {
                    let key = SubscriptionKey::new("t1", format!("s{i}-{copy}"));
                    let criteria = criteria.clone();
                    // Some members of a group have ended: they must not be expanded.
                    let end = ended[keys.len()].then(|| now - chrono::Duration::hours(1));
                    // Some members carry their own CEL filter: a group expands member by member.
                    let cel = match cels[keys.len()] {
                        1 => Some("true"),
                        2 => Some("has(current.status) && current.status == 'final'"),
                        _ => None,
                    }
                    .map(|source| Arc::new(herald_criteria::CelFilter::compile(source).expect("compiles")));
                    index.insert(ActiveSubscription { key: key.clone(), criteria, end, cel });
                    keys.push(key);
                }
            }
        }
        for (key, remove) in keys.iter().zip(&removed) {
            if *remove {
                index.remove(key);
            }
        }
        for plan in &events {
            let event = change_event(plan);
            let previous = plan.previous.as_ref();
            let expected = linear(&index, &event, previous, None);
            prop_assert_eq!(&indexed(&index, &event, previous), &expected, "event {:?}", plan);
            let keys: BTreeSet<String> = index
                .matching_keys(&event, previous, now)
                .into_iter()
                .map(|k| k.id)
                .collect();
            let in_force = linear(&index, &event, previous, Some(now));
            prop_assert_eq!(&keys, &in_force, "matching_keys, event {:?}", plan);
        }
    }
}
