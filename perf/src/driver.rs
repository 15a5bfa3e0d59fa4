//! One generator core's work, on its glommio executor: the open-loop run (a pacer, a fixed
//! set of slots, a reporter) and the load.
//!
//! Per request the core reads the clock twice, draws a few random numbers, writes the key
//! into the slot's own buffer and records one or two histogram values; it allocates nothing
//! and makes no system call of its own (the target may).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::timer::Timer;

use crate::keys::Distribution;
use crate::keys::{KeyChooser, KeyLayout, Keyspace};
use crate::limits::{KEY_BYTES, REPORT_INTERVAL_MS, SORT_KEY_BYTES};
use crate::rng::Rng;
use crate::schedule::{Schedule, Tickets};
use crate::stats::{latency_us, ErrorKind, OpStats};
use crate::target::{Key, Target};
use crate::workload::{OpKind, OpMix};

/// What one run asks of every core.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The operation mix.
    pub mix: OpMix,
    /// How records are chosen.
    pub distribution: Distribution,
    /// Requests per second of all cores together; `None`: as fast as possible with the
    /// in-flight bound full.
    pub rate_per_s: Option<f64>,
    /// The time at the start whose requests are not measured.
    pub warmup: Duration,
    /// The measured time after the warm-up.
    pub duration: Duration,
    /// Records loaded before the run (`load --record-count`).
    pub record_count: u64,
    /// How record numbers become keys.
    pub layout: KeyLayout,
    /// Bytes of each written value.
    pub value_size: usize,
    /// The longest scan; each scan's length is uniform in `1..=scan_length_max`.
    pub scan_length_max: u32,
    /// Slots, i.e. requests outstanding at most, per core.
    pub in_flight_per_core: usize,
    /// Seeds every core's random choices (core `c` uses `seed + c`).
    pub seed: u64,
    /// The pacer's tick: it wakes at most once per tick and lets out every request due
    /// within the next tick ([`crate::limits::PACING_TICK_US`] unless told otherwise).
    pub pacing_tick: Duration,
    /// How long after the end due requests still waiting for a slot may be sent
    /// ([`crate::limits::DRAIN_GRACE_MS`] unless a test wants it shorter).
    pub drain_grace: Duration,
    /// How long after the grace answers are waited for
    /// ([`crate::limits::DRAIN_TIMEOUT_MS`] unless a test wants it shorter).
    pub drain_timeout: Duration,
}

/// What one load asks of every core.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Records `0..record_count` are written.
    pub record_count: u64,
    /// How record numbers become keys.
    pub layout: KeyLayout,
    /// Bytes of each value.
    pub value_size: usize,
    /// Records per batch write.
    pub batch_records: usize,
    /// Batches in flight per core.
    pub in_flight_batches: usize,
    /// Seeds the values.
    pub seed: u64,
}

/// One second (or the last part of one) of one core's completions.
#[derive(Debug)]
pub struct CoreInterval {
    /// The core's index among the generator's cores.
    pub core_index: usize,
    /// Which interval: the `n`-th since the run's start.
    pub index: u32,
    /// Its end, in nanoseconds since the run's start.
    pub end_ns: u64,
    /// Completions in it, measured or not.
    pub stats: OpStats,
    /// Records written in it (load only).
    pub records: u64,
}

/// What one core measured over a whole run or load.
#[derive(Debug)]
pub struct CoreOutcome {
    /// The core's index.
    pub core_index: usize,
    /// Requests whose intended start was in the measured window.
    pub measured: OpStats,
    /// When the measured window started, in nanoseconds since the run's start.
    pub measured_from_ns: u64,
    /// When the last measured request completed (or the window ended, if later).
    pub measured_until_ns: u64,
    /// Requests that fell due while every slot was busy.
    pub bound_hits: u64,
    /// Records written (load only).
    pub records: u64,
}

/// Where a core hands its intervals (the runner forwards them to the main thread).
pub type IntervalSink = Rc<dyn Fn(CoreInterval)>;

/// Nanoseconds since `start` (0 before it).
#[inline]
fn since(start: Instant) -> u64 {
    Instant::now().saturating_duration_since(start).as_nanos() as u64
}

/// Sleeps until `at_ns` nanoseconds after `start` (which may still be in the future).
async fn sleep_until(start: Instant, at_ns: u64) {
    let at = start + Duration::from_nanos(at_ns);
    let now = Instant::now();
    if at > now {
        glommio::timer::sleep(at - now).await;
    }
}

