//! What a run measured: one HdrHistogram of latencies per operation kind (microseconds,
//! three significant digits), counts, and errors by kind; and the summary rows made of them.

use hdrhistogram::Histogram;

use crate::limits::{HISTOGRAM_LATENCY_US_MAX, HISTOGRAM_SIGNIFICANT_DIGITS};
use crate::workload::{OpKind, OP_KINDS};

/// Why an operation did not succeed, as the reports count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A read named a record the store did not have.
    NotFound,
    /// A conditional write's condition did not hold.
    ConditionFailed,
    /// The store refused for lack of capacity (throttled).
    Throttled,
    /// The store could not serve the request now (unavailable, wrong owner).
    Unavailable,
    /// The request was refused as too large or otherwise invalid (a bad workload setting).
    Rejected,
    /// The table does not exist (run `load --create-table` first).
    UnknownTable,
    /// The connection failed or closed, or the answer was not understood.
    Connection,
    /// The store answered with an internal error.
    Internal,
    /// The answer did not come back before the end of the drain.
    Timeout,
    /// The request was due but never sent: it waited behind the in-flight bound past the
    /// drain grace.
    Unsent,
}

/// How many kinds of error there are.
pub const ERROR_KINDS: usize = 10;

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; ERROR_KINDS] = [
        ErrorKind::NotFound,
        ErrorKind::ConditionFailed,
        ErrorKind::Throttled,
        ErrorKind::Unavailable,
        ErrorKind::Rejected,
        ErrorKind::UnknownTable,
        ErrorKind::Connection,
        ErrorKind::Internal,
        ErrorKind::Timeout,
        ErrorKind::Unsent,
    ];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::ConditionFailed => "condition_failed",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Rejected => "rejected",
            ErrorKind::UnknownTable => "unknown_table",
            ErrorKind::Connection => "connection",
            ErrorKind::Internal => "internal",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unsent => "unsent",
        }
    }

    #[inline]
    fn index(self) -> usize {
        self as usize
    }
}

/// A fresh latency histogram: 1 µs to a minute, three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_LATENCY_US_MAX, HISTOGRAM_SIGNIFICANT_DIGITS)
        .expect("the histogram bounds are valid constants")
}

/// Nanoseconds to the microseconds a histogram records: at least 1 (the histogram's lowest
/// value), saturating at the histogram's top.
#[inline]
pub fn latency_us(latency_ns: u64) -> u64 {
    (latency_ns / 1_000).clamp(1, HISTOGRAM_LATENCY_US_MAX)
}

/// Latencies and errors of one operation kind.
#[derive(Clone, Debug)]
pub struct KindStats {
    /// Latencies of the successful operations, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Failed operations by [`ErrorKind`].
    pub errors: [u64; ERROR_KINDS],
}

impl KindStats {
    fn new() -> KindStats {
        KindStats {
            latency_us: new_histogram(),
            errors: [0; ERROR_KINDS],
        }
    }

    /// Successful plus failed operations.
    pub fn count(&self) -> u64 {
        self.latency_us.len() + self.error_count()
    }

    /// Failed operations.
    pub fn error_count(&self) -> u64 {
        self.errors.iter().sum()
    }
}

/// Latencies and errors of every kind a workload issues; kinds it never issues have none
/// (each histogram is about 140 KiB, and one set is swapped out every second).
#[derive(Clone, Debug, Default)]
pub struct OpStats {
    kinds: [Option<Box<KindStats>>; OP_KINDS],
}

impl OpStats {
    /// Statistics for the kinds in `kinds`.
    pub fn for_kinds(kinds: impl IntoIterator<Item = OpKind>) -> OpStats {
        let mut stats = OpStats::default();
        for kind in kinds {
            stats.kinds[kind.index()] = Some(Box::new(KindStats::new()));
        }
        stats
    }

    /// The statistics of `kind`, if it is tracked.
    pub fn kind(&self, kind: OpKind) -> Option<&KindStats> {
        self.kinds[kind.index()].as_deref()
    }

    fn kind_mut(&mut self, kind: OpKind) -> &mut KindStats {
        self.kinds[kind.index()].get_or_insert_with(|| Box::new(KindStats::new()))
    }

    /// Records one successful operation.
    #[inline]
    pub fn record(&mut self, kind: OpKind, latency_us: u64) {
        self.kind_mut(kind).latency_us.saturating_record(latency_us);
    }

    /// Records one failed operation.
    #[inline]
    pub fn record_error(&mut self, kind: OpKind, error: ErrorKind) {
        self.kind_mut(kind).errors[error.index()] += 1;
    }

