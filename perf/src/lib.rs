//! percore-perf: an open-loop load generator for percore, with YCSB's workloads, SLO
//! reports and rate sweeps.
//!
//! **What it owns.** Deciding what to ask a store and when, and telling honestly how long
//! the answers took. A run follows a schedule fixed in advance (request `i` is due at
//! `start + i / rate`) and measures each latency from the request's *intended* start, so a
//! stall anywhere — server, network, or the generator itself — is charged to every request
//! it delays instead of silently slowing the generator down (no coordinated omission). The
//! latencies go into one HdrHistogram per operation kind; the reports are a summary table,
//! BENCHMARKS.md's JSON lines, an HdrHistogram interval log and a self-contained HTML page.
//! `sweep` raises the rate until the p99 breaks the SLO and reports the highest throughput
//! that kept it.
//!
//! **What it never does.** It never talks to a store except through a [`target::Target`]
//! (the real one wraps the `client` crate), and never waits for an answer before sending the
//! next due request: only the in-flight bound (a named constant, `--in-flight`) stops it,
//! and then the wait is both counted and charged to the latencies. It never wakes once per
//! request: the pacer wakes at most once per tick (200 µs by default) and lets out every
//! request due within the next tick, so a tick's requests leave in one socket write per
//! connection; a request let out early is timed from its send, one let out late from its
//! intended start. Its own per-request path allocates nothing and makes no system call: on
//! a 2-core machine it shares the cores with the node it measures. (The client's API takes
//! owned keys and values, which costs the real target three small allocations a request.)
//!
//! **Why its own crate.** Load generation is a client of the store, not part of it: it must
//! be runnable against any node (or, later, a router) from the outside, as a binary with a
//! stable command line that `cargo xtask bench node` and `cargo xtask demo` drive.
//!
//! The parts, from the bottom: [`rng`] and [`keys`] (YCSB's key choosers), [`workload`]
//! (YCSB's mixes A–F), [`schedule`] (intended starts, tickets for the slots), [`stats`]
//! (histograms and summary rows), [`driver`] (one core's run on glommio), [`runner`] (the
//! cores and their merged intervals), [`report`] (table, JSON, interval log, HTML),
//! [`sweep`] (the search for the highest rate within the SLO) and [`cli`] (the binary).

pub mod cli;
pub mod client_target;
pub mod driver;
pub mod keys;
pub mod limits;
pub mod report;
pub mod rng;
pub mod runner;
pub mod schedule;
pub mod stats;
pub mod sweep;
pub mod target;
pub mod workload;

use std::fmt;

/// Why the generator could not do what it was asked.
#[derive(Debug)]
pub enum PerfError {
    /// A setting was unusable; the message says which and why.
    Config(String),
    /// A core's executor could not be started (e.g. a CPU that does not exist, or a
    /// real-time priority it may not take).
    Executor {
        /// The core's index among the generator's cores.
        core_index: usize,
        /// What glommio said.
        message: String,
    },
    /// A core could not connect to the store.
    Connect {
        /// The core's index.
        core_index: usize,
        /// What went wrong.
        message: String,
    },
    /// A core's executor ended unexpectedly (it panicked, or could not start).
    CoreExited {
        /// The core's index.
        core_index: usize,
    },
    /// The table could not be created.
    CreateTable(String),
    /// A report file could not be written.
    Io {
        /// The file.
        path: String,
        /// The error.
        error: std::io::Error,
    },
}

impl fmt::Display for PerfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PerfError::Config(message) => write!(f, "{message}"),
            PerfError::Executor {
                core_index,
                message,
            } => {
                write!(
                    f,
                    "could not start the executor of generator core {core_index}: {message}"
                )
            }
            PerfError::Connect {
                core_index,
                message,
            } => {
                write!(
                    f,
                    "generator core {core_index} could not connect: {message}"
                )
            }
            PerfError::CoreExited { core_index } => {
                write!(
                    f,
                    "generator core {core_index} stopped unexpectedly (see the messages above)"
                )
            }
            PerfError::CreateTable(message) => write!(f, "could not create the table: {message}"),
            PerfError::Io { path, error } => write!(f, "could not write {path}: {error}"),
        }
    }
}

impl std::error::Error for PerfError {}