/// The recorders a core's slots share.
struct Recorders {
    /// Every completion of the current interval.
    live: OpStats,
    live_records: u64,
    /// Completions of requests intended in the measured window.
    measured: OpStats,
    measured_until_ns: u64,
}

/// The random choices a core's slots share.
struct Chooser {
    rng: Rng,
    mix: OpMix,
    keys: KeyChooser,
    keyspace: Keyspace,
}

/// What a slot is about to send.
#[derive(Clone, Copy)]
struct Plan {
    kind: OpKind,
    record: u64,
    /// The insert's index, to mark complete afterwards.
    insert: Option<u64>,
    scan_length: u32,
    value_offset: usize,
}

/// The request a slot is waiting on: its kind, and whether it is measured.
type InFlight = (OpKind, bool);

/// One core's run, shared by its tasks.
struct CoreRun<T> {
    target: Rc<T>,
    start: Instant,
    schedule: Option<Schedule>,
    warm_end_ns: u64,
    end_ns: u64,
    layout: KeyLayout,
    value_size: usize,
    /// Twice the value size of random bytes; each write takes a window of it.
    value_bytes: Box<[u8]>,
    scan_length_max: u32,
    pacing_tick_ns: u64,
    tickets: Tickets,
    chooser: RefCell<Chooser>,
    recorders: RefCell<Recorders>,
    /// What each slot is waiting on, if anything.
    in_flight: Box<[Cell<Option<InFlight>>]>,
    bound_hits: Cell<u64>,
}

