//! The `percore-perf` command line: `run`, `load` and `sweep`. Its flags are a stable
//! interface (`cargo xtask bench node` and `cargo xtask demo` drive them); add flags, never
//! rename or repurpose one.

use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::client_target::ClientFactory;
use crate::driver::{LoadSpec, RunSpec};
use crate::keys::{Distribution, KeyLayout};
use crate::limits::{
    DRAIN_GRACE_MS, DRAIN_TIMEOUT_MS, IN_FLIGHT_PER_CORE_DEFAULT, IN_FLIGHT_PER_CORE_MAX,
    LOAD_BATCH_RECORDS_MAX, LOAD_IN_FLIGHT_BATCHES_DEFAULT, PACING_TICK_US, PACING_TICK_US_MAX,
    SCAN_LENGTH_MAX_DEFAULT, SWEEP_STEPS_MAX, VALUE_BYTES_MAX,
};
use crate::report::{self, HtmlReport, IntervalRecorder, Labels, SeriesPoint};
use crate::runner::{Cores, Generator, Interval, RunOutcome};
use crate::stats::{KindStats, Row};
use crate::sweep::{StepResult, SweepConfig, SweepSearch};
use crate::target::{NullFactory, TableSpec};
use crate::workload::Workload;
use crate::PerfError;

const LONG_ABOUT: &str = "\
An open-loop load generator for percore, with YCSB's workloads A-F.

A run follows a schedule fixed in advance: request i is due at start + i / rate, and its \
latency is measured from that intended start, so a stall anywhere (server, network, or the \
generator itself) is charged to every request it delays (no coordinated omission). At most \
--in-flight requests per generator core are outstanding; due requests beyond that wait, keep \
their intended start, and are counted. Latencies go into one HdrHistogram per operation \
(microseconds, 3 significant digits).

Typical use, against a node on 127.0.0.1:7700:
  percore-perf load --create-table --record-count 100000
  percore-perf run --workload a --rate 20000 --duration-s 30 --html report.html
  percore-perf sweep --workload a --slo-p99-ms 10

A live line a second goes to stderr (rate, p50, p99, errors); the summary table to stdout, \
or with --json only BENCHMARKS.md's JSON lines (the table then goes to stderr).";

/// percore-perf: open-loop YCSB load, SLO reports and rate sweeps for percore.
#[derive(Parser, Debug)]
#[command(name = "percore-perf", version, about, long_about = LONG_ABOUT)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Drive a YCSB workload open-loop at a rate (or as fast as possible) and report its
    /// latencies.
    Run(RunArgs),
    /// Preload the records a run reads, as fast as possible, in batch writes.
    Load(LoadArgs),
    /// Raise the rate step by step and report the highest throughput whose p99 stays under
    /// the SLO, with every step's figures.
    Sweep(SweepArgs),
}

/// Where the node is and how the generator reaches it.
#[derive(Args, Debug, Clone)]
pub struct ConnectionArgs {
    /// The node's address: its shared port or a core's own port. Repeat the flag to spread
    /// the connections over several addresses (connection i goes to address i mod n).
    #[arg(
        long = "addr",
        value_name = "IP:PORT",
        default_value = "127.0.0.1:7700"
    )]
    pub addrs: Vec<SocketAddr>,
    /// The table the records live in.
    #[arg(long, default_value = "usertable")]
    pub table: String,
    /// Connections in all, split evenly over the generator's cores (at least one per core).
    /// Each connection is pipelined: many requests in flight, answered in any order.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// CPUs the generator runs on, one pinned glommio executor each: `0`, `0,1`, `2-3`.
    #[arg(long, value_name = "LIST", default_value = "0", value_parser = Cores::parse_list)]
    pub cores: Cores,
    /// How long one attempt of a request may take, the wait for room on a connection
    /// included; a request that takes longer fails as `timeout`.
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    pub request_timeout_ms: u64,
    /// Attempts per request, the first included. 1 (the default) never retries, so every
    /// failure is counted; more lets the client retry where that is safe (never a write
    /// whose outcome is unknown). A retried request's latency includes its retries.
    #[arg(long, default_value_t = 1)]
    pub max_attempts: u32,
    /// Send nothing: every operation completes at once, without I/O. Measures the
    /// generator's own cost per request and how closely it keeps its schedule.
    #[arg(long)]
    pub dry_run: bool,
    /// Run the generator's cores under the real-time policy SCHED_FIFO at this priority
    /// (1 to 99). Other tasks on their CPUs (background daemons, kernel threads) then cannot
    /// hold up a request's send or the reading of its answer, which otherwise shows in the
    /// tail as the store's latency. Only for CPUs the generator has to itself: while it
    /// has work, nothing of normal priority runs there. Needs root or CAP_SYS_NICE.
    #[arg(long, value_name = "PRIORITY", value_parser = clap::value_parser!(u8).range(1..=99))]
    pub realtime_priority: Option<u8>,
}

