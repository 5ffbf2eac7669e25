//! The matching benchmark behind `herald bench match`, the criterion bench and the
//! `match_bench` example: a realistic mix of subscriptions in one tenant, a stream of
//! lab Observations and MedicationRequests for random patients, and the time to find
//! and fully evaluate the matching subscriptions of each event, single-threaded, with
//! the inverted index or with a linear scan of the (tenant, type) list.
//!
//! The mix, for `n` subscriptions over `max(n / 4, 100)` patients and 5,000 LOINC codes:
//!
//! | share | subscription |
//! |---|---|
//! | 75 % | per-patient lab dashboard: `Observation?subject=Patient/X&category=laboratory` |
//! | 20 % | per-patient medication watcher: topic `medication-order`, filter `patient=Patient/X` |
//! | 3 % | code-specific lab watcher: `Observation?code=http://loinc.org\|CODE` |
//! | 1 % | per-patient FHIRPath lab topic (`fhirPathCriteria`), filter `patient=Patient/X` |
//! | 1 % | per-patient CEL topic "order became active" (CEL extension), filter `patient=Patient/X` |
//! | 10 | broad pharmacy: `MedicationRequest?status=active` |
//! | 2 + 2 | the FHIRPath and CEL topics without a filter (on the always-check lists) |
//!
//! Events: 75 % lab Observations (create; final, laboratory, a random code and patient),
//! 25 % MedicationRequests (create, or an update with its previous version: a status
//! change). Only matching is timed: building each event is not.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_criteria::{SearchQuery, TopicDefinition, CEL_CRITERIA_EXTENSION};
use herald_fhir::{Action, ChangeEvent};
use herald_store::SubscriptionKey;
use serde_json::{json, Value};

use crate::catalog::builtin_topics;
use crate::compile::{ActiveSubscription, CompiledCriteria};
use crate::index::{IndexStats, SubscriptionIndex};

const TENANT: &str = "bench";
const CODES: usize = 5_000;
const BROAD_PHARMACY: usize = 10;
const UNFILTERED_SCRIPTED_TOPICS: usize = 2;

const FHIRPATH_LAB_TOPIC_URL: &str =
    "http://herald.health/fhir/SubscriptionTopic/bench-lab-fhirpath";
const CEL_ORDER_TOPIC_URL: &str =
    "http://herald.health/fhir/SubscriptionTopic/bench-order-active-cel";
const MEDICATION_ORDER_TOPIC_URL: &str =
    "http://herald.health/fhir/SubscriptionTopic/medication-order";

/// A small deterministic generator (xorshift64*): the benchmark needs no dependency.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn loinc(code_index: usize) -> String {
    format!("{}-{}", 10_000 + code_index, code_index % 10)
}

fn fhirpath_lab_topic() -> Value {
    json!({
        "resourceType": "SubscriptionTopic",
        "url": FHIRPATH_LAB_TOPIC_URL,
        "status": "active",
        "resourceTrigger": [{
            "resource": "Observation",
            "supportedInteraction": ["create", "update"],
            "fhirPathCriteria": "%current.category.coding.where(code = 'laboratory').exists() and (%current.status = 'final' or %current.status = 'amended' or %current.status = 'corrected')"
        }],
        "canFilterBy": [{"resource": "Observation", "filterParameter": "patient"}]
    })
}

fn cel_order_topic() -> Value {
    json!({
        "resourceType": "SubscriptionTopic",
        "url": CEL_ORDER_TOPIC_URL,
        "status": "active",
        "resourceTrigger": [{
            "resource": "MedicationRequest",
            "supportedInteraction": ["create", "update"],
            "extension": [{
                "url": CEL_CRITERIA_EXTENSION,
                "valueString": "current.status == 'active' && (previous == null || previous.status != 'active')"
            }]
        }],
        "canFilterBy": [{"resource": "MedicationRequest", "filterParameter": "patient"}]
    })
}

/// The benchmark's topics: the built-in `medication-order`, a FHIRPath lab topic and a
/// CEL order topic.
struct Topics {
    medication_order: Arc<TopicDefinition>,
    fhirpath_lab: Arc<TopicDefinition>,
    cel_order: Arc<TopicDefinition>,
}

