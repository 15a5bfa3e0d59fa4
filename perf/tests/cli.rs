//! The `percore-perf` binary as `cargo xtask` drives it: `--json` prints BENCHMARKS.md's
//! lines and nothing else on stdout, the report files are written, bad flags are refused.
//! Every run here is a `--dry-run` (no node needed): the generator's own machinery.

use std::path::PathBuf;
use std::process::{Command, Output};

fn perf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_percore-perf"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("percore-perf-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const FIELDS: [&str; 10] = [
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

fn check_line(line: &str) -> serde_json::Map<String, serde_json::Value> {
    let value: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let object = value.as_object().unwrap().clone();
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected = FIELDS.to_vec();
    expected.sort_unstable();
    assert_eq!(keys, expected, "{line}");
    object
}

#[test]
fn run_with_json_prints_one_line_and_writes_the_reports() {
    let dir = scratch("run");
    let html = dir.join("report.html");
    let hlog = dir.join("run.hlog");
    let output = perf(&[
        "run",
        "--dry-run",
        "--json",
        "--workload",
        "b",
        "--rate",
        "2000",
        "--warmup-s",
        "0.2",
        "--duration-s",
        "0.5",
        "--load-label",
        "25%",
        "--setup",
        "load core 0 (test)",
        "--html",
        html.to_str().unwrap(),
        "--hist-log",
        hlog.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout: {stdout}");
    let object = check_line(lines[0]);
    assert_eq!(object["bench"], "node");
    assert_eq!(object["case"], "ycsb_b");
    assert_eq!(object["load"], "25%");
    assert_eq!(object["setup"], "load core 0 (test)");
    assert_eq!(object["errors"], 0);
    let rate = object["ops_per_s"].as_f64().unwrap();
    assert!(
        (1_800.0..=2_050.0).contains(&rate),
        "{rate} ops/s at 2000/s"
    );
    // The table went to stderr instead.
    assert!(stderr.contains("total"), "{stderr}");

    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.contains("<svg"));
    for forbidden in ["http://", "https://", "<script", "<link"] {
        assert!(!page.contains(forbidden), "the report contains {forbidden}");
    }
    let log = std::fs::read_to_string(&hlog).unwrap();
    assert!(log.lines().any(|l| l.starts_with("Tag=read,")), "{log}");
    assert!(log.lines().any(|l| l.starts_with("Tag=update,")), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sweep_with_json_prints_each_step_and_the_best() {
    let output = perf(&[
        "sweep",
        "--dry-run",
        "--json",
        "--quiet",
        "--workload",
        "c",
        "--start-rate",
        "500",
        "--step",
        "2",
        "--max-steps",
        "3",
        "--warmup-s",
        "0",
        "--duration-s",
        "0.3",
    ]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "three steps and the best: {stdout}");
    let loads: Vec<String> = lines
        .iter()
        .map(|line| check_line(line)["load"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(loads, ["500/s", "1000/s", "2000/s", "max_within_slo"]);
    // Nothing is slow in a dry run: the best is the last step.
    let best = check_line(lines[3]);
    assert_eq!(best["case"], "ycsb_c");
    assert!(best["ops_per_s"].as_f64().unwrap() > 1_800.0);
}

#[test]
fn load_dry_run_reports_records() {
    let output = perf(&[
        "load",
        "--dry-run",
        "--json",
        "--quiet",
        "--record-count",
        "5000",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let object = check_line(stdout.trim());
    assert_eq!(object["case"], "load");
    assert_eq!(object["errors"], 0);
}

#[test]
fn help_documents_every_flag_and_bad_flags_are_refused() {
    let help = String::from_utf8(perf(&["run", "--help"]).stdout).unwrap();
    for flag in [
        "--addr",
        "--table",
        "--connections",
        "--cores",
        "--request-timeout-ms",
        "--max-attempts",
        "--dry-run",
        "--record-count",
        "--value-size",
        "--records-per-partition-key",
        "--seed",
        "--workload",
        "--distribution",
        "--warmup-s",
        "--duration-s",
        "--in-flight",
        "--pacing-tick-us",
        "--scan-length-max",
        "--hist-log",
        "--html",
        "--json",
        "--bench",
        "--case",
        "--setup",
        "--quiet",
        "--rate",
        "--load-label",
    ] {
        assert!(help.contains(flag), "run --help does not mention {flag}");
    }
    let help = String::from_utf8(perf(&["sweep", "--help"]).stdout).unwrap();
    for flag in [
        "--slo-p99-ms",
        "--start-rate",
        "--step",
        "--refine-steps",
        "--max-steps",
    ] {
        assert!(help.contains(flag), "sweep --help does not mention {flag}");
    }
    let help = String::from_utf8(perf(&["load", "--help"]).stdout).unwrap();
    for flag in ["--batch", "--in-flight", "--create-table", "--partitions"] {
        assert!(help.contains(flag), "load --help does not mention {flag}");
    }

    let refused = perf(&["run", "--dry-run", "--rate", "fast"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("fast"));
    let refused = perf(&["run", "--dry-run", "--in-flight", "100000"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--in-flight"));
    // Nothing listens on port 1: the connection error names the address.
    let refused = perf(&["run", "--addr", "127.0.0.1:1", "--duration-s", "0.1"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("127.0.0.1:1"));
}