/// The records and their keys.
#[derive(Args, Debug, Clone)]
pub struct RecordArgs {
    /// Records loaded (`load`), or assumed loaded (`run`, `sweep`): records 0..N-1. Keys are
    /// `user` + 20 digits: 24 bytes.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub record_count: u64,
    /// Bytes of each written value.
    #[arg(long, value_name = "BYTES", default_value_t = 1_000)]
    pub value_size: usize,
    /// Consecutive records sharing one partition key, told apart by an 8-byte sort key
    /// (their number). 1: each record has its own partition key and no sort key. Workload E's
    /// scans read along one partition key, so give it more (e.g. 100), the same at `load`
    /// and at `run`; the table then needs a sort key (`load --create-table` makes one).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub records_per_partition_key: u64,
    /// Seeds every random choice (keys, operations, values); core c uses seed + c.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// A YCSB workload letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WorkloadArg {
    /// 50 % reads, 50 % updates.
    A,
    /// 95 % reads, 5 % updates.
    B,
    /// 100 % reads.
    C,
    /// 95 % reads, 5 % inserts; reads favour the newest records (latest).
    D,
    /// 95 % short scans (queries of up to --scan-length-max records), 5 % inserts.
    E,
    /// 50 % reads, 50 % read-modify-writes.
    F,
}

impl From<WorkloadArg> for Workload {
    fn from(arg: WorkloadArg) -> Workload {
        match arg {
            WorkloadArg::A => Workload::A,
            WorkloadArg::B => Workload::B,
            WorkloadArg::C => Workload::C,
            WorkloadArg::D => Workload::D,
            WorkloadArg::E => Workload::E,
            WorkloadArg::F => Workload::F,
        }
    }
}

/// A key distribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DistributionArg {
    /// Every record equally likely.
    Uniform,
    /// YCSB's scrambled zipfian, constant 0.99: a few hot records spread over the keys.
    Zipfian,
    /// Zipfian over recency: the newest records are the hottest.
    Latest,
}

impl From<DistributionArg> for Distribution {
    fn from(arg: DistributionArg) -> Distribution {
        match arg {
            DistributionArg::Uniform => Distribution::Uniform,
            DistributionArg::Zipfian => Distribution::Zipfian,
            DistributionArg::Latest => Distribution::Latest,
        }
    }
}

/// A target rate: requests per second, or `max`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate(pub Option<f64>);

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => write!(f, "max"),
            Some(rate) => write!(f, "{}/s", format_rate(rate)),
        }
    }
}

/// A rate without needless decimals: `25000`, `1562.5`.
fn format_rate(rate: f64) -> String {
    if rate.fract() == 0.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate:.1}")
    }
}

/// Parses `max` or a positive number of requests per second.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    if text.eq_ignore_ascii_case("max") {
        return Ok(Rate(None));
    }
    match text.replace('_', "").parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(Rate(Some(rate))),
        _ => Err(format!(
            "`{text}` is neither `max` nor a positive number of requests per second"
        )),
    }
}

