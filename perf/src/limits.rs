//! Every limit and fixed figure of the load generator, in one place, with the reason for each.

/// Requests one core keeps outstanding (sent, or due and waiting for a free slot) unless
/// `--in-flight` says otherwise. Enough to keep a few pipelined connections busy at 50,000
/// requests/s with a millisecond of latency (50 in flight), with head-room for stalls.
pub const IN_FLIGHT_PER_CORE_DEFAULT: usize = 256;

/// The most `--in-flight` may ask for per core. Bounds the slot tasks and the insert window
/// (an insert's key is known to be acknowledged only once everything before it is).
pub const IN_FLIGHT_PER_CORE_MAX: usize = 4096;

/// Batches of the `load` command one core keeps in flight unless told otherwise: a load wants
/// throughput, and 32 batches of 25 records keep the WAL's group commit full.
pub const LOAD_IN_FLIGHT_BATCHES_DEFAULT: usize = 32;

/// Records in one batch write of the `load` command: the protocol's batch-write limit.
pub const LOAD_BATCH_RECORDS_MAX: usize = 25;

/// The pacer wakes at most once per tick and releases every request due within the next
/// tick, so a request may leave up to this early (it is then timed from its send). Each
/// wake-up of an idle core costs a park, a timer and a socket write per connection; at
/// 50,000 requests/s a 200 µs tick batches ten requests per wake-up instead of one, while
/// the bursts stay far shorter than the latencies measured.
pub const PACING_TICK_US: u64 = 200;

/// The longest tick `--pacing-tick-us` accepts: beyond 10 ms the bursts would be the
/// workload.
pub const PACING_TICK_US_MAX: u64 = 10_000;

/// The largest latency a histogram tells apart: a minute. A slower answer is recorded as a
/// minute (the run is broken anyway, and the bound keeps each histogram at about 140 KiB).
pub const HISTOGRAM_LATENCY_US_MAX: u64 = 60_000_000;

/// Significant decimal digits of every histogram: 0.1 % relative error.
pub const HISTOGRAM_SIGNIFICANT_DIGITS: u8 = 3;

/// How long after the end of a run the generator still sends requests that were due before
/// the end but waited for a slot (the backlog of a stall or of an overload). Past it they are
/// counted as `unsent` errors: a run never stretches without bound.
pub const DRAIN_GRACE_MS: u64 = 2_000;

/// How long after the end of the grace the generator waits for answers still in flight;
/// those that have not come back by then are counted as `timeout` errors.
pub const DRAIN_TIMEOUT_MS: u64 = 5_000;

/// The period of the live line on stderr, of the interval log and of the report's charts.
pub const REPORT_INTERVAL_MS: u64 = 1_000;

/// How long the cores wait between being told to run and the run's start, so that every core
/// starts its schedule at the same instant.
pub const START_DELAY_MS: u64 = 50;

/// How often an idle core looks for its next command.
pub const COMMAND_POLL_MS: u64 = 5;

/// The longest scan (YCSB workload E's `maxscanlength`) unless `--scan-length-max` says
/// otherwise.
pub const SCAN_LENGTH_MAX_DEFAULT: u32 = 100;

/// A key is `user` and 20 decimal digits: 24 bytes, the key size of BENCHMARKS.md.
pub const KEY_BYTES: usize = 24;

/// The size of the sort key when records share a partition key: a big-endian record number.
pub const SORT_KEY_BYTES: usize = 8;

/// The largest value `--value-size` accepts: the protocol's item limit less the keys.
pub const VALUE_BYTES_MAX: usize = 400 * 1024 - KEY_BYTES - SORT_KEY_BYTES;

/// Cores one generator may use.
pub const CORES_MAX: usize = 256;

/// How many times a zipfian draw is retried when it names a record that does not exist yet
/// (an insert not yet acknowledged), before a uniform draw among existing records is taken.
pub const ZIPFIAN_REDRAWS_MAX: u32 = 64;

/// glommio's I/O buffer memory per generator core. The generator does no file I/O; a small
/// pool keeps its locked memory low beside the node's.
pub const EXECUTOR_IO_MEMORY_BYTES: usize = 1 << 20;

/// Steps one sweep runs at most.
pub const SWEEP_STEPS_MAX: u32 = 64;

/// A sweep step passes only if it delivered at least this fraction of its target rate.
pub const SWEEP_ACHIEVED_FRACTION_MIN: f64 = 0.9;

/// A sweep stops refining once the gap between the best passing and the lowest failing rate
/// is below this fraction of the passing one.
pub const SWEEP_RESOLUTION_FRACTION: f64 = 0.02;

const _: () = assert!(IN_FLIGHT_PER_CORE_DEFAULT <= IN_FLIGHT_PER_CORE_MAX);
const _: () = assert!(IN_FLIGHT_PER_CORE_MAX.is_power_of_two());
const _: () = assert!(LOAD_IN_FLIGHT_BATCHES_DEFAULT <= IN_FLIGHT_PER_CORE_MAX);
const _: () = assert!(KEY_BYTES == 4 + 20);
