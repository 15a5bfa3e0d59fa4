//! The generator's cores: one glommio executor thread each, kept for the whole process (a
//! sweep reuses their connections from step to step), told what to do over a channel, and
//! reporting intervals and outcomes back to the calling thread, which merges them.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::driver::{self, CoreInterval, CoreOutcome, LoadSpec, RunSpec};
use crate::limits::{COMMAND_POLL_MS, CORES_MAX, EXECUTOR_IO_MEMORY_BYTES, START_DELAY_MS};
use crate::stats::{summary_rows, OpStats, Row};
use crate::target::{TableSpec, TargetFactory};
use crate::PerfError;

/// Where the generator's executors run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cores {
    /// One executor pinned to each listed CPU.
    Pinned(Vec<usize>),
    /// This many executors, not pinned (tests, or machines where pinning is not wanted).
    Unbound(usize),
}

impl Cores {
    /// How many executors.
    pub fn count(&self) -> usize {
        match self {
            Cores::Pinned(cpus) => cpus.len(),
            Cores::Unbound(count) => *count,
        }
    }

    fn placement(&self, index: usize) -> Placement {
        match self {
            Cores::Pinned(cpus) => Placement::Fixed(cpus[index]),
            Cores::Unbound(_) => Placement::Unbound,
        }
    }

    /// Parses a CPU list: `0`, `0,1`, `0-3`, `0-1,4`.
    pub fn parse_list(text: &str) -> Result<Cores, String> {
        let mut cpus = Vec::new();
        for part in text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let (low, high) = match part.split_once('-') {
                Some((low, high)) => (low.trim(), high.trim()),
                None => (part, part),
            };
            let parse = |number: &str| {
                number
                    .parse::<usize>()
                    .map_err(|_| format!("`{number}` in `{text}` is not a CPU number"))
            };
            let (low, high) = (parse(low)?, parse(high)?);
            if low > high {
                return Err(format!("the CPU range `{part}` runs backwards"));
            }
            for cpu in low..=high {
                if cpus.contains(&cpu) {
                    return Err(format!("CPU {cpu} is listed twice in `{text}`"));
                }
                cpus.push(cpu);
                if cpus.len() > CORES_MAX {
                    return Err(format!("more than {CORES_MAX} cores in `{text}`"));
                }
            }
        }
        if cpus.is_empty() {
            return Err("the core list is empty".to_owned());
        }
        Ok(Cores::Pinned(cpus))
    }
}

enum Command {
    Run { spec: Arc<RunSpec>, start: Instant },
    Load { spec: Arc<LoadSpec>, start: Instant },
    CreateTable(TableSpec),
}

enum Event {
    /// The core could not take the real-time priority it was given.
    PriorityRefused {
        core_index: usize,
        message: String,
    },
    Connected {
        core_index: usize,
        result: Result<(), String>,
    },
    Interval(CoreInterval),
    Done(CoreOutcome),
    TableCreated(Result<bool, String>),
    /// The core's executor ended (after a failure, a panic, or being stopped).
    Exited {
        core_index: usize,
    },
}

/// Sends `Exited` when the core's future ends, however it ends.
struct ExitGuard {
    events: Sender<Event>,
    core_index: usize,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let _ = self.events.send(Event::Exited {
            core_index: self.core_index,
        });
    }
}

/// One reporting interval of all cores together.
#[derive(Debug)]
pub struct Interval {
    /// Which interval since the start (0, 1, 2 ...).
    pub index: u32,
    /// Its start and end, in seconds since the start.
    pub start_s: f64,
    /// See `start_s`.
    pub end_s: f64,
    /// Completions in it.
    pub stats: OpStats,
    /// Records written in it (load only).
    pub records: u64,
    /// Whether it lies wholly in the warm-up.
    pub warmup: bool,
}