/// The workload and how it is measured and reported.
#[derive(Args, Debug, Clone)]
pub struct MeasureArgs {
    /// The YCSB workload.
    #[arg(long, value_enum, default_value = "a")]
    pub workload: WorkloadArg,
    /// How records are chosen (default: latest for workload d, zipfian for the others).
    #[arg(long, value_enum)]
    pub distribution: Option<DistributionArg>,
    /// Seconds at the start whose requests are sent but not measured.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    pub warmup_s: f64,
    /// Measured seconds after the warm-up (each sweep step lasts warm-up + duration).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub duration_s: f64,
    /// Requests outstanding at most per generator core (sent, or due and waiting for a free
    /// slot). Due requests beyond it wait, keep their intended start, and are counted.
    #[arg(long, value_name = "N", default_value_t = IN_FLIGHT_PER_CORE_DEFAULT)]
    pub in_flight: usize,
    /// The pacer's tick: it wakes at most once per tick and sends every request due within
    /// the next tick (a request sent early is timed from its send). Shorter follows the
    /// schedule more finely but wakes the generator's cores more often (each wake-up costs
    /// system time on the cores the node shares).
    #[arg(long, value_name = "US", default_value_t = PACING_TICK_US)]
    pub pacing_tick_us: u64,
    /// The longest scan of workload E; each scan reads uniformly 1..=N records.
    #[arg(long, value_name = "N", default_value_t = SCAN_LENGTH_MAX_DEFAULT)]
    pub scan_length_max: u32,
    /// Write an HdrHistogram interval log here (one histogram per operation and second,
    /// values in microseconds; readable by HdrHistogram's log tools).
    #[arg(long, value_name = "PATH")]
    pub hist_log: Option<PathBuf>,
    /// Write a self-contained HTML report here (latency percentiles over time, throughput,
    /// percentile spectrum); it opens in a browser without a network.
    #[arg(long, value_name = "PATH")]
    pub html: Option<PathBuf>,
    /// Print only BENCHMARKS.md's JSON lines on stdout (one per measured case); the summary
    /// table goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// The JSON lines' `bench` field.
    #[arg(long, default_value = "node")]
    pub bench: String,
    /// The JSON lines' `case` field (default: `ycsb_` and the workload's letter).
    #[arg(long)]
    pub case: Option<String>,
    /// The JSON lines' `setup` field: how the cores were shared (default: `load cores
    /// LIST, N connections`).
    #[arg(long)]
    pub setup: Option<String>,
    /// No live line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// `percore-perf run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    #[command(flatten)]
    records: RecordArgs,
    #[command(flatten)]
    measure: MeasureArgs,
    /// Requests per second of all generator cores together, or `max`: as fast as possible
    /// with the in-flight bound full (latency then runs from each request's send).
    #[arg(long, value_parser = parse_rate, default_value = "max")]
    rate: Rate,
    /// The JSON line's `load` field, e.g. `50%` (default: `max`, or the rate as `N/s`).
    #[arg(long)]
    load_label: Option<String>,
}

/// `percore-perf sweep`.
#[derive(Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    #[command(flatten)]
    records: RecordArgs,
    #[command(flatten)]
    measure: MeasureArgs,
    /// The SLO: a step passes if its p99 is at most this, it had no errors, and it
    /// delivered at least 90 % of its rate.
    #[arg(long, value_name = "MS", default_value_t = 10.0)]
    slo_p99_ms: f64,
    /// The first step's rate, or `auto`: a first step as fast as possible, then half of
    /// what it delivered.
    #[arg(long, value_name = "RATE|auto", default_value = "auto")]
    start_rate: String,
    /// Each raising step multiplies the rate by this.
    #[arg(long, value_name = "FACTOR", default_value_t = 1.25)]
    step: f64,
    /// Bisection steps between the best passing and the lowest failing rate, at most.
    #[arg(long, value_name = "N", default_value_t = 4)]
    refine_steps: u32,
    /// Steps in all, at most.
    #[arg(long, value_name = "N", default_value_t = 30)]
    max_steps: u32,
}

/// `percore-perf load`.
#[derive(Args, Debug)]
pub struct LoadArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    #[command(flatten)]
    records: RecordArgs,
    /// Records per batch write (at most 25, the protocol's limit).
    #[arg(long, value_name = "N", default_value_t = LOAD_BATCH_RECORDS_MAX)]
    batch: usize,
    /// Batch writes outstanding at most per generator core.
    #[arg(long, value_name = "N", default_value_t = LOAD_IN_FLIGHT_BATCHES_DEFAULT)]
    in_flight: usize,
    /// Create the table first (with a sort key if --records-per-partition-key > 1); an
    /// existing table is kept as it is.
    #[arg(long)]
    create_table: bool,
    /// Partitions of the created table (default: the node's choice, two per core).
    #[arg(long, value_name = "N")]
    partitions: Option<u32>,
    /// Print one JSON line (`case` `load`, `ops_per_s` = records/s, latencies of the batch
    /// writes) instead of the summary.
    #[arg(long)]
    json: bool,
    /// The JSON line's `bench` field.
    #[arg(long, default_value = "node")]
    bench: String,
    /// The JSON line's `setup` field (default: `load cores LIST, N connections`).
    #[arg(long)]
    setup: Option<String>,
    /// No live line on stderr.
    #[arg(long)]
    quiet: bool,
}

impl fmt::Display for Cores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cores::Pinned(cpus) => {
                let list: Vec<String> = cpus.iter().map(usize::to_string).collect();
                write!(f, "{}", list.join(","))
            }
            Cores::Unbound(count) => write!(f, "{count} unpinned"),
        }
    }
}

