//! `cargo xtask`: the one entry point for testing, benchmarking and demonstrating percore.
//!
//! It replaces shell scripts (matklad's "xtask" pattern): it is Rust, it builds with the
//! workspace, and it runs the same on a developer's machine and in CI. It uses the
//! standard library only so that it compiles in seconds on a fresh machine.
//!
//! - `cargo xtask test` installs what the build needs (Debian packages, cargo-fuzz), then
//!   runs `cargo fmt --check`, clippy with `-D warnings`, every test, and a short fuzz smoke.
//! - `cargo xtask bench NAME [--quick] [--json]` runs one benchmark as
//!   `../shared/BENCHMARKS.md` describes.
//! - `cargo xtask demo [--seconds N]` runs the main job on an embedded default.
//!
//! xtask is a developer tool, not a product binary: it keeps the system allocator so that it
//! needs no C build (every product and benchmark binary uses jemalloc).

mod cluster_demo;
mod node_bench;
mod procs;
mod redis_bench;
mod relay;
mod router_bench;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// Debian packages the build and the tests need. Checked with `dpkg -s`, installed with
/// apt-get when missing (CI runs as root on a fresh Debian machine).
/// `protobuf-compiler`: raft-rs's `prost-codec` generates its messages with `protoc`.
/// `redis-server`, `redis-tools`: the Redis tests drive the router's RESP port with
/// redis-cli and redis-benchmark, and `bench redis` compares with redis-server 7.
const DEBIAN_PACKAGES: &[&str] = &["protobuf-compiler", "redis-server", "redis-tools"];

/// Debian packages that give `python3 -m pip`, installed only when it is missing (a machine
/// with its own Python keeps it).
const DEBIAN_PIP_PACKAGES: &[&str] = &["python3", "python3-pip"];

/// How long each fuzz target runs in the smoke, in seconds. Long enough to reach the
/// decoders' error paths from an empty corpus, short enough to keep CI well under 20 minutes.
const FUZZ_SMOKE_SECONDS_DEFAULT: u32 = 20;

/// How a benchmark runs.
enum Bench {
    /// A cargo bench target: (package, bench target).
    Cargo(&'static str, &'static str),
    /// The real binaries: `percore-node` driven by `percore-perf` (see `node_bench`).
    Node,
    /// meta, a node and a router, driven by `percore-perf` (see `router_bench`).
    Router,
    /// percore's RESP port against redis-server, driven by `redis-benchmark` (see
    /// `redis_bench`).
    Redis,
}