/// What a run measured, all cores together.
#[derive(Debug)]
pub struct RunOutcome {
    /// Requests intended in the measured window, by kind.
    pub stats: OpStats,
    /// The measured time: from the end of the warm-up to the end of the window or the last
    /// measured completion, whichever is later.
    pub measured_s: f64,
    /// Requests that fell due while every slot of their core was busy; their wait is in the
    /// latencies.
    pub bound_hits: u64,
    /// The target rate, `None` for as fast as possible.
    pub rate_per_s: Option<f64>,
}

impl RunOutcome {
    /// One row per kind, then the total.
    pub fn rows(&self) -> Vec<Row> {
        summary_rows(&self.stats, self.measured_s)
    }

    /// The total row.
    pub fn total(&self) -> Row {
        Row::of("total", &self.stats.total(), self.measured_s)
    }
}

/// What a load did, all cores together.
#[derive(Debug)]
pub struct LoadOutcome {
    /// Batch writes (recorded as inserts) and their errors.
    pub batches: OpStats,
    /// Records acknowledged.
    pub records: u64,
    /// From the start to the last core's end.
    pub elapsed_s: f64,
}

/// The generator: its executors, each with its connected target.
pub struct Generator {
    commands: Vec<Sender<Command>>,
    events: Receiver<Event>,
    executors: Vec<ExecutorJoinHandle<()>>,
}

impl Generator {
    /// Starts one executor per core, under SCHED_FIFO at `realtime_priority` if given, and
    /// connects each core's target; returns once all are connected.
    pub fn start<F: TargetFactory>(
        cores: &Cores,
        realtime_priority: Option<u8>,
        factory: F,
    ) -> Result<Generator, PerfError> {
        let count = cores.count();
        if count == 0 || count > CORES_MAX {
            return Err(PerfError::Config(format!(
                "{count} cores: give 1 to {CORES_MAX}"
            )));
        }
        let (event_tx, events) = mpsc::channel();
        let mut generator = Generator {
            commands: Vec::new(),
            events,
            executors: Vec::new(),
        };
        for core_index in 0..count {
            let (command_tx, commands) = mpsc::channel();
            let events = event_tx.clone();
            let factory = factory.clone();
            let executor = LocalExecutorBuilder::new(cores.placement(core_index))
                .name(&format!("perf-{core_index}"))
                .io_memory(EXECUTOR_IO_MEMORY_BYTES)
                .spawn(move || {
                    core_main(
                        factory,
                        CoreStart {
                            core_index,
                            core_count: count,
                            realtime_priority,
                        },
                        commands,
                        events,
                    )
                })
                .map_err(|error| PerfError::Executor {
                    core_index,
                    message: error.to_string(),
                })?;
            generator.commands.push(command_tx);
            generator.executors.push(executor);
        }
        drop(event_tx);
        let mut connected = 0;
        while connected < count {
            match generator.next_event()? {
                Event::Connected { result: Ok(()), .. } => connected += 1,
                Event::Connected {
                    core_index,
                    result: Err(message),
                } => {
                    return Err(PerfError::Connect {
                        core_index,
                        message,
                    })
                }
                Event::PriorityRefused {
                    core_index,
                    message,
                } => {
                    return Err(PerfError::Executor {
                        core_index,
                        message,
                    })
                }
                Event::Exited { core_index } => return Err(PerfError::CoreExited { core_index }),
                _ => {}
            }
        }
        Ok(generator)
    }

    /// How many cores the generator runs on.
    pub fn core_count(&self) -> usize {
        self.commands.len()
    }

    fn next_event(&self) -> Result<Event, PerfError> {
        self.events
            .recv()
            .map_err(|_| PerfError::CoreExited { core_index: 0 })
    }

    fn send(&self, core_index: usize, command: Command) -> Result<(), PerfError> {
        self.commands[core_index]
            .send(command)
            .map_err(|_| PerfError::CoreExited { core_index })
    }

    /// Creates the benchmark table from core 0. `Ok(false)` if it already existed.
    pub fn create_table(&mut self, spec: &TableSpec) -> Result<bool, PerfError> {
        self.send(0, Command::CreateTable(spec.clone()))?;
        loop {
            match self.next_event()? {
                Event::TableCreated(result) => return result.map_err(PerfError::CreateTable),
                Event::Exited { core_index } => return Err(PerfError::CoreExited { core_index }),
                _ => {}
            }
        }
    }

