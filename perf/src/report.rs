//! What a run tells: the live line, the summary table, BENCHMARKS.md's JSON line, the
//! HdrHistogram interval log, and a self-contained HTML page (inline SVG charts, no script,
//! nothing fetched) that opens in any browser.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write as _};
use std::path::Path;
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::runner::Interval;
use crate::stats::{KindStats, Row};
use crate::PerfError;

/// What a JSON line says the measurement was (BENCHMARKS.md's `bench`, `case`, `load` and
/// `setup` fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labels {
    /// The benchmark's NAME, e.g. `node`.
    pub bench: String,
    /// The case, e.g. `ycsb_a`.
    pub case: String,
    /// The load, e.g. `max`, `50%`, `20000/s`.
    pub load: String,
    /// How the cores were shared, e.g. `server core 1, load core 0`.
    pub setup: String,
}

/// One JSON line of BENCHMARKS.md's `node` table, fields in its order.
#[derive(Serialize)]
struct JsonLine<'a> {
    bench: &'a str,
    case: &'a str,
    load: &'a str,
    ops_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    errors: u64,
    setup: &'a str,
}

/// The JSON line of one measured case (no newline): `total` is the run's total row.
pub fn json_line(labels: &Labels, total: &Row) -> String {
    let line = JsonLine {
        bench: &labels.bench,
        case: &labels.case,
        load: &labels.load,
        ops_per_s: (total.ops_per_s * 10.0).round() / 10.0,
        p50_us: total.p50_us,
        p99_us: total.p99_us,
        p999_us: total.p999_us,
        max_us: total.max_us,
        errors: total.errors,
        setup: &labels.setup,
    };
    serde_json::to_string(&line).expect("a struct of strings and numbers always serializes")
}

/// A count with thousands separators: `1234567` → `1,234,567`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A latency in microseconds, in the unit that reads best: `850 µs`, `1.25 ms`, `2.1 s`.
pub fn latency(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.2} ms", us as f64 / 1e3)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

/// A round latency for an axis tick: `100 µs`, `1 ms`, `10 s`.
fn round_latency(us: u64) -> String {
    let (value, unit) = if us < 1_000 {
        (us as f64, "µs")
    } else if us < 1_000_000 {
        (us as f64 / 1e3, "ms")
    } else {
        (us as f64 / 1e6, "s")
    };
    let text = format!("{value:.3}");
    format!(
        "{} {unit}",
        text.trim_end_matches('0').trim_end_matches('.')
    )
}

/// The live line of one interval: time, rate of successful operations, p50, p99, errors.
/// A run's last interval is usually a fragment of a second: it shows counts, not rates.
pub fn live_line(interval: &Interval) -> String {
    let total = interval.stats.total();
    let seconds = (interval.end_s - interval.start_s).max(1e-3);
    let (p50, p99) = if total.latency_us.is_empty() {
        (0, 0)
    } else {
        (
            total.latency_us.value_at_quantile(0.5),
            total.latency_us.value_at_quantile(0.99),
        )
    };
    let fragment = seconds < 0.9;
    let mut line = if fragment {
        format!(
            "[{:>6.1}s] {:>9} ops in the last {:.2} s",
            interval.end_s,
            thousands(total.latency_us.len()),
            seconds
        )
    } else {
        format!(
            "[{:>6.1}s] {:>9} ops/s",
            interval.end_s,
            thousands((total.latency_us.len() as f64 / seconds).round() as u64)
        )
    };
    let _ = write!(
        line,
        "  p50 {:>9}  p99 {:>9}  errors {}",
        latency(p50),
        latency(p99),
        thousands(total.error_count())
    );
    if interval.records > 0 {
        if fragment {
            let _ = write!(line, "  records {}", thousands(interval.records));
        } else {
            let records_per_s = (interval.records as f64 / seconds).round() as u64;
            let _ = write!(line, "  records {}/s", thousands(records_per_s));
        }
    }
    if interval.warmup {
        line.push_str("  (warm-up)");
    }
    line
}

