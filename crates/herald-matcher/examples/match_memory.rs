//! Heap bytes per subscription of the matching benchmark's mix (see
//! `herald_matcher::bench`), counted by a global allocator: the compiled criteria and
//! subscription keys, and the index on top of them. Kept apart from `match_bench`
//! because the counting allocator's atomic counters would slow the timed matching.
//!
//! `cargo run --release -p herald-matcher --example match_memory [-- SIZES...]`
//! (default: 10000 100000 1000000).

use std::alloc::System;
use std::time::Instant;

use herald_matcher::bench::benchmark_subscriptions;
use herald_matcher::{ActiveSubscription, SubscriptionIndex};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn allocated_bytes() -> usize {
    let stats = ALLOCATOR.stats();
    stats
        .bytes_allocated
        .saturating_sub(stats.bytes_deallocated)
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.replace('_', "").parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000, 1_000_000]
    } else {
        sizes
    };
    println!(
        "| subscriptions | criteria + keys B/sub | index B/sub | total B/sub | index build s |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for n in sizes {
        let before = allocated_bytes();
        let compiled = benchmark_subscriptions(n, 42);
        // The Vec's own buffer is not part of any subscription.
        let vec_buffer = compiled.capacity() * std::mem::size_of::<ActiveSubscription>();
        let criteria = allocated_bytes() - before - vec_buffer;
        let started = Instant::now();
        let mut index = SubscriptionIndex::default();
        for subscription in compiled {
            index.insert(subscription);
        }
        let build = started.elapsed();
        let total = allocated_bytes() - before;
        let per = |bytes: usize| bytes as f64 / n as f64;
        println!(
            "| {n} | {:.0} | {:.0} | {:.0} | {:.2} |",
            per(criteria),
            per(total.saturating_sub(criteria)),
            per(total),
            build.as_secs_f64()
        );
        drop(index);
    }
}