    /// Runs `spec` on every core; `on_interval` sees each second of all cores as it ends.
    pub fn run(
        &mut self,
        spec: &RunSpec,
        on_interval: &mut dyn FnMut(&Interval),
    ) -> Result<RunOutcome, PerfError> {
        let shared = Arc::new(spec.clone());
        self.start_all(|start| Command::Run {
            spec: shared.clone(),
            start,
        })?;
        let warmup_s = spec.warmup.as_secs_f64();
        let outcomes = self.collect(warmup_s, on_interval)?;
        let mut stats = OpStats::default();
        let mut bound_hits = 0;
        let (mut from_ns, mut until_ns) = (u64::MAX, 0);
        for outcome in &outcomes {
            stats.merge(&outcome.measured);
            bound_hits += outcome.bound_hits;
            from_ns = from_ns.min(outcome.measured_from_ns);
            until_ns = until_ns.max(outcome.measured_until_ns);
        }
        Ok(RunOutcome {
            stats,
            measured_s: until_ns.saturating_sub(from_ns) as f64 / 1e9,
            bound_hits,
            rate_per_s: spec.rate_per_s,
        })
    }

    /// Loads `spec`'s records, each core a contiguous share.
    pub fn load(
        &mut self,
        spec: &LoadSpec,
        on_interval: &mut dyn FnMut(&Interval),
    ) -> Result<LoadOutcome, PerfError> {
        let shared = Arc::new(spec.clone());
        self.start_all(|start| Command::Load {
            spec: shared.clone(),
            start,
        })?;
        let outcomes = self.collect(0.0, on_interval)?;
        let mut batches = OpStats::default();
        let mut records = 0;
        let mut until_ns = 0;
        for outcome in &outcomes {
            batches.merge(&outcome.measured);
            records += outcome.records;
            until_ns = until_ns.max(outcome.measured_until_ns);
        }
        Ok(LoadOutcome {
            batches,
            records,
            elapsed_s: until_ns as f64 / 1e9,
        })
    }

    /// Sends every core the command made for one common start instant, a little ahead so
    /// that every core begins its schedule at the same moment.
    fn start_all(&mut self, command: impl Fn(Instant) -> Command) -> Result<(), PerfError> {
        let start = Instant::now() + Duration::from_millis(START_DELAY_MS);
        for core_index in 0..self.core_count() {
            self.send(core_index, command(start))?;
        }
        Ok(())
    }

    /// Gathers intervals (merged across cores, handed on in order once every core has sent
    /// its part) and each core's outcome.
    fn collect(
        &mut self,
        warmup_s: f64,
        on_interval: &mut dyn FnMut(&Interval),
    ) -> Result<Vec<CoreOutcome>, PerfError> {
        let cores = self.core_count();
        let mut pending: BTreeMap<u32, (usize, Interval)> = BTreeMap::new();
        let mut outcomes = Vec::with_capacity(cores);
        let emit = |interval: Interval, on_interval: &mut dyn FnMut(&Interval)| {
            on_interval(&Interval {
                warmup: interval.end_s <= warmup_s + 1e-9,
                ..interval
            });
        };
        while outcomes.len() < cores {
            match self.next_event()? {
                Event::Interval(part) => {
                    let entry = pending.entry(part.index).or_insert_with(|| {
                        (
                            0,
                            Interval {
                                index: part.index,
                                start_s: f64::from(part.index),
                                end_s: 0.0,
                                stats: OpStats::default(),
                                records: 0,
                                warmup: false,
                            },
                        )
                    });
                    entry.0 += 1;
                    entry.1.stats.merge(&part.stats);
                    entry.1.records += part.records;
                    entry.1.end_s = entry.1.end_s.max(part.end_ns as f64 / 1e9);
                    // Hand on every complete interval at the front, in order.
                    while let Some(entry) = pending.first_entry() {
                        if entry.get().0 < cores {
                            break;
                        }
                        emit(entry.remove().1, on_interval);
                    }
                }
                Event::Done(outcome) => outcomes.push(outcome),
                Event::Exited { core_index } => return Err(PerfError::CoreExited { core_index }),
                Event::Connected { .. }
                | Event::PriorityRefused { .. }
                | Event::TableCreated(_) => {}
            }
        }
        // The cores' last, partial intervals.
        while let Some((_, (_, interval))) = pending.pop_first() {
            emit(interval, on_interval);
        }
        outcomes.sort_by_key(|outcome| outcome.core_index);
        Ok(outcomes)
    }