impl Topics {
    fn compile() -> Topics {
        let compile = |resource: &Value| match TopicDefinition::from_resource(resource) {
            Ok(topic) => Arc::new(topic),
            // The topics are constants of this module, covered by its tests.
            Err(e) => panic!("benchmark topic does not compile: {e}"),
        };
        let medication_order = builtin_topics()
            .iter()
            .find(|t| t["url"] == MEDICATION_ORDER_TOPIC_URL)
            .map(compile);
        Topics {
            medication_order: medication_order
                .unwrap_or_else(|| panic!("built-in topic {MEDICATION_ORDER_TOPIC_URL} missing")),
            fhirpath_lab: compile(&fhirpath_lab_topic()),
            cel_order: compile(&cel_order_topic()),
        }
    }
}

fn search(criteria: &str) -> CompiledCriteria {
    match SearchQuery::parse(criteria) {
        Ok(query) => CompiledCriteria::Search(query),
        Err(e) => panic!("benchmark criteria '{criteria}' does not compile: {e}"),
    }
}

fn topic(topic: &Arc<TopicDefinition>, filters: &[String]) -> CompiledCriteria {
    match topic.compile_filters(filters) {
        Ok(filters) => CompiledCriteria::Topic {
            topic: Arc::clone(topic),
            filters,
        },
        Err(e) => panic!("benchmark filter {filters:?} does not compile: {e}"),
    }
}

/// A subscription id shaped like the UUIDs Herald assigns.
fn subscription_id(rng: &mut Rng) -> String {
    let (a, b) = (rng.next(), rng.next());
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

/// The compiled subscriptions of the mix (see the module docs), deterministic for a seed.
pub fn benchmark_subscriptions(count: usize, seed: u64) -> Vec<ActiveSubscription> {
    let topics = Topics::compile();
    let patients = patients_for(count);
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(count);
    let fixed = BROAD_PHARMACY + 2 * UNFILTERED_SCRIPTED_TOPICS;
    for i in 0..count {
        let criteria = if i < fixed.min(count) {
            match i {
                i if i < BROAD_PHARMACY => search("MedicationRequest?status=active"),
                i if i < BROAD_PHARMACY + UNFILTERED_SCRIPTED_TOPICS => {
                    topic(&topics.fhirpath_lab, &[])
                }
                _ => topic(&topics.cel_order, &[]),
            }
        } else {
            let patient = format!("Patient/p{}", rng.below(patients));
            match rng.below(10_000) {
                0..7_500 => search(&format!(
                    "Observation?subject={patient}&category=laboratory"
                )),
                7_500..9_500 => topic(&topics.medication_order, &[format!("patient={patient}")]),
                9_500..9_800 => search(&format!(
                    "Observation?code=http://loinc.org|{}",
                    loinc(rng.below(CODES))
                )),
                9_800..9_900 => topic(&topics.fhirpath_lab, &[format!("patient={patient}")]),
                _ => topic(&topics.cel_order, &[format!("patient={patient}")]),
            }
        };
        out.push(ActiveSubscription {
            key: SubscriptionKey::new(TENANT, subscription_id(&mut rng)),
            criteria,
            end: None,
            cel: None,
        });
    }
    out
}

fn patients_for(subscriptions: usize) -> usize {
    (subscriptions / 4).max(100)
}

/// Generates the benchmark's change events.
#[derive(Debug, Clone)]
pub struct EventStream {
    rng: Rng,
    patients: usize,
    sequence: u64,
}

impl EventStream {
    pub fn new(subscriptions: usize, seed: u64) -> EventStream {
        EventStream {
            rng: Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15),
            patients: patients_for(subscriptions),
            sequence: 0,
        }
    }

    /// The next event and the previous version of its resource, where there is one.
    pub fn next_event(&mut self) -> (ChangeEvent, Option<Value>) {
        self.sequence += 1;
        let patient = format!("Patient/p{}", self.rng.below(self.patients));
        let id = format!("r{}", self.sequence);
        let (resource_type, action, resource, previous) = if self.rng.below(4) < 3 {
            let code = loinc(self.rng.below(CODES));
            let value = 3.0 + self.rng.below(400) as f64 / 100.0;
            let observation = lab_observation(&id, &patient, &code, value);
            ("Observation", Action::Create, observation, None)
        } else {
            const STATUSES: &[&str] = &["active", "active", "on-hold", "completed", "stopped"];
            let status = STATUSES[self.rng.below(STATUSES.len())];
            let medication = 100_000 + self.rng.below(500);
            let current = medication_request(&id, &patient, status, medication);
            if self.rng.below(2) == 0 {
                ("MedicationRequest", Action::Create, current, None)
            } else {
                let before = STATUSES[self.rng.below(STATUSES.len())];
                let previous = medication_request(&id, &patient, before, medication);
                ("MedicationRequest", Action::Update, current, Some(previous))
            }
        };
        let event = ChangeEvent {
            event_id: format!("e{}", self.sequence),
            tenant: TENANT.to_owned(),
            action,
            resource_type: resource_type.to_owned(),
            resource_id: id,
            version: if previous.is_some() { "2" } else { "1" }.to_owned(),
            time: chrono::Utc::now(),
            source: "bench".to_owned(),
            resource: Some(resource),
            previous: previous.clone(),
        };
        (event, previous)
    }
}

