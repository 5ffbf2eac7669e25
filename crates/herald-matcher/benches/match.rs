//! Criterion bench of matching one change event against the benchmark mix (see
//! `herald_matcher::bench`) at 10,000 subscriptions, with the inverted index and with a
//! linear scan. The full-size table comes from the `match_bench` example.
//!
//! `cargo bench -p herald-matcher --bench match`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use herald_matcher::bench::{EventStream, MatchWorkload};

const SUBSCRIPTIONS: usize = 10_000;

fn match_one_event(c: &mut Criterion) {
    let workload = MatchWorkload::build(SUBSCRIPTIONS, 42);
    let mut group = c.benchmark_group("match_event_10k_subscriptions");
    for (name, index_enabled) in [("index", true), ("linear_scan", false)] {
        let mut stream = EventStream::new(SUBSCRIPTIONS, 42);
        group.bench_function(name, |b| {
            // By reference: dropping the event's JSON is not part of matching.
            b.iter_batched_ref(
                || stream.next_event(),
                |(event, previous)| workload.match_event(event, previous.as_ref(), index_enabled),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn build_index(c: &mut Criterion) {
    c.bench_function("build_index_10k_subscriptions", |b| {
        b.iter(|| MatchWorkload::build(SUBSCRIPTIONS, 42).index.len())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = match_one_event, build_index
}
criterion_main!(benches);
