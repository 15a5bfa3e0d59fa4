//! `cargo bench -p routing --bench trie -- [--quick] [--json]`: the routing trie's floor
//! lookups against a `BTreeMap`'s `range(..=key).next_back()`, the question a router asks on
//! every request ("which partition holds this hash").
//!
//! Workload: 100,000 ranges (10 random table ids, a random 128-bit start each), the same
//! `proto::cluster::Route` values in both engines (what meta and the router store), then a
//! million floor lookups of random keys (a random one of the 10 tables, a random hash) in
//! each engine. The trie is compacted (`Trie::compact`, depth-first layout) after the build,
//! as its owners do after a load or a sync; `NO_COMPACT=1` leaves it as inserted. The
//! lookups run in slices (10, or 4 with `--quick` and a fifth of the
//! lookups), the engines taking turns and swapping who goes first, so that a noisy neighbour
//! on the shared machine hits both alike. Latency: each batch of 1,000 lookups is timed and
//! its mean per lookup is one sample (a single lookup is too short to time alone); p50 and
//! p99 are over those samples.
//!
//! Output: one `BENCHMARKS.md` JSON line per engine on stdout with `--json`; a human table
//! and the target (the trie at least as fast as the `BTreeMap`) on stderr always.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use proto::cluster::{Placement, Route};
use routing::{route_key, split_route_key, Key, Trie};

/// Ranges in both engines (the figure).
const RANGES: usize = 100_000;
/// Distinct tables the ranges belong to.
const TABLES: usize = 10;
/// Floor lookups per engine in a full run (the figure).
const LOOKUPS_FULL: usize = 1_000_000;
/// Floor lookups per engine with `--quick`.
const LOOKUPS_QUICK: usize = 200_000;
/// Lookups timed together as one latency sample.
const BATCH_LOOKUPS: usize = 1_000;

/// splitmix64: a fixed-seed generator, so every run measures the same maps and keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_u128(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }
}

/// The engines measured, as the JSON's `"engine"` names them.
#[derive(Clone, Copy)]
enum Engine {
    Percore,
    BTreeMap,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Percore => "percore",
            Engine::BTreeMap => "btreemap",
        }
    }
}

/// What one engine did over all slices.
#[derive(Default)]
struct Tally {
    elapsed: Duration,
    lookups: usize,
    /// Mean nanoseconds per lookup of each batch.
    batch_ns: Vec<f64>,
    /// Folded from every answer, so that no lookup can be optimised away, and compared
    /// between engines.
    checksum: u64,
}

