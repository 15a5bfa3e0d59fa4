//! The generator's cores driven end to end against test doubles of the store: the open-loop
//! schedule charges a stall to every request it delays, requests that can never be sent are
//! counted, and YCSB's insert-then-read workloads never read a record before it exists.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;

use perf::driver::{LoadSpec, RunSpec};
use perf::keys::{Distribution, KeyLayout};
use perf::runner::{Cores, Generator, Interval};
use perf::stats::ErrorKind;
use perf::target::{Key, TableSpec, Target, TargetFactory};
use perf::workload::{OpKind, Workload};

fn spec(workload: Workload, rate_per_s: Option<f64>, duration: Duration) -> RunSpec {
    RunSpec {
        mix: workload.mix(),
        distribution: workload.default_distribution(),
        rate_per_s,
        warmup: Duration::ZERO,
        duration,
        record_count: 1_000,
        layout: KeyLayout {
            records_per_partition_key: 1,
        },
        value_size: 100,
        scan_length_max: 10,
        in_flight_per_core: 64,
        seed: 1,
        pacing_tick: Duration::from_micros(perf::limits::PACING_TICK_US),
        drain_grace: Duration::from_millis(200),
        drain_timeout: Duration::from_millis(200),
    }
}

/// A store double that answers at once, except that its `stall_at`-th request blocks the
/// executor thread (the whole generator core) for `stall`: a stalled driver.
#[derive(Clone)]
struct StallFactory {
    stall_at: u64,
    stall: Duration,
}

struct StallTarget {
    requests: Cell<u64>,
    stall_at: u64,
    stall: Duration,
}

impl StallTarget {
    fn serve(&self) -> Result<(), ErrorKind> {
        let n = self.requests.get();
        self.requests.set(n + 1);
        if n == self.stall_at {
            std::thread::sleep(self.stall);
        }
        Ok(())
    }
}

