//! Prints the matching benchmark table (see `herald_matcher::bench`) for 10k, 100k and
//! 1M subscriptions, indexed and as a linear scan. Memory here is resident-set growth
//! (allocator overhead included, and only meaningful for the first run of a process);
//! `match_memory` counts heap bytes exactly, without slowing the timed matching.
//!
//! `cargo run --release -p herald-matcher --example match_bench [-- SIZES...]`, e.g.
//! `-- 10000 100000` (default: 10000 100000 1000000); `--index-only` skips the linear
//! scan; `--events=N` sets the indexed runs' events (default 200,000; fewer keeps
//! `valgrind --tool=callgrind` runs short). The linear scan uses fewer events (it is
//! orders of magnitude slower), scaled to the size.

use herald_matcher::bench::{run_match_benchmark_with, MatchBenchOptions, MatchBenchReport};

const INDEXED_EVENTS: usize = 200_000;

fn linear_events(subscriptions: usize) -> usize {
    // About 20 million subscription evaluations per linear run.
    (20_000_000 / subscriptions.max(1)).clamp(20, 20_000)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let with_linear = !args.iter().any(|a| a == "--index-only");
    let indexed_events = args
        .iter()
        .find_map(|a| a.strip_prefix("--events="))
        .and_then(|n| n.replace('_', "").parse().ok())
        .unwrap_or(INDEXED_EVENTS);
    let sizes: Vec<usize> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .filter_map(|a| a.replace('_', "").parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000, 1_000_000]
    } else {
        sizes
    };
    let options = MatchBenchOptions::new;
    println!("{}", MatchBenchReport::table_header());
    let mut ratios = Vec::new();
    for subscriptions in sizes {
        let indexed = run_match_benchmark_with(options(subscriptions, indexed_events, true));
        println!("{}", indexed.table_row());
        if !with_linear {
            println!("{indexed}");
            continue;
        }
        let linear =
            run_match_benchmark_with(options(subscriptions, linear_events(subscriptions), false));
        println!("{}", linear.table_row());
        ratios.push((
            subscriptions,
            indexed.events_per_second / linear.events_per_second.max(f64::MIN_POSITIVE),
            indexed,
        ));
    }
    println!();
    for (subscriptions, ratio, indexed) in &ratios {
        println!("{subscriptions} subscriptions: index / linear scan = {ratio:.0}x");
        println!("{indexed}");
    }
}