fn config_error(message: impl Into<String>) -> PerfError {
    PerfError::Config(message.into())
}

impl ConnectionArgs {
    fn check(&self) -> Result<(), PerfError> {
        if self.addrs.is_empty() {
            return Err(config_error("give the node's address with --addr IP:PORT"));
        }
        if self.connections == 0 {
            return Err(config_error("--connections must be at least 1"));
        }
        if self.max_attempts == 0 {
            return Err(config_error("--max-attempts must be at least 1"));
        }
        if self.request_timeout_ms == 0 {
            return Err(config_error("--request-timeout-ms must be positive"));
        }
        Ok(())
    }

    fn default_setup(&self) -> String {
        let mut setup = format!(
            "load cores {}, {} connections",
            self.cores,
            self.connections.max(self.cores.count())
        );
        if self.dry_run {
            setup.push_str(", dry run");
        }
        if let Some(priority) = self.realtime_priority {
            setup.push_str(&format!(", SCHED_FIFO {priority}"));
        }
        setup
    }

    /// Starts the generator's cores, each connected to the node (or to nothing: --dry-run).
    fn start(&self) -> Result<Generator, PerfError> {
        if self.dry_run {
            return Generator::start(&self.cores, self.realtime_priority, NullFactory);
        }
        let mut config = client::ClientConfig::new(self.addrs.clone());
        config.connections = self.connections;
        config.request_timeout = Duration::from_millis(self.request_timeout_ms);
        config.max_attempts = self.max_attempts;
        Generator::start(
            &self.cores,
            self.realtime_priority,
            ClientFactory {
                config,
                table: self.table.clone(),
            },
        )
    }
}

impl RecordArgs {
    fn check(&self) -> Result<(), PerfError> {
        if self.record_count == 0 {
            return Err(config_error("--record-count must be at least 1"));
        }
        if self.value_size > VALUE_BYTES_MAX {
            return Err(config_error(format!(
                "--value-size {} is over the item limit: at most {VALUE_BYTES_MAX} bytes",
                self.value_size
            )));
        }
        if self.records_per_partition_key == 0 {
            return Err(config_error(
                "--records-per-partition-key must be at least 1",
            ));
        }
        Ok(())
    }

    fn layout(&self) -> KeyLayout {
        KeyLayout {
            records_per_partition_key: self.records_per_partition_key,
        }
    }
}

impl MeasureArgs {
    fn check(&self) -> Result<(), PerfError> {
        if !(self.warmup_s >= 0.0 && self.warmup_s.is_finite()) {
            return Err(config_error("--warmup-s must be zero or more seconds"));
        }
        if !(self.duration_s > 0.0 && self.duration_s.is_finite()) {
            return Err(config_error("--duration-s must be positive"));
        }
        if self.in_flight == 0 || self.in_flight > IN_FLIGHT_PER_CORE_MAX {
            return Err(config_error(format!(
                "--in-flight {} is out of range: 1 to {IN_FLIGHT_PER_CORE_MAX}",
                self.in_flight
            )));
        }
        if self.scan_length_max == 0 {
            return Err(config_error("--scan-length-max must be at least 1"));
        }
        if self.pacing_tick_us > PACING_TICK_US_MAX {
            return Err(config_error(format!(
                "--pacing-tick-us must be at most {PACING_TICK_US_MAX}"
            )));
        }
        Ok(())
    }

    fn workload(&self) -> Workload {
        self.workload.into()
    }

    /// Says on stderr when a setting makes the workload read less than it seems to.
    fn warn(&self, records: &RecordArgs) {
        if self.workload() == Workload::E && records.records_per_partition_key == 1 {
            eprintln!(
                "note: with --records-per-partition-key 1 every partition key holds one record, \
                 so each scan of workload e reads one record; load and run with e.g. 100"
            );
        }
    }

    fn distribution(&self) -> Distribution {
        self.distribution
            .map_or(self.workload().default_distribution(), Distribution::from)
    }

    fn spec(&self, records: &RecordArgs, rate: Rate) -> RunSpec {
        RunSpec {
            mix: self.workload().mix(),
            distribution: self.distribution(),
            rate_per_s: rate.0,
            warmup: Duration::from_secs_f64(self.warmup_s),
            duration: Duration::from_secs_f64(self.duration_s),
            record_count: records.record_count,
            layout: records.layout(),
            value_size: records.value_size,
            scan_length_max: self.scan_length_max,
            in_flight_per_core: self.in_flight,
            seed: records.seed,
            pacing_tick: Duration::from_micros(self.pacing_tick_us),
            drain_grace: Duration::from_millis(DRAIN_GRACE_MS),
            drain_timeout: Duration::from_millis(DRAIN_TIMEOUT_MS),
        }
    }