fn lab_observation(id: &str, patient: &str, code: &str, value: f64) -> Value {
    json!({
        "resourceType": "Observation",
        "id": id,
        "meta": {"versionId": "1", "lastUpdated": "2026-01-15T10:30:00Z"},
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory",
            "display": "Laboratory"
        }]}],
        "code": {
            "coding": [{"system": "http://loinc.org", "code": code, "display": "Lab test"}],
            "text": "Lab test"
        },
        "subject": {"reference": patient},
        "encounter": {"reference": "Encounter/e1"},
        "effectiveDateTime": "2026-01-15T09:00:00Z",
        "issued": "2026-01-15T10:30:00Z",
        "performer": [{"reference": "Organization/lab"}],
        "valueQuantity": {
            "value": value,
            "unit": "mmol/L",
            "system": "http://unitsofmeasure.org",
            "code": "mmol/L"
        },
        "referenceRange": [{
            "low": {"value": 3.5, "unit": "mmol/L"},
            "high": {"value": 5.1, "unit": "mmol/L"}
        }]
    })
}

fn medication_request(id: &str, patient: &str, status: &str, medication: usize) -> Value {
    json!({
        "resourceType": "MedicationRequest",
        "id": id,
        "meta": {"versionId": "1", "lastUpdated": "2026-01-15T10:30:00Z"},
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": medication.to_string()
            }]
        },
        "subject": {"reference": patient},
        "authoredOn": "2026-01-15",
        "requester": {"reference": "Practitioner/dr1"},
        "dosageInstruction": [{"text": "1 tablet daily"}]
    })
}

/// The benchmark's subscriptions loaded into a [`SubscriptionIndex`].
#[derive(Debug)]
pub struct MatchWorkload {
    pub index: SubscriptionIndex,
    pub compile_time: Duration,
    pub index_build_time: Duration,
}

impl MatchWorkload {
    pub fn build(subscriptions: usize, seed: u64) -> MatchWorkload {
        let started = Instant::now();
        let compiled = benchmark_subscriptions(subscriptions, seed);
        let compile_time = started.elapsed();
        let started = Instant::now();
        let mut index = SubscriptionIndex::default();
        for subscription in compiled {
            index.insert(subscription);
        }
        MatchWorkload {
            index,
            compile_time,
            index_build_time: started.elapsed(),
        }
    }

    /// Finds and fully evaluates the subscriptions `event` matches; returns
    /// (criteria evaluated, matches). Indexed, that is the matcher's path
    /// ([`SubscriptionIndex::matching`]): each candidate criteria group evaluated once.
    pub fn match_event(
        &self,
        event: &ChangeEvent,
        previous: Option<&Value>,
        index_enabled: bool,
    ) -> (usize, usize) {
        let now = event.time;
        if index_enabled {
            let mut matched = Vec::new();
            let evaluated = self.index.match_into(event, previous, now, &mut matched);
            (evaluated, matched.len())
        } else {
            // Today's matcher before the index: every subscription of the type, each
            // evaluated on its own.
            let candidates = self.index.candidates(&event.tenant, &event.resource_type);
            let matches = candidates
                .iter()
                .filter(|s| s.in_force(now) && s.criteria.matches(event, previous))
                .count();
            (candidates.len(), matches)
        }
    }
}