impl Tally {
    fn ops_per_s(&self) -> f64 {
        self.lookups as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_us(&self, q: f64) -> f64 {
        let mut sorted = self.batch_ns.clone();
        sorted.sort_by(f64::total_cmp);
        let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(i).copied().unwrap_or(0.0) / 1_000.0
    }
}

/// Folds one answer into a checksum.
fn fold(checksum: u64, answer: Option<(&Key, &Route)>) -> u64 {
    match answer {
        Some((_, route)) => checksum.rotate_left(5) ^ route.partition_id,
        None => checksum.rotate_left(5) ^ 0xdead,
    }
}

fn run_slice(
    engine: Engine,
    trie: &Trie<Route>,
    map: &BTreeMap<Key, Route>,
    keys: &[Key],
    tally: &mut Tally,
) {
    let started = Instant::now();
    for batch in keys.chunks(BATCH_LOOKUPS) {
        let t0 = Instant::now();
        let mut sum = tally.checksum;
        match engine {
            Engine::Percore => {
                for key in batch {
                    sum = fold(sum, trie.floor(black_box(key)));
                }
            }
            Engine::BTreeMap => {
                for key in batch {
                    sum = fold(sum, map.range(..=*black_box(key)).next_back());
                }
            }
        }
        tally.checksum = black_box(sum);
        tally
            .batch_ns
            .push(t0.elapsed().as_nanos() as f64 / batch.len() as f64);
    }
    tally.elapsed += started.elapsed();
    tally.lookups += keys.len();
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json = args.iter().any(|a| a == "--json");
    let lookups = if quick { LOOKUPS_QUICK } else { LOOKUPS_FULL };
    let slices = if quick { 4 } else { 10 };

    let mut rng = Rng(0x5eed_0005);
    let tables: Vec<u64> = (0..TABLES).map(|_| rng.next()).collect();
    let mut trie: Trie<Route> = Trie::new();
    let mut map: BTreeMap<Key, Route> = BTreeMap::new();
    let build = Instant::now();
    for i in 0..RANGES {
        let table_id = tables[rng.next() as usize % TABLES];
        let key = route_key(table_id, rng.next_u128());
        let core = (i % 8) as u32;
        let route = Route {
            table_id,
            table: format!("table-{:02}", table_id % 100),
            index: i as u32,
            partitions: RANGES as u32,
            partition_id: i as u64,
            epoch: 1,
            replicas: vec![Placement {
                node: (i % 3) as u64,
                core,
                addr: format!("10.0.0.{}:{}", i % 3, 7000 + core),
            }],
            leader: 0,
        };
        trie.insert(key, route.clone());
        map.insert(key, route);
    }
    // What meta and the router do after loading or syncing a map: lay the trie out
    // depth-first. `NO_COMPACT=1` measures the trie as random inserts left it.
    let compacted = std::env::var_os("NO_COMPACT").is_none();
    if compacted {
        trie.compact();
    }
    let build_s = build.elapsed().as_secs_f64();
    let keys: Vec<Key> = (0..lookups)
        .map(|_| route_key(tables[rng.next() as usize % TABLES], rng.next_u128()))
        .collect();

    // Both engines must give the same answers before their speed means anything.
    for key in keys.iter().take(10_000) {
        let a = trie.floor(key).map(|(k, _)| *k);
        let b = map.range(..=*key).next_back().map(|(k, _)| *k);
        if a != b {
            eprintln!("trie and BTreeMap disagree on {:?}", split_route_key(key));
            return ExitCode::FAILURE;
        }
    }

    let mut tallies = [Tally::default(), Tally::default()];
    let engines = [Engine::Percore, Engine::BTreeMap];
    let slice_len = lookups.div_ceil(slices);
    for (s, slice) in keys.chunks(slice_len).enumerate() {
        let order = if s % 2 == 0 { [0, 1] } else { [1, 0] };
        for e in order {
            run_slice(engines[e], &trie, &map, slice, &mut tallies[e]);
        }
    }
    if tallies[0].checksum != tallies[1].checksum {
        eprintln!("trie and BTreeMap answers differ (checksums)");
        return ExitCode::FAILURE;
    }

    let setup = format!(
        "{RANGES} ranges over {TABLES} tables, values proto Route, trie {}; {} random floor \
         lookups per engine in {slices} interleaved slices, one thread; latency = mean per \
         lookup of each batch of {BATCH_LOOKUPS}{}",
        if compacted {
            "compacted"
        } else {
            "as inserted"
        },
        lookups,
        if quick { "; quick" } else { "" }
    );
    if json {
        for (engine, t) in engines.iter().zip(&tallies) {
            println!(
                "{{\"bench\":\"router\",\"case\":\"trie_lookup\",\"engine\":\"{}\",\"ops_per_s\":{:.0},\"p50_us\":{:.3},\"p99_us\":{:.3},\"setup\":\"{}\"}}",
                engine.name(),
                t.ops_per_s(),
                t.percentile_us(0.50),
                t.percentile_us(0.99),
                setup
            );
        }
    }
    eprintln!("router/trie_lookup ({setup}; built both in {build_s:.2} s)");
    eprintln!(
        "{:<10} {:>14} {:>10} {:>10}",
        "engine", "lookups/s", "p50 µs", "p99 µs"
    );
    for (engine, t) in engines.iter().zip(&tallies) {
        eprintln!(
            "{:<10} {:>14.0} {:>10.3} {:>10.3}",
            engine.name(),
            t.ops_per_s(),
            t.percentile_us(0.50),
            t.percentile_us(0.99)
        );
    }
    let ratio = tallies[0].ops_per_s() / tallies[1].ops_per_s();
    eprintln!(
        "target: trie lookups at least as fast as the BTreeMap's: {:.2}x, {}",
        ratio,
        if ratio >= 1.0 { "met" } else { "MISSED" }
    );
    ExitCode::SUCCESS
}
