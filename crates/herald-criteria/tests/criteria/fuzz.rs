//! Deterministic fuzz-ish tests: pseudo-random criteria, filters, topics and JSON never
//! make the crate panic.

use herald_criteria::{Interaction, SearchQuery, TopicDefinition};
use serde_json::{json, Value};

use crate::fixtures;

/// A small xorshift generator (deterministic, dependency-free).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

const FRAGMENTS: &[&str] = &[
    "Observation",
    "Patient",
    "Encounter",
    "DiagnosticReport",
    "Foo",
    "/",
    "?",
    "&",
    "=",
    ":",
    ",",
    "|",
    "\\",
    "\\,",
    "%",
    "%2",
    "%FF",
    "%2C",
    "%7C",
    "%3A",
    "+",
    ".",
    "-",
    "_",
    "#",
    "code",
    "date",
    "subject",
    "patient",
    "status",
    "name",
    "identifier",
    "_id",
    "_has",
    "_include",
    "_profile",
    "value-quantity",
    "missing",
    "not",
    "text",
    "exact",
    "contains",
    "below",
    "above",
    "Patient/",
    "123",
    "http://loinc.org",
    "2345-7",
    "gt",
    "lt",
    "ap",
    "ne",
    "sa",
    "eb",
    "2024",
    "-03",
    "-05",
    "T10:15",
    ":00",
    ".123",
    "Z",
    "+01:00",
    "true",
    "false",
    "é",
    "Ü",
    "😀",
    " ",
    "_history/2",
    "urn:uuid:x",
    "\u{0}",
];

fn random_string(rng: &mut Rng) -> String {
    let len = 1 + rng.next() % 12;
    (0..len).map(|_| *rng.pick(FRAGMENTS)).collect()
}

fn random_json(rng: &mut Rng, depth: u32) -> Value {
    let leaf = depth == 0 || rng.next() % 3 == 0;
    match rng.next() % if leaf { 5 } else { 7 } {
        0 => Value::Null,
        1 => json!(rng.next() % 2 == 0),
        2 => json!(rng.next() % 1000),
        3 => json!(random_string(rng)),
        4 => json!(*rng.pick(&[
            "2024-03-05",
            "2024-03-05T10:15:00Z",
            "Patient/123",
            "final",
            "x"
        ])),
        5 => Value::Array(
            (0..rng.next() % 4)
                .map(|_| random_json(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let keys = [
                "code",
                "coding",
                "system",
                "value",
                "reference",
                "type",
                "start",
                "end",
                "text",
                "display",
                "identifier",
                "family",
                "given",
                "subject",
                "status",
                "period",
                "effectivePeriod",
                "effectiveDateTime",
                "meta",
                "profile",
                "telecom",
            ];
            let mut map = serde_json::Map::new();
            for _ in 0..rng.next() % 5 {
                map.insert((*rng.pick(&keys)).to_owned(), random_json(rng, depth - 1));
            }
            Value::Object(map)
        }
    }
}

/// A mostly well-formed query: `name[:modifier]=value&…` from plausible parts.
fn structured_query(rng: &mut Rng) -> String {
    const NAMES: &[&str] = &[
        "code",
        "date",
        "subject",
        "patient",
        "status",
        "name",
        "identifier",
        "_id",
        "_profile",
        "_lastUpdated",
        "category",
        "performer",
        "birthdate",
        "family",
        "telecom",
        "class",
    ];
    const MODIFIERS: &[&str] = &[
        "",
        "",
        "",
        ":not",
        ":missing",
        ":text",
        ":exact",
        ":contains",
        ":Patient",
        ":below",
        ":identifier",
    ];
    const VALUES: &[&str] = &[
        "final",
        "2345-7",
        "http://loinc.org|2345-7",
        "|x",
        "Patient/123",
        "123",
        "true",
        "ge2024",
        "2024-03-05",
        "lt2024-03-05T10:15:00Z",
        "mull",
        "a,b",
        "sa2023",
        "Patient/123/_history/1",
    ];
    let count = 1 + rng.next() % 3;
    (0..count)
        .map(|_| {
            format!(
                "{}{}={}",
                rng.pick(NAMES),
                rng.pick(MODIFIERS),
                rng.pick(VALUES)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[test]
fn random_criteria_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut resources = fixtures::all();
    for _ in 0..20 {
        let mut v = random_json(&mut rng, 4);
        if let Value::Object(map) = &mut v {
            map.insert(
                "resourceType".into(),
                json!(*rng.pick(&["Observation", "Patient", "Encounter"])),
            );
        }
        resources.push(v);
    }
    let mut compiled = 0;
    for i in 0..600 {
        let criteria = if i % 3 == 0 {
            format!(
                "{}?{}",
                rng.pick(&["Observation", "Patient", "Encounter"]),
                structured_query(&mut rng)
            )
        } else if i % 3 == 1 {
            format!(
                "{}?{}",
                rng.pick(&["Observation", "Patient", "Encounter"]),
                random_string(&mut rng)
            )
        } else {
            random_string(&mut rng)
        };
        if let Ok(q) = SearchQuery::parse(&criteria) {
            compiled += 1;
            for r in &resources {
                let _ = q.matches(r);
            }
        }
        let _ = SearchQuery::parse_for_type("Encounter", &criteria);
    }
    assert!(
        compiled > 10,
        "generator should produce some valid criteria ({compiled})"
    );
}

#[test]
fn random_topics_and_filters_never_panic() {
    let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
    let topic = TopicDefinition::from_resource(&json!({
        "resourceType": "SubscriptionTopic",
        "url": "http://example.org/t",
        "resourceTrigger": [{"resource": "Encounter", "queryCriteria": {"previous": "status:not=finished", "current": "status=finished", "requireBoth": true}}],
        "canFilterBy": [{"filterParameter": "patient", "modifier": ["missing", "type", "not"]}, {"filterParameter": "date", "comparator": ["gt", "lt"]}]
    }))
    .unwrap();
    for _ in 0..300 {
        let filter = random_string(&mut rng);
        if let Ok(f) = topic.compile_filters(&[filter]) {
            for r in fixtures::all() {
                let _ = f.matches("Encounter", &r);
            }
        }
        let random = random_json(&mut rng, 4);
        let _ = topic.triggers(
            Interaction::Update,
            "Encounter",
            Some(&random),
            Some(&random),
        );
        let _ = topic.triggers(Interaction::Delete, "Encounter", None, Some(&random));
        let mut t = json!({"resourceType": "SubscriptionTopic", "url": "u", "resourceTrigger": [random_json(&mut rng, 3)]});
        if rng.next() % 2 == 0 {
            t["canFilterBy"] = random_json(&mut rng, 3);
        }
        let _ = TopicDefinition::from_resource(&t);
        let _ = TopicDefinition::from_resource(&random_json(&mut rng, 4));
    }
}