fn random_bytes(rng: &mut Rng, length: usize) -> Box<[u8]> {
    let mut bytes = vec![0u8; length];
    for chunk in bytes.chunks_mut(8) {
        let word = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    bytes.into_boxed_slice()
}

impl<T: Target> CoreRun<T> {
    fn plan(&self) -> Plan {
        let mut chooser = self.chooser.borrow_mut();
        let Chooser {
            rng,
            mix,
            keys,
            keyspace,
        } = &mut *chooser;
        let kind = mix.choose(rng.next_u64());
        let (record, insert) = if kind == OpKind::Insert {
            let (index, record) = keyspace.issue_insert();
            (record, Some(index))
        } else {
            // `record_count` ≥ 1 is checked when the run is configured.
            (keys.choose(keyspace, rng).unwrap_or(0), None)
        };
        let scan_length = if kind == OpKind::Scan {
            1 + rng.below(u64::from(self.scan_length_max.max(1))) as u32
        } else {
            0
        };
        let value_offset = rng.below(self.value_size as u64 + 1) as usize;
        Plan {
            kind,
            record,
            insert,
            scan_length,
            value_offset,
        }
    }

    async fn execute(
        &self,
        plan: &Plan,
        partition: &[u8; KEY_BYTES],
        sort: &[u8; SORT_KEY_BYTES],
    ) -> Result<(), ErrorKind> {
        let key = Key {
            partition: &partition[..],
            sort: self.layout.has_sort_key().then_some(&sort[..]),
        };
        let value = &self.value_bytes[plan.value_offset..plan.value_offset + self.value_size];
        match plan.kind {
            OpKind::Read => self.target.read(key).await,
            OpKind::Update | OpKind::Insert => self.target.write(key, value).await,
            OpKind::Scan => self.target.scan(key, plan.scan_length).await,
            OpKind::ReadModifyWrite => {
                self.target.read(key).await?;
                self.target.write(key, value).await
            }
        }
    }

    fn measured(&self, intended_ns: u64) -> bool {
        intended_ns >= self.warm_end_ns && intended_ns < self.end_ns
    }

    /// Records one completion. The latency runs from the request's intended start, or from
    /// its send if the pacer let it out early (within one tick): from the earlier of the two,
    /// so that a request sent late is charged for its wait.
    fn record(&self, kind: OpKind, intended_ns: u64, sent_ns: u64, result: Result<(), ErrorKind>) {
        let done_ns = since(self.start);
        let latency = latency_us(done_ns.saturating_sub(intended_ns.min(sent_ns)));
        let measured = self.measured(intended_ns);
        let mut recorders = self.recorders.borrow_mut();
        match result {
            Ok(()) => {
                recorders.live.record(kind, latency);
                if measured {
                    recorders.measured.record(kind, latency);
                }
            }
            Err(error) => {
                recorders.live.record_error(kind, error);
                if measured {
                    recorders.measured.record_error(kind, error);
                }
            }
        }
        if measured && done_ns > recorders.measured_until_ns {
            recorders.measured_until_ns = done_ns;
        }
    }
}

/// One slot: takes due tickets and sends their requests, one at a time.
async fn slot<T: Target>(run: Rc<CoreRun<T>>, slot: usize) {
    let mut partition = [0u8; KEY_BYTES];
    let mut sort = [0u8; SORT_KEY_BYTES];
    while let Some(ticket) = run.tickets.take(slot).await {
        let intended_ns = match &run.schedule {
            Some(schedule) => schedule.intended_ns(ticket),
            None => {
                let now_ns = since(run.start);
                if now_ns >= run.end_ns {
                    run.tickets.close();
                    break;
                }
                now_ns
            }
        };
        let plan = run.plan();
        run.layout.encode(plan.record, &mut partition, &mut sort);
        run.in_flight[slot].set(Some((plan.kind, run.measured(intended_ns))));
        let sent_ns = since(run.start);
        let result = run.execute(&plan, &partition, &sort).await;
        run.in_flight[slot].set(None);
        if let Some(index) = plan.insert {
            run.chooser.borrow_mut().keyspace.complete_insert(index);
        }
        run.record(plan.kind, intended_ns, sent_ns, result);
        if run.schedule.is_none() {
            // As fast as possible with a target that may answer at once: let the reporter
            // and the other slots in.
            glommio::yield_if_needed().await;
        }
    }
}

/// Releases the tickets of due requests, a tick's worth at a time: each wake-up releases
/// every request intended up to one tick ahead, and the pacer wakes at most once a tick.
/// Waking once per request would cost a park and a timer per request (tens of µs of system
/// time each on a VM) and a socket write per request; a tick's batch goes out in one write
/// per connection. A request released early is timed from its send (see `slot`).
async fn pace<T: Target>(run: Rc<CoreRun<T>>, schedule: Schedule) {
    let tick_ns = run.pacing_tick_ns;
    let total = schedule.total();
    let mut timer = Timer::new(Duration::ZERO);
    loop {
        let now_ns = since(run.start);
        let due = schedule.due(now_ns + tick_ns);
        let newly = due - run.tickets.released();
        if newly > 0 {
            let queued = run.tickets.release(newly);
            run.bound_hits.set(run.bound_hits.get() + queued);
        }
        if due >= total {
            return;
        }
        let wake_ns = schedule
            .intended_ns(due)
            .saturating_sub(tick_ns)
            .max(now_ns + tick_ns);
        timer.reset(Duration::from_nanos(
            wake_ns.saturating_sub(since(run.start)),
        ));
        (&mut timer).await;
    }
}

/// Every `REPORT_INTERVAL_MS`, sends the completions of the interval that just ended.
async fn report(
    start: Instant,
    core_index: usize,
    recorders: Rc<dyn Fn() -> (OpStats, u64)>,
    sink: IntervalSink,
    next_index: Rc<Cell<u32>>,
) {
    loop {
        let index = next_index.get();
        sleep_until(start, u64::from(index + 1) * REPORT_INTERVAL_MS * 1_000_000).await;
        let (stats, records) = recorders();
        next_index.set(index + 1);
        let end_ns = since(start);
        sink(CoreInterval {
            core_index,
            index,
            end_ns,
            stats,
            records,
        });
    }
}

/// Runs one core's share of `spec`, starting at `start`, sending its intervals to `sink`.
pub async fn run_core<T: Target + 'static>(
    target: Rc<T>,
    spec: &RunSpec,
    start: Instant,
    core_index: usize,
    core_count: usize,
    sink: IntervalSink,
) -> CoreOutcome {
    let warm_end_ns = spec.warmup.as_nanos() as u64;
    let end_ns = warm_end_ns + spec.duration.as_nanos() as u64;
    let schedule = spec
        .rate_per_s
        .map(|rate| Schedule::for_core(rate, core_index, core_count, end_ns));
    let mut rng = Rng::new(spec.seed.wrapping_add(core_index as u64));
    let value_bytes = random_bytes(&mut rng, 2 * spec.value_size);
    // YCSB sizes its scrambled zipfian for twice the inserts it expects.
    let expected_inserts = match spec.rate_per_s {
        Some(rate) => {
            let seconds = (spec.warmup + spec.duration).as_secs_f64();
            (rate / core_count as f64 * seconds * spec.mix.proportion(OpKind::Insert) * 2.0) as u64
        }
        None if spec.mix.includes(OpKind::Insert) => spec.record_count,
        None => 0,
    };
    let kinds: Vec<OpKind> = OpKind::ALL
        .into_iter()
        .filter(|&k| spec.mix.includes(k))
        .collect();
    let slots = spec.in_flight_per_core.max(1);
    let run = Rc::new(CoreRun {
        target,
        start,
        schedule,
        warm_end_ns,
        end_ns,
        layout: spec.layout,
        value_size: spec.value_size,
        value_bytes,
        scan_length_max: spec.scan_length_max,
        pacing_tick_ns: spec.pacing_tick.as_nanos() as u64,
        tickets: Tickets::new(slots),
        chooser: RefCell::new(Chooser {
            keys: KeyChooser::new(spec.distribution, spec.record_count, expected_inserts),
            keyspace: Keyspace::new(spec.record_count, core_index, core_count),
            mix: spec.mix.clone(),
            rng,
        }),
        recorders: RefCell::new(Recorders {
            live: OpStats::for_kinds(kinds.iter().copied()),
            live_records: 0,
            measured: OpStats::for_kinds(kinds.iter().copied()),
            measured_until_ns: end_ns,
        }),
        in_flight: (0..slots).map(|_| Cell::new(None)).collect(),
        bound_hits: Cell::new(0),
    });

    sleep_until(start, 0).await;
    let reporter_run = run.clone();
    let swap_live: Rc<dyn Fn() -> (OpStats, u64)> = Rc::new(move || {
        let mut recorders = reporter_run.recorders.borrow_mut();
        let fresh = OpStats::for_kinds(kinds.iter().copied());
        (
            std::mem::replace(&mut recorders.live, fresh),
            std::mem::take(&mut recorders.live_records),
        )
    });
    let next_interval = Rc::new(Cell::new(0u32));
    let reporter = glommio::spawn_local(report(
        start,
        core_index,
        swap_live.clone(),
        sink.clone(),
        next_interval.clone(),
    ));
    let slot_tasks: Vec<_> = (0..slots)
        .map(|i| glommio::spawn_local(slot(run.clone(), i)))
        .collect();
    let pacer = match schedule {
        Some(schedule) => Some(glommio::spawn_local(pace(run.clone(), schedule))),
        None => {
            run.tickets.release(u64::MAX);
            None
        }
    };

    // The end of the schedule; then the backlog of due requests may still go out for a while.
    sleep_until(start, end_ns).await;
    if let Some(pacer) = pacer {
        pacer.await;
    }
    let grace_end_ns = end_ns + spec.drain_grace.as_nanos() as u64;
    while run.tickets.untaken() > 0 && since(start) < grace_end_ns {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    let unsent = run.tickets.close();
    if unsent > 0 {
        // Tickets carry no operation yet: give them the mix's kinds.
        let mut chooser = run.chooser.borrow_mut();
        let mut recorders = run.recorders.borrow_mut();
        for _ in 0..unsent {
            let draw = chooser.rng.next_u64();
            let kind = chooser.mix.choose(draw);
            recorders.measured.record_error(kind, ErrorKind::Unsent);
            recorders.live.record_error(kind, ErrorKind::Unsent);
        }
    }
    let drained = glommio::timer::timeout(spec.drain_timeout, async {
        for task in slot_tasks {
            task.await;
        }
        Ok::<(), glommio::GlommioError<()>>(())
    })
    .await;
    if drained.is_err() {
        // The timeout dropped (and so cancelled) the slots still waiting.
        let mut recorders = run.recorders.borrow_mut();
        for cell in run.in_flight.iter() {
            if let Some((kind, measured)) = cell.take() {
                recorders.live.record_error(kind, ErrorKind::Timeout);
                if measured {
                    recorders.measured.record_error(kind, ErrorKind::Timeout);
                }
            }
        }
    }
    drop(reporter);
    let (stats, records) = swap_live();
    sink(CoreInterval {
        core_index,
        index: next_interval.get(),
        end_ns: since(start),
        stats,
        records,
    });
    let mut recorders = run.recorders.borrow_mut();
    CoreOutcome {
        core_index,
        measured: std::mem::take(&mut recorders.measured),
        measured_from_ns: warm_end_ns,
        measured_until_ns: recorders.measured_until_ns,
        bound_hits: run.bound_hits.get(),
        records: 0,
    }
}

/// One core's share of a load.
struct CoreLoad<T> {
    target: Rc<T>,
    start: Instant,
    layout: KeyLayout,
    value_size: usize,
    value_bytes: Box<[u8]>,
    batch_records: u64,
    next_record: Cell<u64>,
    end_record: u64,
    /// Records whose batch was acknowledged.
    written: Cell<u64>,
    rng: RefCell<Rng>,
    recorders: RefCell<Recorders>,
}

async fn load_slot<T: Target>(load: Rc<CoreLoad<T>>) {
    let batch = load.batch_records as usize;
    let mut partitions = vec![[0u8; KEY_BYTES]; batch];
    let mut sorts = vec![[0u8; SORT_KEY_BYTES]; batch];
    loop {
        let first = load.next_record.get();
        if first >= load.end_record {
            return;
        }
        let last = (first + load.batch_records).min(load.end_record);
        load.next_record.set(last);
        let count = (last - first) as usize;
        let mut offsets = Vec::with_capacity(count);
        {
            let mut rng = load.rng.borrow_mut();
            for (i, record) in (first..last).enumerate() {
                load.layout
                    .encode(record, &mut partitions[i], &mut sorts[i]);
                offsets.push(rng.below(load.value_size as u64 + 1) as usize);
            }
        }
        let records: Vec<(Key<'_>, &[u8])> = (0..count)
            .map(|i| {
                let key = Key {
                    partition: &partitions[i][..],
                    sort: load.layout.has_sort_key().then_some(&sorts[i][..]),
                };
                (
                    key,
                    &load.value_bytes[offsets[i]..offsets[i] + load.value_size],
                )
            })
            .collect();
        let sent_ns = since(load.start);
        let result = load.target.write_batch(&records).await;
        let latency = latency_us(since(load.start).saturating_sub(sent_ns));
        let mut recorders = load.recorders.borrow_mut();
        match result {
            Ok(()) => {
                recorders.live.record(OpKind::Insert, latency);
                recorders.measured.record(OpKind::Insert, latency);
                recorders.live_records += count as u64;
                load.written.set(load.written.get() + count as u64);
            }
            Err(error) => {
                recorders.live.record_error(OpKind::Insert, error);
                recorders.measured.record_error(OpKind::Insert, error);
            }
        }
    }
}

/// Writes one core's share of `spec` (a contiguous range of records) as fast as it can with
/// `in_flight_batches` batch writes outstanding. Each batch write is recorded as one insert.
pub async fn load_core<T: Target + 'static>(
    target: Rc<T>,
    spec: &LoadSpec,
    start: Instant,
    core_index: usize,
    core_count: usize,
    sink: IntervalSink,
) -> CoreOutcome {
    let share = |core: usize| spec.record_count * core as u64 / core_count as u64;
    let (first, end) = (share(core_index), share(core_index + 1));
    let mut rng = Rng::new(spec.seed.wrapping_add(core_index as u64));
    let load = Rc::new(CoreLoad {
        target,
        start,
        layout: spec.layout,
        value_size: spec.value_size,
        value_bytes: random_bytes(&mut rng, 2 * spec.value_size),
        batch_records: spec.batch_records.max(1) as u64,
        next_record: Cell::new(first),
        end_record: end,
        written: Cell::new(0),
        rng: RefCell::new(rng),
        recorders: RefCell::new(Recorders {
            live: OpStats::for_kinds([OpKind::Insert]),
            live_records: 0,
            measured: OpStats::for_kinds([OpKind::Insert]),
            measured_until_ns: 0,
        }),
    });
    sleep_until(start, 0).await;
    let reporter_load = load.clone();
    let swap_live: Rc<dyn Fn() -> (OpStats, u64)> = Rc::new(move || {
        let mut recorders = reporter_load.recorders.borrow_mut();
        let fresh = OpStats::for_kinds([OpKind::Insert]);
        (
            std::mem::replace(&mut recorders.live, fresh),
            std::mem::take(&mut recorders.live_records),
        )
    });
    let next_interval = Rc::new(Cell::new(0u32));
    let reporter = glommio::spawn_local(report(
        start,
        core_index,
        swap_live.clone(),
        sink.clone(),
        next_interval.clone(),
    ));
    let tasks: Vec<_> = (0..spec.in_flight_batches.max(1))
        .map(|_| glommio::spawn_local(load_slot(load.clone())))
        .collect();
    for task in tasks {
        task.await;
    }
    drop(reporter);
    let (stats, records) = swap_live();
    let finished_ns = since(start);
    sink(CoreInterval {
        core_index,
        index: next_interval.get(),
        end_ns: finished_ns,
        stats,
        records,
    });
    let mut recorders = load.recorders.borrow_mut();
    CoreOutcome {
        core_index,
        measured: std::mem::take(&mut recorders.measured),
        measured_from_ns: 0,
        measured_until_ns: finished_ns,
        bound_hits: 0,
        records: load.written.get(),
    }
}