    /// Records `count` failed operations of one kind at once.
    pub fn record_errors(&mut self, kind: OpKind, error: ErrorKind, count: u64) {
        if count > 0 {
            self.kind_mut(kind).errors[error.index()] += count;
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &OpStats) {
        for kind in OpKind::ALL {
            if let Some(theirs) = other.kind(kind) {
                let ours = self.kind_mut(kind);
                ours.latency_us
                    .add(&theirs.latency_us)
                    .expect("histograms of the same bounds always add");
                for (ours, theirs) in ours.errors.iter_mut().zip(theirs.errors) {
                    *ours += theirs;
                }
            }
        }
    }

    /// The kinds tracked, in report order.
    pub fn kinds(&self) -> impl Iterator<Item = (OpKind, &KindStats)> {
        OpKind::ALL
            .into_iter()
            .filter_map(|kind| self.kind(kind).map(|stats| (kind, stats)))
    }

    /// Every kind's latencies in one histogram, and their errors.
    pub fn total(&self) -> KindStats {
        let mut total = KindStats::new();
        for (_, stats) in self.kinds() {
            total
                .latency_us
                .add(&stats.latency_us)
                .expect("same bounds");
            for (ours, theirs) in total.errors.iter_mut().zip(stats.errors) {
                *ours += theirs;
            }
        }
        total
    }

    /// Operations of every kind, successful and failed.
    pub fn count(&self) -> u64 {
        self.kinds().map(|(_, stats)| stats.count()).sum()
    }

    /// Failed operations of every kind.
    pub fn error_count(&self) -> u64 {
        self.kinds().map(|(_, stats)| stats.error_count()).sum()
    }
}

/// One line of a summary: an operation kind, or the total.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The kind's name, or `total`.
    pub name: String,
    /// Operations, successful and failed.
    pub count: u64,
    /// Successful operations per second over the measured time (failures are not
    /// throughput; they are counted in `errors`).
    pub ops_per_s: f64,
    /// Latency percentiles of the successful operations, in microseconds (0 when none).
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// The slowest.
    pub max_us: u64,
    /// Failed operations.
    pub errors: u64,
    /// Failed operations by kind, only the kinds that occurred.
    pub errors_by_kind: Vec<(ErrorKind, u64)>,
}

impl Row {
    /// The row of `stats` named `name`, over `elapsed_s` seconds of measurement.
    pub fn of(name: &str, stats: &KindStats, elapsed_s: f64) -> Row {
        let histogram = &stats.latency_us;
        let quantile = |q: f64| {
            if histogram.is_empty() {
                0
            } else {
                histogram.value_at_quantile(q)
            }
        };
        let count = stats.count();
        Row {
            name: name.to_owned(),
            count,
            ops_per_s: if elapsed_s > 0.0 {
                histogram.len() as f64 / elapsed_s
            } else {
                0.0
            },
            p50_us: quantile(0.5),
            p99_us: quantile(0.99),
            p999_us: quantile(0.999),
            max_us: if histogram.is_empty() {
                0
            } else {
                histogram.max()
            },
            errors: stats.error_count(),
            errors_by_kind: ErrorKind::ALL
                .into_iter()
                .map(|kind| (kind, stats.errors[kind.index()]))
                .filter(|&(_, count)| count > 0)
                .collect(),
        }
    }
}

/// The rows of a summary: one per kind the workload issued, then the total.
pub fn summary_rows(stats: &OpStats, elapsed_s: f64) -> Vec<Row> {
    let mut rows: Vec<Row> = stats
        .kinds()
        .map(|(kind, stats)| Row::of(kind.name(), stats, elapsed_s))
        .collect();
    rows.push(Row::of("total", &stats.total(), elapsed_s));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_kinds_and_errors() {
        let mut stats = OpStats::for_kinds([OpKind::Read, OpKind::Update]);
        for latency in 1..=1000 {
            stats.record(OpKind::Read, latency);
        }
        stats.record(OpKind::Update, 5_000);
        stats.record_error(OpKind::Update, ErrorKind::Throttled);
        stats.record_errors(OpKind::Read, ErrorKind::Timeout, 2);
        let mut other = OpStats::for_kinds([OpKind::Read]);
        other.record(OpKind::Read, 70_000_000);
        stats.merge(&other);
        let rows = summary_rows(&stats, 2.0);
        assert_eq!(rows.len(), 3);
        let read = &rows[0];
        assert_eq!(
            (read.name.as_str(), read.count, read.errors),
            ("read", 1003, 2)
        );
        assert_eq!(
            read.max_us,
            stats.kind(OpKind::Read).unwrap().latency_us.max()
        );
        assert!(read.max_us >= HISTOGRAM_LATENCY_US_MAX - HISTOGRAM_LATENCY_US_MAX / 1000);
        assert!((495..=505).contains(&read.p50_us), "{}", read.p50_us);
        let total = &rows[2];
        assert_eq!((total.count, total.errors), (1005, 3));
        assert_eq!(total.ops_per_s, 501.0, "successes only");
        assert_eq!(
            total.errors_by_kind,
            vec![(ErrorKind::Throttled, 1), (ErrorKind::Timeout, 2)]
        );
    }

    #[test]
    fn latency_is_clamped_to_the_histogram() {
        assert_eq!(latency_us(0), 1);
        assert_eq!(latency_us(1_999), 1);
        assert_eq!(latency_us(2_000), 2);
        assert_eq!(latency_us(u64::MAX), HISTOGRAM_LATENCY_US_MAX);
    }

    #[test]
    fn empty_rows_are_zero() {
        let row = Row::of("read", &KindStats::new(), 0.0);
        assert_eq!(
            (row.count, row.p99_us, row.max_us, row.ops_per_s),
            (0, 0, 0, 0.0)
        );
    }
}