/// Options of [`run_match_benchmark_with`].
#[derive(Debug, Clone, Copy)]
pub struct MatchBenchOptions {
    pub subscriptions: usize,
    pub events: usize,
    pub index_enabled: bool,
    pub seed: u64,
    /// Bytes currently allocated on the heap, when the running binary counts
    /// allocations (a counting global allocator). Without it, memory is the growth of
    /// the resident set, which is coarser.
    pub allocated_bytes: Option<fn() -> usize>,
}

impl MatchBenchOptions {
    pub fn new(subscriptions: usize, events: usize, index_enabled: bool) -> MatchBenchOptions {
        MatchBenchOptions {
            subscriptions,
            events,
            index_enabled,
            seed: 42,
            allocated_bytes: None,
        }
    }
}

/// How memory per subscription was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryMethod {
    /// Heap bytes counted by a global allocator, after minus before loading.
    AllocatorCount,
    /// Growth of the resident set (`/proc/self/statm`, 4 KiB pages).
    ResidentSetGrowth,
    Unavailable,
}

impl fmt::Display for MemoryMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemoryMethod::AllocatorCount => "heap bytes counted by the allocator",
            MemoryMethod::ResidentSetGrowth => "resident set growth",
            MemoryMethod::Unavailable => "not measured",
        })
    }
}

/// What one benchmark run measured.
#[derive(Debug, Clone)]
pub struct MatchBenchReport {
    pub subscriptions: usize,
    pub events: usize,
    pub index_enabled: bool,
    /// Events matched per second of matching time, one thread.
    pub events_per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Compiling every subscription's criteria.
    pub compile_time: Duration,
    /// Inserting the compiled subscriptions into the index.
    pub index_build_time: Duration,
    /// Compiled criteria plus index, per subscription.
    pub memory_per_subscription: Option<f64>,
    pub memory_method: MemoryMethod,
    /// Criteria evaluated per event: distinct criteria groups (index) or every
    /// subscription of the type (linear scan).
    pub mean_candidates: f64,
    pub mean_matches: f64,
    pub index: IndexStats,
}

/// Runs the benchmark (see the module docs) with seed 42, measuring memory by
/// resident set growth.
pub fn run_match_benchmark(
    subscriptions: usize,
    events: usize,
    index_enabled: bool,
) -> MatchBenchReport {
    run_match_benchmark_with(MatchBenchOptions::new(subscriptions, events, index_enabled))
}

fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Runs the benchmark with explicit options.
pub fn run_match_benchmark_with(options: MatchBenchOptions) -> MatchBenchReport {
    let (memory_method, probe): (MemoryMethod, Box<dyn Fn() -> Option<usize>>) =
        match options.allocated_bytes {
            Some(allocated) => (
                MemoryMethod::AllocatorCount,
                Box::new(move || Some(allocated())),
            ),
            None if resident_bytes().is_some() => {
                (MemoryMethod::ResidentSetGrowth, Box::new(resident_bytes))
            }
            None => (MemoryMethod::Unavailable, Box::new(|| None)),
        };
    let before = probe();
    let workload = MatchWorkload::build(options.subscriptions, options.seed);
    let after = probe();
    let memory_per_subscription = match (before, after) {
        (Some(b), Some(a)) if options.subscriptions > 0 => {
            Some(a.saturating_sub(b) as f64 / options.subscriptions as f64)
        }
        _ => None,
    };

    let mut stream = EventStream::new(options.subscriptions, options.seed);
    let mut timings = Vec::with_capacity(options.events);
    let (mut candidates, mut matches) = (0usize, 0usize);
    for _ in 0..options.events {
        let (event, previous) = stream.next_event();
        let started = Instant::now();
        let (c, m) = workload.match_event(&event, previous.as_ref(), options.index_enabled);
        timings.push(started.elapsed());
        candidates += c;
        matches += m;
    }
    let total: Duration = timings.iter().sum();
    timings.sort_unstable();
    let percentile = |p: f64| {
        if timings.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((timings.len() as f64 * p).ceil() as usize).clamp(1, timings.len());
        timings[rank - 1]
    };
    let events = options.events.max(1) as f64;
    MatchBenchReport {
        subscriptions: options.subscriptions,
        events: options.events,
        index_enabled: options.index_enabled,
        events_per_second: if total.is_zero() {
            0.0
        } else {
            options.events as f64 / total.as_secs_f64()
        },
        p50: percentile(0.50),
        p99: percentile(0.99),
        compile_time: workload.compile_time,
        index_build_time: workload.index_build_time,
        memory_per_subscription,
        memory_method,
        mean_candidates: candidates as f64 / events,
        mean_matches: matches as f64 / events,
        index: workload.index.stats(),
    }
}