/// Benchmarks that `cargo xtask bench` knows, and how each runs.
const BENCHES: &[(&str, Bench)] = &[
    ("btree", Bench::Cargo("devices", "btree")),
    ("wal", Bench::Cargo("devices", "wal")),
    ("node", Bench::Node),
    ("router", Bench::Router),
    ("redis", Bench::Redis),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("demo") => demo(&args[1..]),
        Some("fuzz") => fuzz_smoke(&args[1..]),
        // Internal: the router benchmark's peer, started by `bench router` (see `relay`).
        Some("relay") => relay::serve(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            Err("unknown or missing command".into())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage:
  cargo xtask test [--no-install] [--no-fuzz]   install build needs, fmt, clippy, tests, fuzz smoke
  cargo xtask bench NAME [--quick] [--json]     run one benchmark (btree, wal, node, router, redis)
  cargo xtask demo [--seconds N]                the main job on an embedded default
  cargo xtask fuzz [--seconds N]                only the fuzz smoke";

type Result<T> = std::result::Result<T, String>;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Runs a command in the workspace root, echoing it, and fails with its name if it fails.
fn run(program: &str, args: &[&str]) -> Result<()> {
    run_in(&workspace_root(), program, args)
}

fn run_in(dir: &Path, program: &str, args: &[&str]) -> Result<()> {
    eprintln!("xtask: $ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .status()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed: {status}", args.join(" ")))
    }
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn test(args: &[String]) -> Result<()> {
    let install = !args.iter().any(|a| a == "--no-install");
    let fuzz = !args.iter().any(|a| a == "--no-fuzz");
    let started = Instant::now();
    if install {
        install_needs()?;
    }
    step("format", || run("cargo", &["fmt", "--all", "--check"]))?;
    step("clippy", || {
        run(
            "cargo",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        )
    })?;
    // The cluster tests start the daemons' binaries, which `cargo test` builds only for
    // packages with tests of their own: build them all first.
    step("daemons", || {
        run("cargo", &["build", "--workspace", "--bins"])
    })?;
    step("tests", || run("cargo", &["test", "--workspace"]))?;
    if fuzz {
        step("fuzz smoke", || fuzz_smoke(&[]))?;
    }
    eprintln!(
        "xtask: test finished in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let started = Instant::now();
    eprintln!("xtask: == {name} ==");
    f().map_err(|e| format!("{name}: {e}"))?;
    eprintln!(
        "xtask: == {name}: ok in {:.0} s ==",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Installs what the build needs on a fresh Debian machine: missing Debian packages,
/// redis-py (PyPI's `redis`, for the Redis tests) and cargo-fuzz (for the nightly fuzz
/// smoke). Does nothing for what is already there.
fn install_needs() -> Result<()> {
    apt_install(DEBIAN_PACKAGES)?;
    if !succeeds("python3", &["-c", "import redis"]) {
        if !succeeds("python3", &["-m", "pip", "--version"]) {
            apt_install(DEBIAN_PIP_PACKAGES)?;
        }
        // Debian's own Python refuses pip installs outside a virtualenv (PEP 668) unless
        // told otherwise; older pips ignore the variable.
        eprintln!("xtask: $ python3 -m pip install --quiet redis");
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "redis"])
            .env("PIP_BREAK_SYSTEM_PACKAGES", "1")
            .env("PIP_ROOT_USER_ACTION", "ignore")
            .status()
            .map_err(|e| format!("cannot start python3: {e}"))?;
        if !status.success() || !succeeds("python3", &["-c", "import redis"]) {
            return Err(format!(
                "could not install redis-py (`python3 -m pip install redis`: {status})"
            ));
        }
    }
    if has_nightly() && !succeeds("cargo", &["+nightly", "fuzz", "--version"]) {
        run("cargo", &["install", "--locked", "cargo-fuzz"])?;
    }
    Ok(())
}

/// Installs those of `packages` that `dpkg -s` does not know, with apt-get (as root).
fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !succeeds("dpkg", &["-s", p]))
        .collect();
    if !missing.is_empty() {
        if !is_root() {
            return Err(format!(
                "Debian packages missing: {}; install them (as root: apt-get install {})",
                missing.join(" "),
                missing.join(" ")
            ));
        }
        run("apt-get", &["update", "-q"])?;
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(missing.iter().copied());
        run("apt-get", &args)?;
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn has_nightly() -> bool {
    succeeds("cargo", &["+nightly", "--version"])
}

/// Every crate's `fuzz/` folder (cargo-fuzz layout), each fuzz target run for a few seconds.
/// Without a nightly toolchain the smoke is skipped loudly: each target's input also runs
/// through proptest on stable, so the decoders stay covered.
fn fuzz_smoke(args: &[String]) -> Result<()> {
    let seconds = flag_value(args, "--seconds")?.unwrap_or(FUZZ_SMOKE_SECONDS_DEFAULT);
    if !has_nightly() {
        eprintln!("xtask: no nightly toolchain: fuzz smoke skipped (the proptest twins of each target still ran)");
        return Ok(());
    }
    let root = workspace_root();
    let mut fuzz_dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .map_err(|e| format!("cannot list {}: {e}", root.display()))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path().join("fuzz"))
        .filter(|dir| dir.join("Cargo.toml").is_file())
        .collect();
    fuzz_dirs.sort();
    for dir in fuzz_dirs {
        let targets_dir = dir.join("fuzz_targets");
        let mut targets: Vec<String> = std::fs::read_dir(&targets_dir)
            .map_err(|e| format!("cannot list {}: {e}", targets_dir.display()))?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                name.strip_suffix(".rs").map(str::to_owned)
            })
            .collect();
        targets.sort();
        let crate_dir = dir.parent().expect("fuzz dir has a parent");
        for target in targets {
            let max_time = format!("-max_total_time={seconds}");
            run_in(
                crate_dir,
                "cargo",
                &[
                    "+nightly",
                    "fuzz",
                    "run",
                    &target,
                    "--",
                    &max_time,
                    "-rss_limit_mb=4096",
                ],
            )?;
        }
    }
    Ok(())
}

/// The word after `flag`, if `flag` is given.
fn flag_str<'a>(args: &'a [String], flag: &str) -> Result<Option<&'a str>> {
    match args.iter().position(|a| a == flag) {
        None => Ok(None),
        Some(i) => args
            .get(i + 1)
            .map(|v| Some(v.as_str()))
            .ok_or_else(|| format!("{flag} needs a value")),
    }
}

fn flag_value(args: &[String], flag: &str) -> Result<Option<u32>> {
    flag_str(args, flag)?
        .map(|value| {
            value
                .parse()
                .map_err(|_| format!("{flag} takes a whole number, not {value:?}"))
        })
        .transpose()
}

fn bench(args: &[String]) -> Result<()> {
    let name = args
        .first()
        .ok_or_else(|| format!("bench needs a NAME\n{USAGE}"))?;
    let (_, how) = BENCHES.iter().find(|(n, _)| n == name).ok_or_else(|| {
        format!("no benchmark named {name:?}; known: btree, wal, node, router, redis")
    })?;
    let flags = &args[1..];
    if let Some(other) = flags
        .iter()
        .find(|f| !matches!(f.as_str(), "--quick" | "--json"))
    {
        return Err(format!(
            "unknown bench flag {other:?}; takes --quick and --json"
        ));
    }
    match how {
        Bench::Node => node_bench::bench(
            flags.iter().any(|f| f == "--quick"),
            flags.iter().any(|f| f == "--json"),
        ),
        Bench::Router => router_bench::bench(
            flags.iter().any(|f| f == "--quick"),
            flags.iter().any(|f| f == "--json"),
        ),
        Bench::Redis => redis_bench::bench(
            flags.iter().any(|f| f == "--quick"),
            flags.iter().any(|f| f == "--json"),
        ),
        Bench::Cargo(package, target) => {
            let mut cargo_args = vec!["bench", "--quiet", "-p", package, "--bench", target, "--"];
            cargo_args.extend(flags.iter().map(String::as_str));
            run("cargo", &cargo_args)
        }
    }
}

fn demo(args: &[String]) -> Result<()> {
    cluster_demo::demo(flag_value(args, "--seconds")?)
}