    fn labels(&self, connection: &ConnectionArgs, load: String) -> Labels {
        Labels {
            bench: self.bench.clone(),
            case: self
                .case
                .clone()
                .unwrap_or_else(|| self.workload().case_name().to_owned()),
            load,
            setup: self
                .setup
                .clone()
                .unwrap_or_else(|| connection.default_setup()),
        }
    }

    fn settings(&self, connection: &ConnectionArgs, records: &RecordArgs) -> Vec<(String, String)> {
        let addrs: Vec<String> = connection.addrs.iter().map(ToString::to_string).collect();
        [
            (
                "workload",
                format!("YCSB {}", self.workload().letter().to_ascii_uppercase()),
            ),
            ("key distribution", self.distribution().name().to_owned()),
            ("records", report::thousands(records.record_count)),
            (
                "records per partition key",
                records.records_per_partition_key.to_string(),
            ),
            ("value size", format!("{} bytes", records.value_size)),
            (
                "warm-up, duration",
                format!("{} s, {} s", self.warmup_s, self.duration_s),
            ),
            ("generator cores", connection.cores.to_string()),
            (
                "connections",
                connection
                    .connections
                    .max(connection.cores.count())
                    .to_string(),
            ),
            ("in flight per core", self.in_flight.to_string()),
            (
                "target",
                if connection.dry_run {
                    "none (dry run)".to_owned()
                } else {
                    format!("{} table {}", addrs.join(" "), connection.table)
                },
            ),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }
}

/// Prints a line on stdout, or fails if stdout is gone.
fn out(line: &str) -> Result<(), PerfError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|error| PerfError::Io {
            path: "standard output".to_owned(),
            error,
        })
}

/// The summary table, with the notes, where it belongs: stdout, or stderr under --json.
fn print_table(text: &str, json: bool) -> Result<(), PerfError> {
    if json {
        eprint!("{text}");
        Ok(())
    } else {
        out(text.trim_end_matches('\n'))
    }
}

/// One run, with the live line and the interval log; returns its outcome and chart points.
fn measured_run(
    generator: &mut Generator,
    spec: &RunSpec,
    measure: &MeasureArgs,
    log: &mut dyn IntervalRecorder,
    tag_prefix: &str,
    log_offset_s: f64,
) -> Result<(RunOutcome, Vec<SeriesPoint>), PerfError> {
    let mut series = Vec::new();
    let mut log_error = None;
    let outcome = generator.run(spec, &mut |interval: &Interval| {
        if !measure.quiet {
            eprintln!("{}", report::live_line(interval));
        }
        if log_error.is_none() {
            log_error = log.record(interval, tag_prefix, log_offset_s).err();
        }
        // A run's last interval is a fragment of a second whose rate would be noise on the
        // chart; its histograms are in the log and the summary all the same.
        if interval.end_s - interval.start_s >= 0.5 {
            series.push(SeriesPoint::of(interval));
        }
    })?;
    if let (Some(error), Some(path)) = (log_error, &measure.hist_log) {
        return Err(PerfError::Io {
            path: path.display().to_string(),
            error,
        });
    }
    Ok((outcome, series))
}

fn notes(outcome: &RunOutcome) -> Vec<String> {
    let mut notes = vec![format!(
        "target rate {}; measured {:.2} s; latency from each request's intended start",
        Rate(outcome.rate_per_s),
        outcome.measured_s
    )];
    if outcome.bound_hits > 0 {
        notes.push(format!(
            "{} requests fell due while every slot was busy (the in-flight bound was hit); \
             their wait is in the latencies",
            report::thousands(outcome.bound_hits)
        ));
    }
    notes
}

fn kind_stats(outcome: &RunOutcome) -> Vec<(String, &KindStats)> {
    outcome
        .stats
        .kinds()
        .map(|(kind, stats)| (kind.name().to_owned(), stats))
        .collect()
}