impl MatchBenchReport {
    /// Header line matching [`MatchBenchReport::table_row`].
    pub fn table_header() -> &'static str {
        "| subscriptions | mode | events | events/s (1 core) | p50 µs | p99 µs | evaluations/event | matches/event | compile s | index build s | bytes/subscription |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    }

    /// One markdown table row.
    pub fn table_row(&self) -> String {
        format!(
            "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {} |",
            self.subscriptions,
            if self.index_enabled {
                "index"
            } else {
                "linear scan"
            },
            self.events,
            self.events_per_second,
            self.p50.as_secs_f64() * 1e6,
            self.p99.as_secs_f64() * 1e6,
            self.mean_candidates,
            self.mean_matches,
            self.compile_time.as_secs_f64(),
            self.index_build_time.as_secs_f64(),
            self.memory_per_subscription
                .map_or_else(|| "n/a".to_owned(), |b| format!("{b:.0}")),
        )
    }
}

impl fmt::Display for MatchBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = if self.index_enabled {
            "inverted index"
        } else {
            "linear scan"
        };
        writeln!(
            f,
            "matching {} subscriptions, {} events, {mode}, one thread",
            self.subscriptions, self.events
        )?;
        writeln!(f, "  events/s            {:.0}", self.events_per_second)?;
        writeln!(
            f,
            "  per event           p50 {:.1} µs, p99 {:.1} µs",
            self.p50.as_secs_f64() * 1e6,
            self.p99.as_secs_f64() * 1e6
        )?;
        writeln!(
            f,
            "  per event           {:.1} criteria evaluated, {:.2} matches",
            self.mean_candidates, self.mean_matches
        )?;
        writeln!(
            f,
            "  compile criteria    {:.3} s",
            self.compile_time.as_secs_f64()
        )?;
        writeln!(
            f,
            "  index build         {:.3} s",
            self.index_build_time.as_secs_f64()
        )?;
        match self.memory_per_subscription {
            Some(bytes) => writeln!(
                f,
                "  memory/subscription {bytes:.0} bytes ({}; compiled criteria + index)",
                self.memory_method
            )?,
            None => writeln!(f, "  memory/subscription not measured")?,
        }
        write!(
            f,
            "  index               {} criteria groups, {} posting keys in {} parameters, largest posting {}, {} always-check groups",
            self.index.criteria_groups,
            self.index.posting_keys,
            self.index.dimensions,
            self.index.largest_posting,
            self.index.always_check
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_compiles_and_the_index_agrees_with_the_linear_scan() {
        let workload = MatchWorkload::build(2_000, 7);
        assert_eq!(workload.index.len(), 2_000);
        let mut stream = EventStream::new(2_000, 7);
        let (mut indexed_matches, mut linear_matches) = (0, 0);
        for _ in 0..300 {
            let (event, previous) = stream.next_event();
            let (candidates, indexed) = workload.match_event(&event, previous.as_ref(), true);
            let (all, linear) = workload.match_event(&event, previous.as_ref(), false);
            assert_eq!(indexed, linear, "event {event:?}");
            assert!(candidates <= all);
            indexed_matches += indexed;
            linear_matches += linear;
        }
        assert_eq!(indexed_matches, linear_matches);
        assert!(indexed_matches > 0, "the mix should produce matches");
        // Several dashboards per patient, watchers per code, the broad pharmacy
        // subscriptions: identical criteria share a group.
        let stats = workload.index.stats();
        assert!(
            stats.criteria_groups < stats.subscriptions * 9 / 10,
            "{stats:?}"
        );
    }

    #[test]
    fn report_displays() {
        let report = run_match_benchmark(200, 50, true);
        let text = report.to_string();
        assert!(text.contains("events/s"), "{text}");
        assert!(report.table_row().starts_with("| 200 | index | 50 |"));
    }
}