/// The errors of a row, `kind=count` separated by spaces; empty if none.
pub fn errors_by_kind(row: &Row) -> String {
    row.errors_by_kind
        .iter()
        .map(|(kind, count)| format!("{}={count}", kind.name()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The summary table: one line per operation kind and the total.
pub fn summary_table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10} {:>8}  errors by kind",
        "op", "count", "ops/s", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "errors"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:<8} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10} {:>8}  {}",
            row.name,
            thousands(row.count),
            thousands(row.ops_per_s.round() as u64),
            thousands(row.p50_us),
            thousands(row.p99_us),
            thousands(row.p999_us),
            thousands(row.max_us),
            thousands(row.errors),
            errors_by_kind(row),
        );
    }
    out
}

/// Receives each interval of a run for the interval log.
pub trait IntervalRecorder {
    /// Writes `interval`'s histograms (one per operation kind, tagged with its name after
    /// `tag_prefix`), `offset_s` seconds after the log's start.
    fn record(&mut self, interval: &Interval, tag_prefix: &str, offset_s: f64) -> io::Result<()>;
}

/// An interval recorder that keeps nothing (no `--hist-log`).
struct NoLog;

impl IntervalRecorder for NoLog {
    fn record(&mut self, _: &Interval, _: &str, _: f64) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `body` with an interval recorder writing the HdrHistogram interval log at `path`
/// (V2 deflate-compressed histograms, values in microseconds, one tagged histogram per
/// operation kind per interval), or with one that keeps nothing if `path` is `None`.
pub fn with_interval_log<R>(
    path: Option<&Path>,
    comment: &str,
    body: impl FnOnce(&mut dyn IntervalRecorder) -> Result<R, PerfError>,
) -> Result<R, PerfError> {
    let Some(path) = path else {
        return body(&mut NoLog);
    };
    let io_error = |error| PerfError::Io {
        path: path.display().to_string(),
        error,
    };
    let mut file = BufWriter::new(File::create(path).map_err(io_error)?);
    let mut serializer = V2DeflateSerializer::new();
    let now = SystemTime::now();
    let writer = IntervalLogWriterBuilder::new()
        .add_comment(comment)
        .add_comment("values are latencies in microseconds; one histogram per operation kind")
        .with_start_time(now)
        .with_base_time(now)
        .begin_log_with(&mut file, &mut serializer)
        .map_err(io_error)?;

    struct Log<'a, 'b> {
        writer: hdrhistogram::serialization::interval_log::IntervalLogWriter<
            'a,
            'b,
            BufWriter<File>,
            V2DeflateSerializer,
        >,
    }
    impl IntervalRecorder for Log<'_, '_> {
        fn record(&mut self, interval: &Interval, prefix: &str, offset_s: f64) -> io::Result<()> {
            let start = Duration::from_secs_f64(offset_s + interval.start_s);
            let length = Duration::from_secs_f64((interval.end_s - interval.start_s).max(0.0));
            for (kind, stats) in interval.stats.kinds() {
                let tag_text = format!("{prefix}{}", kind.name());
                self.writer
                    .write_histogram(&stats.latency_us, start, length, Tag::new(&tag_text))
                    .map_err(|error| io::Error::other(error.to_string()))?;
            }
            Ok(())
        }
    }
    let mut log = Log { writer };
    let result = body(&mut log);
    drop(log);
    file.flush().map_err(io_error)?;
    result
}

/// One interval as the HTML report charts it.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesPoint {
    /// The interval's end, in seconds since the start.
    pub end_s: f64,
    /// Operations per second in it.
    pub ops_per_s: f64,
    /// Latency percentiles of its successful operations, in microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// The slowest.
    pub max_us: u64,
    /// Errors in it.
    pub errors: u64,
    /// Whether it lies in the warm-up.
    pub warmup: bool,
}

impl SeriesPoint {
    /// The point of one interval.
    pub fn of(interval: &Interval) -> SeriesPoint {
        let total = interval.stats.total();
        let histogram = &total.latency_us;
        let quantile = |q| {
            if histogram.is_empty() {
                0
            } else {
                histogram.value_at_quantile(q)
            }
        };
        SeriesPoint {
            end_s: interval.end_s,
            ops_per_s: total.latency_us.len() as f64
                / (interval.end_s - interval.start_s).max(1e-3),
            p50_us: quantile(0.5),
            p99_us: quantile(0.99),
            p999_us: quantile(0.999),
            max_us: if histogram.is_empty() {
                0
            } else {
                histogram.max()
            },
            errors: total.error_count(),
            warmup: interval.warmup,
        }
    }
}