fn run(args: RunArgs) -> Result<(), PerfError> {
    args.connection.check()?;
    args.records.check()?;
    args.measure.check()?;
    let measure = &args.measure;
    measure.warn(&args.records);
    let spec = measure.spec(&args.records, args.rate);
    let labels = measure.labels(
        &args.connection,
        args.load_label
            .clone()
            .unwrap_or_else(|| args.rate.to_string()),
    );
    let mut generator = args.connection.start()?;
    let comment = format!("percore-perf run {} {}", labels.case, labels.load);
    let result = report::with_interval_log(measure.hist_log.as_deref(), &comment, |log| {
        measured_run(&mut generator, &spec, measure, log, "", 0.0)
    });
    generator.stop();
    let (outcome, series) = result?;
    let rows = outcome.rows();
    let notes = notes(&outcome);
    let mut table = report::summary_table(&rows);
    for note in &notes {
        table.push_str(note);
        table.push('\n');
    }
    print_table(&table, measure.json)?;
    if measure.json {
        out(&report::json_line(&labels, &outcome.total()))?;
    }
    if let Some(path) = &measure.html {
        let html = HtmlReport {
            title: format!("percore-perf: {} at {}", labels.case, labels.load),
            settings: measure.settings(&args.connection, &args.records),
            spectra: HtmlReport::spectra_of(&kind_stats(&outcome), &outcome.stats.total()),
            rows,
            series,
            sweep: Vec::new(),
            slo_p99_us: None,
            notes,
        };
        report::write_html(path, &html)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn load(args: LoadArgs) -> Result<(), PerfError> {
    args.connection.check()?;
    args.records.check()?;
    if args.batch == 0 || args.batch > LOAD_BATCH_RECORDS_MAX {
        return Err(config_error(format!(
            "--batch must be 1 to {LOAD_BATCH_RECORDS_MAX}"
        )));
    }
    if args.in_flight == 0 || args.in_flight > IN_FLIGHT_PER_CORE_MAX {
        return Err(config_error(format!(
            "--in-flight must be 1 to {IN_FLIGHT_PER_CORE_MAX}"
        )));
    }
    let mut generator = args.connection.start()?;
    let result = (|| {
        if args.create_table {
            let spec = TableSpec {
                name: args.connection.table.clone(),
                sort_key: args.records.layout().has_sort_key(),
                partitions: args.partitions,
            };
            let created = generator.create_table(&spec)?;
            eprintln!(
                "table {} {}",
                spec.name,
                if created {
                    "created"
                } else {
                    "exists already: kept"
                }
            );
        }
        let spec = LoadSpec {
            record_count: args.records.record_count,
            layout: args.records.layout(),
            value_size: args.records.value_size,
            batch_records: args.batch,
            in_flight_batches: args.in_flight,
            seed: args.records.seed,
        };
        generator.load(&spec, &mut |interval| {
            if !args.quiet {
                eprintln!("{}", report::live_line(interval));
            }
        })
    })();
    generator.stop();
    let outcome = result?;
    let elapsed_s = outcome.elapsed_s.max(1e-9);
    let batches = outcome.batches.total();
    let mut row = Row::of("batch", &batches, elapsed_s);
    let records_per_s = outcome.records as f64 / elapsed_s;
    let summary = format!(
        "loaded {} records in {:.2} s: {} records/s; batch writes p50 {} p99 {} max {}; errors {} {}",
        report::thousands(outcome.records),
        elapsed_s,
        report::thousands(records_per_s.round() as u64),
        report::latency(row.p50_us),
        report::latency(row.p99_us),
        report::latency(row.max_us),
        report::thousands(row.errors),
        report::errors_by_kind(&row),
    );
    if args.json {
        eprintln!("{summary}");
        row.ops_per_s = records_per_s;
        let labels = Labels {
            bench: args.bench.clone(),
            case: "load".to_owned(),
            load: "max".to_owned(),
            setup: args
                .setup
                .clone()
                .unwrap_or_else(|| args.connection.default_setup()),
        };
        out(&report::json_line(&labels, &row))?;
    } else {
        out(summary.trim_end())?;
    }
    if row.errors > 0 {
        return Err(PerfError::Config(format!(
            "{} batch writes failed: the records are not all loaded",
            row.errors
        )));
    }
    Ok(())
}

fn sweep(args: SweepArgs) -> Result<(), PerfError> {
    args.connection.check()?;
    args.records.check()?;
    args.measure.check()?;
    if !(args.step > 1.0 && args.step.is_finite()) {
        return Err(config_error("--step must be a factor above 1"));
    }
    if !(args.slo_p99_ms > 0.0 && args.slo_p99_ms.is_finite()) {
        return Err(config_error("--slo-p99-ms must be positive"));
    }
    if args.max_steps == 0 || args.max_steps > SWEEP_STEPS_MAX {
        return Err(config_error(format!(
            "--max-steps must be 1 to {SWEEP_STEPS_MAX}"
        )));
    }
    let start_rate = if args.start_rate.eq_ignore_ascii_case("auto") {
        None
    } else {
        match parse_rate(&args.start_rate).map_err(config_error)? {
            Rate(Some(rate)) => Some(rate),
            Rate(None) => None,
        }
    };
    let measure = &args.measure;
    measure.warn(&args.records);
    let slo_p99_us = (args.slo_p99_ms * 1_000.0).round() as u64;
    let mut generator = args.connection.start()?;
    let comment = format!("percore-perf sweep {}", measure.workload().case_name());
    let result = report::with_interval_log(measure.hist_log.as_deref(), &comment, |log| {
        let mut offset_s = 0.0;
        let step_s = measure.warmup_s + measure.duration_s;
        let mut best: Option<(RunOutcome, Vec<SeriesPoint>, String)> = None;
        let mut run_step = |generator: &mut Generator, rate: Rate, label: String| {
            eprintln!("step {label}: rate {rate}");
            let spec = measure.spec(&args.records, rate);
            let tag = format!("{}-", label.replace(['/', ' '], ""));
            let result = measured_run(generator, &spec, measure, log, &tag, offset_s);
            offset_s += step_s + 1.0;
            result
        };
        let start = match start_rate {
            Some(rate) => rate,
            None => {
                let (probe, _) = run_step(&mut generator, Rate(None), "probe".to_owned())?;
                let total = probe.total();
                eprintln!(
                    "probe: {} ops/s as fast as possible (p99 {}); starting at half of it",
                    report::thousands(total.ops_per_s.round() as u64),
                    report::latency(total.p99_us)
                );
                (total.ops_per_s / 2.0).max(1.0)
            }
        };
        let mut search = SweepSearch::new(SweepConfig {
            start_rate_per_s: start,
            step_factor: args.step,
            refine_steps: args.refine_steps,
            max_steps: args.max_steps,
            slo_p99_us,
        });
        let mut step_rows = Vec::new();
        while let Some(rate) = search.next_rate() {
            let label = format!("{}/s", format_rate(rate.round()));
            let (outcome, series) =
                run_step(&mut generator, Rate(Some(rate.round())), label.clone())?;
            let total = outcome.total();
            let passed = search.record(StepResult {
                target_rate_per_s: rate.round(),
                achieved_ops_per_s: total.ops_per_s,
                p99_us: total.p99_us,
                errors: total.errors,
            });
            eprintln!(
                "step {label}: {} ops/s, p99 {}, errors {}: SLO {}",
                report::thousands(total.ops_per_s.round() as u64),
                report::latency(total.p99_us),
                total.errors,
                if passed { "kept" } else { "broken" }
            );
            if measure.json {
                out(&report::json_line(
                    &measure.labels(&args.connection, label.clone()),
                    &total,
                ))?;
            }
            step_rows.push((label.clone(), total.clone(), passed));
            let better = passed
                && best
                    .as_ref()
                    .is_none_or(|(b, _, _)| total.ops_per_s > b.total().ops_per_s);
            if better {
                best = Some((outcome, series, label));
            }
        }
        Ok((search, step_rows, best))
    });
    generator.stop();
    let (search, step_rows, best) = result?;

    let mut table = format!(
        "{:<14} {:>12} {:>10} {:>10} {:>10} {:>8}  SLO p99 ≤ {}\n",
        "step",
        "ops/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "errors",
        report::latency(slo_p99_us)
    );
    for (label, row, passed) in &step_rows {
        table.push_str(&format!(
            "{:<14} {:>12} {:>10} {:>10} {:>10} {:>8}  {}\n",
            label,
            report::thousands(row.ops_per_s.round() as u64),
            report::thousands(row.p50_us),
            report::thousands(row.p99_us),
            report::thousands(row.p999_us),
            report::thousands(row.errors),
            if *passed { "kept" } else { "broken" }
        ));
    }
    let verdict = match &best {
        Some((outcome, _, label)) => {
            let total = outcome.total();
            format!(
                "highest throughput within the SLO: {} ops/s (step {label}, p99 {}, p99.9 {})",
                report::thousands(total.ops_per_s.round() as u64),
                report::latency(total.p99_us),
                report::latency(total.p999_us)
            )
        }
        None => "no step kept the SLO".to_owned(),
    };
    table.push_str(&verdict);
    table.push('\n');
    print_table(&table, measure.json)?;
    if let (true, Some((outcome, _, _))) = (measure.json, &best) {
        let labels = measure.labels(&args.connection, "max_within_slo".to_owned());
        out(&report::json_line(&labels, &outcome.total()))?;
    }
    if let Some(path) = &measure.html {
        let (rows, series, spectra, mut notes) = match &best {
            Some((outcome, series, label)) => (
                outcome.rows(),
                series.clone(),
                HtmlReport::spectra_of(&kind_stats(outcome), &outcome.stats.total()),
                vec![format!(
                    "The table, charts and spectrum below are those of step {label}."
                )],
            ),
            None => (Vec::new(), Vec::new(), Vec::new(), Vec::new()),
        };
        notes.insert(0, verdict.clone());
        let html = HtmlReport {
            title: format!(
                "percore-perf sweep: {} with p99 ≤ {}",
                measure.workload().case_name(),
                report::latency(slo_p99_us)
            ),
            settings: measure.settings(&args.connection, &args.records),
            rows,
            series,
            spectra,
            sweep: search
                .steps()
                .iter()
                .map(|(step, passed)| {
                    (
                        step.target_rate_per_s,
                        step.achieved_ops_per_s,
                        step.p99_us,
                        *passed,
                    )
                })
                .collect(),
            slo_p99_us: Some(slo_p99_us),
            notes,
        };
        report::write_html(path, &html)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Runs the parsed command line.
pub fn execute(cli: Cli) -> Result<(), PerfError> {
    match cli.command {
        Command::Run(args) => run(args),
        Command::Load(args) => load(args),
        Command::Sweep(args) => sweep(args),
    }
}

/// Passes glommio's warnings (e.g. that it fell back to unregistered buffers for lack of
/// locked memory) to stderr: glommio says such things only through `log`.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("{} {}: {}", record.level(), record.target(), record.args());
        }
    }

    fn flush(&self) {}
}

/// The binary's entry point: parses the arguments, runs, and returns the exit code.
pub fn main() -> std::process::ExitCode {
    static LOGGER: StderrLogger = StderrLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
    let cli = Cli::parse();
    match execute(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("percore-perf: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("max"), Ok(Rate(None)));
        assert_eq!(parse_rate("50_000"), Ok(Rate(Some(50_000.0))));
        assert_eq!(parse_rate("1562.5"), Ok(Rate(Some(1562.5))));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-3").is_err());
        assert!(parse_rate("fast").is_err());
        assert_eq!(Rate(Some(25_000.0)).to_string(), "25000/s");
        assert_eq!(Rate(None).to_string(), "max");
    }

    #[test]
    fn defaults_follow_the_workload() {
        let cli = Cli::try_parse_from(["percore-perf", "run", "--workload", "d"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.measure.distribution(), Distribution::Latest);
        assert_eq!(args.rate, Rate(None));
        let labels = args.measure.labels(&args.connection, "max".into());
        assert_eq!(labels.case, "ycsb_d");
        assert_eq!(labels.setup, "load cores 0, 4 connections");
        assert_eq!(
            args.connection.addrs,
            vec!["127.0.0.1:7700".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let parse = |line: &[&str]| {
            let cli = Cli::try_parse_from(line).unwrap();
            let Command::Run(args) = cli.command else {
                panic!("not run")
            };
            args
        };
        let args = parse(&["percore-perf", "run", "--in-flight", "0"]);
        assert!(args
            .measure
            .check()
            .unwrap_err()
            .to_string()
            .contains("--in-flight"));
        let args = parse(&["percore-perf", "run", "--record-count", "0"]);
        assert!(args.records.check().is_err());
        let args = parse(&["percore-perf", "run", "--value-size", "1000000"]);
        assert!(args
            .records
            .check()
            .unwrap_err()
            .to_string()
            .contains("item limit"));
        assert!(Cli::try_parse_from(["percore-perf", "run", "--cores", "1-0"]).is_err());
        assert!(Cli::try_parse_from(["percore-perf", "run", "--workload", "g"]).is_err());
        for priority in ["0", "100"] {
            let line = ["percore-perf", "run", "--realtime-priority", priority];
            assert!(Cli::try_parse_from(line).is_err(), "{priority} was taken");
        }
    }

    #[test]
    fn a_realtime_priority_is_named_in_the_setup() {
        let cli = Cli::try_parse_from(["percore-perf", "run", "--realtime-priority", "1"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.connection.realtime_priority, Some(1));
        let labels = args.measure.labels(&args.connection, "max".into());
        assert_eq!(labels.setup, "load cores 0, 4 connections, SCHED_FIFO 1");
    }
}