impl Target for StallTarget {
    async fn read(&self, _: Key<'_>) -> Result<(), ErrorKind> {
        self.serve()
    }
    async fn write(&self, _: Key<'_>, _: &[u8]) -> Result<(), ErrorKind> {
        self.serve()
    }
    async fn scan(&self, _: Key<'_>, _: u32) -> Result<(), ErrorKind> {
        self.serve()
    }
    async fn write_batch(&self, _: &[(Key<'_>, &[u8])]) -> Result<(), ErrorKind> {
        self.serve()
    }
}

impl TargetFactory for StallFactory {
    type Target = StallTarget;
    async fn connect(&self, _: usize, _: usize) -> Result<StallTarget, String> {
        Ok(StallTarget {
            requests: Cell::new(0),
            stall_at: self.stall_at,
            stall: self.stall,
        })
    }
    async fn create_table(&self, _: &StallTarget, _: &TableSpec) -> Result<bool, String> {
        Ok(true)
    }
}

/// Also a regression test: when the pacer began to let requests out up to a tick early,
/// latency ran for a while from the *later* of intended start and send, which hid this
/// very stall (one slow request instead of a hundred); it must run from the earlier.
#[test]
fn a_stall_is_charged_to_every_request_it_delays() {
    let factory = StallFactory {
        stall_at: 300,
        stall: Duration::from_millis(200),
    };
    let mut generator = Generator::start(&Cores::Unbound(1), None, factory).unwrap();
    let mut intervals = Vec::new();
    let outcome = generator
        .run(
            &spec(Workload::C, Some(1_000.0), Duration::from_secs(1)),
            &mut |i: &Interval| intervals.push((i.index, i.stats.count())),
        )
        .unwrap();
    generator.stop();

    let total = outcome.stats.total();
    // Every scheduled request was sent once and answered: none was skipped for the stall.
    assert_eq!(total.count(), 1_000);
    assert_eq!(total.error_count(), 0);
    // Requests 300..500 were due during the 200 ms stall: request 300 + k waited about
    // 200 - k ms. About a hundred of them waited 100 ms or more.
    let histogram = &total.latency_us;
    let slow = histogram.count_between(100_000, u64::MAX);
    assert!(
        (80..=250).contains(&slow),
        "{slow} requests took 100 ms or more"
    );
    assert!(histogram.max() >= 190_000, "max {} µs", histogram.max());
    assert!(
        histogram.value_at_quantile(0.5) < 20_000,
        "p50 {}",
        histogram.value_at_quantile(0.5)
    );
    // After the stall the backlog exceeded the 64 slots: the bound was hit and counted.
    assert!(outcome.bound_hits > 0);
    // The measured time is the schedule's second (plus the last answer).
    assert!(
        (0.99..1.5).contains(&outcome.measured_s),
        "{}",
        outcome.measured_s
    );
    // Intervals cover every completion, in order.
    assert!(intervals.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(intervals.iter().map(|i| i.1).sum::<u64>(), 1_000);
}

/// A store double whose requests never complete.
#[derive(Clone)]
struct HangFactory;
struct HangTarget;

impl Target for HangTarget {
    async fn read(&self, _: Key<'_>) -> Result<(), ErrorKind> {
        std::future::pending().await
    }
    async fn write(&self, _: Key<'_>, _: &[u8]) -> Result<(), ErrorKind> {
        std::future::pending().await
    }
    async fn scan(&self, _: Key<'_>, _: u32) -> Result<(), ErrorKind> {
        std::future::pending().await
    }
    async fn write_batch(&self, _: &[(Key<'_>, &[u8])]) -> Result<(), ErrorKind> {
        std::future::pending().await
    }
}

impl TargetFactory for HangFactory {
    type Target = HangTarget;
    async fn connect(&self, _: usize, _: usize) -> Result<HangTarget, String> {
        Ok(HangTarget)
    }
    async fn create_table(&self, _: &HangTarget, _: &TableSpec) -> Result<bool, String> {
        Ok(true)
    }
}

#[test]
fn requests_that_never_leave_or_never_return_are_errors() {
    let mut generator = Generator::start(&Cores::Unbound(1), None, HangFactory).unwrap();
    let mut run = spec(Workload::A, Some(1_000.0), Duration::from_millis(200));
    run.in_flight_per_core = 4;
    let outcome = generator.run(&run, &mut |_| {}).unwrap();
    generator.stop();
    let total = outcome.stats.total();
    assert_eq!(total.count(), 200, "every due request is accounted for");
    let errors =
        |kind: ErrorKind| total.errors[ErrorKind::ALL.iter().position(|&k| k == kind).unwrap()];
    assert_eq!(errors(ErrorKind::Timeout), 4, "the four slots hung");
    assert_eq!(
        errors(ErrorKind::Unsent),
        196,
        "the rest waited for a slot past the grace"
    );
    assert_eq!(outcome.bound_hits, 196);
}

/// A key as the in-memory double stores it: partition key, sort key.
type WireKey = (Vec<u8>, Vec<u8>);

/// The shortest answer of the in-memory double: no latency can be shorter.
const MEM_DELAY_US_MIN: u64 = 50;

/// An in-memory store double shared by the runs of one test: a read of a missing record is
/// `NotFound`, and answers come back after a short, varying delay (out of order).
#[derive(Clone)]
struct MemFactory;

struct MemTarget {
    /// (partition key, sort key) → value size.
    items: RefCell<BTreeMap<WireKey, usize>>,
    delay_step: Cell<u64>,
}

impl MemTarget {
    async fn delay(&self) {
        let step = self.delay_step.get();
        self.delay_step.set(step.wrapping_add(7));
        glommio::timer::sleep(Duration::from_micros(MEM_DELAY_US_MIN + step % 500)).await;
    }
    fn key(key: Key<'_>) -> WireKey {
        (
            key.partition.to_vec(),
            key.sort.unwrap_or_default().to_vec(),
        )
    }
}

impl Target for MemTarget {
    async fn read(&self, key: Key<'_>) -> Result<(), ErrorKind> {
        self.delay().await;
        self.items
            .borrow()
            .get(&Self::key(key))
            .map(drop)
            .ok_or(ErrorKind::NotFound)
    }
    async fn write(&self, key: Key<'_>, value: &[u8]) -> Result<(), ErrorKind> {
        self.delay().await;
        self.items.borrow_mut().insert(Self::key(key), value.len());
        Ok(())
    }
    async fn scan(&self, start: Key<'_>, limit: u32) -> Result<(), ErrorKind> {
        self.delay().await;
        let items = self.items.borrow();
        let found = items
            .range(Self::key(start)..)
            .take_while(|((partition, _), _)| partition.as_slice() == start.partition)
            .take(limit as usize)
            .count();
        if found == 0 {
            return Err(ErrorKind::NotFound);
        }
        Ok(())
    }
    async fn write_batch(&self, records: &[(Key<'_>, &[u8])]) -> Result<(), ErrorKind> {
        self.delay().await;
        let mut items = self.items.borrow_mut();
        for &(key, value) in records {
            items.insert(Self::key(key), value.len());
        }
        Ok(())
    }
}

impl TargetFactory for MemFactory {
    type Target = MemTarget;
    async fn connect(&self, _: usize, _: usize) -> Result<MemTarget, String> {
        Ok(MemTarget {
            items: RefCell::new(BTreeMap::new()),
            delay_step: Cell::new(0),
        })
    }
    async fn create_table(&self, _: &MemTarget, _: &TableSpec) -> Result<bool, String> {
        Ok(true)
    }
}

#[test]
fn loaded_and_inserted_records_are_found_by_every_workload() {
    let mut generator = Generator::start(&Cores::Unbound(1), None, MemFactory).unwrap();
    let layout = KeyLayout {
        records_per_partition_key: 10,
    };
    let load = generator
        .load(
            &LoadSpec {
                record_count: 1_000,
                layout,
                value_size: 100,
                batch_records: 25,
                in_flight_batches: 8,
                seed: 1,
            },
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(load.records, 1_000);
    assert_eq!(load.batches.count(), 40);
    assert_eq!(load.batches.error_count(), 0);
    for workload in [Workload::A, Workload::D, Workload::E, Workload::F] {
        for distribution in [
            Distribution::Uniform,
            Distribution::Zipfian,
            Distribution::Latest,
        ] {
            let mut run = spec(workload, Some(5_000.0), Duration::from_millis(200));
            run.layout = layout;
            run.distribution = distribution;
            let outcome = generator.run(&run, &mut |_| {}).unwrap();
            let errors = outcome.stats.error_count();
            assert_eq!(
                errors,
                0,
                "{workload:?} {distribution:?}: {:?}",
                outcome.rows()
            );
            assert_eq!(
                outcome.stats.count(),
                1_000,
                "{workload:?} {distribution:?}"
            );
            // Regression: the cores once started their schedule up to START_DELAY_MS before
            // the common start (a sleep computed on a clock saturated at zero), timing their
            // first requests at 1 µs.
            let fastest = outcome.stats.total().latency_us.min();
            assert!(
                fastest >= MEM_DELAY_US_MIN,
                "{workload:?}: a {fastest} µs answer"
            );
            if workload == Workload::D || workload == Workload::E {
                assert!(outcome.stats.kind(OpKind::Insert).unwrap().count() > 0);
            }
        }
    }
    generator.stop();
}

#[test]
fn as_fast_as_possible_keeps_the_slots_full() {
    let mut generator = Generator::start(&Cores::Unbound(2), None, MemFactory).unwrap();
    let mut intervals = 0;
    let outcome = generator
        .run(
            &spec(Workload::B, None, Duration::from_millis(300)),
            &mut |_| intervals += 1,
        )
        .unwrap();
    generator.stop();
    assert!(intervals >= 1);
    let total = outcome.total();
    // Nothing was loaded into this fresh store: reads miss until updates write their
    // records; updates always work.
    assert!(total.count > 1_000, "{total:?}");
    let reads = outcome.stats.kind(OpKind::Read).unwrap();
    assert!(reads.error_count() > 0);
    assert_eq!(outcome.stats.kind(OpKind::Update).unwrap().error_count(), 0);
    assert_eq!(outcome.bound_hits, 0);
}