/// The percentiles the spectrum chart plots: 0 to 99.999 %, denser toward the tail.
fn spectrum_quantiles() -> impl Iterator<Item = f64> {
    // 1 - 10^(-k/20): twenty points per decade of "nines".
    (0..=100).map(|k| 1.0 - 10f64.powf(-f64::from(k) / 20.0))
}

/// A percentile spectrum: (quantile, latency µs) points of one histogram.
pub fn spectrum(histogram: &Histogram<u64>) -> Vec<(f64, u64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<(f64, u64)> = spectrum_quantiles()
        .map(|q| (q, histogram.value_at_quantile(q)))
        .collect();
    points.push((1.0, histogram.max()));
    points
}

/// Everything the HTML report shows.
#[derive(Clone, Debug)]
pub struct HtmlReport {
    /// The page's title.
    pub title: String,
    /// Settings, as (name, value) lines.
    pub settings: Vec<(String, String)>,
    /// The summary rows.
    pub rows: Vec<Row>,
    /// One point per interval.
    pub series: Vec<SeriesPoint>,
    /// The percentile spectrum of each kind and of the total.
    pub spectra: Vec<(String, Vec<(f64, u64)>)>,
    /// A sweep's steps, if the report is a sweep's: (target rate, achieved, p99 µs, passed).
    pub sweep: Vec<(f64, f64, u64, bool)>,
    /// A sweep's SLO on the p99, drawn on its chart.
    pub slo_p99_us: Option<u64>,
    /// Notes shown under the table (in-flight bound hits, the SLO verdict...).
    pub notes: Vec<String>,
}

impl HtmlReport {
    /// The spectra of a run's kinds and total, for [`HtmlReport::spectra`].
    pub fn spectra_of(
        kinds: &[(String, &KindStats)],
        total: &KindStats,
    ) -> Vec<(String, Vec<(f64, u64)>)> {
        let mut spectra: Vec<_> = kinds
            .iter()
            .map(|(name, stats)| (name.clone(), spectrum(&stats.latency_us)))
            .collect();
        spectra.push(("total".to_owned(), spectrum(&total.latency_us)));
        spectra
    }
}

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f",
];

/// A chart axis: linear or log10, with its ticks.
struct Axis {
    min: f64,
    max: f64,
    log: bool,
    ticks: Vec<(f64, String)>,
    label: String,
}

impl Axis {
    fn position(&self, value: f64, length: f64) -> f64 {
        let (low, high, value) = if self.log {
            (
                self.min.log10(),
                self.max.log10(),
                value.max(self.min).log10(),
            )
        } else {
            (self.min, self.max, value)
        };
        if high <= low {
            return 0.0;
        }
        ((value - low) / (high - low)).clamp(0.0, 1.0) * length
    }

    /// A log axis of latencies in µs covering `low..high`, ticks at powers of ten.
    fn latency(low_us: f64, high_us: f64, label: &str) -> Axis {
        let min = 10f64.powf(low_us.max(1.0).log10().floor());
        let max = 10f64.powf(high_us.max(min * 10.0).log10().ceil());
        let mut ticks = Vec::new();
        let mut tick = min;
        while tick <= max * 1.0001 {
            ticks.push((tick, round_latency(tick as u64)));
            tick *= 10.0;
        }
        Axis {
            min,
            max,
            log: true,
            ticks,
            label: label.to_owned(),
        }
    }

    /// A linear axis from `low` to `high` with about five round ticks.
    fn linear(low: f64, high: f64, label: &str, unit: &str) -> Axis {
        let high = if high > low { high } else { low + 1.0 };
        let raw_step = (high - low) / 5.0;
        let magnitude = 10f64.powf(raw_step.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .map(|m| m * magnitude)
            .find(|&s| s >= raw_step)
            .unwrap_or(raw_step);
        let mut ticks = Vec::new();
        let mut tick = (low / step).ceil() * step;
        while tick <= high + step * 1e-9 {
            let text = if step >= 1.0 {
                thousands(tick.round() as u64)
            } else {
                format!("{tick:.2}")
            };
            ticks.push((tick, format!("{text}{unit}")));
            tick += step;
        }
        Axis {
            min: low,
            max: high,
            log: false,
            ticks,
            label: label.to_owned(),
        }
    }
}

struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    /// Mark each point with a dot (few, meaningful points: sweep steps).
    dots: bool,
}