    /// Stops every core and waits for its thread.
    pub fn stop(self) {
        drop(self.commands);
        for executor in self.executors {
            let _ = executor.join();
        }
    }
}

/// Where a core sits among the generator's cores, and how it is scheduled.
struct CoreStart {
    core_index: usize,
    core_count: usize,
    realtime_priority: Option<u8>,
}

/// Puts the calling thread under SCHED_FIFO at `priority`; the error says what to do.
fn take_realtime_priority(priority: u8) -> Result<(), String> {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: pid 0 names the calling thread, and `param` lives across the call.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    Err(format!(
        "cannot run under SCHED_FIFO at priority {priority}: {error}; run as root, give the \
         binary CAP_SYS_NICE, raise RLIMIT_RTPRIO, or leave out --realtime-priority"
    ))
}

/// The life of one core: take its priority, connect, then serve commands until the
/// generator goes away.
async fn core_main<F: TargetFactory>(
    factory: F,
    start: CoreStart,
    commands: Receiver<Command>,
    events: Sender<Event>,
) {
    let CoreStart {
        core_index,
        core_count,
        realtime_priority,
    } = start;
    let _exit = ExitGuard {
        events: events.clone(),
        core_index,
    };
    if let Some(priority) = realtime_priority {
        if let Err(message) = take_realtime_priority(priority) {
            let _ = events.send(Event::PriorityRefused {
                core_index,
                message,
            });
            return;
        }
    }
    let target = match factory.connect(core_index, core_count).await {
        Ok(target) => Rc::new(target),
        Err(message) => {
            let _ = events.send(Event::Connected {
                core_index,
                result: Err(message),
            });
            return;
        }
    };
    let _ = events.send(Event::Connected {
        core_index,
        result: Ok(()),
    });
    let interval_events = events.clone();
    let sink: driver::IntervalSink = Rc::new(move |interval| {
        let _ = interval_events.send(Event::Interval(interval));
    });
    loop {
        let command = match commands.try_recv() {
            Ok(command) => command,
            Err(TryRecvError::Empty) => {
                glommio::timer::sleep(Duration::from_millis(COMMAND_POLL_MS)).await;
                continue;
            }
            Err(TryRecvError::Disconnected) => return,
        };
        let event = match command {
            Command::Run { spec, start } => Event::Done(
                driver::run_core(
                    target.clone(),
                    &spec,
                    start,
                    core_index,
                    core_count,
                    sink.clone(),
                )
                .await,
            ),
            Command::Load { spec, start } => Event::Done(
                driver::load_core(
                    target.clone(),
                    &spec,
                    start,
                    core_index,
                    core_count,
                    sink.clone(),
                )
                .await,
            ),
            Command::CreateTable(spec) => {
                Event::TableCreated(factory.create_table(&target, &spec).await)
            }
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_lists_parse() {
        assert_eq!(Cores::parse_list("0"), Ok(Cores::Pinned(vec![0])));
        assert_eq!(
            Cores::parse_list("0-2,5"),
            Ok(Cores::Pinned(vec![0, 1, 2, 5]))
        );
        assert!(Cores::parse_list("").is_err());
        assert!(Cores::parse_list("1,1").is_err());
        assert!(Cores::parse_list("3-1").is_err());
        assert!(Cores::parse_list("x").is_err());
    }
}