/// Renders a line chart as inline SVG. `shade_until_x` greys the area left of it (warm-up).
fn svg_chart(
    title: &str,
    x: &Axis,
    y: &Axis,
    series: &[Series],
    shade_until_x: Option<f64>,
) -> String {
    const WIDTH: f64 = 860.0;
    const HEIGHT: f64 = 320.0;
    const LEFT: f64 = 80.0;
    const RIGHT: f64 = 150.0;
    const TOP: f64 = 30.0;
    const BOTTOM: f64 = 45.0;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |value: f64| LEFT + x.position(value, plot_w);
    let py = |value: f64| TOP + plot_h - y.position(value, plot_h);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{t}">"#,
        t = escape(title)
    );
    let _ = write!(
        svg,
        r#"<text x="{LEFT}" y="18" class="title">{}</text>"#,
        escape(title)
    );
    if let Some(until) = shade_until_x {
        if until > x.min {
            let _ = write!(
                svg,
                r##"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{plot_h}" fill="#eeeeee"><title>warm-up</title></rect>"##,
                px(until) - LEFT
            );
        }
    }
    for (value, text) in &y.ticks {
        let at = py(*value);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{at:.1}" y2="{at:.1}" stroke="#dddddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="tick">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            at + 4.0,
            escape(text)
        );
    }
    for (value, text) in &x.ticks {
        let at = px(*value);
        let _ = write!(
            svg,
            r##"<line x1="{at:.1}" x2="{at:.1}" y1="{TOP}" y2="{:.1}" stroke="#eeeeee"/><text x="{at:.1}" y="{:.1}" text-anchor="middle" class="tick">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 16.0,
            escape(text)
        );
    }
    let _ = write!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888888"/>"##
    );
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="label">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 6.0,
        escape(&x.label)
    );
    let _ = write!(
        svg,
        r#"<text x="14" y="{:.1}" text-anchor="middle" class="label" transform="rotate(-90 14 {:.1})">{}</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(&y.label)
    );
    for (i, line) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        if !line.points.is_empty() {
            let points: Vec<String> = line
                .points
                .iter()
                .map(|&(vx, vy)| format!("{:.1},{:.1}", px(vx), py(vy)))
                .collect();
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{}"><title>{}</title></polyline>"#,
                points.join(" "),
                escape(&line.name)
            );
            if line.dots {
                for &(vx, vy) in &line.points {
                    let _ = write!(
                        svg,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"><title>{}: {:.0}, {:.0}</title></circle>"#,
                        px(vx),
                        py(vy),
                        escape(&line.name),
                        vx,
                        vy
                    );
                }
            }
        }
        let legend_y = TOP + 14.0 + 18.0 * i as f64;
        let _ = write!(
            svg,
            r#"<line x1="{:.1}" x2="{:.1}" y1="{legend_y:.1}" y2="{legend_y:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}" class="tick">{}</text>"#,
            LEFT + plot_w + 12.0,
            LEFT + plot_w + 32.0,
            LEFT + plot_w + 38.0,
            legend_y + 4.0,
            escape(&line.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The x position of a quantile on the spectrum chart: "nines" (0 at 0 %, 1 at 90 %, 2 at
/// 99 % ...), capped at five nines.
fn nines(quantile: f64) -> f64 {
    (-(1.0 - quantile).max(1e-5).log10()).min(5.0)
}

/// The report as one self-contained HTML page.
pub fn html(report: &HtmlReport) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;margin:12px 0}}\
td,th{{border:1px solid #ccc;padding:3px 9px;text-align:right}}th{{background:#f4f4f4}}\
td:first-child,th:first-child{{text-align:left}}.title{{font-size:15px;font-weight:bold}}\
.tick{{font-size:11px;fill:#444}}.label{{font-size:12px;fill:#222}}svg{{display:block;margin:16px 0}}\
.pass{{color:#2a7d2a}}.fail{{color:#b22222}}</style></head><body>\n<h1>{}</h1>\n",
        escape(&report.title),
        escape(&report.title)
    );
    page.push_str("<table>");
    for (name, value) in &report.settings {
        let _ = write!(
            page,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(name),
            escape(value)
        );
    }
    page.push_str("</table>\n");
    if !report.rows.is_empty() {
        page.push_str(
            "<table><tr><th>op</th><th>count</th><th>ops/s</th><th>p50 µs</th><th>p99 µs</th>\
<th>p99.9 µs</th><th>max µs</th><th>errors</th><th>errors by kind</th></tr>",
        );
        for row in &report.rows {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&row.name),
                thousands(row.count),
                thousands(row.ops_per_s.round() as u64),
                thousands(row.p50_us),
                thousands(row.p99_us),
                thousands(row.p999_us),
                thousands(row.max_us),
                thousands(row.errors),
                escape(&errors_by_kind(row))
            );
        }
        page.push_str("</table>\n");
    }
    for note in &report.notes {
        let _ = writeln!(page, "<p>{}</p>", escape(note));
    }
    if !report.sweep.is_empty() {
        page.push_str(
            "<h2>Sweep</h2><table><tr><th>step</th><th>target ops/s</th><th>achieved ops/s</th>\
<th>p99 µs</th><th>SLO</th></tr>",
        );
        for (i, &(target, achieved, p99, passed)) in report.sweep.iter().enumerate() {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                i + 1,
                thousands(target.round() as u64),
                thousands(achieved.round() as u64),
                thousands(p99),
                if passed { "pass" } else { "fail" },
                if passed { "kept" } else { "broken" }
            );
        }
        page.push_str("</table>\n");
        let mut by_rate: Vec<_> = report.sweep.clone();
        by_rate.sort_by(|a, b| a.0.total_cmp(&b.0));
        let max_rate = by_rate.iter().map(|s| s.0.max(s.1)).fold(1.0, f64::max);
        let p99s = by_rate.iter().map(|s| s.2.max(1) as f64);
        let slo = report.slo_p99_us.map(|us| us.max(1) as f64);
        let (low, high) = p99s
            .chain(slo)
            .fold((f64::MAX, 1.0f64), |(l, h), v| (l.min(v), h.max(v)));
        let mut lines = vec![Series {
            name: "p99".to_owned(),
            points: by_rate.iter().map(|s| (s.0, s.2.max(1) as f64)).collect(),
            dots: true,
        }];
        if let Some(slo) = slo {
            lines.push(Series {
                name: "SLO".to_owned(),
                points: vec![(0.0, slo), (max_rate * 1.05, slo)],
                dots: false,
            });
        }
        let chart = svg_chart(
            "p99 latency by target rate",
            &Axis::linear(0.0, max_rate * 1.05, "target rate (ops/s)", ""),
            &Axis::latency(low, high, "p99 latency"),
            &lines,
            None,
        );
        page.push_str(&chart);
    }
    if !report.series.is_empty() {
        let last_s = report.series.iter().map(|p| p.end_s).fold(1.0, f64::max);
        let warmup_end = report
            .series
            .iter()
            .filter(|p| p.warmup)
            .map(|p| p.end_s)
            .fold(0.0, f64::max);
        let latencies = report
            .series
            .iter()
            .flat_map(|p| [p.p50_us, p.max_us])
            .filter(|&v| v > 0);
        let (low, high) = latencies.fold((u64::MAX, 1u64), |(l, h), v| (l.min(v), h.max(v)));
        let x = Axis::linear(0.0, last_s, "time since start (s)", "");
        let pick = |name: &str, value: fn(&SeriesPoint) -> u64| Series {
            name: name.to_owned(),
            points: report
                .series
                .iter()
                .filter(|p| value(p) > 0)
                .map(|p| (p.end_s, value(p) as f64))
                .collect(),
            dots: false,
        };
        page.push_str(&svg_chart(
            "Latency over time (per second, from each request's intended start)",
            &x,
            &Axis::latency(low.min(high) as f64, high as f64, "latency"),
            &[
                pick("p50", |p| p.p50_us),
                pick("p99", |p| p.p99_us),
                pick("p99.9", |p| p.p999_us),
                pick("max", |p| p.max_us),
            ],
            Some(warmup_end),
        ));
        let top_rate = report
            .series
            .iter()
            .map(|p| p.ops_per_s)
            .fold(1.0, f64::max);
        page.push_str(&svg_chart(
            "Throughput over time",
            &x,
            &Axis::linear(0.0, top_rate * 1.1, "operations per second", ""),
            &[
                Series {
                    name: "ops/s".to_owned(),
                    points: report
                        .series
                        .iter()
                        .map(|p| (p.end_s, p.ops_per_s))
                        .collect(),
                    dots: false,
                },
                Series {
                    name: "errors/s".to_owned(),
                    points: report
                        .series
                        .iter()
                        .map(|p| (p.end_s, p.errors as f64))
                        .collect(),
                    dots: false,
                },
            ],
            Some(warmup_end),
        ));
    }
    let spectra: Vec<_> = report
        .spectra
        .iter()
        .filter(|(_, points)| !points.is_empty())
        .collect();
    if !spectra.is_empty() {
        let values = spectra
            .iter()
            .flat_map(|(_, points)| points.iter().map(|p| p.1));
        let (low, high) = values.fold((u64::MAX, 1u64), |(l, h), v| (l.min(v), h.max(v)));
        let x = Axis {
            min: 0.0,
            max: 5.0,
            log: false,
            ticks: ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
                .iter()
                .enumerate()
                .map(|(i, text)| (i as f64, (*text).to_owned()))
                .collect(),
            label: "percentile".to_owned(),
        };
        let series: Vec<Series> = spectra
            .iter()
            .map(|(name, points)| Series {
                name: name.clone(),
                points: points
                    .iter()
                    .map(|&(q, v)| (nines(q), v.max(1) as f64))
                    .collect(),
                dots: false,
            })
            .collect();
        page.push_str(&svg_chart(
            "Percentile spectrum (measured window)",
            &x,
            &Axis::latency(low as f64, high as f64, "latency"),
            &series,
            None,
        ));
    }
    page.push_str("</body></html>\n");
    page
}

/// Writes the HTML report to `path`.
pub fn write_html(path: &Path, report: &HtmlReport) -> Result<(), PerfError> {
    std::fs::write(path, html(report)).map_err(|error| PerfError::Io {
        path: path.display().to_string(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{summary_rows, ErrorKind, OpStats};
    use crate::workload::OpKind;

    fn sample() -> (OpStats, Vec<Row>) {
        let mut stats = OpStats::for_kinds([OpKind::Read, OpKind::Update]);
        for i in 1..=10_000u64 {
            stats.record(OpKind::Read, 100 + i % 300);
            stats.record(OpKind::Update, 200 + i % 700);
        }
        stats.record(OpKind::Update, 12_345);
        stats.record_error(OpKind::Update, ErrorKind::Throttled);
        let rows = summary_rows(&stats, 2.0);
        (stats, rows)
    }

    #[test]
    fn json_line_has_exactly_the_benchmark_fields_in_order() {
        let (_, rows) = sample();
        let labels = Labels {
            bench: "node".into(),
            case: "ycsb_a".into(),
            load: "50%".into(),
            setup: "server core 1, load core 0".into(),
        };
        let line = json_line(&labels, rows.last().unwrap());
        assert!(!line.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let object = value.as_object().unwrap();
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        let mut expected = vec![
            "bench",
            "case",
            "load",
            "ops_per_s",
            "p50_us",
            "p99_us",
            "p999_us",
            "max_us",
            "errors",
            "setup",
        ];
        // serde_json's map is ordered by key unless preserve_order is on: compare as sets,
        // then check the text's order directly.
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        expected.sort_unstable();
        assert_eq!(sorted, expected);
        let positions: Vec<usize> = [
            "\"bench\"",
            "\"case\"",
            "\"load\"",
            "\"ops_per_s\"",
            "\"p50_us\"",
            "\"p99_us\"",
            "\"p999_us\"",
            "\"max_us\"",
            "\"errors\"",
            "\"setup\"",
        ]
        .iter()
        .map(|field| line.find(field).unwrap())
        .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{line}");
        assert_eq!(object["bench"], "node");
        assert_eq!(object["load"], "50%");
        assert_eq!(object["errors"], 1);
        assert_eq!(object["ops_per_s"], 10_000.5, "successes only");
        assert!(object["p99_us"].as_u64().unwrap() >= object["p50_us"].as_u64().unwrap());
        // Three significant digits: the max is within 0.1 % above the value recorded.
        assert!((12_345..=12_358).contains(&object["max_us"].as_u64().unwrap()));
        assert_eq!(object["setup"], "server core 1, load core 0");
    }

    #[test]
    fn summary_table_lists_kinds_total_and_error_kinds() {
        let (_, rows) = sample();
        let table = summary_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[1].starts_with("read"));
        assert!(lines[2].starts_with("update") && lines[2].contains("throttled=1"));
        assert!(lines[3].starts_with("total") && lines[3].contains("20,002"));
    }

    #[test]
    fn html_report_is_self_contained() {
        let (stats, rows) = sample();
        let interval = |index: u32, warmup| Interval {
            index,
            start_s: f64::from(index),
            end_s: f64::from(index + 1),
            stats: stats.clone(),
            records: 0,
            warmup,
        };
        let series: Vec<SeriesPoint> = (0..5)
            .map(|i| SeriesPoint::of(&interval(i, i < 1)))
            .collect();
        let kinds: Vec<(String, &KindStats)> = stats
            .kinds()
            .map(|(kind, s)| (kind.name().to_owned(), s))
            .collect();
        let report = HtmlReport {
            title: "ycsb_a <at> 50%".into(),
            settings: vec![("workload".into(), "a & zipfian".into())],
            rows,
            series,
            spectra: HtmlReport::spectra_of(&kinds, &stats.total()),
            sweep: vec![(1000.0, 990.0, 500, true), (2000.0, 1500.0, 90_000, false)],
            slo_p99_us: Some(10_000),
            notes: vec!["in-flight bound hit 0 times".into()],
        };
        let dir = std::env::temp_dir().join(format!("perf-html-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("report.html");
        write_html(&path, &report).unwrap();
        let page = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.trim_end().ends_with("</html>"));
        assert_eq!(
            page.matches("<svg").count(),
            4,
            "sweep, latency, throughput, spectrum"
        );
        assert_eq!(page.matches("<svg").count(), page.matches("</svg>").count());
        assert!(page.contains("<polyline"));
        // Nothing to fetch: no external URL, script or stylesheet link.
        for forbidden in ["http://", "https://", "<script", "<link", "src=", "@import"] {
            assert!(!page.contains(forbidden), "the page contains {forbidden}");
        }
        assert!(page.contains("ycsb_a &lt;at&gt; 50%") && page.contains("a &amp; zipfian"));
    }

    #[test]
    fn interval_log_is_readable_by_hdrhistogram() {
        let (stats, _) = sample();
        let dir = std::env::temp_dir().join(format!("perf-hlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.hlog");
        with_interval_log(Some(&path), "test", |log| {
            for index in 0..3 {
                let interval = Interval {
                    index,
                    start_s: f64::from(index),
                    end_s: f64::from(index + 1),
                    stats: stats.clone(),
                    records: 0,
                    warmup: false,
                };
                log.record(&interval, "", 0.0).unwrap();
            }
            Ok(())
        })
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
        let mut tags = Vec::new();
        for entry in IntervalLogIterator::new(&bytes) {
            if let LogEntry::Interval(histogram) = entry.unwrap() {
                tags.push(histogram.tag().unwrap().as_str().to_owned());
            }
        }
        assert_eq!(tags, ["read", "update", "read", "update", "read", "update"]);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(latency(850), "850 µs");
        assert_eq!(latency(1_250), "1.25 ms");
        assert_eq!(latency(2_100_000), "2.10 s");
        assert_eq!(round_latency(100_000), "100 ms");
        assert_eq!(round_latency(1_000_000), "1 s");
        assert_eq!(round_latency(10), "10 µs");
    }
}
